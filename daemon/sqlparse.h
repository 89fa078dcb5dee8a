/*
 * The SQL analysis behind routing: which tables a statement references and what
 * kind of statement it is. It is pure (no I/O, no config, no globals) so
 * the daemon, the fuzzers and the unit tests share it. Mapping tables to
 * binds is route_table_bind() in route.h, which combines both.
 */
#ifndef SQLMUX_DAEMON_SQLPARSE_H
#define SQLMUX_DAEMON_SQLPARSE_H

#include <stdbool.h>
#include <stddef.h>

enum stmt_kind {
    STMT_OTHER,  /* anything not listed below */
    STMT_SELECT, /* SELECT, VALUES, WITH ... SELECT */
    STMT_INSERT, /* INSERT, REPLACE, WITH ... INSERT */
    STMT_UPDATE,
    STMT_DELETE,
    STMT_DDL,       /* CREATE, DROP, ALTER */
    STMT_BEGIN,     /* BEGIN [DEFERRED|IMMEDIATE|EXCLUSIVE] [TRANSACTION], START TRANSACTION */
    STMT_COMMIT,    /* COMMIT, END [TRANSACTION] */
    STMT_ROLLBACK,  /* ROLLBACK [TRANSACTION] (not ROLLBACK TO) */
    STMT_SAVEPOINT, /* SAVEPOINT, RELEASE, ROLLBACK TO */
    STMT_PRAGMA,
    STMT_ATTACH,
    STMT_DETACH,
    STMT_VACUUM,
    STMT_EXPLAIN, /* EXPLAIN [QUERY PLAN] <stmt>: tables are the inner statement's */
};

/* Facts about a statement, or-ed into route_info.flags. */
enum {
    ROUTE_VACUUM_INTO = 1u << 0, /* VACUUM ... INTO 'file' */
    ROUTE_TEMP = 1u << 1,        /* CREATE TEMP/TEMPORARY TABLE|VIEW|TRIGGER|INDEX */
    ROUTE_RENAME = 1u << 2,      /* ALTER TABLE|VIEW old RENAME TO new: tables[] has both */
    ROUTE_BEGIN_WRITE = 1u << 3, /* BEGIN IMMEDIATE or EXCLUSIVE: asks for the write lock */
    ROUTE_STRING_NAME = 1u << 4, /* a name is written as a 'string' (FROM 'kv'): its
                                    value routes, so the decision is cached by text only */
};

/* One referenced table. Names are unquoted and ASCII-lowercased; schema is
 * "" when the name is not qualified. Both point into route_info.names. */
struct route_table {
    const char *schema;
    const char *name;
};

/* What a statement does with a table at one of its references. */
enum ref_role {
    REF_READ,       /* read (FROM, JOIN, IN table, subqueries, ...) */
    REF_WRITE,      /* the target of INSERT/REPLACE/UPDATE/DELETE (UPSERT
                       too), or the object CREATE TABLE/VIEW makes */
    REF_REFERENCES, /* named by a REFERENCES clause (a foreign key) */
};

/* One place the statement names a table: sql[pos..pos+len) is the whole
 * possibly qualified name as written ("a"."b", main.t, t), table its index
 * in route_info.tables. References to CTE names are not listed. */
struct route_ref {
    size_t pos, len;
    size_t table;
    enum ref_role role;
    unsigned char flags; /* REF_F_* */
};

/* Facts about a reference's place in the text, for rewriting it. */
enum {
    REF_F_ALIASED = 1, /* an alias follows ([AS] name): the statement names the table by it */
    REF_F_NOALIAS = 2, /* no alias may follow here ("x IN t", DDL heads, REFERENCES) */
};

/* The result of sqlparse_analyze(). Owned by the caller; release with
 * sqlparse_info_free(). */
struct route_info {
    enum stmt_kind kind;
    unsigned flags;
    size_t ntables; /* distinct tables, in order of first use */
    struct route_table *tables;
    char *names;  /* storage for the strings in tables[] */
    size_t nrefs; /* every reference, in text order */
    struct route_ref *refs;
    size_t target;   /* index in tables[] of the statement's write target
                        (REF_WRITE at top level), or SIZE_MAX: none */
    size_t nparams;  /* placeholders seen (?, ?NNN, :x, @x, $x) */
    char error[200]; /* message when sqlparse_analyze() fails */
};

enum {
    SQLPARSE_OK = 0,
    SQLPARSE_ESYNTAX = -1, /* cannot be tokenized / no statement; error[] says why */
    SQLPARSE_EMULTI = -2,  /* more than one statement */
    SQLPARSE_ENOMEM = -3,
};

/*
 * Analyze sql[0..len) (need not be NUL-terminated). Finds every table the
 * statement references: FROM/JOIN lists with aliases and comma joins,
 * subqueries at any depth, INSERT/REPLACE targets, UPDATE (and UPDATE ...
 * FROM), DELETE, CREATE/DROP/ALTER TABLE and VIEW, CREATE INDEX ... ON,
 * REFERENCES, trigger bodies, PRAGMA table_info(t) and friends. CTE names
 * (WITH, WITH RECURSIVE) and table-valued functions are not tables.
 * A trailing ';' and comments are fine. Returns SQLPARSE_OK or a negative
 * SQLPARSE_E* code with out->error set. out is always initialized and must
 * be freed with sqlparse_info_free().
 */
__attribute__((warn_unused_result)) int sqlparse_analyze(const char *sql, size_t len, struct route_info *out);

void sqlparse_info_free(struct route_info *ri);

/*
 * Where a statement puts what it creates or reads by SQLite's schema
 * `main`: the name after CREATE [UNIQUE] TABLE/INDEX/VIEW/TRIGGER or
 * CREATE VIRTUAL TABLE [IF NOT EXISTS] (no TEMP), and the schema of
 * "PRAGMA main.x". true with sql[*pos..*pos+*del) to replace by a schema:
 * *del 0 when the name is unqualified (insert `schema.` there), else the
 * length of the "main" to replace. false when the statement names its
 * schema otherwise, or is none of these. Pure; any thread.
 */
bool sqlparse_main_slot(const char *sql, size_t len, size_t *pos, size_t *del);

/* Name of a statement kind, for logs and tests: "select", "begin", ... */
const char *sqlparse_kind_name(enum stmt_kind kind);

#endif
