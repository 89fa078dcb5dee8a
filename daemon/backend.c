/*
 * Jobs: the unit of work a session hands to a backend, and the streaming
 * and flow-control machinery every backend shares (posting response bytes
 * to the loop thread, waiting for the client to read them); the bind host
 * with its job event queue, the references binds and configurations count.
 * Nothing here calls the server, the sessions or the commands: events go
 * out through the host's deliver().
 */
#include "daemon/backend.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "daemon/catalog.h"
#include "daemon/log.h"

/* ---- Job events ------------------------------------------------------ */

static void deliver_list(struct bind_host *h, struct job_event *ev)
{
    while (ev != NULL) {
        struct job_event *next = ev->next;
        h->deliver(ev);
        ev = next;
    }
}

/* Deliver events posted on the loop thread itself (the PostgreSQL
 * backend's): run from an idle handle, i.e. before the loop next waits,
 * never inside the backend callback that posted them. */
static void on_local_events(uv_idle_t *idle)
{
    struct bind_host *h = idle->data;
    struct job_event *ev = h->local_head;

    uv_idle_stop(idle);
    h->local_head = NULL;
    h->local_tail = &h->local_head;
    deliver_list(h, ev);
}

/* Deliver the events posted from other threads (loop thread only). */
static void drain_events(struct bind_host *h)
{
    struct job_event *ev;

    pthread_mutex_lock(&h->ev_lock);
    ev = h->ev_head;
    h->ev_head = NULL;
    h->ev_tail = &h->ev_head;
    pthread_mutex_unlock(&h->ev_lock);
    deliver_list(h, ev);
}

static void on_events(uv_poll_t *poll, int status, int events)
{
    struct bind_host *h = poll->data;
    uint64_t count;

    (void)status;
    (void)events;
    /* Reset the eventfd before taking the queue, so an event posted after
     * the take writes it again. */
    while (read(h->ev_fd, &count, sizeof count) < 0 && errno == EINTR)
        ;
    drain_events(h);
}

/* Queue an event for the loop thread (any thread; from the loop thread it
 * is delivered before the loop next waits, not from inside the caller). */
static void host_post(struct bind_host *h, struct job_event *ev)
{
    ev->next = NULL;
    if (bind_host_on_loop(h)) {
        /* No lock and no eventfd round trip through the kernel. */
        *h->local_tail = ev;
        h->local_tail = &ev->next;
        (void)uv_idle_start(&h->local_idle, on_local_events); /* fails only without a callback */
        return;
    }
    pthread_mutex_lock(&h->ev_lock);
    bool was_empty = h->ev_head == NULL;
    *h->ev_tail = ev;
    h->ev_tail = &ev->next;
    pthread_mutex_unlock(&h->ev_lock);
    /* Only the event that makes the queue non-empty wakes the loop: it
     * takes the whole queue after reading the eventfd. Not uv_async_send():
     * its loop side spins (sched_yield) while a sender is between its two
     * steps, and a worker preempted there (a long statement runs at nice
     * LONG_STATEMENT_NICE) cost the loop thread 40% of its CPU while
     * streaming rows on a busy machine. */
    if (was_empty) {
        uint64_t one = 1;
        while (write(h->ev_fd, &one, sizeof one) < 0 && errno == EINTR)
            ;
    }
}

int bind_host_init(struct bind_host *h, uv_loop_t *loop, void (*deliver)(struct job_event *ev))
{
    int rc;

    h->loop = loop;
    h->ev_fd = -1;
    h->loop_thread = pthread_self();
    h->deliver = deliver;
    h->ev_tail = &h->ev_head;
    h->local_tail = &h->local_head;
    pthread_mutex_init(&h->ev_lock, NULL);
    h->ev_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (h->ev_fd < 0)
        return uv_translate_sys_error(errno);
    /* A handle whose init fails stays zeroed, so bind_host_close skips it. */
    if ((rc = uv_idle_init(loop, &h->local_idle)) != 0 ||
        (rc = uv_poll_init(loop, &h->ev_poll, h->ev_fd)) != 0 ||
        (rc = uv_poll_start(&h->ev_poll, UV_READABLE, on_events)) != 0)
        return rc;
    h->local_idle.data = h->ev_poll.data = h;
    return 0;
}

void bind_host_drain(struct bind_host *h)
{
    drain_events(h);
    on_local_events(&h->local_idle);
}

void bind_host_close(struct bind_host *h)
{
    uv_handle_t *handles[] = {(uv_handle_t *)&h->ev_poll, (uv_handle_t *)&h->local_idle};

    for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++)
        if (handles[i]->type != UV_UNKNOWN_HANDLE && !uv_is_closing(handles[i]))
            uv_close(handles[i], NULL);
}

/* ---- Configurations and binds --------------------------------------- */

struct confref *confref_new(struct config *cfg)
{
    struct confref *r = calloc(1, sizeof *r);

    if (r == NULL) {
        config_free(cfg);
        return NULL;
    }
    r->cfg = cfg;
    r->refs = 1;
    return r;
}

struct confref *confref_hold(struct confref *r)
{
    assert(r->refs > 0);
    r->refs++;
    return r;
}

void confref_drop(struct confref *r)
{
    if (r == NULL)
        return;
    assert(r->refs > 0);
    if (--r->refs > 0)
        return;
    config_free(r->cfg);
    free(r);
}

void bind_hold(struct bind *b)
{
    assert(bind_host_on_loop(b->host));
    assert(b->refs > 0);
    b->refs++;
}

void bind_drop(struct bind *b)
{
    assert(bind_host_on_loop(b->host));
    assert(b->refs > 0);
    if (--b->refs > 0)
        return;
    if (b->retired) {
        for (struct bind **pp = &b->host->retired; *pp != NULL; pp = &(*pp)->next_retired) {
            if (*pp == b) {
                *pp = b->next_retired;
                break;
            }
        }
        log_info("bind %s: the instance retired by a reload is no longer used; closed", b->conf->name);
    }
    if (b->impl != NULL)
        b->ops->close(b);
    catalog_drop(b->catalog.cur);
    confref_drop(b->cfgref);
    free(b);
}

/* ---- Jobs ------------------------------------------------------------ */

struct job *job_new(enum job_type type, struct bind *b, struct session *sess, uint64_t owner)
{
    struct job *job = calloc(1, sizeof *job);

    if (job == NULL)
        return NULL;
    if (pthread_mutex_init(&job->lock, NULL) != 0) {
        free(job);
        return NULL;
    }
    if (pthread_cond_init(&job->cond, NULL) != 0) {
        pthread_mutex_destroy(&job->lock);
        free(job);
        return NULL;
    }
    job->type = type;
    job->bind = b;
    bind_hold(b);
    job->cfgref = confref_hold(b->host->cfgref);
    job->sess = sess;
    job->owner = owner;
    job->refs = 1;
    job->max_unacked = confref_cfg(job->cfgref)->max_output;
    job->catalog_version = b->catalog.cur != NULL ? b->catalog.cur->version : -1;
    atomic_init(&job->cancelled, false);
    return job;
}

void job_unref(struct job *job)
{
    struct bind *b = job->bind;

    assert(bind_host_on_loop(b->host));
    assert(job->refs > 0);
    if (--job->refs > 0)
        return;
    codec_request_free(&job->req);
    for (size_t i = 0; i < job->nmore; i++)
        codec_request_free(&job->more[i].req);
    free(job->more);
    free(job->begin_buf);
    catalog_drop(job->catalog);
    catset_drop(job->catset);
    for (size_t i = 0; i < job->nxbinds; i++)
        bind_drop(job->xbinds[i]);
    free(job->xbinds);
    free(job->xact_binds);
    free(job->xact_pg);
    free(job->xact_lent);
    buf_free(&job->done_event.data);
    pthread_cond_destroy(&job->cond);
    pthread_mutex_destroy(&job->lock);
    confref_drop(job->cfgref);
    free(job);
    bind_drop(b);
}

int job_post_chunk(struct job *job, struct buf *data)
{
    struct job_event *ev;

    if (atomic_load(&job->cancelled))
        return -1;
    if (data->len == 0)
        return 0;
    ev = calloc(1, sizeof *ev);
    if (ev == NULL)
        return 0; /* keep the bytes; they go out with the next post */
    ev->job = job;
    ev->data = *data;
    *data = (struct buf)BUF_INIT;
    pthread_mutex_lock(&job->lock);
    job->unacked += ev->data.len;
    pthread_mutex_unlock(&job->lock);
    host_post(job->bind->host, ev);
    return 0;
}

void job_post_done(struct job *job, struct buf *data)
{
    struct job_event *ev = &job->done_event;

    ev->job = job;
    ev->done = true;
    ev->data = *data;
    *data = (struct buf)BUF_INIT;
    host_post(job->bind->host, ev);
}

void job_fail(struct job *job, const char *code, const char *msg)
{
    struct buf out = BUF_INIT;

    if (codec_put_error(&out, code, msg) != 0)
        buf_reset(&out); /* nothing to say; the session notices an empty reply */
    job->failed = true;
    job->in_txn = false;
    job_post_done(job, &out);
}

int job_wait_credit(struct job *job)
{
    int rc = 0;

    pthread_mutex_lock(&job->lock);
    while (job->unacked > job->max_unacked && !atomic_load(&job->cancelled))
        pthread_cond_wait(&job->cond, &job->lock);
    if (atomic_load(&job->cancelled))
        rc = -1;
    pthread_mutex_unlock(&job->lock);
    return rc;
}

void job_ack(struct job *job, size_t n)
{
    bool go_on;

    assert(bind_host_on_loop(job->bind->host));
    pthread_mutex_lock(&job->lock);
    job->unacked = n > job->unacked ? 0 : job->unacked - n;
    go_on = job->unacked <= job->max_unacked;
    pthread_cond_signal(&job->cond);
    pthread_mutex_unlock(&job->lock);
    if (go_on && job->bind->ops->credit != NULL)
        job->bind->ops->credit(job->bind, job);
}

void job_cancel(struct job *job)
{
    assert(bind_host_on_loop(job->bind->host));
    pthread_mutex_lock(&job->lock);
    atomic_store(&job->cancelled, true);
    pthread_cond_broadcast(&job->cond);
    pthread_mutex_unlock(&job->lock);
    job->bind->ops->interrupt(job->bind, job);
}
