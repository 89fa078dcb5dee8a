/*
 * The SQLite virtual table module `sqlmux_pg`: PostgreSQL tables on an
 * executor connection (issue 15, Contract 1 of /work/coord/XBIND.md).
 *
 * Exposing a table reads its columns, primary key and row estimate from
 * pg_catalog and creates main."pg$BIND$SCHEMA$TABLE" USING sqlmux_pg. Each
 * column gets a declared type whose SQLite affinity fits the values the
 * module returns (integers, reals, text, blobs), and a class (number, text
 * or blob) that every value of it has in SQLite.
 *
 * Pushdown. xBestIndex turns the constraints SQLite offers into a WHERE
 * clause with $n parameters, and records the plan in idxStr as a one-line
 * header and the SQL template (EXPLAIN shows idxStr, which is how
 * pgvtab_plan() finds what will be sent). A constraint is omitted (SQLite
 * does not check it again) only where PostgreSQL computes exactly what
 * SQLite would:
 *   - xFilter applies the column's affinity to each value as SQLite does,
 *     and when the value's class differs from the column's (5 < 'a' < x'00'
 *     in SQLite) decides the comparison itself ("always false": no query;
 *     "always true": IS NOT NULL); values of the column's class go as
 *     parameters of type int8, float8, text or bytea, never pasted;
 *   - text compares with COLLATE "C" (memcmp order, SQLite's BINARY), and
 *     only constraints whose collation is BINARY are pushed; text-like types
 *     (timestamps, uuid, json, char(n)...) compare as their text output;
 *   - float and numeric columns are checked again by SQLite (NaN is NULL in
 *     SQLite, a number in PostgreSQL), and IS NULL is not pushed for them;
 *     float4 columns are not pushed at all (SQLite sees the shortest decimal,
 *     PostgreSQL the binary value); LIKE, GLOB and functions never.
 *   LIMIT and OFFSET are used only when every constraint was pushed and
 *   omitted and any ORDER BY is consumed; ORDER BY is consumed for integer,
 *   boolean, text (COLLATE "C", NULLS FIRST as SQLite) and bytea columns.
 *
 * Rows. A probe on the whole primary key, an IN list of at most one batch
 * of values on a one-column primary key (a semi-join's keys), or a LIMIT of
 * at most one batch, runs as one PQexecParams (one round trip). Anything
 * else is a NO SCROLL cursor read with FETCH in batches of FETCH_ROWS, so
 * memory stays flat on huge tables and other queries (a join's inner
 * probes) can share the connection meanwhile.
 * A cursor needs a transaction: when the connection is idle the module
 * opens one (BEGIN) and commits it when its last cursor closes, unless a
 * write began in it.
 *
 * Writes. The rowid is the primary key when that is one integer column (so
 * an INSERT's last_id is the new key, a serial's value), else the row's
 * ctid (block * 65536 + offset). UPDATE and DELETE address the row by it (a
 * row deleted, or for ctid changed, meanwhile by another transaction is an
 * error with SQLSTATE 40001, never a silent skip); INSERT ... RETURNING
 * gives it. A NULL for a column that has a default sends DEFAULT (SQLite
 * cannot tell an omitted column from NULL). Views and partitioned tables are
 * read-only. xBegin opens a transaction when the connection has none (and
 * xSync commits it: its error still aborts SQLite's commit), xRollback rolls
 * it back; in a transaction the caller opened, the caller commits (issue 16:
 * PREPARE TRANSACTION, see daemon/pg_2pc.h). Savepoints follow SQLite's
 * (statement rollback inside a transaction).
 *
 * Files: this one holds the module, its connections, the catalog and the
 * cursors; pgvtab_plan.c xBestIndex and the SQL of a plan; pgvtab_values.c
 * the type mapping and value conversions; pgvtab_write.c xUpdate, the
 * transactions and savepoints; pgvtab_int.h what they share.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/pgvtab_int.h"

/* ---- Small helpers ----------------------------------------------------- */

static char *xstrdup(const char *s)
{
    return s ? sqlite3_mprintf("%s", s) : NULL;
}

/* "ident" with quotes doubled (sqlite3_mprintf's %w). */
static char *quote_ident(const char *s)
{
    return sqlite3_mprintf("\"%w\"", s);
}

void pgv_set_sqlstate(struct pgvtab *v, const char *state)
{
    snprintf(v->sqlstate, sizeof v->sqlstate, "%s", state && *state ? state : SQLSTATE_CONN);
}

/* Records a PostgreSQL failure (r may be NULL: the connection's error) as
 * the statement's error. Returns SQLITE_ERROR. */
int pgv_pg_fail(struct pgvtab *v, sqlite3_vtab *vt, PGconn *c, const PGresult *r, const char *what)
{
    const char *msg = r ? PQresultErrorMessage(r) : NULL;
    if (!msg || !*msg)
        msg = c ? PQerrorMessage(c) : "no connection";
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!state && c && PQstatus(c) != CONNECTION_OK)
        state = SQLSTATE_CONN;
    pgv_set_sqlstate(v, state ? state : "XX000");
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    if (vt) {
        sqlite3_free(vt->zErrMsg);
        vt->zErrMsg = sqlite3_mprintf("PostgreSQL %s: %.*s", what, (int)n, msg);
    }
    return SQLITE_ERROR;
}

/* Runs sql with no parameters; 0, or SQLITE_ERROR recorded on vt. */
int pgv_pg_command(struct pgvtab *v, sqlite3_vtab *vt, PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = SQLITE_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = pgv_pg_fail(v, vt, c, r, sql);
    PQclear(r);
    return rc;
}

/* The number in the next statement or cursor name on a connection: one
 * count for the whole process, so that two pgvtabs using the same
 * connection one after the other (a connection lent to workers in turn,
 * pgvtab_in_temp) never reuse a name the other left there. */
static uint64_t pgv_name_seq(void)
{
    static atomic_uint_fast64_t seq;
    return atomic_fetch_add(&seq, 1) + 1;
}

/* Forgets a connection's state (its prepared statements die with it). */
static void bind_reset(struct pgbind *b)
{
    for (int i = 0; i < b->nstmts; i++)
        free(b->stmts[i].sql);
    memset(b, 0, sizeof *b);
}

/* The connection of bind `bind` from the caller; resets the bind's state
 * when it is a new one. NULL with the error recorded on vt. */
PGconn *pgv_bind_conn(struct pgvtab *v, sqlite3_vtab *vt, size_t bind)
{
    v->conn_err = NULL;
    PGconn *c = v->conn_fn(v->conn_arg, bind, &v->conn_err);
    if (!c) {
        pgv_set_sqlstate(v, "08001");
        if (vt) {
            sqlite3_free(vt->zErrMsg);
            vt->zErrMsg = sqlite3_mprintf("PostgreSQL bind %s is unavailable: %s", v->cfg->binds[bind].name,
                                          v->conn_err ? v->conn_err : "no connection");
        }
        free(v->conn_err);
        v->conn_err = NULL;
        return NULL;
    }
    struct pgbind *b = &v->binds[bind];
    if (b->conn != c) {
        bind_reset(b);
        b->conn = c;
    }
    /* c is the callback's connection, not err's storage. */
    // cppcheck-suppress returnDanglingLifetime
    return c;
}

/* Runs sql as a named prepared statement of the bind's connection
 * (prepared on first use, up to STMT_CACHE of them; beyond, unnamed). */
static PGresult *exec_cached(struct pgbind *b, PGconn *c, const char *sql, int n, const char *const *vals)
{
    int i;
    for (i = 0; i < b->nstmts; i++)
        if (strcmp(b->stmts[i].sql, sql) == 0)
            break;
    if (i == b->nstmts) {
        struct pgstmt *st = &b->stmts[i];
        if (i == STMT_CACHE || !(st->sql = strdup(sql)))
            return PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
        snprintf(st->name, sizeof st->name, "sqlmux_pgv_s%" PRIu64, pgv_name_seq());
        PGresult *r = PQprepare(c, st->name, sql, n, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            free(st->sql);
            st->sql = NULL;
            return r;
        }
        PQclear(r);
        b->nstmts++;
    }
    PGresult *r = PQexecPrepared(c, b->stmts[i].name, n, vals, NULL, NULL, 0);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (state && strcmp(state, "26000") == 0) {
        /* someone deallocated it (DISCARD ALL): forget it, run it unnamed */
        free(b->stmts[i].sql);
        b->stmts[i] = b->stmts[--b->nstmts];
        PQclear(r);
        r = PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
    }
    return r;
}

/* ---- The catalog -------------------------------------------------------- */

static void table_free(struct pgtable *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->ncols; i++) {
        sqlite3_free(t->cols[i].name);
        sqlite3_free(t->cols[i].qname);
        sqlite3_free(t->cols[i].decl);
    }
    sqlite3_free(t->cols);
    sqlite3_free(t->pk);
    sqlite3_free(t->schema_arg);
    sqlite3_free(t->table_arg);
    sqlite3_free(t->label);
    sqlite3_free(t->qualified);
    sqlite3_free(t->sqlname);
    sqlite3_free(t);
}

/* Reads table `schema.table` of bind `bind` from pg_catalog. NULL with
 * *err on failure (SQLSTATE recorded). */
static struct pgtable *catalog_read(struct pgvtab *v, PGconn *c, size_t bind, const char *schema,
                                    const char *table, char **err)
{
    char *name = *schema ? sqlite3_mprintf("\"%w\".\"%w\"", schema, table) : quote_ident(table);
    if (!name) {
        *err = strdup("out of memory");
        return NULL;
    }
    const char *p1[1] = {name};
    PGresult *r = PQexecParams(
        c,
        "SELECT c.oid, n.nspname, c.relname, c.relkind, CASE WHEN c.reltuples >= 0 THEN c.reltuples::float8 "
        "ELSE greatest(pg_relation_size(c.oid) / 8192, 1) * 50.0 END "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = $1::regclass",
        1, NULL, p1, NULL, NULL, 0);
    sqlite3_free(name);
    struct pgtable *t = NULL;
    PGresult *cols = NULL, *pk = NULL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        goto pgerr;
    const char *oid = PQgetvalue(r, 0, 0);
    const char *p2[1] = {oid};
    cols = PQexecParams(c,
                        "SELECT a.attname, t.typname, format_type(a.atttypid, a.atttypmod), a.atthasdef, "
                        "coalesce((SELECT co.collisdeterministic FROM pg_collation co "
                        "WHERE co.oid = a.attcollation), true) "
                        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                        "WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped "
                        "ORDER BY a.attnum",
                        1, NULL, p2, NULL, NULL, 0);
    pk = PQexecParams(c,
                      "SELECT a.attname FROM pg_index i "
                      "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) "
                      "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                      "WHERE i.indrelid = $1::oid AND i.indisprimary ORDER BY k.ord",
                      1, NULL, p2, NULL, NULL, 0);
    PGresult **bad = PQresultStatus(cols) != PGRES_TUPLES_OK ? &cols
                     : PQresultStatus(pk) != PGRES_TUPLES_OK ? &pk
                                                             : NULL;
    if (bad) { /* its error is the one reported */
        PQclear(r);
        r = *bad;
        *bad = NULL;
        goto pgerr;
    }
    t = sqlite3_malloc(sizeof *t);
    if (!t)
        goto oom;
    memset(t, 0, sizeof *t);
    t->bind = bind;
    const char *nsp = PQgetvalue(r, 0, 1), *rel = PQgetvalue(r, 0, 2);
    char relkind = PQgetvalue(r, 0, 3)[0];
    t->writable = relkind == 'r';
    t->rows = strtod(PQgetvalue(r, 0, 4), NULL);
    if (!(t->rows >= 1))
        t->rows = 1; /* (never analyzed: 50 rows a page of its size, as PostgreSQL guesses) */
    t->schema_arg = xstrdup(schema);
    t->table_arg = xstrdup(table);
    t->label = sqlite3_mprintf("%s.%s.%s", v->cfg->binds[bind].name, nsp, rel);
    t->qualified = sqlite3_mprintf("\"%w\".\"%w\"", nsp, rel);
    t->sqlname = sqlite3_mprintf("pg$%s$%s$%s", v->cfg->binds[bind].name, nsp, rel);
    t->ncols = PQntuples(cols);
    t->cols = sqlite3_malloc64(sizeof *t->cols * (size_t)(t->ncols ? t->ncols : 1));
    t->pk = sqlite3_malloc64(sizeof *t->pk * (size_t)(PQntuples(pk) + 1));
    if (!t->schema_arg || !t->table_arg || !t->label || !t->qualified || !t->sqlname || !t->cols || !t->pk)
        goto oom;
    memset(t->cols, 0, sizeof *t->cols * (size_t)(t->ncols ? t->ncols : 1));
    for (int i = 0; i < t->ncols; i++) {
        struct pgcol *col = &t->cols[i];
        col->name = xstrdup(PQgetvalue(cols, i, 0));
        col->qname = quote_ident(PQgetvalue(cols, i, 0));
        pgv_col_type(col, PQgetvalue(cols, i, 1), PQgetvalue(cols, i, 2), PQgetvalue(cols, i, 4)[0] == 't');
        col->hasdef = PQgetvalue(cols, i, 3)[0] == 't';
        if (!col->name || !col->qname || !col->decl)
            goto oom;
    }
    for (int i = 0; i < PQntuples(pk); i++)
        for (int j = 0; j < t->ncols; j++)
            if (strcmp(t->cols[j].name, PQgetvalue(pk, i, 0)) == 0)
                t->pk[t->npk++] = j;
    t->keycol = t->npk == 1 && t->cols[t->pk[0]].kind == KIND_INT ? t->pk[0] : -1;
    PQclear(r);
    PQclear(cols);
    PQclear(pk);
    return t;
pgerr:
    pgv_pg_fail(v, NULL, c, r, "catalog");
    {
        const char *m = PQresultStatus(r) == PGRES_TUPLES_OK ? "no such table" : PQresultErrorMessage(r);
        if (!m || !*m)
            m = PQerrorMessage(c);
        size_t n = strlen(m);
        while (n && m[n - 1] == '\n')
            n--;
        if (asprintf(err, "%.*s", (int)n, m) < 0)
            *err = NULL;
    }
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        pgv_set_sqlstate(v, "42P01");
    PQclear(r);
    PQclear(cols);
    PQclear(pk);
    return NULL;
oom:
    *err = strdup("out of memory");
    table_free(t);
    PQclear(r);
    PQclear(cols);
    PQclear(pk);
    return NULL;
}

/* ---- Cursors -------------------------------------------------------------- */

static int vt_open(sqlite3_vtab *tab, sqlite3_vtab_cursor **out)
{
    struct pgvt *vt = (struct pgvt *)tab;
    if (!vt->t)
        return SQLITE_ERROR;
    struct cursor *cur = sqlite3_malloc(sizeof *cur);
    if (!cur)
        return SQLITE_NOMEM;
    memset(cur, 0, sizeof *cur);
    cur->colpos = sqlite3_malloc64(sizeof *cur->colpos * (size_t)(vt->t->ncols + 1));
    if (!cur->colpos) {
        sqlite3_free(cur);
        return SQLITE_NOMEM;
    }
    cur->eof = true;
    vt->v->sqlstate[0] = 0;
    *out = &cur->base;
    return SQLITE_OK;
}

/* Ends the cursor's query: closes the PostgreSQL cursor and, when the
 * module opened a read transaction for it and nothing else uses it,
 * commits that. */
static int cursor_end(struct cursor *cur)
{
    struct pgvt *vt = (struct pgvt *)cur->base.pVtab;
    int rc = SQLITE_OK;
    PQclear(cur->res);
    cur->res = NULL;
    if (cur->name[0]) {
        struct pgbind *b = cur->b;
        PGconn *c = cur->conn;
        bool alive = b->conn == c && PQstatus(c) == CONNECTION_OK;
        if (alive && PQtransactionStatus(c) == PQTRANS_INTRANS) {
            char sql[64];
            snprintf(sql, sizeof sql, "CLOSE %s", cur->name);
            rc = pgv_pg_command(vt->v, &vt->base, c, sql);
        }
        cur->name[0] = 0;
        if (b->conn == c && b->cursors > 0 && --b->cursors == 0 && b->own_txn && b->writers == 0) {
            b->own_txn = false;
            if (alive) {
                int st = PQtransactionStatus(c);
                int r2 = pgv_pg_command(vt->v, &vt->base, c, st == PQTRANS_INTRANS ? "COMMIT" : "ROLLBACK");
                if (rc == SQLITE_OK)
                    rc = r2;
            }
        }
    }
    cur->more = false;
    cur->eof = true;
    return rc;
}

static int vt_close(sqlite3_vtab_cursor *base)
{
    struct cursor *cur = (struct cursor *)base;
    cursor_end(cur);
    sqlite3_free(cur->colpos);
    sqlite3_free(cur);
    return SQLITE_OK;
}

/* Reads the next batch of a cursor into cur->res. */
static int cursor_fetch(struct cursor *cur)
{
    struct pgvt *vt = (struct pgvt *)cur->base.pVtab;
    char sql[64];
    snprintf(sql, sizeof sql, "FETCH %d FROM %s", FETCH_ROWS, cur->name);
    PQclear(cur->res);
    cur->res = PQexecParams(cur->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    cur->row = 0;
    if (PQresultStatus(cur->res) != PGRES_TUPLES_OK) {
        int rc = pgv_pg_fail(vt->v, &vt->base, cur->conn, cur->res, "FETCH");
        PQclear(cur->res);
        cur->res = NULL;
        cur->eof = true;
        return rc;
    }
    int n = PQntuples(cur->res);
    vt->v->rows_fetched += (uint64_t)n;
    cur->more = n == FETCH_ROWS;
    cur->eof = n == 0;
    return SQLITE_OK;
}

static int vt_filter(sqlite3_vtab_cursor *base, int idxNum, const char *idxStr, int argc,
                     sqlite3_value **argv)
{
    (void)idxNum;
    struct cursor *cur = (struct cursor *)base;
    struct pgvt *vt = (struct pgvt *)base->pVtab;
    struct pgvtab *v = vt->v;
    const struct pgtable *t = vt->t;
    struct plan p;
    int rc = cursor_end(cur);
    if (rc != SQLITE_OK)
        return rc;
    if (pgv_plan_decode(idxStr, t, &p) != 0) {
        vt->base.zErrMsg = sqlite3_mprintf("sqlmux_pg: bad plan");
        return SQLITE_ERROR;
    }
    cur->rowno = 0;

    /* parameters, in term order, then LIMIT and OFFSET */
    struct params pa;
    enum term_fix fix[MAX_TERMS];
    int argno[MAX_TERMS];
    memset(&pa, 0, sizeof pa);
    bool none = false;     /* some term is always false: no query */
    bool few = false;      /* an IN list on the one-column key: at most one batch of rows */
    bool superset = false; /* a loose term sends more rows than it matches: no LIMIT */
    int a = 0;
    for (int i = 0; i < p.nterms && rc == SQLITE_OK; i++) {
        const struct term *tm = &p.terms[i];
        const struct pgcol *c = &t->cols[tm->col];
        fix[i] = FIX_NONE;
        argno[i] = -1;
        sqlite3_value *val = a < argc ? argv[a] : NULL;
        a++;
        if (tm->op == OP_ISNULL || tm->op == OP_NOTNULL || !val)
            continue;
        if (tm->in) {
            int count = 0;
            bool numbers = false;
            rc = pgv_in_param(c, val, &pa.val[pa.n], &pa.cast[pa.n], &count, &numbers);
            if (rc == SQLITE_OK && tm->loose && numbers) {
                sqlite3_free(pa.val[pa.n]);
                pa.val[pa.n] = NULL;
                fix[i] = FIX_SKIP;
                superset = true;
            } else if (rc == SQLITE_OK) {
                argno[i] = pa.n++;
                none = none || count == 0;
                few = few || (t->npk == 1 && t->pk[0] == tm->col && count <= FETCH_ROWS);
            }
            continue;
        }
        sqlite3_value *conv;
        enum col_class cls = pgv_value_class(c, val, &conv);
        int type = sqlite3_value_type(val);
        bool number = type == SQLITE_INTEGER || type == SQLITE_FLOAT;
        if (tm->loose && (number || (type == SQLITE_TEXT && tm->op != OP_EQ && tm->op != OP_NE))) {
            /* Compared as text or, from a numeric-affinity RHS, as numbers
             * (the column's numeric-looking text a number, below any
             * text): what either gives, SQLite checks (pgv_best_index). =
             * and <> of a text value are exact either way. */
            superset = true;
            bool below = tm->op == OP_LT || tm->op == OP_LE;
            if ((number && tm->op != OP_EQ && !below) || (!number && !pgv_pg_text_ok(val))) {
                fix[i] = FIX_SKIP;
                sqlite3_value_free(conv);
                continue;
            }
            if (number || below) {
                fix[i] = FIX_NUMLIKE;
                cls = CLASS_TEXT;
            }
        }
        if (cls != pgv_kind_class(c->kind)) {
            fix[i] = pgv_mismatch(tm->op, pgv_kind_class(c->kind), cls);
            none = none || fix[i] == FIX_FALSE;
        } else if (cls == CLASS_TEXT && !pgv_pg_text_ok(conv ? conv : val)) {
            /* bytes no PostgreSQL text holds (NUL, invalid UTF-8): equal to
             * no row; ordered against the rows' UTF-8 bytes, as SQLite's
             * BINARY (memcmp) orders them */
            if (tm->op == OP_EQ || tm->op == OP_NE) {
                fix[i] = tm->op == OP_EQ ? FIX_FALSE : FIX_TRUE;
                none = none || fix[i] == FIX_FALSE;
            } else {
                sqlite3_value *x = conv ? conv : val;
                fix[i] = FIX_BYTES;
                pa.cast[pa.n] = "bytea";
                pa.val[pa.n] = pgv_hex_text(sqlite3_value_text(x), sqlite3_value_bytes(x));
                if (!pa.val[pa.n])
                    rc = SQLITE_NOMEM;
                else
                    argno[i] = pa.n++;
            }
        } else {
            pa.val[pa.n] = pgv_param_text(c, cls, conv ? conv : val, &pa.cast[pa.n]);
            if (!pa.val[pa.n])
                rc = SQLITE_NOMEM;
            else
                argno[i] = pa.n++;
        }
        sqlite3_value_free(conv);
    }
    long long limit = -1;
    if (p.limit_arg >= 0 && p.limit_arg < argc) {
        limit = superset ? -1 : sqlite3_value_int64(argv[p.limit_arg]);
        pa.cast[pa.n] = "int8";
        pa.val[pa.n++] = limit < 0 ? NULL : sqlite3_mprintf("%lld", limit);
    }
    if (p.offset_arg >= 0 && p.offset_arg < argc) {
        long long off = sqlite3_value_int64(argv[p.offset_arg]);
        pa.cast[pa.n] = "int8";
        pa.val[pa.n++] = sqlite3_mprintf("%lld", off < 0 ? 0 : off);
    }
    if (limit == 0)
        none = true;
    char *sql = NULL;
    if (rc == SQLITE_OK && !none) {
        sqlite3_str *s = sqlite3_str_new(NULL);
        pgv_plan_sql(s, t, &p, &pa, fix, argno);
        sql = sqlite3_str_finish(s);
        if (!sql)
            rc = SQLITE_NOMEM;
    }
    /* where each column is in the result */
    int field = 0;
    for (int i = 0; i < t->ncols; i++)
        cur->colpos[i] = (p.used & pgv_col_bit(i)) ? field++ : -1;
    cur->rowidpos = !t->writable                                    ? -1
                    : t->keycol >= 0 && cur->colpos[t->keycol] >= 0 ? cur->colpos[t->keycol]
                                                                    : field;

    PGconn *c = NULL;
    if (rc == SQLITE_OK && !none) {
        c = pgv_bind_conn(v, &vt->base, t->bind);
        if (!c)
            rc = SQLITE_ERROR;
    }
    if (rc == SQLITE_OK && !none) {
        struct pgbind *b = &v->binds[t->bind];
        cur->conn = c;
        cur->b = b;
        bool direct = (p.unique && !superset) || few || (limit >= 0 && limit <= FETCH_ROWS);
        if (direct) {
            cur->res = exec_cached(b, c, sql, pa.n, (const char *const *)pa.val);
            cur->row = 0;
            if (PQresultStatus(cur->res) != PGRES_TUPLES_OK) {
                rc = pgv_pg_fail(v, &vt->base, c, cur->res, "query");
                PQclear(cur->res);
                cur->res = NULL;
            } else {
                v->rows_fetched += (uint64_t)PQntuples(cur->res);
                cur->eof = PQntuples(cur->res) == 0;
            }
        } else {
            if (PQtransactionStatus(c) == PQTRANS_IDLE) {
                rc = pgv_pg_command(v, &vt->base, c, "BEGIN");
                if (rc == SQLITE_OK)
                    b->own_txn = true;
            }
            if (rc == SQLITE_OK) {
                snprintf(cur->name, sizeof cur->name, "sqlmux_pgv_%" PRIu64, pgv_name_seq());
                char *decl = sqlite3_mprintf("DECLARE %s NO SCROLL CURSOR FOR %s", cur->name, sql);
                PGresult *r =
                    decl ? PQexecParams(c, decl, pa.n, NULL, (const char *const *)pa.val, NULL, NULL, 0)
                         : NULL;
                sqlite3_free(decl);
                if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                    rc = r ? pgv_pg_fail(v, &vt->base, c, r, "query") : SQLITE_NOMEM;
                    cur->name[0] = 0;
                    if (b->cursors == 0 && b->own_txn && b->writers == 0) {
                        b->own_txn = false;
                        if (PQstatus(c) == CONNECTION_OK)
                            PQclear(PQexec(c, "ROLLBACK"));
                    }
                } else {
                    b->cursors++;
                }
                PQclear(r);
                if (rc == SQLITE_OK)
                    rc = cursor_fetch(cur);
            }
        }
    }
    sqlite3_free(sql);
    for (int i = 0; i < pa.n; i++)
        sqlite3_free(pa.val[i]);
    if (none)
        cur->eof = true;
    return rc;
}

static int vt_next(sqlite3_vtab_cursor *base)
{
    struct cursor *cur = (struct cursor *)base;
    cur->rowno++;
    if (!cur->res || ++cur->row < PQntuples(cur->res))
        return SQLITE_OK;
    if (cur->more)
        return cursor_fetch(cur);
    cur->eof = true;
    return SQLITE_OK;
}

static int vt_eof(sqlite3_vtab_cursor *base)
{
    struct cursor *cur = (struct cursor *)base;
    return cur->eof || !cur->res || cur->row >= PQntuples(cur->res);
}

static int vt_column(sqlite3_vtab_cursor *base, sqlite3_context *ctx, int col)
{
    struct cursor *cur = (struct cursor *)base;
    struct pgvt *vt = (struct pgvt *)base->pVtab;
    if (sqlite3_vtab_nochange(ctx))
        return SQLITE_OK; /* an UPDATE that does not set it: xUpdate skips it */
    if (col < 0 || col >= vt->t->ncols || cur->colpos[col] < 0 || !cur->res) {
        sqlite3_result_null(ctx);
        return SQLITE_OK;
    }
    int f = cur->colpos[col];
    if (PQgetisnull(cur->res, cur->row, f)) {
        sqlite3_result_null(ctx);
        return SQLITE_OK;
    }
    const char *s = PQgetvalue(cur->res, cur->row, f);
    int len = PQgetlength(cur->res, cur->row, f);
    switch (vt->t->cols[col].kind) {
    case KIND_INT: sqlite3_result_int64(ctx, strtoll(s, NULL, 10)); break;
    case KIND_BOOL: sqlite3_result_int(ctx, s[0] == 't'); break;
    case KIND_FLOAT:
    case KIND_FLT4: sqlite3_result_double(ctx, strtod(s, NULL)); break;
    case KIND_NUMERIC: pgv_result_numeric(ctx, s); break;
    case KIND_BYTEA: {
        size_t n = 0;
        unsigned char *b = PQunescapeBytea((const unsigned char *)s, &n);
        if (!b)
            return SQLITE_NOMEM;
        sqlite3_result_blob64(ctx, b, n, SQLITE_TRANSIENT);
        PQfreemem(b);
        break;
    }
    default: sqlite3_result_text(ctx, s, len, SQLITE_TRANSIENT);
    }
    return SQLITE_OK;
}

static int vt_rowid(sqlite3_vtab_cursor *base, sqlite3_int64 *rowid)
{
    struct cursor *cur = (struct cursor *)base;
    const struct pgtable *t = ((struct pgvt *)base->pVtab)->t;
    if (cur->rowidpos >= 0 && cur->res) {
        const char *s = PQgetvalue(cur->res, cur->row, cur->rowidpos);
        *rowid = t->keycol >= 0 ? strtoll(s, NULL, 10) : pgv_ctid_rowid(s);
    } else
        *rowid = cur->rowno;
    return SQLITE_OK;
}

/* ---- Connect ---------------------------------------------------------------- */

/* USING sqlmux_pg(NONCE, SLOT): the table is v->tables[SLOT] when NONCE is
 * this pgvtab's; otherwise a leftover of an earlier connection, declared
 * with one column so DROP TABLE works. */
static int vt_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out,
                      char **err)
{
    struct pgvtab *v = aux;
    struct pgtable *t = NULL;
    if (argc >= 5) {
        unsigned long nonce = strtoul(argv[3], NULL, 10);
        unsigned long slot = strtoul(argv[4], NULL, 10);
        if (nonce == v->nonce && slot < v->ntables)
            t = v->tables[slot];
    }
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendall(s, "CREATE TABLE x(");
    if (t) {
        for (int i = 0; i < t->ncols; i++)
            sqlite3_str_appendf(s, "%s\"%w\" %s", i ? ", " : "", t->cols[i].name, t->cols[i].decl);
        if (!t->ncols)
            sqlite3_str_appendall(s, "\"?column?\"");
    } else {
        sqlite3_str_appendall(s, "stale");
    }
    sqlite3_str_appendall(s, ")");
    char *decl = sqlite3_str_finish(s);
    if (!decl)
        return SQLITE_NOMEM;
    int rc = sqlite3_declare_vtab(db, decl);
    sqlite3_free(decl);
    if (rc != SQLITE_OK) {
        *err = sqlite3_mprintf("%s", sqlite3_errmsg(db));
        return rc;
    }
    sqlite3_vtab_config(db, SQLITE_VTAB_CONSTRAINT_SUPPORT, 1);
    struct pgvt *vt = sqlite3_malloc(sizeof *vt);
    if (!vt)
        return SQLITE_NOMEM;
    memset(vt, 0, sizeof *vt);
    vt->v = v;
    vt->t = t;
    *out = &vt->base;
    return SQLITE_OK;
}

/* Never touches v or t: a leftover may outlive them. */
static int vt_disconnect(sqlite3_vtab *tab)
{
    sqlite3_free(tab);
    return SQLITE_OK;
}

static const sqlite3_module pg_module = {
    .iVersion = 2,
    .xCreate = vt_connect,
    .xConnect = vt_connect,
    .xBestIndex = pgv_best_index,
    .xDisconnect = vt_disconnect,
    .xDestroy = vt_disconnect,
    .xOpen = vt_open,
    .xClose = vt_close,
    .xFilter = vt_filter,
    .xNext = vt_next,
    .xEof = vt_eof,
    .xColumn = vt_column,
    .xRowid = vt_rowid,
    .xUpdate = pgv_update,
    .xBegin = pgv_begin,
    .xSync = pgv_sync,
    .xCommit = pgv_commit,
    .xRollback = pgv_rollback,
    .xSavepoint = pgv_savepoint,
    .xRelease = pgv_release,
    .xRollbackTo = pgv_rollback_to,
};

/* ---- The public functions ---------------------------------------------------- */

struct pgvtab *pgvtab_open(sqlite3 *db, const struct config *cfg, pgvtab_conn_fn conn, void *arg)
{
    struct pgvtab *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->binds = calloc(cfg->nbinds ? cfg->nbinds : 1, sizeof *v->binds);
    if (!v->binds) {
        free(v);
        return NULL;
    }
    v->db = db;
    v->schema = "main";
    v->cfg = cfg;
    v->conn_fn = conn;
    v->conn_arg = arg;
    sqlite3_randomness(sizeof v->nonce, &v->nonce);
    v->nonce &= 0x7fffffff;
    if (sqlite3_create_module_v2(db, "sqlmux_pg", &pg_module, v, NULL) != SQLITE_OK) {
        free(v->binds);
        free(v);
        return NULL;
    }
    return v;
}

static int run_sql(sqlite3 *db, const char *sql, char **err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK && err) {
        if (asprintf(err, "%s", msg ? msg : sqlite3_errstr(rc)) < 0)
            *err = NULL;
    }
    sqlite3_free(msg);
    return rc;
}

int pgvtab_expose(struct pgvtab *v, size_t bind, const char *schema, const char *table, char *out,
                  size_t outlen, char **err)
{
    *err = NULL;
    if (!schema)
        schema = "";
    if (bind >= v->cfg->nbinds || v->cfg->binds[bind].type != BIND_POSTGRES) {
        *err = strdup("not a PostgreSQL bind");
        return -1;
    }
    for (size_t i = 0; i < v->ntables; i++) {
        const struct pgtable *t = v->tables[i];
        if (t->bind == bind && strcmp(t->schema_arg, schema) == 0 && strcmp(t->table_arg, table) == 0) {
            int n = snprintf(out, outlen, "\"%s\".\"%s\"", v->schema, t->sqlname);
            return n < 0 || (size_t)n >= outlen ? -1 : 0;
        }
    }
    v->sqlstate[0] = 0;
    PGconn *c = pgv_bind_conn(v, NULL, bind);
    if (!c) {
        if (asprintf(err, "PostgreSQL bind %s is unavailable", v->cfg->binds[bind].name) < 0)
            *err = NULL;
        return -1;
    }
    struct pgtable *t = catalog_read(v, c, bind, schema, table, err);
    if (!t)
        return -1;
    /* the same table by another spelling: one virtual table */
    for (size_t i = 0; i < v->ntables; i++) {
        if (strcmp(v->tables[i]->sqlname, t->sqlname) == 0) {
            sqlite3_free(t->schema_arg);
            sqlite3_free(t->table_arg);
            t->schema_arg = xstrdup(schema);
            t->table_arg = xstrdup(table);
            break;
        }
    }
    int n = snprintf(out, outlen, "\"%s\".\"%s\"", v->schema, t->sqlname);
    struct pgtable **grown = realloc(v->tables, sizeof *grown * (v->ntables + 1));
    if (n < 0 || (size_t)n >= outlen || !grown || !t->schema_arg || !t->table_arg) {
        if (grown)
            v->tables = grown;
        table_free(t);
        *err = strdup(grown ? "table name too long" : "out of memory");
        return -1;
    }
    v->tables = grown;
    size_t slot = v->ntables;
    v->tables[v->ntables++] = t;
    bool exists = false;
    for (size_t i = 0; i < slot; i++)
        exists = exists || strcmp(v->tables[i]->sqlname, t->sqlname) == 0;
    if (exists)
        return 0;
    /* a leftover in a main database kept on disk goes first */
    char *sql = sqlite3_mprintf("DROP TABLE IF EXISTS \"%w\".\"%w\";"
                                "CREATE VIRTUAL TABLE \"%w\".\"%w\" USING sqlmux_pg(%u, %llu)",
                                v->schema, t->sqlname, v->schema, t->sqlname, (unsigned)v->nonce,
                                (unsigned long long)slot);
    int rc = sql ? run_sql(v->db, sql, err) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        v->ntables--;
        table_free(t);
        if (!*err)
            *err = strdup("out of memory");
        return -1;
    }
    return 0;
}

void pgvtab_in_temp(struct pgvtab *v)
{
    v->schema = "temp";
}

void pgvtab_forget(struct pgvtab *v)
{
    for (size_t i = 0; i < v->ntables; i++) {
        bool first = true;
        for (size_t j = 0; j < i; j++)
            first = first && strcmp(v->tables[j]->sqlname, v->tables[i]->sqlname) != 0;
        if (first) {
            char *sql =
                sqlite3_mprintf("DROP TABLE IF EXISTS \"%w\".\"%w\"", v->schema, v->tables[i]->sqlname);
            if (sql)
                run_sql(v->db, sql, NULL);
            sqlite3_free(sql);
        }
    }
    for (size_t i = 0; i < v->ntables; i++)
        table_free(v->tables[i]);
    free(v->tables);
    v->tables = NULL;
    v->ntables = 0;
    /* tables SQLite could not drop (a statement still runs) become leftovers */
    v->nonce = (v->nonce + 1) & 0x7fffffff;
}

char *pgvtab_plan(struct pgvtab *v, sqlite3_stmt *stmt)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    char *sql = sqlite3_mprintf("EXPLAIN %s", sqlite3_sql(stmt));
    sqlite3_stmt *ex = NULL;
    if (sql && sqlite3_prepare_v2(v->db, sql, -1, &ex, NULL) == SQLITE_OK && ex) {
        while (sqlite3_step(ex) == SQLITE_ROW) {
            const char *opcode = (const char *)sqlite3_column_text(ex, 1);
            const char *p4 = (const char *)sqlite3_column_text(ex, 5);
            if (opcode && p4 && strcmp(opcode, "VFilter") == 0 && strncmp(p4, "pgv ", 4) == 0) {
                const char *nl = strchr(p4, '\n');
                if (nl)
                    sqlite3_str_appendf(s, "%s\n", nl + 1);
            }
        }
    }
    sqlite3_finalize(ex);
    sqlite3_free(sql);
    char *r = sqlite3_str_finish(s);
    char *out = strdup(r ? r : "");
    sqlite3_free(r);
    return out;
}

void pgvtab_set_outer(struct pgvtab *v, size_t bind, const char *schema, const char *table)
{
    const char *sqlname = NULL;
    for (size_t i = 0; table && i < v->ntables; i++) {
        const struct pgtable *t = v->tables[i];
        if (t->bind == bind && strcmp(t->schema_arg, schema ? schema : "") == 0 &&
            strcmp(t->table_arg, table) == 0)
            sqlname = t->sqlname;
    }
    /* every spelling of it: the virtual table uses the first */
    for (size_t i = 0; i < v->ntables; i++)
        if (!table || (sqlname && strcmp(v->tables[i]->sqlname, sqlname) == 0))
            v->tables[i]->outer = table != NULL;
}

const char *pgvtab_sqlstate(struct pgvtab *v)
{
    return v->sqlstate[0] ? v->sqlstate : NULL;
}

uint64_t pgvtab_rows_fetched(const struct pgvtab *v)
{
    return v->rows_fetched;
}

void pgvtab_close(struct pgvtab *v)
{
    if (!v)
        return;
    /* no virtual table or module of db may point at v afterwards */
    pgvtab_forget(v);
    sqlite3_create_module_v2(v->db, "sqlmux_pg", NULL, NULL, NULL);
    for (size_t i = 0; i < v->ntables; i++)
        table_free(v->tables[i]);
    free(v->tables);
    for (size_t i = 0; i < v->cfg->nbinds; i++)
        bind_reset(&v->binds[i]);
    free(v->binds);
    free(v);
}
