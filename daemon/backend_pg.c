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
 * When the server goes away, the statement in flight gets -ERR CONNLOST,
 * later statements get -ERR UNAVAILABLE at once while a timer reconnects
 * with exponential backoff (100 ms doubling to 5 s).
 *
 * This file owns the bind (struct pg_bind): its pool, its queue and
 * timers, and backend_pg_ops. The other parts are in pg_conn.c (one
 * server connection: connecting, state and phases, reading results,
 * cancel) and pg_exec.c (a statement and its answer: parameters, the
 * prepared-statement cache, header, rows, status and error lines);
 * backend_pg.h says what each offers.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/backend_pg.h"
#include "daemon/log.h"
#include "daemon/migrate.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define IDLE_CHECK_MS  1000

/* ---- The bind -------------------------------------------------------- */

static void bind_handle_closed(uv_handle_t *h)
{
    struct pg_bind *pb = h->data;
    if (--pb->handles == 0)
        free(pb);
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

void pg_fail_queue(struct pg_bind *pb, const char *code, const char *msg)
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

/* ---- Dispatch -------------------------------------------------------- */

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
void pg_conn_dispatch(struct pgconn *c)
{
    struct pg_bind *pb = c->pb;

    if (c->state != PGC_IDLE || c->pinned != 0)
        return; /* a pinned connection waits for its client's next job */
    if (pb->head != NULL)
        pg_conn_start(c, queue_shift(pb));
}

/* Reconnect after backoff, keep pool_min connections, open more while
 * jobs wait. */
static void on_retry(uv_timer_t *t)
{
    struct pg_bind *pb = t->data;

    pb->retry_armed = false;
    if (pb->down && !pb->stopping)
        pg_conn_open(pb); /* on failure, conn_connect_failed() (pg_conn.c) arms the next try */
    else
        pg_bind_kick(pb);
}

void pg_bind_kick(struct pg_bind *pb)
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
        pg_conn_open(pb);
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
    uint64_t now = uv_now(pb->bind->host->loop);
    struct pgconn *c, *next;

    if (bc->idle_timeout_ms <= 0)
        return;
    for (c = pb->conns; c != NULL && pb->nconns > bc->pool_min; c = next) {
        next = c->next;
        if (c->state == PGC_IDLE && c->pinned == 0 && now - c->idle_since >= (uint64_t)bc->idle_timeout_ms) {
            log_debug("bind %s: closing an idle connection", bc->name);
            pg_conn_destroy(c);
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
    uint64_t now = uv_now(pb->bind->host->loop);
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
    const struct config *cfg = confref_cfg(b->cfgref);
    struct pg_bind *pb;

    /* migrate_on_start: with a blocking connection of its own, before the
     * daemon serves (no listener yet). A bind added by a reload is not
     * migrated here: that would block the loop on the network. */
    if (cfg->migrate_on_start && !b->host->serving && migrate_startup_pg(cfg, b->conf, err, errlen) != 0)
        return -1;
    if (cfg->migrate_on_start && b->host->serving && cfg->migrations != NULL)
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
    (void)uv_timer_init(b->host->loop, &pb->retry);
    (void)uv_timer_init(b->host->loop, &pb->idle);
    (void)uv_timer_init(b->host->loop, &pb->wait);
    pb->retry.data = pb->idle.data = pb->wait.data = pb;
    pb->handles = 3;
    uv_timer_start(&pb->idle, on_idle_check, IDLE_CHECK_MS, IDLE_CHECK_MS);
    b->impl = pb;
    log_info("bind %s: postgresql %s, pool %d..%d", b->conf->name, b->conf->url_redacted, b->conf->pool_min,
             b->conf->pool_size);
    pg_bind_kick(pb);
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
        if (c->pinned == job->owner && c->state == PGC_IDLE && !c->lent) {
            pg_conn_start(c, job);
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
            pg_conn_start(c, job);
            return;
        }
    }
    if (pb->queued >= (size_t)bc->max_queue) {
        snprintf(msg, sizeof msg, "bind %s: %zu requests already wait for a server connection (max_queue)",
                 bc->name, pb->queued);
        job_fail(job, "QUEUEFULL", msg);
        return;
    }
    job->queued_at = uv_now(b->host->loop);
    *pb->tail = job;
    pb->tail = &job->next;
    pb->queued++;
    if (bc->query_wait_timeout_ms > 0 && !uv_is_active((uv_handle_t *)&pb->wait))
        uv_timer_start(&pb->wait, on_query_wait, (uint64_t)bc->query_wait_timeout_ms, 0);
    pg_bind_kick(pb);
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
        pg_conn_poll(c, UV_READABLE);
    }
    pg_conn_cancel(c);
}

static void pg_credit(struct bind *b, struct job *job)
{
    struct pgconn *c = conn_of(b->impl, job);

    if (c == NULL || !c->paused)
        return;
    c->paused = false;
    pg_conn_poll(c, UV_READABLE);
    pg_conn_read(c); /* results may already be buffered in libpq */
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
    pg_fail_queue(pb, "SHUTDOWN", "the server is shutting down");
    while (pb->conns != NULL) {
        struct pgconn *c = pb->conns;
        if (c->job != NULL) {
            pg_reply_error(&c->out, "SHUTDOWN", "the server is shutting down");
            c->failed = true;
            pg_conn_finish_job(c);
        }
        pg_conn_destroy(c);
    }
    uv_timer_stop(&pb->retry);
    uv_timer_stop(&pb->idle);
    uv_timer_stop(&pb->wait);
    uv_close((uv_handle_t *)&pb->retry, bind_handle_closed);
    uv_close((uv_handle_t *)&pb->idle, bind_handle_closed);
    uv_close((uv_handle_t *)&pb->wait, bind_handle_closed);
    b->impl = NULL;
}

void *backend_pg_lend(struct bind *b, uint64_t owner, void **handle)
{
    struct pg_bind *pb = b->impl;

    for (struct pgconn *c = pb != NULL ? pb->conns : NULL; c != NULL; c = c->next) {
        if (c->pinned != owner || c->state != PGC_IDLE || c->lent || c->conn == NULL)
            continue;
        /* Idle: nothing is queued to send, so neither call does I/O. */
        if (PQsetnonblocking(c->conn, 0) != 0)
            return NULL;
        if (c->poll != NULL)
            uv_poll_stop(c->poll);
        c->lent = true;
        *handle = c;
        return c->conn;
    }
    return NULL;
}

void backend_pg_unlend(void *handle)
{
    struct pgconn *c = handle;

    c->lent = false;
    /* The worker's virtual tables left prepared statements on it: DISCARD
     * ALL once it is outside the transaction. */
    c->dirty = true;
    if (c->state == PGC_CLOSING)
        return;
    (void)PQsetnonblocking(c->conn, 1);
    /* A connection that broke meanwhile is found out by the next read. */
    pg_conn_poll(c, UV_READABLE);
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
