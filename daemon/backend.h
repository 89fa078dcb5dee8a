/*
 * The interface between sessions and database backends.
 *
 * A session turns each SQL request into a struct job and hands it to the
 * bind's backend with bind_submit(). The backend runs it wherever it likes
 * (the SQLite backend on the bind's worker threads, the PostgreSQL backend
 * on the loop with non-blocking libpq) and streams the encoded response
 * back through job_post_chunk() and job_post_done(), which the loop thread
 * delivers to the session in order. Backends are siblings behind struct
 * backend_ops; adding one touches neither the router nor the session.
 *
 * Threads: bind_submit() and everything named job_* without "post" run on
 * the loop thread. The job_post_* functions may run on any thread.
 */
#ifndef SQLMUX_DAEMON_BACKEND_H
#define SQLMUX_DAEMON_BACKEND_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "conf/config.h"
#include "daemon/sqlparse.h"
#include "proto/buf.h"
#include "proto/codec.h"

struct session;
struct catalog;
struct catset;
struct xact;
struct bind;
struct bind_status;
struct job_event;

/* A loaded configuration and the number of holders pointing into it: the
 * server while it is current, each bind opened from it, each job. Loop
 * thread only; freed with the last reference. */
struct confref {
    struct config *cfg;
    int refs;
};

/* A reference to cfg, which it now owns; NULL (cfg freed) on ENOMEM. */
struct confref *confref_new(struct config *cfg);

/* Take and drop a reference to a configuration (loop thread); returns r. */
struct confref *confref_hold(struct confref *r);
void confref_drop(struct confref *r);

/* The configuration a reference holds; any thread, while the reference is
 * held. */
static inline const struct config *confref_cfg(const struct confref *r)
{
    return r->cfg;
}

/*
 * What binds and jobs see of the daemon that runs them: the server's
 * `host`, which every bind points to. It holds the loop, the configuration
 * now current, the binds a reload retired, and the queue on which
 * job_post_* hand events to the loop thread, which drains it in order into
 * deliver() (the server sets it: the session's job events). Backends and
 * jobs reach the server through nothing else, so they never call into the
 * server, the sessions or the commands by name. Loop thread, except where
 * said.
 */
struct bind_host {
    uv_loop_t *loop;
    pthread_t loop_thread;  /* any thread */
    struct confref *cfgref; /* the current configuration: a reload swaps it */
    bool serving;           /* listeners are open: opening a bind must not block */
    struct bind *retired;   /* dropped by a reload but still referenced (bind.next_retired) */
    struct xact *xact;      /* the coordinator of transactions across binds (xact.h) */
    void (*deliver)(struct job_event *ev);
    /* Job events from other threads: guarded by ev_lock, drained when the
     * eventfd ev_fd (watched by ev_poll) is written (host_post). */
    uv_poll_t ev_poll;
    int ev_fd;
    pthread_mutex_t ev_lock;
    struct job_event *ev_head, **ev_tail;
    /* Job events posted on the loop thread: no lock, drained by local_idle. */
    uv_idle_t local_idle;
    struct job_event *local_head, **local_tail;
    /* The binds' check handles that end something with the loop turn (a
     * quick read's transaction, the quick writes' turn), counted while
     * active: they start and stop through bind_host_check_start/_stop.
     * While any is, the idle poller neither serves a client in rounds,
     * which go without a check phase (idlepoll.h), nor reads it directly
     * (session_io.c). */
    unsigned turn_checks;
};

static inline void bind_host_check_start(struct bind_host *h, uv_check_t *c, uv_check_cb cb)
{
    if (!uv_is_active((uv_handle_t *)c))
        h->turn_checks++;
    (void)uv_check_start(c, cb); /* fails only without a callback */
}

static inline void bind_host_check_stop(struct bind_host *h, uv_check_t *c)
{
    if (uv_is_active((uv_handle_t *)c))
        h->turn_checks--;
    uv_check_stop(c);
}

/* Set up h's event queue on loop, delivering into deliver. 0, or a libuv
 * error (h's handles that were set up are closed by bind_host_close). */
__attribute__((warn_unused_result)) int bind_host_init(struct bind_host *h, uv_loop_t *loop,
                                                       void (*deliver)(struct job_event *ev));

/* Deliver every event queued now (loop thread). */
void bind_host_drain(struct bind_host *h);

/* Close the queue's handles (loop thread; the loop reaps them). */
void bind_host_close(struct bind_host *h);

/* Whether the caller runs on h's loop thread. */
static inline bool bind_host_on_loop(const struct bind_host *h)
{
    return pthread_equal(pthread_self(), h->loop_thread) != 0;
}

/* What a job asks of its bind's database. Each answers rows only (no
 * header, no status line) unless it says otherwise, or one -ERR line. */
enum job_type {
    JOB_EXEC,            /* run one statement and stream its whole response */
    JOB_RELEASE,         /* end the session's open transaction (ROLLBACK) and unpin */
    JOB_LIST_TABLES,     /* the tables and views: "=name\ttype\tbind\trouted_to\trule\twarning"
                            (route_table_rule() over job->catset) */
    JOB_MIGRATION_STATE, /* the migrations, files and version table merged (migrate_put_status) */
    JOB_SAVE_SNAPSHOT,   /* save an in-memory bind's snapshot: "=bind\tfile\tbytes\tms" */
    JOB_CATALOG,         /* read the bind's catalog into job->catalog, unless
                            it is still catalog_version (SQLite); no output */
};

/* Posted by a backend to the loop thread. */
struct job_event {
    struct job_event *next;
    struct job *job;
    bool done;       /* last event of the job */
    struct buf data; /* encoded response bytes, owned by the event */
};

struct job {
    enum job_type type;
    struct bind *bind;      /* holds a reference (bind_hold) */
    struct confref *cfgref; /* the configuration current when the job was
                               made, held for its life: backends read the
                               table map from here, never from srv->cfg,
                               which a reload may swap */
    struct session *sess;   /* NULL once the session is gone (loop thread) */
    /* Called when the job is done and its session still waits for it (it
     * is not closing), with the session back in SESS_IDLE: the response
     * (job->done_event.data) is the callback's to use. The job is unref'd
     * after it returns. NULL: the response goes to the client as it is. */
    void (*on_done)(struct session *s, struct job *job);
    uint64_t owner; /* session id: the key transactions pin on; 0: run on any
                       free connection, never inside a client's transaction */
    bool txn_open;  /* the owner's transaction is open on this bind, as the
                       database reported after its last statement: the job
                       belongs inside it, on the connection pinned to it (a
                       backend that lost that connection must not run it
                       anywhere else) */

    /* JOB_EXEC input, owned by the job. */
    struct request req;
    enum stmt_kind kind;
    /* The session's user may only read this bind: the backend refuses a
     * statement that would write (-ERR NOPERM), judging by what the
     * database says, never by the SQL text. Same for every batched one. */
    bool readonly;
    /* Pipelined statements of the same session for the same bind, run in
     * order after req (only for backends with ops->batches); each gets its
     * own response. Owned by the job. */
    struct job_stmt *more;
    size_t nmore;
    uint32_t errors;       /* statements answered -ERR (batches) */
    const char *begin_sql; /* a held BEGIN to run first, or NULL (static or in begin_buf) */
    char *begin_buf;
    /* A statement across binds (federate.h): the binds it touches, each
     * held (server_bind_hold) for the job's life, so their files and
     * settings stay while it runs; job->bind is then the federation pool. */
    struct bind **xbinds;
    size_t nxbinds;
    bool plan;         /* .plan: prepare the statement and describe it, do not run it */
    uint32_t warnings; /* facts for the +OK line: warnings=N (federate_references) */
    /* A statement of the owner's transaction that touches binds other than
     * job->bind (its home, where the transaction runs): those binds, owned
     * by the job (daemon/xact.h); NULL: none. xact_home_readonly: the user may
     * only read the home bind (readonly is then false: the grants are
     * checked per bind). */
    struct job_xbind *xact_binds;
    size_t nxact_binds;
    bool xact_home_readonly;
    /* A COMMIT of a transaction with PostgreSQL parts (xact.h): its id
     * (xact_txid_new; 0: none) and the names of the PostgreSQL binds
     * prepared under it (the job's malloc'd array, freed by job_unref;
     * the names point into the job's configuration). */
    uint64_t xact_txid;
    const char **xact_pg;
    size_t nxact_pg;
    /* Out: the outcome is known only at the next start (an I/O error after
     * the decision was written): leave the gids prepared. */
    bool xact_undecided;
    /* A step of the session's transaction across binds with PostgreSQL
     * parts (session_xact.c): its answer goes to that code, not to the
     * client. */
    bool xact_step;
    /* A statement across SQLite and PostgreSQL binds inside such a
     * transaction: the PostgreSQL participants' connections lent to the
     * SQLite worker that runs it (blocking mode; the loop does not touch
     * them until the job is done). Owned by the job. */
    struct job_lent *xact_lent;
    size_t nxact_lent;

    /* Catalogs (catalog_refresh.h). In: the version of the bind's
     * installed catalog when the job was made (-1: none), and for
     * JOB_LIST_TABLES every bind's catalogs (held). Out: a catalog the
     * backend read because it changed (JOB_CATALOG, or after a JOB_EXEC
     * that changed the schema), owned by the job until installed. */
    int64_t catalog_version;
    struct catset *catset;
    struct catalog *catalog;

    /* Results, written by the backend before job_post_done(). */
    bool in_txn;      /* the connection is inside a transaction afterwards */
    bool txn_aborted; /* ... one an error aborted (PostgreSQL: only ROLLBACK, or
                         ROLLBACK TO a savepoint, goes on from there) */
    bool failed;      /* the response ended with -ERR */
    uint64_t rows;    /* rows sent (or listed) */

    /* Streaming and flow control. `unacked` counts bytes posted but not yet
     * written to the client's socket; a backend that produces faster than
     * the client reads waits in job_wait_credit(). Guarded by lock. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t unacked;
    size_t max_unacked;
    atomic_bool cancelled; /* the client is gone: stop producing */
    void *running;         /* backend handle to interrupt (guarded by lock) */

    /* Loop-thread bookkeeping. */
    int refs; /* 1 for the backend until done, +1 per write in flight */
    struct job_event done_event;
    struct job *next;    /* backend queues */
    uint64_t queued_at;  /* uv_now() when it was submitted */
    uint64_t started_ns; /* uv_hrtime() when the session started it */
};

struct job_stmt {
    struct request req;
    enum stmt_kind kind;
};

/* A PostgreSQL connection lent to the job's SQLite worker (xact_lent). */
struct job_lent {
    size_t bind;  /* index into the job's configuration's binds */
    void *conn;   /* the PGconn */
    void *pgconn; /* the backend's struct pgconn (loop thread only) */
};

/* A bind a statement of a transaction across binds touches (xact.h). */
struct job_xbind {
    size_t index;  /* into the job's configuration's binds */
    bool writes;   /* the statement may write it */
    bool readonly; /* the session's user may only read it */
};

struct backend_ops {
    const char *name;
    /* Runs a JOB_EXEC's batched statements (job->more). */
    bool batches;
    /* Open the bind's connections and apply its schema. Runs on the loop
     * thread before the daemon serves. 0, or -1 with err set. */
    int (*open)(struct bind *b, char *err, size_t errlen);
    /* Queue a job; never blocks. */
    void (*submit)(struct bind *b, struct job *job);
    /* Answer a read-only statement (STMT_SELECT, outside any transaction)
     * right here on the loop thread, when that is quick and cannot wait:
     * the bind's storage is memory or a page cache read that cannot block,
     * no lock is waited for, and the statement stays within a small time
     * and size budget. Appends the whole response to out, sets *rows and
     * returns true; otherwise returns false with out as it was, and the
     * statement goes to submit() (which also gives every error). start_ns:
     * uv_hrtime() now. NULL: the backend never does. */
    bool (*read_inline)(struct bind *b, const struct request *req, uint64_t start_ns, struct buf *out,
                        uint64_t *rows);
    /* The same for a lone write outside any transaction (STMT_INSERT,
     * STMT_UPDATE or STMT_DELETE of a user who may write the bind), when
     * nothing can make it wait and no other write is under way on the
     * bind: true with the whole response appended to out, or false with
     * out as it was and nothing changed in the database (submit() runs it
     * then). NULL: the backend never does. */
    bool (*write_inline)(struct bind *b, const struct request *req, enum stmt_kind kind, uint64_t start_ns,
                         struct buf *out);
    /* The same for a write (STMT_INSERT, STMT_UPDATE or STMT_DELETE of a
     * user who may write the bind) inside the transaction of session
     * owner on this bind, whose earlier statements have all been answered:
     * run here on the transaction's own connection when its cost is
     * bounded and nothing can make it wait, with the answer the backend's
     * submit() would give (an -ERR included); a read (STMT_SELECT), as
     * read_inline, within a budget from start_ns (*rows: rows it
     * answered). *txn_open: whether the transaction is still open after it
     * (an error may have ended it). false: out and the database as they
     * were. NULL: never. */
    bool (*txn_inline)(struct bind *b, uint64_t owner, const struct request *req, enum stmt_kind kind,
                       uint64_t start_ns, struct buf *out, uint64_t *rows, bool *txn_open);
    /* Ask a running job to stop (the client went away). */
    void (*interrupt)(struct bind *b, struct job *job);
    /* The client read some of a job's output (loop thread): a backend that
     * paused a job for lack of credit may go on. NULL when the backend
     * waits in job_wait_credit() instead. */
    void (*credit)(struct bind *b, struct job *job);
    /* Fill in the bind's state for .binds (loop thread). */
    void (*status)(struct bind *b, struct bind_status *st);
    /* What .binds shows of a bind's settings: *type gets its type's name
     * (static), where[0..n) where its data lives (never a password). Any
     * thread. */
    void (*describe)(const struct bind_conf *bc, const char **type, char *where, size_t n);
    /* The database library the backend runs on, and its version into
     * dst[0..n), for .version. */
    const char *library;
    void (*library_version)(char *dst, size_t n);
    /* Stop the bind: finish queued jobs, close connections, free impl. */
    void (*close)(struct bind *b);
};

struct bind_status {
    const char *state;      /* "open", "connected", "connecting", "down" */
    int connections;        /* open connections */
    int in_use;             /* connections running or holding a client's work */
    int64_t snapshot_at;    /* in-memory bind: when its snapshot was last written (unix s), 0: never */
    int64_t snapshot_bytes; /* its size */
    int64_t wal_bytes;      /* SQLite: the write-ahead log's size as last measured; -1: none */
};

/* What .stats reports per bind; counted on the loop thread as JOB_EXEC
 * jobs finish. */
/* A bind's catalog and its reading (catalog_refresh.c). Loop thread. */
struct bind_catalog {
    struct catalog *cur; /* installed: what routing uses, or NULL */
    int64_t next_seq;    /* PostgreSQL: the version of the next read */
    bool reading;        /* a JOB_CATALOG is out */
    bool warned;         /* pinned tables found elsewhere were logged */
};

struct bind_stats {
    uint64_t statements;
    uint64_t errors;  /* statements whose response ended with -ERR */
    uint64_t rows;    /* rows returned */
    uint64_t time_ns; /* from start to last byte, summed (some take under 1 us) */
    uint64_t on_loop; /* statements answered by read_inline */
};

/*
 * One open bind. conf points into the configuration it was opened with and
 * never changes; cfgref keeps that configuration alive. A reload keeps a
 * bind whose settings did not change (the same struct, connections and
 * data) and replaces the others; a replaced bind is "retired": it serves
 * the transactions and jobs still on it and closes when its last reference
 * is dropped (bind_drop). Worker threads may read conf, host->loop and
 * impl; everything else belongs to the loop thread.
 */
struct bind {
    struct bind_host *host;
    const struct bind_conf *conf;
    size_t index; /* position in srv->binds (stale once retired) */
    const struct backend_ops *ops;
    void *impl;

    struct confref *cfgref;
    int refs;                  /* the server's table, each job, each open transaction */
    bool retired;              /* no longer in srv->binds */
    struct bind *next_retired; /* host->retired list */
    struct bind_stats stats;
    struct bind_catalog catalog;
    /* PostgreSQL: its server's max_prepared_transactions, read once by the
     * first transaction across binds that writes it (session_xact.c). Loop
     * thread. */
    bool max_prepared_known;
    int max_prepared;
};

extern const struct backend_ops backend_sqlite_ops;
extern const struct backend_ops backend_pg_ops;

/* PostgreSQL bind b (backend_pg.c): lend the idle connection pinned to
 * owner's transaction to another thread for one job (a statement across
 * binds of that transaction, xact_lend.c): switched to blocking mode and no
 * longer watched by the loop. Returns the PGconn and sets *handle, or NULL
 * when owner has no idle connection there. backend_pg_unlend (loop
 * thread, after the job): back to the loop, non-blocking. */
void *backend_pg_lend(struct bind *b, uint64_t owner, void **handle);
/* The BEGIN a PostgreSQL bind runs for a client's BEGIN text: SQLite's
 * BEGIN DEFERRED/IMMEDIATE/EXCLUSIVE are a plain BEGIN there (pg_conn.c). */
const char *pg_conn_begin_text(const char *begin);
void backend_pg_unlend(void *handle);

/* Take and drop a reference to a bind (loop thread). The last drop closes
 * the bind and frees it (a retired one leaves host->retired). */
void bind_hold(struct bind *b);
void bind_drop(struct bind *b);

/* Allocate a job owned by the caller (refs = 1 for the backend). NULL on
 * ENOMEM. */
struct job *job_new(enum job_type type, struct bind *b, struct session *sess, uint64_t owner);

/* Drop one reference; frees at zero. Loop thread. */
void job_unref(struct job *job);

/* Hand encoded bytes to the loop (ownership of *data moves; *data is reset).
 * Returns -1 when the job was cancelled (the caller should stop). */
int job_post_chunk(struct job *job, struct buf *data);

/* Finish the job: data (may be empty) is the end of its response. After
 * this the backend must not touch the job. */
void job_post_done(struct job *job, struct buf *data);

/* Finish a job with one -ERR line and no transaction open: a job that
 * never ran (its queue expired, its bind is closing or cannot take it).
 * Any thread, as job_post_done(). */
void job_fail(struct job *job, const char *code, const char *msg);

/* Block (worker threads only) while more than max_unacked bytes are
 * waiting for the client, unless cancelled. Returns -1 when cancelled. */
int job_wait_credit(struct job *job);

/* Stop a job whose client is gone: wake it if it waits for credit and ask
 * the backend to interrupt it. Loop thread. */
void job_cancel(struct job *job);

/* The client wrote n bytes of this job's output (or they were dropped).
 * Loop thread. */
void job_ack(struct job *job, size_t n);

#endif
