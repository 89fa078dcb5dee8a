/*
 * Transactions across SQLite binds: attaching the binds to the worker
 * connections, capturing writes, the coordinated commit, and recovery at
 * start-up (the design is in xact.h; the log's format in xact_log.h).
 */
#define SQLITE_ENABLE_SESSION        1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1

#include "daemon/xact.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <unistd.h>

#include "conf/config.h"
#include "daemon/backend_sqlite.h"
#include "daemon/log.h"
#include "daemon/route.h"
#include "daemon/xact_log.h"

/* SQLite's compile-time limit of attached databases on Debian is 10; one
 * is kept for VACUUM's scratch database. */
#define XACT_MAX_ATTACHED 9

struct xact {
    struct xact_log log;
    pthread_mutex_t lock; /* next_txid, gen_start, inflight, unresolved */
    uint64_t next_txid;
    uint64_t gen_start; /* marker rows below this name no log entry: deletable */
    int inflight;       /* txids handed out whose commit has not finished */
    bool unresolved;    /* a failed commit left an entry for the next start */
    /* Each open SQLite bind's write count (sqlite_bind.writes) and file, by
     * name: a worker of another bind that committed writes there moves the
     * count on, as the bind's own workers do (quick reads and the
     * checkpoint thread go by it); a file other than the one a worker
     * attached means a reload replaced the bind. Guarded by lock. */
    struct {
        char *name;
        atomic_uint_fast64_t *writes;
        const char *file; /* the open bind's sqlite_bind.filename */
    } counters[64];
    size_t ncounters;
};

struct capture_ctx {
    struct worker *w;
    size_t i; /* attached bind */
};

/* What a worker connection knows about its attached binds. */
struct xact_conn {
    struct capture_ctx ctx[XACT_MAX_ATTACHED];
    sqlite3_stmt *begin, *lock_main; /* xact_begin's, prepared at attach */
    size_t n;                        /* attached binds */
    char *names[XACT_MAX_ATTACHED];
    char *files[XACT_MAX_ATTACHED]; /* the file each was attached from */
    bool memory[XACT_MAX_ATTACHED];
    sqlite3_session *sess[XACT_MAX_ATTACHED];   /* capture, while a transaction runs */
    const char *allowed[XACT_MAX_ATTACHED + 1]; /* w->schemas during a statement */
    const char *ro[XACT_MAX_ATTACHED + 2];      /* schemas it may only read */
    bool checking;                              /* a statement across binds is prepared */
    bool wants_detach;        /* a statement of the home bind alone touched another (xact_detach_for) */
    bool detached;            /* the other binds are detached for it */
    bool committing;          /* xact_commit runs its COMMIT */
    const struct config *cfg; /* of the running job */
    char denied[256];
    char nopk[160]; /* a captured table without PRIMARY KEY, first seen */
};

/* SQLMUX_XACT_CRASH=step[:N], read once at xact_open: the step's name, and
 * how many times it is passed before the kill (the Nth, default 1). */
static char crash_step[64];
static atomic_int crash_left;

bool xact_crash_armed(const char *step)
{
    return crash_step[0] != '\0' && strcmp(crash_step, step) == 0 && atomic_fetch_sub(&crash_left, 1) == 1;
}

void xact_crash_point(const char *step)
{
    if (xact_crash_armed(step)) {
        log_warn("SQLMUX_XACT_CRASH=%s: killing the daemon here (test crash point)", step);
        raise(SIGKILL);
    }
}

/* ---- The crash VFS (tests only) ------------------------------------------ */

/* For the crash point "first_committed": a VFS registered as the default
 * only when SQLMUX_XACT_CRASH asks for it. Its files are the default VFS's
 * with xWrite wrapped: while a coordinated COMMIT is armed on this thread,
 * the first write to a WAL file other than the home bind's kills the
 * daemon, i.e. after main committed and before the next bind did. */
static sqlite3_vfs crash_vfs;
static sqlite3_vfs *crash_root;
static size_t crash_extra_at;
static _Thread_local const char *crash_home_wal; /* armed: main's WAL path */
static struct {
    const sqlite3_io_methods *orig;
    sqlite3_io_methods ours;
} crash_tables[4];
static size_t crash_ntables;
static pthread_mutex_t crash_lock = PTHREAD_MUTEX_INITIALIZER;

struct crash_extra {
    const char *name;
    const sqlite3_io_methods *orig;
};

static struct crash_extra *crash_extra_of(sqlite3_file *f)
{
    return (struct crash_extra *)(void *)((char *)f + crash_extra_at);
}

static int crash_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
    const struct crash_extra *x = crash_extra_of(f);
    size_t n = x->name != NULL ? strlen(x->name) : 0;

    if (crash_home_wal != NULL && n > 4 && strcmp(x->name + n - 4, "-wal") == 0 &&
        strcmp(x->name, crash_home_wal) != 0) {
        log_warn("SQLMUX_XACT_CRASH=first_committed: the home bind committed, killing the daemon before %s",
                 x->name);
        raise(SIGKILL);
    }
    return x->orig->xWrite(f, buf, amt, off);
}

static int crash_open(sqlite3_vfs *v, sqlite3_filename name, sqlite3_file *f, int flags, int *out)
{
    int rc = crash_root->xOpen(crash_root, name, f, flags, out);
    struct crash_extra *x = crash_extra_of(f);
    const sqlite3_io_methods *orig = f->pMethods;

    (void)v;
    x->name = name;
    x->orig = orig;
    if (rc != SQLITE_OK || orig == NULL)
        return rc;
    pthread_mutex_lock(&crash_lock);
    for (size_t i = 0; i < crash_ntables; i++) {
        if (crash_tables[i].orig == orig) {
            f->pMethods = &crash_tables[i].ours;
            pthread_mutex_unlock(&crash_lock);
            return rc;
        }
    }
    if (crash_ntables < sizeof crash_tables / sizeof crash_tables[0]) {
        crash_tables[crash_ntables].orig = orig;
        crash_tables[crash_ntables].ours = *orig;
        crash_tables[crash_ntables].ours.xWrite = crash_write;
        f->pMethods = &crash_tables[crash_ntables++].ours;
    }
    pthread_mutex_unlock(&crash_lock);
    return rc;
}

static void crash_vfs_register(void)
{
    crash_root = sqlite3_vfs_find(NULL);
    if (crash_root == NULL)
        return;
    crash_vfs = *crash_root;
    crash_vfs.zName = "sqlmux-xact-crash";
    crash_extra_at = ((size_t)crash_root->szOsFile + 7) & ~(size_t)7;
    crash_vfs.szOsFile = (int)(crash_extra_at + sizeof(struct crash_extra));
    crash_vfs.xOpen = crash_open;
    crash_vfs.pNext = NULL;
    sqlite3_vfs_register(&crash_vfs, 1);
}

/* ---- Recovery ------------------------------------------------------------ */

static int64_t now_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static const struct bind_conf *bind_by_name(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nbinds; i++)
        if (strcmp(cfg->binds[i].name, name) == 0)
            return &cfg->binds[i];
    return NULL;
}

/* A connection of recovery's own to a file bind; NULL (with err) when it
 * cannot be opened. missing_ok: a file that does not exist gives NULL
 * without an error. */
static sqlite3 *recovery_open(const struct bind_conf *bc, bool missing_ok, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc;

    if (missing_ok && access(bc->path, F_OK) != 0)
        return NULL;
    rc = sqlite3_open_v2(bc->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "bind %s: cannot open %s for recovery: %s", bc->name, bc->path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, bc->busy_timeout_ms > 0 ? bc->busy_timeout_ms : 5000);
    return db;
}

static bool has_marker_table(sqlite3 *db)
{
    return sqlite3_table_column_metadata(db, "main", XACT_MARKER_TABLE, NULL, NULL, NULL, NULL, NULL, NULL) ==
           SQLITE_OK;
}

/* 1 when db holds the marker of txid, 0 when not, -1 on error. */
static int marker_present(sqlite3 *db, uint64_t txid)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    if (!has_marker_table(db))
        return 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM " XACT_MARKER_TABLE " WHERE txid = ?1", -1, &stmt, NULL) !=
        SQLITE_OK)
        return -1;
    sqlite3_bind_int64(stmt, 1, (sqlite3_int64)txid);
    rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

struct apply_ctx {
    const char *bind;
    char why[200];
};

/* A conflict means the bind is not as the transaction left it before its
 * commit: never guessed at. The marker table's own rows (the deletion of
 * old markers) are the exception: they may be gone already. */
static int on_conflict(void *arg, int kind, sqlite3_changeset_iter *it)
{
    struct apply_ctx *ctx = arg;
    const char *table = NULL;
    int ncol = 0, op = 0, indirect = 0;

    sqlite3changeset_op(it, &table, &ncol, &op, &indirect);
    if (table != NULL && strcmp(table, XACT_MARKER_TABLE) == 0)
        return SQLITE_CHANGESET_OMIT;
    snprintf(ctx->why, sizeof ctx->why, "table %s: %s", table ? table : "?",
             kind == SQLITE_CHANGESET_DATA         ? "a row differs from what the transaction saw"
             : kind == SQLITE_CHANGESET_NOTFOUND   ? "a row the transaction changed is missing"
             : kind == SQLITE_CHANGESET_CONFLICT   ? "a row the transaction inserted exists already"
             : kind == SQLITE_CHANGESET_CONSTRAINT ? "a constraint fails"
                                                   : "a foreign key fails");
    return SQLITE_CHANGESET_ABORT;
}

static const char marker_create[] =
    "CREATE TABLE IF NOT EXISTS " XACT_MARKER_TABLE " (txid INTEGER PRIMARY KEY, at INTEGER NOT NULL)";

/* Apply a changeset to a bind that lacks the transaction. 0, or -1. */
static int apply_changeset(sqlite3 *db, const char *bind, const struct xact_part *p, uint64_t txid, char *err,
                           size_t errlen)
{
    struct apply_ctx ctx = {bind, ""};
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, marker_create, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3changeset_apply(db, (int)p->len, p->change, NULL, on_conflict, &ctx);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "bind %s: transaction %llu: cannot apply its changes: %s", bind,
                 (unsigned long long)txid, ctx.why[0] ? ctx.why : sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

/* The recovery connection to file bind bc (conns[] indexed like
 * cfg->binds, opened at first use; the caller closes them). */
static sqlite3 *recovery_conn(const struct config *cfg, sqlite3 **conns, const struct bind_conf *bc,
                              char *err, size_t errlen)
{
    size_t i = (size_t)(bc - cfg->binds);

    if (conns[i] == NULL)
        conns[i] = recovery_open(bc, false, err, errlen);
    return conns[i];
}

static void recovery_close(const struct config *cfg, sqlite3 **conns)
{
    for (size_t i = 0; i < cfg->nbinds; i++)
        sqlite3_close(conns[i]);
    free(conns);
}

/* Resolve one decision (see xact.h). Returns 1 when it is committed in
 * every file bind now, 0 when it never committed anywhere (its anchor lacks
 * the marker), -1 with err set on failure. at_start: the crash point
 * "recovery" applies. */
static int recover_entry(const struct config *cfg, sqlite3 **conns, const struct xact_entry *e, bool at_start,
                         char *err, size_t errlen)
{
    for (size_t i = 0; i < e->nparts; i++) {
        const struct bind_conf *bc = bind_by_name(cfg, e->parts[i].bind);
        if (bc == NULL) {
            snprintf(
                err, errlen,
                "the coordinator log holds transaction %llu over bind %s, which the configuration no longer "
                "has: put the bind back until the daemon has started once",
                (unsigned long long)e->txid, e->parts[i].bind);
            return -1;
        }
    }
    for (size_t i = 0; i < e->nparts; i++) {
        const struct xact_part *p = &e->parts[i];
        const struct bind_conf *bc = bind_by_name(cfg, p->bind);
        sqlite3 *db;
        int present;
        if (!(p->flags & XACT_PART_ANCHOR) || bc->type != BIND_SQLITE_FILE)
            continue;
        db = recovery_conn(cfg, conns, bc, err, errlen);
        if (db == NULL)
            return -1;
        present = marker_present(db, e->txid);
        if (present < 0) {
            snprintf(err, errlen, "bind %s: cannot read its marker rows: %s", bc->name, sqlite3_errmsg(db));
            return -1;
        }
        if (present == 0) {
            log_debug("transaction %llu across binds: its home bind %s never committed it: nothing to undo",
                      (unsigned long long)e->txid, bc->name);
            return 0;
        }
    }
    for (size_t i = 0; i < e->nparts; i++) {
        const struct xact_part *p = &e->parts[i];
        const struct bind_conf *bc = bind_by_name(cfg, p->bind);
        sqlite3 *db;
        int present;
        if ((p->flags & XACT_PART_ANCHOR) || bc->type != BIND_SQLITE_FILE)
            continue; /* the in-memory bind after a restart holds its snapshot only */
        db = recovery_conn(cfg, conns, bc, err, errlen);
        if (db == NULL)
            return -1;
        present = marker_present(db, e->txid);
        if (present < 0) {
            snprintf(err, errlen, "bind %s: cannot read its marker rows: %s", bc->name, sqlite3_errmsg(db));
            return -1;
        }
        if (present == 0) {
            if (apply_changeset(db, bc->name, p, e->txid, err, errlen) != 0)
                return -1;
            log_info("transaction %llu across binds: bind %s lacked it: its changes applied (%zu bytes)",
                     (unsigned long long)e->txid, bc->name, p->len);
            if (at_start)
                xact_crash_point("recovery");
        }
    }
    return 1;
}

/* fdatasync a file by name; a missing one is fine. 0, or -1. */
static int sync_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    rc = fdatasync(fd);
    close(fd);
    return rc;
}

/* Make every file bind's commits durable: their database and WAL files. */
static int sync_binds(const struct config *cfg)
{
    char wal[PATH_MAX];

    for (size_t i = 0; i < cfg->nbinds; i++) {
        if (cfg->binds[i].type != BIND_SQLITE_FILE)
            continue;
        snprintf(wal, sizeof wal, "%s-wal", cfg->binds[i].path);
        if (sync_file(wal) != 0 || sync_file(cfg->binds[i].path) != 0)
            return -1;
    }
    return 0;
}

/* The largest marker txid in any file bind (0: none). */
static uint64_t markers_max(const struct config *cfg)
{
    uint64_t max = 0;
    char err[256];

    for (size_t i = 0; i < cfg->nbinds; i++) {
        sqlite3 *db;
        sqlite3_stmt *stmt = NULL;
        if (cfg->binds[i].type != BIND_SQLITE_FILE)
            continue;
        db = recovery_open(&cfg->binds[i], true, err, sizeof err);
        if (db != NULL && has_marker_table(db) &&
            sqlite3_prepare_v2(db, "SELECT max(txid) FROM " XACT_MARKER_TABLE, -1, &stmt, NULL) ==
                SQLITE_OK &&
            sqlite3_step(stmt) == SQLITE_ROW && (uint64_t)sqlite3_column_int64(stmt, 0) > max)
            max = (uint64_t)sqlite3_column_int64(stmt, 0);
        sqlite3_finalize(stmt);
        sqlite3_close(db);
    }
    return max;
}

int xact_open(const struct config *cfg, struct xact **out, char *err, size_t errlen)
{
    struct xact *x = calloc(1, sizeof *x);
    struct xact_entry *entries = NULL;
    size_t n = 0, path_len = strlen(cfg->data_dir) + sizeof XACT_LOG_NAME + 1;
    char *path = malloc(path_len);
    uint64_t max_txid = 0, m;
    size_t committed = 0;
    sqlite3 **conns;
    bool torn = false;

    *out = NULL;
    {
        const char *env = getenv("SQLMUX_XACT_CRASH");
        const char *colon = env != NULL ? strchr(env, ':') : NULL;
        snprintf(crash_step, sizeof crash_step, "%.*s", colon ? (int)(colon - env) : 63, env ? env : "");
        atomic_store(&crash_left, colon ? atoi(colon + 1) : 1);
    }
    if (strcmp(crash_step, "first_committed") == 0 && crash_root == NULL)
        crash_vfs_register();
    if (x == NULL || path == NULL) {
        free(x);
        free(path);
        snprintf(err, errlen, "out of memory opening the coordinator log");
        return -1;
    }
    pthread_mutex_init(&x->lock, NULL);
    x->log.fd = -1;
    snprintf(path, path_len, "%s/%s", cfg->data_dir, XACT_LOG_NAME);
    if (xact_log_open(&x->log, path, &entries, &n, &max_txid, &torn, err, errlen) != 0) {
        free(path);
        xact_close(x);
        return -1;
    }
    free(path);
    if (torn)
        log_warn("%s: its last record was cut short by a crash during its append: it was never acted on "
                 "(no bind committed on its word) and is ignored",
                 x->log.path);
    conns = calloc(cfg->nbinds, sizeof *conns);
    for (size_t i = 0; i < n && conns != NULL; i++) {
        int rc = recover_entry(cfg, conns, &entries[i], true, err, errlen);
        if (rc < 0) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s: recovery of transactions across binds: %s", x->log.path, err);
            snprintf(err, errlen, "%s", msg);
            recovery_close(cfg, conns);
            xact_entries_free(entries, n);
            xact_close(x);
            return -1;
        }
        committed += rc == 1;
    }
    if (conns == NULL) {
        snprintf(err, errlen, "out of memory");
        xact_entries_free(entries, n);
        xact_close(x);
        return -1;
    }
    recovery_close(cfg, conns);
    if (n > 0)
        log_info("%s: %zu transaction%s across binds checked in every bind (%zu complete in every file bind "
                 "now, %zu never committed)",
                 x->log.path, n, n == 1 ? "" : "s", committed, n - committed);
    xact_entries_free(entries, n);
    /* The attached binds commit without a sync of their own: make what
     * the log vouched for durable before the log forgets it. */
    if (sync_binds(cfg) != 0) {
        snprintf(err, errlen, "%s: cannot sync the binds' files before cutting the log back: %s", x->log.path,
                 strerror(errno));
        xact_close(x);
        return -1;
    }
    /* Every entry is resolved and each bind's recovery committed durably. */
    if (xact_log_reset(&x->log) != 0) {
        snprintf(err, errlen, "%s: cannot cut the coordinator log back: %s", x->log.path, strerror(errno));
        xact_close(x);
        return -1;
    }
    m = markers_max(cfg);
    if (m > max_txid)
        max_txid = m;
    x->next_txid = (uint64_t)now_us();
    if (x->next_txid <= max_txid)
        x->next_txid = max_txid + 1;
    x->gen_start = x->next_txid;
    *out = x;
    return 0;
}

void xact_bind_counter(struct xact *x, const char *name, const char *file, atomic_uint_fast64_t *writes,
                       bool open)
{
    size_t i;

    if (x == NULL)
        return;
    pthread_mutex_lock(&x->lock);
    for (i = 0; i < x->ncounters && strcmp(x->counters[i].name, name) != 0; i++)
        ;
    if (i == x->ncounters) {
        if (!open || i == sizeof x->counters / sizeof x->counters[0] ||
            (x->counters[i].name = strdup(name)) == NULL) {
            pthread_mutex_unlock(&x->lock);
            return;
        }
        x->ncounters++;
    }
    if (open) {
        x->counters[i].writes = writes;
        x->counters[i].file = file;
    } else if (x->counters[i].writes == writes) {
        x->counters[i].writes = NULL;
        x->counters[i].file = NULL;
    }
    pthread_mutex_unlock(&x->lock);
}

/* Whether bind `name` is open on `file` (what a worker attached). */
static bool bind_current(struct xact *x, const char *name, const char *file)
{
    bool same = false;

    pthread_mutex_lock(&x->lock);
    for (size_t i = 0; i < x->ncounters; i++)
        if (strcmp(x->counters[i].name, name) == 0)
            same = x->counters[i].file != NULL && strcmp(x->counters[i].file, file) == 0;
    pthread_mutex_unlock(&x->lock);
    return same;
}

/* Move the write count of bind `name` on (any thread). */
static void bump_writes(struct xact *x, const char *name)
{
    pthread_mutex_lock(&x->lock);
    for (size_t i = 0; i < x->ncounters; i++)
        if (x->counters[i].writes != NULL && strcmp(x->counters[i].name, name) == 0)
            atomic_fetch_add_explicit(x->counters[i].writes, 1, memory_order_release);
    pthread_mutex_unlock(&x->lock);
}

void xact_close(struct xact *x)
{
    if (x == NULL)
        return;
    for (size_t i = 0; i < x->ncounters; i++)
        free(x->counters[i].name);
    xact_log_close(&x->log);
    pthread_mutex_destroy(&x->lock);
    free(x);
}

/* ---- Attaching ----------------------------------------------------------- */

/* The commit hook of worker connections: a transaction that wrote two or
 * more binds may only commit through xact_commit (a RELEASE of its
 * outermost savepoint would commit it without the coordinator): refused,
 * so SQLite rolls it back. */
static int commit_guard(void *arg)
{
    struct worker *w = arg;
    struct xact_conn *xc = w->xact;
    int written = sqlite3_txn_state(w->db, "main") == SQLITE_TXN_WRITE;

    if (xc == NULL || xc->committing)
        return 0;
    for (size_t i = 0; i < xc->n; i++)
        written += sqlite3_txn_state(w->db, xc->names[i]) == SQLITE_TXN_WRITE;
    if (written < 2)
        return 0;
    w->denied = "a transaction across binds ends with COMMIT (a RELEASE that would commit it is refused, and "
                "the transaction is rolled back)";
    w->denied_code = "XACT";
    return 1;
}

static int attach_one(struct worker *w, const struct bind_conf *bc, const char *file, char *err,
                      size_t errlen)
{
    struct xact_conn *xc = w->xact;
    sqlite3_stmt *stmt = NULL;
    int rc;

    w->internal = true;
    rc = sqlite3_prepare_v2(w->db, "ATTACH DATABASE ?1 AS ?2", -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(stmt, 1, file, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, bc->name, -1, SQLITE_STATIC);
        rc = sqlite3_step(stmt) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(w->db);
    }
    sqlite3_finalize(stmt);
    /* An attached bind commits without a sync of its own: what it commits
     * there is in the coordinator log, which was synced first, and the log
     * forgets nothing before the binds' files are synced (sync_binds). */
    if (rc == SQLITE_OK) {
        char *sql = sqlite3_mprintf("PRAGMA \"%w\".synchronous = OFF", bc->name);
        if (sql != NULL)
            sqlite3_exec(w->db, sql, NULL, NULL, NULL);
        sqlite3_free(sql);
    }
    w->internal = false;
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "bind %s: cannot attach bind %s to its connections: %s",
                 w->sb->bind->conf->name, bc->name, sqlite3_errmsg(w->db));
        return -1;
    }
    xc->names[xc->n] = strdup(bc->name);
    xc->files[xc->n] = strdup(file);
    if (xc->names[xc->n] == NULL || xc->files[xc->n] == NULL) {
        free(xc->names[xc->n]);
        free(xc->files[xc->n]);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    xc->memory[xc->n] = bc->type == BIND_SQLITE_MEMORY;
    xc->n++;
    return 0;
}

int xact_attach_workers(struct bind *const *binds, size_t nbinds, char *err, size_t errlen)
{
    for (size_t i = 0; i < nbinds; i++) {
        struct bind *b = binds[i];
        struct sqlite_bind *sb;
        size_t others = 0;
        if (b->ops != &backend_sqlite_ops)
            continue;
        sb = b->impl;
        for (size_t j = 0; j < nbinds; j++)
            if (j != i && binds[j]->ops == &backend_sqlite_ops)
                others++;
        if (others == 0)
            continue;
        if (others > XACT_MAX_ATTACHED)
            log_warn(
                "bind %s: only %d other SQLite binds can join its transactions (SQLite attaches at most 10 "
                "databases)",
                b->conf->name, XACT_MAX_ATTACHED);
        /* The workers wait for jobs and none can come before the daemon
         * listens: their connections are free to use from here. */
        pthread_mutex_lock(&sb->lock);
        for (int k = 0; k < sb->nworkers; k++) {
            struct worker *w = &sb->workers[k];
            w->xact = calloc(1, sizeof *w->xact);
            if (w->xact == NULL) {
                pthread_mutex_unlock(&sb->lock);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            sqlite3_limit(w->db, SQLITE_LIMIT_ATTACHED,
                          1 + (int)(others < XACT_MAX_ATTACHED ? others : XACT_MAX_ATTACHED));
            for (size_t j = 0; j < nbinds && w->xact->n < XACT_MAX_ATTACHED; j++) {
                struct bind *o = binds[j];
                if (j == i || o->ops != &backend_sqlite_ops)
                    continue;
                if (attach_one(w, o->conf, ((struct sqlite_bind *)o->impl)->filename, err, errlen) != 0) {
                    pthread_mutex_unlock(&sb->lock);
                    return -1;
                }
            }
            w->internal = true;
            if (sqlite3_prepare_v3(w->db, "BEGIN", -1, SQLITE_PREPARE_PERSISTENT, &w->xact->begin, NULL) !=
                    SQLITE_OK ||
                sqlite3_prepare_v3(w->db, "PRAGMA main.incremental_vacuum(1)", -1, SQLITE_PREPARE_PERSISTENT,
                                   &w->xact->lock_main, NULL) != SQLITE_OK) {
                w->internal = false;
                pthread_mutex_unlock(&sb->lock);
                snprintf(err, errlen, "bind %s: %s", b->conf->name, sqlite3_errmsg(w->db));
                return -1;
            }
            w->internal = false;
            sqlite3_commit_hook(w->db, commit_guard, w);
        }
        pthread_mutex_unlock(&sb->lock);
    }
    return 0;
}

/* Step one of w's statements prepared at attach time to its end, past the
 * authorizer (SQLite prepares it again after a schema change). */
static int step_once(struct worker *w, sqlite3_stmt *stmt)
{
    int rc;

    w->internal = true;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        ;
    sqlite3_reset(stmt);
    w->internal = false;
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int xact_begin(struct worker *w, const char *sql, bool writes)
{
    struct xact_conn *xc = w->xact;
    int rc;

    if (xc == NULL || xc->begin == NULL)
        return sqlite3_exec(w->db, sql, NULL, NULL, NULL);
    if (!writes) {
        sqlite3_stmt *stmt = NULL;
        rc = sqlite3_prepare_v2(w->db, sql, -1, &stmt, NULL);
        writes = rc == SQLITE_OK && stmt != NULL && !sqlite3_stmt_readonly(stmt);
        sqlite3_finalize(stmt);
        if (!writes)
            return sqlite3_exec(w->db, sql, NULL, NULL, NULL);
    }
    rc = step_once(w, xc->begin);
    if (rc != SQLITE_OK)
        return sqlite3_extended_errcode(w->db);
    /* A write transaction on main alone that changes nothing: with
     * auto_vacuum off (the binds' default) incremental_vacuum only opens
     * it; with auto_vacuum = incremental it frees at most one page. */
    rc = step_once(w, xc->lock_main);
    if (rc != SQLITE_OK) {
        rc = sqlite3_extended_errcode(w->db);
        sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

/* Stop capturing: the transaction is over, or the connection closes. */
static void captures_delete(struct xact_conn *xc)
{
    for (size_t i = 0; i < xc->n; i++) {
        if (xc->sess[i] != NULL) {
            sqlite3session_delete(xc->sess[i]);
            xc->sess[i] = NULL;
        }
    }
    xc->nopk[0] = '\0';
}

void xact_conn_free(struct worker *w)
{
    struct xact_conn *xc = w->xact;

    if (xc == NULL)
        return;
    captures_delete(xc);
    sqlite3_finalize(xc->begin);
    sqlite3_finalize(xc->lock_main);
    for (size_t i = 0; i < xc->n; i++) {
        free(xc->names[i]);
        free(xc->files[i]);
    }
    free(xc);
    w->xact = NULL;
}

/* ---- Statements ---------------------------------------------------------- */

static int attached_index(const struct xact_conn *xc, const char *name)
{
    for (size_t i = 0; i < xc->n; i++)
        if (strcmp(xc->names[i], name) == 0)
            return (int)i;
    return -1;
}

/* Session filter: every table is captured; one without a PRIMARY KEY is
 * not (the session extension skips it), so it is noted and the COMMIT
 * refused. Runs inside the client's statement: the query is the daemon's. */
static int capture_filter(void *arg, const char *table)
{
    struct capture_ctx *ctx = arg;
    struct worker *w = ctx->w;
    struct xact_conn *xc = w->xact;
    sqlite3_stmt *stmt = NULL;
    bool internal = w->internal;

    if (xc->nopk[0] != '\0')
        return 1;
    w->internal = true;
    if (sqlite3_prepare_v2(w->db, "SELECT count(*) FROM pragma_table_info(?1, ?2) WHERE pk > 0", -1, &stmt,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(stmt, 1, table, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, xc->names[ctx->i], -1, SQLITE_STATIC);
        if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_int(stmt, 0) == 0)
            snprintf(xc->nopk, sizeof xc->nopk, "%s.%s", xc->names[ctx->i], table);
    }
    sqlite3_finalize(stmt);
    w->internal = internal;
    return 1;
}

/* Start capturing the writes to attached bind i (before the first
 * statement that may write it). 0, or -1. */
static int capture_start(struct worker *w, size_t i)
{
    struct xact_conn *xc = w->xact;

    if (xc->sess[i] != NULL)
        return 0;
    if (sqlite3session_create(w->db, xc->names[i], &xc->sess[i]) != SQLITE_OK)
        return -1;
    xc->ctx[i].w = w;
    xc->ctx[i].i = i;
    sqlite3session_table_filter(xc->sess[i], capture_filter, &xc->ctx[i]);
    if (sqlite3session_attach(xc->sess[i], NULL) != SQLITE_OK) {
        sqlite3session_delete(xc->sess[i]);
        xc->sess[i] = NULL;
        return -1;
    }
    return 0;
}

int xact_stmt_begin(struct worker *w, struct job *job, struct buf *out)
{
    struct xact_conn *xc = w->xact;
    const struct config *cfg = confref_cfg(job->cfgref);
    size_t na = 0, nro = 0;

    if (xc == NULL) {
        sqlite_reply_error_at(out, w->mark, "TXNBIND",
                              "this bind's connections have no other bind attached (a bind added by a reload "
                              "joins transactions across binds after a restart)");
        return -1;
    }
    if (job->xact_home_readonly)
        xc->ro[nro++] = "main";
    for (size_t k = 0; k < job->nxact_binds; k++) {
        const struct job_xbind *xb = &job->xact_binds[k];
        const char *name = cfg->binds[xb->index].name;
        int i;
        if (strcmp(name, w->sb->bind->conf->name) == 0)
            continue; /* the home bind: main */
        i = attached_index(xc, name);
        if (i < 0 || !bind_current(w->sb->bind->host->xact, name, xc->files[i])) {
            char msg[256];
            snprintf(
                msg, sizeof msg,
                "bind %s is not attached to bind %s's connections (added or replaced by a reload: it joins "
                "transactions across binds after a restart)",
                name, w->sb->bind->conf->name);
            sqlite_reply_error_at(out, w->mark, "TXNBIND", msg);
            return -1;
        }
        xc->allowed[na++] = xc->names[i];
        if (xb->readonly)
            xc->ro[nro++] = xc->names[i];
        else if (xb->writes && capture_start(w, (size_t)i) != 0) {
            sqlite_reply_error_at(out, w->mark, "NOMEM", "cannot start capturing the transaction's writes");
            return -1;
        }
    }
    xc->allowed[na] = NULL;
    xc->ro[nro] = NULL;
    xc->cfg = cfg;
    xc->checking = true;
    w->schemas = xc->allowed;
    return 0;
}

bool xact_detach_for(struct worker *w)
{
    struct xact_conn *xc = w->xact;
    bool wanted;

    if (xc == NULL)
        return false;
    wanted = xc->wants_detach;
    xc->wants_detach = false;
    if (!wanted || xc->detached || !sqlite3_get_autocommit(w->db))
        return false;
    xc->detached = true;
    for (size_t i = 0; i < xc->n; i++) {
        char *sql = sqlite3_mprintf("DETACH DATABASE \"%w\"", xc->names[i]);
        int rc = sql != NULL ? sqlite_conn_exec_internal(w, sql) : SQLITE_NOMEM;
        sqlite3_free(sql);
        if (rc != SQLITE_OK) {
            log_warn("bind %s: cannot detach bind %s: %s", w->sb->bind->conf->name, xc->names[i],
                     sqlite3_errmsg(w->db));
            xact_reattach(w);
            return false;
        }
    }
    return true;
}

void xact_reattach(struct worker *w)
{
    struct xact_conn *xc = w->xact;

    if (xc == NULL || !xc->detached)
        return;
    xc->detached = false;
    for (size_t i = 0; i < xc->n; i++) {
        char *sql;
        int rc;
        if (sqlite3_db_filename(w->db, xc->names[i]) != NULL)
            continue; /* still attached (a detach that failed part way) */
        sql = sqlite3_mprintf("ATTACH DATABASE %Q AS \"%w\"; PRAGMA \"%w\".synchronous = OFF", xc->files[i],
                              xc->names[i], xc->names[i]);
        rc = sql != NULL ? sqlite_conn_exec_internal(w, sql) : SQLITE_NOMEM;
        sqlite3_free(sql);
        if (rc != SQLITE_OK)
            log_error(
                "bind %s: cannot attach bind %s again: %s; transactions across binds reaching it from here "
                "fail until a restart",
                w->sb->bind->conf->name, xc->names[i], sqlite3_errmsg(w->db));
    }
}

void xact_stmt_end(struct worker *w)
{
    if (w->xact == NULL)
        return;
    w->xact->checking = false;
    w->xact->cfg = NULL;
    w->schemas = NULL;
}

bool xact_stmt_uncached(const struct worker *w)
{
    return w->xact != NULL && w->xact->checking;
}

int xact_authorize(struct worker *w, int action, bool writes, const char *a1, const char *a2, const char *db)
{
    struct xact_conn *xc = w->xact;
    const char *table = NULL, *where;
    char lower[128];
    size_t n, bind;

    if (xc == NULL || xc->detached)
        return SQLITE_OK;
    if (!xc->checking) {
        /* A statement of the home bind alone: SQLite runs ANALYZE, REINDEX
         * and these PRAGMAs over every attached database when they name
         * none (the schema check refuses the others' tables on its own). */
        bool all = action == SQLITE_PRAGMA && db == NULL && a1 != NULL &&
                   (strcasecmp(a1, "integrity_check") == 0 || strcasecmp(a1, "quick_check") == 0 ||
                    strcasecmp(a1, "foreign_key_check") == 0 || strcasecmp(a1, "optimize") == 0) &&
                   (a2 == NULL || strspn(a2, "0123456789") == strlen(a2));
        if (all || (db != NULL && attached_index(xc, db) >= 0)) {
            xc->wants_detach = true;
            w->denied = "this database is not part of the statement's binds";
            return SQLITE_DENY;
        }
        return SQLITE_OK;
    }
    if (db == NULL || strcmp(db, "temp") == 0)
        return SQLITE_OK;
    if (writes) {
        for (size_t i = 0; xc->ro[i] != NULL; i++) {
            if (strcmp(xc->ro[i], db) == 0) {
                snprintf(xc->denied, sizeof xc->denied,
                         "read-only access to bind %s: this statement would write",
                         strcmp(db, "main") == 0 ? w->sb->bind->conf->name : db);
                w->denied = xc->denied;
                w->denied_code = "NOPERM";
                return SQLITE_DENY;
            }
        }
    }
    switch (action) {
    case SQLITE_READ:
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
    case SQLITE_CREATE_TABLE:
    case SQLITE_DROP_TABLE: table = a1; break;
    default: return SQLITE_OK;
    }
    if (table == NULL || (n = strlen(table)) >= sizeof lower || strncmp(table, "sqlite_", 7) == 0 ||
        strcmp(table, "sqlmux_migrations") == 0)
        return SQLITE_OK;
    if (strcmp(table, XACT_MARKER_TABLE) == 0) {
        if (action == SQLITE_READ)
            return SQLITE_OK;
        w->denied = "the table sqlmux_xact is the daemon's";
        return SQLITE_DENY;
    }
    for (size_t i = 0; i <= n; i++)
        lower[i] = (table[i] >= 'A' && table[i] <= 'Z') ? (char)(table[i] + 32) : table[i];
    /* SQLite found the table by its own search order (main, then the
     * attached binds): it must be where the table map routes it. */
    bind = route_table_bind(xc->cfg, "", lower);
    where = strcmp(db, "main") == 0 ? w->sb->bind->conf->name : db;
    if (strcmp(xc->cfg->binds[bind].name, where) == 0)
        return SQLITE_OK;
    snprintf(xc->denied, sizeof xc->denied,
             "table %s is mapped to bind %s, but inside this transaction the name finds the one in bind %s",
             table, xc->cfg->binds[bind].name, where);
    w->denied = xc->denied;
    w->denied_code = "TXNBIND";
    return SQLITE_DENY;
}

void xact_txn_end(struct worker *w)
{
    struct xact_conn *xc = w->xact;

    if (xc == NULL)
        return;
    /* The transaction may have written where it captured (committed or
     * not: a move too many costs a quick read a fresh snapshot). */
    for (size_t i = 0; i < xc->n; i++)
        if (xc->sess[i] != NULL)
            bump_writes(w->sb->bind->host->xact, xc->names[i]);
    captures_delete(xc);
}

/* ---- The coordinated commit ---------------------------------------------- */

static int exec_internal_fmt(struct worker *w, const char *fmt, ...)
{
    va_list ap;
    char *sql;
    int rc;

    va_start(ap, fmt);
    sql = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    if (sql == NULL)
        return SQLITE_NOMEM;
    rc = sqlite_conn_exec_internal(w, sql);
    sqlite3_free(sql);
    return rc;
}

/* The commit failed or the daemon gave up on it: undo what is open. */
static void commit_fail(struct worker *w, struct job *job, struct buf *out, const char *code, const char *msg)
{
    if (!sqlite3_get_autocommit(w->db))
        sqlite_conn_exec_internal(w, "ROLLBACK");
    sqlite_reply_error_at(out, w->mark, code, msg);
    job->failed = true;
}

static void free_changes(unsigned char **changes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sqlite3_free(changes[i]);
}

/* A commit is over: when the log is large and nothing is in flight, make
 * every bind's commits durable (the attached binds commit without a sync
 * of their own: the log could redo them), cut the log back, and from then
 * on let the markers older than that go. */
static void commit_finished(struct xact *x, const struct config *cfg)
{
    pthread_mutex_lock(&x->lock);
    x->inflight--;
    if (x->inflight == 0 && !x->unresolved && x->log.size > XACT_LOG_COMPACT_BYTES && sync_binds(cfg) == 0 &&
        xact_log_reset(&x->log) == 0)
        x->gen_start = x->next_txid;
    pthread_mutex_unlock(&x->lock);
}

/* The COMMIT failed part way (an I/O error, the disk full): finish or
 * undo it now, as the next start would, and say which. */
static void commit_broken(struct worker *w, struct job *job, struct buf *out, uint64_t txid,
                          struct xact_part *parts, size_t nw)
{
    struct xact *x = w->sb->bind->host->xact;
    struct xact_entry e = {.txid = txid, .nparts = nw, .parts = parts};
    char why[200], err[512], msg[1024];
    int outcome;

    snprintf(why, sizeof why, "%s", sqlite3_errmsg(w->db));
    if (!sqlite3_get_autocommit(w->db))
        sqlite_conn_exec_internal(w, "ROLLBACK");
    const struct config *cfg = confref_cfg(job->cfgref);
    sqlite3 **conns = calloc(cfg->nbinds, sizeof *conns);

    outcome = conns == NULL ? -1 : recover_entry(cfg, conns, &e, false, err, sizeof err);
    if (conns == NULL)
        snprintf(err, sizeof err, "out of memory");
    else
        recovery_close(cfg, conns);
    if (outcome == 1) {
        commit_finished(x, confref_cfg(job->cfgref));
        log_warn("transaction %llu across binds: COMMIT failed part way (%s) and was completed in every bind",
                 (unsigned long long)txid, why);
        if (codec_put_ok_changes(out, 0, NULL) != 0)
            sqlite_reply_error_at(out, w->mark, "NOMEM", "out of memory writing the status line");
        return;
    }
    if (outcome == 0) {
        commit_finished(x, confref_cfg(job->cfgref));
        snprintf(msg, sizeof msg, "COMMIT failed (%s): the transaction is rolled back in every bind", why);
        sqlite_reply_error_at(out, w->mark, "IOERR", msg);
        job->failed = true;
        return;
    }
    pthread_mutex_lock(&x->lock);
    x->unresolved = true;
    pthread_mutex_unlock(&x->lock);
    commit_finished(x, confref_cfg(job->cfgref));
    log_error(
        "transaction %llu across binds: COMMIT failed part way (%s) and cannot be completed now (%s): the "
        "next start completes it",
        (unsigned long long)txid, why, err);
    snprintf(msg, sizeof msg,
             "COMMIT failed part way (%s): the coordinator log keeps transaction %llu and the next start "
             "completes it in every bind",
             why, (unsigned long long)txid);
    sqlite_reply_error_at(out, w->mark, "IOERR", msg);
    job->failed = true;
}

bool xact_commit(struct worker *w, struct job *job, struct buf *out)
{
    struct xact_conn *xc = w->xact;
    struct xact *x = w->sb->bind->host->xact;
    const struct bind_conf *home = w->sb->bind->conf;
    struct xact_part parts[XACT_MAX_ATTACHED + 1];
    const char *schema[XACT_MAX_ATTACHED + 1];
    unsigned char *rec = NULL, *changes[XACT_MAX_ATTACHED + 1] = {NULL};
    size_t nw = 0, reclen = 0;
    uint64_t txid, gen_start;
    bool torn;
    char msg[512];
    int rc;

    if (xc == NULL || x == NULL || sqlite3_get_autocommit(w->db))
        return false;
    if (sqlite3_txn_state(w->db, "main") == SQLITE_TXN_WRITE)
        schema[nw++] = "main";
    for (size_t i = 0; i < xc->n; i++)
        if (sqlite3_txn_state(w->db, xc->names[i]) == SQLITE_TXN_WRITE)
            schema[nw++] = xc->names[i];
    /* One bind written: a plain COMMIT, unless it is an attached file
     * bind (which does not sync its commits: the log must vouch). */
    if (nw == 0 || (nw == 1 && (strcmp(schema[0], "main") == 0 || xc->memory[attached_index(xc, schema[0])])))
        return false;

    w->mark = out->len;
    if (xc->nopk[0] != '\0') {
        snprintf(
            msg, sizeof msg,
            "table %s has no PRIMARY KEY: a transaction across binds can write such a table only in the bind "
            "it began on; the transaction is rolled back",
            xc->nopk);
        commit_fail(w, job, out, "XACT", msg);
        return true;
    }
    pthread_mutex_lock(&x->lock);
    txid = x->next_txid++;
    gen_start = x->gen_start;
    x->inflight++;
    pthread_mutex_unlock(&x->lock);

    /* 1. The marker rows, inside the transaction (captured with the rest). */
    for (size_t i = 0; i < nw; i++) {
        rc = exec_internal_fmt(w,
                               "CREATE TABLE IF NOT EXISTS \"%w\"." XACT_MARKER_TABLE
                               " (txid INTEGER PRIMARY KEY, at INTEGER NOT NULL);"
                               "INSERT INTO \"%w\"." XACT_MARKER_TABLE " VALUES (%llu, unixepoch());"
                               "DELETE FROM \"%w\"." XACT_MARKER_TABLE " WHERE txid < %llu",
                               schema[i], schema[i], (unsigned long long)txid, schema[i],
                               (unsigned long long)gen_start);
        if (rc != SQLITE_OK) {
            snprintf(msg, sizeof msg, "bind %s: cannot write the transaction's marker: %s",
                     strcmp(schema[i], "main") == 0 ? home->name : schema[i], sqlite3_errmsg(w->db));
            commit_fail(w, job, out, sqlite_code(rc), msg);
            commit_finished(x, confref_cfg(job->cfgref));
            return true;
        }
    }
    /* 2. The decision, with every bind's changes but the anchor's. */
    for (size_t i = 0; i < nw; i++) {
        struct xact_part *p = &parts[i];
        memset(p, 0, sizeof *p);
        if (strcmp(schema[i], "main") == 0) {
            p->bind = (char *)home->name;
            if (home->type == BIND_SQLITE_FILE) {
                p->flags = XACT_PART_ANCHOR;
                continue;
            }
            /* The in-memory bind as home: no changeset is needed (after a
             * crash it holds its snapshot only), and it is no anchor. */
            continue;
        } else {
            int k = attached_index(xc, schema[i]);
            int n = 0;
            void *cs = NULL;
            p->bind = (char *)schema[i];
            if (xc->memory[k])
                continue;
            int crc = -1;
            if (xc->sess[k] != NULL) {
                w->internal = true; /* the extension reads the rows it changed */
                crc = sqlite3session_changeset(xc->sess[k], &n, &cs);
                w->internal = false;
            }
            if (crc != SQLITE_OK) {
                snprintf(msg, sizeof msg, "bind %s: the transaction's changes were not captured (%s)",
                         schema[i], crc < 0 ? "no capture" : sqlite3_errstr(crc));
                commit_fail(w, job, out, "XACT", msg);
                free_changes(changes, nw);
                commit_finished(x, confref_cfg(job->cfgref));
                return true;
            }
            changes[i] = cs;
            p->change = cs;
            p->len = (size_t)n;
        }
    }
    xact_crash_point("markers");
    rc = xact_log_encode_commit(txid, parts, nw, &rec, &reclen);
    if (rc != 0) {
        free_changes(changes, nw);
        commit_fail(w, job, out, "XACT", "the transaction's changes are too large for the coordinator log");
        commit_finished(x, confref_cfg(job->cfgref));
        return true;
    }
    torn = xact_crash_armed("log_torn");
    if (xact_log_append(&x->log, rec, reclen, true, torn) != 0) {
        snprintf(msg, sizeof msg, "%s: cannot write the coordinator log: %s; the transaction is rolled back",
                 x->log.path, strerror(errno));
        free(rec);
        free_changes(changes, nw);
        commit_fail(w, job, out, "IOERR", msg);
        commit_finished(x, confref_cfg(job->cfgref));
        return true;
    }
    free(rec);
    if (torn) {
        log_warn("SQLMUX_XACT_CRASH=log_torn: killing the daemon after half a record (test crash point)");
        raise(SIGKILL);
    }
    xact_crash_point("logged");

    /* 3. Commit: main first, then each attached bind. */
    if (crash_root != NULL && xact_crash_armed("first_committed"))
        crash_home_wal = sqlite3_filename_wal(sqlite3_db_filename(w->db, "main"));
    xc->committing = true;
    rc = sqlite_conn_exec_internal(w, "COMMIT");
    xc->committing = false;
    crash_home_wal = NULL;
    xact_crash_point("committed");
    if (rc == SQLITE_OK) {
        free_changes(changes, nw);
        commit_finished(x, confref_cfg(job->cfgref));
        if (codec_put_ok_changes(out, 0, NULL) != 0)
            sqlite_reply_error_at(out, w->mark, "NOMEM", "out of memory writing the status line");
        return true;
    }
    commit_broken(w, job, out, txid, parts, nw);
    free_changes(changes, nw);
    return true;
}
