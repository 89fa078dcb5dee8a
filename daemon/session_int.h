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
/* A session about to be freed leaves the flush list. */
void session_flush_forget(struct session *s);
/* Read when there is room for more requests; stop otherwise. */
void session_update_reading(struct session *s);

/* session_auth.c: logins. */

/* Detach the .auth from its session and free it. Loop thread. */
void session_auth_free(struct session_auth *a);
/* After the TLS handshake: log in by the client certificate's CN. */
void session_tls_login(struct session *s);

#endif
