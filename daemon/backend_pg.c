/*
 * The PostgreSQL backend: a pool of non-blocking libpq connections per
 * bind, driven by the daemon's loop (one uv_poll per server socket). No
 * thread per query and no blocking libpq call on the loop; the only work
 * off the loop is PQcancel, which libpq 15 offers only as a blocking call
 * and which runs on libuv's thread pool.
 *
 * Jobs wait in the bind's queue (bounded by max_queue) until a connection
 * is idle; a new connection is opened while the pool is below pool_size.
 * After each statement PQtransactionStatus() tells whether the connection
 * is inside a client's transaction: then it is pinned to that client (as
 * PgBouncer's transaction pooling does) and serves only its jobs until the
 * transaction ends. Rows stream in single-row mode; when the client does
 * not keep up, the connection stops reading from the server until the
 * client has read enough.
 *
 * A request with parameters runs as a prepared statement once its text has
 * been prepared on the connection (a per-connection LRU of stmt_cache
 * entries, named sqlmux_N), so the server parses and plans it once per
 * connection, not per request. A client's DEALLOCATE or DISCARD, or a
 * changed table, that makes a cached statement fail is noticed and the
 * statement re-prepared transparently when no transaction is open.
 *
 * When the server goes away, the statement in flight gets -ERR CONNLOST,
 * later statements get -ERR UNAVAILABLE at once while a timer reconnects
 * with exponential backoff (100 ms doubling to 5 s).
 */
#include <assert.h>
#include <ctype.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/backend.h"
#include "daemon/hash.h"
#include "daemon/log.h"
#include "daemon/migrate.h"
#include "daemon/route.h"
#include "daemon/server.h"
#include "daemon/sqllex.h"

#define CHUNK_BYTES    (64 * 1024)
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define IDLE_CHECK_MS  1000

enum pgconn_state {
    PGC_CONNECTING,
    PGC_IDLE,
    PGC_BUSY,
    PGC_CLOSING,
};

/* The queries one job sends, in order. A read-only user's statement runs
 * only inside a transaction that PostgreSQL itself keeps read-only:
 *
 *   outside a transaction:  BEGIN READ ONLY, statement, COMMIT
 *   a held BEGIN:           BEGIN..., lock, statement, lock
 *   inside a transaction:   [lock,] statement, lock
 *
 * "lock" is PG_RO_LOCK: it makes the transaction read-only and, being a
 * query, takes its snapshot, after which PostgreSQL refuses to make it
 * read-write again (SET TRANSACTION READ WRITE, set_config, savepoints).
 * It runs again after each statement because COMMIT AND CHAIN starts a new
 * transaction that could still be switched. Every query is a separate
 * extended-protocol message, so a statement is exactly one statement. */
enum pgjob_phase {
    PHASE_NONE,      /* the job has sent nothing yet (set on entering PGC_BUSY) */
    PHASE_RO_BEGIN,  /* BEGIN READ ONLY around a read-only user's statement */
    PHASE_BEGIN,     /* the held BEGIN is running */
    PHASE_RO_LOCK,   /* PG_RO_LOCK before the statement */
    PHASE_DEALLOC,   /* DEALLOCATE of the least used cached statement, to make room */
    PHASE_PREPARE,   /* PQsendPrepare of the statement, the first time on this connection */
    PHASE_REPREPARE, /* DEALLOCATE ALL after a cached statement turned out stale */
    PHASE_STMT,      /* the statement is running */
    PHASE_RO_RELOCK, /* PG_RO_LOCK after it, the transaction still open */
    PHASE_RO_COMMIT, /* ending the BEGIN READ ONLY (PG_RO_END, or ROLLBACK) */
    PHASE_RELEASE,   /* ROLLBACK of a departed client's transaction */
    PHASE_RESET,     /* DISCARD ALL: the session state a client changed goes */
};

#define PG_RO_LOCK "SELECT pg_catalog.set_config('transaction_read_only', 'on', true)"
/* PG_RO_LOCK after a read-only user's statement inside a transaction, which
 * also fails (division by zero, answered as NOPERM) when the statement
 * wrote although the transaction is read-only (a transaction id was
 * assigned: large objects are written that way) or holds a lock a reader
 * never needs (anything but ACCESS SHARE on a relation, any advisory lock):
 * one that blocks writers until the client ends its transaction. Reading a
 * large object (lo_get, loread) takes ROW EXCLUSIVE on pg_largeobject and
 * its index whatever the mode (PostgreSQL's open_lo_relation): a reader
 * needs that one, and it blocks no writer (only LOCK, VACUUM FULL, CREATE
 * INDEX of that catalog). */
#define PG_RO_CHECK                                                                                          \
    "SELECT pg_catalog.set_config('transaction_read_only', 'on', true), "                                    \
    "1 / (pg_catalog.txid_current_if_assigned() IS NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_locks "    \
    "WHERE pid = pg_catalog.pg_backend_pid() AND granted AND (locktype = 'advisory' OR "                     \
    "(locktype IN ('relation', 'object', 'page', 'tuple') AND mode <> 'AccessShareLock' AND NOT "            \
    "(locktype = 'relation' AND mode = 'RowExclusiveLock' AND relation IN "                                  \
    "('pg_catalog.pg_largeobject'::pg_catalog.regclass, "                                                    \
    "'pg_catalog.pg_largeobject_loid_pn_index'::pg_catalog.regclass))))))::int"
/* The end of a BEGIN READ ONLY around a read-only user's statement: did it
 * write (a transaction id was assigned), then undo everything it did. A
 * read-only transaction has nothing to commit, and ROLLBACK also undoes
 * what it changed in the session (SET, set_config, SET ROLE, LISTEN,
 * cursors); session-level advisory locks survive a rollback, so they are
 * released first. Sent as one simple query: one round trip, as COMMIT was. */
#define PG_RO_END                                                                                            \
    "SELECT pg_catalog.txid_current_if_assigned() IS NOT NULL, pg_catalog.pg_advisory_unlock_all(); "        \
    "ROLLBACK"

struct pg_bind;

/* A statement prepared on one connection, for requests with parameters.
 * Keyed by the rewritten SQL and the parameter types sent with it. */
struct pg_prepared {
    uint64_t hash;
    char *sql;
    Oid *types;
    int ntypes;
    unsigned id;   /* its server-side name is "sqlmux_<id>" */
    uint64_t used; /* LRU tick */
};

struct pgconn {
    struct pg_bind *pb;
    PGconn *conn;
    enum pgconn_state state;
    uv_poll_t *poll; /* watches fd; replaced when the socket changes */
    int fd;
    int events;          /* what poll waits for now */
    uv_timer_t timer;    /* connect timeout, then statement timeout */
    int handles;         /* open libuv handles; freed at zero */
    uint64_t pinned;     /* client whose transaction is open here, 0: none */
    uint64_t idle_since; /* uv_now() when it became idle */
    struct pgconn *next; /* the bind's list */

    /* The job running here. */
    struct job *job;
    enum pgjob_phase phase;
    bool header_sent;
    bool paused;      /* stopped reading: the client is behind */
    bool timed_out;   /* the statement timer cancelled the statement */
    bool ro_wrap;     /* this job opened a BEGIN READ ONLY to close */
    bool ro_locked;   /* the open transaction is locked read-only (PG_RO_LOCK ran
                         after the last statement); false outside one */
    bool failed;      /* an error result was seen */
    bool dirty;       /* the session state may have changed: DISCARD ALL
                         before the connection serves anyone again */
    bool copy_out;    /* a refused COPY ... TO STDOUT: its data is read and dropped */
    bool tuples;      /* the statement returned rows (a result set) */
    char changes[32]; /* PQcmdTuples of the last command */
    struct buf out;
    Oid *types; /* column types of the current result set */
    int ncols;

    /* Prepared statements (stmt_cache of them at most). */
    struct pg_prepared *prep;
    size_t nprep;
    struct pg_prepared pending; /* being prepared (PHASE_PREPARE) */
    unsigned prep_ids;
    uint64_t prep_tick;
    bool ran_prepared; /* the statement ran as a cached prepared statement */
    bool prep_stale;   /* ... and the server no longer knew it, or its plan */
    bool reprepared;   /* this job already re-prepared once */
    size_t stale_mark; /* where the stale error starts in out */
};

struct pg_bind {
    struct bind *bind;
    struct pgconn *conns; /* every connection, any state */
    int nconns;
    struct job *head, **tail; /* jobs waiting for a connection */
    size_t queued;
    bool down; /* the last connection attempt failed */
    char last_error[256];
    uint64_t backoff_ms;
    uv_timer_t retry; /* reconnect (backoff) and idle checks */
    bool retry_armed;
    uv_timer_t idle;
    uv_timer_t wait; /* query_wait_timeout of the oldest queued job */
    bool stopping;
    int handles;
    size_t stmt_cache; /* prepared statements kept per connection (fixed at open) */
};

static void conn_dispatch(struct pgconn *c);
static void conn_poll(struct pgconn *c, int events);
static void bind_kick(struct pg_bind *pb);

/* ---- Errors ---------------------------------------------------------- */

/* The protocol's code for an SQLSTATE. */
static const char *pg_code(const char *sqlstate, bool timed_out)
{
    if (sqlstate == NULL || strlen(sqlstate) != 5)
        return "SQL";
    if (strncmp(sqlstate, "23", 2) == 0)
        return "CONSTRAINT";
    if (strcmp(sqlstate, "57014") == 0)
        return timed_out ? "TIMEOUT" : "INTERRUPTED";
    if (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0 || strcmp(sqlstate, "55P03") == 0)
        return "BUSY";
    if (strcmp(sqlstate, "42501") == 0 || strncmp(sqlstate, "28", 2) == 0)
        return "DENIED";
    if (strcmp(sqlstate, "08P01") == 0)
        return "PARAMS";
    if (strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "57P", 3) == 0)
        return "CONNLOST";
    if (strcmp(sqlstate, "53200") == 0)
        return "NOMEM";
    if (strcmp(sqlstate, "53300") == 0)
        return "UNAVAILABLE";
    if (strncmp(sqlstate, "53", 2) == 0)
        return "FULL";
    if (strcmp(sqlstate, "22001") == 0)
        return "TOOBIG";
    if (strcmp(sqlstate, "22P02") == 0 || strcmp(sqlstate, "42804") == 0)
        return "MISMATCH";
    if (strcmp(sqlstate, "25006") == 0)
        return "READONLY";
    return "SQL";
}

static void reply_error(struct buf *out, const char *code, const char *msg)
{
    buf_reset(out);
    if (codec_put_error(out, code, msg) != 0)
        buf_reset(out);
}

/* "-ERR CODE primary message (SQLSTATE XXXXX)" from an error result. */
static void reply_result_error(struct pgconn *c, const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    char msg[1024];
    bool ro_user = c->job != NULL && c->job->readonly && state != NULL && strcmp(state, "25006") == 0;

    if (primary == NULL)
        primary = PQresultErrorMessage(res);
    if (c->timed_out && state != NULL && strcmp(state, "57014") == 0)
        snprintf(msg, sizeof msg,
                 "statement exceeded statement_timeout (%d ms) and was cancelled (SQLSTATE %s)",
                 c->pb->bind->conf->statement_timeout_ms, state);
    else if (ro_user)
        snprintf(msg, sizeof msg, "read-only access to bind %s: %s (SQLSTATE %s)", c->pb->bind->conf->name,
                 primary, state);
    else
        snprintf(msg, sizeof msg, "%s (SQLSTATE %s)", primary, state ? state : "?????");
    /* A read-only user's write is refused by PostgreSQL (the transaction is
     * read-only): it is a matter of grants, as on SQLite binds. */
    reply_error(&c->out, ro_user ? "NOPERM" : pg_code(state, c->timed_out), msg);
}

/* The connection's error without libpq's trailing newline. */
static void conn_error_text(PGconn *conn, char *dst, size_t n)
{
    size_t len;

    snprintf(dst, n, "%s", conn ? PQerrorMessage(conn) : "out of memory");
    len = strlen(dst);
    while (len > 0 && (dst[len - 1] == '\n' || dst[len - 1] == ' '))
        dst[--len] = '\0';
    for (char *p = dst; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
}

/* ---- Types ----------------------------------------------------------- */

static const char *pg_type_name(Oid oid)
{
    switch (oid) {
    case 16: return "bool";
    case 17: return "bytea";
    case 18: return "char";
    case 19: return "name";
    case 20: return "int8";
    case 21: return "int2";
    case 23: return "int4";
    case 25: return "text";
    case 26: return "oid";
    case 114: return "json";
    case 142: return "xml";
    case 700: return "float4";
    case 701: return "float8";
    case 790: return "money";
    case 869: return "inet";
    case 1042: return "bpchar";
    case 1043: return "varchar";
    case 1082: return "date";
    case 1083: return "time";
    case 1114: return "timestamp";
    case 1184: return "timestamptz";
    case 1186: return "interval";
    case 1266: return "timetz";
    case 1700: return "numeric";
    case 2950: return "uuid";
    case 3802: return "jsonb";
    case 1000: return "_bool";
    case 1005: return "_int2";
    case 1007: return "_int4";
    case 1016: return "_int8";
    case 1009: return "_text";
    case 1015: return "_varchar";
    case 1021: return "_float4";
    case 1022: return "_float8";
    default: return NULL;
    }
}

/* ---- Connections ----------------------------------------------------- */

static void bind_handle_closed(uv_handle_t *h)
{
    struct pg_bind *pb = h->data;
    if (--pb->handles == 0)
        free(pb);
}

static void prep_release(struct pg_prepared *p)
{
    free(p->sql);
    free(p->types);
    p->sql = NULL;
    p->types = NULL;
}

/* Forget every cached statement (the server's copies are gone or will be
 * deallocated). */
static void prep_clear(struct pgconn *c)
{
    for (size_t i = 0; i < c->nprep; i++)
        prep_release(&c->prep[i]);
    c->nprep = 0;
}

static void conn_handle_closed(uv_handle_t *h)
{
    struct pgconn *c = h->data;
    if (h != (uv_handle_t *)&c->timer)
        free(h);
    if (--c->handles == 0) {
        buf_free(&c->out);
        free(c->types);
        prep_clear(c);
        free(c->prep);
        prep_release(&c->pending);
        free(c);
    }
}

static void conn_unlink(struct pgconn *c)
{
    struct pg_bind *pb = c->pb;
    for (struct pgconn **pp = &pb->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            pb->nconns--;
            return;
        }
    }
}

/* ---- Connection state and job phase ---------------------------------- */

/* The legal changes of a connection's state, legal[from][to]:
 *
 *   PGC_CONNECTING ──ready──▶ PGC_IDLE ◀──job done── PGC_BUSY
 *                                 └────conn_start─────▲
 *   any of them ──failed, lost, idle too long, bind closed──▶ PGC_CLOSING (final)
 */
static const bool pgc_legal[PGC_CLOSING + 1][PGC_CLOSING + 1] = {
    [PGC_CONNECTING] = {[PGC_IDLE] = true, [PGC_CLOSING] = true},
    [PGC_IDLE] = {[PGC_BUSY] = true, [PGC_CLOSING] = true},
    [PGC_BUSY] = {[PGC_IDLE] = true, [PGC_CLOSING] = true},
    [PGC_CLOSING] = {false},
};

/* Which query of a job may follow which, legal[from][to] (the queries
 * around a statement: the comment above enum pgjob_phase). Every job ends
 * in any phase, or in PHASE_RESET when DISCARD ALL follows. */
#define PH(...)                                                                                              \
    {                                                                                                        \
        __VA_ARGS__, [PHASE_RESET] = true                                                                    \
    }
static const bool phase_legal[PHASE_RESET + 1][PHASE_RESET + 1] = {
    [PHASE_NONE] = {[PHASE_RELEASE] = true,
                    [PHASE_STMT] = true,
                    [PHASE_BEGIN] = true,
                    [PHASE_RO_BEGIN] = true,
                    [PHASE_RO_LOCK] = true},
    [PHASE_RO_BEGIN] = PH([PHASE_STMT] = true),
    [PHASE_BEGIN] = PH([PHASE_RO_LOCK] = true, [PHASE_STMT] = true),
    [PHASE_RO_LOCK] = PH([PHASE_STMT] = true),
    [PHASE_DEALLOC] = PH([PHASE_STMT] = true),
    [PHASE_PREPARE] = PH([PHASE_STMT] = true, [PHASE_RO_COMMIT] = true),
    [PHASE_REPREPARE] = PH([PHASE_STMT] = true),
    [PHASE_STMT] = PH([PHASE_DEALLOC] = true, [PHASE_PREPARE] = true, [PHASE_REPREPARE] = true,
                      [PHASE_RO_COMMIT] = true, [PHASE_RO_RELOCK] = true),
    [PHASE_RO_RELOCK] = {[PHASE_RESET] = true},
    [PHASE_RO_COMMIT] = PH([PHASE_RO_COMMIT] = true),
    [PHASE_RELEASE] = {[PHASE_RESET] = true},
    [PHASE_RESET] = {false},
};
#undef PH

/* Every change of c->state goes through here; an illegal one is a bug in
 * this file (asserted; logged and ignored when asserts are off). Entering
 * PGC_BUSY starts a job's phases at PHASE_NONE. Loop thread. */
static void conn_set_state(struct pgconn *c, enum pgconn_state to)
{
    assert(server_on_loop(c->pb->bind->srv));
    if (!pgc_legal[c->state][to]) {
        log_error("bind %s: illegal connection state change %d -> %d", c->pb->bind->conf->name, (int)c->state,
                  (int)to);
        assert(!"illegal connection state change");
        return;
    }
    c->state = to;
    if (to == PGC_BUSY)
        c->phase = PHASE_NONE;
}

/* Every change of c->phase goes through here: only while a job runs, and
 * only along phase_legal (asserted; logged when asserts are off). */
static void conn_set_phase(struct pgconn *c, enum pgjob_phase to)
{
    assert(c->state == PGC_BUSY && c->job != NULL);
    if (!phase_legal[c->phase][to]) {
        log_error("bind %s: illegal job phase change %d -> %d", c->pb->bind->conf->name, (int)c->phase,
                  (int)to);
        assert(!"illegal job phase change");
    }
    c->phase = to;
}

/* Close a connection for good: its job (if any) must be finished first. */
static void conn_destroy(struct pgconn *c)
{
    if (c->state == PGC_CLOSING)
        return;
    conn_set_state(c, PGC_CLOSING);
    conn_unlink(c);
    if (c->poll != NULL) {
        uv_poll_stop(c->poll);
        uv_close((uv_handle_t *)c->poll, conn_handle_closed);
        c->poll = NULL;
    }
    PQfinish(c->conn);
    c->conn = NULL;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_poll(uv_poll_t *h, int status, int events);
static void conn_connect_failed(struct pgconn *c, const char *why);
static void conn_lost(struct pgconn *c);

/* The connection's socket could not be watched (conn_poll): it would wait
 * forever, so it fails on the next loop turn, outside its caller. */
static void on_unwatched(uv_timer_t *t)
{
    struct pgconn *c = t->data;

    if (c->state == PGC_CLOSING || c->poll != NULL)
        return; /* closed meanwhile, or a later conn_poll succeeded */
    if (c->state == PGC_CONNECTING)
        conn_connect_failed(c, "cannot watch the connection's socket");
    else
        conn_lost(c);
}

/* Watch the connection's socket for `events`, following a changed fd. When
 * libuv refuses (out of memory, the fd still watched by a handle being
 * closed), c->poll stays NULL and the connection fails soon after
 * (on_unwatched). */
static void conn_poll(struct pgconn *c, int events)
{
    int fd = PQsocket(c->conn);
    int rc = UV_ENOMEM;

    if (fd != c->fd && c->poll != NULL) {
        uv_poll_stop(c->poll);
        uv_close((uv_handle_t *)c->poll, conn_handle_closed);
        c->poll = NULL;
    }
    if (fd < 0)
        return;
    if (c->poll == NULL) {
        c->poll = malloc(sizeof *c->poll);
        if (c->poll == NULL || (rc = uv_poll_init(c->pb->bind->srv->loop, c->poll, fd)) != 0) {
            free(c->poll);
            c->poll = NULL;
            goto unwatched;
        }
        c->poll->data = c;
        c->handles++;
        c->fd = fd;
    }
    /* uv_poll_start() re-registers the fd with the kernel even when
     * nothing changes: two epoll_ctl calls each time. */
    if (c->events == events && uv_is_active((uv_handle_t *)c->poll))
        return;
    c->events = events;
    rc = uv_poll_start(c->poll, events, on_poll);
    if (rc == 0)
        return;
    uv_close((uv_handle_t *)c->poll, conn_handle_closed);
    c->poll = NULL;
unwatched:
    log_warn("bind %s: cannot watch a connection's socket: %s", c->pb->bind->conf->name, uv_strerror(rc));
    if (c->state != PGC_CLOSING)
        (void)uv_timer_start(&c->timer, on_unwatched, 0, 0); /* replaces a timeout: it fails first */
}

/* ---- Finishing jobs -------------------------------------------------- */

/* Hand the job's response to the loop and make the connection available. */
static void conn_finish_job(struct pgconn *c)
{
    struct job *job = c->job;
    PGTransactionStatusType ts = c->conn ? PQtransactionStatus(c->conn) : PQTRANS_UNKNOWN;

    uv_timer_stop(&c->timer);
    /* A connection that broke (its status unknown) inside the client's
     * transaction, or while its held BEGIN ran, took the transaction with
     * it: the client stays in it, broken (see txn_lost()), until its
     * ROLLBACK. */
    job->in_txn =
        ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR ||
        (ts == PQTRANS_UNKNOWN && job->type == JOB_EXEC && (job->txn_open || job->begin_sql != NULL));
    job->failed = c->failed;
    if (!job->in_txn)
        c->ro_locked = false;
    c->pinned = job->in_txn ? job->owner : 0;
    c->job = NULL;
    free(c->types);
    c->types = NULL;
    c->ncols = 0;
    job_post_done(job, &c->out);
    buf_free(&c->out);
    if (c->state == PGC_BUSY) {
        conn_set_state(c, PGC_IDLE);
        c->idle_since = uv_now(c->pb->bind->srv->loop);
        conn_poll(c, UV_READABLE); /* notice a server that goes away */
    }
}

/* A statement of a transaction whose connection broke: the transaction
 * is gone with it, so nothing of it may run on another connection (a
 * COMMIT there would answer +OK for nothing). Every statement gets -ERR
 * CONNLOST and the client stays in its broken transaction, until its
 * ROLLBACK, answered +OK, ends it (as a disconnect does). */
static void txn_lost(struct pg_bind *pb, struct job *job)
{
    struct buf out = BUF_INIT;
    char msg[300];
    int rc;

    job->in_txn = job->kind != STMT_ROLLBACK;
    job->failed = job->in_txn;
    if (job->in_txn) {
        snprintf(msg, sizeof msg,
                 "bind %s: the connection of this transaction to the server was lost, and the transaction "
                 "with it: ROLLBACK to end it",
                 pb->bind->conf->name);
        rc = codec_put_error(&out, "CONNLOST", msg);
    } else {
        rc = codec_put_ok_changes(&out, 0, NULL);
    }
    if (rc != 0)
        buf_reset(&out);
    job_post_done(job, &out);
}

static void fail_queue(struct pg_bind *pb, const char *code, const char *msg)
{
    while (pb->head != NULL) {
        struct job *job = pb->head;
        pb->head = job->next;
        job->next = NULL;
        pb->queued--;
        job_fail(job, code, msg);
    }
    pb->tail = &pb->head;
}

/* The server connection broke: end its job and drop it. A client whose
 * transaction was open there (or was being opened by its held BEGIN) is
 * told so by txn_lost() from now on. */
static void conn_lost(struct pgconn *c)
{
    struct pg_bind *pb = c->pb;
    char why[256];

    conn_error_text(c->conn, why, sizeof why);
    log_warn("bind %s: connection to the server lost: %s", pb->bind->conf->name, why);
    if (c->pinned != 0)
        log_warn("bind %s: the open transaction of client c%llu was lost with it", pb->bind->conf->name,
                 (unsigned long long)c->pinned);
    conn_destroy(c); /* the struct lives until its handles close */
    if (c->job != NULL) {
        char msg[400];
        snprintf(msg, sizeof msg,
                 "bind %s: connection to the server was lost (%s); the statement may or may not have run",
                 pb->bind->conf->name, why);
        reply_error(&c->out, "CONNLOST", msg);
        c->failed = true;
        conn_finish_job(c);
    }
    bind_kick(pb);
}

/* ---- Running statements ---------------------------------------------- */

static int put_header(struct pgconn *c, const PGresult *res)
{
    int n = PQnfields(res);
    struct codec_row r;

    free(c->types);
    c->types = malloc((size_t)(n ? n : 1) * sizeof *c->types);
    if (c->types == NULL)
        return -1;
    c->ncols = n;
    codec_header_begin(&r, &c->out);
    for (int i = 0; i < n; i++) {
        const char *name = PQfname(res, i);
        const char *type = pg_type_name(PQftype(res, i));
        char num[16];
        c->types[i] = PQftype(res, i);
        if (type == NULL) {
            snprintf(num, sizeof num, "oid:%u", (unsigned)PQftype(res, i));
            type = num;
        }
        codec_field_str(&r, name);
        codec_field_str(&r, type);
    }
    c->header_sent = true;
    return codec_row_end(&r);
}

/* Whether a field of the row is larger than max_value (bytea: its bytes,
 * not its hex text), looked at before anything is copied; then the answer
 * is -ERR TOOBIG, and the statement's later rows are dropped as they
 * arrive. */
static bool row_too_big(struct pgconn *c, const PGresult *res, int row)
{
    size_t max = server_cfg_of(c->job->cfgref)->max_value;

    for (int i = 0; i < c->ncols; i++) {
        size_t n = (size_t)PQgetlength(res, row, i);
        size_t bytes = c->types[i] == 17 && n >= 2 ? (n - 2) / 2 : n;
        if (bytes > max) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "column %s: a value of %zu bytes; a value may have at most max_value = %zu bytes",
                     PQfname(res, i), bytes, max);
            reply_error(&c->out, "TOOBIG", msg);
            c->failed = true;
            return true;
        }
    }
    return false;
}

static int put_row(struct pgconn *c, const PGresult *res, int row)
{
    struct codec_row r;

    codec_row_begin(&r, &c->out);
    for (int i = 0; i < c->ncols; i++) {
        const char *v = PQgetvalue(res, row, i);
        size_t n = (size_t)PQgetlength(res, row, i);
        if (PQgetisnull(res, row, i))
            codec_field_null(&r);
        else if (c->types[i] == 17 && n >= 2 && v[0] == '\\' && v[1] == 'x')
            codec_field_raw(&r, v, n); /* bytea hex is our blob form */
        else
            codec_field_text(&r, v, n);
    }
    return codec_row_end(&r);
}

/* Did a cached prepared statement fail because the server dropped it (a
 * client's DEALLOCATE or DISCARD) or because a table changed under it? */
static bool prep_is_stale(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    if (state == NULL)
        return false;
    return strcmp(state, "26000") == 0 || (strcmp(state, "0A000") == 0 && msg != NULL &&
                                           strstr(msg, "cached plan must not change result type"));
}

/* Does a command tag say that the statement may have changed the session
 * (settings, roles, prepared statements, listeners, cursors, temporary
 * objects, loaded libraries, or anything a DO block or procedure does)?
 * A SELECT that completes as a command is SELECT INTO. */
static bool pg_tag_touches_session(const char *tag)
{
    static const char *const words[] = {"SET",     "RESET", "DISCARD", "PREPARE", "DEALLOCATE", "LISTEN",
                                        "DECLARE", "LOAD",  "CREATE",  "SELECT",  "DO",         "CALL"};
    size_t n = strcspn(tag, " ");

    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i]) == n && strncmp(tag, words[i], n) == 0)
            return true;
    return false;
}

/* Does the statement text call a function that changes the session for
 * later statements (a session setting, a session advisory lock, the random
 * seed, a dblink connection)? A cheap, conservative look: a false match
 * only costs a DISCARD ALL. */
static bool pg_text_touches_session(const char *sql)
{
    static const char *const names[] = {"set_config", "advisory", "setseed", "dblink"};

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasestr(sql, names[i]) != NULL)
            return true;
    return false;
}

/* What PostgreSQL let a read-only user's statement do although it must
 * not (PG_RO_END, PG_RO_CHECK found it) replaces its answer. */
static void reply_ro_refused(struct pgconn *c, const char *what)
{
    char msg[300];

    snprintf(msg, sizeof msg, "read-only access to bind %s: the statement %s", c->pb->bind->conf->name, what);
    reply_error(&c->out, "NOPERM", msg);
    c->failed = true;
}

/* A statement put the connection into a COPY state, which the protocol
 * has no way to carry: answer -ERR and bring the connection back to
 * where it takes queries. COPY FROM STDIN is ended with a CopyFail (the
 * server aborts it, copying nothing); COPY TO STDOUT (and the sending
 * half of COPY BOTH, ended with CopyDone) runs to its end while
 * conn_read() drops its data (statement_timeout bounds it), so the
 * connection, and the transaction it may be in, stay usable. */
static void conn_refuse_copy(struct pgconn *c, ExecStatusType st)
{
    const char *msg =
        st == PGRES_COPY_IN
            ? "COPY ... FROM STDIN is not supported through sqlmux (nothing was copied): use INSERT"
            : "COPY ... TO STDOUT is not supported through sqlmux (its rows were dropped): use SELECT";
    int sent = 1;

    if (st == PGRES_COPY_IN)
        sent = PQputCopyEnd(c->conn, "COPY is not supported through sqlmux");
    else if (st == PGRES_COPY_BOTH)
        sent = PQputCopyEnd(c->conn, NULL);
    c->copy_out = st != PGRES_COPY_IN;
    if (sent == 1 && PQflush(c->conn) == 1)
        conn_poll(c, UV_READABLE | UV_WRITABLE);
    if (!c->failed)
        reply_error(&c->out, "SQL", msg);
    c->failed = true;
}

/* Drop the data of a refused COPY TO STDOUT that libpq has buffered.
 * Returns false while more must come from the server, true when the COPY
 * has ended (its final result follows). */
static bool conn_drain_copy(struct pgconn *c)
{
    char *data;
    int n;

    while ((n = PQgetCopyData(c->conn, &data, 1)) > 0)
        PQfreemem(data);
    if (n == 0)
        return false;
    c->copy_out = false; /* -1: the COPY ended; -2: an error result follows */
    return true;
}

/* Handle one result of the running job. */
static void conn_result(struct pgconn *c, PGresult *res)
{
    struct job *job = c->job;
    ExecStatusType st = PQresultStatus(res);

    if (c->phase == PHASE_DEALLOC || c->phase == PHASE_REPREPARE)
        return; /* housekeeping; a failure changes nothing for the statement */
    if (c->phase == PHASE_PREPARE) {
        if (st != PGRES_COMMAND_OK) {
            if (!c->failed)
                reply_result_error(c, res);
            c->failed = true;
        }
        return;
    }
    if (c->phase == PHASE_RO_BEGIN || c->phase == PHASE_RO_LOCK) {
        /* Before the statement: a failure is its answer. */
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            if (!c->failed)
                reply_result_error(c, res);
            c->failed = true;
        }
        return;
    }
    if (c->phase == PHASE_RO_COMMIT && st == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        reply_ro_refused(c, "wrote (large objects, or a function that writes although the transaction is "
                            "read-only); it was rolled back");
        return;
    }
    if (c->phase == PHASE_RO_RELOCK && st == PGRES_FATAL_ERROR && PQresultErrorField(res, PG_DIAG_SQLSTATE) &&
        strcmp(PQresultErrorField(res, PG_DIAG_SQLSTATE), "22012") == 0) {
        reply_ro_refused(c, "wrote or took a lock that blocks writers (LOCK TABLE, advisory locks, large "
                            "objects); the transaction is aborted: ROLLBACK");
        return;
    }
    if (c->phase == PHASE_RO_RELOCK || c->phase == PHASE_RO_COMMIT) {
        /* After it: the answer is written; the transaction stays safe
         * (a failed lock leaves it aborted, a failed COMMIT rolled back). */
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
            log_warn("bind %s: %s after a read-only statement failed: %s", c->pb->bind->conf->name,
                     c->phase == PHASE_RO_COMMIT ? "COMMIT" : "the read-only lock",
                     PQresultErrorMessage(res));
        return;
    }
    switch (st) {
    case PGRES_SINGLE_TUPLE:
        if (c->failed)
            break;
        if (!c->header_sent && put_header(c, res) != 0)
            goto nomem;
        if (row_too_big(c, res, 0))
            break;
        if (put_row(c, res, 0) != 0)
            goto nomem;
        job->rows++;
        c->tuples = true;
        break;
    case PGRES_TUPLES_OK:
        if (c->failed)
            break;
        if (!c->header_sent && put_header(c, res) != 0)
            goto nomem;
        for (int r = 0; r < PQntuples(res); r++) {
            if (row_too_big(c, res, r))
                break;
            if (put_row(c, res, r) != 0)
                goto nomem;
            job->rows++;
        }
        c->tuples = true;
        break;
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY:
        snprintf(c->changes, sizeof c->changes, "%s", PQcmdTuples(res));
        if (pg_tag_touches_session(PQcmdStatus(res)))
            c->dirty = true;
        break;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH: conn_refuse_copy(c, st); break;
    default:
        if (c->ran_prepared && !c->header_sent && !c->failed && prep_is_stale(res)) {
            c->prep_stale = true;
            c->stale_mark = c->out.len;
        }
        if (!c->failed || c->phase == PHASE_BEGIN)
            reply_result_error(c, res);
        c->failed = true;
        break;
    }
    return;
nomem:
    reply_error(&c->out, "NOMEM", "out of memory building the response");
    c->failed = true;
}

/* Rewrite ? placeholders to $1..$n outside strings (also E'' and $tag$
 * ones), quoted names and comments (block comments nest: sqllex.c's
 * PostgreSQL dialect), and count the placeholders: *count gets the number
 * of ?s, or the highest $N when the SQL uses PostgreSQL's own. Returns a
 * new string (caller frees) or NULL on ENOMEM. */
static char *pg_placeholders(const char *sql, size_t len, size_t *count)
{
    struct buf out = BUF_INIT;
    size_t n = 0, dollar_max = 0, copied = 0, at = 0;
    int rc = 0;

    for (;;) {
        struct sqltok t = sqllex_next(sql, len, at, SQLLEX_POSTGRES);
        if (t.type == SQLTOK_EOF || t.type == SQLTOK_ERROR)
            break; /* an unterminated literal goes as is: the server reports it */
        at = t.pos + t.len;
        if (t.type != SQLTOK_PARAM)
            continue;
        if (sql[t.pos] == '?') {
            rc |= buf_append(&out, sql + copied, t.pos - copied);
            rc |= buf_printf(&out, "$%zu", ++n);
            copied = t.pos + 1;
        } else if (sql[t.pos] == '$' && t.len > 1 && isdigit((unsigned char)sql[t.pos + 1])) {
            size_t v = 0;
            for (size_t j = t.pos + 1; j < at && v < 100000; j++)
                v = v * 10 + (size_t)(sql[j] - '0');
            if (v > dollar_max)
                dollar_max = v;
        }
    }
    rc |= buf_append(&out, sql + copied, len - copied);
    if (rc != 0 || buf_reserve(&out, 0) != 0) {
        buf_free(&out);
        return NULL;
    }
    *count = n > 0 ? n : dollar_max;
    return out.data;
}

/* Run *sqlp as a prepared statement of this connection: execute it when
 * the connection has it; otherwise prepare it first (PHASE_PREPARE, after
 * which conn_advance() comes back here to execute it), after making room
 * with a DEALLOCATE of the least recently used one (PHASE_DEALLOC) when
 * stmt_cache are prepared already. May take *sqlp (then NULL). Returns
 * what libpq's send function returned. */
static int conn_send_prepared(struct pgconn *c, char **sqlp, int n, const Oid *types,
                              const char *const *values, const int *lengths, const int *formats)
{
    size_t len = strlen(*sqlp), cap = c->pb->stmt_cache;
    uint64_t h = hash_bytes(*sqlp, len) ^ (hash_bytes((const char *)types, (size_t)n * sizeof *types) * 31);
    char name[32];
    int ok;

    for (size_t i = 0; i < c->nprep; i++) {
        struct pg_prepared *p = &c->prep[i];
        if (p->hash == h && p->ntypes == n && strcmp(p->sql, *sqlp) == 0 &&
            memcmp(p->types, types, (size_t)n * sizeof *types) == 0) {
            p->used = ++c->prep_tick;
            snprintf(name, sizeof name, "sqlmux_%u", p->id);
            c->ran_prepared = true;
            ok = PQsendQueryPrepared(c->conn, name, n, values, lengths, formats, 0);
            if (ok)
                PQsetSingleRowMode(c->conn);
            return ok;
        }
    }
    if (c->prep == NULL && (c->prep = calloc(cap, sizeof *c->prep)) == NULL) {
        ok = PQsendQueryParams(c->conn, *sqlp, n, types, values, lengths, formats, 0); /* unprepared, then */
        if (ok)
            PQsetSingleRowMode(c->conn);
        return ok;
    }
    if (c->nprep == cap) {
        size_t v = 0;
        char dealloc[48];
        for (size_t i = 1; i < c->nprep; i++)
            if (c->prep[i].used < c->prep[v].used)
                v = i;
        snprintf(dealloc, sizeof dealloc, "DEALLOCATE sqlmux_%u", c->prep[v].id);
        prep_release(&c->prep[v]);
        c->prep[v] = c->prep[--c->nprep];
        conn_set_phase(c, PHASE_DEALLOC);
        return PQsendQueryParams(c->conn, dealloc, 0, NULL, NULL, NULL, NULL, 0);
    }
    c->pending.types = malloc((size_t)n * sizeof *types);
    if (c->pending.types == NULL) {
        ok = PQsendQueryParams(c->conn, *sqlp, n, types, values, lengths, formats, 0);
        if (ok)
            PQsetSingleRowMode(c->conn);
        return ok;
    }
    memcpy(c->pending.types, types, (size_t)n * sizeof *types);
    c->pending.ntypes = n;
    c->pending.hash = h;
    c->pending.sql = *sqlp;
    *sqlp = NULL;
    c->pending.id = ++c->prep_ids;
    snprintf(name, sizeof name, "sqlmux_%u", c->pending.id);
    conn_set_phase(c, PHASE_PREPARE);
    return PQsendPrepare(c->conn, name, c->pending.sql, n, c->pending.types);
}

/* Send the job's statement (with its parameters). 0 or -1 (error written). */
static int conn_send_statement(struct pgconn *c)
{
    struct job *job = c->job;
    const struct request *req = &job->req;
    size_t n = req->nparams;
    const char **values = NULL;
    int *lengths = NULL, *formats = NULL;
    Oid *types = NULL;
    char(*ints)[32] = NULL;
    char *sql = NULL;
    int ok = 0;

    conn_set_phase(c, PHASE_STMT);
    c->ran_prepared = false;
    /* Only a request with parameters has placeholders to rewrite; plain SQL
     * keeps PostgreSQL's own ? operators (jsonb). */
    if (n > 0) {
        size_t want = 0;
        sql = pg_placeholders(req->text, req->len, &want);
        if (sql != NULL && want != n) {
            char msg[120];
            snprintf(msg, sizeof msg, "the statement has %zu parameter%s, the request sent %zu", want,
                     want == 1 ? "" : "s", n);
            reply_error(&c->out, "PARAMS", msg);
            free(sql);
            c->failed = true;
            return -1;
        }
    } else {
        sql = strdup(req->text);
    }
    if (n > 0) {
        values = calloc(n, sizeof *values);
        lengths = calloc(n, sizeof *lengths);
        formats = calloc(n, sizeof *formats);
        types = calloc(n, sizeof *types);
        ints = calloc(n, sizeof *ints);
    }
    if (sql == NULL || (n > 0 && (!values || !lengths || !formats || !types || !ints))) {
        reply_error(&c->out, "NOMEM", "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const struct value *v = &req->params[i];
        switch (v->type) {
        case VALUE_NULL: values[i] = NULL; break;
        case VALUE_INT:
            snprintf(ints[i], sizeof ints[i], "%lld", (long long)v->i);
            values[i] = ints[i];
            types[i] = 20; /* int8 */
            break;
        case VALUE_REAL:
            snprintf(ints[i], sizeof ints[i], "%.17g", v->r);
            values[i] = ints[i];
            types[i] = 701; /* float8 */
            break;
        case VALUE_TEXT:
            /* libpq sends text up to its first NUL: refuse, rather than
             * store a cut value. */
            if (memchr(v->p, '\0', v->len) != NULL) {
                char msg[160];
                snprintf(msg, sizeof msg,
                         "parameter %zu: PostgreSQL text cannot hold a NUL byte "
                         "(send bytes as a blob)",
                         i + 1);
                reply_error(&c->out, "MISMATCH", msg);
                goto done;
            }
            values[i] = v->p; /* type left to the server (unknown) */
            break;
        case VALUE_BLOB:
            values[i] = v->p;
            lengths[i] = (int)v->len;
            formats[i] = 1;
            types[i] = 17; /* bytea, sent binary */
            break;
        }
    }
    if (n > 0 && c->pb->stmt_cache > 0) {
        ok = conn_send_prepared(c, &sql, (int)n, types, values, lengths, formats);
    } else {
        ok = PQsendQueryParams(c->conn, sql, (int)n, types, values, lengths, formats, 0);
        if (ok)
            PQsetSingleRowMode(c->conn);
    }
    if (!ok) {
        char why[256];
        conn_error_text(c->conn, why, sizeof why);
        reply_error(&c->out, "CONNLOST", why);
    }
done:
    free(sql);
    free(values);
    free(lengths);
    free(formats);
    free(types);
    free(ints);
    if (!ok) {
        c->failed = true;
        return -1;
    }
    return 0;
}

/* ---- Cancel (off the loop) -------------------------------------------- */

struct cancel_req {
    uv_work_t work;
    PGcancel *cancel;
    char err[256];
    char bind[64];
};

static void cancel_work(uv_work_t *w)
{
    struct cancel_req *cr = w->data;
    if (!PQcancel(cr->cancel, cr->err, sizeof cr->err) && cr->err[0] == '\0')
        snprintf(cr->err, sizeof cr->err, "cancel failed");
}

static void cancel_done(uv_work_t *w, int status)
{
    struct cancel_req *cr = w->data;
    (void)status;
    if (cr->err[0] != '\0')
        log_warn("bind %s: cancel request: %s", cr->bind, cr->err);
    PQfreeCancel(cr->cancel);
    free(cr);
}

/* Ask the server to cancel what the connection runs (PQcancel blocks, so
 * it runs on the thread pool). */
static void conn_cancel(struct pgconn *c)
{
    struct cancel_req *cr = calloc(1, sizeof *cr);

    if (cr == NULL || c->conn == NULL)
        goto fail;
    cr->cancel = PQgetCancel(c->conn);
    if (cr->cancel == NULL)
        goto fail;
    snprintf(cr->bind, sizeof cr->bind, "%s", c->pb->bind->conf->name);
    cr->work.data = cr;
    if (uv_queue_work(c->pb->bind->srv->loop, &cr->work, cancel_work, cancel_done) == 0)
        return;
    PQfreeCancel(cr->cancel);
fail:
    free(cr);
    log_warn("bind %s: could not send a cancel request", c->pb->bind->conf->name);
}

static void on_statement_timeout(uv_timer_t *t)
{
    struct pgconn *c = t->data;

    if (c->job == NULL || c->state != PGC_BUSY)
        return;
    c->timed_out = true;
    log_info("bind %s: statement exceeded statement_timeout (%d ms): cancelling", c->pb->bind->conf->name,
             c->pb->bind->conf->statement_timeout_ms);
    conn_cancel(c);
}

/* .migrations: the version table's rows (none when it does not exist:
 * SQLSTATE 42P01) merged with the bind's migration files, which are read
 * here on the loop: a few small local files. */
static void put_migrations(struct pgconn *c, PGresult *res)
{
    const struct config *cfg = server_cfg_of(c->job->cfgref);
    const char *bind = c->pb->bind->conf->name;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    struct migration_rows rows = {0};
    struct migration_set set;
    char err[1024];

    if (c->failed)
        return;
    if (PQresultStatus(res) != PGRES_TUPLES_OK && !(state != NULL && strcmp(state, "42P01") == 0)) {
        conn_result(c, res);
        return;
    }
    if (cfg->migrations == NULL)
        return;
    for (int r = 0; PQresultStatus(res) == PGRES_TUPLES_OK && r < PQntuples(res); r++) {
        if (migrate_rows_add(&rows, strtoll(PQgetvalue(res, r, 0), NULL, 10), PQgetvalue(res, r, 1),
                             PQgetvalue(res, r, 2), PQgetvalue(res, r, 3)) != 0) {
            migrate_rows_free(&rows);
            reply_error(&c->out, "NOMEM", "out of memory");
            c->failed = true;
            return;
        }
    }
    if (migrate_scan(cfg->migrations, bind, &set, err, sizeof err) != 0) {
        reply_error(&c->out, "MIGRATION", err);
        c->failed = true;
    } else {
        if (migrate_put_status(bind, &set, &rows, &c->out, &c->job->rows) != 0) {
            reply_error(&c->out, "NOMEM", "out of memory");
            c->failed = true;
        }
        migrate_set_free(&set);
    }
    migrate_rows_free(&rows);
}

/* ---- The I/O state machine ------------------------------------------- */

/* Send one of the queries around a statement (no parameters, results
 * handled by conn_result's phase checks). 1, or -1 when it could not be
 * sent (the connection is broken). */
static int conn_send_guard(struct pgconn *c, enum pgjob_phase phase, const char *sql)
{
    conn_set_phase(c, phase);
    /* Ours, so it may be several statements (PG_RO_END): then the simple
     * protocol, which allows that. */
    if (!(strchr(sql, ';') != NULL ? PQsendQuery(c->conn, sql)
                                   : PQsendQueryParams(c->conn, sql, 0, NULL, NULL, NULL, NULL, 0)))
        return -1;
    conn_poll(c, PQflush(c->conn) == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
    return 1;
}

/* Send the job's statement. 1 when sent; 0 when it could not be (its
 * error is written), unless a BEGIN READ ONLY of ours must still end. */
static int conn_send_stmt(struct pgconn *c)
{
    if (conn_send_statement(c) == 0) {
        conn_poll(c, PQflush(c->conn) == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
        return 1;
    }
    return c->ro_wrap ? conn_send_guard(c, PHASE_RO_COMMIT, "ROLLBACK") : 0;
}

/* The job's current query is complete: send its next one. Returns 1 when
 * one was sent, 0 when the job is finished, -1 when the connection broke. */
static int conn_advance(struct pgconn *c)
{
    struct job *job = c->job;

    switch (c->phase) {
    case PHASE_RO_BEGIN: return c->failed ? 0 : conn_send_stmt(c);
    case PHASE_BEGIN:
        if (c->failed)
            return 0;
        if (job->readonly)
            return conn_send_guard(c, PHASE_RO_LOCK, PG_RO_LOCK);
        return conn_send_stmt(c);
    case PHASE_RO_LOCK:
        if (c->failed)
            return 0;
        c->ro_locked = true;
        return conn_send_stmt(c);
    case PHASE_DEALLOC:
    case PHASE_REPREPARE: return conn_send_stmt(c);
    case PHASE_PREPARE:
        if (c->failed) {
            prep_release(&c->pending);
            return c->ro_wrap ? conn_send_guard(c, PHASE_RO_COMMIT, "ROLLBACK") : 0;
        }
        c->pending.used = ++c->prep_tick;
        c->prep[c->nprep++] = c->pending;
        memset(&c->pending, 0, sizeof c->pending);
        return conn_send_stmt(c);
    case PHASE_STMT:
        if (c->prep_stale) {
            /* Forget the cache; outside a transaction, drop the server's
             * copies too and run the statement again, prepared afresh. */
            c->prep_stale = false;
            prep_clear(c);
            if (!c->reprepared && PQtransactionStatus(c->conn) == PQTRANS_IDLE) {
                c->reprepared = true;
                c->failed = false;
                c->out.len = c->stale_mark;
                if (c->out.data != NULL)
                    c->out.data[c->out.len] = '\0';
                return conn_send_guard(c, PHASE_REPREPARE, "DEALLOCATE ALL");
            }
        }
        if (!c->failed && job->type == JOB_EXEC) {
            int rc;
            if (c->tuples)
                rc = codec_put_ok_rows(&c->out, job->rows);
            else
                rc = codec_put_ok_changes(&c->out, strtoll(c->changes, NULL, 10), NULL);
            if (rc != 0)
                reply_error(&c->out, "NOMEM", "out of memory");
        }
        c->ro_locked = false;
        /* Session state: what a read-only user changes inside its own
         * transaction is committed with it; other changes show in the
         * statement's text or its command tag (conn_result). */
        if (job->type == JOB_EXEC &&
            ((job->readonly && !c->ro_wrap) || pg_text_touches_session(job->req.text)))
            c->dirty = true;
        if (c->ro_wrap)
            return conn_send_guard(c, PHASE_RO_COMMIT, c->failed ? "ROLLBACK" : PG_RO_END);
        if (job->type == JOB_EXEC && job->readonly && PQtransactionStatus(c->conn) == PQTRANS_INTRANS)
            return conn_send_guard(c, PHASE_RO_RELOCK, PG_RO_CHECK);
        return 0;
    case PHASE_RO_RELOCK: c->ro_locked = PQtransactionStatus(c->conn) == PQTRANS_INTRANS; return 0;
    case PHASE_RO_COMMIT:
        if (c->ro_wrap && PQtransactionStatus(c->conn) != PQTRANS_IDLE) {
            /* PG_RO_END stopped at an error before its ROLLBACK (and the
             * release of advisory locks: DISCARD ALL does that then). */
            c->ro_wrap = false;
            c->dirty = true;
            return conn_send_guard(c, PHASE_RO_COMMIT, "ROLLBACK");
        }
        return 0;
    case PHASE_NONE: /* not reached: a job sends a query first */
    case PHASE_RELEASE:
    case PHASE_RESET: return 0;
    }
    return 0;
}

/* The job's queries are done. 0, unless its client may have changed the
 * session state and the connection is outside a transaction: then
 * DISCARD ALL runs first (1; -1 when it could not be sent), so that nothing
 * a client set, prepared, locked or listened to serves anyone else. The
 * client waits for that one round trip; a clean connection costs nothing. */
static int conn_job_end(struct pgconn *c)
{
    if (!c->dirty || c->phase == PHASE_RESET || PQtransactionStatus(c->conn) != PQTRANS_IDLE)
        return 0;
    c->dirty = false;
    prep_clear(c); /* DISCARD ALL deallocates our prepared statements too */
    return conn_send_guard(c, PHASE_RESET, "DISCARD ALL");
}

/* Read what the server sent and process complete results. */
static void conn_read(struct pgconn *c)
{
    if (!PQconsumeInput(c->conn)) {
        conn_lost(c);
        return;
    }
    while (c->job != NULL && !c->paused) {
        PGresult *res;
        if (c->copy_out && !conn_drain_copy(c))
            return;
        if (PQisBusy(c->conn))
            return;
        res = PQgetResult(c->conn);
        if (res == NULL) {
            /* The current query is complete. */
            int next = conn_advance(c);
            if (next == 0)
                next = conn_job_end(c);
            if (next > 0)
                continue;
            if (next < 0) {
                conn_lost(c);
                return;
            }
            conn_finish_job(c);
            if (c->dirty && c->phase == PHASE_RESET) {
                /* DISCARD ALL failed (a cancel hit it): the session may
                 * still hold what a client changed, so nobody else uses it. */
                struct pg_bind *pb = c->pb;
                conn_destroy(c);
                bind_kick(pb);
                return;
            }
            conn_dispatch(c);
            return;
        }
        if (c->phase == PHASE_RESET) {
            /* After any kind of job. */
            if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                log_warn("bind %s: DISCARD ALL after a client changed the session failed, closing the "
                         "connection: %s",
                         c->pb->bind->conf->name, PQresultErrorMessage(res));
                c->dirty = true; /* closed below, once the job is finished */
            }
        } else if (c->job->type == JOB_MIGRATION_STATE) {
            put_migrations(c, res);
        } else if (c->job->type == JOB_LIST_TABLES && PQresultStatus(res) == PGRES_TUPLES_OK) {
            const struct config *cfg = server_cfg_of(c->job->cfgref);
            for (int r = 0; r < PQntuples(res); r++) {
                char lower_schema[256], lower_name[256];
                const char *shown = PQgetvalue(res, r, 0);
                snprintf(lower_schema, sizeof lower_schema, "%s", PQgetvalue(res, r, 2));
                snprintf(lower_name, sizeof lower_name, "%s", PQgetvalue(res, r, 3));
                for (char *p = lower_schema; *p; p++)
                    *p = (char)tolower((unsigned char)*p);
                for (char *p = lower_name; *p; p++)
                    *p = (char)tolower((unsigned char)*p);
                size_t to = route_table_bind(cfg, strcmp(lower_schema, "public") == 0 ? "" : lower_schema,
                                             lower_name);
                struct codec_row line;
                codec_row_begin(&line, &c->out);
                codec_field_str(&line, shown);
                codec_field_str(&line, PQgetvalue(res, r, 1));
                codec_field_str(&line, c->pb->bind->conf->name);
                codec_field_str(&line, cfg->binds[to].name);
                if (codec_row_end(&line) != 0) {
                    reply_error(&c->out, "NOMEM", "out of memory");
                    c->failed = true;
                    break;
                }
                c->job->rows++;
            }
        } else if (c->job->type == JOB_RELEASE) {
            /* Nothing to say to anyone. */
        } else {
            conn_result(c, res);
        }
        PQclear(res);
        if (c->out.len >= CHUNK_BYTES && !c->failed) {
            if (job_post_chunk(c->job, &c->out) != 0) {
                /* The client is gone: let the statement end, drop its rows. */
                c->failed = true;
                buf_reset(&c->out);
            } else {
                bool behind;
                pthread_mutex_lock(&c->job->lock);
                behind = c->job->unacked > c->job->max_unacked;
                pthread_mutex_unlock(&c->job->lock);
                if (behind) {
                    c->paused = true;
                    if (c->poll != NULL)
                        uv_poll_stop(c->poll);
                }
            }
        }
    }
}

static void conn_connected(struct pgconn *c)
{
    struct pg_bind *pb = c->pb;

    uv_timer_stop(&c->timer);
    conn_set_state(c, PGC_IDLE);
    c->idle_since = uv_now(pb->bind->srv->loop);
    if (PQsetnonblocking(c->conn, 1) != 0) {
        conn_lost(c);
        return;
    }
    if (pb->down)
        log_info("bind %s: server reachable again", pb->bind->conf->name);
    else
        log_debug("bind %s: connection ready", pb->bind->conf->name);
    pb->down = false;
    pb->backoff_ms = 0;
    conn_poll(c, UV_READABLE);
    conn_dispatch(c);
    bind_kick(pb);
}

/* A connection attempt failed: the server counts as down. */
static void conn_connect_failed(struct pgconn *c, const char *why)
{
    struct pg_bind *pb = c->pb;
    char msg[400];

    if (!pb->down)
        log_warn("bind %s: cannot connect: %s", pb->bind->conf->name, why);
    pb->down = true;
    snprintf(pb->last_error, sizeof pb->last_error, "%s", why);
    conn_destroy(c);
    if (pb->nconns == 0) {
        snprintf(msg, sizeof msg, "bind %s: the server is unavailable: %s", pb->bind->conf->name, why);
        fail_queue(pb, "UNAVAILABLE", msg);
    }
    bind_kick(pb);
}

static void conn_connect_step(struct pgconn *c)
{
    char why[256];

    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING: conn_poll(c, UV_READABLE); break;
    case PGRES_POLLING_WRITING: conn_poll(c, UV_WRITABLE); break;
    case PGRES_POLLING_OK: conn_connected(c); break;
    default:
        conn_error_text(c->conn, why, sizeof why);
        conn_connect_failed(c, why);
        break;
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct pgconn *c = h->data;

    if (c->state == PGC_CLOSING || h != c->poll)
        return;
    if (c->state == PGC_CONNECTING) {
        conn_connect_step(c);
        return;
    }
    if (status < 0) {
        /* libuv reports a socket error (a reset) without events. */
        if (c->conn != NULL && PQerrorMessage(c->conn)[0] == '\0')
            (void)PQconsumeInput(c->conn); /* lets libpq say what happened */
        conn_lost(c);
        return;
    }
    if (events & UV_WRITABLE) {
        int rc = PQflush(c->conn);
        if (rc < 0) {
            conn_lost(c);
            return;
        }
        if (rc == 0)
            conn_poll(c, UV_READABLE);
    }
    if (events & UV_READABLE)
        conn_read(c);
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct pgconn *c = t->data;
    char why[64];

    if (c->state != PGC_CONNECTING)
        return;
    snprintf(why, sizeof why, "timeout after %d ms", c->pb->bind->conf->connect_timeout_ms);
    conn_connect_failed(c, why);
}

/* libpq's notice receiver: a server's NOTICE, WARNING, ... goes to the
 * daemon's log with the bind and the client whose statement caused it,
 * instead of libpq's default of printing it raw on stderr. WARNINGs are
 * logged at warn; the rest (a client's RAISE NOTICE, "skipping") is chatter
 * for the debug level. Runs on the loop thread, inside libpq calls. */
static void conn_notice(void *arg, const PGresult *res)
{
    const struct pgconn *c = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    bool warning = severity != NULL && strcmp(severity, "WARNING") == 0;
    char client[32] = "", msg[512];

    if (!log_enabled(warning ? LOG_WARN : LOG_DEBUG))
        return;
    snprintf(msg, sizeof msg, "%s", primary != NULL ? primary : PQresultErrorMessage(res));
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    if (c->job != NULL && c->job->owner != 0)
        snprintf(client, sizeof client, "c%llu: ", (unsigned long long)c->job->owner);
    log_msg(warning ? LOG_WARN : LOG_DEBUG, "bind %s: %s%s: %s (SQLSTATE %s)", c->pb->bind->conf->name,
            client, severity != NULL ? severity : "NOTICE", msg, state != NULL ? state : "?????");
}

/* Start one new connection. */
static void conn_open(struct pg_bind *pb)
{
    const struct bind_conf *bc = pb->bind->conf;
    struct pgconn *c = calloc(1, sizeof *c);
    char why[256];

    if (c == NULL)
        return;
    c->pb = pb;
    c->fd = -1;
    static_assert(PGC_CONNECTING == 0, "a new connection (calloc) is connecting");
    (void)uv_timer_init(pb->bind->srv->loop, &c->timer); /* cannot fail: it fills in the struct */
    c->timer.data = c;
    c->handles = 1;
    c->next = pb->conns;
    pb->conns = c;
    pb->nconns++;
    c->conn =
        PQconnectStartParams((const char *const *)bc->pg_keywords, (const char *const *)bc->pg_values, 0);
    if (c->conn == NULL || PQstatus(c->conn) == CONNECTION_BAD) {
        conn_error_text(c->conn, why, sizeof why);
        conn_connect_failed(c, why);
        return;
    }
    PQsetNoticeReceiver(c->conn, conn_notice, c);
    /* At start-up the loop's clock has not moved while earlier binds
     * opened (schemas, snapshots, migrations): read it now, or the timeout
     * would count that time too. */
    uv_update_time(pb->bind->srv->loop);
    uv_timer_start(&c->timer, on_connect_timeout, (uint64_t)bc->connect_timeout_ms, 0);
    conn_poll(c, UV_WRITABLE);
    if (c->poll == NULL)
        conn_connect_failed(c, "cannot watch the connection's socket");
}

/* ---- Dispatch -------------------------------------------------------- */

static const char *pg_begin_text(const char *begin)
{
    /* SQLite's BEGIN DEFERRED/IMMEDIATE/EXCLUSIVE mean plain BEGIN here. */
    const char *p = begin;
    while (isspace((unsigned char)*p))
        p++;
    if (strncasecmp(p, "begin", 5) == 0) {
        p += 5;
        while (isspace((unsigned char)*p))
            p++;
        if (strncasecmp(p, "deferred", 8) == 0 || strncasecmp(p, "immediate", 9) == 0 ||
            strncasecmp(p, "exclusive", 9) == 0)
            return "BEGIN";
    }
    return begin;
}

/* Start job on the idle connection c. */
static void conn_start(struct pgconn *c, struct job *job)
{
    int ok;

    c->job = job;
    conn_set_state(c, PGC_BUSY);
    c->header_sent = c->paused = c->timed_out = c->failed = c->tuples = c->ro_wrap = c->copy_out = false;
    c->reprepared = c->prep_stale = false;
    c->changes[0] = '\0';
    buf_reset(&c->out);
    if (atomic_load(&job->cancelled) && job->type == JOB_EXEC) {
        c->failed = true;
        conn_finish_job(c);
        conn_dispatch(c);
        return;
    }
    switch (job->type) {
    case JOB_RELEASE:
        conn_set_phase(c, PHASE_RELEASE);
        if (PQtransactionStatus(c->conn) == PQTRANS_IDLE) {
            conn_finish_job(c);
            conn_dispatch(c);
            return;
        }
        ok = PQsendQuery(c->conn, "ROLLBACK");
        break;
    case JOB_LIST_TABLES:
        conn_set_phase(c, PHASE_STMT);
        ok = PQsendQuery(c->conn,
                         "SELECT CASE WHEN table_schema = 'public' THEN table_name "
                         "ELSE table_schema || '.' || table_name END, "
                         "CASE table_type WHEN 'VIEW' THEN 'view' ELSE 'table' END, table_schema, table_name "
                         "FROM information_schema.tables "
                         "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1");
        break;
    case JOB_MIGRATION_STATE:
        conn_set_phase(c, PHASE_STMT);
        ok = PQsendQuery(c->conn, "SELECT version, name, checksum, applied_at FROM " MIGRATE_TABLE
                                  " ORDER BY version");
        break;
    default:
        if (job->begin_sql != NULL) {
            conn_set_phase(c, PHASE_BEGIN);
            ok = PQsendQuery(c->conn, pg_begin_text(job->begin_sql));
        } else if (job->readonly && PQtransactionStatus(c->conn) == PQTRANS_IDLE) {
            conn_set_phase(c, PHASE_RO_BEGIN);
            c->ro_wrap = true;
            ok = PQsendQueryParams(c->conn, "BEGIN READ ONLY", 0, NULL, NULL, NULL, NULL, 0);
        } else if (job->readonly && PQtransactionStatus(c->conn) == PQTRANS_INTRANS && !c->ro_locked) {
            conn_set_phase(c, PHASE_RO_LOCK);
            ok = PQsendQueryParams(c->conn, PG_RO_LOCK, 0, NULL, NULL, NULL, NULL, 0);
        } else {
            ok = conn_send_statement(c) == 0;
            if (!ok) {
                conn_finish_job(c);
                conn_dispatch(c);
                return;
            }
        }
        break;
    }
    if (!ok) {
        conn_lost(c);
        return;
    }
    if (job->type == JOB_EXEC && c->pb->bind->conf->statement_timeout_ms > 0)
        uv_timer_start(&c->timer, on_statement_timeout, (uint64_t)c->pb->bind->conf->statement_timeout_ms, 0);
    conn_poll(c, PQflush(c->conn) == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

/* Take the oldest job off the bind's queue, which is not empty. */
static struct job *queue_shift(struct pg_bind *pb)
{
    struct job *job = pb->head;

    pb->head = job->next;
    if (pb->head == NULL)
        pb->tail = &pb->head;
    job->next = NULL;
    pb->queued--;
    return job;
}

/* Give an idle connection the next job it may take. */
static void conn_dispatch(struct pgconn *c)
{
    struct pg_bind *pb = c->pb;

    if (c->state != PGC_IDLE || c->pinned != 0)
        return; /* a pinned connection waits for its client's next job */
    if (pb->head != NULL)
        conn_start(c, queue_shift(pb));
}

/* Reconnect after backoff, keep pool_min connections, open more while
 * jobs wait. */
static void on_retry(uv_timer_t *t)
{
    struct pg_bind *pb = t->data;

    pb->retry_armed = false;
    if (pb->down && !pb->stopping)
        conn_open(pb); /* on failure, conn_connect_failed() arms the next try */
    else
        bind_kick(pb);
}

static void bind_kick(struct pg_bind *pb)
{
    const struct bind_conf *bc = pb->bind->conf;
    int connecting = 0, idle = 0;

    if (pb->stopping)
        return;
    for (struct pgconn *c = pb->conns; c != NULL; c = c->next) {
        if (c->state == PGC_CONNECTING)
            connecting++;
        else if (c->state == PGC_IDLE && c->pinned == 0)
            idle++;
    }
    if (pb->down) {
        /* One attempt at a time, after the backoff. */
        if (connecting > 0 || pb->retry_armed)
            return;
        pb->backoff_ms = pb->backoff_ms == 0                   ? BACKOFF_MIN_MS
                         : pb->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                               : pb->backoff_ms * 2;
        pb->retry_armed = true;
        uv_timer_start(&pb->retry, on_retry, pb->backoff_ms, 0);
        return;
    }
    while (pb->nconns < bc->pool_size &&
           (pb->nconns < bc->pool_min || (size_t)(idle + connecting) < pb->queued)) {
        int before = pb->nconns;
        conn_open(pb);
        if (pb->nconns <= before || pb->down)
            break;
        connecting++;
    }
}

/* Close connections idle past idle_timeout, above pool_min. */
static void on_idle_check(uv_timer_t *t)
{
    struct pg_bind *pb = t->data;
    const struct bind_conf *bc = pb->bind->conf;
    uint64_t now = uv_now(pb->bind->srv->loop);
    struct pgconn *c, *next;

    if (bc->idle_timeout_ms <= 0)
        return;
    for (c = pb->conns; c != NULL && pb->nconns > bc->pool_min; c = next) {
        next = c->next;
        if (c->state == PGC_IDLE && c->pinned == 0 && now - c->idle_since >= (uint64_t)bc->idle_timeout_ms) {
            log_debug("bind %s: closing an idle connection", bc->name);
            conn_destroy(c);
        }
    }
}

/* query_wait_timeout: the jobs that waited that long for a connection
 * (every one is busy or pinned to an open transaction) get -ERR BUSY, as
 * a SQLite bind's do after busy_timeout; then the timer waits for the
 * next oldest. The queue is in arrival order. */
static void on_query_wait(uv_timer_t *t)
{
    struct pg_bind *pb = t->data;
    const struct bind_conf *bc = pb->bind->conf;
    uint64_t limit = (uint64_t)bc->query_wait_timeout_ms;
    uint64_t now = uv_now(pb->bind->srv->loop);
    char msg[300];

    while (pb->head != NULL && now - pb->head->queued_at >= limit) {
        struct job *job = queue_shift(pb);
        snprintf(msg, sizeof msg,
                 "bind %s: no server connection became free within query_wait_timeout (%d ms): all %d are "
                 "busy or held by open transactions; the statement did not run",
                 bc->name, bc->query_wait_timeout_ms, pb->nconns);
        job_fail(job, "BUSY", msg);
    }
    if (pb->head != NULL)
        uv_timer_start(&pb->wait, on_query_wait, pb->head->queued_at + limit - now, 0);
}

/* ---- backend_ops ----------------------------------------------------- */

static int pg_open(struct bind *b, char *err, size_t errlen)
{
    const struct config *cfg = server_cfg_of(b->cfgref);
    struct pg_bind *pb;

    /* migrate_on_start: with a blocking connection of its own, before the
     * daemon serves (no listener yet). A bind added by a reload is not
     * migrated here: that would block the loop on the network. */
    if (cfg->migrate_on_start && b->srv->nlisteners == 0 &&
        migrate_startup_pg(cfg, b->conf, err, errlen) != 0)
        return -1;
    if (cfg->migrate_on_start && b->srv->nlisteners > 0 && cfg->migrations != NULL)
        log_warn("bind %s: added by a reload, so not migrated: run sqlmuxd migrate", b->conf->name);
    pb = calloc(1, sizeof *pb);
    if (pb == NULL) {
        snprintf(err, errlen, "bind %s: out of memory", b->conf->name);
        return -1;
    }
    pb->bind = b;
    pb->tail = &pb->head;
    pb->stmt_cache = (size_t)cfg->stmt_cache;
    /* Neither uv_timer_init nor uv_timer_start (of an open timer, with a
     * callback) can fail: their results are not checked here or below. */
    (void)uv_timer_init(b->srv->loop, &pb->retry);
    (void)uv_timer_init(b->srv->loop, &pb->idle);
    (void)uv_timer_init(b->srv->loop, &pb->wait);
    pb->retry.data = pb->idle.data = pb->wait.data = pb;
    pb->handles = 3;
    uv_timer_start(&pb->idle, on_idle_check, IDLE_CHECK_MS, IDLE_CHECK_MS);
    b->impl = pb;
    log_info("bind %s: postgresql %s, pool %d..%d", b->conf->name, b->conf->url_redacted, b->conf->pool_min,
             b->conf->pool_size);
    bind_kick(pb);
    return 0;
}

static void pg_submit(struct bind *b, struct job *job)
{
    struct pg_bind *pb = b->impl;
    const struct bind_conf *bc = b->conf;
    char msg[400];

    job->next = NULL;
    if (job->type == JOB_SAVE_SNAPSHOT) {
        job_fail(job, "ARGS", "PostgreSQL binds have no snapshots");
        return;
    }
    /* The client's transaction lives on one connection. */
    for (struct pgconn *c = pb->conns; c != NULL; c = c->next) {
        if (c->pinned == job->owner && c->state == PGC_IDLE) {
            conn_start(c, job);
            return;
        }
    }
    if (job->txn_open && job->type == JOB_EXEC) {
        txn_lost(pb, job);
        return;
    }
    if (job->type == JOB_RELEASE) {
        job_fail(job, "CONNLOST", "the transaction's connection is gone");
        return;
    }
    if (pb->down) {
        snprintf(msg, sizeof msg, "bind %s: the server is unavailable: %s", bc->name, pb->last_error);
        job_fail(job, "UNAVAILABLE", msg);
        return;
    }
    for (struct pgconn *c = pb->conns; c != NULL; c = c->next) {
        if (c->state == PGC_IDLE && c->pinned == 0) {
            conn_start(c, job);
            return;
        }
    }
    if (pb->queued >= (size_t)bc->max_queue) {
        snprintf(msg, sizeof msg, "bind %s: %zu requests already wait for a server connection (max_queue)",
                 bc->name, pb->queued);
        job_fail(job, "QUEUEFULL", msg);
        return;
    }
    job->queued_at = uv_now(b->srv->loop);
    *pb->tail = job;
    pb->tail = &job->next;
    pb->queued++;
    if (bc->query_wait_timeout_ms > 0 && !uv_is_active((uv_handle_t *)&pb->wait))
        uv_timer_start(&pb->wait, on_query_wait, (uint64_t)bc->query_wait_timeout_ms, 0);
    bind_kick(pb);
}

static struct pgconn *conn_of(struct pg_bind *pb, const struct job *job)
{
    for (struct pgconn *c = pb->conns; c != NULL; c = c->next)
        if (c->job == job)
            return c;
    return NULL;
}

static void pg_interrupt(struct bind *b, struct job *job)
{
    struct pg_bind *pb = b->impl;
    struct pgconn *c = conn_of(pb, job);

    if (c == NULL) {
        /* Still queued: take it out and finish it. */
        for (struct job **pp = &pb->head; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == job) {
                *pp = job->next;
                if (*pp == NULL)
                    pb->tail = pp;
                pb->queued--;
                job_fail(job, "INTERRUPTED", "the client went away");
                return;
            }
        }
        return;
    }
    if (c->paused) {
        c->paused = false;
        conn_poll(c, UV_READABLE);
    }
    conn_cancel(c);
}

static void pg_credit(struct bind *b, struct job *job)
{
    struct pgconn *c = conn_of(b->impl, job);

    if (c == NULL || !c->paused)
        return;
    c->paused = false;
    conn_poll(c, UV_READABLE);
    conn_read(c); /* results may already be buffered in libpq */
}

static void pg_status(struct bind *b, struct bind_status *st)
{
    struct pg_bind *pb = b->impl;
    int connecting = 0, ready = 0, in_use = 0;

    for (struct pgconn *c = pb->conns; c != NULL; c = c->next) {
        if (c->state == PGC_CONNECTING)
            connecting++;
        else if (c->state == PGC_IDLE || c->state == PGC_BUSY)
            ready++;
        if (c->state == PGC_BUSY || c->pinned != 0)
            in_use++;
    }
    st->state = ready > 0 ? "connected" : pb->down ? "down" : "connecting";
    st->connections = ready;
    st->in_use = in_use;
}

/* The server's host, port and database (never the password). */
static void pg_describe(const struct bind_conf *bc, const char **type, char *where, size_t n)
{
    const char *host = "", *port = "", *db = "";

    *type = "postgresql";
    for (size_t i = 0; bc->pg_keywords != NULL && bc->pg_keywords[i] != NULL; i++) {
        if (strcmp(bc->pg_keywords[i], "host") == 0)
            host = bc->pg_values[i];
        else if (strcmp(bc->pg_keywords[i], "port") == 0)
            port = bc->pg_values[i];
        else if (strcmp(bc->pg_keywords[i], "dbname") == 0)
            db = bc->pg_values[i];
    }
    snprintf(where, n, "%s%s%s/%s", host, port[0] ? ":" : "", port, db);
}

static void pg_library_version(char *dst, size_t n)
{
    int v = PQlibVersion();

    /* 15.10 is 150010; before 10, 9.6.3 was 90603. */
    if (v >= 100000)
        snprintf(dst, n, "%d.%d", v / 10000, v % 10000);
    else
        snprintf(dst, n, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
}

static void pg_close(struct bind *b)
{
    struct pg_bind *pb = b->impl;

    if (pb == NULL)
        return;
    pb->stopping = true;
    fail_queue(pb, "SHUTDOWN", "the server is shutting down");
    while (pb->conns != NULL) {
        struct pgconn *c = pb->conns;
        if (c->job != NULL) {
            reply_error(&c->out, "SHUTDOWN", "the server is shutting down");
            c->failed = true;
            conn_finish_job(c);
        }
        conn_destroy(c);
    }
    uv_timer_stop(&pb->retry);
    uv_timer_stop(&pb->idle);
    uv_timer_stop(&pb->wait);
    uv_close((uv_handle_t *)&pb->retry, bind_handle_closed);
    uv_close((uv_handle_t *)&pb->idle, bind_handle_closed);
    uv_close((uv_handle_t *)&pb->wait, bind_handle_closed);
    b->impl = NULL;
}

const struct backend_ops backend_pg_ops = {
    .name = "postgresql",
    .open = pg_open,
    .submit = pg_submit,
    .interrupt = pg_interrupt,
    .credit = pg_credit,
    .status = pg_status,
    .describe = pg_describe,
    .library = "libpq",
    .library_version = pg_library_version,
    .close = pg_close,
};
