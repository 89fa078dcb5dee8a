/*
 * Polling before the loop sleeps (idle_poll_us). After a turn that wrote
 * answers, the client that got them often sends its next request within
 * microseconds: a pipelining client refilling its window, an application
 * running its statements one after the other. Going to sleep in
 * epoll_wait then costs a wake-up each time: a context switch, and on a
 * virtual machine a halt and an inter-processor interrupt, which there
 * cost more than the statement itself. So the loop first polls for a
 * while (poll() on libuv's epoll descriptor, which is readable as soon as
 * an event is ready) and sleeps only when nothing came.
 *
 * How long it polls adapts, as Linux's haltpoll governor does for a
 * guest's idle CPUs (Documentation/virt/guest-halt-polling.rst): the
 * window starts at 0; when the next answered request came after the
 * window but within idle_poll_us of the last answers, the window grows
 * (to idle_poll_us / 4, then doubling up to idle_poll_us); when it came
 * later than that, it halves (below idle_poll_us / 4: 0). A client that
 * pauses longer than idle_poll_us between requests thus costs no polling,
 * and an idle daemon polls not at all; the CPU polling costs is what the
 * wake-ups cost otherwise.
 *
 * Not on a busy machine: a loop that polls instead of sleeping loses the
 * scheduler's preference for tasks that slept, so where the CPUs are
 * contended it would answer later, not sooner (measured: 1,000 clients
 * of a PostgreSQL bind on 2 cores, 9 to 565 requests/s instead of
 * 12,000). Every IDLEPOLL_CHECK_MS the poller reads how long the loop
 * thread waited for a CPU meanwhile (the kernel's run delay,
 * loopwatch_thread_times()); over IDLEPOLL_CONTENDED_PCT of
 * IDLEPOLL_CHECK_MS (1 ms), however long ago the last look was, it does
 * not poll until a later look finds the CPU free again. The window keeps
 * following the client meanwhile.
 *
 * The poll runs in an idle callback (before the next turn's prepare and
 * poll phases), never during a turn's work; its time counts as the
 * loop's waiting in the stall detector (loopwatch.h), not as work.
 *
 * Serving one client. When turn after turn answers one client only (a
 * client sending its statements in a stream, the others idle), that
 * client's next request is what the poll waits for. The poller's reader
 * (idlepoll_set_reader, session_io.c) then tries one non-blocking read of
 * that client's socket before each poll of the epoll descriptor, and
 * again when that poll sees an event (the request may have come since the
 * read before it): when the request has come, that one system call has
 * it, where the poll, libuv's epoll_wait and libuv's read took three
 * (idle_reads in .stats). The input is handled as libuv's read callback
 * would handle it (handle_read(), once the poll's time is counted). When
 * that answered the client at once (its statements ran on the loop) and
 * sent the answers, the poller polls for its next request straight away,
 * without going round libuv's phases (idle_rounds): each such round
 * counts as a turn of its own for the stall detector, and the rounds stop
 * as soon as libuv has anything else to do (an event on another
 * descriptor, a due timer, an idle handle, a pending or closing one, a
 * check handle of the binds'), and after IDLEPOLL_LANE_NS at most, so no
 * other work waits for them longer.
 */
#ifndef SQLMUX_DAEMON_IDLEPOLL_H
#define SQLMUX_DAEMON_IDLEPOLL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "daemon/loopwatch.h"

/* How often the run delay is looked at, and the share of that time spent
 * waiting for a CPU past which the machine is too busy to poll. */
#define IDLEPOLL_CHECK_MS      100
#define IDLEPOLL_CONTENDED_PCT 1

/* The longest run of rounds serving one client (see above). */
#define IDLEPOLL_LANE_NS (1000u * 1000u)

struct idlepoll {
    uv_idle_t idle;          /* active while a poll is due */
    bool started;            /* idle is initialized (close it) */
    struct loopwatch *watch; /* told of the time polled */
    uint64_t max_ns;         /* idle_poll_us; 0: never poll */
    uint64_t window_ns;      /* the adaptive window: 0..max_ns */
    /* The last poll gave up (or none was due with window 0): at the next
     * answers, libuv's idle-time counter tells how long the loop slept
     * since then. */
    bool measuring;
    uint64_t gave_up_window; /* what was polled before giving up */
    uint64_t idle_mark;      /* uv_metrics_idle_time() then */
    /* The CPU is contended (see above): no polls until check_at. */
    bool contended;
    uint64_t check_at;  /* uv_now() of the next look at the run delay */
    uint64_t run_delay; /* the loop thread's run delay then (ns) */
    /* .stats */
    uint64_t polls;  /* polls started */
    uint64_t caught; /* of those, ended by an event within the window */
    uint64_t busy;   /* armings without a poll: the CPU was contended */
    uint64_t polled_ns;
    uint64_t reads;  /* polls ended by the reader's read */
    uint64_t rounds; /* of those, polls that followed one at once */
    /* The reader (idlepoll_set_reader), or NULL. */
    bool (*read_next)(void *ctx);
    bool (*handle_read)(void *ctx);
    void *reader_ctx;
};

/* Start the poller of loop with idle_poll_us = max_us, telling watch of
 * the time it polls. 0, or a libuv error code (idlepoll_close() still
 * applies). Loop thread. */
__attribute__((warn_unused_result)) int idlepoll_start(struct idlepoll *p, uv_loop_t *loop, int max_us,
                                                       struct loopwatch *watch);

/* The turn wrote answers: poll for the next request before sleeping, as
 * long as the window says. */
void idlepoll_arm(struct idlepoll *p);

/* Give the poller a reader of the client expected next (see above):
 * read_next(ctx) tries one read without waiting and says whether input
 * came; handle_read(ctx) then handles it, and says whether rounds may
 * follow (the answers are out, and nothing waits for the turn's check
 * phase). */
void idlepoll_set_reader(struct idlepoll *p, bool (*read_next)(void *ctx), bool (*handle_read)(void *ctx),
                         void *ctx);

/* A reload's idle_poll_us. */
void idlepoll_set_max(struct idlepoll *p, int max_us);

/* Close the handle (when started). */
void idlepoll_close(struct idlepoll *p);

#endif
