/*
 * Dot-commands: `.name args` lines, dispatched from one table that .help
 * prints too. Handlers answer in the normal result format so the CLI and
 * client libraries show them like any query.
 */
#include "daemon/commands.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/auth.h"
#include "daemon/federate.h"
#include "daemon/log.h"
#include "daemon/route.h"
#include "daemon/server.h"
#include "daemon/session.h"
#include "daemon/snapshot.h"
#include "daemon/tls.h"
#include "daemon/xact.h"

/* Who may run a command when the configuration has users (without users,
 * everyone may run everything). */
enum command_access {
    CMD_ANYONE, /* before .auth too */
    CMD_USER,   /* any authenticated user */
    CMD_ADMIN,  /* users with admin = on */
};

struct command {
    const char *name;
    const char *args;
    const char *help;
    void (*handler)(struct session *s, const char *args);
    enum command_access access;
};

static const struct command commands[];

static void cmd_ping(struct session *s, const char *args)
{
    (void)args;
    session_reply_ok(s, NULL);
}

static void cmd_help(struct session *s, const char *args)
{
    static const char *const cols[] = {"command", "", "arguments", "", "help", "", NULL};
    size_t n = 0;

    (void)args;
    session_reply_columns(s, cols);
    for (const struct command *c = commands; c->name != NULL; c++, n++) {
        char name[32];
        snprintf(name, sizeof name, ".%s", c->name);
        const char *row[] = {name, c->args, c->help};
        session_reply_row(s, row, 3);
    }
    session_reply_ok_rows(s, n);
}

static void cmd_binds(struct session *s, const char *args)
{
    static const char *const cols[] = {
        "name",        "", "type",           "",        "url",         "",        "location", "",
        "state",       "", "pool_size",      "INTEGER", "connections", "INTEGER", "in_use",   "INTEGER",
        "snapshot_at", "", "snapshot_bytes", "INTEGER", "in_doubt",    "INTEGER", NULL};
    const struct server *srv = s->srv;

    (void)args;
    session_reply_columns(s, cols);
    for (size_t i = 0; i < srv->nbinds; i++) {
        struct bind *bind = srv->binds[i];
        const struct bind_conf *b = bind->conf;
        struct bind_status st = {.state = "?"};
        char pool[16], conns[16], in_use[16], where[512], snap_at[32], snap_bytes[24], doubt[24];
        const char *type = "?";

        bind->ops->status(bind, &st);
        bind->ops->describe(b, &type, where, sizeof where);
        snprintf(pool, sizeof pool, "%d", b->pool_size);
        snprintf(conns, sizeof conns, "%d", st.connections);
        snprintf(in_use, sizeof in_use, "%d", st.in_use);
        snapshot_format_time(st.snapshot_at, snap_at);
        snprintf(snap_bytes, sizeof snap_bytes, "%lld", (long long)st.snapshot_bytes);
        snprintf(doubt, sizeof doubt, "%zu", xact_in_doubt(srv->host.xact, b->name));
        const char *row[] = {b->name,
                             type,
                             b->url_redacted,
                             where,
                             st.state,
                             pool,
                             conns,
                             in_use,
                             st.snapshot_at ? snap_at : NULL,
                             st.snapshot_at ? snap_bytes : NULL,
                             b->type == BIND_POSTGRES ? doubt : NULL};
        session_reply_row(s, row, 11);
    }
    session_reply_ok_rows(s, srv->nbinds);
}

static void cmd_map(struct session *s, const char *args)
{
    static const char *const cols[] = {"pattern", "", "bind", "", NULL};
    const struct config *cfg = s->srv->cfg;

    (void)args;
    session_reply_columns(s, cols);
    for (size_t i = 0; i < cfg->nrules; i++) {
        const char *row[] = {cfg->rules[i].pattern, cfg->binds[cfg->rules[i].bind].name};
        session_reply_row(s, row, 2);
    }
    session_reply_ok_rows(s, cfg->nrules);
}

/* Resolve a bind name argument; replies -ERR and returns -1 when bad. */
static int arg_bind(struct session *s, const char *args)
{
    int i = config_bind_index(s->srv->cfg, args);
    if (i < 0)
        session_reply_error(s, "NOBIND", "no bind named '%s' (.binds lists them)", args);
    return i;
}

/* .tables, .migrations and .save run one job of `type` per bind, in
 * order: fanout_done() starts the next and writes the status line after
 * the last. */
static void fanout_done(struct session *s, struct job *job);

static void fanout_next(struct session *s)
{
    struct command_fanout *f = s->fanout;
    struct job *job;

    /* .save skips binds without a snapshot file, .tables the binds the
     * user may not read. */
    while (f->next < f->end && f->next < s->srv->nbinds &&
           ((f->type == JOB_SAVE_SNAPSHOT && s->srv->binds[f->next]->conf->snapshot == NULL) ||
            (f->type == JOB_LIST_TABLES && session_grant(s, s->srv->binds[f->next]) == GRANT_NONE)))
        f->next++;
    /* A reload may have shortened the table meanwhile. */
    if (f->next >= f->end || f->next >= s->srv->nbinds) {
        f->running = false;
        session_reply_ok_rows(s, (size_t)f->rows);
        return;
    }
    /* Only .tables may run inside the client's transaction (owner 0:
     * any free connection). */
    job = job_new(f->type, s->srv->binds[f->next++], s, f->type == JOB_LIST_TABLES ? s->id : 0);
    if (job == NULL) {
        f->running = false;
        session_reply_error(s, "NOMEM", "out of memory");
        return;
    }
    job->on_done = fanout_done;
    if (f->type == JOB_LIST_TABLES)
        job->catset = catset_hold(s->srv->catset);
    (void)session_start_job(s, job);
}

/* Start a per-bind command over every bind, or the one named in args. */
static void fanout_start(struct session *s, const char *args, const char *const *cols, enum job_type type)
{
    struct command_fanout *f = s->fanout;

    if (f == NULL && (f = s->fanout = calloc(1, sizeof *f)) == NULL) {
        session_reply_error(s, "NOMEM", "out of memory");
        return;
    }
    if (args[0] != '\0') {
        int i = arg_bind(s, args);
        if (i < 0)
            return;
        if (type == JOB_LIST_TABLES && session_grant(s, s->srv->binds[i]) == GRANT_NONE) {
            session_reply_error(s, "NOPERM", "user %s has no access to bind %s",
                                s->user_name ? s->user_name : "?", s->srv->binds[i]->conf->name);
            return;
        }
        f->next = (size_t)i;
        f->end = (size_t)i + 1;
    } else {
        f->next = 0;
        f->end = s->srv->nbinds;
    }
    f->type = type;
    f->rows = 0;
    f->running = true;
    session_reply_columns(s, cols);
    fanout_next(s);
}

static void cmd_tables(struct session *s, const char *args)
{
    static const char *const cols[] = {"table", "",     "type", "",        "bind", "",  "routed_to",
                                       "",      "rule", "",     "warning", "",     NULL};

    fanout_start(s, args, cols, JOB_LIST_TABLES);
}

static void cmd_migrations(struct session *s, const char *args)
{
    static const char *const cols[] = {"bind",  "", "version",    "INTEGER", "name", "",
                                       "state", "", "applied_at", "",        NULL};

    if (s->srv->cfg->migrations == NULL) {
        session_reply_error(s, "ARGS",
                            "no migrations folder is configured (migrations = DIR under [server])");
        return;
    }
    fanout_start(s, args, cols, JOB_MIGRATION_STATE);
}

static void cmd_save(struct session *s, const char *args)
{
    static const char *const cols[] = {"bind", "", "file", "", "bytes", "INTEGER", "ms", "INTEGER", NULL};
    bool any = false;

    if (args[0] != '\0') {
        struct bind *b = server_bind_named(s->srv, args);
        if (b != NULL && b->conf->snapshot == NULL) {
            session_reply_error(
                s, "ARGS",
                "bind %s has no snapshot file (snapshot = FILE in [bind.%s]; in-memory binds only)", args,
                args);
            return;
        }
    }
    for (size_t i = 0; i < s->srv->nbinds; i++)
        any |= s->srv->binds[i]->conf->snapshot != NULL;
    if (!any) {
        session_reply_error(s, "ARGS", "no bind has a snapshot file (snapshot = FILE in [bind.NAME])");
        return;
    }
    fanout_start(s, args, cols, JOB_SAVE_SNAPSHOT);
}

/* A fan-out job finished (job->on_done). */
static void fanout_done(struct session *s, struct job *job)
{
    if (buf_append(&s->out, job->done_event.data.data, job->done_event.data.len) != 0) {
        s->fanout->running = false;
        session_close(s, true);
        return;
    }
    if (job->failed) {
        /* The job's data is the -ERR line; it ends the response. */
        s->fanout->running = false;
        return;
    }
    s->fanout->rows += job->rows;
    fanout_next(s);
}

/* Whether route r touches an SQLite bind. */
static bool route_has_sqlite(const struct server *srv, const struct route *r)
{
    for (size_t i = 0; i < r->nbinds; i++)
        if (srv->binds[r->binds[i].index]->ops == &backend_sqlite_ops)
            return true;
    return false;
}

/* The name of the bind a routed statement runs on for this session. */
static const char *route_session_bind(const struct session *s, const struct route *r)
{
    if (r->bind != ROUTE_NO_TABLE)
        return s->srv->cfg->binds[r->bind].name;
    return (s->in_txn ? s->txn_bind : s->use_bind)->conf->name;
}

static void cmd_route(struct session *s, const char *args)
{
    static const char *const cols[] = {"table", "", "bind", "", "rule", "", NULL};
    const struct config *cfg = s->srv->cfg;
    struct route_info ri;
    struct route r;
    char facts[160];

    if (args[0] == '\0') {
        session_reply_error(s, "ARGS", "usage: .route SQL");
        return;
    }
    route_compute(cfg, s->srv->catset, args, strlen(args), &r, &ri);
    if (r.err_code == NULL || strcmp(r.err_code, "CROSSBIND") == 0 || strcmp(r.err_code, "AMBIGUOUS") == 0) {
        session_reply_columns(s, cols);
        for (size_t i = 0; i < ri.ntables; i++) {
            const struct route_table *t = &ri.tables[i];
            char name[512];
            size_t to = 0;
            enum route_rule rule = route_table_rule(cfg, s->srv->catset, t, &to);
            snprintf(name, sizeof name, "%s%s%s", t->schema, t->schema[0] ? "." : "", t->name);
            /* System tables and names no bind holds go where the
             * statement goes; an ambiguous name goes nowhere. */
            const char *bind = rule == ROUTE_RULE_AMBIGUOUS ? NULL
                               : rule == ROUTE_RULE_SYSTEM || rule == ROUTE_RULE_NONE
                                   ? route_session_bind(s, &r)
                                   : cfg->binds[to].name;
            const char *row[] = {name, bind, route_rule_name(rule)};
            session_reply_row(s, row, 3);
        }
    }
    size_t fk_bind = 0;
    const char *why = NULL;
    unsigned fk_warnings =
        r.err_code != NULL && strcmp(r.err_code, "CROSSBIND") == 0
            ? federate_references_route(cfg, s->srv->catset, args, strlen(args), &fk_bind, &why)
            : 0;
    if (fk_warnings > 0) {
        snprintf(facts, sizeof facts, "bind=%s warnings=%u", cfg->binds[fk_bind].name, fk_warnings);
        session_reply_ok(s, facts); /* a foreign key across binds: created in its own bind */
    } else if (why != NULL) {
        session_reply_error(s, "CROSSBIND", "%s", why); /* as running it answers */
    } else if (federate_runs(&r) && (s->in_txn || s->txn_held) && !route_has_sqlite(s->srv, &r) &&
               session_xact_pick_home(s) == NULL) {
        /* Inside a transaction a statement across binds runs on an SQLite
         * connection (README, Transactions across binds). */
        session_reply_error(s, "TXNBIND",
                            "a statement across PostgreSQL binds only runs inside a transaction on an SQLite "
                            "bind's connection, and this user may read no SQLite bind");
    } else if (federate_runs(&r)) {
        session_reply_ok(s, "bind=*"); /* the federation pool runs it */
    } else if (r.err_code != NULL) {
        session_reply_error(s, r.err_code, "%s", r.err_msg ? r.err_msg : "out of memory");
    } else {
        /* Inside a transaction another bind joins it (xact.h, session_xact.c). */
        snprintf(facts, sizeof facts, "bind=%s", route_session_bind(s, &r));
        session_reply_ok(s, facts);
    }
    route_clear(&r);
    sqlparse_info_free(&ri);
}

/* .plan SQL: what a statement sends to PostgreSQL. Across binds, the
 * federation pool prepares it and answers a row per PostgreSQL table (the
 * SQL its virtual table sends); a statement for one bind is sent as it is
 * (one row for a PostgreSQL bind, none for SQLite): +OK bind=NAME
 * postgresql=N. */
static void cmd_plan(struct session *s, const char *args)
{
    static const char *const cols[] = {"bind", "", "table", "", "sent", "", NULL};
    const struct route *r;
    struct request req = {.type = REQUEST_SQL};
    const struct bind *b;
    bool write = false;
    char facts[160];

    if (args[0] == '\0') {
        session_reply_error(s, "ARGS", "usage: .plan SQL");
        return;
    }
    r = routecache_get(s->srv->routes, s->srv->cfg, args, strlen(args));
    if (!federate_runs(r)) {
        if (r->err_code != NULL) {
            session_reply_error(s, r->err_code, "%s", r->err_msg ? r->err_msg : "out of memory");
            return;
        }
        b = r->bind != ROUTE_NO_TABLE ? s->srv->binds[r->bind] : s->in_txn ? s->txn_bind : s->use_bind;
        session_reply_columns(s, cols);
        if (b->conf->type == BIND_POSTGRES) {
            const char *row[] = {b->conf->name, "", args};
            session_reply_row(s, row, 3);
        }
        snprintf(facts, sizeof facts, "bind=%s postgresql=%d", b->conf->name, b->conf->type == BIND_POSTGRES);
        session_reply_ok(s, facts);
        return;
    }
    if ((b = federate_grant_missing(s, r, &write)) != NULL) {
        session_reply_error(s, "NOPERM", "user %s has no %saccess to bind %s",
                            s->user_name ? s->user_name : "?", write ? "write " : "", b->conf->name);
        return;
    }
    req.text = strdup(args);
    req.len = strlen(args);
    struct job *job = req.text != NULL ? federate_job_new(s, r, &req) : NULL;
    if (job == NULL) {
        session_reply_error(s, "NOMEM", "out of memory");
        return;
    }
    job->plan = true;
    session_start_job(s, job);
}

/* .use BIND: +OK bind=NAME. .use alone: +OK bind=NAME txn=0|1, txn=1
 * while the session has a transaction open (its BEGIN held, or begun on a
 * bind as the backend reported after the last statement), so a shell can
 * show it in its prompt. */
static void cmd_use(struct session *s, const char *args)
{
    char facts[160];

    if (args[0] == '\0') {
        snprintf(facts, sizeof facts, "bind=%s txn=%d", s->use_bind->conf->name, s->in_txn || s->txn_held);
        session_reply_ok(s, facts);
        return;
    }
    int i = arg_bind(s, args);
    if (i < 0)
        return;
    s->use_bind = s->srv->binds[i];
    snprintf(facts, sizeof facts, "bind=%s", s->use_bind->conf->name);
    session_reply_ok(s, facts);
}

static void cmd_quit(struct session *s, const char *args)
{
    (void)args;
    session_reply_ok(s, NULL);
    s->quit_after_flush = true;
}

/* ---- Operation: .stats, .clients, .version, .reload ------------------ */

/* The bind a client is on: its transaction's, else the one for statements
 * naming no table. */
static const struct bind *session_bind(const struct session *s)
{
    return s->in_txn ? s->txn_bind : s->use_bind;
}

/* Sums for the (all) row of .stats. */
struct stats_total {
    struct bind_stats st;
    long long pool, conns, in_use, txns, clients, wal;
};

/* One .stats row; w, ip and sb: the loop's turns, polls (and direct
 * reads) and batched sends, for the (all) row (NULL: \N). */
static void stats_row(struct session *s, const char *name, const struct bind_stats *st, long long pool,
                      long long conns, long long in_use, long long txns, long long clients, long long wal,
                      const struct loopwatch *w, const struct idlepoll *ip, const struct sendbatch *sb,
                      long long in_doubt)
{
    char f[28][32];
    double ms = (double)st->time_ns / 1e6;

    snprintf(f[0], sizeof f[0], "%llu", (unsigned long long)st->statements);
    snprintf(f[1], sizeof f[1], "%llu", (unsigned long long)st->errors);
    snprintf(f[2], sizeof f[2], "%llu", (unsigned long long)st->rows);
    snprintf(f[3], sizeof f[3], "%.3f", ms);
    snprintf(f[4], sizeof f[4], "%.3f", st->statements ? ms / (double)st->statements : 0.0);
    snprintf(f[5], sizeof f[5], "%lld", pool);
    snprintf(f[6], sizeof f[6], "%lld", conns);
    snprintf(f[7], sizeof f[7], "%lld", in_use);
    snprintf(f[8], sizeof f[8], "%lld", txns);
    snprintf(f[9], sizeof f[9], "%lld", clients);
    snprintf(f[10], sizeof f[10], "%llu", (unsigned long long)st->on_loop);
    snprintf(f[11], sizeof f[11], "%lld", wal);
    const char *row[29] = {
        name, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], wal >= 0 ? f[11] : NULL};
    if (w != NULL) {
        time_t sec = (time_t)(w->longest_at_ms / 1000);
        uint64_t cpu, wait;
        struct tm tm;
        snprintf(f[12], sizeof f[12], "%llu", (unsigned long long)w->turns);
        snprintf(f[13], sizeof f[13], "%llu", (unsigned long long)w->over_1ms);
        snprintf(f[14], sizeof f[14], "%llu", (unsigned long long)w->over_10ms);
        snprintf(f[15], sizeof f[15], "%.3f", (double)w->longest_ns / 1e6);
        for (int i = 12; i < 16; i++)
            row[i + 1] = f[i];
        if (w->longest_at_ms > 0 && gmtime_r(&sec, &tm) != NULL) {
            size_t n = strftime(f[16], sizeof f[16], "%Y-%m-%dT%H:%M:%S", &tm);
            snprintf(f[16] + n, sizeof f[16] - n, ".%03dZ", (int)(w->longest_at_ms % 1000));
            row[17] = f[16];
        }
        loopwatch_thread_times(&cpu, &wait);
        snprintf(f[17], sizeof f[17], "%.3f", (double)cpu / 1e6);
        snprintf(f[18], sizeof f[18], "%.3f", (double)wait / 1e6);
        row[18] = f[17];
        row[19] = wait != UINT64_MAX ? f[18] : NULL;
    }
    snprintf(f[19], sizeof f[19], "%lld", in_doubt);
    row[20] = in_doubt >= 0 ? f[19] : NULL;
    if (ip != NULL) {
        snprintf(f[20], sizeof f[20], "%llu", (unsigned long long)ip->polls);
        snprintf(f[21], sizeof f[21], "%llu", (unsigned long long)ip->caught);
        snprintf(f[22], sizeof f[22], "%llu", (unsigned long long)ip->busy);
        snprintf(f[23], sizeof f[23], "%.3f", (double)ip->polled_ns / 1e6);
        for (int i = 20; i < 24; i++)
            row[i + 1] = f[i];
    }
    if (sb != NULL) {
        snprintf(f[24], sizeof f[24], "%llu", (unsigned long long)sb->batches);
        snprintf(f[25], sizeof f[25], "%llu", (unsigned long long)sb->sent);
        row[25] = f[24];
        row[26] = f[25];
    }
    if (ip != NULL) {
        snprintf(f[26], sizeof f[26], "%llu", (unsigned long long)ip->reads);
        snprintf(f[27], sizeof f[27], "%llu", (unsigned long long)ip->rounds);
        row[27] = f[26];
        row[28] = f[27];
    }
    session_reply_row(s, row, 29);
}

/* One .stats row for bind b, added to tot. */
static void stats_bind(struct session *s, struct bind *b, struct stats_total *tot)
{
    struct bind_status st = {.state = "?", .wal_bytes = -1};
    long long txns = 0, clients = 0;
    char name[96];

    b->ops->status(b, &st);
    for (const struct session *c = s->srv->sessions; c != NULL; c = c->next) {
        txns += c->in_txn && c->txn_bind == b;
        clients += session_bind(c) == b;
    }
    snprintf(name, sizeof name, "%s%s", b->conf->name, b->retired ? " (retired)" : "");
    stats_row(s, name, &b->stats, b->conf->pool_size, st.connections, st.in_use, txns, clients, st.wal_bytes,
              NULL, NULL, NULL,
              b->conf->type == BIND_POSTGRES && !b->retired
                  ? (long long)xact_in_doubt(s->srv->host.xact, b->conf->name)
                  : -1);
    tot->st.statements += b->stats.statements;
    tot->st.errors += b->stats.errors;
    tot->st.rows += b->stats.rows;
    tot->st.time_ns += b->stats.time_ns;
    tot->st.on_loop += b->stats.on_loop;
    tot->pool += b->conf->pool_size;
    tot->conns += st.connections;
    tot->in_use += st.in_use;
    tot->txns += txns;
    tot->clients += clients;
    tot->wal += st.wal_bytes > 0 ? st.wal_bytes : 0;
}

static void cmd_stats(struct session *s, const char *args)
{
    static const char *const cols[] = {"bind",
                                       "",
                                       "statements",
                                       "INTEGER",
                                       "errors",
                                       "INTEGER",
                                       "rows",
                                       "INTEGER",
                                       "time_ms",
                                       "REAL",
                                       "avg_ms",
                                       "REAL",
                                       "pool_size",
                                       "INTEGER",
                                       "connections",
                                       "INTEGER",
                                       "in_use",
                                       "INTEGER",
                                       "transactions",
                                       "INTEGER",
                                       "clients",
                                       "INTEGER",
                                       "on_loop",
                                       "INTEGER",
                                       "wal_bytes",
                                       "INTEGER",
                                       "loop_turns",
                                       "INTEGER",
                                       "turns_over_1ms",
                                       "INTEGER",
                                       "turns_over_10ms",
                                       "INTEGER",
                                       "longest_turn_ms",
                                       "REAL",
                                       "longest_turn_at",
                                       "",
                                       "loop_cpu_ms",
                                       "REAL",
                                       "loop_wait_ms",
                                       "REAL",
                                       "in_doubt",
                                       "INTEGER",
                                       "idle_polls",
                                       "INTEGER",
                                       "idle_polls_caught",
                                       "INTEGER",
                                       "idle_polls_busy",
                                       "INTEGER",
                                       "idle_poll_ms",
                                       "REAL",
                                       "send_batches",
                                       "INTEGER",
                                       "sends_batched",
                                       "INTEGER",
                                       "idle_reads",
                                       "INTEGER",
                                       "idle_rounds",
                                       "INTEGER",
                                       NULL};
    struct server *srv = s->srv;
    struct stats_total tot = {0};
    size_t n = 0;
    char facts[64];

    (void)args;
    session_reply_columns(s, cols);
    for (size_t i = 0; i < srv->nbinds; i++, n++)
        stats_bind(s, srv->binds[i], &tot);
    for (struct bind *b = srv->host.retired; b != NULL; b = b->next_retired, n++)
        stats_bind(s, b, &tot);
    if (srv->federation != NULL) { /* statements across binds: a row of their own */
        stats_bind(s, srv->federation, &tot);
        n++;
    }
    stats_row(s, "(all)", &tot.st, tot.pool, tot.conns, tot.in_use, tot.txns, (long long)srv->nsessions,
              tot.wal, &srv->watch, &srv->poller, &srv->sends,
              (long long)xact_in_doubt(srv->host.xact, NULL));
    snprintf(facts, sizeof facts, "rows=%zu clients=%zu", n + 1, srv->nsessions);
    session_reply_ok(s, facts);
}

static void cmd_clients(struct session *s, const char *args)
{
    static const char *const cols[] = {
        "id",           "INTEGER", "peer",         "",        "state",      "",
        "bind",         "",        "in_txn",       "",        "statements", "INTEGER",
        "connected_ms", "INTEGER", "statement_ms", "INTEGER", "user",       "",
        "tls",          "",        "tls_subject",  "",        NULL};
    const struct server *srv = s->srv;
    uint64_t now_ms = uv_now(srv->loop), now_ns = uv_hrtime();
    size_t n = 0;

    (void)args;
    session_reply_columns(s, cols);
    for (const struct session *c = srv->sessions; c != NULL; c = c->next, n++) {
        char id[24], stmts[24], conn[24], age[24];
        const struct bind *b = session_bind(c);
        snprintf(id, sizeof id, "%llu", (unsigned long long)c->id);
        snprintf(stmts, sizeof stmts, "%llu", (unsigned long long)c->statements);
        snprintf(conn, sizeof conn, "%llu", (unsigned long long)(now_ms - c->connected_at));
        if (c->job != NULL)
            snprintf(age, sizeof age, "%llu", (unsigned long long)((now_ns - c->job->started_ns) / 1000000));
        const char *row[] = {id,
                             c->peer,
                             session_state_name(c->state),
                             b->conf->name,
                             c->in_txn ? "yes" : "no",
                             stmts,
                             conn,
                             c->job != NULL ? age : NULL,
                             c->user != NULL ? c->user->name : NULL,
                             c->tls != NULL ? tls_conn_describe(c->tls) : NULL,
                             c->tls != NULL ? tls_conn_subject(c->tls) : NULL};
        session_reply_row(s, row, 11);
    }
    session_reply_ok_rows(s, n);
}

static void cmd_version(struct session *s, const char *args)
{
    static const char *const cols[] = {"component", "", "version", "", NULL};
    char sqlite[32], pq[32];

    (void)args;
    backend_sqlite_ops.library_version(sqlite, sizeof sqlite);
    backend_pg_ops.library_version(pq, sizeof pq);
    const char *rows[][2] = {
        {"sqlmuxd", SQLMUXD_VERSION},         {"protocol", "1"},
        {backend_sqlite_ops.library, sqlite}, {"libuv", uv_version_string()},
        {backend_pg_ops.library, pq},
    };
    session_reply_columns(s, cols);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        session_reply_row(s, rows[i], 2);
    session_reply_ok_rows(s, sizeof rows / sizeof rows[0]);
}

/* .auth USER PASSWORD: the password is everything after the user name. */
static void cmd_auth(struct session *s, const char *args)
{
    char user[AUTH_MAX_FIELD + 1];
    size_t n = 0;

    while (args[n] != '\0' && !isspace((unsigned char)args[n]))
        n++;
    const char *password = args + n;
    while (isspace((unsigned char)*password))
        password++;
    if (n == 0 || *password == '\0') {
        session_reply_error(s, "ARGS", "usage: .auth USER PASSWORD");
        return;
    }
    if (n > AUTH_MAX_FIELD) {
        session_reply_error(s, "ARGS", "user name and password have at most %d bytes each", AUTH_MAX_FIELD);
        return;
    }
    memcpy(user, args, n);
    user[n] = '\0';
    session_auth(s, user, password);
    explicit_bzero(user, sizeof user);
}

static void cmd_reload(struct session *s, const char *args)
{
    char err[1024], facts[64];

    (void)args;
    log_info("c%llu: .reload", (unsigned long long)s->id);
    if (server_reload(s->srv, err, sizeof err) != 0) {
        session_reply_error(s, "CONFIG", "reload refused, the running configuration stays: %s", err);
        return;
    }
    snprintf(facts, sizeof facts, "binds=%zu", s->srv->nbinds);
    session_reply_ok(s, facts);
}

static const struct command commands[] = {
    {"ping", "", "check the connection: answers +OK", cmd_ping, CMD_ANYONE},
    {"help", "", "list the commands", cmd_help, CMD_ANYONE},
    {"auth", "USER PASSWORD", "log in as USER (when the configuration has users)", cmd_auth, CMD_ANYONE},
    {"binds", "", "list the binds: name, type, URL (password hidden), location, state, pool size and use",
     cmd_binds, CMD_USER},
    {"tables", "[BIND]", "list the tables and views of every bind (or of BIND) and where the map routes them",
     cmd_tables, CMD_USER},
    {"map", "", "list the table map: table or pattern, bind", cmd_map, CMD_USER},
    {"route", "SQL", "show the tables SQL references and the bind it would run on, without running it",
     cmd_route, CMD_USER},
    {"plan", "SQL",
     "show what SQL would send to PostgreSQL: per PostgreSQL table, the query its rows are fetched with",
     cmd_plan, CMD_USER},
    {"use", "[BIND]", "send statements that name no table to BIND (default: default); without BIND, show it",
     cmd_use, CMD_USER},
    {"quit", "", "close the connection", cmd_quit, CMD_ANYONE},
    {"stats", "", "per bind: statements, errors, rows, time, pool use, transactions and clients; then (all)",
     cmd_stats, CMD_ADMIN},
    {"clients", "", "one row per client: id, peer, state, bind, transaction, statements, ages, user, TLS",
     cmd_clients, CMD_ADMIN},
    {"version", "", "versions of sqlmuxd, the protocol and the libraries", cmd_version, CMD_USER},
    {"reload", "", "reload the configuration file, as SIGHUP does; -ERR CONFIG when it is refused",
     cmd_reload, CMD_ADMIN},
    {"migrations", "[BIND]",
     "per bind and migration file: version, name, state (applied, pending, changed, missing), applied_at",
     cmd_migrations, CMD_ADMIN},
    {"save", "[BIND]", "write the snapshot of every in-memory bind with a snapshot file (or of BIND) now",
     cmd_save, CMD_ADMIN},
    {NULL, NULL, NULL, NULL, CMD_ANYONE},
};

/* Whether s may run c; answers -ERR NOAUTH or NOPERM when not. */
static bool command_allowed(struct session *s, const struct command *c)
{
    if (s->srv->cfg->nusers == 0 || c->access == CMD_ANYONE)
        return true;
    if (s->user == NULL) {
        session_reply_error(s, "NOAUTH", "authentication required: .auth USER PASSWORD");
        return false;
    }
    if (c->access == CMD_ADMIN && !s->user->admin) {
        session_reply_error(s, "NOPERM", ".%s needs an admin user (admin = on in [user.%s])", c->name,
                            s->user->name);
        return false;
    }
    return true;
}

void commands_dispatch(struct session *s, const char *line, size_t len)
{
    char name[32];
    size_t n = 0;
    const char *args;

    while (n < len && !isspace((unsigned char)line[n]))
        n++;
    if (n == 0 || n >= sizeof name) {
        session_reply_error(s, "UNKNOWN", "unknown command '.%.*s' (.help lists them)",
                            (int)(n < 40 ? n : 40), line);
        return;
    }
    memcpy(name, line, n);
    name[n] = '\0';
    args = line + n;
    while (*args != '\0' && isspace((unsigned char)*args))
        args++;
    for (const struct command *c = commands; c->name != NULL; c++) {
        if (strcmp(c->name, name) == 0) {
            if (!command_allowed(s, c))
                return;
            /* Trailing spaces are not part of the arguments. */
            char *trimmed = strdup(args);
            size_t tl;
            if (trimmed == NULL) {
                session_reply_error(s, "NOMEM", "out of memory");
                return;
            }
            tl = strlen(trimmed);
            while (tl > 0 && isspace((unsigned char)trimmed[tl - 1]))
                trimmed[--tl] = '\0';
            c->handler(s, trimmed);
            explicit_bzero(trimmed, tl);
            free(trimmed);
            return;
        }
    }
    session_reply_error(s, "UNKNOWN", "unknown command '.%s' (.help lists them)", name);
}
