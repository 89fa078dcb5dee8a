/*
 * Client sessions: reading and decoding requests, routing statements to
 * binds, holding transaction state, and writing responses back in request
 * order with bounded memory.
 *
 * Input: bytes land in inbuf; inbuf[0..inpos) is decoded, inbuf[inpos..len)
 * waits. Decoded requests (and framing errors, which must be answered in
 * order too) wait in a ring of max_pipeline entries; when it is full the
 * session stops reading its socket until requests have been answered.
 *
 * Output: small responses collect in `out` and go to libuv in one write per
 * loop turn; the rows of a large result arrive as chunks from the backend
 * and are written as they come, each acknowledged to the job when written
 * so the backend produces no faster than the client reads. While more than
 * max_output bytes wait for the client, the session neither starts new
 * requests nor reads more input.
 */
#include "daemon/session.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>

#include "daemon/auth.h"
#include "daemon/authq.h"
#include "daemon/log.h"
#include "daemon/route.h"
#include "daemon/server.h"
#include "daemon/tls.h"

#define READ_CHUNK (64 * 1024)

/* Before .auth, when the configuration has users, one request may hold at
 * most this many bytes (an .auth line and some room), and requests are
 * decoded one at a time: a connection that has not logged in holds a few
 * KiB of input, not max_request_total. */
#define PRELOGIN_MAX_REQUEST 4096

/* A connection is closed after this many failed .auth. */
#define AUTH_MAX_FAILURES 5

struct write_req {
    uv_write_t req;
    struct session *s;
    struct job *job; /* acknowledged when written, or NULL */
    size_t ack;      /* bytes to acknowledge then (of its plaintext) */
    struct buf data;
};

static void session_pump(struct session *s);
static void session_finish_close(struct session *s, bool graceful);

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

/* Every state change goes through here; an illegal one is a bug in this
 * file (asserted; logged and ignored when asserts are off). Loop thread. */
static void session_set_state(struct session *s, enum sess_state to)
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

    s->qhead = (s->qhead + 1) % s->qcap;
    s->qcount--;
    s->queued_bytes -= p->bytes;
    return p;
}

/* ---- Output ---------------------------------------------------------- */

static size_t session_unsent(const struct session *s)
{
    return s->out.len + s->h.stream.write_queue_size;
}

static void on_write(uv_write_t *req, int status)
{
    struct write_req *wr = (struct write_req *)req;
    struct session *s = wr->s;

    if (wr->job != NULL) {
        job_ack(wr->job, wr->ack);
        job_unref(wr->job);
    }
    buf_free(&wr->data);
    free(wr);
    if (status < 0) {
        if (status != UV_ECANCELED)
            log_debug("c%llu: write failed: %s", (unsigned long long)s->id, uv_strerror(status));
        session_close(s, true);
        return;
    }
    if (s->state != SESS_CLOSING)
        session_pump(s);
}

/* Write data (taking its memory) to the socket after everything already
 * queued. When job is given, it is acknowledged `ack` bytes (data's
 * plaintext) as data is written. */
static void session_write_raw(struct session *s, struct buf *data, struct job *job, size_t ack)
{
    struct write_req *wr;
    size_t done = 0;
    uv_buf_t ub;
    int rc;

    if (data->len == 0 || s->closed_handle) {
        if (job != NULL)
            job_ack(job, ack);
        buf_free(data);
        return;
    }
    if (s->h.stream.write_queue_size == 0) {
        ub = uv_buf_init(data->data, (unsigned)data->len);
        rc = uv_try_write(&s->h.stream, &ub, 1);
        if (rc > 0)
            done = (size_t)rc;
        else if (rc < 0 && rc != UV_EAGAIN) {
            if (job != NULL)
                job_ack(job, ack);
            buf_free(data);
            session_close(s, true);
            return;
        }
    }
    if (job != NULL && done > 0) {
        /* TLS adds a little to every record: count what was written
         * against the plaintext, the rest when the write completes. */
        job_ack(job, done < ack ? done : ack);
        ack -= done < ack ? done : ack;
    }
    if (done == data->len) {
        if (job != NULL && ack > 0)
            job_ack(job, ack);
        buf_free(data);
        return;
    }
    wr = malloc(sizeof *wr);
    if (wr == NULL) {
        if (job != NULL)
            job_ack(job, ack);
        buf_free(data);
        session_close(s, true); /* a torn response: the client cannot go on */
        return;
    }
    if (done > 0)
        buf_consume(data, done);
    wr->s = s;
    wr->job = job;
    wr->ack = ack;
    wr->data = *data;
    *data = (struct buf)BUF_INIT;
    if (job != NULL)
        job->refs++;
    ub = uv_buf_init(wr->data.data, (unsigned)wr->data.len);
    rc = uv_write(&wr->req, &s->h.stream, &ub, 1, on_write);
    if (rc < 0) {
        if (job != NULL) {
            job_ack(job, ack);
            job_unref(job);
        }
        buf_free(&wr->data);
        free(wr);
        session_close(s, true);
    }
}

/* Write data (taking its memory) after everything already queued,
 * encrypted first on a TLS connection. When job is given, it is
 * acknowledged data's length as it is written. */
static void session_write(struct session *s, struct buf *data, struct job *job)
{
    size_t plain = data->len;

    if (s->tls != NULL && !s->closed_handle && tls_conn_encrypt(s->tls, data) != 0) {
        if (job != NULL)
            job_ack(job, plain);
        buf_free(data);
        session_close(s, true);
        return;
    }
    session_write_raw(s, data, job, plain);
}

static void session_flush(struct session *s)
{
    if (s->out.len > 0)
        session_write(s, &s->out, NULL);
}

/* Does nothing: while active, it only keeps the loop from sleeping. */
static void on_flush_awake(uv_idle_t *h)
{
    (void)h;
}

/* End of the loop turn: write what the turn's statements answered. */
static void on_flush_turn(uv_check_t *h)
{
    struct server *srv = h->data;

    uv_check_stop(h);
    uv_idle_stop(&srv->flush_awake);
    while (srv->flush_head != NULL) {
        struct session *s = srv->flush_head;
        srv->flush_head = s->flush_next;
        s->flush_next = NULL;
        s->flush_queued = false;
        if (s->state == SESS_CLOSING)
            continue;
        session_flush(s);
        /* The unwritten answers may have held back its requests or its
         * reading (max_output); go on now that they are written. */
        if (s->state != SESS_CLOSING)
            session_pump(s);
    }
}

/* Write s->out at the end of this loop turn. libuv runs check handles
 * after the poll phase, and only idle handles (not check handles) keep the
 * poll from sleeping: an answer queued before the poll (a timer, a local
 * event delivered by local_idle, a session pumped by flush_turn itself)
 * would otherwise wait until some other timer woke the loop. */
static void session_flush_soon(struct session *s)
{
    struct server *srv = s->srv;

    if (s->out.len == 0 || s->flush_queued)
        return;
    if (srv->flush_head == NULL) {
        /* Fail only without a callback. */
        (void)uv_check_start(&srv->flush_turn, on_flush_turn);
        (void)uv_idle_start(&srv->flush_awake, on_flush_awake);
    }
    s->flush_queued = true;
    s->flush_next = srv->flush_head;
    srv->flush_head = s;
}

/* A session about to be freed leaves the flush list. */
static void session_flush_forget(struct session *s)
{
    struct session **pp = &s->srv->flush_head;

    if (!s->flush_queued)
        return;
    while (*pp != s)
        pp = &(*pp)->flush_next;
    *pp = s->flush_next;
    s->flush_queued = false;
}

void session_reply_ok(struct session *s, const char *facts)
{
    if (codec_put_ok(&s->out, facts) != 0)
        session_close(s, true);
}

void session_reply_error(struct session *s, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (codec_put_error(&s->out, code, msg) != 0)
        session_close(s, true);
}

void session_reply_columns(struct session *s, const char *const *names_types)
{
    struct codec_row r;

    codec_header_begin(&r, &s->out);
    for (size_t i = 0; names_types[i] != NULL; i++)
        codec_field_str(&r, names_types[i]);
    if (codec_row_end(&r) != 0)
        session_close(s, true);
}

void session_reply_row(struct session *s, const char *const *fields, size_t n)
{
    struct codec_row r;

    codec_row_begin(&r, &s->out);
    for (size_t i = 0; i < n; i++)
        codec_field_str(&r, fields[i]);
    if (codec_row_end(&r) != 0)
        session_close(s, true);
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

/* The transaction is open on b now, or on none (b NULL); the session
 * holds a reference to the bind while it is. */
static void session_set_txn(struct session *s, struct bind *b)
{
    if (b != NULL)
        server_bind_hold(b);
    if (s->txn_bind != NULL)
        server_bind_drop(s->txn_bind);
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
    if (job->in_txn && s->txn_held) {
        s->txn_held = false;
        free(s->held_begin);
        s->held_begin = NULL;
    }
    session_set_txn(s, job->in_txn ? job->bind : NULL);
}

/* A finished statement counts in its bind's .stats. */
static void session_count(struct session *s, const struct job *job)
{
    struct bind_stats *st = &job->bind->stats;

    st->statements += 1 + job->nmore;
    st->errors += job->nmore ? job->errors : job->failed;
    st->rows += job->rows;
    st->time_us += (uv_hrtime() - job->started_ns) / 1000;
    s->statements += 1 + job->nmore;
}

void session_job_event(struct job_event *ev)
{
    struct job *job = ev->job;
    struct session *s = job->sess;

    assert(server_on_loop(job->bind->srv));
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
    if (s == NULL) {
        /* A release job: nobody waits for it. */
        job_unref(job);
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

/* ---- Authentication ------------------------------------------------- */

/* One .auth: the check runs on libuv's thread pool (crypt is slow on
 * purpose), then a wrong answer waits out auth_fail_delay on the timer.
 * Owned by the session while s->auth points to it; detached (s NULL) when
 * the session closes during the delay, then freed in the timer's close
 * callback. */
struct session_auth {
    struct authq_check check; /* waits in srv->authq, then runs on the pool */
    uv_timer_t timer;
    struct session *s;
    struct confref *cfgref; /* the configuration checked against */
    bool ok;
    bool checking;       /* the work has not reported back yet */
    bool close_graceful; /* the session closed meanwhile: how */
    char user[AUTH_MAX_FIELD + 1];
    char password[AUTH_MAX_FIELD + 1];
};

bool session_tls_required(const struct session *s)
{
    return s->plain_remote && s->srv->cfg->require_tls;
}

bool session_authenticated(const struct session *s)
{
    return s->srv->cfg->nusers == 0 || s->user != NULL;
}

static void auth_freed(uv_handle_t *h)
{
    free(h->data);
}

/* Detach and free a.  Loop thread. */
static void auth_free(struct session_auth *a)
{
    if (a->s != NULL)
        a->s->auth = NULL;
    a->s = NULL;
    server_cfg_drop(a->cfgref);
    a->cfgref = NULL;
    explicit_bzero(a->password, sizeof a->password);
    uv_close((uv_handle_t *)&a->timer, auth_freed);
}

/* Answer the .auth and go back to serving. */
static void auth_answer(struct session_auth *a)
{
    struct session *s = a->s;

    if (a->ok) {
        const struct user_conf *u = config_user(s->srv->cfg, a->user);
        char *name = u != NULL ? strdup(u->name) : NULL;
        if (u != NULL && name == NULL) {
            session_reply_error(s, "NOMEM", "out of memory");
        } else if (u == NULL) {
            /* A reload removed the user while its password was checked. */
            session_reply_error(s, "AUTH", "invalid user name or password");
        } else {
            free(s->user_name);
            s->user_name = name;
            s->user = u;
            log_info("c%llu: authenticated as %s", (unsigned long long)s->id, name);
            char facts[AUTH_MAX_FIELD + 16];
            snprintf(facts, sizeof facts, "user=%s", name);
            session_reply_ok(s, facts);
        }
    } else if (++s->auth_failures >= AUTH_MAX_FAILURES) {
        /* Its failures cost the connection: it starts again with a new one. */
        log_info("c%llu: %u failed .auth: closing", (unsigned long long)s->id, s->auth_failures);
        session_reply_error(s, "AUTH", "invalid user name or password; too many failed .auth (%d): closing",
                            AUTH_MAX_FAILURES);
        auth_free(a);
        session_close(s, false);
        return;
    } else {
        session_reply_error(s, "AUTH", "invalid user name or password");
    }
    auth_free(a);
    session_set_state(s, SESS_IDLE);
    session_pump(s);
}

static void auth_delay_done(uv_timer_t *t)
{
    auth_answer(t->data);
}

static void auth_work(uv_work_t *w)
{
    struct session_auth *a = w->data;

    a->ok = auth_check(server_cfg_of(a->cfgref), a->user, a->password);
}

static void auth_work_done(uv_work_t *w, int status)
{
    struct session_auth *a = w->data;
    struct session *s = a->s;

    a->checking = false;
    explicit_bzero(a->password, sizeof a->password);
    if (status != 0)
        a->ok = false;
    if (s->state == SESS_CLOSING) {
        bool graceful = a->close_graceful;
        auth_free(a);
        session_finish_close(s, graceful);
        return;
    }
    if (!a->ok) {
        authq_failed(&a->check);
        log_info("c%llu: authentication as %s failed", (unsigned long long)s->id, a->user);
        if (s->srv->cfg->auth_fail_delay_ms > 0 &&
            uv_timer_start(&a->timer, auth_delay_done, (uint64_t)s->srv->cfg->auth_fail_delay_ms, 0) == 0)
            return; /* else (it cannot fail: open, with a callback) answer now */
    }
    auth_answer(a);
}

void session_auth(struct session *s, const char *user, const char *password)
{
    struct session_auth *a;

    if (session_tls_required(s)) {
        session_reply_error(s, "TLSREQUIRED",
                            "require_tls is on: remote clients log in over TLS only "
                            "(the tls_listen port); this password crossed the network in the clear");
        return;
    }
    if (s->srv->cfg->nusers == 0) {
        session_reply_error(s, "AUTH",
                            "authentication is off: the configuration has no [user.NAME] sections");
        return;
    }
    if (s->txn_held || s->in_txn) {
        session_reply_error(s, "ARGS",
                            "cannot change the user inside a transaction (COMMIT or ROLLBACK first)");
        return;
    }
    if (strlen(user) > AUTH_MAX_FIELD || strlen(password) > AUTH_MAX_FIELD) {
        session_reply_error(s, "ARGS", "user name and password have at most %d bytes each", AUTH_MAX_FIELD);
        return;
    }
    a = calloc(1, sizeof *a);
    if (a == NULL || uv_timer_init(s->srv->loop, &a->timer) != 0) {
        free(a);
        session_reply_error(s, "NOMEM", "out of memory");
        return;
    }
    a->timer.data = a;
    a->check.work.data = a;
    a->s = s;
    a->cfgref = server_cfg_hold(s->srv->cfgref);
    a->checking = true;
    snprintf(a->user, sizeof a->user, "%s", user);
    snprintf(a->password, sizeof a->password, "%s", password);
    s->auth = a;
    session_set_state(s, SESS_AUTH);
    authq_submit(s->srv->authq, &a->check, s->peer, auth_work, auth_work_done);
}

enum grant session_grant(const struct session *s, const struct bind *b)
{
    const struct config *cfg = s->srv->cfg;
    int i;

    if (cfg->nusers == 0)
        return GRANT_READ_WRITE;
    if (s->user == NULL)
        return GRANT_NONE;
    i = b->retired ? config_bind_index(cfg, b->conf->name) : (int)b->index;
    return i < 0 ? GRANT_NONE : s->user->grants[i];
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
    session_reply_ok(s, "changes=0");
}

/* BEGIN, COMMIT and friends change the session's transaction state, which
 * decides where later statements go: they end a batch. */
static bool stmt_changes_txn(enum stmt_kind kind)
{
    return kind == STMT_BEGIN || kind == STMT_COMMIT || kind == STMT_ROLLBACK || kind == STMT_SAVEPOINT;
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
        r = routecache_get(srv->routes, srv->cfg, p->req.text, p->req.len);
        if (r->err_code != NULL || stmt_changes_txn(r->kind))
            break;
        if (s->in_txn) {
            if (r->bind != ROUTE_NO_TABLE &&
                strcmp(srv->cfg->binds[r->bind].name, s->txn_bind->conf->name) != 0)
                break;
            target = s->txn_bind;
        } else {
            target = r->bind != ROUTE_NO_TABLE ? srv->binds[r->bind] : s->use_bind;
        }
        if (target != job->bind)
            break;
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

/* A read the bind answers on the loop thread (read_inline): no job and no
 * trip to another thread. Takes the request's memory when it answered. */
static bool session_read_inline(struct session *s, struct bind *b, struct request *req)
{
    struct bind_stats *st = &b->stats;
    uint64_t start = uv_hrtime(), rows = 0;

    if (!b->ops->read_inline(b, req, start, &s->out, &rows))
        return false;
    st->statements++;
    st->on_loop++;
    st->rows += rows;
    st->time_us += (uv_hrtime() - start) / 1000;
    s->statements++;
    s->active_at = uv_now(s->srv->loop);
    codec_request_free(req);
    return true;
}

/* Route one statement and start it. Takes the request's memory. */
static void session_handle_sql(struct session *s, struct request *req)
{
    struct server *srv = s->srv;
    const struct route *r = routecache_get(srv->routes, srv->cfg, req->text, req->len);
    const char *begin = NULL;
    struct bind *target;
    struct job *job;
    enum grant grant;

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
            session_reply_ok(s, "changes=0");
            codec_request_free(req);
            return;
        }
        target = s->in_txn ? s->txn_bind : s->use_bind;
        break;
    default:
        if (s->in_txn) {
            /* By name: a reload may have replaced the bind the transaction
             * runs on; it still ends there. */
            if (r->bind != ROUTE_NO_TABLE &&
                strcmp(srv->cfg->binds[r->bind].name, s->txn_bind->conf->name) != 0) {
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
    /* Outside a transaction, earlier statements of this session have all
     * been answered (the session is idle), so a read may be answered here
     * and now without changing what it sees or the order of answers. */
    if (r->kind == STMT_SELECT && !s->in_txn && !s->txn_held && target->ops->read_inline != NULL &&
        session_read_inline(s, target, req))
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
    if (begin == NULL && !s->txn_held && target->ops->batches && !stmt_changes_txn(r->kind))
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
        slot = &s->queue[(s->qhead + s->qcount) % s->qcap];
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
        buf_free(&s->inbuf);
        s->inpos = 0;
    } else if (s->inpos > s->inbuf.cap / 2) {
        buf_consume(&s->inbuf, s->inpos);
        s->inpos = 0;
    }
}

/* Handle queued requests until one needs a backend. Returns true when it
 * handled any. */
static bool session_advance(struct session *s)
{
    bool any = false;

    while (s->state == SESS_IDLE && s->qcount > 0 && !s->quit_after_flush &&
           session_unsent(s) <= s->srv->cfg->max_output) {
        struct pending p = *queue_pop(s);
        any = true;
        if (p.is_error) {
            session_reply_error(s, p.err_code, "%s", p.err_msg ? p.err_msg : "out of memory");
            free(p.err_msg);
        } else if (p.req.type == REQUEST_COMMAND) {
            commands_dispatch(s, p.req.text, p.req.len);
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
            session_handle_sql(s, &p.req);
        }
    }
    return any;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct session *s = h->data;

    (void)suggested;
    if (buf_reserve(&s->inbuf, READ_CHUNK) != 0) {
        *out = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
        return;
    }
    *out = uv_buf_init(s->inbuf.data + s->inbuf.len, (unsigned)(s->inbuf.cap - s->inbuf.len - 1));
}

/* The handshake is done: a client whose verified certificate names a
 * user's cert_cn is logged in as that user. */
static void session_tls_login(struct session *s)
{
    const struct config *cfg = s->srv->cfg;
    const char *cn = tls_conn_verified_cn(s->tls);

    log_debug("c%llu: TLS %s, client certificate %s", (unsigned long long)s->id, tls_conn_describe(s->tls),
              tls_conn_subject(s->tls) ? tls_conn_subject(s->tls) : "none");
    for (size_t i = 0; cn != NULL && i < cfg->nusers; i++) {
        char *name;
        if (cfg->users[i].cert_cn == NULL || strcmp(cfg->users[i].cert_cn, cn) != 0)
            continue;
        name = strdup(cfg->users[i].name);
        if (name == NULL)
            return; /* the client can still log in with .auth */
        free(s->user_name);
        s->user_name = name;
        s->user = &cfg->users[i];
        log_info("c%llu: logged in as %s by its certificate (CN=%s)", (unsigned long long)s->id, name, cn);
        return;
    }
}

/* On a TLS connection, inbuf[len..len+n) holds ciphertext just read:
 * decrypt it into inbuf, send what the TLS layer answers (handshake
 * records), and go on as with plain input. */
static void session_tls_input(struct session *s, size_t n)
{
    struct buf out = BUF_INIT;
    int rc = tls_conn_input(s->tls, s->inbuf.data + s->inbuf.len, n, &s->inbuf, &out);

    s->inbuf.data[s->inbuf.len] = '\0'; /* over the ciphertext when no plaintext came */
    if (out.len > 0)
        session_write_raw(s, &out, NULL, 0);
    buf_free(&out);
    if (rc < 0) {
        log_info("c%llu: TLS: %s: closing", (unsigned long long)s->id, tls_conn_error(s->tls));
        session_close(s, false);
        return;
    }
    if (rc & TLS_IN_READY)
        session_tls_login(s);
    if (rc & TLS_IN_EOF) {
        s->input_ended = true; /* close_notify: as a FIN on plain TCP */
        if (s->reading) {
            uv_read_stop(&s->h.stream);
            s->reading = false;
        }
    }
    if (s->state != SESS_CLOSING)
        session_pump(s);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct session *s = stream->data;

    (void)b;
    if (nread == UV_EOF) {
        /* End of input (FIN): the client has sent everything, as
         * `printf ... | nc -N` does. Like PostgreSQL and Redis, answer
         * what it sent, then close (an open transaction is rolled back).
         * If it has closed for good, the first write fails and the session
         * is cancelled then. */
        log_debug("c%llu: end of input", (unsigned long long)s->id);
        s->input_ended = true;
        if (s->reading) {
            uv_read_stop(&s->h.stream);
            s->reading = false;
        }
        session_pump(s);
        return;
    }
    if (nread < 0) {
        /* A reset (the client aborted: the CLI's Ctrl-C, a dead peer) or
         * another read error: the client is gone. Its statement is
         * interrupted, unanswered requests are dropped, and an open
         * transaction is rolled back. */
        log_debug("c%llu: read: %s", (unsigned long long)s->id, uv_strerror((int)nread));
        session_close(s, true);
        return;
    }
    s->active_at = uv_now(s->srv->loop);
    if (s->tls != NULL) {
        session_tls_input(s, (size_t)nread);
        return;
    }
    s->inbuf.len += (size_t)nread;
    s->inbuf.data[s->inbuf.len] = '\0';
    session_pump(s);
}

/* Read when there is room for more requests and the client keeps up with
 * its responses; stop otherwise. */
static void session_update_reading(struct session *s)
{
    bool want = s->state != SESS_CLOSING && !s->input_ended &&
                s->qcount < (size_t)s->srv->cfg->max_pipeline &&
                session_unsent(s) <= s->srv->cfg->max_output && !s->closed_handle &&
                s->queued_bytes + (s->inbuf.len - s->inpos) <= s->srv->cfg->max_request_total &&
                (session_authenticated(s) || s->inbuf.len - s->inpos <= PRELOGIN_MAX_REQUEST);

    if (want && !s->reading) {
        int rc = uv_read_start(&s->h.stream, on_alloc, on_read);
        if (rc != 0) {
            /* It would wait forever for input it cannot read. */
            log_warn("c%llu: cannot read: %s", (unsigned long long)s->id, uv_strerror(rc));
            session_close(s, true);
            return;
        }
        s->reading = true;
    } else if (!want && s->reading) {
        uv_read_stop(&s->h.stream);
        s->reading = false;
    }
}

static void session_pump(struct session *s)
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
    if (s->txn_bind != NULL)
        session_set_txn(s, NULL);
    session_flush_forget(s);
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
    free(s->user_name);
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
static void session_finish_close(struct session *s, bool graceful)
{
    uv_shutdown_t *req;

    if (s->in_txn) {
        struct job *job = job_new(JOB_RELEASE, s->txn_bind, NULL, s->id);
        if (job != NULL) {
            job->txn_open = true;
            job->bind->ops->submit(job->bind, job);
        } else {
            log_error("c%llu: out of memory ending its transaction", (unsigned long long)s->id);
        }
        session_set_txn(s, NULL);
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
        if (cancel && s->job != NULL && !atomic_load(&s->job->cancelled))
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
        if (cancel)
            job_cancel(s->job);
        return; /* session_job_event finishes the close */
    }
    if (s->auth != NULL) {
        if (s->auth->checking && !authq_cancel(&s->auth->check)) {
            s->auth->close_graceful = !cancel;
            return; /* auth_work_done finishes the close */
        }
        /* Still waiting for its turn, or waiting out the failure delay:
         * no answer. */
        auth_free(s->auth);
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
        if (!atomic_load(&s->job->cancelled))
            job_cancel(s->job);
        return; /* session_job_event finishes the close */
    }
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
