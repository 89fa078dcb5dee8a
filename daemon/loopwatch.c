/*
 * The loop-stall detector (loopwatch.h): a prepare handle that, at each
 * turn of the loop, takes the time and libuv's idle-time counter, and
 * counts the work the previous turn did.
 *
 * libuv's turn is: timers, pending, idle, prepare, poll (epoll_wait, then
 * the I/O callbacks), check, closing handles. Measured from prepare to
 * prepare, a turn includes the wait in epoll_wait; with
 * UV_METRICS_IDLE_TIME libuv adds up exactly that wait (it takes the time
 * before and after a blocking epoll_wait), so work = elapsed - idle.
 */
#include "daemon/loopwatch.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "daemon/log.h"

#define NS_PER_MS 1000000ull

/* Log the turns over the threshold not yet logged. */
static void loopwatch_warn(struct loopwatch *w, uint64_t now)
{
    if (w->unwarned == 1)
        log_warn("loop stall: one turn of the event loop worked %.1f ms (loop_stall_warn = %d ms); no client "
                 "was read or answered meanwhile",
                 (double)w->unwarned_longest_ns / 1e6, w->warn_ms);
    else
        log_warn("loop stall: %llu turns of the event loop worked over loop_stall_warn (%d ms) in the last "
                 "%.0f s, the longest %.1f ms; no client was read or answered meanwhile",
                 (unsigned long long)w->unwarned, w->warn_ms, (double)(now - w->warned_at) / 1e9,
                 (double)w->unwarned_longest_ns / 1e6);
    w->warned_at = now;
    w->unwarned = 0;
    w->unwarned_longest_ns = 0;
}

void loopwatch_turn(struct loopwatch *w)
{
    uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(w->prepare.loop) + w->waited_ns;
    uint64_t work;

    if (w->turn_start == 0) {
        w->turn_start = now;
        w->idle_start = idle;
        return;
    }
    /* libuv's idle spans and the polls lie inside this turn: idle <=
     * elapsed. */
    work = now - w->turn_start;
    work = idle - w->idle_start < work ? work - (idle - w->idle_start) : 0;
    w->turn_start = now;
    w->idle_start = idle;
    w->turns++;
    if (work > NS_PER_MS)
        w->over_1ms++;
    if (work > 10 * NS_PER_MS)
        w->over_10ms++;
    if (work > w->longest_ns) {
        /* A new record: rare (about log(turns) times), so the wall clock
         * is read only then. */
        uv_timeval64_t tv;
        w->longest_ns = work;
        if (uv_gettimeofday(&tv) == 0)
            w->longest_at_ms = tv.tv_sec * 1000 + tv.tv_usec / 1000;
    }
    if (w->warn_ms > 0 && work > (uint64_t)w->warn_ms * NS_PER_MS) {
        w->unwarned++;
        if (work > w->unwarned_longest_ns)
            w->unwarned_longest_ns = work;
    }
    if (w->unwarned > 0 && (w->warned_at == 0 || now - w->warned_at >= LOOPWATCH_WARN_EVERY_NS))
        loopwatch_warn(w, now);
}

static void on_prepare(uv_prepare_t *h)
{
    loopwatch_turn(h->data);
}

int loopwatch_start(struct loopwatch *w, uv_loop_t *loop, int warn_ms)
{
    int rc;

    w->warn_ms = warn_ms;
    if ((rc = uv_loop_configure(loop, UV_METRICS_IDLE_TIME)) != 0 ||
        (rc = uv_prepare_init(loop, &w->prepare)) != 0)
        return rc;
    w->started = true;
    w->prepare.data = w;
    rc = uv_prepare_start(&w->prepare, on_prepare);
    /* It watches the loop; it does not keep it running. */
    uv_unref((uv_handle_t *)&w->prepare);
    return rc;
}

void loopwatch_thread_times(uint64_t *cpu_ns, uint64_t *wait_ns)
{
    struct timespec ts;
    uint64_t run, wait;
    FILE *f;

    *cpu_ns = 0;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
        *cpu_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    /* "run_ns wait_ns timeslices" (Documentation/scheduler/sched-stats.rst);
     * absent without CONFIG_SCHED_INFO. */
    *wait_ns = UINT64_MAX;
    f = fopen("/proc/thread-self/schedstat", "re");
    if (f == NULL)
        return;
    if (fscanf(f, "%" SCNu64 " %" SCNu64, &run, &wait) == 2)
        *wait_ns = wait;
    fclose(f);
}

void loopwatch_set_warn(struct loopwatch *w, int warn_ms)
{
    w->warn_ms = warn_ms;
    if (warn_ms == 0)
        w->unwarned = 0; /* nothing more is logged */
}

void loopwatch_close(struct loopwatch *w)
{
    if (w->started && !uv_is_closing((uv_handle_t *)&w->prepare))
        uv_close((uv_handle_t *)&w->prepare, NULL);
}
