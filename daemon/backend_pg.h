/*
 * The PostgreSQL backend's parts, shared by its files (nothing outside the
 * backend includes this; the rest of the daemon sees backend_pg_ops):
 *
 *   backend_pg.c  the bind: its pool of connections (opening more,
 *                 reconnecting with backoff, closing idle ones), its queue
 *                 of jobs, pinning to a client's transaction, the ops
 *   pg_conn.c     one server connection: connecting, its state and its
 *                 job's phases (with the tables of legal changes), sending
 *                 a job's queries and reading their results, COPY, cancel
 *   pg_exec.c     a job's statement and answer: placeholders, parameters,
 *                 the prepared-statement cache; header, rows and status
 *                 lines (proto's encoder), -ERR lines, .tables, .migrations
 *
 * Everything here runs on the loop thread, but the cancel work that
 * pg_conn.c hands to libuv's thread pool.
 */
#ifndef SQLMUX_DAEMON_BACKEND_PG_H
#define SQLMUX_DAEMON_BACKEND_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "daemon/backend.h"

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
    PHASE_CATALOG,   /* PG_CATALOG_SQL: a JOB_CATALOG, or after a statement that
                        changed the schema (catalog_refresh.h) */
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

    bool lent;           /* lent to a worker thread for one job (backend_pg_lend): blocking
                            mode, not watched, touched by nobody on the loop */
    bool ddl_in_txn;     /* DDL ran in the open transaction: read the catalog when it ends */
    int64_t catalog_seq; /* the version of the catalog being read (PHASE_CATALOG) */
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

/* ---- pg_conn.c --------------------------------------------------------- */

/* The connection's error without libpq's trailing newline. */
void pg_conn_error_text(PGconn *conn, char *dst, size_t n);

/* Change the running job's phase, along the legal changes only. */
void pg_conn_set_phase(struct pgconn *c, enum pgjob_phase to);

/* Close a connection for good: its job (if any) must be finished first. */
void pg_conn_destroy(struct pgconn *c);

/* Watch the connection's socket for `events` (UV_READABLE, UV_WRITABLE). */
void pg_conn_poll(struct pgconn *c, int events);

/* Hand the job's response to the loop and make the connection available. */
void pg_conn_finish_job(struct pgconn *c);

/* Answer a statement that put the connection into a COPY state with -ERR
 * and bring the connection back to where it takes queries. */
void pg_conn_refuse_copy(struct pgconn *c, ExecStatusType st);

/* Ask the server to cancel what the connection runs (off the loop). */
void pg_conn_cancel(struct pgconn *c);

/* Read what the server sent and process complete results. */
void pg_conn_read(struct pgconn *c);

/* Start one new connection of the bind. */
void pg_conn_open(struct pg_bind *pb);

/* Start job on the idle connection c. */
void pg_conn_start(struct pgconn *c, struct job *job);

/* ---- pg_exec.c --------------------------------------------------------- */

/* Replace the whole of out with one -ERR line. */
void pg_reply_error(struct buf *out, const char *code, const char *msg);

/* The protocol's error code for an SQLSTATE (NULL: "SQL"); timed_out: the
 * daemon cancelled the statement for statement_timeout. */
const char *pg_code(const char *sqlstate, bool timed_out);

/* Forget a cached statement, or every one of the connection's. */
void pg_prep_release(struct pg_prepared *p);
void pg_prep_clear(struct pgconn *c);

/* Does the statement text call a function that changes the session? */
bool pg_text_touches_session(const char *sql);

/* Handle one result of the running job (a statement's, or one of the
 * queries around it: c->phase says which). */
void pg_conn_result(struct pgconn *c, PGresult *res);

/* The answers of .migrations and .tables from their query's result. */
void pg_put_migrations(struct pgconn *c, PGresult *res);
void pg_put_tables(struct pgconn *c, const PGresult *res);

/* The tables and views of every schema but the server's own: each as
 * "schema.name", and as "name" too when the schema is on the search_path. */
#define PG_CATALOG_SQL                                                                                       \
    "SELECT n.nspname, c.relname, n.nspname = ANY (pg_catalog.current_schemas(false)) "                      \
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "                   \
    "WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND n.nspname <> 'information_schema' "                    \
    "AND n.nspname NOT LIKE 'pg\\_%'"

/* The result of PG_CATALOG_SQL into c->job->catalog (version
 * c->catalog_seq); an error result is logged and leaves it NULL. */
void pg_put_catalog(struct pgconn *c, const PGresult *res);

/* Send the job's statement (with its parameters). 0 or -1 (error written). */
int pg_conn_send_statement(struct pgconn *c);

/* ---- backend_pg.c ------------------------------------------------------ */

/* Fail every job of the bind's queue with code and msg. */
void pg_fail_queue(struct pg_bind *pb, const char *code, const char *msg);

/* Give an idle connection the next job it may take. */
void pg_conn_dispatch(struct pgconn *c);

/* Open the connections the bind needs now, or arm the reconnect timer. */
void pg_bind_kick(struct pg_bind *pb);

#endif
