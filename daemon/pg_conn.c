/*
 * One server connection of a PostgreSQL bind, driven by the daemon's loop
 * (one uv_poll per server socket, libpq in non-blocking mode): connecting
 * (PQconnectPoll under connect_timeout), the connection's state (PGC_*)
 * and, while it runs a job, the phase of the job's queries (PHASE_*), each
 * change checked against a table of the legal ones; sending the queries
 * around a statement (BEGIN READ ONLY, the read-only lock, DISCARD ALL
 * after a client changed the session) and reading every result, which
 * pg_exec.c turns into the answer. Rows stream in single-row mode; when
 * the client does not keep up, the connection stops reading from the
 * server until the client has read enough. A COPY is refused. The
 * statement timeout cancels with PQcancel, which libpq 15 offers only as
 * a blocking call: it runs on libuv's thread pool, the only work off the
 * loop. A connection that breaks answers its statement -ERR CONNLOST.
 *
 * It owns struct pgconn: its lifetime, its libuv handles, its state and
 * phase (changed only through conn_set_state and pg_conn_set_phase).
 */
#include <assert.h>
#include <ctype.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/backend_pg.h"
#include "daemon/log.h"
#include "daemon/migrate.h"

/* Rows are posted to the loop in chunks of about this many bytes. */
#define CHUNK_BYTES (64 * 1024)

static void on_poll(uv_poll_t *h, int status, int events);
static void conn_connect_failed(struct pgconn *c, const char *why);
static void conn_lost(struct pgconn *c);

/* ---- Errors ---------------------------------------------------------- */

/* The connection's error without libpq's trailing newline. */
void pg_conn_error_text(PGconn *conn, char *dst, size_t n)
{
    size_t len;

    snprintf(dst, n, "%s", conn ? PQerrorMessage(conn) : "out of memory");
    len = strlen(dst);
    while (len > 0 && (dst[len - 1] == '\n' || dst[len - 1] == ' '))
        dst[--len] = '\0';
    for (char *p = dst; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
}

/* ---- Connections ----------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *h)
{
    struct pgconn *c = h->data;
    if (h != (uv_handle_t *)&c->timer)
        free(h);
    if (--c->handles == 0) {
        buf_free(&c->out);
        free(c->types);
        pg_prep_clear(c);
        free(c->prep);
        pg_prep_release(&c->pending);
        free(c);
    }
}

static void conn_unlink(struct pgconn *c)
{
    struct pg_bind *pb = c->pb;
    for (struct pgconn **pp = &pb->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            pb->nconns--;
            return;
        }
    }
}

/* ---- Connection state and job phase ---------------------------------- */

/* The legal changes of a connection's state, legal[from][to]:
 *
 *   PGC_CONNECTING ──ready──▶ PGC_IDLE ◀──job done── PGC_BUSY
 *                                 └──pg_conn_start────▲
 *   any of them ──failed, lost, idle too long, bind closed──▶ PGC_CLOSING (final)
 */
static const bool pgc_legal[PGC_CLOSING + 1][PGC_CLOSING + 1] = {
    [PGC_CONNECTING] = {[PGC_IDLE] = true, [PGC_CLOSING] = true},
    [PGC_IDLE] = {[PGC_BUSY] = true, [PGC_CLOSING] = true},
    [PGC_BUSY] = {[PGC_IDLE] = true, [PGC_CLOSING] = true},
    [PGC_CLOSING] = {false},
};

/* Which query of a job may follow which, legal[from][to] (the queries
 * around a statement: the comment above enum pgjob_phase). Every job ends
 * in any phase, or in PHASE_RESET when DISCARD ALL follows. */
#define PH(...)                                                                                              \
    {                                                                                                        \
        __VA_ARGS__, [PHASE_RESET] = true                                                                    \
    }
static const bool phase_legal[PHASE_RESET + 1][PHASE_RESET + 1] = {
    [PHASE_NONE] = {[PHASE_RELEASE] = true,
                    [PHASE_CATALOG] = true,
                    [PHASE_STMT] = true,
                    [PHASE_BEGIN] = true,
                    [PHASE_RO_BEGIN] = true,
                    [PHASE_RO_LOCK] = true},
    [PHASE_RO_BEGIN] = PH([PHASE_STMT] = true),
    [PHASE_BEGIN] = PH([PHASE_RO_LOCK] = true, [PHASE_STMT] = true),
    [PHASE_RO_LOCK] = PH([PHASE_STMT] = true),
    [PHASE_DEALLOC] = PH([PHASE_STMT] = true),
    [PHASE_PREPARE] = PH([PHASE_STMT] = true, [PHASE_RO_COMMIT] = true),
    [PHASE_REPREPARE] = PH([PHASE_STMT] = true),
    [PHASE_STMT] = PH([PHASE_DEALLOC] = true, [PHASE_PREPARE] = true, [PHASE_REPREPARE] = true,
                      [PHASE_RO_COMMIT] = true, [PHASE_RO_RELOCK] = true, [PHASE_CATALOG] = true),
    [PHASE_RO_RELOCK] = {[PHASE_RESET] = true},
    [PHASE_RO_COMMIT] = PH([PHASE_RO_COMMIT] = true),
    [PHASE_RELEASE] = {[PHASE_RESET] = true},
    [PHASE_CATALOG] = {[PHASE_RESET] = true},
    [PHASE_RESET] = {false},
};
#undef PH

/* Every change of c->state goes through here; an illegal one is a bug in
 * this file (asserted; logged and ignored when asserts are off). Entering
 * PGC_BUSY starts a job's phases at PHASE_NONE. Loop thread. */
static void conn_set_state(struct pgconn *c, enum pgconn_state to)
{
    assert(bind_host_on_loop(c->pb->bind->host));
    if (!pgc_legal[c->state][to]) {
        log_error("bind %s: illegal connection state change %d -> %d", c->pb->bind->conf->name, (int)c->state,
                  (int)to);
        assert(!"illegal connection state change");
        return;
    }
    c->state = to;
    if (to == PGC_BUSY)
        c->phase = PHASE_NONE;
}

/* Every change of c->phase goes through here: only while a job runs, and
 * only along phase_legal (asserted; logged when asserts are off). */
void pg_conn_set_phase(struct pgconn *c, enum pgjob_phase to)
{
    assert(c->state == PGC_BUSY && c->job != NULL);
    if (!phase_legal[c->phase][to]) {
        log_error("bind %s: illegal job phase change %d -> %d", c->pb->bind->conf->name, (int)c->phase,
                  (int)to);
        assert(!"illegal job phase change");
    }
    c->phase = to;
}

/* Close a connection for good: its job (if any) must be finished first. */
void pg_conn_destroy(struct pgconn *c)
{
    if (c->state == PGC_CLOSING)
        return;
    conn_set_state(c, PGC_CLOSING);
    conn_unlink(c);
    if (c->poll != NULL) {
        uv_poll_stop(c->poll);
        uv_close((uv_handle_t *)c->poll, conn_handle_closed);
        c->poll = NULL;
    }
    PQfinish(c->conn);
    c->conn = NULL;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

/* The connection's socket could not be watched (pg_conn_poll): it would wait
 * forever, so it fails on the next loop turn, outside its caller. */
static void on_unwatched(uv_timer_t *t)
{
    struct pgconn *c = t->data;

    if (c->state == PGC_CLOSING || c->poll != NULL)
        return; /* closed meanwhile, or a later pg_conn_poll succeeded */
    if (c->state == PGC_CONNECTING)
        conn_connect_failed(c, "cannot watch the connection's socket");
    else
        conn_lost(c);
}

/* Watch the connection's socket for `events`, following a changed fd. When
 * libuv refuses (out of memory, the fd still watched by a handle being
 * closed), c->poll stays NULL and the connection fails soon after
 * (on_unwatched). */
void pg_conn_poll(struct pgconn *c, int events)
{
    int fd = PQsocket(c->conn);
    int rc = UV_ENOMEM;

    if (fd != c->fd && c->poll != NULL) {
        uv_poll_stop(c->poll);
        uv_close((uv_handle_t *)c->poll, conn_handle_closed);
        c->poll = NULL;
    }
    if (fd < 0)
        return;
    if (c->poll == NULL) {
        c->poll = malloc(sizeof *c->poll);
        if (c->poll == NULL || (rc = uv_poll_init(c->pb->bind->host->loop, c->poll, fd)) != 0) {
            free(c->poll);
            c->poll = NULL;
            goto unwatched;
        }
        c->poll->data = c;
        c->handles++;
        c->fd = fd;
    }
    /* uv_poll_start() re-registers the fd with the kernel even when
     * nothing changes: two epoll_ctl calls each time. */
    if (c->events == events && uv_is_active((uv_handle_t *)c->poll))
        return;
    c->events = events;
    rc = uv_poll_start(c->poll, events, on_poll);
    if (rc == 0)
        return;
    uv_close((uv_handle_t *)c->poll, conn_handle_closed);
    c->poll = NULL;
unwatched:
    log_warn("bind %s: cannot watch a connection's socket: %s", c->pb->bind->conf->name, uv_strerror(rc));
    if (c->state != PGC_CLOSING)
        (void)uv_timer_start(&c->timer, on_unwatched, 0, 0); /* replaces a timeout: it fails first */
}

/* ---- Finishing jobs -------------------------------------------------- */

/* Hand the job's response to the loop and make the connection available. */
void pg_conn_finish_job(struct pgconn *c)
{
    struct job *job = c->job;
    PGTransactionStatusType ts = c->conn ? PQtransactionStatus(c->conn) : PQTRANS_UNKNOWN;

    uv_timer_stop(&c->timer);
    /* A connection that broke (its status unknown) inside the client's
     * transaction, or while its held BEGIN ran, took the transaction with
     * it: the client stays in it, broken (see txn_lost(), backend_pg.c),
     * until its ROLLBACK. */
    job->in_txn =
        ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR ||
        (ts == PQTRANS_UNKNOWN && job->type == JOB_EXEC && (job->txn_open || job->begin_sql != NULL));
    job->txn_aborted = ts == PQTRANS_INERROR;
    job->failed = c->failed;
    if (!job->in_txn)
        c->ro_locked = false;
    c->pinned = job->in_txn ? job->owner : 0;
    c->job = NULL;
    free(c->types);
    c->types = NULL;
    c->ncols = 0;
    job_post_done(job, &c->out);
    buf_free(&c->out);
    if (c->state == PGC_BUSY) {
        conn_set_state(c, PGC_IDLE);
        c->idle_since = uv_now(c->pb->bind->host->loop);
        pg_conn_poll(c, UV_READABLE); /* notice a server that goes away */
    }
}

/* The server connection broke: end its job and drop it. A client whose
 * transaction was open there (or was being opened by its held BEGIN) is
 * told so by txn_lost() (backend_pg.c) from now on. */
static void conn_lost(struct pgconn *c)
{
    struct pg_bind *pb = c->pb;
    char why[256];

    pg_conn_error_text(c->conn, why, sizeof why);
    log_warn("bind %s: connection to the server lost: %s", pb->bind->conf->name, why);
    if (c->pinned != 0)
        log_warn("bind %s: the open transaction of client c%llu was lost with it", pb->bind->conf->name,
                 (unsigned long long)c->pinned);
    pg_conn_destroy(c); /* the struct lives until its handles close */
    if (c->job != NULL) {
        char msg[400];
        snprintf(msg, sizeof msg,
                 "bind %s: connection to the server was lost (%s); the statement may or may not have run",
                 pb->bind->conf->name, why);
        pg_reply_error(&c->out, "CONNLOST", msg);
        c->failed = true;
        pg_conn_finish_job(c);
    }
    pg_bind_kick(pb);
}

/* ---- COPY ------------------------------------------------------------ */

/* A statement put the connection into a COPY state, which the protocol
 * has no way to carry: answer -ERR and bring the connection back to
 * where it takes queries. COPY FROM STDIN is ended with a CopyFail (the
 * server aborts it, copying nothing); COPY TO STDOUT (and the sending
 * half of COPY BOTH, ended with CopyDone) runs to its end while
 * pg_conn_read() drops its data (statement_timeout bounds it), so the
 * connection, and the transaction it may be in, stay usable. */
void pg_conn_refuse_copy(struct pgconn *c, ExecStatusType st)
{
    const char *msg =
        st == PGRES_COPY_IN
            ? "COPY ... FROM STDIN is not supported through sqlmux (nothing was copied): use INSERT"
            : "COPY ... TO STDOUT is not supported through sqlmux (its rows were dropped): use SELECT";
    int sent = 1;

    if (st == PGRES_COPY_IN)
        sent = PQputCopyEnd(c->conn, "COPY is not supported through sqlmux");
    else if (st == PGRES_COPY_BOTH)
        sent = PQputCopyEnd(c->conn, NULL);
    c->copy_out = st != PGRES_COPY_IN;
    if (sent == 1 && PQflush(c->conn) == 1)
        pg_conn_poll(c, UV_READABLE | UV_WRITABLE);
    if (!c->failed)
        pg_reply_error(&c->out, "SQL", msg);
    c->failed = true;
}

/* Drop the data of a refused COPY TO STDOUT that libpq has buffered.
 * Returns false while more must come from the server, true when the COPY
 * has ended (its final result follows). */
static bool conn_drain_copy(struct pgconn *c)
{
    char *data;
    int n;

    while ((n = PQgetCopyData(c->conn, &data, 1)) > 0)
        PQfreemem(data);
    if (n == 0)
        return false;
    c->copy_out = false; /* -1: the COPY ended; -2: an error result follows */
    return true;
}

/* ---- Cancel (off the loop) -------------------------------------------- */

struct cancel_req {
    uv_work_t work;
    PGcancel *cancel;
    char err[256];
    char bind[64];
};

static void cancel_work(uv_work_t *w)
{
    struct cancel_req *cr = w->data;
    if (!PQcancel(cr->cancel, cr->err, sizeof cr->err) && cr->err[0] == '\0')
        snprintf(cr->err, sizeof cr->err, "cancel failed");
}

static void cancel_done(uv_work_t *w, int status)
{
    struct cancel_req *cr = w->data;
    (void)status;
    if (cr->err[0] != '\0')
        log_warn("bind %s: cancel request: %s", cr->bind, cr->err);
    PQfreeCancel(cr->cancel);
    free(cr);
}

/* Ask the server to cancel what the connection runs (PQcancel blocks, so
 * it runs on the thread pool). */
void pg_conn_cancel(struct pgconn *c)
{
    struct cancel_req *cr = calloc(1, sizeof *cr);

    if (cr == NULL || c->conn == NULL)
        goto fail;
    cr->cancel = PQgetCancel(c->conn);
    if (cr->cancel == NULL)
        goto fail;
    snprintf(cr->bind, sizeof cr->bind, "%s", c->pb->bind->conf->name);
    cr->work.data = cr;
    if (uv_queue_work(c->pb->bind->host->loop, &cr->work, cancel_work, cancel_done) == 0)
        return;
    PQfreeCancel(cr->cancel);
fail:
    free(cr);
    log_warn("bind %s: could not send a cancel request", c->pb->bind->conf->name);
}

static void on_statement_timeout(uv_timer_t *t)
{
    struct pgconn *c = t->data;

    if (c->job == NULL || c->state != PGC_BUSY)
        return;
    c->timed_out = true;
    log_info("bind %s: statement exceeded statement_timeout (%d ms): cancelling", c->pb->bind->conf->name,
             c->pb->bind->conf->statement_timeout_ms);
    pg_conn_cancel(c);
}

/* ---- The I/O state machine ------------------------------------------- */

/* Send one of the queries around a statement (no parameters, results
 * handled by pg_conn_result's phase checks). 1, or -1 when it could not be
 * sent (the connection is broken). */
static int conn_send_guard(struct pgconn *c, enum pgjob_phase phase, const char *sql)
{
    pg_conn_set_phase(c, phase);
    /* Ours, so it may be several statements (PG_RO_END): then the simple
     * protocol, which allows that. */
    if (!(strchr(sql, ';') != NULL ? PQsendQuery(c->conn, sql)
                                   : PQsendQueryParams(c->conn, sql, 0, NULL, NULL, NULL, NULL, 0)))
        return -1;
    pg_conn_poll(c, PQflush(c->conn) == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
    return 1;
}

/* Send the job's statement. 1 when sent; 0 when it could not be (its
 * error is written), unless a BEGIN READ ONLY of ours must still end. */
static int conn_send_stmt(struct pgconn *c)
{
    if (pg_conn_send_statement(c) == 0) {
        pg_conn_poll(c, PQflush(c->conn) == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
        return 1;
    }
    return c->ro_wrap ? conn_send_guard(c, PHASE_RO_COMMIT, "ROLLBACK") : 0;
}

/* The job's current query is complete: send its next one. Returns 1 when
 * one was sent, 0 when the job is finished, -1 when the connection broke. */
static int conn_advance(struct pgconn *c)
{
    struct job *job = c->job;

    switch (c->phase) {
    case PHASE_RO_BEGIN: return c->failed ? 0 : conn_send_stmt(c);
    case PHASE_BEGIN:
        if (c->failed)
            return 0;
        if (job->readonly)
            return conn_send_guard(c, PHASE_RO_LOCK, PG_RO_LOCK);
        return conn_send_stmt(c);
    case PHASE_RO_LOCK:
        if (c->failed)
            return 0;
        c->ro_locked = true;
        return conn_send_stmt(c);
    case PHASE_DEALLOC:
    case PHASE_REPREPARE: return conn_send_stmt(c);
    case PHASE_PREPARE:
        if (c->failed) {
            pg_prep_release(&c->pending);
            return c->ro_wrap ? conn_send_guard(c, PHASE_RO_COMMIT, "ROLLBACK") : 0;
        }
        c->pending.used = ++c->prep_tick;
        c->prep[c->nprep++] = c->pending;
        memset(&c->pending, 0, sizeof c->pending);
        return conn_send_stmt(c);
    case PHASE_STMT:
        if (c->prep_stale) {
            /* Forget the cache; outside a transaction, drop the server's
             * copies too and run the statement again, prepared afresh. */
            c->prep_stale = false;
            pg_prep_clear(c);
            if (!c->reprepared && PQtransactionStatus(c->conn) == PQTRANS_IDLE) {
                c->reprepared = true;
                c->failed = false;
                c->out.len = c->stale_mark;
                if (c->out.data != NULL)
                    c->out.data[c->out.len] = '\0';
                return conn_send_guard(c, PHASE_REPREPARE, "DEALLOCATE ALL");
            }
        }
        if (!c->failed && job->type == JOB_EXEC) {
            int rc;
            if (c->tuples)
                rc = codec_put_ok_rows(&c->out, job->rows);
            else
                rc = codec_put_ok_changes(&c->out, strtoll(c->changes, NULL, 10), NULL);
            if (rc != 0)
                pg_reply_error(&c->out, "NOMEM", "out of memory");
        }
        c->ro_locked = false;
        /* Session state: what a read-only user changes inside its own
         * transaction is committed with it; other changes show in the
         * statement's text or its command tag (pg_conn_result). */
        if (job->type == JOB_EXEC &&
            ((job->readonly && !c->ro_wrap) || pg_text_touches_session(job->req.text)))
            c->dirty = true;
        if (c->ro_wrap)
            return conn_send_guard(c, PHASE_RO_COMMIT, c->failed ? "ROLLBACK" : PG_RO_END);
        if (job->type == JOB_EXEC && job->readonly && PQtransactionStatus(c->conn) == PQTRANS_INTRANS)
            return conn_send_guard(c, PHASE_RO_RELOCK, PG_RO_CHECK);
        return 0;
    case PHASE_RO_RELOCK: c->ro_locked = PQtransactionStatus(c->conn) == PQTRANS_INTRANS; return 0;
    case PHASE_RO_COMMIT:
        if (c->ro_wrap && PQtransactionStatus(c->conn) != PQTRANS_IDLE) {
            /* PG_RO_END stopped at an error before its ROLLBACK (and the
             * release of advisory locks: DISCARD ALL does that then). */
            c->ro_wrap = false;
            c->dirty = true;
            return conn_send_guard(c, PHASE_RO_COMMIT, "ROLLBACK");
        }
        return 0;
    case PHASE_NONE: /* not reached: a job sends a query first */
    case PHASE_CATALOG:
    case PHASE_RELEASE:
    case PHASE_RESET: return 0;
    }
    return 0;
}

/* The job's queries are done. 0, unless its client may have changed the
 * session state and the connection is outside a transaction: then
 * DISCARD ALL runs first (1; -1 when it could not be sent), so that nothing
 * a client set, prepared, locked or listened to serves anyone else. The
 * client waits for that one round trip; a clean connection costs nothing. */
static int conn_job_end(struct pgconn *c)
{
    const struct job *job = c->job;

    /* A schema change comes back with its statement (catalog_refresh.h):
     * the catalog is read on this connection once it is outside a
     * transaction, so the read sees the change. */
    if (job->type == JOB_EXEC && c->phase == PHASE_STMT && !c->failed) {
        bool idle = PQtransactionStatus(c->conn) == PQTRANS_IDLE;
        if (job->kind == STMT_DDL && !idle)
            c->ddl_in_txn = true;
        else if (idle && (job->kind == STMT_DDL || c->ddl_in_txn) && !atomic_load(&job->cancelled)) {
            c->ddl_in_txn = false;
            c->catalog_seq = ++c->pb->bind->catalog.next_seq;
            return conn_send_guard(c, PHASE_CATALOG, PG_CATALOG_SQL);
        }
    }
    if (PQtransactionStatus(c->conn) == PQTRANS_IDLE)
        c->ddl_in_txn = false;
    if (!c->dirty || c->phase == PHASE_RESET || PQtransactionStatus(c->conn) != PQTRANS_IDLE)
        return 0;
    c->dirty = false;
    pg_prep_clear(c); /* DISCARD ALL deallocates our prepared statements too */
    return conn_send_guard(c, PHASE_RESET, "DISCARD ALL");
}

/* Read what the server sent and process complete results. */
void pg_conn_read(struct pgconn *c)
{
    if (!PQconsumeInput(c->conn)) {
        conn_lost(c);
        return;
    }
    while (c->job != NULL && !c->paused) {
        PGresult *res;
        if (c->copy_out && !conn_drain_copy(c))
            return;
        if (PQisBusy(c->conn))
            return;
        res = PQgetResult(c->conn);
        if (res == NULL) {
            /* The current query is complete. */
            int next = conn_advance(c);
            if (next == 0)
                next = conn_job_end(c);
            if (next > 0)
                continue;
            if (next < 0) {
                conn_lost(c);
                return;
            }
            pg_conn_finish_job(c);
            if (c->dirty && c->phase == PHASE_RESET) {
                /* DISCARD ALL failed (a cancel hit it): the session may
                 * still hold what a client changed, so nobody else uses it. */
                struct pg_bind *pb = c->pb;
                pg_conn_destroy(c);
                pg_bind_kick(pb);
                return;
            }
            pg_conn_dispatch(c);
            return;
        }
        if (c->phase == PHASE_RESET) {
            /* After any kind of job. */
            if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                log_warn("bind %s: DISCARD ALL after a client changed the session failed, closing the "
                         "connection: %s",
                         c->pb->bind->conf->name, PQresultErrorMessage(res));
                c->dirty = true; /* closed below, once the job is finished */
            }
        } else if (c->phase == PHASE_CATALOG) {
            pg_put_catalog(c, res);
        } else if (c->job->type == JOB_MIGRATION_STATE) {
            pg_put_migrations(c, res);
        } else if (c->job->type == JOB_LIST_TABLES && PQresultStatus(res) == PGRES_TUPLES_OK) {
            pg_put_tables(c, res);
        } else if (c->job->type == JOB_RELEASE) {
            /* Nothing to say to anyone. */
        } else {
            pg_conn_result(c, res);
        }
        PQclear(res);
        if (c->out.len >= CHUNK_BYTES && !c->failed) {
            if (job_post_chunk(c->job, &c->out) != 0) {
                /* The client is gone: let the statement end, drop its rows. */
                c->failed = true;
                buf_reset(&c->out);
            } else {
                bool behind;
                pthread_mutex_lock(&c->job->lock);
                behind = c->job->unacked > c->job->max_unacked;
                pthread_mutex_unlock(&c->job->lock);
                if (behind) {
                    c->paused = true;
                    if (c->poll != NULL)
                        uv_poll_stop(c->poll);
                }
            }
        }
    }
}

static void conn_connected(struct pgconn *c)
{
    struct pg_bind *pb = c->pb;

    uv_timer_stop(&c->timer);
    conn_set_state(c, PGC_IDLE);
    c->idle_since = uv_now(pb->bind->host->loop);
    if (PQsetnonblocking(c->conn, 1) != 0) {
        conn_lost(c);
        return;
    }
    if (pb->down)
        log_info("bind %s: server reachable again", pb->bind->conf->name);
    else
        log_debug("bind %s: connection ready", pb->bind->conf->name);
    pb->down = false;
    pb->backoff_ms = 0;
    pg_conn_poll(c, UV_READABLE);
    pg_conn_dispatch(c);
    pg_bind_kick(pb);
}

/* A connection attempt failed: the server counts as down. */
static void conn_connect_failed(struct pgconn *c, const char *why)
{
    struct pg_bind *pb = c->pb;
    char msg[400];

    if (!pb->down)
        log_warn("bind %s: cannot connect: %s", pb->bind->conf->name, why);
    pb->down = true;
    snprintf(pb->last_error, sizeof pb->last_error, "%s", why);
    pg_conn_destroy(c);
    if (pb->nconns == 0) {
        snprintf(msg, sizeof msg, "bind %s: the server is unavailable: %s", pb->bind->conf->name, why);
        pg_fail_queue(pb, "UNAVAILABLE", msg);
    }
    pg_bind_kick(pb);
}

static void conn_connect_step(struct pgconn *c)
{
    char why[256];

    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING: pg_conn_poll(c, UV_READABLE); break;
    case PGRES_POLLING_WRITING: pg_conn_poll(c, UV_WRITABLE); break;
    case PGRES_POLLING_OK: conn_connected(c); break;
    default:
        pg_conn_error_text(c->conn, why, sizeof why);
        conn_connect_failed(c, why);
        break;
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct pgconn *c = h->data;

    if (c->state == PGC_CLOSING || h != c->poll || c->lent)
        return;
    if (c->state == PGC_CONNECTING) {
        conn_connect_step(c);
        return;
    }
    if (status < 0) {
        /* libuv reports a socket error (a reset) without events. */
        if (c->conn != NULL && PQerrorMessage(c->conn)[0] == '\0')
            (void)PQconsumeInput(c->conn); /* lets libpq say what happened */
        conn_lost(c);
        return;
    }
    if (events & UV_WRITABLE) {
        int rc = PQflush(c->conn);
        if (rc < 0) {
            conn_lost(c);
            return;
        }
        if (rc == 0)
            pg_conn_poll(c, UV_READABLE);
    }
    if (events & UV_READABLE)
        pg_conn_read(c);
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct pgconn *c = t->data;
    char why[64];

    if (c->state != PGC_CONNECTING)
        return;
    snprintf(why, sizeof why, "timeout after %d ms", c->pb->bind->conf->connect_timeout_ms);
    conn_connect_failed(c, why);
}

/* libpq's notice receiver: a server's NOTICE, WARNING, ... goes to the
 * daemon's log with the bind and the client whose statement caused it,
 * instead of libpq's default of printing it raw on stderr. WARNINGs are
 * logged at warn; the rest (a client's RAISE NOTICE, "skipping") is chatter
 * for the debug level. Runs on the loop thread, inside libpq calls. */
static void conn_notice(void *arg, const PGresult *res)
{
    const struct pgconn *c = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    bool warning = severity != NULL && strcmp(severity, "WARNING") == 0;
    char client[32] = "", msg[512];

    if (!log_enabled(warning ? LOG_WARN : LOG_DEBUG))
        return;
    snprintf(msg, sizeof msg, "%s", primary != NULL ? primary : PQresultErrorMessage(res));
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    if (c->job != NULL && c->job->owner != 0)
        snprintf(client, sizeof client, "c%llu: ", (unsigned long long)c->job->owner);
    log_msg(warning ? LOG_WARN : LOG_DEBUG, "bind %s: %s%s: %s (SQLSTATE %s)", c->pb->bind->conf->name,
            client, severity != NULL ? severity : "NOTICE", msg, state != NULL ? state : "?????");
}

/* Start one new connection. */
void pg_conn_open(struct pg_bind *pb)
{
    const struct bind_conf *bc = pb->bind->conf;
    struct pgconn *c = calloc(1, sizeof *c);
    char why[256];

    if (c == NULL)
        return;
    c->pb = pb;
    c->fd = -1;
    static_assert(PGC_CONNECTING == 0, "a new connection (calloc) is connecting");
    (void)uv_timer_init(pb->bind->host->loop, &c->timer); /* cannot fail: it fills in the struct */
    c->timer.data = c;
    c->handles = 1;
    c->next = pb->conns;
    pb->conns = c;
    pb->nconns++;
    c->conn =
        PQconnectStartParams((const char *const *)bc->pg_keywords, (const char *const *)bc->pg_values, 0);
    if (c->conn == NULL || PQstatus(c->conn) == CONNECTION_BAD) {
        pg_conn_error_text(c->conn, why, sizeof why);
        conn_connect_failed(c, why);
        return;
    }
    PQsetNoticeReceiver(c->conn, conn_notice, c);
    /* At start-up the loop's clock has not moved while earlier binds
     * opened (schemas, snapshots, migrations): read it now, or the timeout
     * would count that time too. */
    uv_update_time(pb->bind->host->loop);
    uv_timer_start(&c->timer, on_connect_timeout, (uint64_t)bc->connect_timeout_ms, 0);
    pg_conn_poll(c, UV_WRITABLE);
    if (c->poll == NULL)
        conn_connect_failed(c, "cannot watch the connection's socket");
}

/* ---- Starting a job -------------------------------------------------- */

const char *pg_conn_begin_text(const char *begin)
{
    /* SQLite's BEGIN DEFERRED/IMMEDIATE/EXCLUSIVE mean plain BEGIN here. */
    const char *p = begin;
    while (isspace((unsigned char)*p))
        p++;
    if (strncasecmp(p, "begin", 5) == 0) {
        p += 5;
        while (isspace((unsigned char)*p))
            p++;
        if (strncasecmp(p, "deferred", 8) == 0 || strncasecmp(p, "immediate", 9) == 0 ||
            strncasecmp(p, "exclusive", 9) == 0)
            return "BEGIN";
    }
    return begin;
}

/* Start job on the idle connection c. */
void pg_conn_start(struct pgconn *c, struct job *job)
{
    int ok;

    c->job = job;
    conn_set_state(c, PGC_BUSY);
    c->header_sent = c->paused = c->timed_out = c->failed = c->tuples = c->ro_wrap = c->copy_out = false;
    c->reprepared = c->prep_stale = false;
    c->changes[0] = '\0';
    buf_reset(&c->out);
    if (atomic_load(&job->cancelled) && job->type == JOB_EXEC) {
        c->failed = true;
        pg_conn_finish_job(c);
        pg_conn_dispatch(c);
        return;
    }
    switch (job->type) {
    case JOB_RELEASE:
        pg_conn_set_phase(c, PHASE_RELEASE);
        if (PQtransactionStatus(c->conn) == PQTRANS_IDLE) {
            pg_conn_finish_job(c);
            pg_conn_dispatch(c);
            return;
        }
        ok = PQsendQuery(c->conn, "ROLLBACK");
        break;
    case JOB_LIST_TABLES:
        pg_conn_set_phase(c, PHASE_STMT);
        ok = PQsendQuery(c->conn,
                         "SELECT CASE WHEN table_schema = 'public' THEN table_name "
                         "ELSE table_schema || '.' || table_name END, "
                         "CASE table_type WHEN 'VIEW' THEN 'view' ELSE 'table' END, table_schema, table_name "
                         "FROM information_schema.tables "
                         "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1");
        break;
    case JOB_CATALOG:
        pg_conn_set_phase(c, PHASE_CATALOG);
        c->catalog_seq = ++c->pb->bind->catalog.next_seq;
        ok = PQsendQuery(c->conn, PG_CATALOG_SQL);
        break;
    case JOB_MIGRATION_STATE:
        pg_conn_set_phase(c, PHASE_STMT);
        ok = PQsendQuery(c->conn, "SELECT version, name, checksum, applied_at FROM " MIGRATE_TABLE
                                  " ORDER BY version");
        break;
    default:
        if (job->begin_sql != NULL) {
            pg_conn_set_phase(c, PHASE_BEGIN);
            ok = PQsendQuery(c->conn, pg_conn_begin_text(job->begin_sql));
        } else if (job->readonly && PQtransactionStatus(c->conn) == PQTRANS_IDLE) {
            pg_conn_set_phase(c, PHASE_RO_BEGIN);
            c->ro_wrap = true;
            ok = PQsendQueryParams(c->conn, "BEGIN READ ONLY", 0, NULL, NULL, NULL, NULL, 0);
        } else if (job->readonly && PQtransactionStatus(c->conn) == PQTRANS_INTRANS && !c->ro_locked) {
            pg_conn_set_phase(c, PHASE_RO_LOCK);
            ok = PQsendQueryParams(c->conn, PG_RO_LOCK, 0, NULL, NULL, NULL, NULL, 0);
        } else {
            ok = pg_conn_send_statement(c) == 0;
            if (!ok) {
                pg_conn_finish_job(c);
                pg_conn_dispatch(c);
                return;
            }
        }
        break;
    }
    if (!ok) {
        conn_lost(c);
        return;
    }
    if (job->type == JOB_EXEC && c->pb->bind->conf->statement_timeout_ms > 0)
        uv_timer_start(&c->timer, on_statement_timeout, (uint64_t)c->pb->bind->conf->statement_timeout_ms, 0);
    pg_conn_poll(c, PQflush(c->conn) == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}
