/*
 * PostgreSQL parts of transactions across binds (xact.h, "PostgreSQL
 * parts"): transaction ids and their durable reservation, the decisions
 * whose PostgreSQL parts are not resolved yet (kept in the log until they
 * are), start-up resolution of this daemon's prepared transactions, and the
 * resolver that retries what could not be done (a timer on the loop, the
 * blocking libpq work on libuv's thread pool).
 */
#define SQLITE_ENABLE_SESSION        1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1

#include "daemon/xact_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "daemon/backend.h"
#include "daemon/fsutil.h"
#include "daemon/log.h"
#include "daemon/migrate.h"
#include "daemon/pg_2pc.h"

/* The resolver: one run at a time over a copy of what is in doubt. */
struct xact_resolver {
    struct xact *x;
    struct bind_host *host;
    uv_timer_t timer;
    uv_work_t work;
    bool running, stopping;
    /* The run (owned by the loop thread until queued, then by the run). */
    struct confref *cfgref;
    struct xact_pgpart *items; /* every part the resolver holds, done set by the run */
    bool *done;
    size_t nitems;
    char **binds; /* the binds to visit */
    bool *sweep;  /* list and resolve its gids of earlier runs too */
    bool *reached;
    char (*why)[256];
    size_t nbinds;
};

/* ---- Transaction ids ----------------------------------------------------- */

const char *xact_daemon_id(const struct xact *x)
{
    return x->daemon_id;
}

static int txid_path(const struct xact *x, char *out, size_t outlen)
{
    return snprintf(out, outlen, "%s/%s", x->data_dir, XACT_TXID_FILE) < (int)outlen ? 0 : -1;
}

int xact_ids_save(struct xact *x, uint64_t end, uint64_t synced)
{
    char path[4096], line[64];
    int n = snprintf(line, sizeof line, "%" PRIu64 " %" PRIu64 "\n", end, synced);

    int rc = 0;

    pthread_mutex_lock(&x->ids_lock);
    if (end < x->file_end)
        end = x->file_end;
    if (synced < x->file_synced)
        synced = x->file_synced;
    n = snprintf(line, sizeof line, "%" PRIu64 " %" PRIu64 "\n", end, synced);
    if (txid_path(x, path, sizeof path) != 0) {
        errno = ENAMETOOLONG;
        rc = -1;
    } else if ((rc = fs_write_durably(path, line, (size_t)n)) == 0) {
        x->file_end = end;
        x->file_synced = synced;
    }
    pthread_mutex_unlock(&x->ids_lock);
    return rc;
}

int xact_ids_load(struct xact *x, const char *data_dir, char *err, size_t errlen)
{
    char path[4096], buf[64], *stop = NULL, *e = NULL;
    FILE *f;
    size_t n = 0;

    if (pg2pc_daemon_id(data_dir, x->daemon_id, &e) != 0) {
        snprintf(err, errlen, "%s", e ? e : "out of memory reading the daemon id");
        free(e);
        return -1;
    }
    x->txid_end = x->synced = 0;
    if (txid_path(x, path, sizeof path) != 0) {
        snprintf(err, errlen, "%s/%s: path too long", x->data_dir, XACT_TXID_FILE);
        return -1;
    }
    f = fopen(path, "re");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    errno = 0;
    if (n > 1 && buf[n - 1] == '\n' && buf[0] >= '0' && buf[0] <= '9') {
        x->txid_end = strtoull(buf, &stop, 10);
        if (*stop == ' ' && stop[1] >= '0' && stop[1] <= '9')
            x->synced = strtoull(stop + 1, &stop, 10);
    }
    x->file_end = x->txid_end;
    x->file_synced = x->synced;
    if (stop != buf + n - 1 || errno != 0 || x->synced > x->txid_end) {
        snprintf(
            err, errlen,
            "%s: damaged (want two transaction ids and a newline): the ids this daemon handed out cannot "
            "be known; restore it or, when no PostgreSQL bind holds a prepared transaction of this daemon "
            "(pg_prepared_xacts, gids sqlmux_%s_...) and no transaction across binds was cut short, remove "
            "it",
            path, x->daemon_id);
        return -1;
    }
    return 0;
}

uint64_t xact_txid_new(struct xact *x)
{
    uint64_t txid;

    pthread_mutex_lock(&x->lock);
    txid = x->next_txid++;
    /* 2^36 ids a start: in practice never reached. */
    if (x->next_txid >= x->txid_end && xact_ids_save(x, x->next_txid + XACT_TXID_RESERVE, 0) == 0)
        x->txid_end = x->next_txid + XACT_TXID_RESERVE;
    else if (x->next_txid >= x->txid_end)
        log_error("%s/%s: cannot extend the reservation of transaction ids: %s", x->data_dir, XACT_TXID_FILE,
                  strerror(errno));
    pthread_mutex_unlock(&x->lock);
    return txid;
}

/* ---- Decisions and parts in doubt ------------------------------------------ */

/* With x->lock held: the part (txid, bind), or NULL. */
static struct xact_pgpart *part_find(struct xact *x, uint64_t txid, const char *bind)
{
    for (size_t i = 0; i < x->npg; i++)
        if (x->pg[i].txid == txid && strcmp(x->pg[i].bind, bind) == 0)
            return &x->pg[i];
    return NULL;
}

/* With x->lock held: add a part. NULL when out of memory. */
static struct xact_pgpart *part_add(struct xact *x, uint64_t txid, const char *bind, bool commit,
                                    bool resolver)
{
    struct xact_pgpart *p;

    if (x->npg == x->pgcap) {
        size_t cap = x->pgcap ? x->pgcap * 2 : 16;
        struct xact_pgpart *grown = realloc(x->pg, cap * sizeof *grown);
        if (grown == NULL)
            return NULL;
        x->pg = grown;
        x->pgcap = cap;
    }
    p = &x->pg[x->npg];
    p->bind = strdup(bind);
    if (p->bind == NULL)
        return NULL;
    p->txid = txid;
    p->commit = commit;
    p->resolver = resolver;
    x->npg++;
    return p;
}

/* With x->lock held: drop part i. */
static void part_drop(struct xact *x, size_t i)
{
    free(x->pg[i].bind);
    x->pg[i] = x->pg[--x->npg];
}

void xact_pg_decided(struct xact *x, uint64_t txid, const char *const *binds, size_t n)
{
    pthread_mutex_lock(&x->lock);
    for (size_t i = 0; i < n; i++)
        if (part_find(x, txid, binds[i]) == NULL && part_add(x, txid, binds[i], true, false) == NULL) {
            /* The decision stays in the log: the next start resolves it. */
            x->unresolved = true;
            log_error("transaction %llu across binds: out of memory keeping its decision",
                      (unsigned long long)txid);
        }
    pthread_mutex_unlock(&x->lock);
}

int xact_decide_pg(struct xact *x, uint64_t txid, const char *const *binds, size_t n)
{
    struct xact_part parts[XACT_MAX_PG];
    unsigned char *rec = NULL;
    size_t len = 0;
    int rc, saved;

    if (n == 0 || n > XACT_MAX_PG) {
        errno = EINVAL;
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        parts[i] = (struct xact_part){.bind = (char *)binds[i], .flags = XACT_PART_PG};
    if (xact_log_encode_commit(txid, parts, n, &rec, &len) != 0) {
        errno = ENOMEM;
        return -1;
    }
    pthread_mutex_lock(&x->lock);
    while (x->compacting)
        pthread_cond_wait(&x->cut_done, &x->lock);
    x->inflight++;
    pthread_mutex_unlock(&x->lock);
    rc = xact_log_append(&x->log, rec, len, true, false);
    saved = errno;
    free(rec);
    if (rc == 0)
        xact_pg_decided(x, txid, binds, n);
    xact_commit_finished(x);
    errno = saved;
    return rc;
}

void xact_resolved(struct xact *x, uint64_t txid)
{
    pthread_mutex_lock(&x->lock);
    for (size_t i = x->npg; i-- > 0;)
        if (x->pg[i].txid == txid && !x->pg[i].resolver)
            part_drop(x, i);
    pthread_mutex_unlock(&x->lock);
}

static void resolver_arm(struct xact_resolver *r);

void xact_pg_in_doubt(struct xact *x, uint64_t txid, const char *bind, bool commit)
{
    struct xact_pgpart *p;
    char gid[PG2PC_GID_MAX] = "?";

    pthread_mutex_lock(&x->lock);
    p = part_find(x, txid, bind);
    if (p == NULL)
        p = part_add(x, txid, bind, commit, true);
    if (p != NULL) {
        p->resolver = true;
        p->commit = commit;
    }
    pthread_mutex_unlock(&x->lock);
    if (pg2pc_gid(gid, x->daemon_id, txid, bind) != 0)
        snprintf(gid, sizeof gid, "?");
    if (p == NULL)
        log_error("bind %s: %s PREPARED %s could not be done and is not kept (out of memory): the next start "
                  "resolves it",
                  bind, commit ? "COMMIT" : "ROLLBACK", gid);
    else
        log_warn("bind %s: %s PREPARED %s could not be done now: kept in doubt, retried every %d ms", bind,
                 commit ? "COMMIT" : "ROLLBACK", gid, XACT_PG_RETRY_MS);
    resolver_arm(x->res);
}

size_t xact_in_doubt(struct xact *x, const char *name)
{
    size_t n = 0;

    if (x == NULL)
        return 0;
    pthread_mutex_lock(&x->lock);
    for (size_t i = 0; i < x->npg; i++)
        n += x->pg[i].resolver && (name == NULL || strcmp(x->pg[i].bind, name) == 0);
    pthread_mutex_unlock(&x->lock);
    return n;
}

int xact_pg_keep(struct xact *x, unsigned char **out, size_t *len)
{
    struct xact_part parts[XACT_MAX_PG];
    unsigned char *buf = NULL;
    size_t used = 0;
    bool *taken = calloc(x->npg ? x->npg : 1, sizeof *taken);

    *out = NULL;
    *len = 0;
    if (taken == NULL)
        return -1;
    /* One record a transaction, its parts still to commit. */
    for (size_t i = 0; i < x->npg; i++) {
        size_t n = 0, reclen;
        unsigned char *rec, *grown;
        if (taken[i] || !x->pg[i].commit)
            continue;
        for (size_t j = i; j < x->npg && n < XACT_MAX_PG; j++)
            if (!taken[j] && x->pg[j].commit && x->pg[j].txid == x->pg[i].txid) {
                taken[j] = true;
                parts[n++] = (struct xact_part){.bind = x->pg[j].bind, .flags = XACT_PART_PG};
            }
        if (xact_log_encode_commit(x->pg[i].txid, parts, n, &rec, &reclen) != 0 ||
            (grown = realloc(buf, used + reclen)) == NULL) {
            free(buf);
            free(taken);
            errno = ENOMEM;
            return -1;
        }
        buf = grown;
        memcpy(buf + used, rec, reclen);
        used += reclen;
        free(rec);
    }
    free(taken);
    *out = buf;
    *len = used;
    return 0;
}

/* ---- Resolving one bind's prepared transactions ---------------------------- */

/* On PostgreSQL bind bc (blocking): list this daemon's gids in its database;
 * each one of items[] commits or rolls back as the item says (done[] set);
 * one of no item rolls back when its txid is below `below` (a transaction
 * of an earlier run without a decision), else it is left alone (in flight).
 * Items of bc not listed were resolved before: done too. at_start: the
 * crash point "pg_resolve" after each. *max_seen: the largest txid seen.
 * 0, or -1 with why set (unreachable, or a command failed). */
static int resolve_on(const struct bind_conf *bc, const char *daemon_id, const struct xact_pgpart *items,
                      bool *done, size_t n, uint64_t below, bool at_start, uint64_t *max_seen, char *why,
                      size_t whylen)
{
    struct bind_conf capped = *bc;
    char **gids = NULL, *e = NULL;
    size_t ngids = 0;
    PGconn *c;
    int rc = 0;

    if (capped.connect_timeout_ms > XACT_PG_START_WAIT)
        capped.connect_timeout_ms = XACT_PG_START_WAIT;
    c = migrate_pg_connect(&capped, why, whylen);
    if (c == NULL)
        return -1;
    if (pg2pc_list(c, daemon_id, &gids, &ngids, &e) != 0) {
        snprintf(why, whylen, "%s", e ? e : "out of memory");
        free(e);
        PQfinish(c);
        return -1;
    }
    for (size_t g = 0; g < ngids && rc == 0; g++) {
        char bind[PG2PC_GID_MAX];
        uint64_t txid;
        size_t k;
        bool commit;
        if (pg2pc_gid_parse(gids[g], daemon_id, &txid, bind) != 0)
            continue;
        if (txid > *max_seen)
            *max_seen = txid;
        for (k = 0; k < n && !(items[k].txid == txid && strcmp(items[k].bind, bind) == 0); k++)
            ;
        if (k == n && txid >= below)
            continue;
        commit = k < n && items[k].commit;
        if ((commit ? pg2pc_commit(c, gids[g], &e) : pg2pc_rollback(c, gids[g], &e)) < 0) {
            snprintf(why, whylen, "%s %s: %s", commit ? "COMMIT PREPARED" : "ROLLBACK PREPARED", gids[g],
                     e ? e : "out of memory");
            free(e);
            rc = -1;
            break;
        }
        if (k < n)
            done[k] = true;
        log_info("bind %s: prepared transaction %s %s (%s)", bc->name, gids[g],
                 commit ? "committed" : "rolled back",
                 commit ? "its transaction committed" : "its transaction has no decision");
        if (at_start)
            xact_crash_point("pg_resolve");
    }
    for (size_t k = 0; k < n && rc == 0; k++)
        if (strcmp(items[k].bind, bc->name) == 0)
            done[k] = true; /* listed and done now, or not listed: done before */
    pg2pc_list_free(gids, ngids);
    PQfinish(c);
    return rc;
}

/* The gids of bind `name` among items not done, for a log line. */
static void gids_of(const struct xact *x, const struct xact_pgpart *items, const bool *done, size_t n,
                    const char *name, char *out, size_t outlen)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t k = 0; k < n && used < outlen; k++) {
        char gid[PG2PC_GID_MAX];
        if (done[k] || strcmp(items[k].bind, name) != 0 ||
            pg2pc_gid(gid, x->daemon_id, items[k].txid, items[k].bind) != 0)
            continue;
        used += (size_t)snprintf(out + used, outlen - used, "%s%s (%s)", used ? ", " : "", gid,
                                 items[k].commit ? "to commit" : "to roll back");
    }
    if (out[0] == '\0')
        snprintf(out, outlen, "none known (its gids of earlier runs are listed once it answers)");
}

/* With x->lock held: drop the parts done by a run over items[]. */
static void parts_done(struct xact *x, const struct xact_pgpart *items, const bool *done, size_t n)
{
    for (size_t k = 0; k < n; k++)
        for (size_t i = 0; done[k] && i < x->npg; i++)
            if (x->pg[i].txid == items[k].txid && strcmp(x->pg[i].bind, items[k].bind) == 0) {
                part_drop(x, i);
                break;
            }
}

int xact_pg_open(struct xact *x, const struct config *cfg, const struct xact_entry *entries,
                 const bool *decided, size_t n, uint64_t *max_txid, char *err, size_t errlen)
{
    bool *done = NULL;
    /* The PostgreSQL parts of every transaction that committed. */
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; decided[i] && j < entries[i].nparts; j++)
            if ((entries[i].parts[j].flags & XACT_PART_PG) &&
                part_find(x, entries[i].txid, entries[i].parts[j].bind) == NULL &&
                part_add(x, entries[i].txid, entries[i].parts[j].bind, true, true) == NULL) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
    done = calloc(x->npg ? x->npg : 1, sizeof *done);
    if (done == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Every PostgreSQL bind's gids of this daemon: at start nothing is in
     * flight, so each one is decided (commit) or not (roll back). */
    for (size_t b = 0; b < cfg->nbinds; b++) {
        const struct bind_conf *bc = &cfg->binds[b];
        char why[512], list[1024];
        if (bc->type != BIND_POSTGRES)
            continue;
        if (resolve_on(bc, x->daemon_id, x->pg, done, x->npg, UINT64_MAX, true, max_txid, why, sizeof why) ==
            0)
            continue;
        gids_of(x, x->pg, done, x->npg, bc->name, list, sizeof list);
        log_warn(
            "bind %s: cannot resolve the prepared transactions of this daemon now (%s): kept in doubt and "
            "retried every %d ms; in doubt: %s",
            bc->name, why, XACT_PG_RETRY_MS, list);
        char **grown = realloc(x->sweep, (x->nsweep + 1) * sizeof *grown);
        if (grown == NULL || (grown[x->nsweep] = strdup(bc->name)) == NULL) {
            if (grown != NULL)
                x->sweep = grown;
            free(done);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        x->sweep = grown;
        x->nsweep++;
    }
    /* What is left waits for the resolver (from the end: a drop moves the
     * last part, already seen, into the hole). */
    for (size_t k = x->npg; k-- > 0;)
        if (done[k])
            part_drop(x, k);
    free(done);
    return 0;
}

/* ---- The resolver ---------------------------------------------------------- */

static void run_free(struct xact_resolver *r)
{
    for (size_t k = 0; k < r->nitems; k++)
        free(r->items[k].bind);
    for (size_t b = 0; b < r->nbinds; b++)
        free(r->binds[b]);
    free(r->items);
    free(r->done);
    free(r->binds);
    free(r->sweep);
    free(r->reached);
    free(r->why);
    if (r->cfgref != NULL)
        confref_drop(r->cfgref);
    r->items = NULL;
    r->done = r->sweep = r->reached = NULL;
    r->binds = NULL;
    r->why = NULL;
    r->cfgref = NULL;
    r->nitems = r->nbinds = 0;
}

/* Add name to the run's binds (once); its index, or -1. */
static int run_bind(struct xact_resolver *r, const char *name)
{
    size_t b;

    for (b = 0; b < r->nbinds && strcmp(r->binds[b], name) != 0; b++)
        ;
    if (b == r->nbinds && (r->binds[b] = strdup(name)) == NULL)
        return -1;
    r->nbinds += b == r->nbinds;
    return (int)b;
}

/* Loop thread: copy what is in doubt into a run. false: nothing to do (or
 * out of memory: the next turn tries again). */
static bool run_build(struct xact_resolver *r)
{
    struct xact *x = r->x;
    size_t cap;
    bool ok = true;

    pthread_mutex_lock(&x->lock);
    cap = x->npg + x->nsweep + 1;
    r->items = calloc(cap, sizeof *r->items);
    r->done = calloc(cap, sizeof *r->done);
    r->binds = calloc(cap, sizeof *r->binds);
    r->sweep = calloc(cap, sizeof *r->sweep);
    r->reached = calloc(cap, sizeof *r->reached);
    r->why = calloc(cap, sizeof *r->why);
    ok = r->items && r->done && r->binds && r->sweep && r->reached && r->why;
    for (size_t i = 0; ok && i < x->npg; i++) {
        if (!x->pg[i].resolver)
            continue;
        r->items[r->nitems] = x->pg[i];
        ok = (r->items[r->nitems].bind = strdup(x->pg[i].bind)) != NULL;
        r->nitems += ok;
        ok = ok && run_bind(r, x->pg[i].bind) >= 0;
    }
    for (size_t s = 0; ok && s < x->nsweep; s++) {
        int b = run_bind(r, x->sweep[s]);
        ok = b >= 0;
        if (ok)
            r->sweep[b] = true;
    }
    pthread_mutex_unlock(&x->lock);
    if (!ok || r->nbinds == 0) {
        run_free(r);
        return false;
    }
    r->cfgref = confref_hold(r->host->cfgref);
    return true;
}

/* Thread pool: visit every bind of the run, then free the state OpenSSL
 * keeps for this thread (libpq's TLS set-up made a DRBG and an error queue
 * here). OpenSSL frees a thread's state when the thread exits, but libuv
 * joins its pool threads only in its library destructor, after OpenSSL's
 * atexit cleanup has dropped its thread-exit handlers: the state would stay
 * allocated, and lost, for the life of the process. OPENSSL_thread_stop()
 * frees it for the calling thread only, and OpenSSL makes it again when
 * this thread next needs it (another run, or other work of the pool). */
static void run_work(uv_work_t *req)
{
    struct xact_resolver *r = req->data;
    const struct config *cfg = confref_cfg(r->cfgref);
    uint64_t seen = 0;

    for (size_t b = 0; b < r->nbinds; b++) {
        const struct bind_conf *bc = NULL;
        for (size_t i = 0; i < cfg->nbinds; i++)
            if (cfg->binds[i].type == BIND_POSTGRES && strcmp(cfg->binds[i].name, r->binds[b]) == 0)
                bc = &cfg->binds[i];
        if (bc == NULL)
            snprintf(r->why[b], sizeof r->why[b], "the configuration has no PostgreSQL bind of that name");
        else
            r->reached[b] = resolve_on(bc, r->x->daemon_id, r->items, r->done, r->nitems,
                                       r->sweep[b] ? r->x->start_floor : 0, false, &seen, r->why[b],
                                       sizeof r->why[b]) == 0;
    }
    OPENSSL_thread_stop();
}

/* Loop thread: take the run's results in. */
static void run_done(uv_work_t *req, int status)
{
    struct xact_resolver *r = req->data;
    struct xact *x = r->x;

    (void)status;
    pthread_mutex_lock(&x->lock);
    parts_done(x, r->items, r->done, r->nitems);
    for (size_t b = 0; b < r->nbinds; b++) {
        if (!r->reached[b])
            continue;
        for (size_t s = 0; s < x->nsweep; s++)
            if (strcmp(x->sweep[s], r->binds[b]) == 0) {
                free(x->sweep[s]);
                x->sweep[s] = x->sweep[--x->nsweep];
                break;
            }
    }
    pthread_mutex_unlock(&x->lock);
    for (size_t b = 0; b < r->nbinds; b++) {
        if (r->reached[b])
            log_info("bind %s: resolved: no prepared transaction of this daemon is in doubt there any more",
                     r->binds[b]);
        else
            log_debug("bind %s: prepared transactions of this daemon still in doubt: %s", r->binds[b],
                      r->why[b]);
    }
    run_free(r);
    r->running = false;
    resolver_arm(r);
}

static void on_retry(uv_timer_t *t)
{
    struct xact_resolver *r = t->data;

    if (r->running || r->stopping || !run_build(r))
        return;
    r->work.data = r;
    if (uv_queue_work(r->host->loop, &r->work, run_work, run_done) != 0) {
        run_free(r);
        resolver_arm(r);
        return;
    }
    r->running = true;
}

/* Loop thread: run again after XACT_PG_RETRY_MS when something waits. */
static void resolver_arm(struct xact_resolver *r)
{
    struct xact *x;
    bool waiting;

    if (r == NULL || r->running || r->stopping)
        return;
    x = r->x;
    pthread_mutex_lock(&x->lock);
    waiting = x->nsweep > 0;
    for (size_t i = 0; i < x->npg && !waiting; i++)
        waiting = x->pg[i].resolver;
    pthread_mutex_unlock(&x->lock);
    if (waiting && !uv_is_active((uv_handle_t *)&r->timer))
        uv_timer_start(&r->timer, on_retry, XACT_PG_RETRY_MS, 0);
}

int xact_serve(struct xact *x, struct bind_host *host)
{
    struct xact_resolver *r = calloc(1, sizeof *r);
    int rc;

    if (r == NULL)
        return UV_ENOMEM;
    r->x = x;
    r->host = host;
    if ((rc = uv_timer_init(host->loop, &r->timer)) != 0) {
        free(r);
        return rc;
    }
    r->timer.data = r;
    x->res = r;
    resolver_arm(r);
    return 0;
}

void xact_stop(struct xact *x)
{
    if (x == NULL || x->res == NULL || x->res->stopping)
        return;
    x->res->stopping = true;
    uv_close((uv_handle_t *)&x->res->timer, NULL);
}

void xact_pg_free(struct xact *x)
{
    for (size_t i = 0; i < x->npg; i++)
        free(x->pg[i].bind);
    free(x->pg);
    for (size_t s = 0; s < x->nsweep; s++)
        free(x->sweep[s]);
    free(x->sweep);
    if (x->res != NULL)
        run_free(x->res);
    free(x->res);
}
