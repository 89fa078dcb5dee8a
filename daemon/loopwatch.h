/*
 * The loop-stall detector: how long each turn of the event loop worked.
 * While a turn runs, no other client is read, answered or accepted, so a
 * turn that works for tens of milliseconds is a latency spike for every
 * client at once. The watch counts the turns, those that worked over 1 ms
 * and over 10 ms, and the longest one and when it happened (.stats), and
 * logs a warning for a turn over loop_stall_warn ms (rate-limited).
 *
 * A turn's work is the time from one prepare phase to the next, less the
 * time libuv spent blocked in epoll_wait meanwhile (UV_METRICS_IDLE_TIME,
 * uv_metrics_idle_time()) and the idle poller's polls (waited_ns): the
 * timers, the I/O callbacks, the check and close callbacks of that turn.
 * Time the thread spent descheduled while it had work counts as work:
 * clients waited just the same. Cost per turn:
 * one uv_hrtime() and one read of libuv's idle-time counter here; libuv's
 * accounting adds a clock read before and after a blocking epoll_wait,
 * and polls once without waiting before it blocks (measured: p50 latency
 * unchanged, 0.03 to 0.17 more epoll_wait per request when every request
 * wakes the loop).
 */
#ifndef SQLMUX_DAEMON_LOOPWATCH_H
#define SQLMUX_DAEMON_LOOPWATCH_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* A warning line for a turn over the threshold at most this often; the
 * turns over it meanwhile are counted in the next line. */
#define LOOPWATCH_WARN_EVERY_NS (10ull * 1000000000ull)

struct loopwatch {
    uv_prepare_t prepare;
    bool started;          /* prepare is initialized (close it) */
    uint64_t turn_start;   /* uv_hrtime() at the last prepare phase; 0: none yet */
    uint64_t idle_start;   /* uv_metrics_idle_time() + waited_ns then */
    uint64_t waited_ns;    /* time the loop waited for events outside epoll_wait
                              (idlepoll.h), added by the waiter: not work */
    uint64_t turns;        /* turns measured since start */
    uint64_t over_1ms;     /* of those, turns that worked more than 1 ms */
    uint64_t over_10ms;    /* ... more than 10 ms */
    uint64_t longest_ns;   /* the longest turn's work */
    int64_t longest_at_ms; /* when it ended: ms since the Unix epoch; 0: no turn yet */
    /* The warning: turns over warn_ms (0: never) log at most one line per
     * LOOPWATCH_WARN_EVERY_NS; unwarned counts those since the last one. */
    int warn_ms;
    uint64_t warned_at;
    uint64_t unwarned;
    uint64_t unwarned_longest_ns;
};

/* Start measuring the turns of loop. warn_ms: as loop_stall_warn. 0, or
 * a libuv error code (then loopwatch_close() still applies). Loop
 * thread. */
__attribute__((warn_unused_result)) int loopwatch_start(struct loopwatch *w, uv_loop_t *loop, int warn_ms);

/* The loop thread's time since start: *cpu_ns on a CPU, and *wait_ns
 * runnable but waiting for one (the kernel's run-queue delay; UINT64_MAX
 * when the system does not say). A stalled turn whose time is mostly wait
 * is the machine's, not the daemon's. A system call and a /proc read: for
 * .stats, not for every turn. Loop thread only. */
void loopwatch_thread_times(uint64_t *cpu_ns, uint64_t *wait_ns);

/* A turn ends here: what the prepare phase does, for a turn that ends
 * without one (the idle poller's serving of one client, idlepoll.h). */
void loopwatch_turn(struct loopwatch *w);

/* A reload's loop_stall_warn. */
void loopwatch_set_warn(struct loopwatch *w, int warn_ms);

/* Close the handle (when started). */
void loopwatch_close(struct loopwatch *w);

#endif
