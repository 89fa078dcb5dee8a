/*
 * Internal to the SQL analysis (sqlparse.c, sqlparse_heads.c,
 * sqlparse_names.c), not for other modules: the parser state the files
 * share, and the helpers each lends the others (prefix sp_). See sqlparse.c
 * for what the analysis promises.
 */
#ifndef SQLMUX_DAEMON_SQLPARSE_INT_H
#define SQLMUX_DAEMON_SQLPARSE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/sqllex.h"
#include "daemon/sqlparse.h"

enum {
    MAX_DEPTH = 1000,  /* nested parentheses */
    MAX_PARAM = 65535, /* highest parameter number (PostgreSQL's limit) */
    MAX_NAMES = 16384, /* distinct tables + CTE names + named parameters */
    LOOKAHEAD = 4,     /* tokens the state machine may peek at */
    LINEAR_NAMES = 8,  /* name lookups scan linearly up to this many */
};

/* Keyword properties. KF_RESERVED: never a bare table name or alias.
 * KF_NOALIAS: may name a table but cannot be an alias, because it can
 * follow a table reference. KF_FUNC: "kw(" is a function call. */
enum { KF_RESERVED = 1, KF_NOALIAS = 2, KF_FUNC = 4 };

/* The table is laid out by hand. */
// clang-format off
/* Only the words the analysis reacts to, in ASCII order (binary search). */
#define KEYWORDS(X)                                                          \
    X(ABORT, 0) X(AFTER, 0) X(ALL, R) X(ALTER, R) X(ANALYZE, 0) X(AND, R)    \
    X(ANY, R) X(AS, R) X(ATTACH, 0) X(BEFORE, 0) X(BEGIN, A)                 \
    X(BETWEEN, R) X(BY, A) X(CASE, R) X(CAST, A | F) X(COLLATE, R)           \
    X(COMMIT, 0) X(CONCURRENTLY, 0) X(CONSTRAINT, R) X(COPY, 0)              \
    X(CREATE, R) X(CROSS, R) X(DEFAULT, R) X(DELETE, R) X(DETACH, 0)         \
    X(DISTINCT, R) X(DO, A) X(DROP, R) X(ELSE, R) X(END, A) X(ESCAPE, R)     \
    X(EXCEPT, R) X(EXISTS, R) X(EXPLAIN, 0) X(FETCH, A) X(FOR, A)            \
    X(FOREIGN, R) X(FROM, R) X(FULL, R) X(FUNCTION, 0) X(GLOB, A)            \
    X(GLOBAL, 0) X(GRANT, 0) X(GROUP, R) X(HAVING, R) X(IF, 0) X(IN, R)      \
    X(INDEX, R) X(INDEXED, R) X(INNER, R) X(INSERT, R) X(INTERSECT, R)       \
    X(INTO, R) X(IS, R) X(ISNULL, R) X(JOIN, R) X(LATERAL, A)                \
    X(LEFT, R | F) X(LIKE, A | F) X(LIMIT, R) X(LOCAL, 0) X(LOCK, 0)         \
    X(MATCH, A) X(MATERIALIZED, 0) X(MOVE, 0) X(NATURAL, R) X(NOT, R)        \
    X(NOTNULL, R) X(NULL, R) X(OF, 0) X(OFFSET, A) X(ON, R) X(ONLY, 0)       \
    X(OR, R) X(ORDER, R) X(ORDINALITY, R) X(OUTER, R) X(PLAN, 0)             \
    X(PRAGMA, 0) X(PRIMARY, R) X(PROCEDURE, 0) X(QUERY, 0) X(RECURSIVE, 0)   \
    X(REFERENCES, R) X(REGEXP, A) X(REINDEX, 0) X(RELEASE, 0)                \
    X(REPLACE, F) X(RETURNING, R) X(REVOKE, 0) X(RIGHT, R | F)               \
    X(ROLLBACK, 0) X(SAVEPOINT, 0) X(SELECT, R) X(SET, R) X(SOME, R)         \
    X(START, 0) X(TABLE, R) X(TABLESAMPLE, A) X(TEMP, 0) X(TEMPORARY, 0)     \
    X(THEN, R) X(TO, R) X(TRANSACTION, 0) X(TRIGGER, 0) X(TRUNCATE, 0)       \
    X(UNION, R) X(UNIQUE, R) X(UNLOGGED, 0) X(UPDATE, R) X(USING, R)         \
    X(VACUUM, 0) X(VALUES, R) X(VERBOSE, 0) X(VIEW, 0) X(VIRTUAL, 0)         \
    X(WHEN, R) X(WHERE, R) X(WINDOW, A) X(WITH, A) X(WITHOUT, A) X(WORK, 0)
// clang-format on

#define KW_ENUM(name, flags) KW_##name,
enum keyword { KW_NONE, KEYWORDS(KW_ENUM) KW_COUNT };
#undef KW_ENUM

/* ------------------------------------------------------------------ */
/* Parser state                                                       */
/* ------------------------------------------------------------------ */

/* A token is sql[pos..pos+len). Quoted tokens include their quotes. */
struct token {
    enum sqltok_type type;
    enum keyword kw;
    size_t pos, len;
};

/* What the state machine expects next in one parenthesis frame. */
enum state {
    S_NONE,           /* expressions and clauses of no interest */
    S_STMT_START,     /* a statement may begin here (UPDATE has a target) */
    S_TABLE,          /* FROM/JOIN/',': a table, subquery or function */
    S_AFTER_TABLE,    /* after a table: alias, INDEXED BY, USING, ... */
    S_ALIAS,          /* after AS of a table */
    S_TARGET,         /* INTO, UPDATE, REFERENCES: one table */
    S_IN_TABLE,       /* "x IN name" (SQLite) */
    S_CTE_NAME,       /* WITH [RECURSIVE] or ',' between CTEs */
    S_CTE_AFTER_NAME, /* name [(cols)], expecting AS */
    S_CTE_AS,         /* AS [NOT] [MATERIALIZED], expecting '(' */
    S_CTE_AFTER_BODY, /* ',' for another CTE, or the main statement */
};

/* Frame facts. F_FUNC: the '(' of a function call, where FROM is part of
 * an argument (substring(x FROM 2)) unless a SELECT made it a query.
 * F_POSITION: the '(' of position(a IN b), where IN is no "IN table".
 * F_QUERY: SELECT/DML seen directly in this frame. F_FROM: inside a FROM
 * list, where ',' introduces another table. F_BODY: inside the BEGIN..END
 * body of CREATE TRIGGER (outermost frame only). */
enum { F_FUNC = 1, F_QUERY = 2, F_FROM = 4, F_BODY = 8, F_POSITION = 16 };

struct frame {
    unsigned char state; /* enum state */
    unsigned char flags; /* F_* */
    unsigned case_depth; /* open CASE ... END in this frame */
};

enum name_kind { NAME_TABLE, NAME_CTE, NAME_PARAM };

/* One distinct name: buf[off..] holds "schema\0name\0" (schema may be ""). */
struct name_entry {
    size_t off, schema_len, name_len;
    uint32_t hash;
    unsigned char kind; /* enum name_kind */
};

/* The distinct names seen so far. Storage starts inline and moves to the
 * heap when it outgrows it; slots, the open-addressing hash index over ent
 * (entry index + 1, 0 = empty), exists only once n > LINEAR_NAMES. */
struct names {
    char *buf;
    size_t len, cap;
    struct name_entry *ent;
    size_t n, ent_cap;
    uint32_t *slots;
    size_t nslots;
    uint32_t seed;
    char inline_buf[512];
    struct name_entry inline_ent[16];
};

struct parser {
    const char *sql;
    size_t len;
    size_t pos;                 /* lexer position */
    struct token la[LOOKAHEAD]; /* lexed but not consumed */
    unsigned la_head, la_n;
    struct token cur, prev; /* last two consumed tokens */
    struct route_info *out;
    int err; /* first SQLPARSE_E*, 0 while fine */
    enum stmt_kind kind;
    unsigned flags;    /* ROUTE_* */
    bool kind_pending; /* top WITH: kind from main stmt */
    bool body_pending; /* CREATE TRIGGER: BEGIN opens body */
    bool suppress;     /* record no tables (FETCH, ...) */
    size_t nvar;       /* highest parameter index */
    size_t depth;      /* frames[depth] is current */
    struct frame frames[MAX_DEPTH + 1];
    struct names names;
    /* Every table reference (route_info.refs), table being the name
     * entry's index until build_result; inline storage first. */
    struct route_ref *refs;
    size_t nrefs, refs_cap;
    struct route_ref inline_refs[8];
    bool head_writes;        /* a DDL head records its objects: REF_WRITE */
    bool write_pending;      /* the next table recorded is the DML target */
    bool target_seen;        /* the top-level INSERT/DELETE target was found */
    bool references_pending; /* the next table recorded follows REFERENCES */
    bool noalias_pending;    /* the next table recorded takes no alias ("x IN t") */
};

/* A possibly qualified name; of db.schema.table the last two parts. */
struct qname {
    struct token schema, name;
    bool qualified;
};

/* ---- Helpers of sqlparse.c used by the statement heads --------------- */

/* Consumes and returns the next token; it becomes p->cur. */
struct token sp_next(struct parser *p);
/* Returns the k-th token not yet consumed (k < LOOKAHEAD). */
struct token sp_peek(struct parser *p, unsigned k);
bool sp_tok_is(const struct token *t, enum keyword kw);
/* Is the (unquoted, case-folded) text of t equal to lit (lowercase)? */
bool sp_tok_text_is(const struct parser *p, const struct token *t, const char *lit);
void sp_record(struct parser *p, const struct qname *qn);
/* Can t stand for a table name? SQLite also accepts 'string' names. */
bool sp_is_name(const struct parser *p, const struct token *t);
/* Consumes and records "[ONLY] name [, [ONLY] name ...]". */
void sp_take_table_list(struct parser *p);
/* Consumes "[ONLY] name" if present and returns whether it did. */
bool sp_take_table(struct parser *p, struct qname *qn);
/* Consumes IF [NOT] EXISTS. */
void sp_skip_if_exists(struct parser *p);
/* Completes the name whose first part, first, was just consumed. */
struct qname sp_take_qname(struct parser *p, struct token first);
/* Consumes a balanced parenthesized group starting at the next token, which
 * is '(' (PostgreSQL option lists). */
void sp_skip_group(struct parser *p);
bool sp_in_temp_schema(const struct parser *p, const struct qname *qn);

/* Records the first error; later ones are consequences and are dropped. */
__attribute__((format(printf, 3, 4))) void sp_fail(struct parser *p, int code, const char *fmt, ...);
/* Can t be the alias after a table reference? */
bool sp_is_alias(const struct parser *p, const struct token *t);

/* ---- sqlparse_names.c: distinct names and table references ------------- */

void sp_names_init(struct names *nm, uint32_t seed);
void sp_names_free(struct names *nm);
/* Adds a name (schema may be NULL) unless it is already there: 1 added,
 * 0 already present, -1 on error (p->err set); *index (may be NULL) gets
 * the entry's index. */
int sp_names_add(struct parser *p, enum name_kind kind, const struct token *schema, const struct token *name,
                 size_t *index);
/* Moves the tables (minus CTE names) and the references into p->out;
 * false when out of memory. */
bool sp_build_result(struct parser *p);

/* ---- sqlparse_heads.c -------------------------------------------------- */

/*
 * Determines the statement kind from its leading keywords and consumes the
 * heads of statements whose table names are positional (DDL, PRAGMA, ...).
 * SELECT/INSERT/UPDATE/DELETE/WITH are left to the state machine, which
 * starts in S_STMT_START. inner is set for the statement EXPLAIN wraps: its
 * kind does not replace STMT_EXPLAIN.
 */
void sp_head(struct parser *p, bool inner);
/* The statement kind a leading keyword gives, STMT_OTHER for none. */
enum stmt_kind sp_kind_of(enum keyword kw);

#endif
