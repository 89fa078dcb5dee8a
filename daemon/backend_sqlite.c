/*
 * The SQLite backend: file binds (WAL) and the in-memory bind.
 *
 * Each bind owns `pool_size` worker threads, each with its own connection,
 * so a slow statement on one bind never delays another bind. Jobs wait in
 * the bind's shared queue; a worker whose connection is inside a client's
 * transaction is pinned to that client and takes only that client's jobs
 * (from its private queue) until the transaction ends, which isolates
 * concurrent transactions. Writes outside transactions go to the first
 * worker (the writer) while it is free or writing, and the writer commits
 * those queued together as one transaction (run_group): SQLite lets one
 * connection write at a time anyway.
 *
 * The in-memory bind is a WAL database in a private folder on a RAM file
 * system (/dev/shm), made fresh at every start and removed at exit; an
 * anchor connection stays open for the daemon's life. SQLite's memdb VFS
 * would be the obvious choice, but a memdb write transaction locks out
 * every reader of the database until it ends, so one client's open
 * transaction would stall all others; WAL gives readers a consistent
 * snapshot while a writer works. A folder left by a crashed daemon is
 * removed at the next start.
 *
 * Quick reads skip the trip to a worker: a SELECT outside a transaction is
 * first tried on the loop thread's own connection to the bind, which can
 * neither wait for a lock (busy timeout 0) nor for the disk (the in-memory
 * bind's pages are RAM; a file bind's are read only when the page cache
 * has them, see the "nowait" VFS below), and is stopped when it runs past
 * QUICK_BUDGET_NS or its answer grows past QUICK_MAX_OUTPUT. Anything that
 * does not finish that way, and every error, goes to a worker as usual, so
 * the answer is the same; a statement stopped for time or size is sent
 * straight to the workers for its next QUICK_SKIP_RUNS runs. A point query
 * then costs no thread hand-off, and the loop never waits.
 *
 * Each bind's checkpoint thread keeps the write-ahead log bounded when
 * SQLite's own checkpoints cannot (readers that always overlap), and
 * empties it when the bind is idle (see WAL_CHECK_MS).
 *
 * A statement that has run for LONG_STATEMENT_MS lowers its worker thread's
 * scheduling priority (nice LONG_STATEMENT_NICE) until it ends, so on a
 * machine with few cores the short statements of other clients and binds,
 * and the loop thread, run first: a long report costs others little
 * latency and still gets every idle cycle. Only when the process may raise
 * the priority back (root, CAP_SYS_NICE, or RLIMIT_NICE of 20: the systemd
 * unit's LimitNICE=+0), checked once.
 *
 * Clients cannot reach the daemon's files: ATTACH is limited to zero
 * databases, extension loading is off, SQLITE_DBCONFIG_DEFENSIVE is on, and
 * an authorizer refuses ATTACH/DETACH, temporary objects, the functions and
 * virtual tables that expose memory or other clients' statements
 * (function_denied, module_denied) and every PRAGMA not known to be
 * harmless. A read-only user's statements run with PRAGMA query_only on.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/fsutil.h"
#include "daemon/backend.h"
#include "daemon/hash.h"
#include "daemon/log.h"
#include "daemon/migrate.h"
#include "daemon/nowait_vfs.h"
#include "daemon/route.h"
#include "daemon/server.h"
#include "daemon/snapshot.h"

/* How much of the in-memory bind's file each connection maps (bytes; the
 * address space is reserved, memory is what the file holds). */
#define MEMORY_MMAP_SIZE "1073741824"

/* A statement running this long is lowered to this nice value. */
#define LONG_STATEMENT_MS 50
#define LONG_STATEMENT_NICE 19

/* A statement enters a connection's cache the second time its text is
 * prepared there (a direct-mapped memory of this many recent texts), so a
 * stream of one-off statements (literal values) neither evicts the useful
 * ones nor pays for caching. */
#define STMT_SEEN 256

/* Rows are posted to the loop in chunks of about this many bytes. */
#define CHUNK_BYTES (64 * 1024)

/* A batch of more statements than this posts its answers in two parts. */
#define BATCH_SPLIT 8

/* Writes of different clients committed together, at most. */
#define GROUP_MAX 64

/* Quick reads on the loop thread: the time and answer size past which a
 * statement is handed to a worker instead, the longest text tried, the
 * largest string or blob it may touch (SQLITE_LIMIT_LENGTH: bounds the
 * work of any single step), how often the budget is checked (virtual
 * machine steps), and for how many runs a statement that overran goes
 * straight to the workers (remembered in QUICK_SKIP_SLOTS slots). */
#define QUICK_BUDGET_NS (200 * 1000)
#define QUICK_MAX_OUTPUT (16 * 1024)
#define QUICK_MAX_SQL 4096
#define QUICK_MAX_LENGTH (256 * 1024)
#define QUICK_MAX_PATTERN 256
#define QUICK_PROGRESS_STEPS 100
#define QUICK_SKIP_RUNS 64
#define QUICK_SKIP_SLOTS 256
#define QUICK_CACHE_KIB "-16384"

/* Checkpoints. SQLite's automatic checkpoint (at commit, past 1000 pages)
 * copies the log into the database and lets the next writer restart the
 * log from its beginning, but only when no reader still needs its frames:
 * readers that always overlap, or one that stays open, starve it. Each
 * bind's checkpoint thread looks at the log every WAL_CHECK_MS. Past
 * WAL_LIMIT_BYTES it runs a RESTART checkpoint, which holds new writers
 * back while it waits (at most WAL_WAIT_MS, else it tries again at the
 * next look) for the readers of old frames to finish; a writer restarting
 * the log cuts the file back to WAL_LIMIT_BYTES (journal_size_limit).
 * After WAL_IDLE_MS without writes it empties the file (TRUNCATE). */
#define WAL_CHECK_MS    200
#define WAL_LIMIT_BYTES (16 * 1024 * 1024)
#define WAL_LIMIT_TEXT  "16777216"
#define WAL_WAIT_MS     50
#define WAL_IDLE_MS     1000

struct cached_stmt {
    uint64_t hash;
    char *sql;
    size_t len;
    sqlite3_stmt *stmt;
    uint64_t used;             /* tick of last use, for eviction */
};

struct sqlite_bind;

struct worker {
    struct sqlite_bind *sb;
    pthread_t thread;
    bool started;
    sqlite3 *db;
    uint64_t pinned;           /* session whose transaction is open here, 0: none */
    bool busy;                 /* running a job (guarded by the bind's lock) */
    bool writing;              /* that job may write (guarded by the bind's lock) */
    bool waiting;              /* asleep on wake (guarded by the bind's lock) */
    pthread_cond_t wake;       /* signalled when it has a job to take: each
                                  worker sleeps on its own, so a submit wakes
                                  one thread, not the whole pool */
    struct job *head, **tail;  /* private queue: jobs of the pinned session */
    struct cached_stmt *cache;
    size_t ncache;
    uint64_t tick;
    uint64_t seen[STMT_SEEN];  /* hashes of statements prepared once, uncached */
    const char *denied;        /* why the authorizer refused, for the error */
    const char *denied_code;   /* and the error code: DENIED, or NOPERM */
    bool altering;             /* the statement being prepared is an ALTER TABLE */
    bool readonly;             /* the running statement's user may only read */
    bool query_only;           /* PRAGMA query_only is on (set_query_only) */
    bool internal;             /* the daemon's own statement: not authorized */
    size_t mark;               /* where the running statement's response starts in out */
    uint64_t deadline_ns;      /* statement_timeout: uv_hrtime() past which it stops; 0: none */
    uint64_t started_ns;       /* uv_hrtime() when the running statement started; 0: none */
    uint64_t busy_since_ns;    /* uv_hrtime() when its wait for a lock began (on_busy) */
    pid_t tid;                 /* the worker thread, for setpriority() */
    bool lowered;              /* the thread runs at LONG_STATEMENT_NICE */
    bool quick;                /* the loop thread's quick-read connection */
    bool grouping;             /* running jobs of a group commit (run_group) */
    bool group_overflow;       /* one of them answered more than fits in memory */
    int max_length;            /* its SQLITE_LIMIT_LENGTH now (max_value) */
};

struct sqlite_bind {
    struct bind *bind;
    pthread_mutex_t lock;      /* guards the queues, pinned, stopping */
    pthread_cond_t cond;       /* the snapshot thread's */
    struct job *head, **tail;  /* shared queue */
    bool stopping;
    sqlite3 *anchor;           /* in-memory bind: keeps the database alive */
    char *filename;            /* what sqlite3_open_v2 gets */
    char *memdir;              /* in-memory bind: its private RAM folder */
    int open_flags;
    size_t stmt_cache;         /* statements cached per connection (fixed at open) */
    char readonly_msg[128];    /* the error for a read-only user's write */
    struct worker *workers;
    int nworkers;
    uv_timer_t *wait_timer;    /* fails jobs that wait too long for a connection */

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
    uint64_t quick_gen;        /* `writes` when the read transaction began */
    atomic_uint_fast64_t writes;
    struct {
        uint64_t hash;
        uint32_t left;         /* runs still sent straight to the workers */
    } quick_skip[QUICK_SKIP_SLOTS];

    /* Snapshots (an in-memory bind with a snapshot file): one thread with
     * its own connection runs JOB_SNAPSHOTs from its queue, so a save
     * never takes a connection from clients. */
    bool opened;               /* open succeeded: close saves the snapshot */
    pthread_t snap_thread;
    bool snap_started;
    sqlite3 *snap_db;
    struct job *snap_head, **snap_tail;   /* guarded by lock */
    int64_t snap_at, snap_bytes;          /* the last snapshot written (guarded by lock) */
    atomic_int snap_inflight;  /* JOB_SNAPSHOTs queued or running */
    atomic_bool snap_failed;   /* the last save failed: the timer retries */
    uv_timer_t *snap_timer;    /* snapshot_interval */
    long long snap_version;    /* the anchor's data_version at the last timed save */
    uint64_t snap_writes;      /* and `writes` then */

    /* Checkpoints: a thread with its own connection (see WAL_CHECK_MS). */
    pthread_t wal_thread;
    bool wal_started;
    sqlite3 *wal_db;
    atomic_int_fast64_t wal_bytes; /* the log's size at the last look; -1: not yet */
};

/* ---- Errors ----------------------------------------------------------- */

/* The protocol's error code for an SQLite result code. */
static const char *sqlite_code(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: return "CONSTRAINT";
    case SQLITE_BUSY:
    case SQLITE_LOCKED:     return "BUSY";
    case SQLITE_READONLY:   return "READONLY";
    case SQLITE_TOOBIG:     return "TOOBIG";
    case SQLITE_MISMATCH:   return "MISMATCH";
    case SQLITE_RANGE:      return "PARAMS";
    case SQLITE_AUTH:       return "DENIED";
    case SQLITE_FULL:       return "FULL";
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:     return "CORRUPT";
    case SQLITE_IOERR:      return "IOERR";
    case SQLITE_NOMEM:      return "NOMEM";
    case SQLITE_INTERRUPT:  return "INTERRUPTED";
    default:                return "SQL";
    }
}

/* Replace the response being built from out[mark] on (earlier statements
 * of a batch keep theirs) with one -ERR line. */
static void reply_error_at(struct buf *out, size_t mark, const char *code, const char *msg)
{
    buf_truncate(out, mark);
    if (codec_put_error(out, code, msg) != 0)
        buf_truncate(out, mark);   /* nothing to say; the session notices an empty reply */
}

static void reply_error(struct buf *out, const char *code, const char *msg)
{
    reply_error_at(out, 0, code, msg);
}

static void reply_sqlite_error(struct worker *w, struct buf *out, int rc)
{
    char msg[160];

    if (w->readonly && (rc & 0xff) == SQLITE_READONLY) {
        reply_error_at(out, w->mark, "NOPERM", w->sb->readonly_msg); /* PRAGMA query_only */
    } else if (w->denied != NULL) {
        reply_error_at(out, w->mark, w->denied_code ? w->denied_code : "DENIED", w->denied);
    } else if ((rc & 0xff) == SQLITE_TOOBIG) {
        snprintf(msg, sizeof msg, "%s: a string or blob may have at most max_value = %d bytes",
                 sqlite3_errmsg(w->db), w->max_length);
        reply_error_at(out, w->mark, "TOOBIG", msg);
    } else {
        reply_error_at(out, w->mark, sqlite_code(rc), sqlite3_errmsg(w->db));
    }
}

/* Bound every string and blob the connection makes or returns by
 * max_value (at most `cap`): SQLite refuses a larger one with
 * SQLITE_TOOBIG before allocating it. The thread that uses w->db. */
static void conn_max_value(struct worker *w, size_t max_value, size_t cap)
{
    int limit = (int)(max_value < cap ? max_value : cap);

    if (w->max_length != limit) {
        sqlite3_limit(w->db, SQLITE_LIMIT_LENGTH, limit);
        w->max_length = sqlite3_limit(w->db, SQLITE_LIMIT_LENGTH, -1);
    }
}

/* ---- Safety ----------------------------------------------------------- */

/* PRAGMAs a client may run. `arg` says whether it may take an argument or
 * value (a table name, or a persistent database setting); the others are
 * read-only. Anything absent is refused. */
static const struct {
    const char *name;
    bool arg;
} pragma_allowed[] = {
    {"table_info", true},        {"table_xinfo", true},     {"table_list", true},
    {"index_list", true},        {"index_info", true},      {"index_xinfo", true},
    {"foreign_key_list", true},  {"foreign_key_check", true},
    {"integrity_check", true},   {"quick_check", true},     {"user_version", true},
    {"application_id", true},    {"optimize", true},
    {"schema_version", false},   {"page_count", false},     {"page_size", false},
    {"freelist_count", false},   {"compile_options", false}, {"function_list", false},
    {"pragma_list", false},      {"collation_list", false}, {"module_list", false},
    {"data_version", false},     {"encoding", false},       {"foreign_keys", false},
    {"journal_mode", false},     {"synchronous", false},    {"auto_vacuum", false},
    {"busy_timeout", false},     {"cache_size", false},
};

/* A function or virtual table module no client may use, and why. */
struct denial {
    const char *name;
    const char *why;
};

/* Functions no client may call. */
static const struct denial function_denied[] = {
    {"load_extension", "load_extension() is not allowed"},
    /* With one argument it answers the address of a tokenizer in the
     * daemon's memory; with two it installs one from a blob, and the next
     * full-text query jumps there. */
    {"fts3_tokenizer", "fts3_tokenizer() is not allowed: it reads and sets addresses in the daemon's memory"},
    /* Debugging aids that decode any blob as an r-tree node. */
    {"rtreenode", "rtreenode() is not allowed: it is a debugging function"},
    {"rtreedepth", "rtreedepth() is not allowed: it is a debugging function"},
};

/* Virtual table modules no client may read or create a table of. */
static const struct denial module_denied[] = {
    /* The statements prepared on the connection: other clients' SQL text,
     * literals included. */
    {"sqlite_stmt", "sqlite_stmt is not allowed: it shows other clients' statements"},
};

#define DENIED_IN(list, name) denied_why((list), sizeof(list) / sizeof((list)[0]), (name))

/* Why `name` (may be NULL) is in list[0..n), or NULL when it is not. */
static const char *denied_why(const struct denial *list, size_t n, const char *name)
{
    for (size_t i = 0; name != NULL && i < n; i++)
        if (strcasecmp(list[i].name, name) == 0)
            return list[i].why;
    return NULL;
}

/* Whether an authorizer call is SQLite's own bookkeeping for a statement
 * being prepared, not a change the client asked for:
 * - ALTER TABLE ... RENAME and DROP COLUMN also rewrite the temporary
 *   schema's triggers and views that name the table (an UPDATE of
 *   sqlite_temp_master, which holds nothing here: clients cannot create
 *   temporary objects);
 * - a table-valued function or eponymous virtual table (json_each,
 *   pragma_table_info, ...) makes SQLite code an UPDATE of sqlite_master
 *   that never runs.
 * Clients cannot write either table themselves (SQLITE_DBCONFIG_DEFENSIVE),
 * and a statement that would write anything is refused to a read-only user
 * by sqlite3_stmt_readonly() before it runs. */
static bool authorize_internal(const struct worker *w, int action, const char *table, const char *db)
{
    if (action != SQLITE_UPDATE || table == NULL || db == NULL)
        return false;
    if (strcmp(db, "temp") == 0)
        return w->altering && strcmp(table, "sqlite_temp_master") == 0;
    return strcmp(db, "main") == 0 && strcmp(table, "sqlite_master") == 0;
}

/* Authorizer actions that change the database. */
static bool authorize_writes(int action)
{
    switch (action) {
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_VTABLE:
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_VTABLE:
    case SQLITE_ALTER_TABLE:
    case SQLITE_REINDEX:
    case SQLITE_ANALYZE:
        return true;
    default:
        return false;
    }
}

static int authorize(void *arg, int action, const char *a1, const char *a2, const char *db,
                     const char *trigger)
{
    struct worker *w = arg;

    (void)trigger;
    if (w->internal)
        return SQLITE_OK;
    if (action == SQLITE_ALTER_TABLE)
        w->altering = true;
    if (authorize_internal(w, action, a1, db))
        return SQLITE_OK;
    /* A read-only user's statement may not even be prepared when it
     * writes; sqlite3_stmt_readonly() checks again before each run (a
     * cached statement was authorized for whoever prepared it). */
    if (w->readonly && authorize_writes(action)) {
        w->denied = w->sb->readonly_msg;
        w->denied_code = "NOPERM";
        return SQLITE_DENY;
    }
    switch (action) {
    case SQLITE_ATTACH:
        /* VACUUM attaches a scratch database with an empty name; the
         * ATTACH statement itself never gets here (the router refuses it). */
        if (a1 != NULL && a1[0] == '\0')
            return SQLITE_OK;
        w->denied = "ATTACH and DETACH are not allowed: each bind is one database";
        return SQLITE_DENY;
    case SQLITE_DETACH:
        if (a1 != NULL && strcmp(a1, "vacuum_db") == 0)
            return SQLITE_OK;
        w->denied = "ATTACH and DETACH are not allowed: each bind is one database";
        return SQLITE_DENY;
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
        w->denied = "temporary objects are not allowed: connections are shared between clients";
        return SQLITE_DENY;
    case SQLITE_FUNCTION:
        if ((w->denied = DENIED_IN(function_denied, a2)) != NULL)
            return SQLITE_DENY;
        /* The quick-read connection's SQLITE_LIMIT_LENGTH turns every
         * oversized value into an error, so a worker runs that statement,
         * except that printf() and format() answer NULL instead (SQLite
         * 3.40): statements using them run on workers. */
        if (w->quick && a2 != NULL && (strcasecmp(a2, "printf") == 0 || strcasecmp(a2, "format") == 0))
            return SQLITE_DENY;
        return SQLITE_OK;
    case SQLITE_READ:
        /* a1 is the table: an eponymous virtual table is named after its
         * module, and no other table of one can be created (below). */
        if ((w->denied = DENIED_IN(module_denied, a1)) != NULL)
            return SQLITE_DENY;
        return SQLITE_OK;
    case SQLITE_CREATE_VTABLE:
        if ((w->denied = DENIED_IN(module_denied, a2)) != NULL)
            return SQLITE_DENY;
        return SQLITE_OK;
    case SQLITE_PRAGMA:
        for (size_t i = 0; i < sizeof pragma_allowed / sizeof pragma_allowed[0]; i++) {
            if (strcasecmp(a1, pragma_allowed[i].name) == 0) {
                if (a2 == NULL || pragma_allowed[i].arg)
                    return SQLITE_OK;
                break;
            }
        }
        w->denied = "this PRAGMA is not allowed: it would change the connection or the files";
        return SQLITE_DENY;
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
        /* CREATE TABLE temp.x and writes to the temp schema. */
        if (db != NULL && strcmp(db, "temp") == 0) {
            w->denied = "temporary objects are not allowed: connections are shared between clients";
            return SQLITE_DENY;
        }
        return SQLITE_OK;
    default:
        return SQLITE_OK;
    }
}

/* Progress handler: stop a statement that ran past statement_timeout
 * (SQLite then returns SQLITE_INTERRUPT). */
/* Whether this process may lower a thread's priority and raise it back:
 * tried once on a scratch thread. */
static pthread_once_t renice_once = PTHREAD_ONCE_INIT;
static bool renice_ok;

static void *renice_probe(void *arg)
{
    (void)arg;
    renice_ok = setpriority(PRIO_PROCESS, (id_t)gettid(), LONG_STATEMENT_NICE) == 0 &&
                setpriority(PRIO_PROCESS, (id_t)gettid(), 0) == 0;
    return NULL;
}

static void renice_check(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, renice_probe, NULL) == 0)
        pthread_join(t, NULL);
    if (!renice_ok)
        log_info("long statements keep their worker's priority: the process may not raise a thread's "
                 "priority back (give it RLIMIT_NICE 20, e.g. LimitNICE=+0 in its systemd unit)");
}

/* Progress handler, every 1000 virtual machine steps: lower the priority
 * of a statement that has run LONG_STATEMENT_MS, and stop one that ran
 * past statement_timeout (SQLite then returns SQLITE_INTERRUPT). */
static int on_progress(void *arg)
{
    struct worker *w = arg;
    uint64_t now;

    if (w->started_ns == 0)
        return 0;
    now = uv_hrtime();
    if (!w->lowered && renice_ok && now - w->started_ns > (uint64_t)LONG_STATEMENT_MS * 1000000u)
        w->lowered = setpriority(PRIO_PROCESS, (id_t)w->tid, LONG_STATEMENT_NICE) == 0;
    return w->deadline_ns != 0 && now > w->deadline_ns;
}

/* Progress handler of the quick-read connection: stop a statement that
 * ran past its budget. */
static int on_quick_progress(void *arg)
{
    const struct worker *w = arg;
    return uv_hrtime() > w->deadline_ns;
}

/* Busy handler of the workers' connections: wait for a lock another
 * connection holds, up to busy_timeout. SQLite's own handler sleeps 1, 2,
 * 5, 10 ms and more between tries; the bind's workers hold the write lock
 * for microseconds per statement, so with several writers most of their
 * time went to those naps. This one naps BUSY_NAP_MIN_US at first,
 * doubling up to BUSY_NAP_MAX_US. */
#define BUSY_NAP_MIN_US 20
#define BUSY_NAP_MAX_US 2000

static int on_busy(void *arg, int count)
{
    struct worker *w = arg;
    uint64_t now = uv_hrtime();
    uint64_t limit = (uint64_t)w->sb->bind->conf->busy_timeout_ms * 1000000u;
    unsigned nap = BUSY_NAP_MIN_US;

    if (count == 0)
        w->busy_since_ns = now;
    if (now - w->busy_since_ns >= limit)
        return 0;
    for (int i = 0; i < count && nap < BUSY_NAP_MAX_US; i++)
        nap *= 2;
    if (nap > BUSY_NAP_MAX_US)
        nap = BUSY_NAP_MAX_US;
    usleep(nap);
    return 1;
}

/* ---- Connections ------------------------------------------------------ */

/* Open a connection to the bind's database through the named VFS (NULL:
 * the default). */
static int conn_open(struct sqlite_bind *sb, sqlite3 **out, const char *vfs, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(sb->filename, &db, sb->open_flags, vfs);

    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "bind %s: cannot open %s: %s", sb->bind->conf->name,
                 sb->bind->conf->path ? sb->bind->conf->path : "memory database",
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, sb->bind->conf->busy_timeout_ms);
    /* The in-memory bind's file lives in RAM: map it, so a lookup reads
     * the page where it is instead of copying it with a pread() per page
     * that is not in this connection's cache; and do not sync it (a
     * commit's fdatasync() buys nothing there). */
    if (sb->bind->conf->type == BIND_SQLITE_MEMORY)
        sqlite3_exec(db, "PRAGMA mmap_size = " MEMORY_MMAP_SIZE "; PRAGMA synchronous = OFF", NULL, NULL, NULL);
    sqlite3_exec(db, "PRAGMA journal_size_limit = " WAL_LIMIT_TEXT, NULL, NULL, NULL);
    *out = db;
    return 0;
}

/* Settings of a connection that serves clients. */
static int conn_harden(struct worker *w, char *err, size_t errlen)
{
    const struct bind_conf *bc = w->sb->bind->conf;
    sqlite3 *db = w->db;

    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, (int *)NULL);
    /* One: VACUUM's scratch database; the authorizer refuses real ATTACHes. */
    sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, 1);
    if (bc->foreign_keys && sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "bind %s: foreign_keys: %s", bc->name, sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_set_authorizer(db, authorize, w);
    sqlite3_progress_handler(db, 1000, on_progress, w);
    sqlite3_busy_handler(db, on_busy, w);
    return 0;
}

/* Run the daemon's own SQL on w's connection, past the authorizer. */
static int conn_exec_internal(struct worker *w, const char *sql)
{
    int rc;

    w->internal = true;
    rc = sqlite3_exec(w->db, sql, NULL, NULL, NULL);
    w->internal = false;
    return rc;
}

/* Turn PRAGMA query_only on for a read-only user's statements, off for
 * the others. The authorizer and sqlite3_stmt_readonly() judge the
 * statement a client sent; query_only also stops the writes a read runs
 * on the side: the statements a virtual table prepares for itself, once
 * cached, are not authorized again (FTS4's optimize() in a SELECT merges
 * the index). */
static void set_query_only(struct worker *w, bool on)
{
    if (w->query_only == on)
        return;
    if (conn_exec_internal(w, on ? "PRAGMA query_only = 1" : "PRAGMA query_only = 0") == SQLITE_OK)
        w->query_only = on;
}

/* ---- Prepared statement cache ------------------------------------------ */

/* Bring the connection's copy of the schema up to date: running any
 * statement makes SQLite compare the file's schema cookie with the one it
 * compiled against and re-read the schema when they differ. */
static void schema_refresh(sqlite3 *db)
{
    sqlite3_stmt *stmt = NULL;

    if (sqlite3_prepare_v2(db, "PRAGMA schema_version", -1, &stmt, NULL) == SQLITE_OK)
        (void)sqlite3_step(stmt);
    sqlite3_finalize(stmt);
}

/* A prepared statement for sql[0..len) (h: its hash_bytes()) on w's
 * connection, from the cache or newly prepared (and cached). *rc gets the
 * SQLite result; a NULL return with SQLITE_OK means the text holds no
 * statement. */
static sqlite3_stmt *stmt_get(struct worker *w, const char *sql, size_t len, uint64_t h, int *rc)
{
    size_t cap = w->sb->stmt_cache;
    struct cached_stmt *victim = NULL;
    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;

    for (size_t i = 0; i < w->ncache; i++) {
        struct cached_stmt *c = &w->cache[i];
        if (c->hash == h && c->len == len && memcmp(c->sql, sql, len) == 0) {
            c->used = ++w->tick;
            *rc = SQLITE_OK;
            return c->stmt;
        }
    }
    w->denied = NULL;
    w->denied_code = NULL;
    w->altering = false;
    if (cap > 0 && w->seen[h % STMT_SEEN] != h) {
        w->seen[h % STMT_SEEN] = h;
        cap = 0;   /* first time: run it uncached */
    }
    *rc = sqlite3_prepare_v3(w->db, sql, (int)len, cap ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, &tail);
    if (*rc == SQLITE_ERROR && w->denied == NULL) {
        /* Prepared against an outdated copy of the schema (another
         * connection changed it): SQLite re-reads it only when a statement
         * runs, and some compile errors ("cannot modify v because it is a
         * view" after an INSTEAD OF trigger was added) do not make it
         * check. Try once more with the current schema. */
        schema_refresh(w->db);
        *rc = sqlite3_prepare_v3(w->db, sql, (int)len, cap ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, &tail);
    }
    if (*rc != SQLITE_OK || stmt == NULL)
        return NULL;
    /* The router allows one statement; make sure SQLite agrees. */
    if (tail != NULL && tail < sql + len) {
        sqlite3_stmt *next = NULL;
        if (sqlite3_prepare_v2(w->db, tail, (int)(sql + len - tail), &next, NULL) == SQLITE_OK && next != NULL) {
            sqlite3_finalize(next);
            sqlite3_finalize(stmt);
            *rc = SQLITE_MISUSE;
            return NULL;
        }
    }
    if (cap == 0)
        return stmt;
    if (w->ncache < cap) {
        victim = &w->cache[w->ncache++];
    } else {
        victim = &w->cache[0];
        for (size_t i = 1; i < w->ncache; i++)
            if (w->cache[i].used < victim->used)
                victim = &w->cache[i];
        sqlite3_finalize(victim->stmt);
        free(victim->sql);
    }
    victim->sql = malloc(len);
    if (victim->sql == NULL) {
        /* Run it uncached: mark the slot empty. */
        w->ncache--;
        *victim = w->cache[w->ncache];
        return stmt;
    }
    memcpy(victim->sql, sql, len);
    victim->len = len;
    victim->hash = h;
    victim->stmt = stmt;
    victim->used = ++w->tick;
    return stmt;
}

/* Is stmt owned by the cache (and so must be reset, not finalized)? */
static bool stmt_cached(const struct worker *w, const sqlite3_stmt *stmt)
{
    for (size_t i = 0; i < w->ncache; i++)
        if (w->cache[i].stmt == stmt)
            return true;
    return false;
}

static void stmt_done(struct worker *w, sqlite3_stmt *stmt)
{
    if (stmt_cached(w, stmt)) {
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
    } else {
        sqlite3_finalize(stmt);
    }
}

/* ---- Running jobs ------------------------------------------------------ */

static int bind_params(sqlite3_stmt *stmt, const struct request *req, struct buf *out, size_t mark)
{
    int want = sqlite3_bind_parameter_count(stmt);
    int rc = SQLITE_OK;

    if ((size_t)want != req->nparams) {
        char msg[120];
        snprintf(msg, sizeof msg, "the statement has %d parameter%s, the request sent %zu", want,
                 want == 1 ? "" : "s", req->nparams);
        reply_error_at(out, mark, "PARAMS", msg);
        return -1;
    }
    for (size_t i = 0; i < req->nparams && rc == SQLITE_OK; i++) {
        const struct value *v = &req->params[i];
        int idx = (int)i + 1;
        switch (v->type) {
        case VALUE_NULL: rc = sqlite3_bind_null(stmt, idx); break;
        case VALUE_INT:  rc = sqlite3_bind_int64(stmt, idx, v->i); break;
        case VALUE_REAL: rc = sqlite3_bind_double(stmt, idx, v->r); break;
        case VALUE_TEXT: rc = sqlite3_bind_text64(stmt, idx, v->p, v->len, SQLITE_STATIC, SQLITE_UTF8); break;
        case VALUE_BLOB: rc = sqlite3_bind_blob64(stmt, idx, v->p, v->len, SQLITE_STATIC); break;
        }
    }
    if (rc != SQLITE_OK) {
        reply_error_at(out, mark, sqlite_code(rc), sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}

static int put_header(struct buf *out, sqlite3_stmt *stmt, int ncol)
{
    int rc = buf_putc(out, '*');
    for (int i = 0; rc == 0 && i < ncol; i++) {
        const char *name = sqlite3_column_name(stmt, i);
        const char *type = sqlite3_column_decltype(stmt, i);
        if (i > 0)
            rc |= buf_putc(out, '\t');
        rc |= codec_put_text(out, name ? name : "", name ? strlen(name) : 0);
        rc |= buf_putc(out, '\t');
        rc |= codec_put_text(out, type ? type : "", type ? strlen(type) : 0);
    }
    return rc | buf_putc(out, '\n');
}

static int put_row(struct buf *out, sqlite3_stmt *stmt, int ncol)
{
    int rc = buf_putc(out, '=');
    for (int i = 0; rc == 0 && i < ncol; i++) {
        if (i > 0)
            rc |= buf_putc(out, '\t');
        switch (sqlite3_column_type(stmt, i)) {
        case SQLITE_INTEGER:
            rc |= codec_put_int(out, sqlite3_column_int64(stmt, i));
            break;
        case SQLITE_FLOAT:
            rc |= codec_put_real(out, sqlite3_column_double(stmt, i));
            break;
        case SQLITE_TEXT: {
            const char *t = (const char *)sqlite3_column_text(stmt, i);
            rc |= codec_put_text(out, t, (size_t)sqlite3_column_bytes(stmt, i));
            break;
        }
        case SQLITE_BLOB: {
            const void *p = sqlite3_column_blob(stmt, i);
            rc |= codec_put_blob(out, p, (size_t)sqlite3_column_bytes(stmt, i));
            break;
        }
        default:
            rc |= codec_put_null(out);
            break;
        }
    }
    return rc | buf_putc(out, '\n');
}

/* The status line after a result's rows: +OK rows=N. */
static int put_rows_status(struct buf *out, uint64_t rows)
{
    return buf_append(out, "+OK rows=", 9) | codec_put_int(out, (int64_t)rows) | buf_putc(out, '\n');
}

/* The status line of a statement without rows: +OK changes=N, and
 * last_id=ID after an INSERT that added rows. */
static int put_changes_status(struct buf *out, sqlite3_int64 changes, bool inserted, sqlite3_int64 last_id)
{
    int rc = buf_append(out, "+OK changes=", 12) | codec_put_int(out, changes);
    if (inserted)
        rc |= buf_append(out, " last_id=", 9) | codec_put_int(out, last_id);
    return rc | buf_putc(out, '\n');
}

/* The connection a job runs on, for sqlite_interrupt(). */
static void set_running(struct job *job, sqlite3 *db)
{
    pthread_mutex_lock(&job->lock);
    job->running = db;
    pthread_mutex_unlock(&job->lock);
}

/* Step stmt to the end, streaming the header and rows into out. Returns the
 * final SQLite code (SQLITE_INTERRUPT when the client went away); *rows
 * counts the rows. job NULL: a quick read on the loop thread, stopped with
 * SQLITE_TOOBIG when its answer grows past QUICK_MAX_OUTPUT. */
static int stream_rows(struct worker *w, struct job *job, sqlite3_stmt *stmt, struct buf *out,
                       uint64_t *rows)
{
    bool first = true;
    int ncol = 0;
    int rc;

    for (;;) {
        rc = sqlite3_step(stmt);
        if (first) {
            /* Only now are the columns known for sure: the first step
             * re-prepares a statement whose schema changed (SELECT *). */
            first = false;
            ncol = sqlite3_column_count(stmt);
            if ((rc == SQLITE_ROW || rc == SQLITE_DONE) && ncol > 0 && put_header(out, stmt, ncol) != 0) {
                rc = SQLITE_NOMEM;
                break;
            }
        }
        if (rc != SQLITE_ROW)
            break;
        if (ncol == 0)
            continue;
        if (put_row(out, stmt, ncol) != 0) {
            rc = SQLITE_NOMEM;
            break;
        }
        (*rows)++;
        if (job == NULL) {
            if (out->len - w->mark > QUICK_MAX_OUTPUT) {
                rc = SQLITE_TOOBIG;
                break;
            }
        } else if (w->grouping && out->len >= CHUNK_BYTES) {
            /* Nothing may be posted before the group commits. */
            w->group_overflow = true;
            rc = SQLITE_TOOBIG;
            break;
        } else if (out->len >= CHUNK_BYTES) {
            if (job_post_chunk(job, out) != 0 || job_wait_credit(job) != 0) {
                rc = SQLITE_INTERRUPT;
                break;
            }
            w->mark = 0;   /* what came before is on its way */
        }
    }
    return rc;
}

static void reply_readonly(struct worker *w, struct buf *out)
{
    reply_error_at(out, w->mark, "NOPERM", w->sb->readonly_msg);
}

/* Whether a held BEGIN only reads (BEGIN IMMEDIATE and EXCLUSIVE take the
 * write lock). */
static bool begin_readonly(sqlite3 *db, const char *begin_sql)
{
    sqlite3_stmt *stmt = NULL;
    bool ro = sqlite3_prepare_v2(db, begin_sql, -1, &stmt, NULL) == SQLITE_OK && stmt != NULL &&
              sqlite3_stmt_readonly(stmt);
    sqlite3_finalize(stmt);
    return ro;
}

/* Run one statement of the job and append its whole response to out.
 * Returns false when the response is an -ERR. */
static bool run_stmt(struct worker *w, struct job *job, const struct request *req, enum stmt_kind kind,
                     const char *begin_sql, struct buf *out)
{
    sqlite3 *db = w->db;
    sqlite3_int64 before = sqlite3_total_changes64(db);
    uint64_t rows = 0;
    sqlite3_stmt *stmt;
    bool timed_out;
    int timeout_ms;
    int rc;

    w->mark = out->len;
    if (begin_sql != NULL) {
        if (job->readonly && !begin_readonly(db, begin_sql)) {
            reply_readonly(w, out);
            return false;
        }
        rc = sqlite3_exec(db, begin_sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            reply_sqlite_error(w, out, rc);
            return false;
        }
    }
    stmt = stmt_get(w, req->text, req->len, hash_bytes(req->text, req->len), &rc);
    if (stmt == NULL) {
        if (rc == SQLITE_MISUSE)
            reply_error_at(out, w->mark, "MULTI", "one statement per request");
        else if (rc == SQLITE_OK && buf_puts(out, "+OK changes=0\n") != 0)
            reply_error_at(out, w->mark, "NOMEM", "out of memory");
        else if (rc != SQLITE_OK)
            reply_sqlite_error(w, out, rc);
        return rc == SQLITE_OK;
    }
    /* SQLite itself says whether the prepared program writes: a write
     * hidden in a CTE, or done by a trigger, makes it not read-only. */
    if (job->readonly && !sqlite3_stmt_readonly(stmt)) {
        reply_readonly(w, out);
        stmt_done(w, stmt);
        return false;
    }
    if (bind_params(stmt, req, out, w->mark) != 0) {
        stmt_done(w, stmt);
        return false;
    }
    w->denied = NULL;
    w->denied_code = NULL;
    w->altering = false;
    timeout_ms = w->sb->bind->conf->statement_timeout_ms;
    w->started_ns = uv_hrtime();
    w->deadline_ns = timeout_ms > 0 ? w->started_ns + (uint64_t)timeout_ms * 1000000u : 0;
    rc = stream_rows(w, job, stmt, out, &rows);
    timed_out = w->deadline_ns != 0 && uv_hrtime() > w->deadline_ns;
    w->deadline_ns = 0;
    w->started_ns = 0;
    if (w->lowered)
        w->lowered = setpriority(PRIO_PROCESS, (id_t)w->tid, 0) != 0;
    job->rows += rows;
    if (rc == SQLITE_DONE) {
        /* sqlite3_changes64() counts the statement's own rows (not a
         * trigger's) but keeps the previous statement's count after DDL;
         * the total tells whether this statement changed anything. */
        sqlite3_int64 changes = sqlite3_total_changes64(db) != before ? sqlite3_changes64(db) : 0;
        if (sqlite3_column_count(stmt) > 0)
            rc = put_rows_status(out, rows);
        else
            rc = put_changes_status(out, changes, kind == STMT_INSERT && changes > 0, sqlite3_last_insert_rowid(db));
        if (rc != 0)
            reply_error_at(out, w->mark, "NOMEM", "out of memory writing the status line");
        stmt_done(w, stmt);
        return rc == 0;
    }
    /* Rows already posted stay sent; the response ends with -ERR. */
    if ((rc & 0xff) == SQLITE_INTERRUPT && atomic_load(&job->cancelled)) {
        reply_error_at(out, w->mark, "INTERRUPTED", "the client went away");
    } else if ((rc & 0xff) == SQLITE_INTERRUPT && timed_out) {
        char msg[120];
        snprintf(msg, sizeof msg, "statement exceeded statement_timeout (%d ms) and was interrupted", timeout_ms);
        reply_error_at(out, w->mark, "TIMEOUT", msg);
    } else {
        reply_sqlite_error(w, out, rc);
    }
    stmt_done(w, stmt);
    return false;
}

/* The job's statement, then the ones batched after it, in order; each
 * gets its own response. A client that went away stops the batch. The
 * answers of a long batch go out in two parts, so that a pipelining
 * client sends its next statements (and the loop reads and routes them)
 * while the second half runs. Before any answer to a statement that may
 * have written is posted, the bind's write count moves on: a quick read
 * sent after that answer arrived must take a fresh snapshot. */
static void run_exec(struct worker *w, struct job *job, struct buf *out)
{
    size_t half = job->nmore >= BATCH_SPLIT ? job->nmore / 2 : SIZE_MAX;
    bool wrote = job->kind != STMT_SELECT;

    w->readonly = job->readonly;
    set_query_only(w, job->readonly);
    conn_max_value(w, server_cfg_of(job->cfgref)->max_value, INT_MAX);
    set_running(job, w->db);
    job->failed = !run_stmt(w, job, &job->req, job->kind, job->begin_sql, out);
    job->errors = job->failed;
    for (size_t i = 0; i < job->nmore && !atomic_load(&job->cancelled); i++) {
        if (!run_stmt(w, job, &job->more[i].req, job->more[i].kind, NULL, out))
            job->errors++;
        wrote |= job->more[i].kind != STMT_SELECT;
        if (out->len >= CHUNK_BYTES || i == half) {
            if (wrote)
                atomic_fetch_add_explicit(&w->sb->writes, 1, memory_order_release);
            wrote = false;
            if (job_post_chunk(job, out) != 0 || job_wait_credit(job) != 0)
                break;
        }
    }
    set_running(job, NULL);
    w->readonly = false;
    if (wrote && !w->grouping)
        atomic_fetch_add_explicit(&w->sb->writes, 1, memory_order_release);
}

/* .tables: one row per table or view, "=name\ttype\tbind\trouted_to". */
static void run_tables(struct worker *w, struct job *job, struct buf *out)
{
    static const char sql[] =
        "SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name";
    const struct config *cfg = server_cfg_of(job->cfgref);
    const char *bind_name = w->sb->bind->conf->name;
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v2(w->db, sql, -1, &stmt, NULL);

    if (rc != SQLITE_OK) {
        reply_sqlite_error(w, out, rc);
        job->failed = true;
        return;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(stmt, 0);
        const char *type = (const char *)sqlite3_column_text(stmt, 1);
        size_t n = (size_t)sqlite3_column_bytes(stmt, 0);
        char *lower = malloc(n + 1);
        int prc;

        if (lower == NULL || name == NULL || type == NULL) {
            free(lower);
            rc = SQLITE_NOMEM;
            break;
        }
        for (size_t i = 0; i < n; i++)
            lower[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] + 32) : name[i];
        lower[n] = '\0';
        prc = buf_putc(out, '=');
        prc |= codec_put_text(out, name, n);
        prc |= buf_printf(out, "\t%s\t", type);
        prc |= codec_put_text(out, bind_name, strlen(bind_name));
        prc |= buf_putc(out, '\t');
        prc |= buf_puts(out, cfg->binds[route_table_bind(cfg, "", lower)].name);
        prc |= buf_putc(out, '\n');
        free(lower);
        if (prc != 0) {
            rc = SQLITE_NOMEM;
            break;
        }
        job->rows++;
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) {
        reply_sqlite_error(w, out, rc);
        job->failed = true;
    }
}

/* .migrations: the bind's migration files merged with its version table. */
static void run_migrations(struct worker *w, struct job *job, struct buf *out)
{
    const struct config *cfg = server_cfg_of(job->cfgref);
    const char *bind_name = w->sb->bind->conf->name;
    struct migration_rows rows = {0};
    struct migration_set set;
    char err[1024];

    if (cfg->migrations == NULL)
        return;
    if (migrate_scan(cfg->migrations, bind_name, &set, err, sizeof err) != 0) {
        reply_error(out, "MIGRATION", err);
        job->failed = true;
        return;
    }
    if (migrate_sqlite_rows(w->db, &rows, err, sizeof err) != 0) {
        reply_error(out, "SQL", err);
        job->failed = true;
    } else if (migrate_put_status(bind_name, &set, &rows, out, &job->rows) != 0) {
        reply_error(out, "NOMEM", "out of memory");
        job->failed = true;
    }
    migrate_rows_free(&rows);
    migrate_set_free(&set);
}

static struct job *queue_pop(struct job **head, struct job ***tail)
{
    struct job *job = *head;
    *head = job->next;
    if (*head == NULL)
        *tail = head;
    job->next = NULL;
    return job;
}

/* Wake one free sleeping worker for a job of the shared queue, the writer
 * last (it is kept for writes); with none, the next worker to finish its
 * job takes it. Bind's lock held. */
static void wake_free_worker(struct sqlite_bind *sb)
{
    for (int k = 1; k <= sb->nworkers; k++) {
        struct worker *w = &sb->workers[k % sb->nworkers];
        if (w->waiting && w->pinned == 0) {
            pthread_cond_signal(&w->wake);
            return;
        }
    }
}

/* Whether a job may write: it holds a statement other than a SELECT. */
static bool job_writes(const struct job *job)
{
    if (job->type != JOB_EXEC)
        return false;
    for (size_t i = 0; i < job->nmore; i++)
        if (job->more[i].kind != STMT_SELECT)
            return true;
    return job->kind != STMT_SELECT;
}

/* w's connection is inside its pinned session's transaction now: writes of
 * other sessions queued for it (see sqlite_submit) go back to the front of
 * the shared queue, and a free worker takes them. Bind's lock held. */
static void writer_requeue(struct sqlite_bind *sb, struct worker *w)
{
    struct job *mine = NULL, **mine_tail = &mine, *others = NULL, **others_tail = &others;

    while (w->head != NULL) {
        struct job *job = queue_pop(&w->head, &w->tail);
        if (job->owner == w->pinned) {
            *mine_tail = job;
            mine_tail = &job->next;
        } else {
            *others_tail = job;
            others_tail = &job->next;
        }
    }
    w->head = mine;
    w->tail = mine != NULL ? mine_tail : &w->head;
    if (others == NULL)
        return;
    *others_tail = sb->head;
    if (sb->head == NULL)
        sb->tail = others_tail;
    sb->head = others;
    wake_free_worker(sb);
}

static void run_job(struct worker *w, struct job *job)
{
    struct buf out = BUF_INIT;

    if (atomic_load(&job->cancelled) && job->type == JOB_EXEC) {
        job->failed = true;
    } else {
        switch (job->type) {
        case JOB_EXEC:
            run_exec(w, job, &out);
            break;
        case JOB_TABLES:
            run_tables(w, job, &out);
            break;
        case JOB_MIGRATIONS:
            run_migrations(w, job, &out);
            break;
        case JOB_SNAPSHOT:     /* the snapshot thread's (sqlite_submit) */
        case JOB_RELEASE:
            break;
        }
    }
    /* A client that is gone, or a release, leaves no transaction behind. */
    if ((job->type == JOB_RELEASE || atomic_load(&job->cancelled)) && !sqlite3_get_autocommit(w->db))
        sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    job->in_txn = !sqlite3_get_autocommit(w->db);

    pthread_mutex_lock(&w->sb->lock);
    w->pinned = job->in_txn ? job->owner : 0;
    if (w->pinned != 0 && w->head != NULL)
        writer_requeue(w->sb, w);
    pthread_mutex_unlock(&w->sb->lock);
    job_post_done(job, &out);
}

/* ---- Group commit ------------------------------------------------------ */

/* Whether a job may share a transaction with other sessions' jobs: one
 * INSERT, UPDATE or DELETE outside any transaction. */
static bool job_groupable(const struct job *job)
{
    return job->type == JOB_EXEC && job->owner != 0 && job->begin_sql == NULL && job->nmore == 0 &&
           !job->readonly && (job->kind == STMT_INSERT || job->kind == STMT_UPDATE || job->kind == STMT_DELETE);
}

/* Whether an error (the connection's last) undid only its statement and
 * leaves the transaction sound: SQLite says to roll back after the others
 * (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM, SQLITE_BUSY, SQLITE_INTERRUPT,
 * ...). SQLITE_OK: the error was the daemon's own (parameters). */
static bool statement_error(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ERROR:
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_AUTH:
    case SQLITE_TOOBIG:
        return true;
    default:
        return false;
    }
}

/* Run the writes queued for the writer (see sqlite_submit) in one
 * transaction: one commit, with its locks and WAL frames, for the group
 * instead of one each. Each statement keeps its own answer, errors
 * included (a failed statement is rolled back alone, as in autocommit),
 * and the answers are posted only once the group has committed. When the
 * transaction itself is lost (a statement's ON CONFLICT ROLLBACK, a
 * statement_timeout, a failed COMMIT) or an answer is too large to hold,
 * everything is rolled back and each job runs alone, as it would have
 * without grouping. */
static void run_group(struct worker *w, struct job **jobs, size_t n)
{
    struct buf outs[GROUP_MAX];
    bool ok;
    int rc;

    for (size_t i = 0; i < n; i++)
        outs[i] = (struct buf)BUF_INIT;
    set_query_only(w, false);
    rc = sqlite3_exec(w->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if ((rc & 0xff) == SQLITE_BUSY) {
        /* Another client's transaction kept the write lock for all of
         * busy_timeout: each of these would have waited as long and got
         * the same answer. */
        for (size_t i = 0; i < n; i++) {
            reply_error(&outs[i], sqlite_code(rc), sqlite3_errmsg(w->db));
            jobs[i]->failed = true;
            job_post_done(jobs[i], &outs[i]);
        }
        return;
    }
    w->grouping = true;
    w->group_overflow = false;
    ok = rc == SQLITE_OK;
    for (size_t i = 0; ok && i < n; i++) {
        if (atomic_load(&jobs[i]->cancelled)) {
            jobs[i]->failed = true;
            continue;
        }
        run_exec(w, jobs[i], &outs[i]);
        ok = !w->group_overflow && !sqlite3_get_autocommit(w->db) &&
             (!jobs[i]->failed || statement_error(sqlite3_errcode(w->db)));
    }
    ok = ok && sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    w->grouping = false;
    if (!ok) {
        if (!sqlite3_get_autocommit(w->db))
            sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
        for (size_t i = 0; i < n; i++) {
            buf_free(&outs[i]);
            jobs[i]->failed = false;
            jobs[i]->errors = 0;
            jobs[i]->rows = 0;
            run_job(w, jobs[i]);
        }
        return;
    }
    atomic_fetch_add_explicit(&w->sb->writes, 1, memory_order_release);
    for (size_t i = 0; i < n; i++) {
        jobs[i]->in_txn = false;
        job_post_done(jobs[i], &outs[i]);
    }
}

/* Whether the writer should leave the shared queue's next job to another
 * worker: one that sleeps free (and was woken for it, wake_free_worker),
 * so the writer stays ready for writes. Bind's lock held. */
static bool leave_to_others(const struct sqlite_bind *sb, const struct worker *w)
{
    if (w != &sb->workers[0])
        return false;
    for (int i = 1; i < sb->nworkers; i++)
        if (sb->workers[i].waiting && sb->workers[i].pinned == 0)
            return true;
    return false;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct sqlite_bind *sb = w->sb;

    w->tid = gettid();
    pthread_mutex_lock(&sb->lock);
    for (;;) {
        struct job *job = NULL;
        if (w->head != NULL)
            job = queue_pop(&w->head, &w->tail);
        else if (w->pinned == 0 && sb->head != NULL && !leave_to_others(sb, w))
            job = queue_pop(&sb->head, &sb->tail);
        else if (sb->stopping)
            break;
        if (job == NULL) {
            w->waiting = true;
            pthread_cond_wait(&w->wake, &sb->lock);
            w->waiting = false;
            continue;
        }
        w->busy = true;
        w->writing = job_writes(job);
        if (w->pinned == 0 && w->head != NULL && job_groupable(job) && job_groupable(w->head)) {
            struct job *group[GROUP_MAX];
            size_t n = 0;
            group[n++] = job;
            while (n < GROUP_MAX && w->head != NULL && job_groupable(w->head))
                group[n++] = queue_pop(&w->head, &w->tail);
            pthread_mutex_unlock(&sb->lock);
            run_group(w, group, n);
        } else {
            pthread_mutex_unlock(&sb->lock);
            run_job(w, job);
        }
        pthread_mutex_lock(&sb->lock);
        w->busy = false;
        w->writing = false;
    }
    pthread_mutex_unlock(&sb->lock);
    return NULL;
}

/* ---- Snapshots --------------------------------------------------------- */

/* Pages copied per backup step while clients work, and the pause between
 * steps, so a large save leaves the disk to others now and then. */
#define SNAPSHOT_STEP_PAGES 256
#define SNAPSHOT_PAUSE_MS 1

/* Save the snapshot for one JOB_SNAPSHOT (snapshot thread). Its response
 * is one .save row, "=bind\tfile\tbytes\tms", or -ERR IOERR. */
static void run_snapshot(struct sqlite_bind *sb, struct job *job)
{
    const struct bind_conf *bc = sb->bind->conf;
    struct snapshot_info info;
    struct buf out = BUF_INIT;
    char err[1024];

    if (snapshot_save(sb->snap_db, bc->snapshot, SNAPSHOT_STEP_PAGES, SNAPSHOT_PAUSE_MS, &info, err,
                      sizeof err) == 0) {
        pthread_mutex_lock(&sb->lock);
        sb->snap_at = info.written_at;
        sb->snap_bytes = info.bytes;
        pthread_mutex_unlock(&sb->lock);
        atomic_store(&sb->snap_failed, false);
        log_info("bind %s: snapshot %s written: %lld bytes in %.0f ms", bc->name, bc->snapshot,
                 (long long)info.bytes, info.ms);
        if (buf_putc(&out, '=') != 0 || codec_put_text(&out, bc->name, strlen(bc->name)) != 0 ||
            buf_putc(&out, '\t') != 0 || codec_put_text(&out, bc->snapshot, strlen(bc->snapshot)) != 0 ||
            buf_printf(&out, "\t%lld\t%.0f\n", (long long)info.bytes, info.ms) != 0) {
            reply_error(&out, "NOMEM", "out of memory");
            job->failed = true;
        }
        job->rows = 1;
    } else {
        atomic_store(&sb->snap_failed, true);
        log_warn("bind %s: %s", bc->name, err);
        reply_error(&out, "IOERR", err);
        job->failed = true;
    }
    atomic_fetch_sub(&sb->snap_inflight, 1);
    job_post_done(job, &out);
}

static void *snapshot_main(void *arg)
{
    struct sqlite_bind *sb = arg;

    pthread_mutex_lock(&sb->lock);
    for (;;) {
        struct job *job = NULL;
        if (sb->snap_head != NULL)
            job = queue_pop(&sb->snap_head, &sb->snap_tail);
        else if (sb->stopping)
            break;
        if (job == NULL) {
            pthread_cond_wait(&sb->cond, &sb->lock);
            continue;
        }
        pthread_mutex_unlock(&sb->lock);
        run_snapshot(sb, job);
        pthread_mutex_lock(&sb->lock);
    }
    pthread_mutex_unlock(&sb->lock);
    return NULL;
}

static void sqlite_submit(struct bind *b, struct job *job);

/* Every snapshot_interval seconds (loop thread): save the snapshot when
 * something was committed since the last timed save (or it failed), and
 * no save is queued or running. */
static void on_snapshot_tick(uv_timer_t *t)
{
    struct sqlite_bind *sb = t->data;
    sqlite3_stmt *stmt = NULL;
    long long version = -1;
    uint64_t writes = atomic_load_explicit(&sb->writes, memory_order_acquire);
    struct job *job;

    if (atomic_load(&sb->snap_inflight) > 0)
        return;
    /* The anchor sees data_version change when another connection commits. */
    if (sqlite3_prepare_v2(sb->anchor, "PRAGMA data_version", -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        version = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    /* data_version also moves when the checkpoint thread restarts or
     * empties the log: a change without a write job since the last save
     * (the first one covers what the start applied) is no new data. */
    if (version >= 0 && !atomic_load(&sb->snap_failed) &&
        (version == sb->snap_version || (sb->snap_version >= 0 && writes == sb->snap_writes)))
        return;
    job = job_new(JOB_SNAPSHOT, sb->bind, NULL, 0);
    if (job == NULL)
        return;
    sb->snap_version = version;
    sb->snap_writes = writes;
    sqlite_submit(sb->bind, job);
}

/* ---- Checkpoints -------------------------------------------------------- */

/* One look at the log (checkpoint thread): measure it, and checkpoint when
 * it is past WAL_LIMIT_BYTES or the bind has been idle. *seen and
 * *quiet_since: the write count at the last look and since when it has
 * not moved (uv_hrtime()). */
static void wal_check(struct sqlite_bind *sb, const char *wal, uint64_t *seen, uint64_t *quiet_since)
{
    uint64_t writes = atomic_load_explicit(&sb->writes, memory_order_acquire);
    uint64_t now = uv_hrtime();
    struct stat st;
    int64_t size = stat(wal, &st) == 0 ? (int64_t)st.st_size : 0;
    int mode = -1;

    if (writes != *seen) {
        *seen = writes;
        *quiet_since = now;
    }
    if (size > WAL_LIMIT_BYTES)
        mode = SQLITE_CHECKPOINT_RESTART;
    else if (size > 0 && now - *quiet_since >= (uint64_t)WAL_IDLE_MS * 1000000u)
        mode = SQLITE_CHECKPOINT_TRUNCATE;
    if (mode >= 0) {
        int frames = 0, copied = 0;
        int rc = sqlite3_wal_checkpoint_v2(sb->wal_db, NULL, mode, &frames, &copied);
        if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY)
            log_warn("bind %s: checkpoint: %s", sb->bind->conf->name, sqlite3_errmsg(sb->wal_db));
        log_debug("bind %s: %s checkpoint of a %lld-byte log: %s, %d of %d frames copied",
                  sb->bind->conf->name, mode == SQLITE_CHECKPOINT_RESTART ? "restart" : "truncate",
                  (long long)size, sqlite3_errstr(rc), copied, frames);
        size = stat(wal, &st) == 0 ? (int64_t)st.st_size : 0;
    }
    atomic_store(&sb->wal_bytes, size);
}

static void *wal_main(void *arg)
{
    struct sqlite_bind *sb = arg;
    const char *wal = sqlite3_filename_wal(sqlite3_db_filename(sb->wal_db, "main"));
    uint64_t seen = atomic_load(&sb->writes), quiet_since = uv_hrtime();

    pthread_mutex_lock(&sb->lock);
    while (!sb->stopping) {
        struct timespec until;
        pthread_mutex_unlock(&sb->lock);
        wal_check(sb, wal, &seen, &quiet_since);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)WAL_CHECK_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_mutex_lock(&sb->lock);
        /* sb->cond is shared with the snapshot thread: an early wake-up
         * only means an early look. */
        if (!sb->stopping)
            pthread_cond_timedwait(&sb->cond, &sb->lock, &until);
    }
    pthread_mutex_unlock(&sb->lock);
    return NULL;
}

/* Open the checkpoint connection and start its thread. */
static int wal_start(struct sqlite_bind *sb, char *err, size_t errlen)
{
    if (conn_open(sb, &sb->wal_db, NULL, err, errlen) != 0)
        return -1;
    sqlite3_busy_timeout(sb->wal_db, WAL_WAIT_MS);
    schema_refresh(sb->wal_db); /* reads the file: a checkpoint needs to know it is in WAL mode */
    if (pthread_create(&sb->wal_thread, NULL, wal_main, sb) != 0) {
        snprintf(err, errlen, "bind %s: cannot start the checkpoint thread", sb->bind->conf->name);
        return -1;
    }
    sb->wal_started = true;
    return 0;
}

/* ---- backend_ops ------------------------------------------------------- */

/* Where in-memory binds live: a RAM file system when there is one. */
static const char *memory_root(void)
{
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK | X_OK) == 0)
        return "/dev/shm";
    return P_tmpdir;
}

/* Remove folders of in-memory binds whose daemon is gone. */
static void memory_reap(const char *root)
{
    DIR *d = opendir(root);
    struct dirent *e;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        char path[4096], file[4096 + 256];
        long pid;
        char *end;
        DIR *sub;
        struct dirent *f;

        if (strncmp(e->d_name, "sqlmux-", 7) != 0)
            continue;
        pid = strtol(e->d_name + 7, &end, 10);
        if (end == e->d_name + 7 || *end != '-' || pid <= 0)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;   /* alive, or not ours to judge */
        snprintf(path, sizeof path, "%s/%s", root, e->d_name);
        sub = opendir(path);
        if (sub == NULL)
            continue;
        while ((f = readdir(sub)) != NULL) {
            if (f->d_name[0] == '.')
                continue;
            snprintf(file, sizeof file, "%s/%s", path, f->d_name);
            unlink(file);
        }
        closedir(sub);
        if (rmdir(path) == 0)
            log_info("removed %s, left by a daemon that is gone", path);
    }
    closedir(d);
}

/* Make the private folder and file name of an in-memory bind. */
static int memory_create(struct sqlite_bind *sb, char *err, size_t errlen)
{
    const char *root = memory_root();
    const char *name = sb->bind->conf->name;
    char tmpl[4096];
    size_t n;

    memory_reap(root);
    snprintf(tmpl, sizeof tmpl, "%s/sqlmux-%ld-XXXXXX", root, (long)getpid());
    if (mkdtemp(tmpl) == NULL) {
        snprintf(err, errlen, "bind %s: cannot create a folder in %s: %s", name, root, strerror(errno));
        return -1;
    }
    sb->memdir = strdup(tmpl);
    n = strlen(tmpl) + strlen(name) + 8;
    sb->filename = malloc(n);
    if (sb->memdir == NULL || sb->filename == NULL) {
        snprintf(err, errlen, "bind %s: out of memory", name);
        return -1;
    }
    snprintf(sb->filename, n, "%s/%s.db", tmpl, name);
    return 0;
}

static void sqlite_close(struct bind *b);
static int quick_open(struct sqlite_bind *sb, char *err, size_t errlen);
static void on_wait_check(uv_timer_t *t);

/* Start the snapshot thread (with its own connection) and the
 * snapshot_interval timer of an in-memory bind with a snapshot file. */
static int snapshot_start(struct sqlite_bind *sb, char *err, size_t errlen)
{
    const struct bind_conf *bc = sb->bind->conf;

    if (conn_open(sb, &sb->snap_db, NULL, err, errlen) != 0)
        return -1;
    if (pthread_create(&sb->snap_thread, NULL, snapshot_main, sb) != 0) {
        snprintf(err, errlen, "bind %s: cannot start the snapshot thread", bc->name);
        return -1;
    }
    sb->snap_started = true;
    if (bc->snapshot_interval_s > 0) {
        uint64_t ms = (uint64_t)bc->snapshot_interval_s * 1000;
        sb->snap_timer = malloc(sizeof *sb->snap_timer);
        if (sb->snap_timer == NULL) {
            snprintf(err, errlen, "bind %s: out of memory", bc->name);
            return -1;
        }
        uv_timer_init(sb->bind->srv->loop, sb->snap_timer);
        sb->snap_timer->data = sb;
        uv_update_time(sb->bind->srv->loop);   /* after a slow snapshot load or schema */
        uv_timer_start(sb->snap_timer, on_snapshot_tick, ms, ms);
    }
    return 0;
}

static int sqlite_open(struct bind *b, char *err, size_t errlen)
{
    const struct bind_conf *bc = b->conf;
    struct sqlite_bind *sb = calloc(1, sizeof *sb);
    sqlite3 *first = NULL;

    pthread_once(&renice_once, renice_check);
    if (sb == NULL)
        goto nomem;
    b->impl = sb;
    sb->bind = b;
    sb->tail = &sb->head;
    sb->snap_tail = &sb->snap_head;
    sb->snap_version = -1;
    atomic_init(&sb->snap_inflight, 0);
    atomic_init(&sb->snap_failed, false);
    atomic_init(&sb->writes, 0);
    atomic_init(&sb->wal_bytes, -1);
    pthread_mutex_init(&sb->lock, NULL);
    pthread_cond_init(&sb->cond, NULL);
    sb->open_flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (bc->type == BIND_SQLITE_MEMORY) {
        if (memory_create(sb, err, errlen) != 0)
            goto fail;
    } else {
        sb->filename = strdup(bc->path);
        if (sb->filename == NULL)
            goto nomem;
        if (fs_mkdir_parents(bc->path) != 0) {
            snprintf(err, errlen, "bind %s: cannot create the folder of %s: %s", bc->name, bc->path,
                     strerror(errno));
            goto fail;
        }
    }

    /* The first connection sets the database up; for the in-memory bind it
     * stays open as the anchor. A snapshot is loaded first, into the empty
     * database; the schema then finds tables and does not run again. */
    if (conn_open(sb, &first, NULL, err, errlen) != 0)
        goto fail;
    if (bc->type == BIND_SQLITE_MEMORY && bc->snapshot != NULL) {
        struct snapshot_info info;
        int loaded = snapshot_load(first, bc->name, bc->snapshot, bc->snapshot_on_damage, &info, err, errlen);
        if (loaded < 0)
            goto fail;
        if (loaded > 0) {
            char when[32];
            sb->snap_at = info.written_at;
            sb->snap_bytes = info.bytes;
            snapshot_format_time(info.written_at, when);
            log_info("bind %s: snapshot %s loaded (%lld bytes, written %s) in %.0f ms", bc->name, bc->snapshot,
                     (long long)info.bytes, when, info.ms);
        }
    }
    {
        bool applied = false;
        if (migrate_sqlite_setup(first, bc->name, sb->filename, bc->schema, bc->busy_timeout_ms, &applied, err,
                                 errlen) != 0)
            goto fail;
        if (applied)
            log_info("bind %s: schema %s applied", bc->name, bc->schema);
    }
    /* The in-memory bind is migrated at every start, a file bind when
     * migrate_on_start asks for it. */
    if ((bc->type == BIND_SQLITE_MEMORY || server_cfg_of(b->cfgref)->migrate_on_start) &&
        migrate_startup_sqlite(server_cfg_of(b->cfgref), bc, first, err, errlen) != 0)
        goto fail;
    if (bc->type == BIND_SQLITE_MEMORY)
        sb->anchor = first;
    else
        sqlite3_close(first);
    first = NULL;

    sb->workers = calloc((size_t)bc->pool_size, sizeof *sb->workers);
    if (sb->workers == NULL)
        goto nomem;
    sb->nworkers = bc->pool_size;
    for (int i = 0; i < sb->nworkers; i++)
        pthread_cond_init(&sb->workers[i].wake, NULL);
    sb->stmt_cache = (size_t)server_cfg_of(b->cfgref)->stmt_cache;
    snprintf(sb->readonly_msg, sizeof sb->readonly_msg, "read-only access to bind %s: this statement would write",
             b->conf->name);
    for (int i = 0; i < sb->nworkers; i++) {
        struct worker *w = &sb->workers[i];
        w->sb = sb;
        w->tail = &w->head;
        w->cache = calloc(sb->stmt_cache + 1, sizeof *w->cache);
        if (w->cache == NULL)
            goto nomem;
        if (conn_open(sb, &w->db, NULL, err, errlen) != 0 || conn_harden(w, err, errlen) != 0)
            goto fail;
        schema_refresh(w->db);   /* opens the WAL now: no file is opened while serving */
    }
    for (int i = 0; i < sb->nworkers; i++) {
        struct worker *w = &sb->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(err, errlen, "bind %s: cannot start a worker thread", bc->name);
            goto fail;
        }
        w->started = true;
    }
    if (quick_open(sb, err, errlen) != 0 || wal_start(sb, err, errlen) != 0)
        goto fail;
    sb->wait_timer = malloc(sizeof *sb->wait_timer);
    if (sb->wait_timer == NULL)
        goto nomem;
    uv_timer_init(b->srv->loop, sb->wait_timer);
    sb->wait_timer->data = sb;
    uv_timer_start(sb->wait_timer, on_wait_check, 100, 100);
    if (bc->type == BIND_SQLITE_MEMORY && bc->snapshot != NULL && snapshot_start(sb, err, errlen) != 0)
        goto fail;
    sb->opened = true;
    log_info("bind %s: %s, %d connection%s", bc->name,
             bc->type == BIND_SQLITE_MEMORY ? "sqlite in memory" : bc->path, sb->nworkers,
             sb->nworkers == 1 ? "" : "s");
    return 0;
nomem:
    snprintf(err, errlen, "bind %s: out of memory", bc->name);
fail:
    sqlite3_close(first);
    sqlite_close(b);
    return -1;
}

/* ---- Quick reads on the loop thread ------------------------------------ */

/* End the quick connection's read transaction, if one is open. */
static void quick_end(struct sqlite_bind *sb)
{
    sqlite3 *db = sb->quick->db;

    if (sqlite3_get_autocommit(db))
        return;
    sb->quick->deadline_ns = UINT64_MAX; /* see quick_snapshot */
    if (sb->quick_commit == NULL || sqlite3_step(sb->quick_commit) != SQLITE_DONE)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    if (sb->quick_commit != NULL)
        sqlite3_reset(sb->quick_commit);
}

static void on_quick_turn(uv_check_t *h)
{
    struct sqlite_bind *sb = h->data;

    quick_end(sb);
    uv_check_stop(h);
}

/* Make sure a read transaction is open that began after every write the
 * workers reported. 0, or -1 when none could be opened. */
static int quick_snapshot(struct sqlite_bind *sb)
{
    sqlite3 *db = sb->quick->db;
    uint64_t gen = atomic_load_explicit(&sb->writes, memory_order_acquire);
    int rc;

    if (!sqlite3_get_autocommit(db)) {
        /* A transaction open here always ends with the turn. */
        assert(uv_is_active((uv_handle_t *)sb->quick_turn));
        if (gen == sb->quick_gen)
            return 0;
        quick_end(sb);
    }
    sb->quick_gen = gen;
    /* BEGIN is not a client's read: no budget. The progress handler,
     * still holding the last read's deadline, used to interrupt it after
     * it had opened the transaction; that transaction then outlived the
     * turn and held its WAL snapshot until the next read (no checkpoint
     * could restart the WAL meanwhile, which grew without bound). */
    sb->quick->deadline_ns = UINT64_MAX;
    rc = sqlite3_step(sb->quick_begin);
    sqlite3_reset(sb->quick_begin);
    if (rc != SQLITE_DONE) {
        quick_end(sb);
        return -1;
    }
    uv_check_start(sb->quick_turn, on_quick_turn);
    return 0;
}

static bool sqlite_read_inline(struct bind *b, const struct request *req, uint64_t start_ns, struct buf *out,
                               uint64_t *rows)
{
    struct sqlite_bind *sb = b->impl;
    struct worker *w = sb->quick;
    sqlite3_stmt *stmt;
    uint64_t h;
    size_t slot;
    bool ok;
    int rc;

    if (w == NULL || req->len > QUICK_MAX_SQL)
        return false;
    h = hash_bytes(req->text, req->len);
    slot = h % QUICK_SKIP_SLOTS;
    if (sb->quick_skip[slot].hash == h && sb->quick_skip[slot].left > 0) {
        sb->quick_skip[slot].left--;
        return false;
    }
    w->mark = out->len;
    *rows = 0;
    conn_max_value(w, b->srv->cfg->max_value, QUICK_MAX_LENGTH);
    if (quick_snapshot(sb) != 0)
        return false;
    stmt = stmt_get(w, req->text, req->len, h, &rc);
    ok = stmt != NULL;
    if (ok) {
        ok = sqlite3_stmt_readonly(stmt) && sqlite3_column_count(stmt) > 0 &&
             bind_params(stmt, req, out, w->mark) == 0;
        if (ok) {
            w->deadline_ns = start_ns + QUICK_BUDGET_NS;
            rc = stream_rows(w, NULL, stmt, out, rows);
            ok = rc == SQLITE_DONE && put_rows_status(out, *rows) == 0;
        }
        stmt_done(w, stmt);
    }
    if (ok)
        return true;
    buf_truncate(out, w->mark);
    *rows = 0;
    log_debug("bind %s: a read goes to a worker: %s", b->conf->name,
              rc == SQLITE_OK || rc == SQLITE_DONE ? "not a plain read" : sqlite3_errstr(rc));
    quick_end(sb);
    if ((rc & 0xff) == SQLITE_INTERRUPT || (rc & 0xff) == SQLITE_TOOBIG || (rc & 0xff) == SQLITE_AUTH) {
        sb->quick_skip[slot].hash = h;
        sb->quick_skip[slot].left = QUICK_SKIP_RUNS;
    }
    return false;
}

/* Open the quick-read connection. It reads only: the authorizer refuses
 * writes, it never waits for a lock, and its limits make any one step
 * short (a longer string, pattern or text is an error, so a worker runs
 * that statement instead). */
static int quick_open(struct sqlite_bind *sb, char *err, size_t errlen)
{
    bool memory = sb->bind->conf->type == BIND_SQLITE_MEMORY;
    struct worker *w;
    char why[300];

    /* A file bind's pages come from the disk unless cached: its quick
     * connection reads through the nowait VFS, where the file system
     * supports that. */
    if (!memory && nowait_vfs_check(sb->filename, why, sizeof why) != 0) {
        log_info("bind %s: every statement runs on a worker thread: %s", sb->bind->conf->name, why);
        return 0;
    }
    w = calloc(1, sizeof *w);
    if (w == NULL || (w->cache = calloc(sb->stmt_cache + 1, sizeof *w->cache)) == NULL) {
        free(w);
        snprintf(err, errlen, "bind %s: out of memory", sb->bind->conf->name);
        return -1;
    }
    w->sb = sb;
    w->tail = &w->head;
    w->readonly = true;
    w->quick = true;
    sb->quick = w;
    if (conn_open(sb, &w->db, memory ? NULL : NOWAIT_VFS_NAME, err, errlen) != 0 || conn_harden(w, err, errlen) != 0)
        return -1;
    /* A file bind's pages: every read through xRead (not mapped), kept in
     * a cache larger than the default 2 MB, since the loop answers most
     * reads. */
    if (!memory)
        conn_exec_internal(w, "PRAGMA mmap_size = 0; PRAGMA cache_size = " QUICK_CACHE_KIB);
    conn_exec_internal(w, "PRAGMA temp_store = MEMORY");
    set_query_only(w, true);
    sqlite3_busy_timeout(w->db, 0);
    conn_max_value(w, sb->bind->srv->cfg->max_value, QUICK_MAX_LENGTH);
    sqlite3_limit(w->db, SQLITE_LIMIT_SQL_LENGTH, QUICK_MAX_SQL);
    sqlite3_limit(w->db, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, QUICK_MAX_PATTERN);
    sqlite3_progress_handler(w->db, QUICK_PROGRESS_STEPS, on_quick_progress, w);
    schema_refresh(w->db);   /* opens the WAL now: no file is opened while serving */
    sb->quick_turn = malloc(sizeof *sb->quick_turn);
    if (sb->quick_turn == NULL) {
        snprintf(err, errlen, "bind %s: out of memory", sb->bind->conf->name);
        return -1;
    }
    uv_check_init(sb->bind->srv->loop, sb->quick_turn);
    sb->quick_turn->data = sb;
    if (sqlite3_prepare_v3(w->db, "BEGIN", -1, SQLITE_PREPARE_PERSISTENT, &sb->quick_begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v3(w->db, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT, &sb->quick_commit, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "bind %s: %s", sb->bind->conf->name, sqlite3_errmsg(w->db));
        return -1;
    }
    return 0;
}

/* Move the jobs of a queue that were queued limit ms or more before now
 * to *expired. */
static void expire_queue(struct job **head, struct job ***tail, uint64_t now, uint64_t limit, struct job **expired)
{
    struct job **pp = head;

    while (*pp != NULL) {
        struct job *job = *pp;
        if (now - job->queued_at < limit) {
            pp = &job->next;
            continue;
        }
        *pp = job->next;
        job->next = *expired;
        *expired = job;
    }
    *tail = head;
    while (**tail != NULL)
        *tail = &(**tail)->next;
}

/* Every 100 ms: a statement that waited longer than busy_timeout for a
 * free connection (all are busy, or held by clients' open transactions)
 * gets -ERR BUSY rather than waiting without end. Loop thread. */
static void on_wait_check(uv_timer_t *t)
{
    struct sqlite_bind *sb = t->data;
    uint64_t now = uv_now(t->loop);
    uint64_t limit = (uint64_t)sb->bind->conf->busy_timeout_ms;
    struct job *expired = NULL;

    pthread_mutex_lock(&sb->lock);
    expire_queue(&sb->head, &sb->tail, now, limit, &expired);
    /* The first worker's queue holds other sessions' writes while it is
     * not inside a transaction (see sqlite_submit). */
    if (sb->nworkers > 0 && sb->workers[0].pinned == 0)
        expire_queue(&sb->workers[0].head, &sb->workers[0].tail, now, limit, &expired);
    pthread_mutex_unlock(&sb->lock);

    while (expired != NULL) {
        struct job *job = expired;
        struct buf out = BUF_INIT;
        char msg[200];
        expired = job->next;
        job->next = NULL;
        snprintf(msg, sizeof msg,
                 "bind %s: no connection became free within busy_timeout (%d ms): all %d are busy "
                 "or held by open transactions",
                 sb->bind->conf->name, sb->bind->conf->busy_timeout_ms, sb->nworkers);
        reply_error(&out, "BUSY", msg);
        job->failed = true;
        job_post_done(job, &out);
    }
}

/* A JOB_SNAPSHOT goes to the snapshot thread; a bind without a snapshot
 * file answers it at once. */
static void submit_snapshot(struct sqlite_bind *sb, struct job *job)
{
    if (!sb->snap_started) {
        struct buf out = BUF_INIT;
        reply_error(&out, "ARGS", "this bind has no snapshot file");
        job->failed = true;
        job_post_done(job, &out);
        return;
    }
    atomic_fetch_add(&sb->snap_inflight, 1);
    pthread_mutex_lock(&sb->lock);
    *sb->snap_tail = job;
    sb->snap_tail = &job->next;
    pthread_cond_broadcast(&sb->cond);
    pthread_mutex_unlock(&sb->lock);
}

static void sqlite_submit(struct bind *b, struct job *job)
{
    struct sqlite_bind *sb = b->impl;
    struct worker *target = NULL;   /* a worker's own queue, else the shared one */

    job->queued_at = uv_now(b->srv->loop);
    if (job->type == JOB_SNAPSHOT) {
        submit_snapshot(sb, job);
        return;
    }
    pthread_mutex_lock(&sb->lock);
    for (int i = 0; job->owner != 0 && i < sb->nworkers; i++) {
        if (sb->workers[i].pinned == job->owner) {
            target = &sb->workers[i];
            break;
        }
    }
    /* Writes outside transactions go to the first worker while it is free
     * or writing: SQLite lets one connection write at a time anyway, and
     * one writer keeps its page cache and never waits for another's lock
     * (several writers took turns through SQLite's busy handler, sleeping
     * in between, each re-reading the pages the others changed). */
    if (target == NULL && job->owner != 0 && job->begin_sql == NULL && sb->workers[0].pinned == 0 &&
        (!sb->workers[0].busy || sb->workers[0].writing) && job_writes(job))
        target = &sb->workers[0];
    if (target != NULL) {
        *target->tail = job;
        target->tail = &job->next;
        if (target->waiting)
            pthread_cond_signal(&target->wake);
    } else {
        *sb->tail = job;
        sb->tail = &job->next;
        wake_free_worker(sb);
    }
    pthread_mutex_unlock(&sb->lock);
}

static void sqlite_interrupt(struct bind *b, struct job *job)
{
    (void)b;
    pthread_mutex_lock(&job->lock);
    if (job->running != NULL)
        sqlite3_interrupt(job->running);
    pthread_mutex_unlock(&job->lock);
}

/* Free a worker's statements and close its connection. */
static void worker_close(struct worker *w)
{
    for (size_t j = 0; j < w->ncache; j++) {
        sqlite3_finalize(w->cache[j].stmt);
        free(w->cache[j].sql);
    }
    free(w->cache);
    if (w->db != NULL && sqlite3_close(w->db) != SQLITE_OK)
        log_warn("bind %s: closing a connection: %s", w->sb->bind->conf->name, sqlite3_errmsg(w->db));
}

static void sqlite_close(struct bind *b)
{
    struct sqlite_bind *sb = b->impl;

    if (sb == NULL)
        return;
    if (sb->wait_timer != NULL)
        uv_close((uv_handle_t *)sb->wait_timer, (uv_close_cb)free);
    if (sb->snap_timer != NULL)
        uv_close((uv_handle_t *)sb->snap_timer, (uv_close_cb)free);
    pthread_mutex_lock(&sb->lock);
    sb->stopping = true;
    pthread_cond_broadcast(&sb->cond);
    for (int i = 0; i < sb->nworkers; i++)
        pthread_cond_signal(&sb->workers[i].wake);
    pthread_mutex_unlock(&sb->lock);
    for (int i = 0; i < sb->nworkers; i++) {
        struct worker *w = &sb->workers[i];
        if (w->started)
            pthread_join(w->thread, NULL);
        worker_close(w);
        pthread_cond_destroy(&w->wake);
    }
    if (sb->quick_turn != NULL)
        uv_close((uv_handle_t *)sb->quick_turn, (uv_close_cb)free);
    sqlite3_finalize(sb->quick_begin);
    sqlite3_finalize(sb->quick_commit);
    if (sb->quick != NULL) {
        worker_close(sb->quick);
        free(sb->quick);
    }
    if (sb->wal_started)
        pthread_join(sb->wal_thread, NULL);
    if (sb->wal_db != NULL)
        sqlite3_close(sb->wal_db);
    if (sb->snap_started)
        pthread_join(sb->snap_thread, NULL);   /* after the saves queued before the stop */
    if (sb->snap_db != NULL)
        sqlite3_close(sb->snap_db);
    /* Clean shutdown: every client is gone, so the last snapshot is
     * written in one go from the anchor before the database goes away. */
    if (sb->opened && sb->anchor != NULL && b->conf->snapshot != NULL) {
        struct snapshot_info info;
        char err[1024];
        if (snapshot_save(sb->anchor, b->conf->snapshot, -1, 0, &info, err, sizeof err) == 0)
            log_info("bind %s: snapshot %s written at shutdown: %lld bytes in %.0f ms", b->conf->name,
                     b->conf->snapshot, (long long)info.bytes, info.ms);
        else
            log_error("bind %s: %s", b->conf->name, err);
    }
    if (sb->anchor != NULL)
        sqlite3_close(sb->anchor);
    if (sb->memdir != NULL) {
        if (sb->filename != NULL)
            fs_remove_db(sb->filename);
        rmdir(sb->memdir);
        free(sb->memdir);
    }
    free(sb->workers);
    free(sb->filename);
    pthread_cond_destroy(&sb->cond);
    pthread_mutex_destroy(&sb->lock);
    free(sb);
    b->impl = NULL;
}

static void sqlite_status(struct bind *b, struct bind_status *st)
{
    struct sqlite_bind *sb = b->impl;

    st->state = "open";
    st->connections = sb->nworkers;
    st->in_use = 0;
    pthread_mutex_lock(&sb->lock);
    for (int i = 0; i < sb->nworkers; i++)
        if (sb->workers[i].busy || sb->workers[i].pinned != 0)
            st->in_use++;
    st->snapshot_at = sb->snap_at;
    st->snapshot_bytes = sb->snap_bytes;
    pthread_mutex_unlock(&sb->lock);
    st->wal_bytes = atomic_load(&sb->wal_bytes);
}

const struct backend_ops backend_sqlite_ops = {
    .batches = true,
    .name = "sqlite",
    .open = sqlite_open,
    .submit = sqlite_submit,
    .read_inline = sqlite_read_inline,
    .interrupt = sqlite_interrupt,
    .status = sqlite_status,
    .close = sqlite_close,
};
