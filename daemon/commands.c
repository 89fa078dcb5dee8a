/*
 * Dot-commands: `.name args` lines, dispatched from one table that .help
 * prints too. Handlers answer in the normal result format so the CLI and
 * client libraries show them like any query.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/log.h"
#include "daemon/routecache.h"
#include "daemon/server.h"
#include "daemon/session.h"

struct command {
    const char *name;
    const char *args;
    const char *help;
    void (*handler)(struct session *s, const char *args);
};

static const struct command commands[];

static void reply_rows_done(struct session *s, size_t rows)
{
    char facts[32];
    snprintf(facts, sizeof facts, "rows=%zu", rows);
    session_reply_ok(s, facts);
}

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
    reply_rows_done(s, n);
}

static const char *bind_type_name(enum bind_type t)
{
    switch (t) {
    case BIND_SQLITE_FILE: return "sqlite";
    case BIND_SQLITE_MEMORY: return "sqlite-memory";
    case BIND_POSTGRES: return "postgresql";
    }
    return "?";
}

/* Where a bind's data lives, for .binds: a file, "memory", or the
 * PostgreSQL server's host, port and database (never the password). */
static void bind_location(const struct bind_conf *b, char *dst, size_t n)
{
    const char *host = "", *port = "", *db = "";

    if (b->type == BIND_SQLITE_FILE) {
        snprintf(dst, n, "%s", b->path);
        return;
    }
    if (b->type == BIND_SQLITE_MEMORY) {
        snprintf(dst, n, "memory");
        return;
    }
    for (size_t i = 0; b->pg_keywords != NULL && b->pg_keywords[i] != NULL; i++) {
        if (strcmp(b->pg_keywords[i], "host") == 0)
            host = b->pg_values[i];
        else if (strcmp(b->pg_keywords[i], "port") == 0)
            port = b->pg_values[i];
        else if (strcmp(b->pg_keywords[i], "dbname") == 0)
            db = b->pg_values[i];
    }
    snprintf(dst, n, "%s%s%s/%s", host, port[0] ? ":" : "", port, db);
}

static void cmd_binds(struct session *s, const char *args)
{
    static const char *const cols[] = {"name", "", "type", "", "url", "", "location", "",
                                       "state", "", "pool_size", "INTEGER", "connections", "INTEGER",
                                       "in_use", "INTEGER", NULL};
    const struct config *cfg = s->srv->cfg;

    (void)args;
    session_reply_columns(s, cols);
    for (size_t i = 0; i < cfg->nbinds; i++) {
        const struct bind_conf *b = &cfg->binds[i];
        struct bind *bind = &s->srv->binds[i];
        struct bind_status st = {"?", 0, 0};
        char pool[16], conns[16], in_use[16], where[512];

        bind->ops->status(bind, &st);
        bind_location(b, where, sizeof where);
        snprintf(pool, sizeof pool, "%d", b->pool_size);
        snprintf(conns, sizeof conns, "%d", st.connections);
        snprintf(in_use, sizeof in_use, "%d", st.in_use);
        const char *row[] = {b->name, bind_type_name(b->type), b->url_redacted, where,
                             st.state, pool, conns, in_use};
        session_reply_row(s, row, 8);
    }
    reply_rows_done(s, cfg->nbinds);
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
    reply_rows_done(s, cfg->nrules);
}

/* Resolve a bind name argument; replies -ERR and returns -1 when bad. */
static int arg_bind(struct session *s, const char *args)
{
    int i = config_bind_index(s->srv->cfg, args);
    if (i < 0)
        session_reply_error(s, "NOBIND", "no bind named '%s' (.binds lists them)", args);
    return i;
}

/* .tables runs one JOB_TABLES per bind, in order; commands_job_done()
 * starts the next and writes the status line after the last. */
static void tables_next(struct session *s)
{
    struct job *job;

    if (s->tables_next >= s->tables_end) {
        s->tables_running = false;
        reply_rows_done(s, (size_t)s->tables_rows);
        return;
    }
    job = job_new(JOB_TABLES, &s->srv->binds[s->tables_next++], s, s->id);
    if (job == NULL) {
        s->tables_running = false;
        session_reply_error(s, "NOMEM", "out of memory");
        return;
    }
    (void)session_start_job(s, job);
}

static void cmd_tables(struct session *s, const char *args)
{
    static const char *const cols[] = {"table", "", "type", "", "bind", "", "routed_to", "", NULL};

    if (args[0] != '\0') {
        int i = arg_bind(s, args);
        if (i < 0)
            return;
        s->tables_next = (size_t)i;
        s->tables_end = (size_t)i + 1;
    } else {
        s->tables_next = 0;
        s->tables_end = s->srv->nbinds;
    }
    s->tables_rows = 0;
    s->tables_running = true;
    session_reply_columns(s, cols);
    tables_next(s);
}

void commands_job_done(struct session *s, struct job *job)
{
    if (job->failed) {
        /* The job's data is the -ERR line; it ends the response. */
        s->tables_running = false;
        if (buf_append(&s->out, job->done_event.data.data, job->done_event.data.len) != 0)
            session_close(s, true);
        return;
    }
    if (buf_append(&s->out, job->done_event.data.data, job->done_event.data.len) != 0) {
        session_close(s, true);
        return;
    }
    s->tables_rows += job->rows;
    tables_next(s);
}

/* Where a routed statement runs for this session. */
static size_t route_session_bind(const struct session *s, const struct route *r)
{
    if (r->bind != ROUTE_NO_TABLE)
        return (size_t)r->bind;
    return s->in_txn ? s->txn_bind : s->use_bind;
}

static void cmd_route(struct session *s, const char *args)
{
    static const char *const cols[] = {"table", "", "bind", "", NULL};
    const struct config *cfg = s->srv->cfg;
    struct route_info ri;
    struct route r;
    char facts[128];

    if (args[0] == '\0') {
        session_reply_error(s, "ARGS", "usage: .route SQL");
        return;
    }
    route_compute(cfg, args, strlen(args), &r, &ri);
    if (r.err_code == NULL || strcmp(r.err_code, "CROSSBIND") == 0) {
        session_reply_columns(s, cols);
        for (size_t i = 0; i < ri.ntables; i++) {
            const struct route_table *t = &ri.tables[i];
            char name[512];
            snprintf(name, sizeof name, "%s%s%s", t->schema, t->schema[0] ? "." : "", t->name);
            size_t bind = route_is_system_table(t) ? route_session_bind(s, &r)
                                                   : config_route_table(cfg, t->schema, t->name);
            const char *row[] = {name, cfg->binds[bind].name};
            session_reply_row(s, row, 2);
        }
    }
    if (r.err_code != NULL) {
        session_reply_error(s, r.err_code, "%s", r.err_msg ? r.err_msg : "out of memory");
    } else if (s->in_txn && r.bind != ROUTE_NO_TABLE && (size_t)r.bind != s->txn_bind) {
        session_reply_error(s, "TXNBIND", "the open transaction is on bind %s; this statement is for bind %s",
                            cfg->binds[s->txn_bind].name, cfg->binds[r.bind].name);
    } else {
        snprintf(facts, sizeof facts, "bind=%s", cfg->binds[route_session_bind(s, &r)].name);
        session_reply_ok(s, facts);
    }
    route_clear(&r);
    router_info_free(&ri);
}

static void cmd_use(struct session *s, const char *args)
{
    char facts[128];
    int i;

    if (args[0] == '\0') {
        snprintf(facts, sizeof facts, "bind=%s", s->srv->cfg->binds[s->use_bind].name);
        session_reply_ok(s, facts);
        return;
    }
    i = arg_bind(s, args);
    if (i < 0)
        return;
    s->use_bind = (size_t)i;
    snprintf(facts, sizeof facts, "bind=%s", s->srv->cfg->binds[i].name);
    session_reply_ok(s, facts);
}

static void cmd_quit(struct session *s, const char *args)
{
    (void)args;
    session_reply_ok(s, NULL);
    s->quit_after_flush = true;
}

static const struct command commands[] = {
    {"ping", "", "check the connection: answers +OK", cmd_ping},
    {"help", "", "list the commands", cmd_help},
    {"binds", "", "list the binds: name, type, URL (password hidden), location, state, pool size and use", cmd_binds},
    {"tables", "[BIND]", "list the tables and views of every bind (or of BIND) and where the map routes them", cmd_tables},
    {"map", "", "list the table map: table or pattern, bind", cmd_map},
    {"route", "SQL", "show the tables SQL references and the bind it would run on, without running it", cmd_route},
    {"use", "[BIND]", "send statements that name no table to BIND (default: default); without BIND, show it", cmd_use},
    {"quit", "", "close the connection", cmd_quit},
    {NULL, NULL, NULL, NULL},
};

void commands_dispatch(struct session *s, const char *line, size_t len)
{
    char name[32];
    size_t n = 0;
    const char *args;

    while (n < len && !isspace((unsigned char)line[n]))
        n++;
    if (n == 0 || n >= sizeof name) {
        session_reply_error(s, "UNKNOWN", "unknown command '.%.*s' (.help lists them)", (int)(n < 40 ? n : 40), line);
        return;
    }
    memcpy(name, line, n);
    name[n] = '\0';
    args = line + n;
    while (*args != '\0' && isspace((unsigned char)*args))
        args++;
    for (const struct command *c = commands; c->name != NULL; c++) {
        if (strcmp(c->name, name) == 0) {
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
            free(trimmed);
            return;
        }
    }
    session_reply_error(s, "UNKNOWN", "unknown command '.%s' (.help lists them)", name);
}
