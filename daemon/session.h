/*
 * A client session: one connection, its input buffer and request queue,
 * its transaction state, and the response stream written back in request
 * order. Sessions run on the loop thread only.
 *
 * State machine (every change goes through session_set_state()):
 *
 *   SESS_IDLE ──request needs a backend──▶ SESS_BUSY ──job done──▶ SESS_IDLE
 *       │  │                                  │
 *       │  └──.auth──▶ SESS_AUTH ──checked (and, when wrong, delayed)──▶ SESS_IDLE
 *       │                 │                   │
 *       └────────── client gone / .quit / server stop ─────────▶ SESS_CLOSING
 *
 * SESS_CLOSING waits for the running job or password check (if any) to
 * finish, ends an open transaction with a JOB_RELEASE, then closes the
 * handle; the struct is freed in uv_close's callback, never inside its own
 * callbacks.
 */
#ifndef SQLMUX_DAEMON_SESSION_H
#define SQLMUX_DAEMON_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "daemon/backend.h"
#include "proto/buf.h"
#include "proto/codec.h"

struct server;
struct session_auth;
struct tls_conn;
struct tls_server;

enum sess_state {
    SESS_IDLE,    /* waiting for or handling requests on the loop */
    SESS_BUSY,    /* a job of this session runs on a backend */
    SESS_AUTH,    /* its .auth password check waits its turn (authq) or
                     runs on the thread pool, or the answer to a wrong
                     one waits out auth_fail_delay */
    SESS_CLOSING, /* going away; no more requests are read */
};

/* One queued input: a request, or a framing error to answer in order. */
struct pending {
    bool is_error;
    struct request req;
    const char *err_code;
    char *err_msg; /* owned; NULL when out of memory */
    size_t bytes;  /* its SQL and parameter bytes (queued_bytes) */
};

struct session {
    struct server *srv;
    uint64_t id;
    struct session *prev, *next;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    char peer[64];
    /* TLS (daemon/tls.c) of a client of tls_listen; NULL: plain text. Bytes
     * read are decrypted before the codec sees them, bytes written are
     * encrypted after it made them. */
    struct tls_conn *tls;
    bool plain_remote; /* plain TCP from a non-loopback peer (require_tls) */
    enum sess_state state;
    bool reading;          /* uv_read_start is active */
    bool closed_handle;    /* uv_close called */
    bool quit_after_flush; /* .quit: close once the output is written */
    bool input_ended;      /* the client shut its sending side (EOF): answer
                              what it sent, then close */

    /* Input: inbuf[0..inpos) is consumed, inbuf[inpos..len) waits to be
     * decoded. */
    struct buf inbuf;
    size_t inpos;
    bool inbuf_shared; /* inbuf is srv->rbuf, during on_read only */
    struct codec_discard discard;

    /* Decoded requests not yet handled: a ring of qcap slots, allocated at
     * the first request and grown up to max_pipeline, so an idle client
     * costs little memory. */
    struct pending *queue;
    size_t qhead, qcount, qcap;
    size_t queued_bytes; /* of the queued requests: decoding waits while
                            they hold max_request_total */

    /* Output not yet handed to libuv; flush_queued: on srv->flush_head to
     * be written at the end of the loop turn. */
    struct buf out;
    bool flush_queued;
    struct session *flush_next;

    /* Its slice of the loop turn (session_advance): the turn
     * (srv->watch.turns) it is for, when its first measured request
     * ended, and requests handled since the last clock reading. yielded:
     * it worked a whole slice and is on srv->yield_head, neither reading
     * nor handling requests until resume_idle goes on with it. */
    uint64_t slice_turn;
    uint64_t slice_start;
    unsigned slice_count;
    bool yielded;
    struct session *yield_next;
    /* client_output_timeout: libuv's write queue as last seen, and since
     * when it has been that size (not shrinking: the client reads none). */
    size_t stall_queued;
    uint64_t stall_since;

    /* Routing and transactions. use_bind is always one of srv->binds (a
     * reload moves it to the bind of the same name, or to default);
     * txn_bind holds a reference while in_txn, so a transaction ends on
     * the bind it began on even when a reload replaces that bind. */
    struct bind *use_bind; /* bind for statements naming no table */
    bool txn_held;         /* a BEGIN waits for its next statement */
    char *held_begin;      /* its text */
    bool in_txn;           /* a transaction is open on txn_bind */
    struct bind *txn_bind;
    bool txn_wrote;        /* a statement that may write ran in it */
    char *txn_begin;       /* the BEGIN it began with (joining binds run it), or NULL */
    char **txn_savepoints; /* its savepoints' names, outermost first: a bind
                              joining later sets them too (session_xact.c) */
    size_t ntxn_savepoints;
    /* Its participants when it spans binds with a PostgreSQL one, and the
     * steps the session runs for it (session_xact.c); NULL: one bind. */
    struct sess_xact *xt;

    /* For .clients. */
    uint64_t connected_at; /* uv_now() at accept */
    uint64_t active_at;    /* uv_now() at its last input or answer */
    uint64_t statements;   /* statements run */
    bool logged_connect;   /* log_connections logged the connect: log the disconnect too */

    struct job *job; /* the running job (SESS_BUSY) */

    /* Authentication, when the configuration has users: user is the
     * current configuration's entry for user_name (a reload looks it up
     * again), NULL until an .auth succeeds. */
    char *user_name;
    const struct user_conf *user;
    uint64_t unauth_since;     /* uv_now() since when it lacks a user (login_timeout) */
    unsigned auth_failures;    /* failed .auth on this connection */
    struct session_auth *auth; /* the .auth in progress (SESS_AUTH) */

    /* A command over every bind in progress (.tables): commands.c's, made
     * by it with malloc on first use; freed with the session. */
    struct command_fanout *fanout;
};

/* Accept a connection from `server_handle` (a listening uv_tcp_t or
 * uv_pipe_t); tls: the context of a TLS listener, or NULL for plain text.
 * Loop thread. */
void session_accept(struct server *srv, uv_stream_t *server_handle, struct tls_server *tls);

/* Deliver a job event (loop thread; called by the server's event drain). */
void session_job_event(struct job_event *ev);

/* The idle poller's reader of the client expected next (idlepoll.h);
 * ctx: the server. Loop thread. */
bool session_read_expected(void *ctx);
bool session_handle_expected(void *ctx);

/* Start closing (idempotent). cancel: the client is gone, so stop its
 * running statement and drop pending output; otherwise (.quit, server
 * stop) the running statement finishes and its response is flushed
 * before the connection closes. */
void session_close(struct session *s, bool cancel);

/* Whether the client has read none of its answers for `limit` ms while
 * it holds a backend connection (a statement runs, or a transaction is
 * open). Call it now and then (the server's sweep): it notes whether the
 * output moved since the last call. Loop thread. */
bool session_output_stalled(struct session *s, uint64_t now, uint64_t limit);

/* Whether the client of a running statement is gone for good, though the
 * session does not read its socket (it ended its input, or its pipeline
 * is full): the connection was reset, or a unix socket's peer closed it
 * fully. A TCP client that closed normally (FIN) cannot be told from one
 * that only ended its input and waits for its answers (nc -N): that one
 * is found out when its answer is written. Loop thread; does not block. */
bool session_peer_gone(struct session *s);

/* shutdown_timeout passed: interrupt the running statement, drop what is
 * not yet written, and close now (idempotent). Loop thread. */
void session_abort(struct session *s);

/* A reload swapped srv->binds: move use_bind to the new table. Called while
 * the old binds are still alive. */
void session_config_changed(struct session *s);

/* Check USER's PASSWORD off the loop (SESS_AUTH) and answer +OK user=USER,
 * or -ERR AUTH after the configured delay. Loop thread. */
void session_auth(struct session *s, const char *user, const char *password);

/* Whether require_tls refuses this session .auth and SQL: it is plain TCP
 * from a non-loopback peer. */
bool session_tls_required(const struct session *s);

/* Whether the session may use commands (and SQL): authentication is off,
 * or it has authenticated. */
bool session_authenticated(const struct session *s);

/* The session's access to bind b: read-write for everyone when the
 * configuration has no users, none before .auth; looked up by name for a
 * bind a reload retired (a transaction ending there). */
enum grant session_grant(const struct session *s, const struct bind *b);
/* The SQLite bind a statement across binds runs on inside the session's
 * transaction: its home, else the session's .use bind when it is an
 * SQLite bind the user may read, else the first such bind; NULL: none
 * (session_xact.c). */
struct bind *session_xact_pick_home(const struct session *s);

/* "idle", "busy", "auth" or "closing". */
const char *session_state_name(enum sess_state st);

/* Response helpers for command handlers. All append to s->out. */
void session_reply_ok(struct session *s, const char *facts);
/* "+OK rows=N" after rows; "+OK changes=N" for a statement without. */
void session_reply_ok_rows(struct session *s, uint64_t rows);
void session_reply_ok_changes(struct session *s, int64_t changes);
void session_reply_error(struct session *s, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Column header from a NULL-terminated list of name/type pairs. */
void session_reply_columns(struct session *s, const char *const *names_types);
/* One row of text fields (NULL → \N). */
void session_reply_row(struct session *s, const char *const *fields, size_t n);

/* Submit a job on its bind (job->bind) for this idle session and enter
 * SESS_BUSY. The job is the session's until its done event. It cannot
 * fail: a backend reports every error, out of memory included, through
 * that done event. Loop thread. */
void session_start_job(struct session *s, struct job *job);

#endif
