/*
 * Sending a loop turn's answers in one system call: see sendbatch.h.
 */
#include "daemon/sendbatch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "daemon/log.h"

#define SEND_FLAGS (MSG_NOSIGNAL | MSG_DONTWAIT)

void sendbatch_init(struct sendbatch *b, bool use_uring)
{
    int rc;

    memset(b, 0, sizeof *b);
    if (!use_uring)
        return;
    /* SUBMIT_ALL (Linux 5.18) is required: without it a request failing
     * its submission would leave the rest unsubmitted, and the batch
     * waiting for them. */
    rc =
        io_uring_queue_init(SENDBATCH_MAX, &b->ring,
                            IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER);
    if (rc < 0) {
        log_info("io_uring: not available (%s): a turn's answers are sent one by one", strerror(-rc));
        return;
    }
    b->ring_ok = true;
}

static void send_one(struct sendbatch_item *it)
{
    ssize_t n;

    do
        n = send(it->fd, it->data, it->len, SEND_FLAGS);
    while (n < 0 && errno == EINTR);
    it->result = n < 0 ? -errno : n;
}

/* Take the completions the ring holds; how many. */
static unsigned reap(struct sendbatch *b, struct sendbatch_item *items)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;

    io_uring_for_each_cqe(&b->ring, head, cqe)
    {
        items[cqe->user_data].result = cqe->res;
        n++;
    }
    io_uring_cq_advance(&b->ring, n);
    return n;
}

void sendbatch_send(struct sendbatch *b, struct sendbatch_item *items, size_t n)
{
    size_t done = 0;
    int rc;

    if (!b->ring_ok || n < 2) {
        for (size_t i = 0; i < n; i++)
            send_one(&items[i]);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        /* The ring is empty between batches and holds SENDBATCH_MAX. */
        struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);

        if (sqe == NULL) {
            for (size_t j = i; j < n; j++)
                send_one(&items[j]);
            n = i;
            break;
        }
        io_uring_prep_send(sqe, items[i].fd, items[i].data, items[i].len, SEND_FLAGS);
        io_uring_sqe_set_data64(sqe, i);
    }
    if (n == 0)
        return;
    b->batches++;
    b->sent += n;
    rc = io_uring_submit_and_wait(&b->ring, (unsigned)n);
    for (;;) {
        done += reap(b, items);
        if (done == n)
            return;
        /* Interrupted by a signal, or short of memory for a moment: the
         * kernel owns the requests it took, so wait for them (and submit
         * what it did not take). */
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            log_error("io_uring: %s with %zu of %zu sends pending", strerror(-rc), n - done, n);
            abort();
        }
        rc = io_uring_submit_and_wait(&b->ring, (unsigned)(n - done));
    }
}

void sendbatch_close(struct sendbatch *b)
{
    if (b->ring_ok)
        io_uring_queue_exit(&b->ring);
    b->ring_ok = false;
}
