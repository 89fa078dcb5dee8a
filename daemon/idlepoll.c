/*
 * Polling before the loop sleeps: see idlepoll.h.
 */
#include "daemon/idlepoll.h"

#include <poll.h>

#define NS_PER_US 1000u

/* The window's first size when it grows from 0, and its floor: below
 * it, it is 0. */
static uint64_t window_start(const struct idlepoll *p)
{
    return p->max_ns / 4 > 0 ? p->max_ns / 4 : 1;
}

/* How a poll ended. */
enum poll_end {
    POLL_GAVE_UP, /* the window is over (or poll() was interrupted) */
    POLL_EVENT,   /* an event is ready for libuv */
    POLL_READ,    /* the reader read the expected client's input */
};

/* One poll, before this turn's prepare and poll phases: until the
 * expected client's input is read, an event is ready for libuv (or a
 * worker's wake-up, an async handle: an event too), or the window is
 * over. Its time is the loop's waiting. */
static enum poll_end poll_once(struct idlepoll *p)
{
    struct pollfd pfd = {.fd = uv_backend_fd(p->idle.loop), .events = POLLIN};
    uint64_t start = uv_hrtime(), now = start, deadline = start + p->window_ns;
    enum poll_end end = POLL_GAVE_UP;

    p->polls++;
    for (;;) {
        if (p->read_next != NULL && p->read_next(p->reader_ctx)) {
            end = POLL_READ;
            now = uv_hrtime();
            break;
        }
        int rc = poll(&pfd, 1, 0);
        if (rc != 0) {
            /* The event may be the expected input itself, come since
             * the read above: read it rather than leave it to libuv's
             * epoll_wait() and read(). rc < 0 (EINTR): let libuv see. */
            if (rc > 0 && p->read_next != NULL && p->read_next(p->reader_ctx))
                end = POLL_READ;
            else
                end = rc > 0 ? POLL_EVENT : POLL_GAVE_UP;
            now = uv_hrtime();
            break;
        }
        now = uv_hrtime();
        if (now >= deadline)
            break;
    }
    p->polled_ns += now - start;
    p->watch->waited_ns += now - start;
    if (end != POLL_GAVE_UP)
        p->caught++;
    if (end == POLL_READ)
        p->reads++;
    return end;
}

/* The idle callback: a poll, and while the reader's client is answered
 * at once, the next one (see "Serving one client" in idlepoll.h). */
static void on_idle(uv_idle_t *h)
{
    struct idlepoll *p = h->data;
    uint64_t until = 0;
    enum poll_end end;

    for (;;) {
        uv_idle_stop(h); /* one poll per arming */
        end = poll_once(p);
        if (end != POLL_READ)
            break;
        /* The turn's work: it may answer, and arm again. */
        if (!p->handle_read(p->reader_ctx) || !uv_is_active((uv_handle_t *)h))
            return; /* not answered yet, no poll due, or a check phase due */
        if (until == 0)
            until = uv_hrtime() + IDLEPOLL_LANE_NS;
        else if (uv_hrtime() >= until)
            return;
        /* Go on only while libuv has nothing to do but poll: no other
         * idle handle, pending callback, closing handle or due timer. */
        uv_idle_stop(h);
        uv_update_time(h->loop);
        if (uv_backend_timeout(h->loop) == 0) {
            (void)uv_idle_start(h, on_idle);
            return;
        }
        loopwatch_turn(p->watch); /* that round was a turn of its own */
        p->rounds++;
    }
    if (end == POLL_GAVE_UP) {
        p->measuring = true;
        p->gave_up_window = p->window_ns;
        p->idle_mark = uv_metrics_idle_time(h->loop);
    }
}

int idlepoll_start(struct idlepoll *p, uv_loop_t *loop, int max_us, struct loopwatch *watch)
{
    int rc;

    p->watch = watch;
    idlepoll_set_max(p, max_us);
    if ((rc = uv_idle_init(loop, &p->idle)) != 0)
        return rc;
    p->started = true;
    p->idle.data = p;
    return 0;
}

/* Every IDLEPOLL_CHECK_MS: is the machine too busy to poll? The bound is
 * that share of one check period, also when the last look was longer ago:
 * the loop answered nothing meanwhile and mostly slept, and the wait of
 * the wake-up that ended the pause must not be diluted by the sleep (it
 * was: a pause of 2 s, then 100 ms of polls on a CPU shared with two
 * spinning processes). */
static void check_contention(struct idlepoll *p)
{
    uint64_t now = uv_now(p->idle.loop), cpu, delay;

    if (now < p->check_at)
        return;
    loopwatch_thread_times(&cpu, &delay);
    if (delay == UINT64_MAX) {
        p->check_at = UINT64_MAX; /* the system does not say: poll */
        return;
    }
    p->contended = p->run_delay != 0 &&
                   delay - p->run_delay > IDLEPOLL_CHECK_MS * 1000000u * IDLEPOLL_CONTENDED_PCT / 100;
    p->run_delay = delay;
    p->check_at = now + IDLEPOLL_CHECK_MS;
}

void idlepoll_arm(struct idlepoll *p)
{
    if (p->max_ns == 0)
        return;
    if (p->measuring) {
        /* The poll before gave up (or there was none): when did the next
         * answered request come? */
        uint64_t late = p->gave_up_window + (uv_metrics_idle_time(p->idle.loop) - p->idle_mark);
        p->measuring = false;
        if (late <= p->max_ns) {
            uint64_t grown = p->window_ns > 0 ? p->window_ns * 2 : window_start(p);
            p->window_ns = grown < p->max_ns ? grown : p->max_ns;
        } else {
            p->window_ns /= 2;
            if (p->window_ns < window_start(p))
                p->window_ns = 0;
        }
    }
    check_contention(p);
    if (p->contended)
        p->busy++;
    if (p->contended || p->window_ns == 0) {
        /* No poll; measure all the same, so the window follows the
         * client also while the CPU is contended, and is the client's
         * when polling resumes. */
        p->measuring = true;
        p->gave_up_window = 0;
        p->idle_mark = uv_metrics_idle_time(p->idle.loop);
        return;
    }
    (void)uv_idle_start(&p->idle, on_idle); /* fails only without a callback */
}

void idlepoll_set_reader(struct idlepoll *p, bool (*read_next)(void *ctx), bool (*handle_read)(void *ctx),
                         void *ctx)
{
    p->read_next = read_next;
    p->handle_read = handle_read;
    p->reader_ctx = ctx;
}

void idlepoll_set_max(struct idlepoll *p, int max_us)
{
    p->max_ns = max_us > 0 ? (uint64_t)max_us * NS_PER_US : 0;
    if (p->window_ns > p->max_ns)
        p->window_ns = p->max_ns;
    if (p->max_ns == 0) {
        p->measuring = false;
        if (p->started)
            uv_idle_stop(&p->idle);
    }
}

void idlepoll_close(struct idlepoll *p)
{
    if (p->started && !uv_is_closing((uv_handle_t *)&p->idle))
        uv_close((uv_handle_t *)&p->idle, NULL);
}
