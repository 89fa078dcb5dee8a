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
 * Rows. A probe on the whole primary key, or a LIMIT of at most one batch,
 * runs as one PQexecParams. Anything else is a NO SCROLL cursor read with
 * FETCH in batches of FETCH_ROWS, so memory stays flat on huge tables and
 * other queries (a join's inner probes) can share the connection meanwhile.
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
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/pgvtab.h"

#define FETCH_ROWS    1000 /* rows per FETCH of a cursor */
#define PROBE_COST    25.0 /* estimatedCost of one round trip, in rows */
#define SQLSTATE_CONN "08006"
#define STMT_CACHE    32 /* named prepared statements kept per connection */

enum col_class { CLASS_NULL, CLASS_NUM, CLASS_TEXT, CLASS_BLOB };

/* How a column's values are read and compared. */
enum col_kind {
    KIND_INT,     /* int2, int4, int8: INTEGER */
    KIND_BOOL,    /* 0/1, compared as int4 */
    KIND_FLOAT,   /* float8: REAL (checked again by SQLite) */
    KIND_FLT4,    /* float4: REAL, never pushed */
    KIND_NUMERIC, /* numeric: INTEGER when integral and in range, else REAL */
    KIND_TEXT,    /* text, varchar, name with a deterministic collation */
    KIND_BYTEA,   /* BLOB */
    KIND_OTHER,   /* anything else: its text output, compared as text */
};

enum affinity { AFF_BLOB, AFF_TEXT, AFF_NUMERIC };

struct pgcol {
    char *name;  /* as in PostgreSQL */
    char *qname; /* quoted identifier */
    char *decl;  /* declared SQLite type */
    enum col_kind kind;
    enum affinity aff;
    bool hasdef; /* NULL on INSERT sends DEFAULT */
};

struct pgtable {
    size_t bind;
    char *schema_arg, *table_arg; /* as pgvtab_expose() got them */
    char *label;                  /* bind.schema.table, for .plan */
    char *qualified;              /* "schema"."table" for PostgreSQL */
    char *sqlname;                /* pg$bind$schema$table (unquoted) */
    struct pgcol *cols;
    int ncols;
    int *pk; /* column indexes of the primary key */
    int npk;
    bool writable; /* a plain table: a rowid addresses its rows */
    int keycol;    /* the integer primary key column that is the rowid, -1: ctid is */
    double rows;   /* reltuples, at least 1 */
};

/* A named prepared statement on a bind's connection (the probes of a join
 * skip PostgreSQL's parse and plan). */
struct pgstmt {
    char *sql; /* malloc'd */
    char name[32];
};

/* One PostgreSQL bind's connection as this module uses it. */
struct pgbind {
    PGconn *conn; /* the last one the callback gave; state resets when it changes */
    bool own_txn; /* this module sent BEGIN */
    int writers;  /* vtabs between xBegin and xCommit/xRollback */
    int cursors;  /* open cursors */
    int sp_depth; /* savepoints sqlmux_sp_0..sp_depth-1 exist */
    struct pgstmt stmts[STMT_CACHE];
    int nstmts;
};

struct pgvtab {
    sqlite3 *db;
    const struct config *cfg;
    pgvtab_conn_fn conn_fn;
    void *conn_arg;
    struct pgtable **tables;
    size_t ntables;
    struct pgbind *binds; /* [cfg->nbinds] */
    uint32_t nonce;       /* tells this pgvtab's tables from a leftover's */
    uint64_t cursor_seq;
    uint64_t stmt_seq;
    uint64_t rows_fetched;
    char sqlstate[6];
    char *conn_err; /* the conn callback's *err, freed at once */
};

struct pgvt {
    sqlite3_vtab base;
    struct pgvtab *v;
    struct pgtable *t; /* NULL: a leftover of an earlier connection (only DROP works) */
};

/* One pushed constraint. */
enum term_op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_ISNULL, OP_NOTNULL };

struct term {
    int col;
    enum term_op op;
    bool in; /* EQ over a whole IN list (sqlite3_vtab_in) */
};

#define MAX_TERMS 64

struct plan {
    uint64_t used; /* colUsed */
    bool unique;   /* every primary key column EQ: at most one row */
    int nterms;
    struct term terms[MAX_TERMS];
    int limit_arg, offset_arg; /* argv index, -1: none */
    int norder;
    int order_col[16];
    bool order_desc[16];
};

struct cursor {
    sqlite3_vtab_cursor base;
    PGconn *conn;
    struct pgbind *b;
    PGresult *res;
    int row;       /* current row of res */
    int *colpos;   /* colpos[col]: field in res, -1: not fetched */
    int rowidpos;  /* field of the rowid (key or ctid), -1 */
    char name[32]; /* cursor name, "" when the query ran directly */
    bool more;     /* the cursor may have more rows */
    bool eof;
    sqlite3_int64 rowno;
};

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

static void set_sqlstate(struct pgvtab *v, const char *state)
{
    snprintf(v->sqlstate, sizeof v->sqlstate, "%s", state && *state ? state : SQLSTATE_CONN);
}

/* Records a PostgreSQL failure (r may be NULL: the connection's error) as
 * the statement's error. Returns SQLITE_ERROR. */
static int pg_fail(struct pgvtab *v, sqlite3_vtab *vt, PGconn *c, const PGresult *r, const char *what)
{
    const char *msg = r ? PQresultErrorMessage(r) : NULL;
    if (!msg || !*msg)
        msg = c ? PQerrorMessage(c) : "no connection";
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!state && c && PQstatus(c) != CONNECTION_OK)
        state = SQLSTATE_CONN;
    set_sqlstate(v, state ? state : "XX000");
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
static int pg_command(struct pgvtab *v, sqlite3_vtab *vt, PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = SQLITE_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = pg_fail(v, vt, c, r, sql);
    PQclear(r);
    return rc;
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
static PGconn *bind_conn(struct pgvtab *v, sqlite3_vtab *vt, size_t bind)
{
    v->conn_err = NULL;
    PGconn *c = v->conn_fn(v->conn_arg, bind, &v->conn_err);
    if (!c) {
        set_sqlstate(v, "08001");
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
static PGresult *exec_cached(struct pgvtab *v, struct pgbind *b, PGconn *c, const char *sql, int n,
                             const char *const *vals)
{
    int i;
    for (i = 0; i < b->nstmts; i++)
        if (strcmp(b->stmts[i].sql, sql) == 0)
            break;
    if (i == b->nstmts) {
        struct pgstmt *st = &b->stmts[i];
        if (i == STMT_CACHE || !(st->sql = strdup(sql)))
            return PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
        snprintf(st->name, sizeof st->name, "sqlmux_pgv_s%" PRIu64, ++v->stmt_seq);
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

/* SQLite's rule for the affinity of a declared type (datatype3.html 3.1),
 * with REAL and INTEGER folded into NUMERIC (all convert text the same way
 * for a comparison). */
static enum affinity decl_affinity(const char *decl)
{
    char up[64];
    size_t i;
    for (i = 0; decl[i] && i + 1 < sizeof up; i++)
        up[i] = (char)(decl[i] >= 'a' && decl[i] <= 'z' ? decl[i] - 32 : decl[i]);
    up[i] = 0;
    if (strstr(up, "INT"))
        return AFF_NUMERIC;
    if (strstr(up, "CHAR") || strstr(up, "CLOB") || strstr(up, "TEXT"))
        return AFF_TEXT;
    if (strstr(up, "BLOB") || !*up)
        return AFF_BLOB;
    return AFF_NUMERIC;
}

static enum col_class kind_class(enum col_kind k)
{
    switch (k) {
    case KIND_TEXT:
    case KIND_OTHER: return CLASS_TEXT;
    case KIND_BYTEA: return CLASS_BLOB;
    default: return CLASS_NUM;
    }
}

/* Whether PostgreSQL decides a comparison exactly as SQLite would (the
 * constraint may be omitted). */
static bool kind_exact(enum col_kind k)
{
    return k != KIND_FLOAT && k != KIND_NUMERIC && k != KIND_FLT4;
}

/* Whether ORDER BY the column in PostgreSQL gives SQLite's order. */
static bool kind_orderable(enum col_kind k)
{
    return k == KIND_INT || k == KIND_BOOL || k == KIND_TEXT || k == KIND_BYTEA;
}

/* The column as PostgreSQL compares it. */
static void put_col_expr(sqlite3_str *s, const struct pgcol *c)
{
    switch (c->kind) {
    case KIND_BOOL: sqlite3_str_appendf(s, "%s::int4", c->qname); break;
    case KIND_OTHER: sqlite3_str_appendf(s, "%s::text", c->qname); break;
    default: sqlite3_str_appendall(s, c->qname);
    }
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

/* Kind and declared type of a column of PostgreSQL type `typname`
 * (format_type's text `fmt`), collation deterministic or not. */
static void col_type(struct pgcol *c, const char *typname, const char *fmt, bool deterministic)
{
    static const struct {
        const char *typname, *decl;
        enum col_kind kind;
    } map[] = {
        {"int2", "SMALLINT", KIND_INT},       {"int4", "INTEGER", KIND_INT},
        {"int8", "BIGINT", KIND_INT},         {"bool", "BOOLEAN", KIND_BOOL},
        {"float4", "REAL", KIND_FLT4},        {"float8", "DOUBLE PRECISION", KIND_FLOAT},
        {"numeric", "NUMERIC", KIND_NUMERIC}, {"text", "TEXT", KIND_TEXT},
        {"varchar", "VARCHAR", KIND_TEXT},    {"name", "TEXT", KIND_TEXT},
        {"bytea", "BLOB", KIND_BYTEA},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(typname, map[i].typname) == 0) {
            c->kind = map[i].kind;
            if (c->kind == KIND_TEXT && !deterministic)
                c->kind = KIND_OTHER;
            /* keep varchar(n) and numeric(p,s) as written */
            c->decl = (strcmp(typname, "varchar") == 0 || strcmp(typname, "numeric") == 0)
                          ? sqlite3_mprintf("%s", fmt)
                          : sqlite3_mprintf("%s", map[i].decl);
            break;
        }
    }
    if (!c->decl) {
        c->kind = KIND_OTHER;
        c->decl = sqlite3_mprintf("%s", fmt);
    }
    if (c->decl) {
        for (char *p = c->decl; *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 32);
    }
    c->aff = c->decl ? decl_affinity(c->decl) : AFF_BLOB;
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
        col_type(col, PQgetvalue(cols, i, 1), PQgetvalue(cols, i, 2), PQgetvalue(cols, i, 4)[0] == 't');
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
    pg_fail(v, NULL, c, r, "catalog");
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
        set_sqlstate(v, "42P01");
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

/* ---- Plans: idxStr's header and the SQL -------------------------------- */

/* The colUsed bit of column i (bit 63: every column from 63 on). */
static uint64_t col_bit(int i)
{
    return (uint64_t)1 << (i < 63 ? i : 63);
}

static const char *op_sql(enum term_op op)
{
    static const char *s[] = {"=", "<>", "<", "<=", ">", ">="};
    return s[op];
}

/* Decision for a value of the wrong class in xFilter: none, always true
 * (IS NOT NULL), always false (no query), or compare the column's UTF-8
 * bytes with a bytea (a text value PostgreSQL text cannot hold). */
enum term_fix { FIX_NONE, FIX_TRUE, FIX_FALSE, FIX_BYTES };

/* A parameter being built for xFilter. */
struct params {
    int n;
    char *val[MAX_TERMS + 2];
    const char *cast[MAX_TERMS + 2]; /* "int8", "float8", "text", "bytea", arrays */
};

/* Appends the query of plan p on table t. With params NULL: the template
 * ($n untyped), for .plan; else the casts of params and the fixes. */
static void plan_sql(sqlite3_str *s, const struct pgtable *t, const struct plan *p, const struct params *pa,
                     const enum term_fix *fix, const int *argno)
{
    int fields = 0;
    sqlite3_str_appendall(s, "SELECT ");
    for (int i = 0; i < t->ncols; i++) {
        if (p->used & col_bit(i)) {
            sqlite3_str_appendf(s, "%s%s", fields ? ", " : "", t->cols[i].qname);
            fields++;
        }
    }
    if (t->writable && !(t->keycol >= 0 && (p->used & col_bit(t->keycol))))
        sqlite3_str_appendf(s, "%s%s", fields++ ? ", " : "",
                            t->keycol >= 0 ? t->cols[t->keycol].qname : "ctid");
    if (!fields)
        sqlite3_str_appendall(s, "1");
    sqlite3_str_appendf(s, " FROM %s", t->qualified);
    int n = 0, k = 0;
    for (int i = 0; i < p->nterms; i++) {
        const struct term *tm = &p->terms[i];
        const struct pgcol *c = &t->cols[tm->col];
        sqlite3_str_appendall(s, n++ ? " AND " : " WHERE ");
        bool bytes = fix && fix[i] == FIX_BYTES;
        if (bytes)
            sqlite3_str_appendall(s, "convert_to(");
        put_col_expr(s, c);
        if (bytes)
            sqlite3_str_appendall(s, ", 'UTF8')");
        if (tm->op == OP_ISNULL) {
            sqlite3_str_appendall(s, " IS NULL");
            continue;
        }
        if (tm->op == OP_NOTNULL || (fix && fix[i] == FIX_TRUE)) {
            sqlite3_str_appendall(s, " IS NOT NULL");
            continue;
        }
        if (pa)
            k = argno[i] + 1;
        else
            k++;
        if (tm->in)
            sqlite3_str_appendf(s, " = ANY($%d", k);
        else
            sqlite3_str_appendf(s, " %s $%d", op_sql(tm->op), k);
        if (pa)
            sqlite3_str_appendf(s, "::%s", pa->cast[argno[i]]);
        if (tm->in)
            sqlite3_str_appendall(s, ")");
        else if (kind_class(c->kind) == CLASS_TEXT && tm->op != OP_EQ && tm->op != OP_NE && !bytes)
            sqlite3_str_appendall(s, " COLLATE \"C\"");
    }
    for (int i = 0; i < p->norder; i++) {
        const struct pgcol *c = &t->cols[p->order_col[i]];
        sqlite3_str_appendf(s, "%s%s%s%s", i ? ", " : " ORDER BY ", c->qname,
                            c->kind == KIND_TEXT ? " COLLATE \"C\"" : "",
                            p->order_desc[i] ? " DESC NULLS LAST" : " NULLS FIRST");
    }
    if (p->limit_arg >= 0) {
        if (pa)
            k = pa->n - (p->offset_arg >= 0 ? 1 : 0);
        else
            k++;
        sqlite3_str_appendf(s, " LIMIT $%d%s", k, pa ? "::int8" : "");
    }
    if (p->offset_arg >= 0) {
        if (pa)
            k = pa->n;
        else
            k++;
        sqlite3_str_appendf(s, " OFFSET $%d%s", k, pa ? "::int8" : "");
    }
}

/* idxStr: "pgv u=U m=HEX l=L o=O t=COL:OP:IN ... s=COL:DESC ...\nSQL". */
static char *plan_encode(const struct pgtable *t, const struct plan *p)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "pgv u=%d m=%llx l=%d o=%d", p->unique, (unsigned long long)p->used, p->limit_arg,
                        p->offset_arg);
    for (int i = 0; i < p->nterms; i++)
        sqlite3_str_appendf(s, " t=%d:%d:%d", p->terms[i].col, (int)p->terms[i].op, p->terms[i].in);
    for (int i = 0; i < p->norder; i++)
        sqlite3_str_appendf(s, " s=%d:%d", p->order_col[i], p->order_desc[i]);
    sqlite3_str_appendf(s, "\n%s: ", t->label);
    plan_sql(s, t, p, NULL, NULL, NULL);
    return sqlite3_str_finish(s);
}

static int plan_decode(const char *s, const struct pgtable *t, struct plan *p)
{
    memset(p, 0, sizeof *p);
    p->limit_arg = p->offset_arg = -1;
    if (!s || strncmp(s, "pgv ", 4) != 0)
        return -1;
    s += 4;
    while (*s && *s != '\n') {
        int a = 0, b = 0, c = 0, used = 0;
        unsigned long long m;
        if (sscanf(s, "u=%d%n", &a, &used) == 1)
            p->unique = a;
        else if (sscanf(s, "m=%llx%n", &m, &used) == 1)
            p->used = m;
        else if (sscanf(s, "l=%d%n", &a, &used) == 1)
            p->limit_arg = a;
        else if (sscanf(s, "o=%d%n", &a, &used) == 1)
            p->offset_arg = a;
        else if (sscanf(s, "t=%d:%d:%d%n", &a, &b, &c, &used) == 3 && p->nterms < MAX_TERMS && a >= 0 &&
                 a < t->ncols && b >= 0 && b <= OP_NOTNULL) {
            p->terms[p->nterms++] = (struct term){a, (enum term_op)b, c != 0};
        } else if (sscanf(s, "s=%d:%d%n", &a, &b, &used) == 2 && p->norder < 16 && a >= 0 && a < t->ncols) {
            p->order_col[p->norder] = a;
            p->order_desc[p->norder++] = b != 0;
        } else
            return -1;
        s += used;
        while (*s == ' ')
            s++;
    }
    return 0;
}

/* ---- xBestIndex ---------------------------------------------------------- */

static int vt_best_index(sqlite3_vtab *tab, sqlite3_index_info *info)
{
    struct pgvt *vt = (struct pgvt *)tab;
    const struct pgtable *t = vt->t;
    if (!t)
        return SQLITE_ERROR;
    struct plan p;
    memset(&p, 0, sizeof p);
    p.limit_arg = p.offset_arg = -1;
    p.used = (uint64_t)info->colUsed;
    int argc = 0;
    bool all_omitted = true;
    double sel = 1.0;
    bool pk_eq[64] = {false};
    int limit_i = -1, offset_i = -1;
    /* columns with a plain = (a join's probe): an IN list on them as well
     * would travel with every probe; SQLite checks it instead */
    uint64_t eq_cols = 0;
    bool in_pk = false;
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *ic = &info->aConstraint[i];
        if (ic->usable && ic->op == SQLITE_INDEX_CONSTRAINT_EQ && ic->iColumn >= 0 && ic->iColumn < 64 &&
            !sqlite3_vtab_in(info, i, -1))
            eq_cols |= (uint64_t)1 << ic->iColumn;
    }
    for (int i = 0; i < info->nConstraint; i++) {
        const struct sqlite3_index_constraint *ic = &info->aConstraint[i];
        if (ic->op == SQLITE_INDEX_CONSTRAINT_LIMIT || ic->op == SQLITE_INDEX_CONSTRAINT_OFFSET) {
            if (ic->usable)
                *(ic->op == SQLITE_INDEX_CONSTRAINT_LIMIT ? &limit_i : &offset_i) = i;
            continue;
        }
        if (!ic->usable) {
            all_omitted = false;
            continue;
        }
        if (ic->iColumn < 0 || ic->iColumn >= t->ncols || p.nterms >= MAX_TERMS) {
            all_omitted = false;
            continue;
        }
        const struct pgcol *c = &t->cols[ic->iColumn];
        enum term_op op;
        switch (ic->op) {
        case SQLITE_INDEX_CONSTRAINT_EQ: op = OP_EQ; break;
        case SQLITE_INDEX_CONSTRAINT_NE: op = OP_NE; break;
        case SQLITE_INDEX_CONSTRAINT_LT: op = OP_LT; break;
        case SQLITE_INDEX_CONSTRAINT_LE: op = OP_LE; break;
        case SQLITE_INDEX_CONSTRAINT_GT: op = OP_GT; break;
        case SQLITE_INDEX_CONSTRAINT_GE: op = OP_GE; break;
        case SQLITE_INDEX_CONSTRAINT_ISNULL: op = OP_ISNULL; break;
        case SQLITE_INDEX_CONSTRAINT_ISNOTNULL: op = OP_NOTNULL; break;
        default: all_omitted = false; continue;
        }
        if (c->kind == KIND_FLT4 || (op == OP_ISNULL && !kind_exact(c->kind))) {
            all_omitted = false;
            continue;
        }
        /* a text comparison under NOCASE or RTRIM is SQLite's alone */
        const char *coll = sqlite3_vtab_collation(info, i);
        if (kind_class(c->kind) == CLASS_TEXT && op != OP_ISNULL && op != OP_NOTNULL && coll &&
            sqlite3_stricmp(coll, "BINARY") != 0) {
            all_omitted = false;
            continue;
        }
        bool exact = kind_exact(c->kind);
        if (op == OP_EQ && ic->iColumn < 64 && (eq_cols >> ic->iColumn & 1) && sqlite3_vtab_in(info, i, -1)) {
            all_omitted = false;
            continue;
        }
        struct term *tm = &p.terms[p.nterms++];
        tm->col = ic->iColumn;
        tm->op = op;
        tm->in = op == OP_EQ && exact && sqlite3_vtab_in(info, i, -1) && sqlite3_vtab_in(info, i, 1);
        info->aConstraintUsage[i].argvIndex = ++argc;
        info->aConstraintUsage[i].omit = exact;
        if (!exact)
            all_omitted = false;
        switch (op) {
        case OP_EQ:
            sel *= tm->in ? 0.01 : 0.001;
            for (int k = 0; k < t->npk && k < 64; k++)
                if (t->pk[k] == tm->col && !tm->in)
                    pk_eq[k] = true;
            /* a key's IN list: as many rows as the list, which SQLite
             * guesses at 25 too; one query for all of them beats a probe
             * per key (a semi-join sends its keys in one array) */
            if (tm->in && t->npk == 1 && t->pk[0] == tm->col)
                in_pk = true;
            break;
        case OP_ISNULL: sel *= 0.01; break;
        case OP_NE:
        case OP_NOTNULL: sel *= 0.9; break;
        default: sel *= 0.3;
        }
    }
    p.unique = t->npk > 0;
    for (int k = 0; k < t->npk && k < 64; k++)
        p.unique = p.unique && pk_eq[k];

    /* ORDER BY, when PostgreSQL's order is SQLite's */
    bool order_ok = info->nOrderBy > 0 && info->nOrderBy <= 16;
    for (int i = 0; order_ok && i < info->nOrderBy; i++) {
        int col = info->aOrderBy[i].iColumn;
        order_ok = col >= 0 && col < t->ncols && kind_orderable(t->cols[col].kind);
    }
    if (order_ok && !p.unique) {
        for (int i = 0; i < info->nOrderBy; i++) {
            p.order_col[i] = info->aOrderBy[i].iColumn;
            p.order_desc[i] = info->aOrderBy[i].desc;
        }
        p.norder = info->nOrderBy;
        info->orderByConsumed = 1;
    }
    /* LIMIT/OFFSET only when SQLite checks nothing after us */
    if (all_omitted && (info->nOrderBy == 0 || info->orderByConsumed)) {
        if (limit_i >= 0) {
            info->aConstraintUsage[limit_i].argvIndex = ++argc;
            info->aConstraintUsage[limit_i].omit = 1;
            p.limit_arg = argc - 1;
        }
        if (offset_i >= 0 && limit_i >= 0) {
            info->aConstraintUsage[offset_i].argvIndex = ++argc;
            info->aConstraintUsage[offset_i].omit = 1;
            p.offset_arg = argc - 1;
        }
    }
    double rows = p.unique ? 1.0 : t->rows * sel;
    if (in_pk && rows > 25)
        rows = 25;
    if (rows < 1)
        rows = 1;
    if (p.limit_arg >= 0 && rows > 100)
        rows = 100;
    info->estimatedRows = (sqlite3_int64)rows;
    info->estimatedCost = PROBE_COST + rows + (p.norder ? 0 : (info->nOrderBy ? rows * 0.1 : 0));
    if (p.unique)
        info->idxFlags |= SQLITE_INDEX_SCAN_UNIQUE;
    info->idxStr = plan_encode(t, &p);
    if (!info->idxStr)
        return SQLITE_NOMEM;
    info->needToFreeIdxStr = 1;
    return SQLITE_OK;
}

/* ---- Values to parameters ------------------------------------------------ */

/* The class of `val` after the column's affinity, as SQLite compares it.
 * *conv gets a converted copy when one was needed (free it). */
static enum col_class value_class(const struct pgcol *c, sqlite3_value *val, sqlite3_value **conv)
{
    *conv = NULL;
    int type = sqlite3_value_type(val);
    if (type == SQLITE_TEXT && c->aff == AFF_NUMERIC) {
        sqlite3_value *d = sqlite3_value_dup(val);
        if (d) {
            type = sqlite3_value_numeric_type(d);
            *conv = d;
        }
    }
    switch (type) {
    case SQLITE_NULL: return CLASS_NULL;
    case SQLITE_INTEGER:
    case SQLITE_FLOAT: return c->aff == AFF_TEXT ? CLASS_TEXT : CLASS_NUM;
    case SQLITE_TEXT: return CLASS_TEXT;
    default: return CLASS_BLOB;
    }
}

/* Text of a number as PostgreSQL reads it; *cast "int8" or "float8". */
static char *num_text(sqlite3_value *val, const char **cast)
{
    if (sqlite3_value_type(val) == SQLITE_INTEGER) {
        *cast = "int8";
        return sqlite3_mprintf("%lld", (long long)sqlite3_value_int64(val));
    }
    double d = sqlite3_value_double(val);
    if (d == floor(d) && fabs(d) < 9.2e18) {
        *cast = "int8";
        return sqlite3_mprintf("%lld", (long long)d);
    }
    *cast = "float8";
    if (isinf(d))
        return sqlite3_mprintf("%s", d > 0 ? "Infinity" : "-Infinity");
    return sqlite3_mprintf("%!.17g", d);
}

/* bytes as bytea's hex input "\x0a1b". */
static char *hex_text(const unsigned char *p, int n)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendall(s, "\\x");
    for (int i = 0; i < n; i++)
        sqlite3_str_appendf(s, "%02x", p[i]);
    return sqlite3_str_finish(s);
}

/* The parameter text of a value of the column's class. */
static char *param_text(const struct pgcol *c, enum col_class cls, sqlite3_value *val, const char **cast)
{
    (void)c;
    switch (cls) {
    case CLASS_NUM: return num_text(val, cast);
    case CLASS_TEXT: *cast = "text"; return sqlite3_mprintf("%s", (const char *)sqlite3_value_text(val));
    default: *cast = "bytea"; return hex_text(sqlite3_value_blob(val), sqlite3_value_bytes(val));
    }
}

/* Whether a text value can be PostgreSQL text: valid UTF-8 (no overlong
 * forms, surrogates or code points past U+10FFFF) without NUL. SQLite
 * holds any bytes as text. */
static bool pg_text_ok(sqlite3_value *val)
{
    const unsigned char *s = sqlite3_value_text(val);
    size_t n = (size_t)sqlite3_value_bytes(val), i = 0;
    while (s && i < n) {
        unsigned c = s[i], min;
        size_t len;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0)
            len = 2, min = 0x80, c &= 0x1F;
        else if ((c & 0xF0) == 0xE0)
            len = 3, min = 0x800, c &= 0x0F;
        else if ((c & 0xF8) == 0xF0)
            len = 4, min = 0x10000, c &= 0x07;
        else
            return false;
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            c = c << 6 | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

/* An array literal element: "..." with \ and " escaped. */
static void put_array_elem(sqlite3_str *s, const char *v)
{
    sqlite3_str_appendchar(s, 1, '"');
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            sqlite3_str_appendchar(s, 1, '\\');
        sqlite3_str_appendchar(s, 1, *v);
    }
    sqlite3_str_appendchar(s, 1, '"');
}

/* The IN list of argv value `list` as an array parameter of the column's
 * class; *empty when no element can match. */
static int in_param(const struct pgcol *c, sqlite3_value *list, char **out, const char **cast, bool *empty)
{
    enum col_class want = kind_class(c->kind);
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_value *e = NULL;
    int n = 0;
    bool real = false;
    sqlite3_str_appendchar(s, 1, '{');
    int rc;
    for (rc = sqlite3_vtab_in_first(list, &e); rc == SQLITE_OK && e; rc = sqlite3_vtab_in_next(list, &e)) {
        sqlite3_value *conv;
        enum col_class cls = value_class(c, e, &conv);
        sqlite3_value *x = conv ? conv : e;
        if (cls == want && (cls != CLASS_TEXT || pg_text_ok(x))) { /* no PostgreSQL text equals it */
            const char *ec = NULL;
            char *txt = param_text(c, cls, x, &ec);
            if (!txt) {
                sqlite3_value_free(conv);
                rc = SQLITE_NOMEM;
                break;
            }
            if (n++)
                sqlite3_str_appendchar(s, 1, ',');
            put_array_elem(s, txt);
            real = real || strcmp(ec, "float8") == 0;
            sqlite3_free(txt);
        }
        sqlite3_value_free(conv);
    }
    sqlite3_str_appendchar(s, 1, '}');
    char *arr = sqlite3_str_finish(s);
    if (rc != SQLITE_OK && rc != SQLITE_DONE) {
        sqlite3_free(arr);
        return rc;
    }
    if (!arr)
        return SQLITE_NOMEM;
    *empty = n == 0;
    *out = arr;
    *cast = want == CLASS_NUM ? (real ? "float8[]" : "int8[]") : want == CLASS_TEXT ? "text[]" : "bytea[]";
    return SQLITE_OK;
}

/* What a comparison gives when the value's class differs from the
 * column's (SQLite: NULL < numbers < text < blobs). */
static enum term_fix mismatch(enum term_op op, enum col_class col, enum col_class val)
{
    if (val == CLASS_NULL)
        return FIX_FALSE;
    bool col_less = col < val;
    switch (op) {
    case OP_NE: return FIX_TRUE;
    case OP_EQ: return FIX_FALSE;
    case OP_LT:
    case OP_LE: return col_less ? FIX_TRUE : FIX_FALSE;
    default: return col_less ? FIX_FALSE : FIX_TRUE;
    }
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
            rc = pg_command(vt->v, &vt->base, c, sql);
        }
        cur->name[0] = 0;
        if (b->conn == c && b->cursors > 0 && --b->cursors == 0 && b->own_txn && b->writers == 0) {
            b->own_txn = false;
            if (alive) {
                int st = PQtransactionStatus(c);
                int r2 = pg_command(vt->v, &vt->base, c, st == PQTRANS_INTRANS ? "COMMIT" : "ROLLBACK");
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
        int rc = pg_fail(vt->v, &vt->base, cur->conn, cur->res, "FETCH");
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
    if (plan_decode(idxStr, t, &p) != 0) {
        vt->base.zErrMsg = sqlite3_mprintf("sqlmux_pg: bad plan");
        return SQLITE_ERROR;
    }
    cur->rowno = 0;

    /* parameters, in term order, then LIMIT and OFFSET */
    struct params pa;
    enum term_fix fix[MAX_TERMS];
    int argno[MAX_TERMS];
    memset(&pa, 0, sizeof pa);
    bool none = false; /* some term is always false: no query */
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
            bool empty;
            rc = in_param(c, val, &pa.val[pa.n], &pa.cast[pa.n], &empty);
            if (rc == SQLITE_OK) {
                argno[i] = pa.n++;
                none = none || empty;
            }
            continue;
        }
        sqlite3_value *conv;
        enum col_class cls = value_class(c, val, &conv);
        if (cls != kind_class(c->kind)) {
            fix[i] = mismatch(tm->op, kind_class(c->kind), cls);
            none = none || fix[i] == FIX_FALSE;
        } else if (cls == CLASS_TEXT && !pg_text_ok(conv ? conv : val)) {
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
                pa.val[pa.n] = hex_text(sqlite3_value_text(x), sqlite3_value_bytes(x));
                if (!pa.val[pa.n])
                    rc = SQLITE_NOMEM;
                else
                    argno[i] = pa.n++;
            }
        } else {
            pa.val[pa.n] = param_text(c, cls, conv ? conv : val, &pa.cast[pa.n]);
            if (!pa.val[pa.n])
                rc = SQLITE_NOMEM;
            else
                argno[i] = pa.n++;
        }
        sqlite3_value_free(conv);
    }
    long long limit = -1;
    if (p.limit_arg >= 0 && p.limit_arg < argc) {
        limit = sqlite3_value_int64(argv[p.limit_arg]);
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
        plan_sql(s, t, &p, &pa, fix, argno);
        sql = sqlite3_str_finish(s);
        if (!sql)
            rc = SQLITE_NOMEM;
    }
    /* where each column is in the result */
    int field = 0;
    for (int i = 0; i < t->ncols; i++)
        cur->colpos[i] = (p.used & col_bit(i)) ? field++ : -1;
    cur->rowidpos = !t->writable                                    ? -1
                    : t->keycol >= 0 && cur->colpos[t->keycol] >= 0 ? cur->colpos[t->keycol]
                                                                    : field;

    PGconn *c = NULL;
    if (rc == SQLITE_OK && !none) {
        c = bind_conn(v, &vt->base, t->bind);
        if (!c)
            rc = SQLITE_ERROR;
    }
    if (rc == SQLITE_OK && !none) {
        struct pgbind *b = &v->binds[t->bind];
        cur->conn = c;
        cur->b = b;
        bool direct = p.unique || (limit >= 0 && limit <= FETCH_ROWS);
        if (direct) {
            cur->res = exec_cached(v, b, c, sql, pa.n, (const char *const *)pa.val);
            cur->row = 0;
            if (PQresultStatus(cur->res) != PGRES_TUPLES_OK) {
                rc = pg_fail(v, &vt->base, c, cur->res, "query");
                PQclear(cur->res);
                cur->res = NULL;
            } else {
                v->rows_fetched += (uint64_t)PQntuples(cur->res);
                cur->eof = PQntuples(cur->res) == 0;
            }
        } else {
            if (PQtransactionStatus(c) == PQTRANS_IDLE) {
                rc = pg_command(v, &vt->base, c, "BEGIN");
                if (rc == SQLITE_OK)
                    b->own_txn = true;
            }
            if (rc == SQLITE_OK) {
                snprintf(cur->name, sizeof cur->name, "sqlmux_pgv_%" PRIu64, ++v->cursor_seq);
                char *decl = sqlite3_mprintf("DECLARE %s NO SCROLL CURSOR FOR %s", cur->name, sql);
                PGresult *r =
                    decl ? PQexecParams(c, decl, pa.n, NULL, (const char *const *)pa.val, NULL, NULL, 0)
                         : NULL;
                sqlite3_free(decl);
                if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                    rc = r ? pg_fail(v, &vt->base, c, r, "query") : SQLITE_NOMEM;
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

/* A numeric's text as SQLite's NUMERIC affinity would store it: an integer
 * when integral and in range, else a real; NaN is NULL. */
static void result_numeric(sqlite3_context *ctx, const char *s)
{
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (*end == 0 && errno == 0) {
        sqlite3_result_int64(ctx, i);
        return;
    }
    if (*end == '.') {
        const char *z = end + 1;
        while (*z == '0')
            z++;
        if (*z == 0 && errno == 0) {
            sqlite3_result_int64(ctx, i);
            return;
        }
    }
    double d = strtod(s, NULL);
    sqlite3_result_double(ctx, d); /* NaN becomes NULL in SQLite */
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
    case KIND_NUMERIC: result_numeric(ctx, s); break;
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

/* ctid "(block,offset)" <-> rowid block * 65536 + offset. */
static char *rowid_param(const struct pgtable *t, sqlite3_int64 r)
{
    if (t->keycol >= 0)
        return sqlite3_mprintf("%lld", (long long)r);
    return sqlite3_mprintf("(%lld,%lld)", (long long)(r / 65536), (long long)(r % 65536));
}

/* " WHERE <the row is rowid $n>" */
static void put_rowid_where(sqlite3_str *s, const struct pgtable *t, int n)
{
    if (t->keycol >= 0)
        sqlite3_str_appendf(s, " WHERE %s = $%d::int8", t->cols[t->keycol].qname, n);
    else
        sqlite3_str_appendf(s, " WHERE ctid = $%d::tid", n);
}

static sqlite3_int64 ctid_rowid(const char *s)
{
    unsigned long long blk = 0, off = 0;
    if (sscanf(s, "(%llu,%llu)", &blk, &off) != 2)
        return -1;
    return (sqlite3_int64)(blk * 65536 + off);
}

static int vt_rowid(sqlite3_vtab_cursor *base, sqlite3_int64 *rowid)
{
    struct cursor *cur = (struct cursor *)base;
    const struct pgtable *t = ((struct pgvt *)base->pVtab)->t;
    if (cur->rowidpos >= 0 && cur->res) {
        const char *s = PQgetvalue(cur->res, cur->row, cur->rowidpos);
        *rowid = t->keycol >= 0 ? strtoll(s, NULL, 10) : ctid_rowid(s);
    } else
        *rowid = cur->rowno;
    return SQLITE_OK;
}

/* ---- Writes and transactions -------------------------------------------- */

/* A column value as a text parameter (NULL: SQL NULL). */
static char *write_text(const struct pgcol *c, sqlite3_value *val)
{
    switch (sqlite3_value_type(val)) {
    case SQLITE_NULL: return NULL;
    case SQLITE_INTEGER:
    case SQLITE_FLOAT:
        if (c->kind != KIND_BYTEA) {
            const char *cast;
            return num_text(val, &cast);
        }
        break;
    default: break;
    }
    if (c->kind == KIND_BYTEA)
        return hex_text(sqlite3_value_blob(val), sqlite3_value_bytes(val));
    return sqlite3_mprintf("%.*s", sqlite3_value_bytes(val), (const char *)sqlite3_value_text(val));
}

static int vt_update(sqlite3_vtab *tab, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    struct pgvt *vt = (struct pgvt *)tab;
    struct pgvtab *v = vt->v;
    const struct pgtable *t = vt->t;
    if (!t->writable) {
        sqlite3_free(tab->zErrMsg);
        tab->zErrMsg = sqlite3_mprintf("%s is not a plain PostgreSQL table: read-only here", t->label);
        return SQLITE_READONLY;
    }
    PGconn *c = bind_conn(v, tab, t->bind);
    if (!c)
        return SQLITE_ERROR;
    sqlite3_str *s = sqlite3_str_new(NULL);
    char **vals = sqlite3_malloc64(sizeof *vals * (size_t)(t->ncols + 2));
    int n = 0, rc = SQLITE_OK;
    if (!vals) {
        sqlite3_free(sqlite3_str_finish(s));
        return SQLITE_NOMEM;
    }
    bool expect_row = true;
    if (argc == 1) { /* DELETE */
        vals[n++] = rowid_param(t, sqlite3_value_int64(argv[0]));
        sqlite3_str_appendf(s, "DELETE FROM %s", t->qualified);
        put_rowid_where(s, t, 1);
    } else if (sqlite3_value_type(argv[0]) == SQLITE_NULL) { /* INSERT */
        sqlite3_str_appendf(s, "INSERT INTO %s (", t->qualified);
        for (int i = 0; i < t->ncols; i++)
            sqlite3_str_appendf(s, "%s%s", i ? ", " : "", t->cols[i].qname);
        sqlite3_str_appendall(s, t->ncols ? ") VALUES (" : ") DEFAULT VALUES");
        for (int i = 0; i < t->ncols; i++) {
            sqlite3_value *val = argv[2 + i];
            if (sqlite3_value_type(val) == SQLITE_NULL && t->cols[i].hasdef) {
                sqlite3_str_appendf(s, "%sDEFAULT", i ? ", " : "");
                continue;
            }
            vals[n] = write_text(&t->cols[i], val);
            sqlite3_str_appendf(s, "%s$%d", i ? ", " : "", ++n);
        }
        sqlite3_str_appendf(s, "%s RETURNING %s", t->ncols ? ")" : "",
                            t->keycol >= 0 ? t->cols[t->keycol].qname : "ctid");
    } else { /* UPDATE */
        if (sqlite3_value_int64(argv[0]) != sqlite3_value_int64(argv[1])) {
            sqlite3_free(sqlite3_str_finish(s));
            sqlite3_free(vals);
            tab->zErrMsg =
                sqlite3_mprintf("the rowid of a PostgreSQL row cannot be set (change its key column)");
            return SQLITE_CONSTRAINT;
        }
        sqlite3_str_appendf(s, "UPDATE %s SET ", t->qualified);
        int set = 0;
        for (int i = 0; i < t->ncols; i++) {
            if (sqlite3_value_nochange(argv[2 + i]))
                continue;
            vals[n] = write_text(&t->cols[i], argv[2 + i]);
            sqlite3_str_appendf(s, "%s%s = $%d", set++ ? ", " : "", t->cols[i].qname, ++n);
        }
        vals[n] = rowid_param(t, sqlite3_value_int64(argv[0]));
        put_rowid_where(s, t, ++n);
        if (!set)
            expect_row = false;
    }
    char *sql = sqlite3_str_finish(s);
    if (!sql)
        rc = SQLITE_NOMEM;
    if (rc == SQLITE_OK && expect_row) {
        PGresult *r = PQexecParams(c, sql, n, NULL, (const char *const *)vals, NULL, NULL, 0);
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            rc = pg_fail(v, tab, c, r,
                         argc == 1                                    ? "DELETE"
                         : sqlite3_value_type(argv[0]) == SQLITE_NULL ? "INSERT"
                                                                      : "UPDATE");
            if (rc == SQLITE_ERROR && PQresultErrorField(r, PG_DIAG_SQLSTATE) &&
                strncmp(PQresultErrorField(r, PG_DIAG_SQLSTATE), "23", 2) == 0)
                rc = SQLITE_CONSTRAINT;
        } else if (strcmp(PQcmdTuples(r), "1") != 0) {
            set_sqlstate(v, "40001");
            sqlite3_free(tab->zErrMsg);
            tab->zErrMsg = sqlite3_mprintf("PostgreSQL: the row of %s was changed or deleted by another "
                                           "transaction meanwhile",
                                           t->label);
            rc = SQLITE_ERROR;
        } else if (argc > 1 && sqlite3_value_type(argv[0]) == SQLITE_NULL) {
            const char *got = PQgetvalue(r, 0, 0);
            *rowid = t->keycol >= 0 ? strtoll(got, NULL, 10) : ctid_rowid(got);
        }
        PQclear(r);
    }
    sqlite3_free(sql);
    for (int i = 0; i < n; i++)
        sqlite3_free(vals[i]);
    sqlite3_free(vals);
    return rc;
}

static int vt_begin(sqlite3_vtab *tab)
{
    struct pgvt *vt = (struct pgvt *)tab;
    struct pgvtab *v = vt->v;
    v->sqlstate[0] = 0;
    PGconn *c = bind_conn(v, tab, vt->t->bind);
    if (!c)
        return SQLITE_ERROR;
    struct pgbind *b = &v->binds[vt->t->bind];
    if (PQtransactionStatus(c) == PQTRANS_IDLE) {
        int rc = pg_command(v, tab, c, "BEGIN");
        if (rc != SQLITE_OK)
            return rc;
        b->own_txn = true;
    }
    b->writers++;
    return SQLITE_OK;
}

/* Phase one: commits the module's own transaction (its error still stops
 * SQLite's commit); a transaction the caller opened is the caller's. */
static int vt_sync(sqlite3_vtab *tab)
{
    struct pgvt *vt = (struct pgvt *)tab;
    struct pgbind *b = &vt->v->binds[vt->t->bind];
    if (!b->own_txn || !b->conn)
        return SQLITE_OK;
    b->own_txn = false;
    b->sp_depth = 0;
    return pg_command(vt->v, tab, b->conn, "COMMIT");
}

static int vt_commit(sqlite3_vtab *tab)
{
    struct pgvt *vt = (struct pgvt *)tab;
    struct pgbind *b = &vt->v->binds[vt->t->bind];
    if (b->writers > 0)
        b->writers--;
    return SQLITE_OK;
}

static int vt_rollback(sqlite3_vtab *tab)
{
    struct pgvt *vt = (struct pgvt *)tab;
    struct pgbind *b = &vt->v->binds[vt->t->bind];
    int rc = SQLITE_OK;
    if (b->writers > 0)
        b->writers--;
    if (b->own_txn && b->conn) {
        b->own_txn = false;
        b->sp_depth = 0;
        if (PQstatus(b->conn) == CONNECTION_OK)
            rc = pg_command(vt->v, tab, b->conn, "ROLLBACK");
    }
    return rc;
}

/* Savepoint `i` (SQLite's numbering) on the bind: 0 = SAVEPOINT,
 * 1 = RELEASE, 2 = ROLLBACK TO. */
static int savepoint(sqlite3_vtab *tab, int i, int what)
{
    struct pgvt *vt = (struct pgvt *)tab;
    struct pgbind *b = &vt->v->binds[vt->t->bind];
    if (!b->conn || PQtransactionStatus(b->conn) == PQTRANS_IDLE)
        return SQLITE_OK;
    char sql[64];
    if (what == 0) {
        if (b->sp_depth > i)
            return SQLITE_OK; /* another vtab of the bind made it */
        snprintf(sql, sizeof sql, "SAVEPOINT sqlmux_sp_%d", i);
        b->sp_depth = i + 1;
    } else {
        if (b->sp_depth <= i)
            return SQLITE_OK;
        snprintf(sql, sizeof sql, "%s sqlmux_sp_%d", what == 1 ? "RELEASE" : "ROLLBACK TO", i);
        b->sp_depth = what == 1 ? i : i + 1;
    }
    return pg_command(vt->v, tab, b->conn, sql);
}

static int vt_savepoint(sqlite3_vtab *tab, int i)
{
    return savepoint(tab, i, 0);
}

static int vt_release(sqlite3_vtab *tab, int i)
{
    return savepoint(tab, i, 1);
}

static int vt_rollback_to(sqlite3_vtab *tab, int i)
{
    return savepoint(tab, i, 2);
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
    .xBestIndex = vt_best_index,
    .xDisconnect = vt_disconnect,
    .xDestroy = vt_disconnect,
    .xOpen = vt_open,
    .xClose = vt_close,
    .xFilter = vt_filter,
    .xNext = vt_next,
    .xEof = vt_eof,
    .xColumn = vt_column,
    .xRowid = vt_rowid,
    .xUpdate = vt_update,
    .xBegin = vt_begin,
    .xSync = vt_sync,
    .xCommit = vt_commit,
    .xRollback = vt_rollback,
    .xSavepoint = vt_savepoint,
    .xRelease = vt_release,
    .xRollbackTo = vt_rollback_to,
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
            int n = snprintf(out, outlen, "\"main\".\"%s\"", t->sqlname);
            return n < 0 || (size_t)n >= outlen ? -1 : 0;
        }
    }
    v->sqlstate[0] = 0;
    PGconn *c = bind_conn(v, NULL, bind);
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
    int n = snprintf(out, outlen, "\"main\".\"%s\"", t->sqlname);
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
    char *sql = sqlite3_mprintf("DROP TABLE IF EXISTS \"main\".\"%w\";"
                                "CREATE VIRTUAL TABLE \"main\".\"%w\" USING sqlmux_pg(%u, %llu)",
                                t->sqlname, t->sqlname, (unsigned)v->nonce, (unsigned long long)slot);
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

void pgvtab_forget(struct pgvtab *v)
{
    for (size_t i = 0; i < v->ntables; i++) {
        bool first = true;
        for (size_t j = 0; j < i; j++)
            first = first && strcmp(v->tables[j]->sqlname, v->tables[i]->sqlname) != 0;
        if (first) {
            char *sql = sqlite3_mprintf("DROP TABLE IF EXISTS \"main\".\"%w\"", v->tables[i]->sqlname);
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
