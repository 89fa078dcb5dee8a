/*
 * The queue of password checks (.auth) in front of libuv's thread pool:
 * few run at once, and a peer whose logins keep failing waits behind
 * everyone else, so an .auth storm costs the storming peer, not other
 * clients' logins or PostgreSQL cancel requests (which share the pool).
 * Loop thread only.
 */
#ifndef SQLMUX_DAEMON_AUTHQ_H
#define SQLMUX_DAEMON_AUTHQ_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct authq;

/* One check: embedded in its owner's struct, which must stay alive until
 * done runs or authq_cancel() took it back. */
struct authq_check {
    uv_work_t work;        /* work.data is the owner's */
    uv_work_cb run;        /* runs on the pool */
    uv_after_work_cb done; /* runs on the loop; may free the check */
    struct authq *q;
    struct authq_check *next; /* the waiting list */
    char peer[64];            /* the peer's address without its port */
};

/* A new queue for loop; NULL on ENOMEM. */
struct authq *authq_new(uv_loop_t *loop);

/* Free q; no check may be waiting or running. */
void authq_free(struct authq *q);

/* Queue check c for the client at `peer` ("host:port", or "unix"): run
 * runs on the pool when c's turn comes, then done on the loop. */
void authq_submit(struct authq *q, struct authq_check *c, const char *peer, uv_work_cb run,
                  uv_after_work_cb done);

/* Take back a check that has not started: true when it was waiting (done
 * will not run), false when it runs already (done will). */
bool authq_cancel(struct authq_check *c);

/* Check c (whose done runs now) found a wrong password: later checks
 * from its peer's address wait behind others' until it has not failed for
 * a while. */
void authq_failed(const struct authq_check *c);

#endif
