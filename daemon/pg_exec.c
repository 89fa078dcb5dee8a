/*
 * A PostgreSQL job's statement and its answer. Sending: ? placeholders
 * rewritten to $N, the request's parameters typed for libpq, and the
 * per-connection cache of prepared statements. Answering: the header,
 * rows and status lines through proto's encoder (codec_*), -ERR lines
 * from SQLSTATEs, what a read-only user's statement was refused, and the
 * rows of .tables and .migrations. Called by pg_conn.c for each result.
 *
 * A request with parameters runs as a prepared statement once its text has
 * been prepared on the connection (a per-connection LRU of stmt_cache
 * entries, named sqlmux_N), so the server parses and plans it once per
 * connection, not per request. A client's DEALLOCATE or DISCARD, or a
 * changed table, that makes a cached statement fail is noticed and the
 * statement re-prepared transparently when no transaction is open.
 *
 * It owns the connection's prepared-statement cache (c->prep, c->pending)
 * and what goes into its response buffer c->out.
 */
#include <ctype.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/backend_pg.h"
#include "daemon/catalog.h"
#include "daemon/hash.h"
#include "daemon/log.h"
#include "daemon/migrate.h"
#include "daemon/route.h"
#include "daemon/sqllex.h"

/* ---- Errors ---------------------------------------------------------- */

/* The protocol's code for an SQLSTATE. */
const char *pg_code(const char *sqlstate, bool timed_out)
{
    if (sqlstate == NULL || strlen(sqlstate) != 5)
        return "SQL";
    if (strncmp(sqlstate, "23", 2) == 0)
        return "CONSTRAINT";
    if (strcmp(sqlstate, "57014") == 0)
        return timed_out ? "TIMEOUT" : "INTERRUPTED";
    if (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0 || strcmp(sqlstate, "55P03") == 0)
        return "BUSY";
    if (strcmp(sqlstate, "42501") == 0 || strncmp(sqlstate, "28", 2) == 0)
        return "DENIED";
    if (strcmp(sqlstate, "08P01") == 0)
        return "PARAMS";
    if (strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "57P", 3) == 0)
        return "CONNLOST";
    if (strcmp(sqlstate, "53200") == 0)
        return "NOMEM";
    if (strcmp(sqlstate, "53300") == 0)
        return "UNAVAILABLE";
    if (strncmp(sqlstate, "53", 2) == 0)
        return "FULL";
    if (strcmp(sqlstate, "22001") == 0)
        return "TOOBIG";
    if (strcmp(sqlstate, "22P02") == 0 || strcmp(sqlstate, "42804") == 0)
        return "MISMATCH";
    if (strcmp(sqlstate, "25006") == 0)
        return "READONLY";
    return "SQL";
}

void pg_reply_error(struct buf *out, const char *code, const char *msg)
{
    buf_reset(out);
    if (codec_put_error(out, code, msg) != 0)
        buf_reset(out);
}

/* "-ERR CODE primary message (SQLSTATE XXXXX)" from an error result. */
static void reply_result_error(struct pgconn *c, const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    char msg[1024];
    bool ro_user = c->job != NULL && c->job->readonly && state != NULL && strcmp(state, "25006") == 0;

    if (primary == NULL)
        primary = PQresultErrorMessage(res);
    if (c->timed_out && state != NULL && strcmp(state, "57014") == 0)
        snprintf(msg, sizeof msg,
                 "statement exceeded statement_timeout (%d ms) and was cancelled (SQLSTATE %s)",
                 c->pb->bind->conf->statement_timeout_ms, state);
    else if (ro_user)
        snprintf(msg, sizeof msg, "read-only access to bind %s: %s (SQLSTATE %s)", c->pb->bind->conf->name,
                 primary, state);
    else
        snprintf(msg, sizeof msg, "%s (SQLSTATE %s)", primary, state ? state : "?????");
    /* A read-only user's write is refused by PostgreSQL (the transaction is
     * read-only): it is a matter of grants, as on SQLite binds. */
    pg_reply_error(&c->out, ro_user ? "NOPERM" : pg_code(state, c->timed_out), msg);
}

/* ---- Types ----------------------------------------------------------- */

static const char *pg_type_name(Oid oid)
{
    switch (oid) {
    case 16: return "bool";
    case 17: return "bytea";
    case 18: return "char";
    case 19: return "name";
    case 20: return "int8";
    case 21: return "int2";
    case 23: return "int4";
    case 25: return "text";
    case 26: return "oid";
    case 114: return "json";
    case 142: return "xml";
    case 700: return "float4";
    case 701: return "float8";
    case 790: return "money";
    case 869: return "inet";
    case 1042: return "bpchar";
    case 1043: return "varchar";
    case 1082: return "date";
    case 1083: return "time";
    case 1114: return "timestamp";
    case 1184: return "timestamptz";
    case 1186: return "interval";
    case 1266: return "timetz";
    case 1700: return "numeric";
    case 2950: return "uuid";
    case 3802: return "jsonb";
    case 1000: return "_bool";
    case 1005: return "_int2";
    case 1007: return "_int4";
    case 1016: return "_int8";
    case 1009: return "_text";
    case 1015: return "_varchar";
    case 1021: return "_float4";
    case 1022: return "_float8";
    default: return NULL;
    }
}

/* ---- Prepared statements --------------------------------------------- */

void pg_prep_release(struct pg_prepared *p)
{
    free(p->sql);
    free(p->types);
    p->sql = NULL;
    p->types = NULL;
}

/* Forget every cached statement (the server's copies are gone or will be
 * deallocated). */
void pg_prep_clear(struct pgconn *c)
{
    for (size_t i = 0; i < c->nprep; i++)
        pg_prep_release(&c->prep[i]);
    c->nprep = 0;
}

/* ---- Running statements ---------------------------------------------- */

static int put_header(struct pgconn *c, const PGresult *res)
{
    int n = PQnfields(res);
    struct codec_row r;

    free(c->types);
    c->types = malloc((size_t)(n ? n : 1) * sizeof *c->types);
    if (c->types == NULL)
        return -1;
    c->ncols = n;
    codec_header_begin(&r, &c->out);
    for (int i = 0; i < n; i++) {
        const char *name = PQfname(res, i);
        const char *type = pg_type_name(PQftype(res, i));
        char num[16];
        c->types[i] = PQftype(res, i);
        if (type == NULL) {
            snprintf(num, sizeof num, "oid:%u", (unsigned)PQftype(res, i));
            type = num;
        }
        codec_field_str(&r, name);
        codec_field_str(&r, type);
    }
    c->header_sent = true;
    return codec_row_end(&r);
}

/* Whether a field of the row is larger than max_value (bytea: its bytes,
 * not its hex text), looked at before anything is copied; then the answer
 * is -ERR TOOBIG, and the statement's later rows are dropped as they
 * arrive. */
static bool row_too_big(struct pgconn *c, const PGresult *res, int row)
{
    size_t max = confref_cfg(c->job->cfgref)->max_value;

    for (int i = 0; i < c->ncols; i++) {
        size_t n = (size_t)PQgetlength(res, row, i);
        size_t bytes = c->types[i] == 17 && n >= 2 ? (n - 2) / 2 : n;
        if (bytes > max) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "column %s: a value of %zu bytes; a value may have at most max_value = %zu bytes",
                     PQfname(res, i), bytes, max);
            pg_reply_error(&c->out, "TOOBIG", msg);
            c->failed = true;
            return true;
        }
    }
    return false;
}

static int put_row(struct pgconn *c, const PGresult *res, int row)
{
    struct codec_row r;

    codec_row_begin(&r, &c->out);
    for (int i = 0; i < c->ncols; i++) {
        const char *v = PQgetvalue(res, row, i);
        size_t n = (size_t)PQgetlength(res, row, i);
        if (PQgetisnull(res, row, i))
            codec_field_null(&r);
        else if (c->types[i] == 17 && n >= 2 && v[0] == '\\' && v[1] == 'x')
            codec_field_raw(&r, v, n); /* bytea hex is our blob form */
        else
            codec_field_text(&r, v, n);
    }
    return codec_row_end(&r);
}

/* Did a cached prepared statement fail because the server dropped it (a
 * client's DEALLOCATE or DISCARD) or because a table changed under it? */
static bool prep_is_stale(const PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    if (state == NULL)
        return false;
    return strcmp(state, "26000") == 0 || (strcmp(state, "0A000") == 0 && msg != NULL &&
                                           strstr(msg, "cached plan must not change result type"));
}

/* Does a command tag say that the statement may have changed the session
 * (settings, roles, prepared statements, listeners, cursors, temporary
 * objects, loaded libraries, or anything a DO block or procedure does)?
 * A SELECT that completes as a command is SELECT INTO. */
static bool pg_tag_touches_session(const char *tag)
{
    static const char *const words[] = {"SET",     "RESET", "DISCARD", "PREPARE", "DEALLOCATE", "LISTEN",
                                        "DECLARE", "LOAD",  "CREATE",  "SELECT",  "DO",         "CALL"};
    size_t n = strcspn(tag, " ");

    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i]) == n && strncmp(tag, words[i], n) == 0)
            return true;
    return false;
}

/* Does the statement text call a function that changes the session for
 * later statements (a session setting, a session advisory lock, the random
 * seed, a dblink connection)? A cheap, conservative look: a false match
 * only costs a DISCARD ALL. */
bool pg_text_touches_session(const char *sql)
{
    static const char *const names[] = {"set_config", "advisory", "setseed", "dblink"};

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasestr(sql, names[i]) != NULL)
            return true;
    return false;
}

/* What PostgreSQL let a read-only user's statement do although it must
 * not (PG_RO_END, PG_RO_CHECK found it) replaces its answer. */
static void reply_ro_refused(struct pgconn *c, const char *what)
{
    char msg[300];

    snprintf(msg, sizeof msg, "read-only access to bind %s: the statement %s", c->pb->bind->conf->name, what);
    pg_reply_error(&c->out, "NOPERM", msg);
    c->failed = true;
}

/* Handle one result of the running job. */
void pg_conn_result(struct pgconn *c, PGresult *res)
{
    struct job *job = c->job;
    ExecStatusType st = PQresultStatus(res);

    if (c->phase == PHASE_DEALLOC || c->phase == PHASE_REPREPARE)
        return; /* housekeeping; a failure changes nothing for the statement */
    if (c->phase == PHASE_PREPARE) {
        if (st != PGRES_COMMAND_OK) {
            if (!c->failed)
                reply_result_error(c, res);
            c->failed = true;
        }
        return;
    }
    if (c->phase == PHASE_RO_BEGIN || c->phase == PHASE_RO_LOCK) {
        /* Before the statement: a failure is its answer. */
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            if (!c->failed)
                reply_result_error(c, res);
            c->failed = true;
        }
        return;
    }
    if (c->phase == PHASE_RO_COMMIT && st == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        reply_ro_refused(c, "wrote (large objects, or a function that writes although the transaction is "
                            "read-only); it was rolled back");
        return;
    }
    if (c->phase == PHASE_RO_RELOCK && st == PGRES_FATAL_ERROR && PQresultErrorField(res, PG_DIAG_SQLSTATE) &&
        strcmp(PQresultErrorField(res, PG_DIAG_SQLSTATE), "22012") == 0) {
        reply_ro_refused(c, "wrote or took a lock that blocks writers (LOCK TABLE, advisory locks, large "
                            "objects); the transaction is aborted: ROLLBACK");
        return;
    }
    if (c->phase == PHASE_RO_RELOCK || c->phase == PHASE_RO_COMMIT) {
        /* After it: the answer is written; the transaction stays safe
         * (a failed lock leaves it aborted, a failed COMMIT rolled back). */
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
            log_warn("bind %s: %s after a read-only statement failed: %s", c->pb->bind->conf->name,
                     c->phase == PHASE_RO_COMMIT ? "COMMIT" : "the read-only lock",
                     PQresultErrorMessage(res));
        return;
    }
    switch (st) {
    case PGRES_SINGLE_TUPLE:
        if (c->failed)
            break;
        if (!c->header_sent && put_header(c, res) != 0)
            goto nomem;
        if (row_too_big(c, res, 0))
            break;
        if (put_row(c, res, 0) != 0)
            goto nomem;
        job->rows++;
        c->tuples = true;
        break;
    case PGRES_TUPLES_OK:
        if (c->failed)
            break;
        if (!c->header_sent && put_header(c, res) != 0)
            goto nomem;
        for (int r = 0; r < PQntuples(res); r++) {
            if (row_too_big(c, res, r))
                break;
            if (put_row(c, res, r) != 0)
                goto nomem;
            job->rows++;
        }
        c->tuples = true;
        break;
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY:
        snprintf(c->changes, sizeof c->changes, "%s", PQcmdTuples(res));
        /* What the daemon sends itself changes nothing past the
         * transaction: the BEGIN phase (the client's BEGIN, the SET LOCAL
         * lock_timeout and SAVEPOINTs of a transaction across binds) and
         * its steps (PREPARE TRANSACTION, COMMIT PREPARED, ...). Counting
         * their tags cost a DISCARD ALL, and the prepared statements it
         * drops, at every two-phase commit. */
        if (c->phase != PHASE_BEGIN && !job->xact_step && pg_tag_touches_session(PQcmdStatus(res)))
            c->dirty = true;
        break;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH: pg_conn_refuse_copy(c, st); break;
    default:
        if (c->ran_prepared && !c->header_sent && !c->failed && prep_is_stale(res)) {
            c->prep_stale = true;
            c->stale_mark = c->out.len;
        }
        if (!c->failed || c->phase == PHASE_BEGIN)
            reply_result_error(c, res);
        c->failed = true;
        break;
    }
    return;
nomem:
    pg_reply_error(&c->out, "NOMEM", "out of memory building the response");
    c->failed = true;
}

/* .migrations: the version table's rows (none when it does not exist:
 * SQLSTATE 42P01) merged with the bind's migration files, which are read
 * here on the loop: a few small local files. */
void pg_put_migrations(struct pgconn *c, PGresult *res)
{
    const struct config *cfg = confref_cfg(c->job->cfgref);
    const char *bind = c->pb->bind->conf->name;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    struct migration_rows rows = {0};
    struct migration_set set;
    char err[1024];

    if (c->failed)
        return;
    if (PQresultStatus(res) != PGRES_TUPLES_OK && !(state != NULL && strcmp(state, "42P01") == 0)) {
        pg_conn_result(c, res);
        return;
    }
    if (cfg->migrations == NULL)
        return;
    for (int r = 0; PQresultStatus(res) == PGRES_TUPLES_OK && r < PQntuples(res); r++) {
        if (migrate_rows_add(&rows, strtoll(PQgetvalue(res, r, 0), NULL, 10), PQgetvalue(res, r, 1),
                             PQgetvalue(res, r, 2), PQgetvalue(res, r, 3)) != 0) {
            migrate_rows_free(&rows);
            pg_reply_error(&c->out, "NOMEM", "out of memory");
            c->failed = true;
            return;
        }
    }
    if (migrate_scan(cfg->migrations, bind, &set, err, sizeof err) != 0) {
        pg_reply_error(&c->out, "MIGRATION", err);
        c->failed = true;
    } else {
        if (migrate_put_status(bind, &set, &rows, &c->out, &c->job->rows) != 0) {
            pg_reply_error(&c->out, "NOMEM", "out of memory");
            c->failed = true;
        }
        migrate_set_free(&set);
    }
    migrate_rows_free(&rows);
}

/* .tables: one row per table or view of the server (its catalogs left out),
 * "=name\ttype\tbind\trouted_to\trule\twarning", as on SQLite binds. */
void pg_put_tables(struct pgconn *c, const PGresult *res)
{
    const struct config *cfg = confref_cfg(c->job->cfgref);
    for (int r = 0; r < PQntuples(res); r++) {
        char lower_schema[256], lower_name[256];
        const char *shown = PQgetvalue(res, r, 0);
        snprintf(lower_schema, sizeof lower_schema, "%s", PQgetvalue(res, r, 2));
        snprintf(lower_name, sizeof lower_name, "%s", PQgetvalue(res, r, 3));
        for (char *p = lower_schema; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        for (char *p = lower_name; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        if (route_put_table_row(&c->out, cfg, c->job->catset, c->pb->bind->index, shown, strlen(shown),
                                PQgetvalue(res, r, 1),
                                strcmp(lower_schema, "public") == 0 ? "" : lower_schema, lower_name) != 0) {
            pg_reply_error(&c->out, "NOMEM", "out of memory");
            c->failed = true;
            break;
        }
        c->job->rows++;
    }
}

void pg_put_catalog(struct pgconn *c, const PGresult *res)
{
    struct catalog *cat;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("bind %s: reading its catalog: %s", c->pb->bind->conf->name, PQresultErrorMessage(res));
        return;
    }
    cat = catalog_new(c->catalog_seq);
    for (int r = 0; cat != NULL && r < PQntuples(res); r++) {
        if (catalog_add(cat, PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), PQgetvalue(res, r, 2)[0] == 't') !=
            0) {
            catalog_drop(cat);
            cat = NULL;
        }
    }
    if (cat == NULL) {
        log_warn("bind %s: out of memory reading its catalog", c->pb->bind->conf->name);
        return;
    }
    catalog_seal(cat);
    catalog_drop(c->job->catalog);
    c->job->catalog = cat;
}

/* Rewrite ? placeholders to $1..$n outside strings (also E'' and $tag$
 * ones), quoted names and comments (block comments nest: sqllex.c's
 * PostgreSQL dialect), and count the placeholders: *count gets the number
 * of ?s, or the highest $N when the SQL uses PostgreSQL's own. Returns a
 * new string (caller frees) or NULL on ENOMEM. */
static char *pg_placeholders(const char *sql, size_t len, size_t *count)
{
    struct buf out = BUF_INIT;
    size_t n = 0, dollar_max = 0, copied = 0, at = 0;
    int rc = 0;

    for (;;) {
        struct sqltok t = sqllex_next(sql, len, at, SQLLEX_POSTGRES);
        if (t.type == SQLTOK_EOF || t.type == SQLTOK_ERROR)
            break; /* an unterminated literal goes as is: the server reports it */
        at = t.pos + t.len;
        if (t.type != SQLTOK_PARAM)
            continue;
        if (sql[t.pos] == '?') {
            rc |= buf_append(&out, sql + copied, t.pos - copied);
            rc |= buf_printf(&out, "$%zu", ++n);
            copied = t.pos + 1;
        } else if (sql[t.pos] == '$' && t.len > 1 && isdigit((unsigned char)sql[t.pos + 1])) {
            size_t v = 0;
            for (size_t j = t.pos + 1; j < at && v < 100000; j++)
                v = v * 10 + (size_t)(sql[j] - '0');
            if (v > dollar_max)
                dollar_max = v;
        }
    }
    rc |= buf_append(&out, sql + copied, len - copied);
    if (rc != 0 || buf_reserve(&out, 0) != 0) {
        buf_free(&out);
        return NULL;
    }
    *count = n > 0 ? n : dollar_max;
    return out.data;
}

/* Run *sqlp as a prepared statement of this connection: execute it when
 * the connection has it; otherwise prepare it first (PHASE_PREPARE, after
 * which conn_advance(), pg_conn.c, comes back here to execute it), after
 * making room with a DEALLOCATE of the least recently used one
 * (PHASE_DEALLOC) when stmt_cache are prepared already. May take *sqlp (then NULL). Returns
 * what libpq's send function returned. */
static int conn_send_prepared(struct pgconn *c, char **sqlp, int n, const Oid *types,
                              const char *const *values, const int *lengths, const int *formats)
{
    size_t len = strlen(*sqlp), cap = c->pb->stmt_cache;
    uint64_t h = hash_text(*sqlp, len) ^ (hash_text((const char *)types, (size_t)n * sizeof *types) * 31);
    char name[32];
    int ok;

    for (size_t i = 0; i < c->nprep; i++) {
        struct pg_prepared *p = &c->prep[i];
        if (p->hash == h && p->ntypes == n && strcmp(p->sql, *sqlp) == 0 &&
            memcmp(p->types, types, (size_t)n * sizeof *types) == 0) {
            p->used = ++c->prep_tick;
            snprintf(name, sizeof name, "sqlmux_%u", p->id);
            c->ran_prepared = true;
            ok = PQsendQueryPrepared(c->conn, name, n, values, lengths, formats, 0);
            if (ok)
                PQsetSingleRowMode(c->conn);
            return ok;
        }
    }
    if (c->prep == NULL && (c->prep = calloc(cap, sizeof *c->prep)) == NULL) {
        ok = PQsendQueryParams(c->conn, *sqlp, n, types, values, lengths, formats, 0); /* unprepared, then */
        if (ok)
            PQsetSingleRowMode(c->conn);
        return ok;
    }
    if (c->nprep == cap) {
        size_t v = 0;
        char dealloc[48];
        for (size_t i = 1; i < c->nprep; i++)
            if (c->prep[i].used < c->prep[v].used)
                v = i;
        snprintf(dealloc, sizeof dealloc, "DEALLOCATE sqlmux_%u", c->prep[v].id);
        pg_prep_release(&c->prep[v]);
        c->prep[v] = c->prep[--c->nprep];
        pg_conn_set_phase(c, PHASE_DEALLOC);
        return PQsendQueryParams(c->conn, dealloc, 0, NULL, NULL, NULL, NULL, 0);
    }
    c->pending.types = malloc((size_t)n * sizeof *types);
    if (c->pending.types == NULL) {
        ok = PQsendQueryParams(c->conn, *sqlp, n, types, values, lengths, formats, 0);
        if (ok)
            PQsetSingleRowMode(c->conn);
        return ok;
    }
    memcpy(c->pending.types, types, (size_t)n * sizeof *types);
    c->pending.ntypes = n;
    c->pending.hash = h;
    c->pending.sql = *sqlp;
    *sqlp = NULL;
    c->pending.id = ++c->prep_ids;
    snprintf(name, sizeof name, "sqlmux_%u", c->pending.id);
    pg_conn_set_phase(c, PHASE_PREPARE);
    return PQsendPrepare(c->conn, name, c->pending.sql, n, c->pending.types);
}

/* Send the job's statement (with its parameters). 0 or -1 (error written). */
int pg_conn_send_statement(struct pgconn *c)
{
    struct job *job = c->job;
    const struct request *req = &job->req;
    size_t n = req->nparams;
    const char **values = NULL;
    int *lengths = NULL, *formats = NULL;
    Oid *types = NULL;
    char(*ints)[32] = NULL;
    char *sql = NULL;
    int ok = 0;

    pg_conn_set_phase(c, PHASE_STMT);
    c->ran_prepared = false;
    /* Only a request with parameters has placeholders to rewrite; plain SQL
     * keeps PostgreSQL's own ? operators (jsonb). */
    if (n > 0) {
        size_t want = 0;
        sql = pg_placeholders(req->text, req->len, &want);
        if (sql != NULL && want != n) {
            char msg[120];
            snprintf(msg, sizeof msg, "the statement has %zu parameter%s, the request sent %zu", want,
                     want == 1 ? "" : "s", n);
            pg_reply_error(&c->out, "PARAMS", msg);
            free(sql);
            c->failed = true;
            return -1;
        }
    } else {
        sql = strdup(req->text);
    }
    if (n > 0) {
        values = calloc(n, sizeof *values);
        lengths = calloc(n, sizeof *lengths);
        formats = calloc(n, sizeof *formats);
        types = calloc(n, sizeof *types);
        ints = calloc(n, sizeof *ints);
    }
    if (sql == NULL || (n > 0 && (!values || !lengths || !formats || !types || !ints))) {
        pg_reply_error(&c->out, "NOMEM", "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const struct value *v = &req->params[i];
        switch (v->type) {
        case VALUE_NULL: values[i] = NULL; break;
        case VALUE_INT:
            snprintf(ints[i], sizeof ints[i], "%lld", (long long)v->i);
            values[i] = ints[i];
            types[i] = 20; /* int8 */
            break;
        case VALUE_REAL:
            snprintf(ints[i], sizeof ints[i], "%.17g", v->r);
            values[i] = ints[i];
            types[i] = 701; /* float8 */
            break;
        case VALUE_TEXT:
            /* libpq sends text up to its first NUL: refuse, rather than
             * store a cut value. */
            if (memchr(v->p, '\0', v->len) != NULL) {
                char msg[160];
                snprintf(msg, sizeof msg,
                         "parameter %zu: PostgreSQL text cannot hold a NUL byte "
                         "(send bytes as a blob)",
                         i + 1);
                pg_reply_error(&c->out, "MISMATCH", msg);
                goto done;
            }
            values[i] = v->p; /* type left to the server (unknown) */
            break;
        case VALUE_BLOB:
            values[i] = v->p;
            lengths[i] = (int)v->len;
            formats[i] = 1;
            types[i] = 17; /* bytea, sent binary */
            break;
        }
    }
    if (n > 0 && c->pb->stmt_cache > 0) {
        ok = conn_send_prepared(c, &sql, (int)n, types, values, lengths, formats);
    } else {
        ok = PQsendQueryParams(c->conn, sql, (int)n, types, values, lengths, formats, 0);
        if (ok)
            PQsetSingleRowMode(c->conn);
    }
    if (!ok) {
        char why[256];
        pg_conn_error_text(c->conn, why, sizeof why);
        pg_reply_error(&c->out, "CONNLOST", why);
    }
done:
    free(sql);
    free(values);
    free(lengths);
    free(formats);
    free(types);
    free(ints);
    if (!ok) {
        c->failed = true;
        return -1;
    }
    return 0;
}
