/*
 * Statements across binds (federate.h): the federation pool, its quick
 * reads on the loop thread, and what sessions ask of it.
 *
 * The pool is a struct bind of its own (srv->federation) behind
 * federate_ops, so sessions submit to it, cancel and count its jobs as for
 * any bind. Each of its threads owns one executor (federate_exec.c),
 * opened at its first job.
 *
 * Reads across SQLite binds are first tried on the loop thread (struct
 * fed_quick, as a bind's quick reads); CREATE TABLE with a foreign key to
 * another bind's table runs on its own bind (federate_refs.c): both are
 * statements across binds too.
 */
#include "daemon/federate.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/backend_sqlite.h"
#include "daemon/catalog.h"
#include "daemon/federate_int.h"
#include "daemon/hash.h"
#include "daemon/log.h"
#include "daemon/nowait_vfs.h"
#include "daemon/server.h"
#include "daemon/session.h"

/* ---- The pool ------------------------------------------------------------- */

struct fed_thread {
    struct fed_pool *pool;
    pthread_t thread;
    bool started;
    bool busy;   /* guarded by the pool's lock */
    bool opened; /* its executor is open (guarded by the pool's lock) */
};

/* Quick reads across binds (loop thread): as a bind's quick reads
 * (sqlite_quick.c), a SELECT over SQLite binds is first tried on the loop
 * thread's own executor, whose binds were attached at start through the
 * nowait VFS (file binds whose file system allows it) or as they are (the
 * memory bind); it never waits for a lock or the disk, is stopped past
 * QUICK_BUDGET_NS or QUICK_MAX_OUTPUT, and anything else goes to the pool.
 * The reads of one loop turn share one read transaction, begun again when
 * any of its binds was written since (their `writes` counts). */
struct fed_quick {
    struct fed_exec *x;
    uv_check_t *turn;                         /* ends the read transaction after the turn */
    struct bind_host *host;                   /* its turn_checks count turn while active */
    struct sqlite_bind **sbs;                 /* [x->natt]: the attached binds' backends, as attached */
    uint64_t *gen;                            /* [x->natt]: their writes when the transaction began */
    struct quick_skip skip[QUICK_SKIP_SLOTS]; /* statements that overran lately */
};

struct fed_pool {
    struct server *srv;
    struct fed_quick quick;       /* quick.x NULL: every statement goes to the threads */
    atomic_uint_fast64_t catalog; /* PostgreSQL DDL statements run (federate_catalog_changed) */
    struct bind_conf conf;        /* what .stats shows: name and pool_size */
    pthread_mutex_t lock;         /* guards the queue, stopping and the threads' flags */
    pthread_cond_t cond;
    struct job *head, **tail;
    bool stopping;
    struct fed_thread *threads;
    int nthreads;
};

static void quick_end(struct fed_quick *q)
{
    if (q->x != NULL && !sqlite3_get_autocommit(q->x->w.db)) {
        q->x->w.deadline_ns = UINT64_MAX;
        sqlite_conn_exec_internal(&q->x->w, "COMMIT");
        if (!sqlite3_get_autocommit(q->x->w.db))
            sqlite_conn_exec_internal(&q->x->w, "ROLLBACK");
    }
}

static void on_quick_turn(uv_check_t *h)
{
    struct fed_quick *q = h->data;

    quick_end(q);
    bind_host_check_stop(q->host, h);
}

/* A read transaction begun after every write its binds reported. */
static int quick_snapshot(struct fed_quick *q)
{
    bool fresh = !sqlite3_get_autocommit(q->x->w.db);

    for (size_t i = 0; fresh && i < q->x->natt; i++)
        fresh = atomic_load_explicit(&q->sbs[i]->writes, memory_order_acquire) == q->gen[i];
    if (fresh)
        return 0;
    quick_end(q);
    for (size_t i = 0; i < q->x->natt; i++)
        q->gen[i] = atomic_load_explicit(&q->sbs[i]->writes, memory_order_acquire);
    q->x->w.deadline_ns = UINT64_MAX;
    if (sqlite_conn_exec_internal(&q->x->w, "BEGIN") != SQLITE_OK)
        return -1;
    bind_host_check_start(q->host, q->turn, on_quick_turn);
    return 0;
}

/* The loop thread's executor, its binds attached now (start-up: opening
 * the files may block). A bind it cannot attach without waiting is left
 * out: statements over it go to the threads. */
static void quick_open(struct fed_pool *pool)
{
    struct server *srv = pool->srv;
    struct fed_quick *q = &pool->quick;
    struct fed_exec *x;
    char err[512], uri[4200];

    x = fed_exec_open(srv, true, err, sizeof err);
    if (x == NULL || (q->sbs = calloc((size_t)x->max_attached + 1, sizeof *q->sbs)) == NULL ||
        (q->gen = calloc((size_t)x->max_attached + 1, sizeof *q->gen)) == NULL ||
        (q->turn = malloc(sizeof *q->turn)) == NULL) {
        log_warn("federation: statements across binds all run on its threads: %s", x ? "out of memory" : err);
        federate_exec_close(x);
        free(q->sbs);
        free(q->gen);
        q->sbs = NULL;
        q->gen = NULL;
        return;
    }
    for (size_t i = 0; i < srv->nbinds && x->natt < (size_t)x->max_attached; i++) {
        struct bind *b = srv->binds[i];
        struct sqlite_bind *sb = b->impl;
        bool memory = b->conf->type == BIND_SQLITE_MEMORY;

        if (b->conf->type == BIND_POSTGRES || strcmp(b->conf->name, "main") == 0 ||
            strcmp(b->conf->name, "temp") == 0)
            continue;
        /* A file bind is read through the nowait VFS. */
        if (memory ? sqlite_attach_uri(sb->filename, true, uri, sizeof uri) != 0
                   : nowait_vfs_check(sb->filename, err, sizeof err) != 0 ||
                         sqlite_file_uri(sb->filename, NOWAIT_VFS_NAME, uri, sizeof uri) != 0)
            continue;
        if (fed_exec_attach(x, b->conf->name, uri, memory, err, sizeof err) != 0) {
            log_info("federation: %s", err);
            continue;
        }
        x->att[x->natt].name = strdup(b->conf->name);
        x->att[x->natt].file = strdup(sb->filename);
        if (x->att[x->natt].name == NULL || x->att[x->natt].file == NULL) {
            free(x->att[x->natt].name);
            free(x->att[x->natt].file);
            break;
        }
        q->sbs[x->natt++] = sb;
    }
    uv_check_init(srv->loop, q->turn);
    q->turn->data = q;
    q->host = &srv->host;
    q->x = x;
}

static void quick_close(struct fed_quick *q)
{
    quick_end(q);
    federate_exec_close(q->x);
    if (q->turn != NULL) {
        bind_host_check_stop(q->host, q->turn);
        uv_close((uv_handle_t *)q->turn, (uv_close_cb)free);
    }
    free(q->sbs);
    free(q->gen);
    memset(q, 0, sizeof *q);
}

/* federate_ops.read_inline: a SELECT across SQLite binds answered here on
 * the loop thread (struct fed_quick), else false and the pool runs it. */
static bool pool_read_inline(struct bind *b, const struct request *req, uint64_t start_ns, struct buf *out,
                             uint64_t *rows)
{
    struct fed_pool *pool = b->impl;
    struct fed_quick *q = &pool->quick;
    struct fed_exec *x = q->x;
    const struct server *srv = server_of_bind(b);
    const struct config *cfg = srv->cfg;
    struct buf sql = BUF_INIT;
    struct route_info ri;
    struct route r;
    const char *code;
    char msg[200];
    uint64_t h;
    size_t n = 0;
    bool ok = false;
    int rc = SQLITE_OK;

    if (x == NULL || req->len > QUICK_MAX_SQL)
        return false;
    h = hash_text(req->text, req->len);
    if (sqlite_quick_skipped(q->skip, h))
        return false;
    route_compute(cfg, srv->catset, req->text, req->len, &r, &ri);
    /* Every bind of the statement attached here, to the same file. */
    for (size_t k = 0; k < r.nbinds; k++) {
        const struct bind *rb = srv->binds[r.binds[k].index];
        size_t i = 0;
        if (rb->conf->type == BIND_POSTGRES)
            goto done;
        while (i < x->natt && (q->sbs[i] != rb->impl || strcmp(x->att[i].name, rb->conf->name) != 0))
            i++;
        if (i == x->natt)
            goto done;
        x->schemas[n++] = x->att[i].name;
    }
    x->schemas[n] = NULL;
    if (r.nbinds < 2 || r.kind != STMT_SELECT ||
        fed_exec_rewrite(x, cfg, &r, &ri, req->text, req->len, NULL, 0, &sql, &code, msg, sizeof msg) != 0)
        goto done;
    x->w.schemas = x->schemas;
    x->w.write_schema = NULL;
    sqlite_conn_max_value(&x->w, cfg->max_value, QUICK_MAX_LENGTH);
    if (quick_snapshot(q) != 0)
        goto done;
    ok = sqlite_quick_run(&x->w, q->skip, h, sql.data, sql.len, req, start_ns, out, rows, &rc);
    if (!ok)
        quick_end(q);
done:
    x->schemas[0] = NULL;
    buf_free(&sql);
    route_clear(&r);
    sqlparse_info_free(&ri);
    return ok;
}

static void *pool_main(void *arg)
{
    struct fed_thread *t = arg;
    struct fed_pool *pool = t->pool;
    struct fed_exec *x = NULL;

    pthread_mutex_lock(&pool->lock);
    for (;;) {
        struct job *job;
        struct buf out = BUF_INIT;
        char err[512];

        if (pool->head == NULL) {
            if (pool->stopping)
                break;
            pthread_cond_wait(&pool->cond, &pool->lock);
            continue;
        }
        job = sqlite_queue_pop(&pool->head, &pool->tail);
        t->busy = true;
        pthread_mutex_unlock(&pool->lock);
        if (x == NULL && (x = federate_exec_open(pool->srv, err, sizeof err)) != NULL)
            x->catalog = &pool->catalog;
        if (x == NULL) {
            log_error("%s", err);
        } else if (atomic_load(&job->cancelled)) {
            job->failed = true;
        } else {
            federate_exec_run(x, job, &out);
            /* A statement alone leaves no transaction behind. */
            if (!sqlite3_get_autocommit(x->w.db))
                sqlite_conn_exec_internal(&x->w, "ROLLBACK");
            job->in_txn = false;
        }
        /* Free before the answer goes out: a client holding it never sees
         * the thread still in use (.stats). */
        pthread_mutex_lock(&pool->lock);
        t->busy = false;
        t->opened = x != NULL;
        pthread_mutex_unlock(&pool->lock);
        if (x == NULL)
            job_fail(job, "UNAVAILABLE", err);
        else
            job_post_done(job, &out);
        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    federate_exec_close(x);
    return NULL;
}

static void pool_submit(struct bind *b, struct job *job)
{
    struct fed_pool *pool = b->impl;

    job->queued_at = uv_now(b->host->loop);
    pthread_mutex_lock(&pool->lock);
    *pool->tail = job;
    pool->tail = &job->next;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
}

static void pool_interrupt(struct bind *b, struct job *job)
{
    (void)b;
    backend_sqlite_ops.interrupt(NULL, job); /* sqlite3_interrupt() of job->running */
}

static void pool_status(struct bind *b, struct bind_status *st)
{
    struct fed_pool *pool = b->impl;

    st->state = "open";
    st->wal_bytes = -1;
    pthread_mutex_lock(&pool->lock);
    for (int i = 0; i < pool->nthreads; i++) {
        st->connections += pool->threads[i].opened;
        st->in_use += pool->threads[i].busy;
    }
    pthread_mutex_unlock(&pool->lock);
}

static void pool_close(struct bind *b)
{
    struct fed_pool *pool = b->impl;

    if (pool == NULL)
        return;
    quick_close(&pool->quick);
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->nthreads; i++)
        if (pool->threads[i].started)
            pthread_join(pool->threads[i].thread, NULL);
    free(pool->threads);
    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
    b->impl = NULL;
}

static const struct backend_ops federate_ops = {
    .name = "federation",
    .submit = pool_submit,
    .read_inline = pool_read_inline,
    .interrupt = pool_interrupt,
    .status = pool_status,
    .close = pool_close,
};

int federate_open(struct server *srv, char *err, size_t errlen)
{
    const struct config *cfg = srv->cfg;
    struct fed_pool *pool = calloc(1, sizeof *pool);
    struct bind *b = calloc(1, sizeof *b);

    if (pool == NULL || b == NULL ||
        (pool->threads = calloc((size_t)cfg->federation_pool, sizeof *pool->threads)) == NULL) {
        free(pool);
        free(b);
        snprintf(err, errlen, "federation: out of memory");
        return -1;
    }
    pool->srv = srv;
    atomic_init(&pool->catalog, 0);
    pool->conf.name = FEDERATE_NAME;
    pool->conf.pool_size = cfg->federation_pool;
    pool->tail = &pool->head;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->cond, NULL);
    b->host = &srv->host;
    b->conf = &pool->conf;
    b->index = SIZE_MAX;
    b->ops = &federate_ops;
    b->impl = pool;
    b->refs = 1;
    b->cfgref = confref_hold(srv->host.cfgref);
    srv->federation = b;
    quick_open(pool);
    for (int i = 0; i < cfg->federation_pool; i++) {
        struct fed_thread *t = &pool->threads[i];
        t->pool = pool;
        if (pthread_create(&t->thread, NULL, pool_main, t) != 0) {
            snprintf(err, errlen, "federation: cannot start a worker thread");
            return -1;
        }
        t->started = true;
        pool->nthreads = i + 1;
    }
    return 0;
}

/* ---- Sessions (loop thread) ------------------------------------------------ */

void federate_config_changed(struct server *srv)
{
    struct fed_pool *pool = srv->federation != NULL ? srv->federation->impl : NULL;

    if (pool == NULL)
        return;
    /* Before the replaced binds may close: the loop's executor has them
     * attached and reads their write counts. */
    quick_close(&pool->quick);
    quick_open(pool);
}

void federate_catalog_changed(struct server *srv)
{
    if (srv->federation != NULL)
        atomic_fetch_add(&((struct fed_pool *)srv->federation->impl)->catalog, 1);
}

bool federate_runs(const struct route *r)
{
    size_t writes = 0;

    if (r->err_code == NULL || strcmp(r->err_code, "CROSSBIND") != 0 || r->nbinds < 2 ||
        (r->flags & ROUTE_RENAME))
        return false;
    for (size_t k = 0; k < r->nbinds; k++)
        writes += r->binds[k].writes;
    if (r->kind == STMT_SELECT)
        return true;
    return (r->kind == STMT_INSERT || r->kind == STMT_UPDATE || r->kind == STMT_DELETE) && writes == 1;
}

const struct bind *federate_grant_missing(const struct session *s, const struct route *r, bool *write)
{
    for (size_t k = 0; k < r->nbinds; k++) {
        const struct bind *b = s->srv->binds[r->binds[k].index];
        enum grant need = r->binds[k].writes && r->kind != STMT_SELECT ? GRANT_READ_WRITE : GRANT_READ;
        if (session_grant(s, b) < need) {
            *write = need == GRANT_READ_WRITE;
            return b;
        }
    }
    return NULL;
}

struct job *federate_job_new(struct session *s, const struct route *r, struct request *req)
{
    struct server *srv = s->srv;
    struct job *job = job_new(JOB_EXEC, srv->federation, s, s->id);

    if (job == NULL || (job->xbinds = calloc(r->nbinds, sizeof *job->xbinds)) == NULL) {
        if (job != NULL)
            job_unref(job);
        codec_request_free(req);
        return NULL;
    }
    for (size_t k = 0; k < r->nbinds; k++) {
        struct bind *b = srv->binds[r->binds[k].index];
        bind_hold(b);
        job->xbinds[job->nxbinds++] = b;
    }
    job->catset = catset_hold(srv->catset); /* the route again, on the executor, as decided here */
    job->req = *req;
    memset(req, 0, sizeof *req);
    job->kind = r->kind;
    job->readonly = r->kind == STMT_SELECT;
    return job;
}
