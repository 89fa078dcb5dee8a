/*
 * What the pieces of the `sqlmux_pg` module share (private to
 * daemon/pgvtab*.c): the module's state, tables, plans and cursors, and the
 * functions one piece calls in another. pgvtab.c: the module, connections,
 * the catalog and the cursors; pgvtab_plan.c: xBestIndex and the SQL of a
 * plan; pgvtab_values.c: type mapping and value conversions;
 * pgvtab_write.c: writes, transactions and savepoints.
 */
#ifndef SQLMUX_DAEMON_PGVTAB_INT_H
#define SQLMUX_DAEMON_PGVTAB_INT_H

#include <stdbool.h>
#include <stdint.h>

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
    bool outer;    /* pgvtab_set_outer() */
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
    const char *schema;   /* where its virtual tables live: "main", or "temp" (pgvtab_in_temp) */
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
    bool in;    /* EQ over a whole IN list (sqlite3_vtab_in) */
    bool loose; /* a text column against a value whose affinity is unknown (SQLite checks it) */
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

/* Decision for a value of the wrong class in xFilter: none, always true
 * (IS NOT NULL), always false (no query), or compare the column's UTF-8
 * bytes with a bytea (a text value PostgreSQL text cannot hold). For a
 * loose term: its text or any text looking like a number (FIX_NUMLIKE,
 * for = of a number, < and <=), or not sent (FIX_SKIP); SQLite checks. */
enum term_fix { FIX_NONE, FIX_TRUE, FIX_FALSE, FIX_BYTES, FIX_NUMLIKE, FIX_SKIP };

/* A parameter being built for xFilter. */
struct params {
    int n;
    char *val[MAX_TERMS + 2];
    const char *cast[MAX_TERMS + 2]; /* "int8", "float8", "text", "bytea", arrays */
};

/* pgvtab.c: connections and errors */
void pgv_set_sqlstate(struct pgvtab *v, const char *state);
int pgv_pg_fail(struct pgvtab *v, sqlite3_vtab *vt, PGconn *c, const PGresult *r, const char *what);
int pgv_pg_command(struct pgvtab *v, sqlite3_vtab *vt, PGconn *c, const char *sql);
PGconn *pgv_bind_conn(struct pgvtab *v, sqlite3_vtab *vt, size_t bind);

/* pgvtab_plan.c: xBestIndex and the SQL of a plan */
uint64_t pgv_col_bit(int i);
void pgv_plan_sql(sqlite3_str *s, const struct pgtable *t, const struct plan *p, const struct params *pa,
                  const enum term_fix *fix, const int *argno);
int pgv_plan_decode(const char *s, const struct pgtable *t, struct plan *p);
int pgv_best_index(sqlite3_vtab *tab, sqlite3_index_info *info);

/* pgvtab_values.c: type mapping */
enum col_class pgv_kind_class(enum col_kind k);
bool pgv_kind_exact(enum col_kind k);
bool pgv_kind_orderable(enum col_kind k);
void pgv_put_col_expr(sqlite3_str *s, const struct pgcol *c);
void pgv_col_type(struct pgcol *c, const char *typname, const char *fmt, bool deterministic);

/* pgvtab_values.c: values between SQLite and PostgreSQL */
enum col_class pgv_value_class(const struct pgcol *c, sqlite3_value *val, sqlite3_value **conv);
char *pgv_hex_text(const unsigned char *p, int n);
char *pgv_param_text(const struct pgcol *c, enum col_class cls, sqlite3_value *val, const char **cast);
bool pgv_pg_text_ok(sqlite3_value *val);
int pgv_in_param(const struct pgcol *c, sqlite3_value *list, char **out, const char **cast, int *count,
                 bool *numbers);
enum term_fix pgv_mismatch(enum term_op op, enum col_class col, enum col_class val);
void pgv_result_numeric(sqlite3_context *ctx, const char *s);
char *pgv_rowid_param(const struct pgtable *t, sqlite3_int64 r);
sqlite3_int64 pgv_ctid_rowid(const char *s);
char *pgv_write_text(const struct pgcol *c, sqlite3_value *val);

/* pgvtab_write.c: xUpdate, transactions and savepoints */
int pgv_update(sqlite3_vtab *tab, int argc, sqlite3_value **argv, sqlite3_int64 *rowid);
int pgv_begin(sqlite3_vtab *tab);
int pgv_sync(sqlite3_vtab *tab);
int pgv_commit(sqlite3_vtab *tab);
int pgv_rollback(sqlite3_vtab *tab);
int pgv_savepoint(sqlite3_vtab *tab, int i);
int pgv_release(sqlite3_vtab *tab, int i);
int pgv_rollback_to(sqlite3_vtab *tab, int i);

#endif
