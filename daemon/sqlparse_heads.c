/*
 * The statement heads of the SQL analysis (sqlparse.c): what the first
 * words of a statement say about its kind and the tables it names: CREATE,
 * DROP, ALTER, PRAGMA, EXPLAIN, REINDEX and the rest, consumed from the
 * token stream before the state machine takes over.
 */
#include "daemon/sqlparse_int.h"

#include <string.h>

/* "ON [ONLY] table" of CREATE INDEX/TRIGGER, ON already consumed. A
 * qualified owner (index/trigger name) qualifies an unqualified table:
 * SQLite keeps both in one schema, except that a temp trigger may watch
 * a table in any schema. */
static void take_on_table(struct parser *p, const struct qname *owner, bool inherit)
{
    struct qname qn;
    if (!sp_take_table(p, &qn))
        return;
    if (!qn.qualified && owner->qualified && inherit) {
        qn.schema = owner->schema;
        qn.qualified = true;
    }
    sp_record(p, &qn);
}

/* CREATE ..., CREATE consumed. */
static void head_create(struct parser *p)
{
    bool temp = false;
    for (;;) {
        struct token t = sp_peek(p, 0), after = sp_peek(p, 1);
        if (sp_tok_is(&t, KW_OR) && sp_tok_is(&after, KW_REPLACE)) {
            sp_next(p);
            sp_next(p);
            continue;
        }
        if (sp_tok_is(&t, KW_TEMP) || sp_tok_is(&t, KW_TEMPORARY)) {
            temp = true;
        } else if (!(sp_tok_is(&t, KW_UNIQUE) || sp_tok_is(&t, KW_VIRTUAL) ||
                     sp_tok_is(&t, KW_MATERIALIZED) || sp_tok_is(&t, KW_GLOBAL) || sp_tok_is(&t, KW_LOCAL) ||
                     sp_tok_is(&t, KW_UNLOGGED) || sp_tok_is(&t, KW_CONSTRAINT))) {
            break;
        }
        sp_next(p);
    }
    struct token obj = sp_peek(p, 0);
    if (obj.type != SQLTOK_WORD)
        return;
    struct qname qn = {.qualified = false};
    switch (obj.kw) {
    case KW_TABLE:
    case KW_VIEW:
        sp_next(p);
        sp_skip_if_exists(p);
        if (!sp_take_table(p, &qn))
            break;
        if (temp || sp_in_temp_schema(p, &qn))
            p->flags |= ROUTE_TEMP;
        sp_record(p, &qn);
        break;
    case KW_INDEX: {
        sp_next(p);
        struct token t = sp_peek(p, 0);
        if (sp_tok_is(&t, KW_CONCURRENTLY))
            sp_next(p);
        sp_skip_if_exists(p);
        t = sp_peek(p, 0);
        if (sp_is_name(p, &t)) { /* PostgreSQL may omit the index name */
            sp_next(p);
            qn = sp_take_qname(p, t);
        }
        if (temp || sp_in_temp_schema(p, &qn))
            p->flags |= ROUTE_TEMP;
        t = sp_peek(p, 0);
        if (sp_tok_is(&t, KW_ON)) {
            sp_next(p);
            take_on_table(p, &qn, true);
        }
        break;
    }
    case KW_TRIGGER: {
        sp_next(p);
        sp_skip_if_exists(p);
        struct token t = sp_peek(p, 0);
        if (sp_is_name(p, &t)) {
            sp_next(p);
            qn = sp_take_qname(p, t);
        }
        bool in_temp = temp || sp_in_temp_schema(p, &qn);
        if (in_temp)
            p->flags |= ROUTE_TEMP;
        /* BEFORE|AFTER|INSTEAD OF, INSERT|DELETE|UPDATE [OF cols], ON */
        for (;;) {
            t = sp_peek(p, 0);
            if (t.type == SQLTOK_EOF || t.type == SQLTOK_LPAREN || t.type == SQLTOK_RPAREN ||
                t.type == SQLTOK_SEMI)
                break;
            sp_next(p);
            if (sp_tok_is(&t, KW_ON)) {
                take_on_table(p, &qn, !in_temp);
                break;
            }
        }
        p->body_pending = true;
        break;
    }
    case KW_FUNCTION:
    case KW_PROCEDURE:
        sp_next(p);
        p->body_pending = true; /* PostgreSQL BEGIN ATOMIC ... END */
        break;
    default: break;
    }
}

/* "[MATERIALIZED] TABLE|VIEW [IF EXISTS]" after DROP or ALTER: consumes it
 * and returns true, or consumes nothing and returns false when the object
 * is not a table or view. */
static bool take_table_kind(struct parser *p)
{
    struct token t = sp_peek(p, 0);
    if (sp_tok_is(&t, KW_MATERIALIZED)) {
        sp_next(p);
        t = sp_peek(p, 0);
    }
    if (!sp_tok_is(&t, KW_TABLE) && !sp_tok_is(&t, KW_VIEW))
        return false;
    sp_next(p);
    sp_skip_if_exists(p);
    return true;
}

/* DROP ..., DROP consumed: only tables and views are tables. */
static void head_drop(struct parser *p)
{
    if (take_table_kind(p))
        sp_take_table_list(p);
}

/* ALTER TABLE|VIEW [IF EXISTS] [ONLY] name ..., ALTER consumed. The rest
 * (ADD COLUMN ... REFERENCES p) is left to the state machine. The new name
 * of RENAME TO is recorded too, in the old name's schema, flagged
 * ROUTE_RENAME: the table must stay where the map routes that name. */
static void head_alter(struct parser *p)
{
    struct qname qn;
    if (!take_table_kind(p) || !sp_take_table(p, &qn))
        return;
    sp_record(p, &qn);
    struct token t = sp_peek(p, 0);
    struct token to = sp_peek(p, 1), name = sp_peek(p, 2);
    if (sp_tok_text_is(p, &t, "rename") && sp_tok_is(&to, KW_TO) && sp_is_name(p, &name)) {
        sp_next(p);
        sp_next(p);
        sp_next(p);
        qn.name = name;
        sp_record(p, &qn);
        p->flags |= ROUTE_RENAME;
    }
}

/* PRAGMA [schema.]name[(arg) | = arg], PRAGMA consumed. The pragmas that
 * take a table name reference that table, in the pragma's schema. */
static void head_pragma(struct parser *p)
{
    static const char *const table_pragmas[] = {
        "table_info", "table_xinfo", "table_list", "index_list", "foreign_key_list", "foreign_key_check",
    };
    struct token t = sp_peek(p, 0);
    if (t.type != SQLTOK_WORD && t.type != SQLTOK_QUOTED)
        return;
    sp_next(p);
    struct qname pragma = sp_take_qname(p, t);
    bool takes_table = false;
    for (size_t i = 0; i < sizeof table_pragmas / sizeof table_pragmas[0]; i++)
        if (sp_tok_text_is(p, &pragma.name, table_pragmas[i]))
            takes_table = true;
    if (!takes_table)
        return;
    struct token a = sp_peek(p, 0), b = sp_peek(p, 1), c = sp_peek(p, 2);
    struct qname qn = {.schema = pragma.schema, .name = b, .qualified = pragma.qualified};
    if (a.type == SQLTOK_LPAREN && sp_is_name(p, &b) && c.type == SQLTOK_RPAREN) {
        sp_next(p);
        sp_next(p);
        sp_next(p);
        sp_record(p, &qn);
    } else if (a.type == SQLTOK_OP && a.len == 1 && p->sql[a.pos] == '=' && sp_is_name(p, &b)) {
        sp_next(p);
        sp_next(p);
        sp_record(p, &qn);
    }
}

/* Does t begin a statement that EXPLAIN can wrap (PostgreSQL's
 * EXPLAIN ANALYZE SELECT vs SQLite's EXPLAIN ANALYZE t)? */
static bool begins_statement(const struct token *t)
{
    static const enum keyword kws[] = {
        KW_SELECT, KW_VALUES, KW_WITH,   KW_INSERT,  KW_REPLACE,
        KW_UPDATE, KW_DELETE, KW_CREATE, KW_ANALYZE, KW_VERBOSE,
    };
    for (size_t i = 0; i < sizeof kws / sizeof kws[0]; i++)
        if (sp_tok_is(t, kws[i]))
            return true;
    return false;
}

/* EXPLAIN [QUERY PLAN | ANALYZE | VERBOSE | (options)] stmt, EXPLAIN
 * consumed: the tables are the inner statement's. */
static void head_explain(struct parser *p)
{
    struct token t = sp_peek(p, 0), after = sp_peek(p, 1);
    if (sp_tok_is(&t, KW_QUERY) && sp_tok_is(&after, KW_PLAN)) {
        sp_next(p);
        sp_next(p);
    } else {
        for (;;) {
            t = sp_peek(p, 0);
            after = sp_peek(p, 1);
            if (t.type == SQLTOK_LPAREN) {
                sp_skip_group(p);
                if (p->err)
                    return;
            } else if ((sp_tok_is(&t, KW_ANALYZE) || sp_tok_is(&t, KW_VERBOSE)) && begins_statement(&after)) {
                sp_next(p);
            } else {
                break;
            }
        }
    }
    sp_head(p, true);
}

/* REINDEX: SQLite [name]; PostgreSQL [(opts)] TABLE|INDEX|... name. */
static void head_reindex(struct parser *p)
{
    struct token t = sp_peek(p, 0);
    if (t.type == SQLTOK_LPAREN) {
        sp_skip_group(p);
        t = sp_peek(p, 0);
    }
    if (sp_tok_is(&t, KW_TABLE)) {
        sp_next(p);
        t = sp_peek(p, 0);
        if (sp_tok_is(&t, KW_CONCURRENTLY))
            sp_next(p);
    } else if (sp_tok_is(&t, KW_INDEX) || sp_tok_text_is(p, &t, "schema") ||
               sp_tok_text_is(p, &t, "database") || sp_tok_text_is(p, &t, "system")) {
        return;
    }
    struct qname qn;
    if (sp_take_table(p, &qn))
        sp_record(p, &qn);
}

enum stmt_kind sp_kind_of(enum keyword kw)
{
    switch (kw) {
    case KW_SELECT:
    case KW_VALUES: return STMT_SELECT;
    case KW_INSERT:
    case KW_REPLACE: return STMT_INSERT;
    case KW_UPDATE: return STMT_UPDATE;
    case KW_DELETE: return STMT_DELETE;
    default: return STMT_OTHER;
    }
}

/*
 * Determines the statement kind from its leading keywords and consumes the
 * heads of statements whose table names are positional (DDL, PRAGMA, ...).
 * SELECT/INSERT/UPDATE/DELETE/WITH are left to the state machine, which
 * starts in S_STMT_START. inner is set for the statement EXPLAIN wraps: its
 * kind does not replace STMT_EXPLAIN.
 */
void sp_head(struct parser *p, bool inner)
{
    struct token t = sp_peek(p, 0), after;
    enum keyword kw = t.type == SQLTOK_WORD ? t.kw : KW_NONE;
    enum stmt_kind kind = sp_kind_of(kw);
    bool consumed = true; /* the generic pass starts in S_NONE */
    switch (kw) {
    case KW_SELECT:
    case KW_VALUES:
    case KW_INSERT:
    case KW_REPLACE:
    case KW_UPDATE:
    case KW_DELETE: consumed = false; break;
    case KW_WITH:
        p->kind_pending = !inner;
        consumed = false;
        break;
    case KW_CREATE:
    case KW_DROP:
    case KW_ALTER:
        p->head_writes = true;
        sp_next(p);
        kind = STMT_DDL;
        if (kw == KW_CREATE)
            head_create(p);
        else if (kw == KW_DROP)
            head_drop(p);
        else
            head_alter(p);
        break;
    case KW_BEGIN:
        sp_next(p);
        kind = STMT_BEGIN;
        after = sp_peek(p, 0);
        if (sp_tok_text_is(p, &after, "immediate") || sp_tok_text_is(p, &after, "exclusive"))
            p->flags |= ROUTE_BEGIN_WRITE;
        break;
    case KW_START:
        sp_next(p);
        after = sp_peek(p, 0);
        if (sp_tok_is(&after, KW_TRANSACTION))
            kind = STMT_BEGIN;
        break;
    case KW_COMMIT:
    case KW_END:
        sp_next(p);
        kind = STMT_COMMIT;
        break;
    case KW_ROLLBACK:
    case KW_ABORT:
        sp_next(p);
        after = sp_peek(p, 0);
        if (sp_tok_is(&after, KW_TRANSACTION) || sp_tok_is(&after, KW_WORK)) {
            sp_next(p);
            after = sp_peek(p, 0);
        }
        kind = sp_tok_is(&after, KW_TO) ? STMT_SAVEPOINT : STMT_ROLLBACK;
        break;
    case KW_SAVEPOINT:
    case KW_RELEASE:
        sp_next(p);
        kind = STMT_SAVEPOINT;
        break;
    case KW_PRAGMA:
        sp_next(p);
        kind = STMT_PRAGMA;
        head_pragma(p);
        break;
    case KW_ATTACH:
        sp_next(p);
        kind = STMT_ATTACH;
        break;
    case KW_DETACH:
        sp_next(p);
        kind = STMT_DETACH;
        break;
    case KW_VACUUM:
        sp_next(p);
        kind = STMT_VACUUM;
        /* VACUUM [schema] INTO expr: INTO is the first or second token
         * (a schema SQLite would not accept still sets the flag). */
        after = sp_peek(p, 0);
        if (!sp_tok_is(&after, KW_INTO)) {
            struct token second = sp_peek(p, 1);
            if (!sp_tok_is(&second, KW_INTO))
                break;
            sp_next(p);
        }
        sp_next(p);
        p->flags |= ROUTE_VACUUM_INTO;
        break;
    case KW_EXPLAIN:
        sp_next(p);
        kind = STMT_EXPLAIN;
        head_explain(p);
        consumed = false; /* the inner head set the frame state */
        break;
    case KW_ANALYZE:
        sp_next(p);
        after = sp_peek(p, 0);
        if (sp_tok_is(&after, KW_VERBOSE))
            sp_next(p);
        after = sp_peek(p, 0);
        if (after.type == SQLTOK_LPAREN)
            sp_skip_group(p);
        sp_take_table_list(p);
        break;
    case KW_REINDEX:
        p->head_writes = true;
        sp_next(p);
        head_reindex(p);
        break;
    case KW_TRUNCATE:
    case KW_LOCK:
        sp_next(p);
        after = sp_peek(p, 0);
        if (sp_tok_is(&after, KW_TABLE))
            sp_next(p);
        sp_take_table_list(p);
        if (kw == KW_LOCK)
            p->suppress = true; /* IN ... MODE is no table */
        break;
    case KW_COPY:
        sp_next(p);
        after = sp_peek(p, 0);
        if (after.type == SQLTOK_LPAREN) { /* COPY (query) TO ... */
            consumed = false;
            break;
        }
        sp_take_table_list(p);
        p->suppress = true; /* FROM STDIN is no table */
        break;
    case KW_FETCH:
    case KW_MOVE:
    case KW_GRANT:
    case KW_REVOKE:
        p->suppress = true; /* FETCH ... FROM cursor, REVOKE ... FROM role */
        break;
    default: consumed = false; break;
    }
    p->head_writes = false;
    if (!inner)
        p->kind = kind;
    if (consumed)
        p->frames[0].state = S_NONE;
}

static bool slot_word(const char *sql, struct sqltok t, const char *word)
{
    size_t n = strlen(word);
    if (t.type != SQLTOK_WORD || t.len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (sqllex_lower((unsigned char)sql[t.pos + i]) != (unsigned char)word[i])
            return false;
    return true;
}

bool sqlparse_main_slot(const char *sql, size_t len, size_t *pos, size_t *del)
{
    struct sqltok t = sqllex_next(sql, len, 0, 0), dot;

    if (slot_word(sql, t, "pragma")) {
        t = sqllex_next(sql, len, t.pos + t.len, 0);
        dot = sqllex_next(sql, len, t.pos + t.len, 0);
        if (!slot_word(sql, t, "main") || dot.type != SQLTOK_DOT)
            return false;
        *pos = t.pos;
        *del = t.len;
        return true;
    }
    if (!slot_word(sql, t, "create"))
        return false;
    t = sqllex_next(sql, len, t.pos + t.len, 0);
    if (slot_word(sql, t, "unique") || slot_word(sql, t, "virtual"))
        t = sqllex_next(sql, len, t.pos + t.len, 0);
    if (!slot_word(sql, t, "table") && !slot_word(sql, t, "index") && !slot_word(sql, t, "view") &&
        !slot_word(sql, t, "trigger"))
        return false; /* TEMP, or not a CREATE of these */
    t = sqllex_next(sql, len, t.pos + t.len, 0);
    if (slot_word(sql, t, "if")) {
        t = sqllex_next(sql, len, t.pos + t.len, 0);
        if (!slot_word(sql, t, "not"))
            return false;
        t = sqllex_next(sql, len, t.pos + t.len, 0);
        if (!slot_word(sql, t, "exists"))
            return false;
        t = sqllex_next(sql, len, t.pos + t.len, 0);
    }
    if (t.type != SQLTOK_WORD && t.type != SQLTOK_QUOTED && t.type != SQLTOK_STRING)
        return false;
    dot = sqllex_next(sql, len, t.pos + t.len, 0);
    if (dot.type != SQLTOK_DOT) {
        *pos = t.pos;
        *del = 0;
        return true;
    }
    if (!slot_word(sql, t, "main"))
        return false;
    *pos = t.pos;
    *del = t.len;
    return true;
}
