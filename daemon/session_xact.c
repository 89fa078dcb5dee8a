/*
 * A session's transaction across binds with PostgreSQL participants
 * (README, "Transactions across binds"; issue 16).
 *
 * A transaction's participants: at most one SQLite *home* (a pinned worker
 * connection, extended in place to the other SQLite binds: daemon/xact.h)
 * and any number of PostgreSQL binds, each a connection of that bind's pool
 * pinned to the session (by owner id, as for any transaction), begun with
 * the client's BEGIN. A transaction on one bind has no struct sess_xact
 * (s->txn_bind is its bind): one is made when a second bind joins, with
 * txn_bind as its first participant.
 *
 * Inside such a transaction a statement of one bind goes to that bind's
 * participant (joining it first with the BEGIN); statements of SQLite
 * binds go to the home; a statement spanning SQLite and PostgreSQL runs on
 * the home's worker with the PostgreSQL participants' connections lent to
 * it (backend_pg_lend); so does one across PostgreSQL binds only, on an
 * SQLite bind the user may read that joins read-only when the transaction
 * has no home (session_xact_pick_home). What the session does on its own (savepoints on
 * every participant, COMMIT, ROLLBACK, the max_prepared_transactions
 * question) is a chain of *steps*: jobs flagged xact_step whose answers
 * come here (session_xact_step_done) instead of to the client, one at a
 * time, the session busy meanwhile.
 *
 * COMMIT: when at most one participant wrote (the SQLite home counts once,
 * however many SQLite binds it wrote), each participant commits plainly,
 * the read-only ones first. Otherwise, with a PostgreSQL part: the
 * read-only PostgreSQL participants commit, each written one is prepared
 * (PREPARE TRANSACTION pg2pc_gid(daemon id, txid, bind)), the decision is
 * written (the home's COMMIT job carrying the txid and the prepared binds,
 * or xact_decide_pg off the loop when there is no SQLite participant),
 * then each prepared part is committed (COMMIT PREPARED on any connection
 * of its bind). Anything failing before the decision rolls every part back
 * (ROLLBACK PREPARED / ROLLBACK); a COMMIT PREPARED failing after it is
 * handed to the resolver (xact_pg_in_doubt) and the client gets +OK.
 *
 * Loop thread only.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>

#include "daemon/backend_pg.h"
#include "daemon/backend_sqlite.h"
#include "daemon/catalog.h"
#include "daemon/federate.h"
#include "daemon/log.h"
#include "daemon/pg_2pc.h"
#include "daemon/route.h"
#include "daemon/server.h"
#include "daemon/session_int.h"
#include "daemon/sqllex.h"
#include "daemon/xact.h"

struct xpart {
    struct bind *b; /* held */
    bool wrote;     /* a statement that may write ran on it */
    bool open;      /* its transaction is open */
    bool prepared;  /* PREPARE TRANSACTION succeeded: its gid holds it */
    bool aborted;   /* an error aborted its transaction (PostgreSQL) */
    bool locked;    /* PostgreSQL: its lock_timeout is set (xact_lock_timeout) */
};

enum xop {
    XOP_NONE,
    XOP_MPT,       /* reading max_prepared_transactions, then xt->pending again */
    XOP_BROADCAST, /* a SAVEPOINT, RELEASE or ROLLBACK TO on every participant */
    XOP_ROLLBACK,  /* the client's ROLLBACK */
    XOP_COMMIT,    /* the client's COMMIT */
    XOP_JOIN,      /* BEGIN on PostgreSQL binds a spanning statement needs */
    XOP_LOCK,      /* SET LOCAL lock_timeout on the first participant, then xt->pending */
    XOP_LENT,      /* a spanning statement runs with connections lent */
};

enum xphase {
    XC_PLAIN,     /* at most one participant wrote: COMMIT each */
    XC_RO_COMMIT, /* 2PC: COMMIT of the read-only PostgreSQL participants */
    XC_PREPARE,   /* 2PC: PREPARE TRANSACTION of the written PostgreSQL ones */
    XC_DECIDE,    /* 2PC: the decision (the home's COMMIT, or xact_decide_pg) */
    XC_DECIDING,  /* xact_decide_pg runs on the thread pool */
    XC_COMMIT_PREPARED,
    XC_ABORT, /* ROLLBACK [PREPARED] everywhere, then xt->err */
};

struct sess_xact {
    struct xpart *parts; /* parts[0] is s->txn_bind */
    size_t n, cap;
    char *broken; /* a participant's transaction ended on its own: why */

    /* The chain of steps running now. */
    enum xop op;
    enum xphase phase;
    size_t i;               /* the participant the step is for */
    bool written_seen;      /* XC_PLAIN: the written participant's turn came */
    struct request pending; /* XOP_MPT, XOP_JOIN: the client's statement, run after */
    bool has_pending;
    bool chain;            /* COMMIT or ROLLBACK AND CHAIN: a new transaction follows */
    struct bind *mpt_bind; /* XOP_MPT: the bind asked */
    uint64_t txid;         /* the commit's id (2PC), 0: none */
    bool in_doubt;         /* a part was handed to the resolver */
    bool undecided;        /* the home's commit failed part way: the next start decides */
    char *err;             /* the -ERR line to answer (with \n) */
    struct buf last;       /* the answer to give when all went well */
    struct job *lent;      /* XOP_LENT: the statement's job */
    uv_work_t work;        /* XC_DECIDING */
    int decide_rc;
    int decide_errno;
    const char **decide_binds;
    size_t decide_n;
};

static void xact_next(struct session *s);
static void savepoint_note(struct session *s, const char *sql);
static int put_savepoints(const struct session *s, struct buf *b);

/* ---- Participants -------------------------------------------------------- */

static bool same_bind(const struct bind *a, const struct bind *b)
{
    return a == b || strcmp(a->conf->name, b->conf->name) == 0;
}

static bool is_sqlite(const struct bind *b)
{
    return b->ops == &backend_sqlite_ops;
}

static struct xpart *part_of(struct session *s, const struct bind *b)
{
    for (size_t i = 0; s->xt != NULL && i < s->xt->n; i++)
        if (same_bind(s->xt->parts[i].b, b))
            return &s->xt->parts[i];
    return NULL;
}

/* The participant's bind of the name of b, NULL when b is none. */
static struct bind *part_bind(struct session *s, const struct bind *b)
{
    struct xpart *p;

    if (s->txn_bind != NULL && same_bind(b, s->txn_bind))
        return s->txn_bind;
    p = part_of(s, b);
    return p != NULL ? p->b : NULL;
}

struct bind *session_xact_home(const struct session *s)
{
    if (!s->in_txn)
        return NULL;
    if (s->xt == NULL)
        return is_sqlite(s->txn_bind) ? s->txn_bind : NULL;
    for (size_t i = 0; i < s->xt->n; i++)
        if (is_sqlite(s->xt->parts[i].b))
            return s->xt->parts[i].b;
    return NULL;
}

/* Whether a statement of this kind counts as a write of its bind. */
static bool kind_writes(enum stmt_kind k)
{
    return k != STMT_SELECT && k != STMT_BEGIN && k != STMT_COMMIT && k != STMT_ROLLBACK &&
           k != STMT_SAVEPOINT && k != STMT_EXPLAIN;
}

bool session_job_writes(const struct job *job)
{
    if (kind_writes(job->kind))
        return true;
    for (size_t i = 0; i < job->nmore; i++)
        if (kind_writes(job->more[i].kind))
            return true;
    return false;
}

/* The struct for a second participant: parts[0] is the transaction's
 * first bind. NULL on ENOMEM. */
static struct sess_xact *xact_get(struct session *s)
{
    struct sess_xact *xt = s->xt;

    if (xt != NULL)
        return xt;
    xt = calloc(1, sizeof *xt);
    if (xt == NULL)
        return NULL;
    xt->parts = calloc(4, sizeof *xt->parts);
    if (xt->parts == NULL) {
        free(xt);
        return NULL;
    }
    xt->cap = 4;
    if (s->txn_bind != NULL) {
        bind_hold(s->txn_bind);
        xt->parts[0] = (struct xpart){.b = s->txn_bind, .wrote = s->txn_wrote, .open = true};
        xt->n = 1;
    }
    s->xt = xt;
    return xt;
}

static int part_add(struct session *s, struct bind *b)
{
    struct sess_xact *xt = xact_get(s);

    if (xt == NULL)
        return -1;
    if (xt->n == xt->cap) {
        struct xpart *p = realloc(xt->parts, 2 * xt->cap * sizeof *p);
        if (p == NULL)
            return -1;
        xt->parts = p;
        xt->cap *= 2;
    }
    bind_hold(b);
    /* A PostgreSQL bind joins with its lock_timeout (pg_join_begin). */
    xt->parts[xt->n++] = (struct xpart){.b = b, .open = true, .locked = !is_sqlite(b)};
    return 0;
}

/* Forget every participant: the transaction is over. */
static void xact_end(struct session *s)
{
    struct sess_xact *xt = s->xt;

    if (xt == NULL)
        return;
    for (size_t i = 0; i < xt->n; i++)
        bind_drop(xt->parts[i].b);
    free(xt->parts);
    free(xt->broken);
    free(xt->err);
    free(xt->decide_binds);
    buf_free(&xt->last);
    if (xt->has_pending)
        codec_request_free(&xt->pending);
    free(xt);
    s->xt = NULL;
    s->txn_wrote = false;
    free(s->txn_begin);
    s->txn_begin = NULL;
    session_xact_savepoints_clear(s);
    session_txn_set(s, NULL);
}

void session_txn_ended(struct session *s)
{
    s->txn_wrote = false;
    free(s->txn_begin);
    s->txn_begin = NULL;
    session_xact_savepoints_clear(s);
    session_txn_set(s, NULL);
}

void session_xact_free(struct session *s)
{
    xact_end(s);
}

/* A job of the session's transaction finished (not a step): note its bind
 * as a participant, or that its transaction ended. */
void session_xact_done(struct session *s, struct job *job)
{
    struct xpart *p;
    struct sess_xact *xt;

    if (!s->in_txn) {
        /* The first statement of the transaction. */
        if (job->in_txn) {
            session_txn_set(s, job->bind);
            s->txn_wrote = !job->failed && session_job_writes(job);
            if (job->kind == STMT_SAVEPOINT && !job->failed && job->nmore == 0)
                savepoint_note(s, job->req.text);
        }
        return;
    }
    if (s->xt == NULL && same_bind(job->bind, s->txn_bind)) {
        if (job->in_txn) {
            s->txn_wrote |= !job->failed && session_job_writes(job);
            if (job->kind == STMT_SAVEPOINT && !job->failed && job->nmore == 0)
                savepoint_note(s, job->req.text);
            session_txn_set(s, job->bind);
        } else {
            session_txn_ended(s);
        }
        return;
    }
    p = s->xt != NULL ? part_of(s, job->bind) : NULL;
    if (p == NULL) {
        if (!job->in_txn)
            return; /* it did not join */
        if (part_add(s, job->bind) != 0) {
            log_error("c%llu: out of memory noting a participant of its transaction",
                      (unsigned long long)s->id);
            return;
        }
        p = &s->xt->parts[s->xt->n - 1];
    }
    xt = s->xt;
    if (job->in_txn && job->nxact_binds > 0) {
        /* A statement on the home, maybe with PostgreSQL connections lent:
         * the binds it wrote are the written participants (a home picked
         * to run a statement across PostgreSQL binds wrote nothing). */
        for (size_t k = 0; k < job->nxact_binds && !job->failed; k++) {
            struct bind *b = s->srv->binds[job->xact_binds[k].index];
            struct xpart *w = is_sqlite(b) ? p : part_of(s, b);
            if (job->xact_binds[k].writes && w != NULL)
                w->wrote = true;
        }
        p->aborted = job->txn_aborted;
        return;
    }
    if (job->in_txn) {
        p->wrote |= !job->failed && session_job_writes(job);
        p->aborted = job->txn_aborted;
        return;
    }
    /* Its transaction ended without the session's COMMIT or ROLLBACK (a
     * conflict clause ROLLBACK, a COMMIT the bind took itself): the rest
     * cannot commit without it. */
    p->open = false;
    if (xt->broken == NULL) {
        char msg[300];
        snprintf(msg, sizeof msg,
                 "the transaction's part on bind %s ended on its own (rolled back or committed by its "
                 "database); ROLLBACK to end the rest",
                 job->bind->conf->name);
        xt->broken = strdup(msg);
    }
}

/* ---- Steps ----------------------------------------------------------------- */

/* A step on bind b: sql (of kind), inside the session's transaction
 * there (txn_open) or on any free connection. NULL on ENOMEM. */
static struct job *step_new(struct session *s, struct bind *b, const char *sql, enum stmt_kind kind,
                            bool txn_open)
{
    struct job *job = job_new(JOB_EXEC, b, s, s->id);

    if (job == NULL || (job->req.text = strdup(sql)) == NULL) {
        if (job != NULL)
            job_unref(job);
        return NULL;
    }
    job->req.type = REQUEST_SQL;
    job->req.len = strlen(sql);
    job->kind = kind;
    job->txn_open = txn_open;
    job->xact_step = true;
    return job;
}

/* Submit a step: the session is busy until its answer comes to
 * session_xact_step_done. */
static void step_submit(struct session *s, struct job *job)
{
    s->job = job;
    job->started_ns = uv_hrtime();
    if (s->state == SESS_IDLE)
        session_set_state(s, SESS_BUSY);
    job->bind->ops->submit(job->bind, job);
}

static int step_start(struct session *s, struct bind *b, const char *sql, enum stmt_kind kind, bool txn_open)
{
    struct job *job = step_new(s, b, sql, kind, txn_open);

    if (job == NULL)
        return -1;
    step_submit(s, job);
    return 0;
}

static void xact_fail(struct session *s, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Remember the first error to answer. */
static void xact_fail(struct session *s, const char *code, const char *fmt, ...)
{
    struct sess_xact *xt = s->xt;
    struct buf b = BUF_INIT;
    char msg[1024];
    va_list ap;

    if (xt->err != NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (codec_put_error(&b, code, msg) == 0 && buf_putc(&b, '\0') == 0)
        xt->err = b.data;
    else
        buf_free(&b);
}

/* The last line of an answer (an -ERR line), copied with its \n. */
static char *last_line(const struct buf *data)
{
    size_t end = data->len, start;
    char *line;

    if (end == 0)
        return NULL;
    for (start = end - 1; start > 0 && data->data[start - 1] != '\n'; start--)
        ;
    line = malloc(end - start + 1);
    if (line != NULL) {
        memcpy(line, data->data + start, end - start);
        line[end - start] = '\0';
    }
    return line;
}

/* The gid of part p of the commit, quoted for SQL ('...'). */
static int gid_sql(struct session *s, const struct bind *b, const char *verb, char *out, size_t n)
{
    char gid[PG2PC_GID_MAX];
    size_t len;

    if (pg2pc_gid(gid, xact_daemon_id(s->srv->host.xact), s->xt->txid, b->conf->name) != 0)
        return -1;
    len = (size_t)snprintf(out, n, "%s '", verb);
    for (const char *p = gid; *p != '\0' && len + 3 < n; p++) {
        if (*p == '\'')
            out[len++] = '\'';
        out[len++] = *p;
    }
    if (len + 2 >= n)
        return -1;
    out[len++] = '\'';
    out[len] = '\0';
    return 0;
}

/* A step "VERB 'gid'" for bind b's part of the commit. 0 or -1. */
static int step_gid(struct session *s, struct bind *b, const char *verb, bool txn_open)
{
    char sql[PG2PC_GID_MAX + 40];

    if (gid_sql(s, b, verb, sql, sizeof sql) != 0)
        return -1;
    return step_start(s, b, sql, STMT_OTHER, txn_open);
}

/* The chain is over: answer the client (or finish its close). */
static void chain_done(struct session *s, bool end_txn)
{
    struct sess_xact *xt = s->xt;
    bool closing = s->state == SESS_CLOSING;
    char *chained = NULL;
    int rc = 0;

    xt->op = XOP_NONE;
    if (!closing) {
        if (xt->err != NULL)
            rc = buf_puts(&s->out, xt->err);
        else if (xt->last.len > 0)
            rc = buf_append(&s->out, xt->last.data, xt->last.len);
        else
            rc = codec_put_ok_changes(&s->out, 0, NULL);
    }
    /* AND CHAIN: the next transaction, with the same BEGIN, is held as
     * after the client's own BEGIN (each bind joins it at its first
     * statement). Not after a COMMIT that failed: nothing is open then. */
    if (end_txn && xt->chain && xt->err == NULL && !closing && rc == 0) {
        chained = strdup(s->txn_begin != NULL ? s->txn_begin : "BEGIN");
        if (chained == NULL)
            rc = -1; /* the client would believe a transaction is open */
    }
    free(xt->err);
    xt->err = NULL;
    buf_free(&xt->last);
    if (end_txn)
        xact_end(s);
    if (chained != NULL) {
        s->held_begin = chained;
        s->txn_held = true;
    }
    if (closing) {
        session_finish_close(s, true);
        return;
    }
    if (rc != 0) {
        session_close(s, true);
        return;
    }
    if (s->state == SESS_BUSY)
        session_set_state(s, SESS_IDLE);
    session_pump(s);
}

bool session_xact_running(const struct session *s)
{
    return s->xt != NULL && s->xt->op != XOP_NONE;
}

/* The COMMIT job of the home carrying the decision: txid and the
 * PostgreSQL binds prepared under it (xact.h). */
static int step_decide_home(struct session *s, struct xpart *home)
{
    struct sess_xact *xt = s->xt;
    struct job *job = step_new(s, home->b, "COMMIT", STMT_COMMIT, true);

    if (job == NULL || (job->xact_pg = calloc(xt->n, sizeof *job->xact_pg)) == NULL) {
        if (job != NULL)
            job_unref(job);
        return -1;
    }
    /* The names live in the binds' configuration, which the job holds. */
    for (size_t i = 0; i < xt->n; i++)
        if (xt->parts[i].prepared)
            job->xact_pg[job->nxact_pg++] = xt->parts[i].b->conf->name;
    job->xact_txid = xt->txid;
    step_submit(s, job);
    return 0;
}

static void decide_work(uv_work_t *w)
{
    struct session *s = w->data;
    struct sess_xact *xt = s->xt;

    errno = 0;
    xt->decide_rc = xact_decide_pg(s->srv->host.xact, xt->txid, xt->decide_binds, xt->decide_n);
    xt->decide_errno = errno;
}

static void decide_done(uv_work_t *w, int status)
{
    struct session *s = w->data;
    struct sess_xact *xt = s->xt;

    if (status != 0 || xt->decide_rc != 0) {
        xact_fail(s, "XACT",
                  "COMMIT failed: the commit decision could not be written (%s); nothing was committed",
                  status != 0 ? uv_strerror(status) : strerror(xt->decide_errno ? xt->decide_errno : EIO));
        xt->phase = XC_ABORT;
        xt->i = 0;
    } else {
        xact_crash_point("pg_decided");
        xt->phase = XC_COMMIT_PREPARED;
        xt->i = 0;
    }
    xact_next(s);
}

/* Write the decision with xact_decide_pg on libuv's thread pool (it
 * syncs a file): no SQLite participant carries it. */
static int step_decide_pool(struct session *s)
{
    struct sess_xact *xt = s->xt;

    free(xt->decide_binds);
    xt->decide_binds = calloc(xt->n, sizeof *xt->decide_binds);
    if (xt->decide_binds == NULL)
        return -1;
    xt->decide_n = 0;
    for (size_t i = 0; i < xt->n; i++)
        if (xt->parts[i].prepared)
            xt->decide_binds[xt->decide_n++] = xt->parts[i].b->conf->name;
    xt->work.data = s;
    if (uv_queue_work(s->srv->loop, &xt->work, decide_work, decide_done) != 0)
        return -1;
    xt->phase = XC_DECIDING;
    if (s->state == SESS_IDLE)
        session_set_state(s, SESS_BUSY);
    return 0;
}

/* The next step of the running chain, or its end. */
static void xact_next(struct session *s)
{
    struct sess_xact *xt = s->xt;
    int rc = 0;

    switch (xt->op) {
    case XOP_NONE:
    case XOP_MPT:
    case XOP_JOIN:
    case XOP_LOCK:
    case XOP_LENT: return;
    case XOP_BROADCAST:
        while (xt->i < xt->n && !xt->parts[xt->i].open)
            xt->i++;
        if (xt->i == xt->n || xt->err != NULL) {
            if (xt->err == NULL)
                savepoint_note(s, xt->pending.text);
            if (xt->has_pending) {
                codec_request_free(&xt->pending);
                xt->has_pending = false;
            }
            chain_done(s, false);
            return;
        }
        rc = step_start(s, xt->parts[xt->i].b, xt->pending.text, STMT_SAVEPOINT, true);
        break;
    case XOP_ROLLBACK:
        while (xt->i < xt->n && !xt->parts[xt->i].open)
            xt->i++;
        if (xt->i == xt->n) {
            chain_done(s, true);
            return;
        }
        rc = step_start(s, xt->parts[xt->i].b, "ROLLBACK", STMT_ROLLBACK, true);
        break;
    case XOP_COMMIT:
        for (; xt->i < xt->n; xt->i++) {
            struct xpart *p = &xt->parts[xt->i];
            switch (xt->phase) {
            case XC_PLAIN:
                if (p->open && p->wrote == xt->written_seen) {
                    rc = step_start(s, p->b, "COMMIT", STMT_COMMIT, true);
                    goto started;
                }
                break;
            case XC_RO_COMMIT:
                if (p->open && !p->wrote && !is_sqlite(p->b)) {
                    rc = step_start(s, p->b, "COMMIT", STMT_COMMIT, true);
                    goto started;
                }
                break;
            case XC_PREPARE:
                if (p->open && p->wrote && !is_sqlite(p->b)) {
                    rc = step_gid(s, p->b, "PREPARE TRANSACTION", true);
                    goto started;
                }
                break;
            case XC_DECIDE:
                if (p->open && is_sqlite(p->b)) {
                    rc = step_decide_home(s, p);
                    goto started;
                }
                break;
            case XC_DECIDING: return;
            case XC_COMMIT_PREPARED:
                if (p->prepared) {
                    rc = step_gid(s, p->b, "COMMIT PREPARED", false);
                    goto started;
                }
                break;
            case XC_ABORT:
                if (p->prepared) {
                    rc = step_gid(s, p->b, "ROLLBACK PREPARED", false);
                    goto started;
                }
                if (p->open) {
                    rc = step_start(s, p->b, "ROLLBACK", STMT_ROLLBACK, true);
                    goto started;
                }
                break;
            }
        }
        /* The phase is through every participant. */
        xt->i = 0;
        switch (xt->phase) {
        case XC_PLAIN:
            if (!xt->written_seen) {
                xt->written_seen = true;
                xact_next(s);
                return;
            }
            chain_done(s, true);
            return;
        case XC_RO_COMMIT: xt->phase = XC_PREPARE; break;
        case XC_PREPARE:
            xact_crash_point("pg_prepared");
            xt->phase = XC_DECIDE;
            break;
        case XC_DECIDE:
            /* No SQLite participant carries the decision. */
            if (step_decide_pool(s) != 0) {
                xact_fail(s, "NOMEM", "COMMIT failed: out of memory; nothing was committed");
                xt->phase = XC_ABORT;
                break;
            }
            return;
        case XC_DECIDING: return;
        case XC_COMMIT_PREPARED:
        case XC_ABORT:
            /* Parts handed to the resolver stay its own (xact_resolved
             * drops the others); an undecided commit is the next start's. */
            if (xt->txid != 0 && !xt->undecided)
                xact_resolved(s->srv->host.xact, xt->txid);
            chain_done(s, true);
            return;
        }
        xact_next(s);
        return;
    }
started:
    if (rc != 0) {
        /* Out of memory starting a step: what is open gets a release
         * when the session closes; prepared parts go to the resolver. */
        log_error("c%llu: out of memory in a transaction across binds: closing", (unsigned long long)s->id);
        for (size_t i = 0; i < xt->n; i++) {
            if (xt->parts[i].prepared) {
                xact_pg_in_doubt(s->srv->host.xact, xt->txid, xt->parts[i].b->conf->name,
                                 xt->op == XOP_COMMIT && xt->phase == XC_COMMIT_PREPARED);
                xt->parts[i].prepared = false;
            }
        }
        xt->op = XOP_NONE;
        session_close(s, true);
    }
}

/* Split "-ERR CODE message\n" into code and message (in place). */
static void split_err(char *line, const char **code, const char **msg)
{
    char *sp;

    *code = "SQL";
    *msg = line != NULL ? line : "no answer (out of memory)";
    if (line == NULL)
        return;
    line[strcspn(line, "\n")] = '\0';
    if (strncmp(line, "-ERR ", 5) != 0)
        return;
    *code = line + 5;
    sp = strchr(line + 5, ' ');
    *msg = sp != NULL ? sp + 1 : "";
    if (sp != NULL)
        *sp = '\0';
}

static void mpt_done(struct session *s, struct job *job, struct buf *data);

/* A step before the client's statement is done (XOP_MPT, XOP_LOCK,
 * XOP_JOIN): route that statement again now, or, when the client went
 * away meanwhile, finish the close (which rolls back every participant). */
static void resume(struct session *s)
{
    struct sess_xact *xt = s->xt;
    struct request req = xt->pending;

    xt->has_pending = false;
    memset(&xt->pending, 0, sizeof xt->pending);
    xt->op = XOP_NONE;
    if (!s->in_txn)
        xact_end(s); /* nothing joined: a BEGIN stays held */
    if (s->state == SESS_CLOSING) {
        codec_request_free(&req);
        session_finish_close(s, true);
        return;
    }
    session_sql(s, &req);
    session_pump(s);
}

/* A step of the commit failed before the decision (its -ERR line, which
 * is freed, as the job): every part is rolled back, the error answered. */
static void commit_failed(struct session *s, struct job *job, char *line, bool preparing)
{
    struct sess_xact *xt = s->xt;
    const char *code, *msg;

    split_err(line, &code, &msg);
    if (preparing)
        xact_fail(s, code, "COMMIT failed: bind %s could not prepare its part, nothing was committed: %s",
                  job->bind->conf->name, msg);
    else
        xact_fail(s, code, "COMMIT failed on bind %s, nothing was committed: %s", job->bind->conf->name, msg);
    xt->phase = XC_ABORT;
    xt->i = 0;
    job_unref(job);
    free(line);
    xact_next(s);
}
static void join_done(struct session *s, struct job *job, struct buf *data);
static void lock_done(struct session *s, struct job *job);

void session_xact_step_done(struct session *s, struct job *job, struct buf *data)
{
    struct sess_xact *xt = s->xt;
    struct xpart *p;
    char *line = NULL;
    const char *code, *msg;

    s->job = NULL;
    if (s->state == SESS_BUSY)
        session_set_state(s, SESS_IDLE);
    if (xt == NULL || xt->op == XOP_NONE) {
        job_unref(job);
        if (s->state == SESS_CLOSING)
            session_finish_close(s, true);
        return;
    }
    if (xt->op == XOP_MPT || xt->op == XOP_JOIN || xt->op == XOP_LOCK) {
        if (xt->op == XOP_MPT)
            mpt_done(s, job, data);
        else if (xt->op == XOP_LOCK)
            lock_done(s, job);
        else
            join_done(s, job, data);
        job_unref(job);
        return;
    }
    p = xt->i < xt->n ? &xt->parts[xt->i] : NULL;
    if (job->failed)
        line = last_line(data);
    if (p != NULL && job->txn_open) {
        p->open = job->in_txn;
        p->aborted = job->txn_aborted;
    }
    switch (xt->op) {
    case XOP_BROADCAST:
        if (job->failed) {
            free(xt->err);
            xt->err = line;
            line = NULL;
        } else {
            buf_reset(&xt->last);
            if (buf_append(&xt->last, data->data, data->len) != 0)
                buf_free(&xt->last);
        }
        break;
    case XOP_ROLLBACK: break;
    case XOP_COMMIT:
        switch (xt->phase) {
        case XC_PLAIN:
        case XC_RO_COMMIT:
            if (job->failed) {
                commit_failed(s, job, line, false);
                return;
            }
            if (p->wrote) {
                buf_reset(&xt->last);
                if (buf_append(&xt->last, data->data, data->len) != 0)
                    buf_free(&xt->last);
            }
            break;
        case XC_PREPARE:
            if (job->failed) {
                commit_failed(s, job, line, true);
                return;
            }
            p->prepared = true;
            break;
        case XC_DECIDE:
            if (job->failed && job->xact_undecided) {
                /* The home's commit failed part way: the next start
                 * decides; the prepared parts wait for it. */
                split_err(line, &code, &msg);
                xact_fail(s, code,
                          "COMMIT failed on bind %s and its outcome is decided at the next start of "
                          "the daemon (the PostgreSQL parts stay prepared until then): %s",
                          p->b->conf->name, msg);
                for (size_t i = 0; i < xt->n; i++)
                    xt->parts[i].prepared = false;
                xt->undecided = true;
                xt->phase = XC_ABORT;
            } else if (job->failed) {
                split_err(line, &code, &msg);
                xact_fail(s, code, "COMMIT failed on bind %s, nothing was committed: %s", p->b->conf->name,
                          msg);
                xt->phase = XC_ABORT;
            } else {
                xact_crash_point("pg_decided");
                xt->phase = XC_COMMIT_PREPARED;
            }
            xt->i = 0;
            job_unref(job);
            free(line);
            xact_next(s);
            return;
        case XC_DECIDING: break;
        case XC_COMMIT_PREPARED:
        case XC_ABORT:
            if (job->txn_open)
                break; /* a plain ROLLBACK */
            p->prepared = false;
            if (job->failed) {
                bool commit = xt->phase == XC_COMMIT_PREPARED;
                log_warn(
                    "c%llu: transaction %llu: %s PREPARED on bind %s failed (%s): handed to the resolver",
                    (unsigned long long)s->id, (unsigned long long)xt->txid, commit ? "COMMIT" : "ROLLBACK",
                    p->b->conf->name, line != NULL ? line : "?");
                xact_pg_in_doubt(s->srv->host.xact, xt->txid, p->b->conf->name, commit);
                xt->in_doubt = true;
            }
            break;
        }
        break;
    case XOP_NONE:
    case XOP_MPT:
    case XOP_JOIN:
    case XOP_LOCK:
    case XOP_LENT: break;
    }
    free(line);
    job_unref(job);
    xt->i++;
    xact_next(s);
}

/* Start the chain for the client's COMMIT, ROLLBACK or savepoint
 * statement (req's memory is taken). */
/* Whether token t of sql is the keyword word (lower case). */
static bool tok_is(const char *sql, const struct sqltok *t, const char *word)
{
    return t->type == SQLTOK_WORD && t->len == strlen(word) && strncasecmp(sql + t->pos, word, t->len) == 0;
}

/* Whether a COMMIT or ROLLBACK (END, ABORT) ends with AND CHAIN, which in
 * PostgreSQL begins a new transaction with the same characteristics at
 * once (AND NO CHAIN does not). */
static bool and_chain(const char *sql, size_t len)
{
    struct sqltok prev = {0}, last = {0};

    for (size_t at = 0;;) {
        struct sqltok t = sqllex_next(sql, len, at, SQLLEX_POSTGRES);
        if (t.type == SQLTOK_EOF || t.type == SQLTOK_ERROR || t.type == SQLTOK_SEMI)
            break;
        prev = last;
        last = t;
        at = t.pos + t.len;
    }
    return tok_is(sql, &prev, "and") && tok_is(sql, &last, "chain");
}

static void chain_start(struct session *s, struct request *req, enum stmt_kind kind)
{
    struct sess_xact *xt = s->xt;
    size_t written = 0, pg_written = 0;
    bool sqlite_written = false;

    xt->i = 0;
    xt->written_seen = false;
    xt->txid = 0;
    xt->in_doubt = false;
    xt->undecided = false;
    xt->chain = false;
    if (kind == STMT_SAVEPOINT) {
        xt->op = XOP_BROADCAST;
        xt->pending = *req;
        xt->has_pending = true;
        memset(req, 0, sizeof *req);
        xact_next(s);
        return;
    }
    /* Every participant gets a plain COMMIT or ROLLBACK; the chained
     * transaction is the session's (chain_done). */
    xt->chain = and_chain(req->text, req->len);
    codec_request_free(req);
    if (kind == STMT_ROLLBACK || xt->broken != NULL) {
        if (kind != STMT_ROLLBACK)
            xact_fail(s, "XACT", "COMMIT refused, the transaction was rolled back: %s", xt->broken);
        xt->op = XOP_ROLLBACK;
        xact_next(s);
        return;
    }
    for (size_t i = 0; i < xt->n; i++) {
        if (xt->parts[i].open && xt->parts[i].aborted) {
            /* PostgreSQL would answer its COMMIT or PREPARE with a
             * ROLLBACK and no error. */
            xact_fail(s, "XACT",
                      "COMMIT refused, the transaction was rolled back: an error aborted its part on bind %s "
                      "(ROLLBACK TO a savepoint before it, or ROLLBACK)",
                      xt->parts[i].b->conf->name);
            xt->op = XOP_ROLLBACK;
            xact_next(s);
            return;
        }
    }
    for (size_t i = 0; i < xt->n; i++) {
        if (!xt->parts[i].wrote)
            continue;
        if (is_sqlite(xt->parts[i].b)) {
            sqlite_written = true;
        } else {
            pg_written++;
        }
    }
    written = pg_written + sqlite_written;
    xt->op = XOP_COMMIT;
    if (written >= 2 && pg_written > 0) {
        xt->phase = XC_RO_COMMIT;
        xt->txid = xact_txid_new(s->srv->host.xact);
    } else {
        xt->phase = XC_PLAIN;
    }
    xact_next(s);
}

/* ---- max_prepared_transactions ------------------------------------------- */

/* The answer to the question: its first row's value. */
static void mpt_done(struct session *s, struct job *job, struct buf *data)
{
    struct sess_xact *xt = s->xt;
    struct bind *b = xt->mpt_bind;
    const char *row = NULL;

    for (size_t i = 0; i + 1 < data->len; i++) {
        if (data->data[i] == '=' && (i == 0 || data->data[i - 1] == '\n')) {
            row = data->data + i + 1;
            break;
        }
    }
    /* A question that failed counts as allowed: the PREPARE would fail
     * cleanly then (-ERR, nothing committed). */
    b->max_prepared = job->failed || row == NULL ? 1 : atoi(row);
    b->max_prepared_known = true;
    log_debug("bind %s: max_prepared_transactions = %d", b->conf->name, b->max_prepared);
    bind_drop(b);
    xt->mpt_bind = NULL;
    resume(s);
}

/* Before a statement that writes: when it makes (or keeps) two or more
 * written participants, each PostgreSQL one must allow prepared
 * transactions. 0: go on; 1: handled (answered -ERR XACT, or the setting
 * is being read, req kept and run again after). */
static int mpt_check(struct session *s, struct request *req, const struct route *r, struct bind *target)
{
    struct server *srv = s->srv;
    struct bind *pg[64];
    size_t npg = 0;
    bool sqlite = false;

    /* What is written after the statement. */
    if (s->xt != NULL) {
        for (size_t i = 0; i < s->xt->n; i++) {
            if (!s->xt->parts[i].wrote)
                continue;
            if (is_sqlite(s->xt->parts[i].b))
                sqlite = true;
            else if (npg < 64)
                pg[npg++] = s->xt->parts[i].b;
        }
    } else if (s->txn_wrote) {
        if (is_sqlite(s->txn_bind))
            sqlite = true;
        else
            pg[npg++] = s->txn_bind;
    }
    for (size_t k = 0; k < r->nbinds || (target != NULL && k == 0); k++) {
        struct bind *b = target != NULL ? target : srv->binds[r->binds[k].index];
        bool dup = false;
        if (target != NULL ? !kind_writes(r->kind) : !r->binds[k].writes)
            continue;
        if (is_sqlite(b)) {
            sqlite = true;
            continue;
        }
        for (size_t j = 0; j < npg; j++)
            dup |= same_bind(pg[j], b);
        if (!dup && npg < 64)
            pg[npg++] = b;
        if (target != NULL)
            break;
    }
    if (npg + sqlite < 2)
        return 0;
    for (size_t j = 0; j < npg; j++) {
        struct bind *b = pg[j];
        if (b->max_prepared_known && b->max_prepared > 0)
            continue;
        if (b->max_prepared_known) {
            session_reply_error(
                s, "XACT",
                "bind %s has max_prepared_transactions = 0 (a PostgreSQL server setting): it "
                "cannot be written in a transaction that writes another bind, whose COMMIT "
                "prepares every PostgreSQL part; the statement did not run (raise the setting, "
                "or write it in a transaction of its own)",
                b->conf->name);
            codec_request_free(req);
            return 1;
        }
        /* Read the setting once, then run the statement again. */
        if (xact_get(s) == NULL)
            break;
        bind_hold(b);
        s->xt->mpt_bind = b;
        s->xt->pending = *req;
        s->xt->has_pending = true;
        memset(req, 0, sizeof *req);
        s->xt->op = XOP_MPT;
        if (step_start(s, b, "SELECT pg_catalog.current_setting('max_prepared_transactions')", STMT_SELECT,
                       false) != 0) {
            bind_drop(b);
            s->xt->mpt_bind = NULL;
            *req = s->xt->pending;
            s->xt->has_pending = false;
            s->xt->op = XOP_NONE;
            break;
        }
        return 1;
    }
    return 0;
}

/* ---- Deadlocks across binds ---------------------------------------------- */

/* How long a PostgreSQL participant of a transaction across binds waits
 * for a lock (its lock_timeout): the longest busy_timeout of the SQLite
 * binds, the wait a SQLite participant would accept (5 s when there is
 * none), at least 1 ms. A wait across two PostgreSQL binds is a cycle no
 * server sees whole (each deadlock detector sees one edge): it must end. */
static int lock_timeout_ms(const struct session *s)
{
    const struct config *cfg = s->srv->cfg;
    int ms = -1;

    for (size_t i = 0; i < cfg->nbinds; i++)
        if (cfg->binds[i].type != BIND_POSTGRES && cfg->binds[i].busy_timeout_ms > ms)
            ms = cfg->binds[i].busy_timeout_ms;
    return ms < 0 ? 5000 : ms < 1 ? 1 : ms;
}

/* The BEGIN a PostgreSQL bind joining the transaction runs: the client's
 * (SQLite's DEFERRED/IMMEDIATE/EXCLUSIVE forms as a plain BEGIN), then the
 * lock_timeout. malloc'd; NULL on ENOMEM. */
static char *pg_join_begin(const struct session *s)
{
    const char *begin = s->txn_begin != NULL ? s->txn_begin : s->held_begin != NULL ? s->held_begin : "BEGIN";
    struct buf out = BUF_INIT;

    if (buf_printf(&out, "%s; SET LOCAL lock_timeout = %d", pg_conn_begin_text(begin), lock_timeout_ms(s)) !=
            0 ||
        put_savepoints(s, &out) != 0 || buf_putc(&out, '\0') != 0) {
        buf_free(&out);
        return NULL;
    }
    return out.data;
}

/* Before another bind joins: the transaction's first bind, when it is a
 * PostgreSQL one, gets its lock_timeout too (XOP_LOCK, then req again).
 * true when that step started (req taken). */
static bool lock_first(struct session *s, struct request *req)
{
    char sql[64];

    if (is_sqlite(s->txn_bind) || (s->xt != NULL && (s->xt->parts[0].locked || !s->xt->parts[0].open)))
        return false;
    if (xact_get(s) == NULL)
        return false;
    snprintf(sql, sizeof sql, "SET LOCAL lock_timeout = %d", lock_timeout_ms(s));
    s->xt->i = 0;
    if (step_start(s, s->txn_bind, sql, STMT_OTHER, true) != 0)
        return false;
    s->xt->op = XOP_LOCK;
    s->xt->pending = *req;
    s->xt->has_pending = true;
    memset(req, 0, sizeof *req);
    return true;
}

/* XOP_LOCK done: the statement again. */
static void lock_done(struct session *s, struct job *job)
{
    struct sess_xact *xt = s->xt;

    xt->parts[0].locked = true; /* failed: its transaction is aborted, noted here */
    xt->parts[0].aborted = job->txn_aborted;
    xt->parts[0].open = job->in_txn;
    resume(s);
}

/* ---- Dispatch -------------------------------------------------------------- */

/* The BEGIN a bind joining the transaction runs: the client's, but for an
 * SQLite bind a plain BEGIN when the client's is not SQLite's own
 * (BEGIN ISOLATION LEVEL ..., START TRANSACTION). */
static const char *begin_for_sqlite(const struct session *s)
{
    const char *base = s->txn_begin != NULL ? s->txn_begin : s->held_begin != NULL ? s->held_begin : "BEGIN";
    const char *p = base;
    size_t n;

    while (isspace((unsigned char)*p))
        p++;
    if (strncasecmp(p, "begin", 5) != 0)
        return "BEGIN";
    p += 5;
    while (isspace((unsigned char)*p) || *p == ';')
        p++;
    for (const char *const *w =
             (const char *const[]){"deferred", "immediate", "exclusive", "transaction", NULL};
         *w != NULL; w++) {
        n = strlen(*w);
        if (strncasecmp(p, *w, n) == 0 && (p[n] == '\0' || isspace((unsigned char)p[n]) || p[n] == ';'))
            return base;
    }
    return *p == '\0' ? base : "BEGIN";
}

/* Appends "; SAVEPOINT name" for each of the transaction's savepoints. */
static int put_savepoints(const struct session *s, struct buf *b)
{
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < s->ntxn_savepoints; i++)
        rc = buf_printf(b, "; SAVEPOINT %s", s->txn_savepoints[i]);
    return rc;
}

char *session_xact_begin_sqlite(const struct session *s, const struct bind *b)
{
    struct buf out = BUF_INIT;

    (void)b;
    /* With savepoints to set, a plain BEGIN: SQLite runs a BEGIN that
     * takes the write lock alone (xact_begin). */
    if (buf_puts(&out, s->ntxn_savepoints > 0 ? "BEGIN" : begin_for_sqlite(s)) != 0 ||
        put_savepoints(s, &out) != 0 || buf_putc(&out, '\0') != 0) {
        buf_free(&out);
        return NULL;
    }
    return out.data;
}

void session_xact_savepoints_clear(struct session *s)
{
    for (size_t i = 0; i < s->ntxn_savepoints; i++)
        free(s->txn_savepoints[i]);
    free(s->txn_savepoints);
    s->txn_savepoints = NULL;
    s->ntxn_savepoints = 0;
}

/* The name a SAVEPOINT, RELEASE [SAVEPOINT] or ROLLBACK [TRANSACTION] TO
 * [SAVEPOINT] statement names (its last word), into name[n]; its verb:
 * 'S', 'R' (release) or 'B' (rollback to); 0 when it is none of them. */
static char savepoint_name(const char *sql, char *name, size_t n)
{
    const char *p = sql, *end = sql + strlen(sql), *w;
    char verb;

    while (isspace((unsigned char)*p))
        p++;
    verb = strncasecmp(p, "savepoint", 9) == 0  ? 'S'
           : strncasecmp(p, "release", 7) == 0  ? 'R'
           : strncasecmp(p, "rollback", 8) == 0 ? 'B'
                                                : 0;
    while (end > p && (isspace((unsigned char)end[-1]) || end[-1] == ';'))
        end--;
    for (w = end; w > p && !isspace((unsigned char)w[-1]); w--)
        ;
    if (verb == 0 || w == p || (size_t)(end - w) >= n)
        return 0;
    memcpy(name, w, (size_t)(end - w));
    name[end - w] = '\0';
    return verb;
}

/* A savepoint statement succeeded: note what the transaction's savepoints
 * are now, for binds that join later. */
static void savepoint_note(struct session *s, const char *sql)
{
    char name[256];
    char verb = savepoint_name(sql, name, sizeof name);
    size_t i;

    if (verb == 0)
        return;
    for (i = s->ntxn_savepoints; verb != 'S' && i > 0; i--)
        if (strcasecmp(s->txn_savepoints[i - 1], name) == 0)
            break;
    if (verb != 'S') {
        /* RELEASE drops it and the later ones, ROLLBACK TO the later ones;
         * a name not found changes nothing. */
        size_t keep = i == 0 ? s->ntxn_savepoints : verb == 'R' ? i - 1 : i;
        while (s->ntxn_savepoints > keep)
            free(s->txn_savepoints[--s->ntxn_savepoints]);
        return;
    }
    char **grown = realloc(s->txn_savepoints, (s->ntxn_savepoints + 1) * sizeof *grown);
    if (grown == NULL)
        return;
    s->txn_savepoints = grown;
    if ((grown[s->ntxn_savepoints] = strdup(name)) != NULL)
        s->ntxn_savepoints++;
}

/* Run a statement of one bind b inside the transaction: on its
 * participant, or joining it with the BEGIN. Takes req. */
static void stmt_on(struct session *s, struct request *req, const struct route *r, struct bind *b)
{
    enum grant grant = session_grant(s, b);
    struct bind *part = part_bind(s, b);
    bool joined = part != NULL;
    struct job *job;

    if (grant == GRANT_NONE) {
        session_reply_error(s, "NOPERM", "user %s has no access to bind %s",
                            s->user_name ? s->user_name : "?", b->conf->name);
        codec_request_free(req);
        return;
    }
    /* A participant's bind: a reload may have replaced the bind of that
     * name; the transaction ends where it began. */
    job = job_new(JOB_EXEC, joined ? part : b, s, s->id);
    if (job != NULL && !joined &&
        (job->begin_buf = is_sqlite(b) ? session_xact_begin_sqlite(s, b) : pg_join_begin(s)) == NULL) {
        job_unref(job);
        job = NULL;
    }
    if (job == NULL) {
        session_reply_error(s, "NOMEM", "out of memory");
        codec_request_free(req);
        return;
    }
    job->begin_sql = job->begin_buf;
    job->req = *req;
    memset(req, 0, sizeof *req);
    job->kind = r->kind;
    job->readonly = grant == GRANT_READ;
    job->txn_open = joined;
    session_start_job(s, job);
}

/* Which kinds of bind route r touches. */
static void route_kinds(const struct session *s, const struct route *r, bool *sqlite, bool *pg)
{
    *sqlite = *pg = false;
    for (size_t k = 0; k < r->nbinds; k++) {
        if (is_sqlite(s->srv->binds[r->binds[k].index]))
            *sqlite = true;
        else
            *pg = true;
    }
}

bool session_xact_spans_pg(const struct session *s, const struct route *r)
{
    bool sqlite, pg;

    route_kinds(s, r, &sqlite, &pg);
    return pg && (sqlite || session_xact_pick_home(s) != NULL);
}

bool session_xact_route(struct session *s, struct request *req, const struct route *r)
{
    struct server *srv = s->srv;
    bool cross = r->err_code != NULL && strcmp(r->err_code, "CROSSBIND") == 0;
    struct bind *b, *home;
    bool has_pg = false, has_sqlite = false;

    if (r->err_code != NULL && !cross)
        return false;
    if (s->xt != NULL && s->xt->broken != NULL && r->kind != STMT_ROLLBACK && r->kind != STMT_COMMIT) {
        session_reply_error(s, "XACT", "%s", s->xt->broken);
        codec_request_free(req);
        return true;
    }
    switch (r->kind) {
    case STMT_COMMIT:
    case STMT_ROLLBACK:
    case STMT_SAVEPOINT:
        if (s->xt == NULL || cross)
            return false;
        chain_start(s, req, r->kind);
        return true;
    case STMT_BEGIN: return false;
    default: break;
    }
    if (cross) {
        if (r->kind == STMT_DDL)
            return false;
        route_kinds(s, r, &has_sqlite, &has_pg);
        if (!has_pg) {
            /* Across SQLite binds: on the home, or one joins. */
            if (mpt_check(s, req, r, NULL) != 0 || lock_first(s, req))
                return true;
            return session_xact_stmt(s, req, r, 0, false);
        }
        if (mpt_check(s, req, r, NULL) != 0 || lock_first(s, req))
            return true;
        session_xact_lend(s, req, r);
        return true;
    }
    if (r->bind == ROUTE_NO_TABLE) {
        if (s->xt == NULL && !kind_writes(r->kind))
            return false;
        if (mpt_check(s, req, r, s->txn_bind) != 0)
            return true;
        return false;
    }
    b = srv->binds[r->bind];
    /* The transaction's own bind and no other: one participant, nothing
     * for mpt_check to find. */
    if (s->xt == NULL && same_bind(b, s->txn_bind))
        return false;
    if (mpt_check(s, req, r, b) != 0)
        return true;
    if (same_bind(b, s->txn_bind))
        return false;
    if (lock_first(s, req))
        return true;
    home = session_xact_home(s);
    if (is_sqlite(b) && home != NULL && !same_bind(b, home))
        return session_xact_stmt(s, req, r, 0, false);
    stmt_on(s, req, r, b);
    return true;
}

/* ---- The end ------------------------------------------------------------- */

void session_xact_release(struct session *s)
{
    struct sess_xact *xt = s->xt;

    for (size_t i = 0; xt != NULL && i < xt->n; i++) {
        struct job *job;
        if (!xt->parts[i].open)
            continue;
        job = job_new(JOB_RELEASE, xt->parts[i].b, NULL, s->id);
        if (job == NULL) {
            log_error("c%llu: out of memory ending its transaction", (unsigned long long)s->id);
            continue;
        }
        job->txn_open = true;
        job->bind->ops->submit(job->bind, job);
    }
    xact_end(s);
}

/* ---- Statements across SQLite and PostgreSQL ------------------------------ */

/* XOP_JOIN: the PostgreSQL bind of the route that is not a participant
 * yet, or NULL. */
static struct bind *join_next(struct session *s, const struct route *r)
{
    for (size_t k = 0; k < r->nbinds; k++) {
        struct bind *b = s->srv->binds[r->binds[k].index];
        if (!is_sqlite(b) && (s->txn_bind == NULL || !same_bind(b, s->txn_bind)) && part_of(s, b) == NULL)
            return b;
    }
    return NULL;
}

struct bind *session_xact_pick_home(const struct session *s)
{
    struct bind *home = session_xact_home(s);

    if (home != NULL)
        return home;
    if (is_sqlite(s->use_bind) && session_grant(s, s->use_bind) != GRANT_NONE)
        return s->use_bind;
    for (size_t i = 0; i < s->srv->nbinds; i++)
        if (is_sqlite(s->srv->binds[i]) && session_grant(s, s->srv->binds[i]) != GRANT_NONE)
            return s->srv->binds[i];
    return NULL;
}

/* A statement across PostgreSQL binds only runs on the SQLite home all
 * the same: the home (picked, read-only, when the transaction has none)
 * is added to a copy of its route. */
static void lend_pg_only(struct session *s, struct request *req, const struct route *r, struct bind *home)
{
    struct route own = *r;

    own.binds = calloc(r->nbinds + 1, sizeof *own.binds);
    if (own.binds == NULL) {
        session_reply_error(s, "NOMEM", "out of memory");
        codec_request_free(req);
        return;
    }
    memcpy(own.binds, r->binds, r->nbinds * sizeof *own.binds);
    own.binds[own.nbinds++] = (struct route_bind){.index = home->index};
    if (!session_xact_stmt(s, req, &own, 0, true)) {
        session_reply_error(s, "TXNBIND", "this statement across binds cannot run inside the transaction");
        codec_request_free(req);
    }
    free(own.binds);
}

void session_xact_lend(struct session *s, struct request *req, const struct route *r)
{
    struct bind *b, *home = NULL;
    bool has_sqlite, has_pg;

    if (session_cross_refused(s, req, r))
        return;
    route_kinds(s, r, &has_sqlite, &has_pg);
    if (!has_sqlite && (home = session_xact_pick_home(s)) == NULL) {
        session_reply_error(s, "TXNBIND",
                            "a statement across PostgreSQL binds only runs inside a transaction on an SQLite "
                            "bind's connection, and user %s may read no SQLite bind (run one statement per "
                            "bind, or run it outside the transaction)",
                            s->user_name ? s->user_name : "?");
        codec_request_free(req);
        return;
    }
    b = join_next(s, r);
    if (b != NULL) {
        /* Its PostgreSQL binds join the transaction first (BEGIN), then
         * the statement is routed again. */
        struct job *job;
        job = xact_get(s) != NULL ? step_new(s, b, "SELECT 1", STMT_SELECT, false) : NULL;
        if (job == NULL || (job->begin_buf = pg_join_begin(s)) == NULL) {
            if (job != NULL)
                job_unref(job);
            session_reply_error(s, "NOMEM", "out of memory");
            codec_request_free(req);
            return;
        }
        job->begin_sql = job->begin_buf;
        step_submit(s, job);
        s->xt->op = XOP_JOIN;
        s->xt->pending = *req;
        s->xt->has_pending = true;
        memset(req, 0, sizeof *req);
        return;
    }
    if (home != NULL) {
        lend_pg_only(s, req, r, home);
        return;
    }
    if (!session_xact_stmt(s, req, r, 0, true)) {
        session_reply_error(s, "TXNBIND", "this statement across binds cannot run inside the transaction");
        codec_request_free(req);
    }
}

/* XOP_JOIN done: the bind is a participant now; the statement again. */
static void join_done(struct session *s, struct job *job, struct buf *data)
{
    struct sess_xact *xt = s->xt;
    char *line = job->failed ? last_line(data) : NULL;

    if (job->in_txn && part_of(s, job->bind) == NULL && part_add(s, job->bind) != 0)
        line = line != NULL ? line : strdup("-ERR NOMEM out of memory\n");
    else if (job->in_txn && !s->in_txn) {
        /* The first statement after BEGIN spans binds: this is its first. */
        s->txn_held = false;
        free(s->txn_begin);
        s->txn_begin = s->held_begin;
        s->held_begin = NULL;
        session_txn_set(s, job->bind);
    }
    if (line != NULL && s->state != SESS_CLOSING) {
        /* It could not join: the statement gets its error. */
        codec_request_free(&xt->pending);
        xt->has_pending = false;
        xt->op = XOP_NONE;
        if (!s->in_txn)
            xact_end(s);
        if (buf_puts(&s->out, line) != 0)
            session_close(s, true);
        else
            session_pump(s);
        free(line);
        return;
    }
    free(line);
    resume(s);
}

int session_xact_lend_conns(struct session *s, struct job *job)
{
    const struct config *cfg = confref_cfg(job->cfgref);

    job->xact_lent = calloc(job->nxact_binds, sizeof *job->xact_lent);
    if (job->xact_lent == NULL) {
        session_reply_error(s, "NOMEM", "out of memory");
        return -1;
    }
    job->catset = catset_hold(s->srv->catset);
    for (size_t i = 0; i < job->nxact_binds; i++) {
        const struct bind_conf *bc = &cfg->binds[job->xact_binds[i].index];
        struct bind *b = s->srv->binds[job->xact_binds[i].index];
        struct job_lent *l = &job->xact_lent[job->nxact_lent];
        if (bc->type != BIND_POSTGRES)
            continue;
        if (part_bind(s, b) != NULL)
            b = part_bind(s, b);
        l->bind = job->xact_binds[i].index;
        l->conn = backend_pg_lend(b, s->id, &l->pgconn);
        if (l->conn == NULL) {
            for (size_t j = 0; j < job->nxact_lent; j++)
                backend_pg_unlend(job->xact_lent[j].pgconn);
            job->nxact_lent = 0;
            session_reply_error(s, "CONNLOST",
                                "bind %s: the connection of this transaction is gone: ROLLBACK to end it",
                                bc->name);
            return -1;
        }
        job->nxact_lent++;
    }
    return 0;
}
