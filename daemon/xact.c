/*
 * Transactions across SQLite binds (the design is in xact.h): the
 * coordinator (its log, the transaction ids, the binds' write counts), the
 * crash points of the tests, and the coordinated commit. Attaching the
 * binds to the workers and capturing their writes is xact_attach.c;
 * recovery of the log's entries, at start-up and after a failed commit,
 * xact_recover.c; the log's format xact_log.h.
 */
#define SQLITE_ENABLE_SESSION        1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1

#include "daemon/xact.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "conf/config.h"
#include "daemon/backend_sqlite.h"
#include "daemon/log.h"
#include "daemon/xact_log.h"
#include "daemon/xact_int.h"

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

int xact_open(const struct config *cfg, struct xact **out, char *err, size_t errlen)
{
    struct xact *x = calloc(1, sizeof *x);
    struct xact_entry *entries = NULL;
    size_t n = 0, path_len = strlen(cfg->data_dir) + sizeof XACT_LOG_NAME + 1;
    char *path = malloc(path_len);
    uint64_t max_txid = 0, m;
    size_t committed = 0, keeplen = 0;
    unsigned char *keep = NULL;
    sqlite3 **conns;
    bool torn = false, *decided;

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
    pthread_mutex_init(&x->ids_lock, NULL);
    pthread_cond_init(&x->cut_done, NULL);
    x->log.fd = -1;
    x->data_dir = strdup(cfg->data_dir);
    snprintf(path, path_len, "%s/%s", cfg->data_dir, XACT_LOG_NAME);
    if (xact_log_open(&x->log, path, &entries, &n, &max_txid, &torn, err, errlen) != 0) {
        free(path);
        xact_close(x);
        return -1;
    }
    free(path);
    /* The daemon id, the transaction ids handed out, and the decisions kept
     * in the home binds' marker rows since the last sync. */
    if (xact_ids_load(x, cfg->data_dir, err, errlen) != 0 ||
        xact_markers_decisions(cfg, x->synced, &entries, &n, err, errlen) != 0) {
        xact_entries_free(entries, n);
        xact_close(x);
        return -1;
    }
    if (torn)
        log_warn("%s: its last record was cut short by a crash during its append: it was never acted on "
                 "(no bind committed on its word) and is ignored",
                 x->log.path);
    conns = calloc(cfg->nbinds, sizeof *conns);
    decided = calloc(n ? n : 1, sizeof *decided);
    for (size_t i = 0; i < n && conns != NULL && decided != NULL; i++) {
        int rc = xact_recover_entry(cfg, conns, &entries[i], true, err, errlen);
        if (rc < 0) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s: recovery of transactions across binds: %s", x->log.path, err);
            snprintf(err, errlen, "%s", msg);
            xact_recovery_close(cfg, conns);
            xact_entries_free(entries, n);
            free(decided);
            xact_close(x);
            return -1;
        }
        decided[i] = rc == 1;
        committed += rc == 1;
    }
    if (conns == NULL || decided == NULL) {
        snprintf(err, errlen, "out of memory");
        if (conns != NULL)
            xact_recovery_close(cfg, conns);
        xact_entries_free(entries, n);
        free(decided);
        xact_close(x);
        return -1;
    }
    xact_recovery_close(cfg, conns);
    if (n > 0)
        log_info("%s: %zu transaction%s across binds checked in every bind (%zu complete in every file bind "
                 "now, %zu never committed)",
                 x->log.path, n, n == 1 ? "" : "s", committed, n - committed);
    m = xact_markers_max(cfg);
    if (m > max_txid)
        max_txid = m;
    /* The file binds' files, synced before every cut of the log. */
    x->files = calloc(2 * cfg->nbinds + 1, sizeof *x->files);
    for (size_t i = 0; x->files != NULL && i < cfg->nbinds; i++) {
        if (cfg->binds[i].type != BIND_SQLITE_FILE)
            continue;
        if (asprintf(&x->files[x->nfiles], "%s-wal", cfg->binds[i].path) < 0 ||
            (x->files[x->nfiles + 1] = strdup(cfg->binds[i].path)) == NULL) {
            free(x->files);
            x->files = NULL;
            break;
        }
        x->nfiles += 2;
    }
    /* PostgreSQL gids, resolved by the entries' outcomes (or kept for the
     * resolver), and the reservation of transaction ids. */
    if (x->files == NULL || xact_pg_open(x, cfg, entries, decided, n, &max_txid, err, errlen) != 0) {
        if (x->files == NULL)
            snprintf(err, errlen, "out of memory");
        xact_entries_free(entries, n);
        free(decided);
        xact_close(x);
        return -1;
    }
    xact_entries_free(entries, n);
    free(decided);
    /* The attached binds commit without a sync of their own: make what
     * the log vouched for durable before the log forgets it. */
    if (xact_sync_files(x->files, x->nfiles) != 0) {
        snprintf(err, errlen, "%s: cannot sync the binds' files before cutting the log back: %s", x->log.path,
                 strerror(errno));
        xact_close(x);
        return -1;
    }
    /* Every entry is resolved and each bind's recovery committed durably;
     * decisions whose PostgreSQL parts wait for their bind are kept. */
    if (xact_pg_keep(x, &keep, &keeplen) != 0 || xact_log_reset_keep(&x->log, keep, keeplen) != 0) {
        snprintf(err, errlen, "%s: cannot cut the coordinator log back: %s", x->log.path, strerror(errno));
        free(keep);
        xact_close(x);
        return -1;
    }
    free(keep);
    /* Ids above every id seen and the last reservation (the clock as the
     * usual floor), reserved durably before any is handed out; every
     * decision below them is done and synced. */
    {
        struct timeval tv;
        uint64_t base;
        gettimeofday(&tv, NULL);
        base = (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
        if (base <= max_txid)
            base = max_txid + 1;
        if (base <= x->txid_end)
            base = x->txid_end + 1;
        if (xact_ids_save(x, base + XACT_TXID_RESERVE, base) != 0) {
            snprintf(err, errlen, "%s/%s: cannot reserve transaction ids: %s", cfg->data_dir, XACT_TXID_FILE,
                     strerror(errno));
            xact_close(x);
            return -1;
        }
        x->next_txid = x->start_floor = x->gen_start = x->synced = base;
        x->txid_end = base + XACT_TXID_RESERVE;
    }
    x->late_min = UINT64_MAX;
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
bool xact_bind_current(struct xact *x, const char *name, const char *file)
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
void xact_bump_writes(struct xact *x, const char *name)
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
    for (size_t i = 0; i < x->nfiles; i++)
        free(x->files[i]);
    free(x->files);
    free(x->data_dir);
    xact_pg_free(x);
    xact_log_close(&x->log);
    pthread_cond_destroy(&x->cut_done);
    pthread_mutex_destroy(&x->ids_lock);
    pthread_mutex_destroy(&x->lock);
    free(x);
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
 * of their own: the log could redo them), cut the log back (keeping the
 * decisions whose PostgreSQL parts are not resolved), and from then on let
 * the markers older than that go. */
void xact_commit_finished(struct xact *x)
{
    unsigned char *keep = NULL;
    size_t keeplen = 0;
    uint64_t floor = 0;
    bool cut;

    pthread_mutex_lock(&x->lock);
    x->inflight--;
    cut = x->inflight == 0 && !x->unresolved && !x->compacting &&
          (x->log.size > XACT_LOG_COMPACT_BYTES || x->marker_bytes > XACT_LOG_COMPACT_BYTES) &&
          xact_pg_keep(x, &keep, &keeplen) == 0;
    if (cut) {
        /* Commits wait until it is done (their threads); the loop thread
         * never waits for it: its calls take lock only briefly. */
        x->compacting = true;
        floor = x->next_txid;
    }
    pthread_mutex_unlock(&x->lock);
    if (!cut)
        return;
    cut =
        xact_sync_files(x->files, x->nfiles) == 0 &&
        (x->log.size <= XACT_LOG_HEADER && keeplen == 0 ? 0 : xact_log_reset_keep(&x->log, keep, keeplen)) ==
            0 &&
        xact_ids_save(x, 0, floor) == 0;
    free(keep);
    pthread_mutex_lock(&x->lock);
    if (cut) {
        x->gen_start = floor;
        x->late_min = UINT64_MAX;
        x->marker_bytes = 0;
    }
    x->compacting = false;
    pthread_cond_broadcast(&x->cut_done);
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

    outcome = conns == NULL ? -1 : xact_recover_entry(cfg, conns, &e, false, err, sizeof err);
    if (conns == NULL)
        snprintf(err, sizeof err, "out of memory");
    else
        xact_recovery_close(cfg, conns);
    if (outcome == 1) {
        xact_pg_decided(x, txid, job->xact_pg, job->nxact_pg);
        xact_commit_finished(x);
        log_warn("transaction %llu across binds: COMMIT failed part way (%s) and was completed in every bind",
                 (unsigned long long)txid, why);
        if (codec_put_ok_changes(out, 0, NULL) != 0)
            sqlite_reply_error_at(out, w->mark, "NOMEM", "out of memory writing the status line");
        return;
    }
    if (outcome == 0) {
        xact_commit_finished(x);
        snprintf(msg, sizeof msg, "COMMIT failed (%s): the transaction is rolled back in every bind", why);
        sqlite_reply_error_at(out, w->mark, "IOERR", msg);
        job->failed = true;
        return;
    }
    pthread_mutex_lock(&x->lock);
    x->unresolved = true;
    pthread_mutex_unlock(&x->lock);
    xact_commit_finished(x);
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
    job->xact_undecided = true;
}

/* Write txid's marker row into schema k (0: main, with the decision, the
 * encoded record rec, or NULL; i + 1: attached bind i), inside the
 * transaction, and delete the markers below gen_start unless this
 * connection did so for that floor already. The INSERT is prepared once a
 * connection; the table is created (and, in main, given its parts column)
 * when that statement is prepared. */
static int marker_write(struct worker *w, size_t k, const char *schema, uint64_t txid, uint64_t gen_start,
                        const unsigned char *rec, size_t len)
{
    struct xact_conn *xc = w->xact;
    sqlite3_stmt *stmt = xc != NULL ? xc->mark[k] : NULL;
    bool cached = stmt != NULL;
    int rc = SQLITE_OK;

    w->internal = true;
    for (;;) {
        if (stmt == NULL) {
            char *sql = sqlite3_mprintf(
                "CREATE TABLE IF NOT EXISTS \"%w\"." XACT_MARKER_TABLE XACT_MARKER_COLUMNS, schema);
            rc = sql != NULL ? sqlite3_exec(w->db, sql, NULL, NULL, NULL) : SQLITE_NOMEM;
            sqlite3_free(sql);
            /* A table from before decisions were kept in markers. */
            if (rc == SQLITE_OK && k == 0 &&
                sqlite3_table_column_metadata(w->db, "main", XACT_MARKER_TABLE, "parts", NULL, NULL, NULL,
                                              NULL, NULL) != SQLITE_OK)
                rc = sqlite3_exec(w->db, "ALTER TABLE main." XACT_MARKER_TABLE " ADD COLUMN parts BLOB", NULL,
                                  NULL, NULL);
            sql = sqlite3_mprintf(k == 0 ? "INSERT INTO \"%w\"." XACT_MARKER_TABLE
                                           " (txid, at, parts) VALUES (?1, unixepoch(), ?2)"
                                         : "INSERT INTO \"%w\"." XACT_MARKER_TABLE
                                           " (txid, at) VALUES (?1, unixepoch())",
                                  schema);
            if (rc == SQLITE_OK)
                rc = sql != NULL ? sqlite3_prepare_v3(w->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL)
                                 : SQLITE_NOMEM;
            sqlite3_free(sql);
            if (rc != SQLITE_OK)
                break;
        }
        sqlite3_bind_int64(stmt, 1, (sqlite3_int64)txid);
        if (k == 0)
            sqlite3_bind_blob(stmt, 2, rec, (int)len, SQLITE_STATIC);
        rc = sqlite3_step(stmt) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(w->db);
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
        if (rc == SQLITE_OK || !cached)
            break;
        /* The cached statement failed (the table went?): once more from
         * the start. */
        sqlite3_finalize(stmt);
        stmt = NULL;
        if (xc != NULL)
            xc->mark[k] = NULL;
        cached = false;
    }
    if (xc != NULL && rc == SQLITE_OK)
        xc->mark[k] = stmt; /* kept for the next commit */
    else
        sqlite3_finalize(stmt);
    w->internal = false;
    if (rc == SQLITE_OK && (xc == NULL || xc->mark_gc[k] != gen_start)) {
        rc = exec_internal_fmt(w, "DELETE FROM \"%w\"." XACT_MARKER_TABLE " WHERE txid < %llu", schema,
                               (unsigned long long)gen_start);
        if (rc == SQLITE_OK && xc != NULL)
            xc->mark_gc[k] = gen_start;
    }
    return rc;
}

bool xact_commit(struct worker *w, struct job *job, struct buf *out)
{
    struct xact_conn *xc = w->xact;
    struct xact *x = w->sb->bind->host->xact;
    const struct bind_conf *home = w->sb->bind->conf;
    struct xact_part parts[XACT_MAX_ATTACHED + 1 + XACT_MAX_PG];
    const char *schema[XACT_MAX_ATTACHED + 1];
    unsigned char *rec = NULL, *changes[XACT_MAX_ATTACHED + 1] = {NULL};
    size_t nw = 0, reclen = 0, npg = job->nxact_pg;
    uint64_t txid, gen_start;
    bool torn, in_marker;
    char msg[512];
    int rc;

    if (x == NULL || (npg == 0 && (xc == NULL || sqlite3_get_autocommit(w->db))))
        return false;
    w->mark = out->len;
    if (npg > XACT_MAX_PG) {
        snprintf(msg, sizeof msg, "a transaction across binds may write at most %d PostgreSQL binds",
                 XACT_MAX_PG);
        commit_fail(w, job, out, "XACT", msg);
        return true;
    }
    /* With PostgreSQL parts the home bind's commit is the commit point
     * even when it wrote nothing else: its marker row makes it written. */
    if (npg > 0 && sqlite3_get_autocommit(w->db) &&
        (rc = sqlite_conn_exec_internal(w, "BEGIN")) != SQLITE_OK) {
        commit_fail(w, job, out, sqlite_code(rc), sqlite3_errmsg(w->db));
        return true;
    }
    if (npg > 0 || sqlite3_txn_state(w->db, "main") == SQLITE_TXN_WRITE)
        schema[nw++] = "main";
    for (size_t i = 0; xc != NULL && i < xc->n; i++)
        if (sqlite3_txn_state(w->db, xc->names[i]) == SQLITE_TXN_WRITE)
            schema[nw++] = xc->names[i];
    /* One bind written: a plain COMMIT, unless it is an attached file
     * bind (which does not sync its commits: the log must vouch). */
    if (npg == 0 && (nw == 0 || (nw == 1 && (strcmp(schema[0], "main") == 0 ||
                                             xc->memory[xact_attached_index(xc, schema[0])]))))
        return false;

    if (xc != NULL && xc->nopk[0] != '\0') {
        snprintf(
            msg, sizeof msg,
            "table %s has no PRIMARY KEY: a transaction across binds can write such a table only in the bind "
            "it began on; the transaction is rolled back",
            xc->nopk);
        commit_fail(w, job, out, "XACT", msg);
        return true;
    }
    txid = npg > 0 ? job->xact_txid : xact_txid_new(x);
    pthread_mutex_lock(&x->lock);
    while (x->compacting)
        pthread_cond_wait(&x->cut_done, &x->lock);
    /* A txid handed out before the last cut of the log (a transaction
     * with PostgreSQL parts takes its id early): markers from it on must
     * stay while its record is in the log. */
    if (txid < x->gen_start && txid < x->late_min)
        x->late_min = txid;
    gen_start = x->gen_start < x->late_min ? x->gen_start : x->late_min;
    /* The decision goes into the home bind's marker row, and its commit
     * (one sync) decides, when the home is a file bind the transaction
     * wrote and its id is of this generation (decisions in markers below
     * the last sync are not looked at by recovery); otherwise into the
     * log, fsynced before the home commits. */
    in_marker = home->type == BIND_SQLITE_FILE && strcmp(schema[0], "main") == 0 && txid >= x->gen_start;
    x->inflight++;
    pthread_mutex_unlock(&x->lock);

    /* 1. The marker rows, inside the transaction (captured with the rest;
     * the home bind's comes with the decision when it holds it). */
    for (size_t i = in_marker ? 1 : 0; i < nw; i++) {
        size_t k = strcmp(schema[i], "main") == 0 ? 0 : (size_t)xact_attached_index(xc, schema[i]) + 1;
        rc = marker_write(w, k, schema[i], txid, gen_start, NULL, 0);
        if (rc != SQLITE_OK) {
            snprintf(msg, sizeof msg, "bind %s: cannot write the transaction's marker: %s",
                     strcmp(schema[i], "main") == 0 ? home->name : schema[i], sqlite3_errmsg(w->db));
            commit_fail(w, job, out, sqlite_code(rc), msg);
            xact_commit_finished(x);
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
            int k = xact_attached_index(xc, schema[i]);
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
                xact_commit_finished(x);
                return true;
            }
            changes[i] = cs;
            p->change = cs;
            p->len = (size_t)n;
        }
    }
    for (size_t i = 0; i < npg; i++)
        parts[nw + i] = (struct xact_part){.bind = (char *)job->xact_pg[i], .flags = XACT_PART_PG};
    xact_crash_point("markers");
    rc = xact_log_encode_commit(txid, parts, nw + npg, &rec, &reclen);
    if (rc != 0) {
        free_changes(changes, nw);
        commit_fail(w, job, out, "XACT", "the transaction's changes are too large for the coordinator log");
        xact_commit_finished(x);
        return true;
    }
    if (in_marker) {
        rc = marker_write(w, 0, "main", txid, gen_start, rec, reclen);
        free(rec);
        if (rc != SQLITE_OK) {
            snprintf(msg, sizeof msg, "bind %s: cannot write the transaction's marker: %s", home->name,
                     sqlite3_errmsg(w->db));
            free_changes(changes, nw);
            commit_fail(w, job, out, sqlite_code(rc), msg);
            xact_commit_finished(x);
            return true;
        }
        pthread_mutex_lock(&x->lock);
        x->marker_bytes += reclen;
        pthread_mutex_unlock(&x->lock);
        xact_crash_point("logged");
        goto commit;
    }
    torn = xact_crash_armed("log_torn");
    if (xact_log_append(&x->log, rec, reclen, true, torn) != 0) {
        snprintf(msg, sizeof msg, "%s: cannot write the coordinator log: %s; the transaction is rolled back",
                 x->log.path, strerror(errno));
        free(rec);
        free_changes(changes, nw);
        commit_fail(w, job, out, "IOERR", msg);
        xact_commit_finished(x);
        return true;
    }
    free(rec);
    if (torn) {
        log_warn("SQLMUX_XACT_CRASH=log_torn: killing the daemon after half a record (test crash point)");
        raise(SIGKILL);
    }
    xact_crash_point("logged");

    /* 3. Commit: main first, then each attached bind. */
commit:
    if (crash_root != NULL && xact_crash_armed("first_committed"))
        crash_home_wal = sqlite3_filename_wal(sqlite3_db_filename(w->db, "main"));
    if (xc != NULL)
        xc->committing = true;
    rc = sqlite_conn_exec_internal(w, "COMMIT");
    if (xc != NULL)
        xc->committing = false;
    crash_home_wal = NULL;
    xact_crash_point("committed");
    if (rc == SQLITE_OK) {
        free_changes(changes, nw);
        xact_pg_decided(x, txid, job->xact_pg, npg);
        xact_commit_finished(x);
        if (codec_put_ok_changes(out, 0, NULL) != 0)
            sqlite_reply_error_at(out, w->mark, "NOMEM", "out of memory writing the status line");
        return true;
    }
    commit_broken(w, job, out, txid, parts, nw + npg);
    free_changes(changes, nw);
    return true;
}
