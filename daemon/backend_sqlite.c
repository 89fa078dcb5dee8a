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
 *
 * Each bind's checkpoint thread keeps the write-ahead log bounded when
 * SQLite's own checkpoints cannot (readers that always overlap), and
 * empties it when the bind is idle (see WAL_CHECK_MS).
 *
 * The other parts are in sqlite_conn.c (connections, authorizer),
 * sqlite_exec.c (running statements), sqlite_quick.c (quick reads and
 * writes on the loop thread) and sqlite_memory.c (the in-memory bind and snapshots);
 * backend_sqlite.h says what each offers.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/backend_sqlite.h"
#include "daemon/catalog.h"
#include "daemon/fsutil.h"
#include "daemon/log.h"
#include "daemon/migrate.h"
#include "daemon/route.h"
#include "daemon/snapshot.h"
#include "daemon/xact.h"

/* .tables: one row per table or view, "=name\ttype\tbind\trouted_to\trule\twarning",
 * routed by job->catset. */
static void run_tables(struct worker *w, struct job *job, struct buf *out)
{
    static const char sql[] =
        "SELECT name, type FROM sqlite_schema WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '" XACT_MARKER_TABLE "' ORDER BY name";
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v2(w->db, sql, -1, &stmt, NULL);

    if (rc != SQLITE_OK) {
        sqlite_reply_db_error(w, out, rc);
        job->failed = true;
        return;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(stmt, 0);
        const char *type = (const char *)sqlite3_column_text(stmt, 1);
        size_t n = (size_t)sqlite3_column_bytes(stmt, 0);
        char *lower = malloc(n + 1);

        if (lower == NULL || name == NULL || type == NULL) {
            free(lower);
            rc = SQLITE_NOMEM;
            break;
        }
        for (size_t i = 0; i < n; i++)
            lower[i] = (name[i] >= 'A' && name[i] <= 'Z') ? (char)(name[i] + 32) : name[i];
        lower[n] = '\0';
        rc = route_put_table_row(out, confref_cfg(job->cfgref), job->catset, w->sb->bind->index, name, n,
                                 type, "", lower);
        free(lower);
        if (rc != 0) {
            rc = SQLITE_NOMEM;
            break;
        }
        job->rows++;
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) {
        sqlite_reply_db_error(w, out, rc);
        job->failed = true;
    }
}

/* Read the bind's catalog on w's connection into *out, unless its
 * schema_version is still `known` (-1: read anyway): every table and view
 * of main, by its bare and its main. name. Outside a transaction only.
 * *out stays NULL when nothing changed or on an error (logged: the next
 * read tries again). */
static void read_catalog(struct worker *w, int64_t known, struct catalog **out)
{
    static const char names[] = "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') "
                                "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'";
    sqlite3_stmt *stmt = NULL;
    struct catalog *c = NULL;
    int64_t version = -1;
    int rc;

    w->internal = true;
    /* One read transaction: the version read first labels names no older
     * than it. */
    rc = sqlite3_exec(w->db, "BEGIN", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(w->db, "PRAGMA schema_version", -1, &stmt, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        version = sqlite3_column_int64(stmt, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(stmt);
    stmt = NULL;
    if (rc == SQLITE_OK && version != known) {
        c = catalog_new(version);
        rc = c == NULL ? SQLITE_NOMEM : sqlite3_prepare_v2(w->db, names, -1, &stmt, NULL);
        while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
            const char *name = (const char *)sqlite3_column_text(stmt, 0);
            rc = name == NULL || catalog_add(c, "main", name, true) != 0 ? SQLITE_NOMEM : SQLITE_OK;
        }
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
        sqlite3_finalize(stmt);
    }
    if (rc != SQLITE_OK)
        log_warn("bind %s: reading its catalog: %s", w->sb->bind->conf->name, sqlite3_errstr(rc));
    if (!sqlite3_get_autocommit(w->db))
        sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL);
    w->internal = false;
    if (rc != SQLITE_OK) {
        catalog_drop(c);
        return;
    }
    if (c != NULL)
        catalog_seal(c);
    *out = c;
}

/* Statements after which the schema may differ from the catalog: DDL, and
 * the end of a transaction that may have run some (outside one, the
 * schema_version check that follows is cheap). */
static bool schema_may_change(enum stmt_kind kind)
{
    return kind == STMT_DDL || kind == STMT_COMMIT || kind == STMT_SAVEPOINT || kind == STMT_OTHER;
}

/* .migrations: the bind's migration files merged with its version table. */
static void run_migrations(struct worker *w, struct job *job, struct buf *out)
{
    const struct config *cfg = confref_cfg(job->cfgref);
    const char *bind_name = w->sb->bind->conf->name;
    struct migration_rows rows = {0};
    struct migration_set set;
    char err[1024];

    if (cfg->migrations == NULL)
        return;
    if (migrate_scan(cfg->migrations, bind_name, &set, err, sizeof err) != 0) {
        sqlite_reply_error(out, "MIGRATION", err);
        job->failed = true;
        return;
    }
    if (migrate_sqlite_rows(w->db, &rows, err, sizeof err) != 0) {
        sqlite_reply_error(out, "SQL", err);
        job->failed = true;
    } else if (migrate_put_status(bind_name, &set, &rows, out, &job->rows) != 0) {
        sqlite_reply_error(out, "NOMEM", "out of memory");
        job->failed = true;
    }
    migrate_rows_free(&rows);
    migrate_set_free(&set);
}

struct job *sqlite_queue_pop(struct job **head, struct job ***tail)
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
        struct job *job = sqlite_queue_pop(&w->head, &w->tail);
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

/* The worker is through with what it popped (worker_main): free again,
 * for sqlite_submit and for .stats' in_use. Cleared before the last answer
 * is posted, so a client holding its answer never sees the connection
 * still busy. Bind's lock held. */
static void worker_done(struct worker *w)
{
    w->busy = false;
    w->writing = false;
}

/* Run one job and post its answer. more: other jobs popped with it are
 * still to run on w (run_group's fallback), so w stays busy. */
static void run_job(struct worker *w, struct job *job, bool more)
{
    struct buf out = BUF_INIT;

    w->txn_schema = -1;
    if (atomic_load(&job->cancelled) && job->type == JOB_EXEC) {
        job->failed = true;
    } else {
        switch (job->type) {
        case JOB_EXEC: sqlite_exec_job(w, job, &out); break;
        case JOB_LIST_TABLES: run_tables(w, job, &out); break;
        case JOB_CATALOG: read_catalog(w, job->catalog_version, &job->catalog); break;
        case JOB_MIGRATION_STATE: run_migrations(w, job, &out); break;
        case JOB_SAVE_SNAPSHOT: /* the snapshot thread's (sqlite_submit) */
        case JOB_RELEASE: break;
        }
    }
    /* A client that is gone, or a release, leaves no transaction behind. */
    if ((job->type == JOB_RELEASE || atomic_load(&job->cancelled)) && !sqlite3_get_autocommit(w->db))
        sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    job->in_txn = !sqlite3_get_autocommit(w->db);
    if (!job->in_txn)
        xact_txn_end(w);
    /* A schema change comes back with its statement (catalog_refresh.h). */
    if (job->type == JOB_EXEC && !job->in_txn && schema_may_change(job->kind) &&
        !atomic_load(&job->cancelled))
        read_catalog(w, job->catalog_version, &job->catalog);

    pthread_mutex_lock(&w->sb->lock);
    w->pinned = job->in_txn ? job->owner : 0;
    if (w->pinned != 0 && w->head != NULL)
        writer_requeue(w->sb, w);
    if (!more)
        worker_done(w);
    pthread_mutex_unlock(&w->sb->lock);
    job_post_done(job, &out);
}

/* ---- Group commit ------------------------------------------------------ */

/* Whether a job may share a transaction with other sessions' jobs: one
 * INSERT, UPDATE or DELETE outside any transaction. */
static bool job_groupable(const struct job *job)
{
    return job->type == JOB_EXEC && job->owner != 0 && job->begin_sql == NULL && job->nmore == 0 &&
           !job->readonly &&
           (job->kind == STMT_INSERT || job->kind == STMT_UPDATE || job->kind == STMT_DELETE);
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
    case SQLITE_TOOBIG: return true;
    default: return false;
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

    w->txn_schema = -1;
    for (size_t i = 0; i < n; i++)
        outs[i] = (struct buf)BUF_INIT;
    sqlite_conn_query_only(w, false);
    rc = xact_begin(w, "BEGIN IMMEDIATE", true);
    if ((rc & 0xff) == SQLITE_BUSY) {
        /* Another client's transaction kept the write lock for all of
         * busy_timeout: each of these would have waited as long and got
         * the same answer. */
        pthread_mutex_lock(&w->sb->lock);
        worker_done(w);
        pthread_mutex_unlock(&w->sb->lock);
        for (size_t i = 0; i < n; i++)
            job_fail(jobs[i], sqlite_code(rc), sqlite3_errmsg(w->db));
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
        sqlite_exec_job(w, jobs[i], &outs[i]);
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
            run_job(w, jobs[i], i + 1 < n);
        }
        return;
    }
    atomic_fetch_add_explicit(&w->sb->writes, 1, memory_order_release);
    pthread_mutex_lock(&w->sb->lock);
    worker_done(w);
    pthread_mutex_unlock(&w->sb->lock);
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
            job = sqlite_queue_pop(&w->head, &w->tail);
        else if (w->pinned == 0 && sb->head != NULL && !leave_to_others(sb, w))
            job = sqlite_queue_pop(&sb->head, &sb->tail);
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
                group[n++] = sqlite_queue_pop(&w->head, &w->tail);
            pthread_mutex_unlock(&sb->lock);
            run_group(w, group, n);
        } else {
            pthread_mutex_unlock(&sb->lock);
            run_job(w, job, false);
        }
        pthread_mutex_lock(&sb->lock);
    }
    pthread_mutex_unlock(&sb->lock);
    return NULL;
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
    if (sqlite_conn_open(sb, &sb->wal_db, NULL, err, errlen) != 0)
        return -1;
    sqlite3_busy_timeout(sb->wal_db, WAL_WAIT_MS);
    sqlite_schema_refresh(sb->wal_db); /* reads the file: a checkpoint needs to know it is in WAL mode */
    if (pthread_create(&sb->wal_thread, NULL, wal_main, sb) != 0) {
        snprintf(err, errlen, "bind %s: cannot start the checkpoint thread", sb->bind->conf->name);
        return -1;
    }
    sb->wal_started = true;
    return 0;
}

/* ---- backend_ops ------------------------------------------------------- */

static void sqlite_close(struct bind *b);
static void on_wait_check(uv_timer_t *t);

static int sqlite_open(struct bind *b, char *err, size_t errlen)
{
    const struct bind_conf *bc = b->conf;
    struct sqlite_bind *sb = calloc(1, sizeof *sb);
    sqlite3 *first = NULL;
    int rc;

    sqlite_renice_init();
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
    /* URIs: the other binds are attached by one (sqlite_attach_uri); the
     * bind's own file name is an absolute path, never read as one. */
    sb->open_flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
    if (bc->type == BIND_SQLITE_MEMORY) {
        if (sqlite_memory_create(sb, err, errlen) != 0)
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
    if (sqlite_conn_open(sb, &first, NULL, err, errlen) != 0)
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
            log_info("bind %s: snapshot %s loaded (%lld bytes, written %s) in %.0f ms", bc->name,
                     bc->snapshot, (long long)info.bytes, when, info.ms);
        }
    }
    {
        bool applied = false;
        if (migrate_sqlite_setup(first, bc->name, sb->filename, bc->schema, bc->busy_timeout_ms, &applied,
                                 err, errlen) != 0)
            goto fail;
        if (applied)
            log_info("bind %s: schema %s applied", bc->name, bc->schema);
    }
    /* The in-memory bind is migrated at every start, a file bind when
     * migrate_on_start asks for it. */
    if ((bc->type == BIND_SQLITE_MEMORY || confref_cfg(b->cfgref)->migrate_on_start) &&
        migrate_startup_sqlite(confref_cfg(b->cfgref), bc, first, err, errlen) != 0)
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
    sb->stmt_cache = (size_t)confref_cfg(b->cfgref)->stmt_cache;
    snprintf(sb->readonly_msg, sizeof sb->readonly_msg,
             "read-only access to bind %s: this statement would write", b->conf->name);
    for (int i = 0; i < sb->nworkers; i++) {
        struct worker *w = &sb->workers[i];
        w->sb = sb;
        w->tail = &w->head;
        w->txn_schema = -1;
        w->cache = calloc(sb->stmt_cache + 1, sizeof *w->cache);
        if (w->cache == NULL)
            goto nomem;
        if (sqlite_conn_open(sb, &w->db, NULL, err, errlen) != 0 ||
            sqlite_conn_harden(w, NULL, err, errlen) != 0)
            goto fail;
        sqlite3_wal_hook(w->db, sqlite_conn_wal_hook, w);
        sqlite_schema_refresh(w->db); /* opens the WAL now: no file is opened while serving */
    }
    for (int i = 0; i < sb->nworkers; i++) {
        struct worker *w = &sb->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            snprintf(err, errlen, "bind %s: cannot start a worker thread", bc->name);
            goto fail;
        }
        w->started = true;
    }
    if (sqlite_quick_open(sb, err, errlen) != 0 || wal_start(sb, err, errlen) != 0)
        goto fail;
    sb->wait_timer = malloc(sizeof *sb->wait_timer);
    if (sb->wait_timer == NULL)
        goto nomem;
    if ((rc = uv_timer_init(b->host->loop, sb->wait_timer)) != 0) {
        free(sb->wait_timer);
        sb->wait_timer = NULL;
        snprintf(err, errlen, "bind %s: cannot start its timer: %s", bc->name, uv_strerror(rc));
        goto fail;
    }
    sb->wait_timer->data = sb;
    uv_timer_start(sb->wait_timer, on_wait_check, 100, 100);
    if (bc->type == BIND_SQLITE_MEMORY && bc->snapshot != NULL && sqlite_snapshot_start(sb, err, errlen) != 0)
        goto fail;
    sb->opened = true;
    xact_bind_counter(b->host->xact, bc->name, sb->filename, &sb->writes, true);
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

/* Move the jobs of a queue that were queued limit ms or more before now
 * to *expired. */
static void expire_queue(struct job **head, struct job ***tail, uint64_t now, uint64_t limit,
                         struct job **expired)
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
        char msg[200];
        expired = job->next;
        job->next = NULL;
        snprintf(msg, sizeof msg,
                 "bind %s: no connection became free within busy_timeout (%d ms): all %d are busy "
                 "or held by open transactions",
                 sb->bind->conf->name, sb->bind->conf->busy_timeout_ms, sb->nworkers);
        job_fail(job, "BUSY", msg);
    }
}

static void sqlite_submit(struct bind *b, struct job *job)
{
    struct sqlite_bind *sb = b->impl;
    struct worker *target = NULL; /* a worker's own queue, else the shared one */

    job->queued_at = uv_now(b->host->loop);
    if (job->type == JOB_SAVE_SNAPSHOT) {
        sqlite_snapshot_submit(sb, job);
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
    if (!job->txn_open && job->owner != 0 && job_writes(job))
        sqlite_quick_write_sent(sb);
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
void sqlite_worker_close(struct worker *w)
{
    xact_conn_free(w);
    for (size_t j = 0; j < w->ncache; j++)
        sqlite_cached_free(&w->cache[j]);
    free(w->cache);
    sqlnorm_free(&w->norm);
    if (w->db != NULL && sqlite3_close(w->db) != SQLITE_OK)
        log_warn("bind %s: closing a connection: %s", w->sb->bind->conf->name, sqlite3_errmsg(w->db));
}

static void sqlite_close(struct bind *b)
{
    struct sqlite_bind *sb = b->impl;

    if (sb == NULL)
        return;
    xact_bind_counter(b->host->xact, b->conf->name, sb->filename, &sb->writes, false);
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
        sqlite_worker_close(w);
        pthread_cond_destroy(&w->wake);
    }
    if (sb->quick_turn != NULL) {
        bind_host_check_stop(b->host, sb->quick_turn);
        uv_close((uv_handle_t *)sb->quick_turn, (uv_close_cb)free);
    }
    sqlite3_finalize(sb->quick_begin);
    sqlite3_finalize(sb->quick_commit);
    if (sb->quick != NULL) {
        sqlite_worker_close(sb->quick);
        free(sb->quick);
    }
    if (sb->quick_writer != NULL) {
        sqlite_worker_close(sb->quick_writer);
        free(sb->quick_writer);
    }
    if (sb->wal_started)
        pthread_join(sb->wal_thread, NULL);
    if (sb->wal_db != NULL)
        sqlite3_close(sb->wal_db);
    if (sb->snap_started)
        pthread_join(sb->snap_thread, NULL); /* after the saves queued before the stop */
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

/* A file bind's path, or "memory". */
static void sqlite_describe(const struct bind_conf *bc, const char **type, char *where, size_t n)
{
    bool memory = bc->type == BIND_SQLITE_MEMORY;

    *type = memory ? "sqlite-memory" : "sqlite";
    snprintf(where, n, "%s", memory ? "memory" : bc->path);
}

static void sqlite_library_version(char *dst, size_t n)
{
    snprintf(dst, n, "%s", sqlite3_libversion());
}

const struct backend_ops backend_sqlite_ops = {
    .batches = true,
    .name = "sqlite",
    .open = sqlite_open,
    .submit = sqlite_submit,
    .read_inline = sqlite_read_inline,
    .write_inline = sqlite_write_inline,
    .txn_inline = sqlite_txn_inline,
    .interrupt = sqlite_interrupt,
    .status = sqlite_status,
    .describe = sqlite_describe,
    .library = "sqlite",
    .library_version = sqlite_library_version,
    .close = sqlite_close,
};
