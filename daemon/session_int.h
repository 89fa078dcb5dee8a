/*
 * Internal to the client sessions (session.c, session_io.c,
 * session_auth.c), not for other modules: the .auth in progress, the
 * pre-login input limit, and the functions one file lends the others.
 * session.c owns the state machine (session_set_state is the one way to
 * change a session's state), session_io.c the socket's input and output,
 * session_auth.c the logins.
 */
#ifndef SQLMUX_DAEMON_SESSION_INT_H
#define SQLMUX_DAEMON_SESSION_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "daemon/auth.h"
#include "daemon/authq.h"
#include "daemon/route.h"
#include "daemon/session.h"

/* Before .auth, when the configuration has users, one request may hold at
 * most this many bytes (an .auth line and some room), and requests are
 * decoded one at a time: a connection that has not logged in holds a few
 * KiB of input, not max_request_total. */
#define PRELOGIN_MAX_REQUEST 4096

/* One .auth: the check runs on libuv's thread pool (crypt is slow on
 * purpose), then a wrong answer waits out auth_fail_delay on the timer.
 * Owned by the session while s->auth points to it; detached (s NULL) when
 * the session closes during the delay, then freed in the timer's close
 * callback. */
struct session_auth {
    struct authq_check check; /* waits in srv->authq, then runs on the pool */
    uv_timer_t timer;
    struct session *s;
    struct confref *cfgref; /* the configuration checked against */
    bool ok;
    bool checking;       /* the work has not reported back yet */
    bool close_graceful; /* the session closed meanwhile: how */
    char user[AUTH_MAX_FIELD + 1];
    char password[AUTH_MAX_FIELD + 1];
};

/* session.c: the state machine and the lifecycle. */

/* Every state change goes through here (the legality table). Loop thread. */
void session_set_state(struct session *s, enum sess_state to);
/* Decode what was read, start what can start, flush, and read on or stop. */
void session_pump(struct session *s);
/* No job runs any more: end the transaction and close the handle, after
 * flushing the output when graceful. */
void session_finish_close(struct session *s, bool graceful);

/* The transaction is open on b now, or on none (b NULL); the session
 * holds a reference to the bind while it is. */
void session_txn_set(struct session *s, struct bind *b);
/* Route one statement and start it. Takes the request's memory. */
void session_sql(struct session *s, struct request *req);
/* A statement of the transaction for SQLite binds other than its home
 * (daemon/xact.h): runs on the home, or joins one. True when it took req. */
bool session_xact_stmt(struct session *s, struct request *req, const struct route *r, unsigned warnings,
                       bool lend);

/* A statement across binds the session's user lacks a grant for (read on
 * every bind it reads, read-write on the one it writes): answered -ERR
 * NOPERM naming the bind, req freed, true. */
bool session_cross_refused(struct session *s, struct request *req, const struct route *r);

/* session_xact.c: transactions with PostgreSQL participants. */

/* Inside a transaction: a statement for a bind other than txn_bind, one
 * across binds with a PostgreSQL one, a COMMIT, ROLLBACK or savepoint of a
 * transaction with several participants. True when it took req (answered
 * or started); false: route it as always. */
bool session_xact_route(struct session *s, struct request *req, const struct route *r);
/* A statement job of the session finished: its transaction bookkeeping. */
void session_xact_done(struct session *s, struct job *job);

/* The session's transaction on one bind ended without its COMMIT or
 * ROLLBACK (an error rolled it back, or the bind committed it). */
void session_txn_ended(struct session *s);
/* A step's answer (job->xact_step). */
void session_xact_step_done(struct session *s, struct job *job, struct buf *data);
/* Whether the session runs steps of its own now (no client statement). */
bool session_xact_running(const struct session *s);
/* Closing: ROLLBACK on every participant (release jobs), forget them. */
void session_xact_release(struct session *s);
void session_xact_free(struct session *s);
/* The SQLite participant of the open transaction (its home), or NULL. */
struct bind *session_xact_home(const struct session *s);
/* The BEGIN an SQLite bind b runs to join the transaction, with the
 * transaction's savepoints after it (malloc'd; NULL on ENOMEM). */
char *session_xact_begin_sqlite(const struct session *s, const struct bind *b);
/* Forget the transaction's savepoints (it ended). */
void session_xact_savepoints_clear(struct session *s);
/* Whether a job's statements may write. */
bool session_job_writes(const struct job *job);
/* A statement across SQLite and PostgreSQL binds inside the transaction:
 * on the home's worker with the PostgreSQL participants' connections lent
 * to it. Takes req. */
void session_xact_lend(struct session *s, struct request *req, const struct route *r);
/* Whether route r names PostgreSQL binds and the transaction has an
 * SQLite home to run it on (session_xact_pick_home). */
bool session_xact_spans_pg(const struct session *s, const struct route *r);
/* Lend job (on the home) the connections of its PostgreSQL binds'
 * participants. 0, or -1 with the error answered. */
int session_xact_lend_conns(struct session *s, struct job *job);

/* session_io.c: input and output. */

/* Bytes that wait for the client: in s->out and in libuv's queue. */
size_t session_unsent(const struct session *s);
/* Write data (taking its memory) after everything queued, as it is (no
 * TLS); job, when given, is acknowledged ack bytes as it is written. */
void session_write_raw(struct session *s, struct buf *data, struct job *job, size_t ack);
/* The same, encrypted first on a TLS connection; ack is data's length. */
void session_write(struct session *s, struct buf *data, struct job *job);
/* Write s->out now. */
void session_flush(struct session *s);
/* Write s->out at the end of this loop turn. */
void session_flush_soon(struct session *s);
/* A session about to be freed leaves the flush list, and the poller's
 * expectations (server.expect). */
void session_flush_forget(struct session *s);
/* Read when there is room for more requests; stop otherwise. */
void session_update_reading(struct session *s);

/* session_auth.c: logins. */

/* Detach the .auth from its session and free it. Loop thread. */
void session_auth_free(struct session_auth *a);
/* After the TLS handshake: log in by the client certificate's CN. */
void session_tls_login(struct session *s);

#endif
