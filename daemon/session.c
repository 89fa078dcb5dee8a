/*
 * Client sessions: the session state machine (session_set_state is the one
 * way to change state), decoding requests and dispatching them, routing
 * statements to binds, holding transaction state, the backend's job events,
 * and a session's life from accept to close. The client I/O (reading, TLS
 * input, the write path with its flow control) is in session_io.c, .auth
 * and certificate logins in session_auth.c; session_int.h holds what the
 * three files share.
 *
 * Input: bytes land in inbuf; inbuf[0..inpos) is decoded, inbuf[inpos..len)
 * waits. Decoded requests (and framing errors, which must be answered in
 * order too) wait in a ring of max_pipeline entries; when it is full the
 * session stops reading its socket until requests have been answered.
 */
#include "daemon/session.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>

#include "daemon/authq.h"
#include "daemon/catalog_refresh.h"
#include "daemon/federate.h"
#include "daemon/log.h"
#include "daemon/route.h"
#include "daemon/server.h"
#include "daemon/session_int.h"
#include "daemon/tls.h"

const char *session_state_name(enum sess_state st)
{
    switch (st) {
    case SESS_IDLE: return "idle";
    case SESS_BUSY: return "busy";
    case SESS_AUTH: return "auth";
    case SESS_CLOSING: return "closing";
    }
    return "?";
}

/* The legal state changes (session.h draws them): legal[from][to]. A
 * change to the state a session is already in is no change (allowed for
 * IDLE only: session_pump may settle an idle session again). CLOSING is
 * final. */
static const bool sess_legal[SESS_CLOSING + 1][SESS_CLOSING + 1] = {
    [SESS_IDLE] = {[SESS_IDLE] = true, [SESS_BUSY] = true, [SESS_AUTH] = true, [SESS_CLOSING] = true},
    [SESS_BUSY] = {[SESS_IDLE] = true, [SESS_CLOSING] = true},
    [SESS_AUTH] = {[SESS_IDLE] = true, [SESS_CLOSING] = true},
    [SESS_CLOSING] = {false},
};

/* Every state change goes through here; an illegal one is a bug in the
 * session files (asserted; logged and ignored when asserts are off). Loop thread. */
void session_set_state(struct session *s, enum sess_state to)
{
    assert(server_on_loop(s->srv));
    if (!sess_legal[s->state][to]) {
        log_error("c%llu: illegal state change %s -> %s", (unsigned long long)s->id,
                  session_state_name(s->state), session_state_name(to));
        assert(!"illegal session state change");
        return;
    }
    if (s->state == to)
        return;
    log_debug("c%llu: %s -> %s", (unsigned long long)s->id, session_state_name(s->state),
              session_state_name(to));
    if (to == SESS_CLOSING)
        s->srv->nclosing++; /* no longer counts against max_clients */
    s->state = to;
}

/* Take the oldest queued input off the ring; the slot stays valid until
 * the next decode. */
static struct pending *queue_pop(struct session *s)
{
    struct pending *p = &s->queue[s->qhead];

    if (++s->qhead == s->qcap) /* no division: qcap need not be a power of two */
        s->qhead = 0;
    s->qcount--;
    s->queued_bytes -= p->bytes;
    return p;
}

/* ---- Jobs ------------------------------------------------------------ */

void session_start_job(struct session *s, struct job *job)
{
    assert(s->state == SESS_IDLE && s->job == NULL && job->sess == s);
    s->job = job;
    job->started_ns = uv_hrtime();
    session_set_state(s, SESS_BUSY);
    job->bind->ops->submit(job->bind, job);
}

void session_txn_set(struct session *s, struct bind *b)
{
    if (b != NULL)
        bind_hold(b);
    if (s->txn_bind != NULL)
        bind_drop(s->txn_bind);
    s->txn_bind = b;
    s->in_txn = b != NULL;
}

/* The session's transaction bookkeeping after a statement ran: whether a
 * transaction is open is what the database reported with the job
 * (job->in_txn), whatever the SQL said. A held BEGIN is used up once a
 * transaction is open; one that ran without leaving a transaction open
 * (it failed, or was refused) stays held, so the client, which was told
 * +OK, is still in its transaction: its ROLLBACK answers +OK and its next
 * statement tries the BEGIN again, and nothing runs in autocommit that
 * the client meant for a transaction. */
static void session_exec_done(struct session *s, struct job *job)
{
    if (job->kind == STMT_DDL && job->bind->conf->type == BIND_POSTGRES)
        federate_catalog_changed(s->srv);
    if (job->in_txn && s->txn_held) {
        /* Binds that join the transaction later run its BEGIN. */
        s->txn_held = false;
        free(s->txn_begin);
        s->txn_begin = s->held_begin;
        s->held_begin = NULL;
    }
    session_xact_done(s, job);
}

/* A finished statement counts in its bind's .stats. */
static void session_count(struct session *s, const struct job *job)
{
    struct bind_stats *st = &job->bind->stats;

    st->statements += 1 + job->nmore;
    st->errors += job->nmore ? job->errors : job->failed;
    st->rows += job->rows;
    st->time_ns += uv_hrtime() - job->started_ns;
    s->statements += 1 + job->nmore;
}

void session_job_event(struct job_event *ev)
{
    struct job *job = ev->job;
    struct session *s = job->sess;

    assert(bind_host_on_loop(job->bind->host));
    assert(s == NULL || s->job == job);
    if (!ev->done) {
        if (s == NULL || s->state == SESS_CLOSING) {
            job_ack(job, ev->data.len);
            buf_free(&ev->data);
        } else {
            session_flush(s);
            session_write(s, &ev->data, job);
        }
        free(ev);
        return;
    }
    /* A statement that changed the schema brought the new catalog: it
     * routes everyone's next statements before this answer goes out. */
    if (job->catalog != NULL) {
        catalog_install(job->bind, job->catalog);
        job->catalog = NULL;
    }
    /* Connections lent to the job go back to their binds' loop. */
    for (size_t i = 0; i < job->nxact_lent; i++)
        backend_pg_unlend(job->xact_lent[i].pgconn);
    job->nxact_lent = 0;
    if (s == NULL) {
        /* A release job: nobody waits for it. */
        job_unref(job);
        return;
    }
    if (job->xact_step) {
        session_xact_step_done(s, job, &ev->data);
        return;
    }
    s->job = NULL;
    s->active_at = uv_now(s->srv->loop);
    if (job->type == JOB_EXEC) {
        session_count(s, job);
        session_exec_done(s, job);
    }
    if (s->state == SESS_CLOSING) {
        bool graceful = !atomic_load(&job->cancelled);
        if (graceful && job->type == JOB_EXEC && buf_append(&s->out, ev->data.data, ev->data.len) != 0)
            graceful = false;
        job_unref(job);
        session_finish_close(s, graceful);
        return;
    }
    session_set_state(s, SESS_IDLE);
    if (job->on_done != NULL) {
        job->on_done(s, job);
    } else if (ev->data.len == 0) {
        session_reply_error(s, "NOMEM", "out of memory building the response");
    } else if (buf_append(&s->out, ev->data.data, ev->data.len) != 0) {
        session_close(s, true);
        job_unref(job);
        return;
    }
    job_unref(job);
    session_pump(s);
}

/* ---- Statements ------------------------------------------------------ */

/* Whether the session's user may write at least one bind. */
static bool session_writes_somewhere(const struct session *s)
{
    const struct config *cfg = s->srv->cfg;

    if (cfg->nusers == 0)
        return true;
    for (size_t i = 0; s->user != NULL && i < cfg->nbinds; i++)
        if (s->user->grants[i] == GRANT_READ_WRITE)
            return true;
    return false;
}

/* A BEGIN waits for the statement that decides its bind (README,
 * Routing), so the grant of that bind cannot be checked yet. A BEGIN that
 * asks for the write lock (IMMEDIATE, EXCLUSIVE) from a user who may write
 * no bind can never succeed: it is refused here, on the BEGIN itself.
 * Otherwise the bind's backend checks the BEGIN with the first statement
 * (SQLite: sqlite3_stmt_readonly() of the BEGIN), and a refused BEGIN
 * stays held (session_exec_done). */
static void session_hold_begin(struct session *s, const struct request *req, const struct route *r)
{
    if (s->txn_held) {
        session_reply_error(s, "SQL", "cannot start a transaction within a transaction");
        return;
    }
    if ((r->flags & ROUTE_BEGIN_WRITE) && !session_writes_somewhere(s)) {
        session_reply_error(
            s, "NOPERM", "user %s may write no bind: BEGIN IMMEDIATE and BEGIN EXCLUSIVE take the write lock",
            s->user_name ? s->user_name : "?");
        return;
    }
    s->held_begin = strdup(req->text);
    if (s->held_begin == NULL) {
        session_reply_error(s, "NOMEM", "out of memory");
        return;
    }
    s->txn_held = true;
    session_reply_ok_changes(s, 0);
}

/* Whether the route's bind i (of the configuration in force) is b, a bind
 * a reload may have replaced since: then by name. */
static bool route_bind_is(const struct server *srv, size_t i, const struct bind *b)
{
    return srv->binds[i] == b || strcmp(srv->cfg->binds[i].name, b->conf->name) == 0;
}

/* BEGIN, COMMIT and friends change the session's transaction state, and
 * DDL the catalogs (catalog_refresh.h), which decide where later
 * statements go: they end a batch. */
static bool stmt_changes_txn(enum stmt_kind kind)
{
    return kind == STMT_BEGIN || kind == STMT_COMMIT || kind == STMT_ROLLBACK || kind == STMT_SAVEPOINT ||
           kind == STMT_DDL;
}

/* A statement for a SQLite bind keeps the normalised form the router just
 * made of it (routecache_norm), so the bind's connection does not make it
 * again. Without one (out of memory too) the connection makes its own. */
static void session_keep_norm(struct session *s, struct request *req, const struct bind *target)
{
    if (target->conf->type != BIND_POSTGRES && req->norm == NULL)
        req->norm = routecache_norm(s->srv->routes, req);
}

/* Move the queued statements that would run right after job's on the same
 * bind into job (at most BATCH_MAX), so a pipelining client pays one trip
 * to the bind's worker per batch instead of per statement. Each keeps its
 * own response. Anything routed elsewhere, refused by routing, a command
 * or a framing error ends the batch and is handled as usual. */
#define BATCH_MAX 64

static void session_batch(struct session *s, struct job *job)
{
    struct server *srv = s->srv;
    size_t cap = 0;

    while (s->qcount > 0 && job->nmore < BATCH_MAX) {
        struct pending *p = &s->queue[s->qhead];
        const struct route *r;
        struct bind *target;

        if (p->is_error || p->req.type != REQUEST_SQL)
            break;
        r = routecache_get_request(srv->routes, srv->cfg, &p->req);
        if (r->err_code != NULL || stmt_changes_txn(r->kind))
            break;
        if (s->in_txn) {
            if (r->bind != ROUTE_NO_TABLE && !route_bind_is(srv, r->bind, s->txn_bind))
                break;
            target = s->txn_bind;
        } else {
            target = r->bind != ROUTE_NO_TABLE ? srv->binds[r->bind] : s->use_bind;
        }
        if (target != job->bind)
            break;
        session_keep_norm(s, &p->req, target);
        if (job->nmore == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct job_stmt *more = realloc(job->more, ncap * sizeof *more);
            if (more == NULL)
                break;
            job->more = more;
            cap = ncap;
        }
        job->more[job->nmore].req = p->req;
        job->more[job->nmore].kind = r->kind;
        job->nmore++;
        memset(&p->req, 0, sizeof p->req);
        queue_pop(s);
    }
}

/* When the statement about to run began (server.inline_clock), taken:
 * a statement that then goes to a worker leaves no end behind. */
static uint64_t session_clock_start(struct server *srv)
{
    uint64_t start = srv->inline_clock;

    srv->inline_clock = 0;
    return start != 0 ? start : uv_hrtime();
}

/* A statement the bind answers on the loop thread: a read (read_inline),
 * or with kind an INSERT, UPDATE or DELETE a lone write (write_inline). No
 * job and no trip to another thread. Takes the request's memory when it
 * answered. */
static bool session_run_inline(struct session *s, struct bind *b, struct request *req, enum stmt_kind kind)
{
    struct bind_stats *st = &b->stats;
    uint64_t start = session_clock_start(s->srv), end, rows = 0;

    if (kind == STMT_SELECT ? !b->ops->read_inline(b, req, start, &s->out, &rows)
                            : !b->ops->write_inline(b, req, kind, start, &s->out))
        return false;
    end = uv_hrtime();
    s->srv->inline_clock = end;
    st->statements++;
    st->on_loop++;
    st->rows += rows;
    st->time_ns += end - start;
    s->statements++;
    s->active_at = uv_now(s->srv->loop);
    codec_request_free(req);
    return true;
}

/* A read or write of the session's transaction on one bind, answered on
 * the loop thread on the transaction's own connection (txn_inline): no
 * job, no trip to its worker and back. */
static bool session_run_txn_inline(struct session *s, struct bind *b, struct request *req,
                                   enum stmt_kind kind)
{
    struct bind_stats *st = &b->stats;
    uint64_t start = session_clock_start(s->srv), end, rows = 0;
    size_t mark = s->out.len;
    bool open;

    if (!b->ops->txn_inline(b, s->id, req, kind, start, &s->out, &rows, &open))
        return false;
    end = uv_hrtime();
    s->srv->inline_clock = end;
    st->statements++;
    st->on_loop++;
    st->rows += rows;
    st->time_ns += end - start;
    if (s->out.data[mark] == '-')
        st->errors++;
    else if (kind != STMT_SELECT)
        s->txn_wrote = true;
    s->statements++;
    s->active_at = uv_now(s->srv->loop);
    if (!open)
        session_txn_ended(s);
    codec_request_free(req);
    return true;
}

/* Inside a transaction SQLite's `main` is the transaction's home bind: a
 * CREATE TABLE/INDEX/VIEW/TRIGGER or a "PRAGMA main.x" for another bind's
 * table names that bind's schema instead (sqlparse_main_slot), as it runs
 * outside transactions on the bind's own connection. 0, or -1 on ENOMEM
 * (req untouched). */
static int session_qualify_main(struct request *req, const char *schema)
{
    struct buf b = BUF_INIT;
    size_t pos, del;
    int rc;

    if (!sqlparse_main_slot(req->text, req->len, &pos, &del))
        return 0;
    rc = buf_append(&b, req->text, pos);
    rc |= buf_putc(&b, '"');
    for (const char *p = schema; *p != '\0'; p++)
        rc |= *p == '"' ? buf_puts(&b, "\"\"") : buf_putc(&b, *p);
    rc |= buf_puts(&b, del == 0 ? "\"." : "\"");
    rc |= buf_append(&b, req->text + pos + del, req->len - pos - del);
    rc |= buf_putc(&b, '\0');
    if (rc != 0) {
        buf_free(&b);
        return -1;
    }
    codec_request_set_text(req, b.data, b.len - 1);
    return 0;
}

/* A statement of the session's transaction that touches a SQLite bind
 * other than the one the transaction runs on, or that spans binds and
 * starts a held BEGIN: it runs on the transaction's connection, where the
 * other SQLite binds are attached (daemon/xact.h), with the grants checked
 * per bind. A DDL statement or PRAGMA of one other bind names that bind
 * where SQLite would take main (session_qualify_main); warnings > 0: the
 * answer gets warnings=N (a foreign key across binds). Returns true when
 * it took the request (a job started, or an error answered); false: route
 * it as always (TXNBIND, CROSSBIND). */
bool session_xact_stmt(struct session *s, struct request *req, const struct route *r, unsigned warnings,
                       bool lend)
{
    struct server *srv = s->srv;
    const struct config *cfg = srv->cfg;
    bool cross = r->err_code != NULL && strcmp(r->err_code, "CROSSBIND") == 0;
    struct bind *home;
    struct job *job;
    const char *begin = s->held_begin;
    bool joined = false;

    if ((r->err_code != NULL && !cross) || r->nbinds == 0 || (cross && r->kind == STMT_DDL))
        return false;
    if (s->in_txn && (home = session_xact_home(s)) != NULL) {
        joined = true;
        if (!cross && route_bind_is(srv, r->bind, home))
            return false;
    } else if (s->in_txn) {
        /* No SQLite bind is in the transaction yet: the statement's first
         * one joins it as its home. */
        home = NULL;
        for (size_t i = 0; i < r->nbinds && home == NULL; i++)
            if (srv->binds[r->binds[i].index]->ops == &backend_sqlite_ops)
                home = srv->binds[r->binds[i].index];
        if (home == NULL)
            return false;
        begin = NULL; /* session_xact_begin_sqlite, below */
    } else if (cross) {
        home = srv->binds[r->binds[0].index];
    } else {
        return false;
    }
    if (home->ops != &backend_sqlite_ops)
        return false;
    for (size_t i = 0; i < r->nbinds; i++)
        if (srv->binds[r->binds[i].index]->ops != &backend_sqlite_ops && !lend)
            return false;
    for (size_t i = 0; i < r->nbinds; i++) {
        struct bind *b = srv->binds[r->binds[i].index];
        if (session_grant(s, b) == GRANT_NONE) {
            session_reply_error(s, "NOPERM", "user %s has no access to bind %s",
                                s->user_name ? s->user_name : "?", b->conf->name);
            codec_request_free(req);
            return true;
        }
    }
    if (!cross && (r->kind == STMT_DDL || r->kind == STMT_PRAGMA) &&
        session_qualify_main(req, cfg->binds[r->bind].name) != 0) {
        session_reply_error(s, "NOMEM", "out of memory");
        codec_request_free(req);
        return true;
    }
    job = job_new(JOB_EXEC, home, s, s->id);
    if (job != NULL)
        job->xact_binds = calloc(r->nbinds, sizeof *job->xact_binds);
    if (job != NULL && !joined)
        job->begin_buf = begin != NULL ? strdup(begin) : session_xact_begin_sqlite(s, home);
    if (job == NULL || job->xact_binds == NULL || (!joined && job->begin_buf == NULL)) {
        if (job != NULL)
            job_unref(job);
        session_reply_error(s, "NOMEM", "out of memory");
        codec_request_free(req);
        return true;
    }
    for (size_t i = 0; i < r->nbinds; i++) {
        job->xact_binds[i].index = r->binds[i].index;
        job->xact_binds[i].writes = r->binds[i].writes;
        job->xact_binds[i].readonly = session_grant(s, srv->binds[r->binds[i].index]) != GRANT_READ_WRITE;
    }
    job->nxact_binds = r->nbinds;
    job->xact_home_readonly = session_grant(s, home) != GRANT_READ_WRITE;
    job->begin_sql = job->begin_buf;
    job->req = *req;
    memset(req, 0, sizeof *req);
    job->kind = r->kind;
    job->txn_open = joined;
    if (warnings > 0) {
        job->warnings = warnings;
        job->on_done = federate_references_done;
    }
    /* Its PostgreSQL binds: through their participants' connections. */
    if (lend && session_xact_lend_conns(s, job) != 0) {
        job_unref(job);
        return true;
    }
    session_start_job(s, job);
    return true;
}

/* DDL across binds: a CREATE TABLE with a foreign key to another bind runs
 * on its own bind (federate_references); a view over several binds gets a
 * clear refusal; anything else the route's CROSSBIND (false). */
static bool session_cross_references(struct session *s, struct request *req, const struct route *r)
{
    const char *why = NULL;
    struct job *job = NULL;
    enum grant grant;
    int rc = federate_references(s, req, r, &job, &why);

    if (rc == 0 && why == NULL)
        return false;
    if (rc <= 0) {
        if (rc < 0)
            session_reply_error(s, "NOMEM", "out of memory");
        else
            session_reply_error(s, "CROSSBIND", "%s", why);
        codec_request_free(req);
        return true;
    }
    if (s->in_txn && strcmp(job->bind->conf->name, s->txn_bind->conf->name) == 0) {
        /* Its bind is the transaction's: it runs there. */
        job->txn_open = true;
    } else if (s->in_txn) {
        /* Its bind joins the transaction when both are SQLite binds
         * (session_xact_stmt), with the same warnings=N answer. */
        struct route_bind rb = {.index = job->bind->index, .writes = true};
        struct route one = {.kind = STMT_DDL, .nbinds = 1, .binds = &rb, .bind = (int)rb.index};
        struct request own = job->req;
        bool taken;

        memset(&job->req, 0, sizeof job->req);
        taken = session_xact_stmt(s, &own, &one, job->warnings, false);
        job_unref(job);
        if (taken)
            return true;
        codec_request_free(&own);
        session_reply_error(s, "TXNBIND",
                            "a statement across binds cannot run inside a transaction on a PostgreSQL bind: "
                            "COMMIT or ROLLBACK first");
        return true;
    } else if (s->txn_held) {
        session_reply_error(s, "TXNBIND",
                            "a statement across binds cannot run inside a transaction (yet): COMMIT or "
                            "ROLLBACK first");
        job_unref(job);
        return true;
    }
    grant = session_grant(s, job->bind);
    if (grant == GRANT_NONE) {
        session_reply_error(s, "NOPERM", "user %s has no access to bind %s",
                            s->user_name ? s->user_name : "?", job->bind->conf->name);
        job_unref(job);
        return true;
    }
    job->readonly = grant == GRANT_READ;
    session_start_job(s, job);
    return true;
}

bool session_cross_refused(struct session *s, struct request *req, const struct route *r)
{
    bool write = false;
    const struct bind *lacking = federate_grant_missing(s, r, &write);

    if (lacking == NULL)
        return false;
    if (write)
        session_reply_error(s, "NOPERM", "user %s may not write bind %s, which this statement writes",
                            s->user_name ? s->user_name : "?", lacking->conf->name);
    else
        session_reply_error(s, "NOPERM", "user %s has no access to bind %s",
                            s->user_name ? s->user_name : "?", lacking->conf->name);
    codec_request_free(req);
    return true;
}

/* A statement whose tables live in several binds: outside transactions the
 * federation pool runs it (federate.h), with the grants of every bind it
 * touches. Returns false, leaving req alone, for statements it cannot run
 * (the caller answers the route's CROSSBIND). Takes req's memory
 * otherwise. */
static bool session_cross_bind(struct session *s, struct request *req, const struct route *r)
{
    struct job *job;

    if (r->kind == STMT_DDL)
        return session_cross_references(s, req, r);
    if (!federate_runs(r))
        return false;
    if (s->txn_held && !s->in_txn && session_xact_spans_pg(s, r)) {
        /* The transaction's first statement: its binds join it. */
        session_xact_lend(s, req, r);
        return true;
    }
    if (s->in_txn || s->txn_held) {
        session_reply_error(s, "TXNBIND",
                            "a statement across binds cannot run inside a transaction (yet): %s; COMMIT or "
                            "ROLLBACK first, or run it outside the transaction",
                            r->err_msg ? r->err_msg : "it names tables of several binds");
        codec_request_free(req);
        return true;
    }
    if (session_cross_refused(s, req, r))
        return true;
    /* A read across SQLite binds may be answered on the loop, as a bind's
     * quick reads are (federate.c). */
    if (r->kind == STMT_SELECT && s->srv->federation->ops->read_inline != NULL &&
        session_run_inline(s, s->srv->federation, req, STMT_SELECT))
        return true;
    job = federate_job_new(s, r, req);
    if (job == NULL) {
        session_reply_error(s, "NOMEM", "out of memory");
        return true;
    }
    session_start_job(s, job);
    return true;
}

/* Route one statement and start it. Takes the request's memory. */
void session_sql(struct session *s, struct request *req)
{
    struct server *srv = s->srv;
    const struct route *r = routecache_get_request(srv->routes, srv->cfg, req);
    const char *begin = NULL;
    struct bind *target;
    struct job *job;
    enum grant grant;

    if (s->in_txn && session_xact_route(s, req, r))
        return;
    if ((s->in_txn || s->txn_held) && session_xact_stmt(s, req, r, 0, false))
        return;
    if (r->err_code != NULL && strcmp(r->err_code, "CROSSBIND") == 0 && session_cross_bind(s, req, r))
        return;
    if (r->err_code != NULL) {
        session_reply_error(s, r->err_code, "%s", r->err_msg ? r->err_msg : "out of memory");
        codec_request_free(req);
        return;
    }
    switch (r->kind) {
    case STMT_BEGIN:
        if (!s->in_txn) {
            session_hold_begin(s, req, r);
            codec_request_free(req);
            return;
        }
        target = s->txn_bind; /* SQLite explains the nesting error */
        break;
    case STMT_COMMIT:
    case STMT_ROLLBACK:
        if (s->txn_held && !s->in_txn) {
            /* Nothing ran inside the held transaction. */
            s->txn_held = false;
            free(s->held_begin);
            s->held_begin = NULL;
            session_reply_ok_changes(s, 0);
            codec_request_free(req);
            return;
        }
        target = s->in_txn ? s->txn_bind : s->use_bind;
        break;
    default:
        if (s->in_txn) {
            /* By name: a reload may have replaced the bind the transaction
             * runs on; it still ends there. */
            if (r->bind != ROUTE_NO_TABLE && !route_bind_is(srv, r->bind, s->txn_bind)) {
                session_reply_error(s, "TXNBIND",
                                    "the open transaction is on bind %s; this statement is for bind %s "
                                    "(COMMIT or ROLLBACK first)",
                                    s->txn_bind->conf->name, srv->cfg->binds[r->bind].name);
                codec_request_free(req);
                return;
            }
            target = s->txn_bind;
        } else if (r->bind != ROUTE_NO_TABLE) {
            target = srv->binds[r->bind];
            if (s->txn_held)
                begin = s->held_begin;
        } else {
            target = s->use_bind;
            /* Whatever follows a BEGIN belongs to its transaction: a
             * statement naming no table (SELECT now(), a SAVEPOINT, a
             * transaction-scoped lock) starts the held transaction here,
             * on the session's bind, rather than run outside it. */
            if (s->txn_held)
                begin = s->held_begin;
        }
        break;
    }
    grant = session_grant(s, target);
    if (grant == GRANT_NONE && r->kind != STMT_COMMIT && r->kind != STMT_ROLLBACK) {
        session_reply_error(s, "NOPERM", "user %s has no access to bind %s",
                            s->user_name ? s->user_name : "?", target->conf->name);
        codec_request_free(req);
        return;
    }
    session_keep_norm(s, req, target);
    /* Outside a transaction, earlier statements of this session have all
     * been answered (the session is idle), so a read may be answered here
     * and now without changing what it sees or the order of answers. */
    if (r->kind == STMT_SELECT && !s->in_txn && !s->txn_held && target->ops->read_inline != NULL &&
        session_run_inline(s, target, req, STMT_SELECT))
        return;
    /* The same for a write outside any transaction, which commits before
     * it is answered: a later statement of this session (or a quick read
     * of anyone's) sees it, as after a worker's answer. */
    if ((r->kind == STMT_INSERT || r->kind == STMT_UPDATE || r->kind == STMT_DELETE) && !s->in_txn &&
        !s->txn_held && grant == GRANT_READ_WRITE && target->ops->write_inline != NULL &&
        session_run_inline(s, target, req, r->kind))
        return;
    /* Inside a transaction on this one bind, the session is idle too: a
     * read, or a write of bounded cost, may run on the transaction's
     * connection here, in order (txn_inline). */
    if ((r->kind == STMT_SELECT ||
         ((r->kind == STMT_INSERT || r->kind == STMT_UPDATE || r->kind == STMT_DELETE) &&
          grant == GRANT_READ_WRITE)) &&
        s->in_txn && !s->txn_held && s->xt == NULL && r->nbinds == 1 && target == s->txn_bind &&
        target->ops->txn_inline != NULL && session_run_txn_inline(s, target, req, r->kind))
        return;
    job = job_new(JOB_EXEC, target, s, s->id);
    if (job == NULL) {
        session_reply_error(s, "NOMEM", "out of memory");
        codec_request_free(req);
        return;
    }
    job->req = *req;
    memset(req, 0, sizeof *req);
    job->kind = r->kind;
    job->readonly = grant == GRANT_READ;
    job->txn_open = s->in_txn;
    if (begin == NULL && !s->txn_held && s->xt == NULL && target->ops->batches && !stmt_changes_txn(r->kind))
        session_batch(s, job);
    if (begin != NULL) {
        job->begin_buf = strdup(begin);
        if (job->begin_buf == NULL) {
            job_unref(job);
            session_reply_error(s, "NOMEM", "out of memory");
            return;
        }
        job->begin_sql = job->begin_buf;
    }
    session_start_job(s, job);
}

/* ---- Input ----------------------------------------------------------- */

#define QUEUE_MIN 4

/* A session's slice of a loop turn: once it has handled its requests for
 * this long in one turn (statements answered on the loop, commands), it
 * yields to the other clients until the next turn. Looked at after each
 * statement the loop answered (its end is known) and every
 * SLICE_CHECK_EVERY other requests. */
#define SESSION_SLICE_NS  (500 * 1000)
#define SLICE_CHECK_EVERY 32

static void queue_drop_all(struct session *s)
{
    while (s->qcount > 0) {
        struct pending *p = queue_pop(s);
        codec_request_free(&p->req);
        free(p->err_msg);
    }
}

/* Is there room for one more decoded request? Grows the ring (doubling,
 * up to max_pipeline) when it is full. */
static bool queue_room(struct session *s)
{
    size_t limit = (size_t)s->srv->cfg->max_pipeline;
    size_t cap;
    struct pending *q;

    if (s->qcount < s->qcap)
        return true;
    if (s->qcap >= limit)
        return false;
    cap = s->qcap ? s->qcap * 2 : QUEUE_MIN;
    if (cap > limit)
        cap = limit;
    q = calloc(cap, sizeof *q);
    if (q == NULL)
        return false; /* treated as full: input waits */
    for (size_t i = 0; i < s->qcount; i++)
        q[i] = s->queue[(s->qhead + i) % s->qcap];
    free(s->queue);
    s->queue = q;
    s->qcap = cap;
    s->qhead = 0;
    return true;
}

/* Decode complete requests from inbuf into the queue while it has room. */
static void session_parse_input(struct session *s)
{
    const struct config *cfg = s->srv->cfg;
    bool prelogin = !session_authenticated(s);
    struct codec_limits lim = {cfg->max_request < cfg->max_request_total ? cfg->max_request
                                                                         : cfg->max_request_total,
                               (size_t)cfg->max_params, cfg->max_request_total};

    if (prelogin)
        lim.max_request = lim.max_total = PRELOGIN_MAX_REQUEST;
    while (s->inpos < s->inbuf.len && queue_room(s) && s->queued_bytes < cfg->max_request_total &&
           !(prelogin && (s->qcount > 0 || s->state != SESS_IDLE))) {
        const char *p = s->inbuf.data + s->inpos;
        size_t avail = s->inbuf.len - s->inpos;
        struct pending *slot;
        struct request req;
        struct codec_error err;
        size_t used = 0;
        int rc;

        if (!codec_discard_done(&s->discard)) {
            s->inpos += codec_discard(p, avail, &s->discard);
            continue;
        }
        rc = codec_parse_request(p, avail, &lim, &req, &used, &s->discard, &err);
        if (rc == CODEC_NEED_MORE)
            break;
        s->inpos += used;
        if (rc == CODEC_EMPTY)
            continue;
        slot =
            &s->queue[s->qhead + s->qcount < s->qcap ? s->qhead + s->qcount : s->qhead + s->qcount - s->qcap];
        memset(slot, 0, sizeof *slot);
        if (rc == CODEC_OK) {
            slot->req = req;
            slot->bytes = req.len;
            for (size_t i = 0; i < req.nparams; i++)
                slot->bytes += req.params[i].len;
            s->queued_bytes += slot->bytes;
        } else {
            slot->is_error = true;
            slot->err_code = err.code;
            if (prelogin && strcmp(err.code, "TOOLONG") == 0)
                snprintf(err.message, sizeof err.message,
                         "request too long before login: at most %d bytes until .auth succeeds",
                         PRELOGIN_MAX_REQUEST);
            slot->err_msg = strdup(err.message);
        }
        s->qcount++;
    }
    /* Reclaim consumed input: free it when all is consumed (an idle
     * client keeps no read buffer), move the tail down when the consumed
     * part is most of the buffer. */
    if (s->inpos == s->inbuf.len) {
        if (s->inbuf_shared)
            s->inbuf.len = 0;
        else
            buf_free(&s->inbuf);
        s->inpos = 0;
    } else if (s->inpos > s->inbuf.cap / 2) {
        buf_consume(&s->inbuf, s->inpos);
        s->inpos = 0;
    }
}

/* Whether s has worked its slice of the turn, a request later; now: when
 * that request ended if known, else 0. */
static bool session_slice_worked(struct session *s, uint64_t now)
{
    if (now == 0) {
        if (++s->slice_count < SLICE_CHECK_EVERY)
            return false;
        now = uv_hrtime();
    }
    s->slice_count = 0;
    if (s->slice_start == 0) {
        s->slice_start = now;
        return false;
    }
    return now - s->slice_start >= SESSION_SLICE_NS;
}

/* Goes on with the sessions that yielded in the last turn, each with a
 * new slice; one that works it all yields again, behind the others. */
static void on_resume(uv_idle_t *h)
{
    struct server *srv = h->data;
    size_t n = 0;

    for (struct session *s = srv->yield_head; s != NULL; s = s->yield_next)
        n++;
    /* One at a time from the head: pumping one may close another, which
     * leaves the list (session_yield_forget). */
    while (n-- > 0 && srv->yield_head != NULL) {
        struct session *s = srv->yield_head;
        srv->yield_head = s->yield_next;
        if (srv->yield_head == NULL)
            srv->yield_tail = &srv->yield_head;
        s->yield_next = NULL;
        s->yielded = false;
        s->slice_turn = srv->watch.turns;
        s->slice_start = 0;
        s->slice_count = 0;
        session_pump(s);
    }
    if (srv->yield_head == NULL)
        uv_idle_stop(h);
}

/* s has worked its slice: it handles no request and reads nothing more
 * until resume_idle goes on with it (an active idle handle: the loop
 * polls without sleeping meanwhile). */
static void session_yield(struct session *s)
{
    struct server *srv = s->srv;

    s->yielded = true;
    s->yield_next = NULL;
    *srv->yield_tail = s;
    srv->yield_tail = &s->yield_next;
    (void)uv_idle_start(&srv->resume_idle, on_resume); /* fails only without a callback */
}

/* A session about to be freed leaves the yield list. */
static void session_yield_forget(struct session *s)
{
    struct server *srv = s->srv;
    struct session **pp = &srv->yield_head;

    if (!s->yielded)
        return;
    while (*pp != s)
        pp = &(*pp)->yield_next;
    *pp = s->yield_next;
    if (srv->yield_tail == &s->yield_next)
        srv->yield_tail = pp;
    s->yielded = false;
}

/* Handle queued requests until one needs a backend, or until the session
 * has worked its slice of the turn. Returns true when it handled any. */
static bool session_advance(struct session *s)
{
    struct server *srv = s->srv;
    uint64_t chain = 0; /* when the last statement answered on the loop ended */
    bool any = false;

    if (s->slice_turn != srv->watch.turns) {
        s->slice_turn = srv->watch.turns;
        s->slice_start = 0;
        s->slice_count = 0;
    }
    while (s->state == SESS_IDLE && s->qcount > 0 && !s->quit_after_flush && !s->yielded &&
           session_unsent(s) <= s->srv->cfg->max_output) {
        struct pending p = *queue_pop(s);
        uint64_t began = chain;
        any = true;
        chain = 0;
        if (p.is_error) {
            session_reply_error(s, p.err_code, "%s", p.err_msg ? p.err_msg : "out of memory");
            free(p.err_msg);
        } else if (p.req.type == REQUEST_COMMAND) {
            s->srv->dispatch_command(s, p.req.text, p.req.len);
            explicit_bzero(p.req.text, p.req.len); /* may hold a password (.auth) */
            codec_request_free(&p.req);
        } else if (session_tls_required(s)) {
            session_reply_error(s, "TLSREQUIRED",
                                "require_tls is on: remote clients send SQL over TLS only "
                                "(the tls_listen port)");
            codec_request_free(&p.req);
        } else if (!session_authenticated(s)) {
            session_reply_error(s, "NOAUTH", "authentication required: .auth USER PASSWORD");
            codec_request_free(&p.req);
        } else {
            srv->inline_clock = began;
            session_sql(s, &p.req);
            /* Answered on the loop, it left its end: the next began then. */
            if (srv->inline_clock != began)
                chain = srv->inline_clock;
            srv->inline_clock = 0;
        }
        if (s->state == SESS_IDLE && s->qcount > 0 && session_slice_worked(s, chain))
            session_yield(s);
    }
    return any;
}

void session_pump(struct session *s)
{
    if (s->state == SESS_CLOSING)
        return;
    do {
        session_parse_input(s);
    } while (session_advance(s) && s->state != SESS_CLOSING);
    if (s->state == SESS_CLOSING)
        return;
    session_flush_soon(s);
    if ((s->quit_after_flush || (s->input_ended && s->qcount == 0)) && s->state == SESS_IDLE) {
        session_close(s, false);
        return;
    }
    session_update_reading(s);
}

/* ---- Lifecycle ------------------------------------------------------- */

static void on_closed(uv_handle_t *h)
{
    struct session *s = h->data;
    struct server *srv = s->srv;

    if (srv->cfg->log_connections && s->logged_connect)
        log_info("c%llu: disconnected (%s, %llu statement%s, %.3f s)", (unsigned long long)s->id, s->peer,
                 (unsigned long long)s->statements, s->statements == 1 ? "" : "s",
                 (double)(uv_now(srv->loop) - s->connected_at) / 1000.0);
    else
        log_debug("c%llu: closed", (unsigned long long)s->id);
    session_xact_free(s);
    if (s->txn_bind != NULL)
        session_txn_set(s, NULL);
    session_flush_forget(s);
    session_yield_forget(s);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    queue_drop_all(s);
    free(s->queue);
    buf_free(&s->inbuf);
    buf_free(&s->out);
    free(s->held_begin);
    free(s->txn_begin);
    session_xact_savepoints_clear(s);
    free(s->user_name);
    free(s->fanout);
    tls_conn_free(s->tls);
    free(s);
    server_session_gone(srv);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct session *s = req->data;

    (void)status;
    free(req);
    /* session_abort() may have closed the handle already. */
    if (!uv_is_closing(&s->h.handle))
        uv_close(&s->h.handle, on_closed);
}

/* No job runs any more: end the transaction and close the handle, after
 * flushing the output when graceful. */
void session_finish_close(struct session *s, bool graceful)
{
    uv_shutdown_t *req;

    if (s->xt != NULL) {
        session_xact_release(s);
    } else if (s->in_txn) {
        struct job *job = job_new(JOB_RELEASE, s->txn_bind, NULL, s->id);
        if (job != NULL) {
            job->txn_open = true;
            job->bind->ops->submit(job->bind, job);
        } else {
            log_error("c%llu: out of memory ending its transaction", (unsigned long long)s->id);
        }
        session_txn_set(s, NULL);
        s->txn_wrote = false;
        session_xact_savepoints_clear(s);
    }
    if (s->closed_handle)
        return;
    if (s->reading) {
        uv_read_stop(&s->h.stream);
        s->reading = false;
    }
    if (graceful)
        session_flush(s);
    if (graceful && s->tls != NULL) {
        struct buf notify = BUF_INIT;
        tls_conn_shutdown(s->tls, &notify); /* close_notify, best effort */
        session_write_raw(s, &notify, NULL, 0);
        buf_free(&notify);
    }
    s->closed_handle = true;
    req = graceful ? malloc(sizeof *req) : NULL;
    if (req != NULL) {
        req->data = s;
        if (uv_shutdown(req, &s->h.stream, on_shutdown) == 0)
            return;
        free(req);
    }
    uv_close(&s->h.handle, on_closed);
}

void session_close(struct session *s, bool cancel)
{
    if (s->state == SESS_CLOSING) {
        if (cancel && s->job != NULL && !s->job->xact_step && !atomic_load(&s->job->cancelled))
            job_cancel(s->job);
        return;
    }
    session_set_state(s, SESS_CLOSING);
    queue_drop_all(s);
    if (s->reading) {
        uv_read_stop(&s->h.stream);
        s->reading = false;
    }
    if (s->job != NULL) {
        /* A step of a commit is not stopped half way (session_xact.c). */
        if (cancel && !s->job->xact_step)
            job_cancel(s->job);
        return; /* session_job_event finishes the close */
    }
    if (session_xact_running(s))
        return; /* its commit's steps finish the close */
    if (s->auth != NULL) {
        if (s->auth->checking && !authq_cancel(&s->auth->check)) {
            s->auth->close_graceful = !cancel;
            return; /* auth_work_done finishes the close */
        }
        /* Still waiting for its turn, or waiting out the failure delay:
         * no answer. */
        session_auth_free(s->auth);
    }
    session_finish_close(s, !cancel);
}

bool session_peer_gone(struct session *s)
{
    struct pollfd p = {.events = POLLRDHUP};

    /* While the session reads, libuv reports a reset itself (on_read). */
    if (s->state != SESS_BUSY || s->reading || s->closed_handle || uv_fileno(&s->h.handle, &p.fd) != 0)
        return false;
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)) != 0;
}

bool session_output_stalled(struct session *s, uint64_t now, uint64_t limit)
{
    size_t queued = s->h.stream.write_queue_size;
    uv_os_fd_t fd;
    int sent = 0;

    /* libuv's queue moves only when the kernel's send buffer has room for
     * a good part of it; the bytes still in that buffer (SIOCOUTQ) shrink
     * as soon as the client reads any. */
    if (queued > 0 && uv_fileno(&s->h.handle, &fd) == 0 && ioctl(fd, SIOCOUTQ, &sent) == 0 && sent > 0)
        queued += (size_t)sent;

    if (s->state == SESS_CLOSING || queued == 0 || queued != s->stall_queued) {
        /* Nothing waits for the client, or it read some since last time. */
        s->stall_queued = s->state == SESS_CLOSING ? 0 : queued;
        s->stall_since = now;
        return false;
    }
    return (s->job != NULL || s->in_txn) && now - s->stall_since >= limit;
}

void session_abort(struct session *s)
{
    if (s->state != SESS_CLOSING) {
        session_close(s, true);
        return;
    }
    if (s->job != NULL) {
        if (!s->job->xact_step && !atomic_load(&s->job->cancelled))
            job_cancel(s->job);
        return; /* session_job_event finishes the close */
    }
    if (session_xact_running(s))
        return; /* its commit's steps finish the close */
    if (s->auth != NULL)
        return; /* a password check takes milliseconds; auth_work_done closes */
    /* Waiting for a client that does not read its last response. */
    s->closed_handle = true;
    if (!uv_is_closing(&s->h.handle))
        uv_close(&s->h.handle, on_closed);
}

void session_config_changed(struct session *s)
{
    struct bind *b = server_bind_named(s->srv, s->use_bind->conf->name);

    s->user = s->user_name != NULL ? config_user(s->srv->cfg, s->user_name) : NULL;
    if (s->user == NULL)
        s->unauth_since = uv_now(s->srv->loop); /* a full login_timeout from the reload on */
    if (s->user_name != NULL && s->user == NULL && s->srv->cfg->nusers > 0) {
        log_info("c%llu: user %s was removed by a reload; the client must authenticate again",
                 (unsigned long long)s->id, s->user_name);
        free(s->user_name);
        s->user_name = NULL;
    }

    if (b == NULL) {
        log_info("c%llu: bind %s was removed by a reload; statements naming no table go to default",
                 (unsigned long long)s->id, s->use_bind->conf->name);
        b = s->srv->binds[0];
    }
    s->use_bind = b;
}

/* Is the peer a loopback address (127.0.0.0/8, ::1, ::ffff:127.x.y.z)? */
static bool session_peer_is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
    }
    return false;
}

void session_accept(struct server *srv, uv_stream_t *listener, struct tls_server *tls)
{
    struct session *s = calloc(1, sizeof *s);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    int rc;

    if (s == NULL) {
        log_error("out of memory accepting a client");
        return;
    }
    s->srv = srv;
    s->id = ++srv->next_session_id;
    static_assert(SESS_IDLE == 0, "a new session (calloc) starts idle");
    s->use_bind = srv->binds[0];
    s->connected_at = uv_now(srv->loop);
    s->active_at = s->connected_at;
    s->unauth_since = s->connected_at;
    if (listener->type == UV_TCP)
        rc = uv_tcp_init(srv->loop, &s->h.tcp);
    else
        rc = uv_pipe_init(srv->loop, &s->h.pipe, 0);
    if (rc != 0) {
        free(s);
        return;
    }
    s->h.handle.data = s;
    /* Linked first, so on_closed can always unlink. */
    s->next = srv->sessions;
    if (s->next != NULL)
        s->next->prev = s;
    srv->sessions = s;
    srv->nsessions++;
    if (uv_accept(listener, &s->h.stream) != 0) {
        s->closed_handle = true;
        session_set_state(s, SESS_CLOSING);
        uv_close(&s->h.handle, on_closed);
        return;
    }
    if (listener->type == UV_TCP) {
        uv_tcp_nodelay(&s->h.tcp, 1);
        if (uv_tcp_getpeername(&s->h.tcp, (struct sockaddr *)&ss, &len) == 0) {
            char host[INET6_ADDRSTRLEN] = "?";
            int port = 0;
            if (ss.ss_family == AF_INET) {
                uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
                port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
            } else if (ss.ss_family == AF_INET6) {
                uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
                port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
            }
            snprintf(s->peer, sizeof s->peer, "%s:%d", host, port);
            s->plain_remote = tls == NULL && !session_peer_is_loopback(&ss);
        }
    } else {
        snprintf(s->peer, sizeof s->peer, "unix");
    }
    if (srv->cfg->log_connections) {
        log_info("c%llu: connected from %s", (unsigned long long)s->id, s->peer);
        s->logged_connect = true;
    } else {
        log_debug("c%llu: connected from %s", (unsigned long long)s->id, s->peer);
    }

    if (tls != NULL && (s->tls = tls_conn_new(tls)) == NULL) {
        log_error("c%llu: out of memory starting TLS", (unsigned long long)s->id);
        session_close(s, true);
        return;
    }
    if (srv->stopping) {
        session_reply_error(s, "SHUTDOWN", "the server is shutting down");
        session_close(s, false);
        return;
    }
    if (srv->nsessions - srv->nclosing > (size_t)srv->cfg->max_clients) {
        session_reply_error(s, "MAXCLIENTS", "too many clients (max_clients = %d)", srv->cfg->max_clients);
        session_close(s, false);
        return;
    }
    session_update_reading(s);
}
