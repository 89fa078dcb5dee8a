/*
 * Quick reads on the loop thread.
 *
 * Quick reads skip the trip to a worker: a SELECT outside a transaction is
 * first tried on the loop thread's own connection to the bind, which can
 * neither wait for a lock (busy timeout 0) nor for the disk (the in-memory
 * bind's pages are RAM; a file bind's are read only when the page cache
 * has them, see nowait_vfs.h), and is stopped when it runs past
 * QUICK_BUDGET_NS or its answer grows past QUICK_MAX_OUTPUT. Anything that
 * does not finish that way, and every error, goes to a worker as usual, so
 * the answer is the same; a statement stopped for time or size is sent
 * straight to the workers for its next QUICK_SKIP_RUNS runs. A point query
 * then costs no thread hand-off, and the loop never waits.
 *
 * Quick writes, the same for a lone autocommit INSERT, UPDATE or DELETE
 * on the in-memory bind (sqlite_write_inline): it runs on a second loop
 * connection when the bind's writer has nothing to do, else it goes to
 * the writer to commit with the others.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "daemon/backend_sqlite.h"
#include "daemon/hash.h"
#include "daemon/log.h"
#include "daemon/nowait_vfs.h"
#include "daemon/xact.h"

/* ---- Quick reads on the loop thread ------------------------------------ */

int sqlite_quick_progress(void *arg)
{
    const struct worker *w = arg;
    return uv_hrtime() > w->deadline_ns && sqlite_conn_may_stop(w);
}

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
    sb->quick_wrote = false;
    sb->quick_calm = !sb->quick_sent;
    /* After a turn that sent writes to the workers, look at the next one
     * too: the first without is calm again. */
    if (!sb->quick_sent)
        bind_host_check_stop(sb->bind->host, h);
    sb->quick_sent = false;
}

void sqlite_quick_write_sent(struct sqlite_bind *sb)
{
    if (sb->quick_writer == NULL)
        return;
    sb->quick_sent = true;
    bind_host_check_start(sb->bind->host, sb->quick_turn, on_quick_turn);
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
    bind_host_check_start(sb->bind->host, sb->quick_turn, on_quick_turn);
    return 0;
}

bool sqlite_quick_skipped(struct quick_skip *skip, uint64_t h)
{
    struct quick_skip *sl = &skip[h % QUICK_SKIP_SLOTS];

    if (sl->hash != h || sl->left == 0)
        return false;
    sl->left--;
    return true;
}

bool sqlite_quick_run(struct worker *w, struct quick_skip *skip, uint64_t h, const char *sql, size_t len,
                      const struct request *req, uint64_t start_ns, struct buf *out, uint64_t *rows, int *rc)
{
    sqlite3_stmt *stmt;
    bool ok;

    w->mark = out->len;
    *rows = 0;
    if (sql == req->text)
        stmt = sqlite_stmt_for(w, req, h, &req, rc);
    else
        stmt = sqlite_stmt_get(w, sql, len, hash_text(sql, len), rc);
    ok = stmt != NULL;
    if (ok) {
        ok = sqlite3_stmt_readonly(stmt) && sqlite3_column_count(stmt) > 0 &&
             sqlite_bind_params(stmt, req, out, w->mark) == 0;
        if (ok) {
            w->deadline_ns = start_ns + QUICK_BUDGET_NS;
            *rc = sqlite_stream_rows(w, NULL, stmt, out, rows);
            ok = *rc == SQLITE_DONE && sqlite_put_rows_status(out, *rows) == 0;
        }
        sqlite_stmt_done(w, stmt);
    }
    if (ok)
        return true;
    buf_truncate(out, w->mark);
    *rows = 0;
    if ((*rc & 0xff) == SQLITE_INTERRUPT || (*rc & 0xff) == SQLITE_TOOBIG || (*rc & 0xff) == SQLITE_AUTH) {
        skip[h % QUICK_SKIP_SLOTS].hash = h;
        skip[h % QUICK_SKIP_SLOTS].left = QUICK_SKIP_RUNS;
    }
    return false;
}

bool sqlite_read_inline(struct bind *b, const struct request *req, uint64_t start_ns, struct buf *out,
                        uint64_t *rows)
{
    struct sqlite_bind *sb = b->impl;
    struct worker *w = sb->quick;
    uint64_t h;
    int rc = SQLITE_OK;

    if (w == NULL || req->len > QUICK_MAX_SQL)
        return false;
    h = request_hash(req);
    if (sqlite_quick_skipped(sb->quick_skip, h))
        return false;
    sqlite_conn_max_value(w, confref_cfg(b->host->cfgref)->max_value, QUICK_MAX_LENGTH);
    w->normalize = confref_cfg(b->host->cfgref)->normalize_literals;
    if (quick_snapshot(sb) != 0)
        return false;
    if (sqlite_quick_run(w, sb->quick_skip, h, req->text, req->len, req, start_ns, out, rows, &rc))
        return true;
    log_debug("bind %s: a read goes to a worker: %s", b->conf->name,
              rc == SQLITE_OK || rc == SQLITE_DONE ? "not a plain read" : sqlite3_errstr(rc));
    quick_end(sb);
    return false;
}

/* ---- Quick writes on the loop thread ----------------------------------- */

/* The quick writer's log hook, in place of SQLite's automatic checkpoint
 * (which would copy up to the whole log into the database on the loop):
 * remember how long the log is. */
static int on_quick_wal(void *arg, sqlite3 *db, const char *name, int pages)
{
    struct sqlite_bind *sb = arg;

    (void)db;
    (void)name;
    sb->quick_wal_pages = pages;
    return SQLITE_OK;
}

/* Whether the bind's writer is free with nothing queued: no write of
 * another client is under way or waiting (they would rather commit as a
 * group). */
static bool writer_free(struct sqlite_bind *sb)
{
    bool free_now;

    pthread_mutex_lock(&sb->lock);
    free_now = sb->nworkers > 0 && !sb->workers[0].busy && sb->workers[0].head == NULL;
    pthread_mutex_unlock(&sb->lock);
    return free_now;
}

/* A lone autocommit write on the loop's writer connection. It cannot
 * wait: the in-memory bind's pages are RAM and its commits do not sync,
 * the write lock is taken without waiting (busy timeout 0), and the
 * statement is stopped past QUICK_BUDGET_NS. SQLite rolls back an
 * autocommit statement that does not run to its end (interrupted, busy,
 * any error), so a worker can run it afresh and give the answer, as it
 * would have without this shortcut; once it ran to its end it is
 * committed and answered here. Statements with RETURNING go to a worker
 * (their rows would be read after the changes are made). */
bool sqlite_write_inline(struct bind *b, const struct request *req, enum stmt_kind kind, uint64_t start_ns,
                         struct buf *out)
{
    struct sqlite_bind *sb = b->impl;
    struct worker *w = sb->quick_writer;
    const struct request *run = req;
    sqlite3_stmt *stmt;
    sqlite3_int64 before;
    size_t mark = out->len;
    uint64_t h;
    int rc = SQLITE_OK;

    if (w == NULL || sb->quick_wrote || sb->quick_sent || !sb->quick_calm || req->len > QUICK_MAX_SQL)
        return false;
    if (sb->quick_wal_pages >= QUICK_WAL_PAGES) {
        /* A worker's commit checkpoints the log; the next quick commit
         * measures it again. */
        sb->quick_wal_pages = 0;
        return false;
    }
    h = request_hash(req);
    if (sqlite_quick_skipped(sb->quick_skip, h) || !writer_free(sb))
        return false;
    sb->quick_wrote = true;
    bind_host_check_start(sb->bind->host, sb->quick_turn, on_quick_turn);
    sqlite_conn_max_value(w, confref_cfg(b->host->cfgref)->max_value, QUICK_MAX_LENGTH);
    w->mark = mark;
    w->normalize = confref_cfg(b->host->cfgref)->normalize_literals;
    stmt = sqlite_stmt_for(w, req, h, &run, &rc);
    if (stmt == NULL)
        goto fail;
    if (sqlite3_column_count(stmt) > 0 || sqlite_bind_params(stmt, run, out, mark) != 0) {
        sqlite_stmt_done(w, stmt);
        goto fail;
    }
    w->denied = NULL;
    w->denied_code = NULL;
    w->altering = false;
    before = sqlite3_total_changes64(w->db);
    w->deadline_ns = start_ns + QUICK_BUDGET_NS;
    w->stepping = stmt; /* once committed, it is not stopped (sqlite_conn_may_stop) */
    rc = sqlite3_step(stmt);
    w->stepping = NULL;
    if (rc != SQLITE_DONE) {
        sqlite_stmt_done(w, stmt);
        goto fail;
    }
    /* Committed: reads from now on take a fresh snapshot. */
    atomic_fetch_add_explicit(&sb->writes, 1, memory_order_release);
    if (sqlite_put_done_status(w->db, stmt, kind, before, 0, out) != 0)
        sqlite_reply_error_at(out, mark, "NOMEM", "out of memory writing the status line");
    sqlite_stmt_done(w, stmt);
    return true;
fail:
    buf_truncate(out, mark);
    if (!sqlite3_get_autocommit(w->db))
        sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    if ((rc & 0xff) == SQLITE_INTERRUPT || (rc & 0xff) == SQLITE_AUTH) {
        sb->quick_skip[h % QUICK_SKIP_SLOTS].hash = h;
        sb->quick_skip[h % QUICK_SKIP_SLOTS].left = QUICK_SKIP_RUNS;
    }
    log_debug("bind %s: a write goes to a worker: %s", b->conf->name,
              rc == SQLITE_OK ? "it returns rows, or its parameters do not fit" : sqlite3_errstr(rc));
    return false;
}

/* ---- A transaction's writes on the loop thread -------------------------- */

/* The schema version of w's connection, as its transaction sees it; -1
 * when it cannot be read. */
static int64_t schema_version(struct worker *w)
{
    static const char sql[] = "PRAGMA main.schema_version";
    int64_t v = -1;
    sqlite3_stmt *stmt;
    int rc;

    w->internal = true;
    stmt = sqlite_stmt_get(w, sql, sizeof sql - 1, hash_text(sql, sizeof sql - 1), &rc);
    if (stmt != NULL && sqlite3_step(stmt) == SQLITE_ROW)
        v = sqlite3_column_int64(stmt, 0);
    if (stmt != NULL)
        sqlite_stmt_done(w, stmt);
    w->internal = false;
    return v;
}

/* A read inside a transaction of the in-memory bind, on its connection w
 * (see sqlite_txn_inline), so it sees the transaction's own writes: as a
 * quick read, within QUICK_BUDGET_NS from start_ns and QUICK_MAX_OUTPUT,
 * with the quick connections' bounds on any one step (SQLite's limits on
 * a value's length and a LIKE pattern's, set for it and put back after).
 * It cannot wait for a lock: the transaction has what it reads. Stopping
 * a read leaves the transaction as it was, so one that does not run to
 * its end here (stopped, too large, or any error) goes to the worker,
 * which runs it afresh and gives the answer it would have given. */
static bool txn_read(struct sqlite_bind *sb, struct worker *w, const struct request *req, uint64_t start_ns,
                     struct buf *out, uint64_t *rows)
{
    const struct config *cfg = confref_cfg(sb->bind->host->cfgref);
    const struct request *run = req;
    int pattern = sqlite3_limit(w->db, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, QUICK_MAX_PATTERN);
    uint64_t h = request_hash(req);
    sqlite3_stmt *stmt;
    bool ok;
    int rc = SQLITE_OK;

    *rows = 0;
    if (sqlite_quick_skipped(sb->quick_skip, h))
        return false;
    sqlite_conn_max_value(w, cfg->max_value, QUICK_MAX_LENGTH);
    w->normalize = cfg->normalize_literals;
    w->mark = out->len;
    stmt = sqlite_stmt_for(w, req, h, &run, &rc);
    ok = stmt != NULL && sqlite3_stmt_readonly(stmt) && sqlite3_column_count(stmt) > 0 &&
         sqlite_bind_params(stmt, run, out, w->mark) == 0;
    if (ok) {
        w->started_ns = start_ns; /* the worker's progress handler stops it at deadline_ns */
        w->deadline_ns = start_ns + QUICK_BUDGET_NS;
        rc = sqlite_stream_rows(w, NULL, stmt, out, rows);
        ok = rc == SQLITE_DONE && sqlite_put_rows_status(out, *rows) == 0;
        w->started_ns = 0;
        w->deadline_ns = 0;
    }
    if (stmt != NULL)
        sqlite_stmt_done(w, stmt);
    sqlite3_limit(w->db, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, pattern);
    if (ok)
        return true;
    buf_truncate(out, w->mark);
    *rows = 0;
    if ((rc & 0xff) == SQLITE_INTERRUPT || (rc & 0xff) == SQLITE_TOOBIG) {
        sb->quick_skip[h % QUICK_SKIP_SLOTS].hash = h;
        sb->quick_skip[h % QUICK_SKIP_SLOTS].left = QUICK_SKIP_RUNS;
    }
    log_debug("bind %s: a read in a transaction goes to its worker: %s", sb->bind->conf->name,
              rc == SQLITE_OK || rc == SQLITE_DONE ? "not a plain read" : sqlite3_errstr(rc));
    return false;
}

/* A statement inside a transaction of the in-memory bind, on the
 * connection the transaction is pinned to, when its worker has nothing of
 * the session's to do (it then never touches the connection): a read
 * (txn_read), or a write. A write cannot wait:
 * the pages are RAM, the transaction holds the write lock already, and
 * its program writes one row of main with no loop, trigger or subquery
 * (sqlite_stmt_straight, for the schema version it runs under), so its
 * time is bounded by its values, which a budget could not stop anyway
 * (an interrupted write rolls back the whole transaction). Whatever it
 * answers, an error included, is the answer a worker would give. A file
 * bind's transaction stays on its worker: a page may have to be read from
 * the disk. */
bool sqlite_txn_inline(struct bind *b, uint64_t owner, const struct request *req, enum stmt_kind kind,
                       uint64_t start_ns, struct buf *out, uint64_t *rows, bool *txn_open)
{
    struct sqlite_bind *sb = b->impl;
    const struct config *cfg = confref_cfg(b->host->cfgref);
    const struct request *run = req;
    struct worker *w = NULL;
    size_t mark = out->len;
    sqlite3_int64 before;
    sqlite3_stmt *stmt;
    int64_t schema;
    int rc = SQLITE_OK;

    *txn_open = true;
    *rows = 0;
    if (sb->quick_writer == NULL || req->len > QUICK_MAX_SQL ||
        (kind != STMT_SELECT && kind != STMT_INSERT && kind != STMT_UPDATE && kind != STMT_DELETE))
        return false;
    pthread_mutex_lock(&sb->lock);
    for (int i = 0; i < sb->nworkers && w == NULL; i++)
        if (sb->workers[i].pinned == owner && sb->workers[i].head == NULL)
            w = &sb->workers[i];
    pthread_mutex_unlock(&sb->lock);
    if (w != NULL && kind == STMT_SELECT)
        return !sqlite3_get_autocommit(w->db) && txn_read(sb, w, req, start_ns, out, rows);
    if (w == NULL || w->query_only)
        return false;
    /* Only this connection can change the schema or end the transaction
     * while it holds the write lock, and only with a job (run_job forgets
     * the version) or an error here: one look at both per stretch of
     * writes here (a name lookup and a schema read less per statement). */
    if (w->txn_schema < 0 && sqlite3_txn_state(w->db, "main") == SQLITE_TXN_WRITE)
        w->txn_schema = schema_version(w);
    if ((schema = w->txn_schema) < 0)
        return false;
    sqlite_conn_max_value(w, cfg->max_value, INT_MAX);
    w->normalize = cfg->normalize_literals;
    stmt = sqlite_stmt_for(w, req, request_hash(req), &run, &rc);
    if (stmt == NULL)
        return false;
    if (sqlite3_column_count(stmt) > 0 || !sqlite_stmt_straight(w, stmt, schema) ||
        sqlite_bind_params(stmt, run, out, mark) != 0) {
        buf_truncate(out, mark);
        sqlite_stmt_done(w, stmt);
        return false;
    }
    w->mark = mark;
    w->denied = NULL;
    w->denied_code = NULL;
    w->altering = false;
    w->deadline_ns = 0; /* the worker's progress handler leaves it alone */
    w->started_ns = 0;
    before = sqlite3_total_changes64(w->db);
    w->stepping = stmt;
    rc = sqlite3_step(stmt);
    w->stepping = NULL;
    if (rc == SQLITE_DONE) {
        if (sqlite_put_done_status(w->db, stmt, kind, before, 0, out) != 0)
            sqlite_reply_error_at(out, mark, "NOMEM", "out of memory writing the status line");
    } else {
        sqlite_reply_db_error(w, out, rc);
        if (sqlite3_get_autocommit(w->db))
            sqlite_note_rolled_back(out);
    }
    sqlite_stmt_done(w, stmt);
    if (sqlite3_get_autocommit(w->db)) {
        /* An error ended the transaction (a conflict clause ROLLBACK):
         * the worker is free again, as after a job that ended it. */
        *txn_open = false;
        w->txn_schema = -1;
        xact_txn_end(w);
        pthread_mutex_lock(&sb->lock);
        w->pinned = 0;
        if (sb->head != NULL && w->waiting)
            pthread_cond_signal(&w->wake);
        pthread_mutex_unlock(&sb->lock);
    }
    return true;
}

/* ---- Opening ------------------------------------------------------------ */

/* A connection for the loop thread, through vfs (NULL: the default), with
 * the settings in `pragmas` (NULL: none): it never waits for a lock, and
 * its limits make any one step short (a longer string, pattern or text is
 * an error, so a worker runs that statement instead). NULL with err set
 * on failure (*out then holds what to free). */
static struct worker *quick_conn_open(struct sqlite_bind *sb, const char *vfs, const char *pragmas,
                                      struct worker **out, char *err, size_t errlen)
{
    struct worker *w = calloc(1, sizeof *w);

    if (w == NULL || (w->cache = calloc(sb->stmt_cache + 1, sizeof *w->cache)) == NULL) {
        free(w);
        snprintf(err, errlen, "bind %s: out of memory", sb->bind->conf->name);
        return NULL;
    }
    w->sb = sb;
    w->tail = &w->head;
    w->quick = true;
    *out = w;
    if (sqlite_conn_open(sb, &w->db, vfs, err, errlen) != 0 || sqlite_conn_harden(w, NULL, err, errlen) != 0)
        return NULL;
    if (pragmas != NULL)
        sqlite_conn_exec_internal(w, pragmas);
    sqlite_conn_exec_internal(w, "PRAGMA temp_store = MEMORY");
    sqlite3_busy_timeout(w->db, 0);
    sqlite_conn_max_value(w, confref_cfg(sb->bind->host->cfgref)->max_value, QUICK_MAX_LENGTH);
    sqlite3_limit(w->db, SQLITE_LIMIT_SQL_LENGTH, QUICK_MAX_SQL);
    sqlite3_limit(w->db, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, QUICK_MAX_PATTERN);
    sqlite3_progress_handler(w->db, QUICK_PROGRESS_STEPS, sqlite_quick_progress, w);
    sqlite_schema_refresh(w->db); /* opens the WAL now: no file is opened while serving */
    return w;
}

/* Open the quick-read connection (it reads only: the authorizer refuses
 * writes) and, for the in-memory bind, the quick writer. */
int sqlite_quick_open(struct sqlite_bind *sb, char *err, size_t errlen)
{
    bool memory = sb->bind->conf->type == BIND_SQLITE_MEMORY;
    struct worker *w;
    char why[300];
    int rc;

    /* A file bind's pages come from the disk unless cached: its quick
     * connection reads through the nowait VFS, where the file system
     * supports that. */
    if (!memory && nowait_vfs_check(sb->filename, why, sizeof why) != 0) {
        log_info("bind %s: every statement runs on a worker thread: %s", sb->bind->conf->name, why);
        return 0;
    }
    /* A file bind's writes stay on the workers: a commit syncs the log
     * (synchronous = FULL), and even a write into the page cache may wait
     * for the disk. */
    if (memory && quick_conn_open(sb, NULL, NULL, &sb->quick_writer, err, errlen) == NULL)
        return -1;
    if (sb->quick_writer != NULL) {
        sb->quick_calm = true;
        sqlite3_wal_hook(sb->quick_writer->db, on_quick_wal, sb);
    }
    /* A file bind's pages: every read through xRead (not mapped), kept in
     * a cache larger than the default 2 MB, since the loop answers most
     * reads. */
    w = quick_conn_open(sb, memory ? NULL : NOWAIT_VFS_NAME,
                        memory ? NULL : "PRAGMA mmap_size = 0; PRAGMA cache_size = " QUICK_CACHE_KIB,
                        &sb->quick, err, errlen);
    if (w == NULL)
        return -1;
    w->readonly = true;
    sqlite_conn_query_only(w, true);
    sb->quick_turn = malloc(sizeof *sb->quick_turn);
    if (sb->quick_turn == NULL) {
        snprintf(err, errlen, "bind %s: out of memory", sb->bind->conf->name);
        return -1;
    }
    if ((rc = uv_check_init(sb->bind->host->loop, sb->quick_turn)) != 0) {
        free(sb->quick_turn);
        sb->quick_turn = NULL;
        snprintf(err, errlen, "bind %s: %s", sb->bind->conf->name, uv_strerror(rc));
        return -1;
    }
    sb->quick_turn->data = sb;
    if (sqlite3_prepare_v3(w->db, "BEGIN", -1, SQLITE_PREPARE_PERSISTENT, &sb->quick_begin, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v3(w->db, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT, &sb->quick_commit, NULL) !=
            SQLITE_OK) {
        snprintf(err, errlen, "bind %s: %s", sb->bind->conf->name, sqlite3_errmsg(w->db));
        return -1;
    }
    return 0;
}
