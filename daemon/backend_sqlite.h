/*
 * The SQLite backend's parts, shared by its files (nothing outside the
 * backend includes this; the rest of the daemon sees backend_sqlite_ops):
 *
 *   backend_sqlite.c  the bind: open and close, the worker pool and its
 *                     queues, group commit, the checkpoint thread
 *   sqlite_conn.c     a connection: open, settings, the authorizer, the
 *                     progress and busy handlers, error replies
 *   sqlite_exec.c     running statements: the statement cache, parameter
 *                     binding, row encoding and streaming, one JOB_EXEC
 *   sqlite_quick.c    quick reads (nowait VFS) and writes on the loop thread
 *   sqlite_memory.c   the in-memory bind's folder and its snapshots
 *
 * Threads: a struct worker's connection is used by one thread at a time
 * (its worker thread, or the loop thread for the quick connection); the
 * functions below run on that thread unless they say otherwise.
 */
#ifndef SQLMUX_DAEMON_BACKEND_SQLITE_H
#define SQLMUX_DAEMON_BACKEND_SQLITE_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "daemon/backend.h"
#include "daemon/sqlnorm.h"

/* How much of the in-memory bind's file each connection maps (bytes; the
 * address space is reserved, memory is what the file holds). */
#define MEMORY_MMAP_SIZE "1073741824"

/* The VFS of every connection to the in-memory bind's file: SQLite's unix
 * VFS that holds the file's lock for the whole process and keeps the WAL
 * index in the heap. Only this process opens that file, so its connections
 * coordinate in memory instead of with 2 to 6 fcntl() calls per
 * transaction; any other process finds the file locked. All connections to
 * the file must use it (sqlite_conn_open() does; an ATTACH names it in a
 * URI). */
#define MEMORY_VFS "unix-excl"

/* A statement running this long is lowered to this nice value. */
#define LONG_STATEMENT_MS   50
#define LONG_STATEMENT_NICE 19

/* A statement enters a connection's cache the second time its text is
 * prepared there (a direct-mapped memory of this many recent texts), so a
 * stream of one-off statements (literal values) neither evicts the useful
 * ones nor pays for caching. */
#define STMT_SEEN 256

/* Rows are posted to the loop in chunks of about this many bytes. */
#define CHUNK_BYTES (64 * 1024)

/* Writes of different clients committed together, at most. */
#define GROUP_MAX 64

/* Quick reads on the loop thread: the time and answer size past which a
 * statement is handed to a worker instead, the longest text tried, the
 * largest string or blob it may touch (SQLITE_LIMIT_LENGTH: bounds the
 * work of any single step), how often the budget is checked (virtual
 * machine steps), and for how many runs a statement that overran goes
 * straight to the workers (remembered in QUICK_SKIP_SLOTS slots). */
#define QUICK_BUDGET_NS      (200 * 1000)
#define QUICK_MAX_OUTPUT     (16 * 1024)
#define QUICK_MAX_SQL        4096
#define QUICK_MAX_LENGTH     (256 * 1024)
#define QUICK_MAX_PATTERN    256
#define QUICK_PROGRESS_STEPS 100
#define QUICK_SKIP_RUNS      64
#define QUICK_SKIP_SLOTS     256
#define QUICK_CACHE_KIB      "-16384"
#define QUICK_WAL_PAGES      1000 /* SQLite's wal_autocheckpoint default */

/* Checkpoints. SQLite's automatic checkpoint (at commit, past 1000 pages)
 * copies the log into the database and lets the next writer restart the
 * log from its beginning, but only when no reader still needs its frames:
 * readers that always overlap, or one that stays open, starve it. Each
 * bind's checkpoint thread looks at the log every WAL_CHECK_MS. Past
 * WAL_LIMIT_BYTES it runs a RESTART checkpoint, which holds new writers
 * back while it waits (at most WAL_WAIT_MS, else it tries again at the
 * next look) for the readers of old frames to finish; a writer restarting
 * the log cuts the file back to WAL_LIMIT_BYTES (journal_size_limit).
 * A writer that never pauses would keep that checkpoint from the writer's
 * lock (SQLite's busy handler naps, and misses the gaps between commits),
 * and writes add thousands of pages between two looks, so the workers'
 * log hook (sqlite_conn_wal_hook) restarts the log too, right after a
 * commit that leaves it past the limit: the committing writer holds the
 * next writes back while it waits, at most WAL_WAIT_MS. After WAL_IDLE_MS
 * without writes the thread empties the file (TRUNCATE). */
#define WAL_CHECK_MS    200
#define WAL_LIMIT_BYTES (16 * 1024 * 1024)
#define WAL_LIMIT_TEXT  "16777216"
#define WAL_WAIT_MS     50
#define WAL_IDLE_MS     1000

/* A statement that overran a quick read's budget lately (by its text's
 * hash): its next runs go straight to the workers. */
struct quick_skip {
    uint64_t hash;
    uint32_t left; /* runs still sent straight to the workers */
};

struct cached_stmt {
    uint64_t hash;
    char *sql;
    size_t len;
    sqlite3_stmt *stmt;
    uint64_t used; /* tick of last use, for eviction */
    /* sqlite_stmt_straight()'s verdict (1 yes, -1 no, 0 not asked) and
     * the schema version it was made for. */
    signed char straight;
    int64_t straight_schema;
    /* Its answer's header line, made at its first run (NULL: not yet),
     * and SQLITE_STMTSTATUS_REPREPARE then: SQLite prepares a statement
     * again after a schema change, which may change its columns. */
    char *header;
    size_t header_len;
    int header_prep;
};

/* Finalize a cached statement and free what it holds. */
void sqlite_cached_free(struct cached_stmt *c);

struct sqlite_bind;
struct xact_conn;

struct worker {
    struct sqlite_bind *sb;
    pthread_t thread;
    bool started;
    sqlite3 *db;
    uint64_t pinned;          /* session whose transaction is open here, 0: none */
    bool busy;                /* running a job (guarded by the bind's lock) */
    bool writing;             /* that job may write (guarded by the bind's lock) */
    bool waiting;             /* asleep on wake (guarded by the bind's lock) */
    pthread_cond_t wake;      /* signalled when it has a job to take: each
                                 worker sleeps on its own, so a submit wakes
                                 one thread, not the whole pool */
    struct job *head, **tail; /* private queue: jobs of the pinned session */
    struct cached_stmt *cache;
    size_t ncache;
    size_t cache_last; /* the entry cache_find() found last */
    uint64_t tick;
    uint64_t seen[STMT_SEEN];   /* hashes of statements prepared once, uncached */
    const char *denied;         /* why the authorizer refused, for the error */
    const char *denied_code;    /* and the error code: DENIED, or NOPERM */
    bool altering;              /* the statement being prepared is an ALTER TABLE */
    bool readonly;              /* the running statement's user may only read */
    bool query_only;            /* PRAGMA query_only is on (sqlite_conn_query_only) */
    bool internal;              /* the daemon's own statement: not authorized */
    bool pragma;                /* the running statement is a PRAGMA: never cached
                                   (its answer is compiled from the schema) */
    const char *const *schemas; /* databases besides main its statements may use
                                   (sqlite_conn_harden), NULL-terminated; NULL: none */
    bool federated;             /* an executor connection (federate_exec.c): its statements
                                   may write only write_schema */
    const char *write_schema;   /* federated: the database the running statement may
                                   write (its target bind), NULL: none */
    size_t mark;                /* where the running statement's response starts in out */
    uint64_t deadline_ns;       /* statement_timeout: uv_hrtime() past which it stops; 0: none */
    uint64_t started_ns;        /* uv_hrtime() when the running statement started; 0: none */
    sqlite3_stmt *stepping;     /* the client's statement being stepped, for the progress
                                   handlers (sqlite_conn_may_stop), or NULL */
    uint64_t busy_since_ns;     /* uv_hrtime() when its wait for a lock began (on_busy) */
    bool restarting;            /* its log hook restarts the log: waits WAL_WAIT_MS at most */
    pid_t tid;                  /* the worker thread, for setpriority() */
    bool lowered;               /* the thread runs at LONG_STATEMENT_NICE */
    bool quick;                 /* the loop thread's quick-read connection */
    bool grouping;              /* running jobs of a group commit (run_group, backend_sqlite.c) */
    bool group_overflow;        /* one of them answered more than fits in memory */
    int max_length;             /* its SQLITE_LIMIT_LENGTH now (max_value) */
    bool lent_pg;               /* the running statement has PostgreSQL connections lent
                                   (xact_lend.c): it may write its temp virtual tables */
    struct xact_conn *xact;     /* the other binds attached for transactions
                                   across binds (daemon/xact.c), or NULL */
    bool normalize;             /* normalize_literals for the running statements */
    int64_t txn_schema;         /* the schema version sqlite_txn_inline read, its
                                   transaction holding the write lock; -1: to look
                                   again (a job ran here since: DDL, COMMIT...) */
    struct sqlnorm norm;        /* the running statement with its literals bound
                                   (sqlite_stmt_for); buffers reused */
};

struct sqlite_bind {
    struct bind *bind;
    pthread_mutex_t lock;     /* guards the queues, pinned, stopping */
    pthread_cond_t cond;      /* the snapshot thread's */
    struct job *head, **tail; /* shared queue */
    bool stopping;
    sqlite3 *anchor; /* in-memory bind: keeps the database alive */
    char *filename;  /* what sqlite3_open_v2 gets */
    char *memdir;    /* in-memory bind: its private RAM folder */
    int open_flags;
    size_t stmt_cache;      /* statements cached per connection (fixed at open) */
    char readonly_msg[128]; /* the error for a read-only user's write */
    struct worker *workers;
    int nworkers;
    uv_timer_t *wait_timer; /* fails jobs that wait too long for a connection */

    /* Quick reads (loop thread only): a connection without a thread, NULL
     * when the bind's storage could make a read wait; and statements that
     * overran the budget lately. The reads of one loop turn share one read
     * transaction (quick_begin ... quick_commit, ended by quick_turn after
     * the turn's I/O callbacks), which saves taking and dropping SQLite's
     * WAL read lock (two fcntl calls) per statement; a job that may have
     * written (workers count them in `writes`) ends it early, so a read
     * received after a write was answered always sees that write. (A
     * change another program makes to a file bind shows from the next
     * turn.) */
    struct worker *quick;
    sqlite3_stmt *quick_begin, *quick_commit;
    uv_check_t *quick_turn;
    uint64_t quick_gen; /* `writes` when the read transaction began */
    atomic_uint_fast64_t writes;
    struct quick_skip quick_skip[QUICK_SKIP_SLOTS];

    /* Quick writes (loop thread only; the in-memory bind, whose commits
     * neither sync nor wait for the disk): a connection of the loop's own
     * that runs a lone autocommit write (sqlite_write_inline). Lone: at
     * most one per loop turn (quick_wrote), and none in a turn that
     * follows one in which writes went to the workers (quick_sent, then
     * quick_calm false: clients writing together keep their group
     * commits, and the writer's page cache stays its own); quick_turn
     * looks at both at the end of each turn. And the log's length after
     * its last commit (its wal hook), past which the writes go to a
     * worker, whose commit checkpoints (never the loop). */
    struct worker *quick_writer;
    bool quick_wrote;
    bool quick_sent;
    bool quick_calm;
    int quick_wal_pages;

    /* Snapshots (an in-memory bind with a snapshot file): one thread with
     * its own connection runs JOB_SAVE_SNAPSHOTs from its queue, so a save
     * never takes a connection from clients. */
    bool opened; /* open succeeded: close saves the snapshot */
    pthread_t snap_thread;
    bool snap_started;
    sqlite3 *snap_db;
    struct job *snap_head, **snap_tail; /* guarded by lock */
    int64_t snap_at, snap_bytes;        /* the last snapshot written (guarded by lock) */
    atomic_int snap_inflight;           /* JOB_SAVE_SNAPSHOTs queued or running */
    atomic_bool snap_failed;            /* the last save failed: the timer retries */
    uv_timer_t *snap_timer;             /* snapshot_interval */
    long long snap_version;             /* the anchor's data_version at the last timed save */
    uint64_t snap_writes;               /* and `writes` then */

    /* Checkpoints: a thread with its own connection (see WAL_CHECK_MS). */
    pthread_t wal_thread;
    bool wal_started;
    sqlite3 *wal_db;
    atomic_int_fast64_t wal_bytes; /* the log's size at the last look; -1: not yet */
};

/* ---- sqlite_conn.c ----------------------------------------------------- */

/* The protocol's error code for an SQLite result code. */
const char *sqlite_code(int rc);

/* Replace the response being built from out[mark] on (earlier statements
 * of a batch keep theirs) with one -ERR line; sqlite_reply_error: the
 * whole of out. */
void sqlite_reply_error_at(struct buf *out, size_t mark, const char *code, const char *msg);
struct pgvtab;
/* A statement that failed in PostgreSQL through vt: its -ERR (the last
 * line of out) gets the code of the SQLSTATE (UNAVAILABLE when the bind
 * could not be reached, CONNLOST when the connection broke) and the
 * SQLSTATE itself, as for a statement sent to a PostgreSQL bind directly. */
void sqlite_pg_error(struct pgvtab *vt, struct buf *out);
/* An INSERT into a PostgreSQL table answers no last_id: drop it from the
 * status line ending out. */
void sqlite_drop_last_id(struct buf *out);
void sqlite_reply_error(struct buf *out, const char *code, const char *msg);

/* The -ERR for w's last error rc, from w->mark on: the authorizer's
 * reason when it refused, NOPERM for a read-only user's write. */
void sqlite_reply_db_error(struct worker *w, struct buf *out, int rc);

/* Bound every string and blob w's connection makes or returns by
 * max_value (at most cap). */
void sqlite_conn_max_value(struct worker *w, size_t max_value, size_t cap);

/* Check once whether long statements may lower their thread's priority
 * (any thread; later calls return at once). */
void sqlite_renice_init(void);

/* Open a connection to the bind's database through the named VFS (NULL:
 * the default; MEMORY_VFS for the in-memory bind). 0, or -1 with err set. */
int sqlite_conn_open(struct sqlite_bind *sb, sqlite3 **out, const char *vfs, char *err, size_t errlen);

/* "file:PATH?vfs=VFS" in out, PATH's URI bytes escaped (for ATTACH on a
 * connection opened with SQLITE_OPEN_URI). 0, or -1 if it does not fit. */
int sqlite_file_uri(const char *path, const char *vfs, char *out, size_t outlen);

/* The URI to ATTACH a bind's database file by: it names the VFS of the
 * bind's own connections (MEMORY_VFS for the in-memory bind, the default
 * for a file bind), since an ATTACH without one opens the file through the
 * attaching connection's VFS, and an in-memory bind's connection would
 * then hold a file bind's lock for the whole process. */
int sqlite_attach_uri(const char *path, bool memory, char *out, size_t outlen);

/* The log hook of a worker's connection (arg: the worker), in place of
 * SQLite's automatic checkpoint, which it also does (a passive checkpoint
 * past QUICK_WAL_PAGES pages); past WAL_LIMIT_BYTES it restarts the log. */
int sqlite_conn_wal_hook(void *arg, sqlite3 *db, const char *name, int pages);

/* Settings of a connection that serves clients: defensive mode, limits,
 * the authorizer and the handlers, all bound to w. schemas: the names of
 * the databases besides "main" its statements may use (attached by the
 * daemon, never by a client), NULL-terminated; NULL: none. w keeps the
 * pointer. 0, or -1 with err set. */
int sqlite_conn_harden(struct worker *w, const char *const *schemas, char *err, size_t errlen);

/* Whether a progress handler may stop w's statement (w->stepping; NULL:
 * whatever runs): not once it has run to its end. The thread that uses
 * w->db. */
bool sqlite_conn_may_stop(const struct worker *w);

/* Progress handler of a quick connection (arg: its worker): stop a
 * statement that ran past w->deadline_ns, unless it has ended. Installed
 * every QUICK_PROGRESS_STEPS steps. */
int sqlite_quick_progress(void *arg);

/* Run the daemon's own SQL on w's connection, past the authorizer. */
int sqlite_conn_exec_internal(struct worker *w, const char *sql);

/* PRAGMA query_only on for a read-only user's statements, off otherwise. */
void sqlite_conn_query_only(struct worker *w, bool on);

/* ---- sqlite_exec.c ----------------------------------------------------- */

/* Bring the connection's copy of the schema up to date. */
void sqlite_schema_refresh(sqlite3 *db);

/* A prepared statement for sql[0..len) (h: its hash_text()) on w's
 * connection, cached or new; give it back with sqlite_stmt_done(). *rc:
 * the SQLite result; NULL with SQLITE_OK: the text holds no statement;
 * SQLITE_MISUSE: it holds more than one. */
sqlite3_stmt *sqlite_stmt_get(struct worker *w, const char *sql, size_t len, uint64_t h, int *rc);
void sqlite_stmt_done(struct worker *w, sqlite3_stmt *stmt);

/* The prepared statement for req (h: the hash_text() of its text), as
 * sqlite_stmt_get(); *run gets the request to bind it with. With
 * w->normalize, its literals are made parameters (sqlnorm.h) and *run is
 * &w->norm.req, valid until the next call on w; when SQLite refuses that
 * text, or a column name of it shows a parameter, req's own text is
 * prepared instead (its error, its names) and *run is req. */
sqlite3_stmt *sqlite_stmt_for(struct worker *w, const struct request *req, uint64_t h,
                              const struct request **run, int *rc);

/* Bind the request's parameters; on error the -ERR replaces out[mark..]
 * and the result is -1. */
int sqlite_bind_params(sqlite3_stmt *stmt, const struct request *req, struct buf *out, size_t mark);

/* Step stmt to the end, streaming the header and rows into out (job NULL:
 * a quick read, stopped with SQLITE_TOOBIG past QUICK_MAX_OUTPUT). The
 * final SQLite code; *rows counts the rows. */
int sqlite_stream_rows(struct worker *w, struct job *job, sqlite3_stmt *stmt, struct buf *out,
                       uint64_t *rows);

/* The status line after a result's rows: +OK rows=N. */
int sqlite_put_rows_status(struct buf *out, uint64_t rows);

/* The status line of a statement that ran to SQLITE_DONE on db: +OK
 * rows=N when it has columns, else +OK changes=N (last_id=ID after an
 * INSERT that added rows). before: sqlite3_total_changes64() before it
 * ran. 0, or -1 on ENOMEM. */
int sqlite_put_done_status(sqlite3 *db, sqlite3_stmt *stmt, enum stmt_kind kind, sqlite3_int64 before,
                           uint64_t rows, struct buf *out);

/* Run a JOB_EXEC (its statement and the batched ones) on w, appending
 * the responses to out and posting them in chunks. */
void sqlite_exec_job(struct worker *w, struct job *job, struct buf *out);

/* ---- sqlite_quick.c ---------------------------------------------------- */

/* Open the bind's quick-read connection, when its storage allows (loop
 * thread, at open). 0, or -1 with err set. */
int sqlite_quick_open(struct sqlite_bind *sb, char *err, size_t errlen);

/* backend_ops.read_inline (loop thread). */
bool sqlite_read_inline(struct bind *b, const struct request *req, uint64_t start_ns, struct buf *out,
                        uint64_t *rows);

/* Whether stmt, one of w's cached statements, runs in a time bounded by
 * its values alone: its program (EXPLAIN) writes one row of main at most,
 * with only the opcodes of such a write, every jump forward (no loop, no
 * trigger, no subquery, no virtual table). schema: the connection's
 * schema version now; the verdict is kept with the cached statement for
 * that version. Any thread that may use w's connection. */
bool sqlite_stmt_straight(struct worker *w, sqlite3_stmt *stmt, int64_t schema);

/* An -ERR line (the last of out) whose error made SQLite roll back the
 * whole transaction says so. */
void sqlite_note_rolled_back(struct buf *out);

/* backend_ops.txn_inline (loop thread). */
bool sqlite_txn_inline(struct bind *b, uint64_t owner, const struct request *req, enum stmt_kind kind,
                       uint64_t start_ns, struct buf *out, uint64_t *rows, bool *txn_open);

/* backend_ops.write_inline (loop thread). */
bool sqlite_write_inline(struct bind *b, const struct request *req, enum stmt_kind kind, uint64_t start_ns,
                         struct buf *out);

/* A write outside any transaction goes to the workers (loop thread):
 * the next loop turn leaves its writes to them too. */
void sqlite_quick_write_sent(struct sqlite_bind *sb);

/* Whether the statement with text hash h is to skip the quick read
 * (skip[QUICK_SKIP_SLOTS]: it overran lately); counts the run. */
bool sqlite_quick_skipped(struct quick_skip *skip, uint64_t h);

/* Run sql[0..len) with req's parameters as a quick read on w (read
 * transaction open, loop thread), within QUICK_BUDGET_NS from start_ns
 * and QUICK_MAX_OUTPUT: true with the whole answer appended to out and
 * *rows set, or false with out as it was (a worker runs it), the reason
 * in *rc, the statement remembered in skip[] when it overran (h: the hash
 * of req's text). */
bool sqlite_quick_run(struct worker *w, struct quick_skip *skip, uint64_t h, const char *sql, size_t len,
                      const struct request *req, uint64_t start_ns, struct buf *out, uint64_t *rows, int *rc);

/* ---- sqlite_memory.c --------------------------------------------------- */

/* Make the private folder and file name of an in-memory bind. */
int sqlite_memory_create(struct sqlite_bind *sb, char *err, size_t errlen);

/* Start the snapshot thread and timer of an in-memory bind with a
 * snapshot file (loop thread, at open). 0, or -1 with err set. */
int sqlite_snapshot_start(struct sqlite_bind *sb, char *err, size_t errlen);

/* Queue a JOB_SAVE_SNAPSHOT for the snapshot thread, or answer it at once
 * when the bind has none (loop thread). */
void sqlite_snapshot_submit(struct sqlite_bind *sb, struct job *job);

/* ---- backend_sqlite.c -------------------------------------------------- */

/* Take the first job of a queue (the bind's lock held). */
struct job *sqlite_queue_pop(struct job **head, struct job ***tail);

/* Free a worker's cached statements and close its connection. */
void sqlite_worker_close(struct worker *w);

#endif
