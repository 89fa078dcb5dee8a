/*
 * The SQL analysis behind routing: what kind of statement a request is, which
 * tables it references and how many parameters it takes (sqlparse.h).
 *
 * This is a small state machine over the tokens of sqllex.c (SQLite's
 * lexical rules and PostgreSQL's common additions), not a full SQL parser.
 * The heads of DDL and other statements are read by sqlparse_heads.c; the
 * distinct names and table references are kept by sqlparse_names.c;
 * sqlparse_int.h holds the parser state the files share.
 * It keeps one frame per open parenthesis and recognizes the places where a table name can stand: FROM and
 * JOIN lists, INTO, the UPDATE target, REFERENCES, "x IN table", the heads of DDL statements, PRAGMA
 * arguments. A statement SQLite would reject may still be analyzed; the backend reports its error when it
 * runs.
 *
 * What callers can rely on:
 * - Tables are deduplicated by (schema, name) after unquoting and ASCII
 *   lowercasing, in order of first appearance. CTE names are removed from
 *   the unqualified references of the whole statement.
 * - nparams follows sqlite3_bind_parameter_count(): "?" takes the index
 *   after the highest so far, ?NNN and $NNN take NNN (1..65535, else
 *   ESYNTAX), a named parameter (:x, @x, $x; prefix included, case kept)
 *   takes the next index the first time its name appears. nparams is the
 *   highest index.
 * - A ';' outside parentheses and trigger bodies ends the statement; after
 *   it only whitespace and comments may follow (even a second ';' is
 *   SQLPARSE_EMULTI). Input of only whitespace, comments and ';' is
 *   SQLPARSE_ESYNTAX "empty statement". NUL bytes, unterminated literals or
 *   comments, unbalanced parentheses and more than MAX_DEPTH nested ones
 *   are SQLPARSE_ESYNTAX.
 * - On failure the result holds only the error message (kind STMT_OTHER,
 *   no tables, no flags, nparams 0).
 *
 * Work is linear in the input. Every byte is lexed once (a small lookahead
 * ring avoids re-lexing), nesting lives in an explicit stack capped at
 * MAX_DEPTH frames instead of recursion, and names are deduplicated through
 * a hash index, at most MAX_NAMES of them. A typical statement costs two
 * allocations: the names string block and the tables array of the result.
 *
 * Dialect notes. The analysis lexes with sqllex.c's flags 0: comments do
 * not nest (SQLite), and "?" is always a parameter, so PostgreSQL's jsonb
 * "?" operator counts as one (sqllex.c says more).
 */
#include "daemon/sqlparse_int.h"

#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Keywords                                                           */
/* ------------------------------------------------------------------ */

/* The keyword table: KEYWORDS(X) is in sqlparse_int.h. */
#define R                     KF_RESERVED
#define A                     KF_NOALIAS
#define F                     KF_FUNC
#define KW_ENTRY(name, flags) {#name, sizeof(#name) - 1, flags},

enum { KW_MAXLEN = 12 };

static const struct {
    char name[KW_MAXLEN + 1];
    unsigned char len;
    unsigned char flags;
} keywords[KW_COUNT] = {{"", 0, 0}, KEYWORDS(KW_ENTRY)};

#undef R
#undef A
#undef F
#undef KW_ENTRY

/* Returns the KW_* of the word s[0..len), or KW_NONE. */
static enum keyword keyword_lookup(const unsigned char *s, size_t len)
{
    if (len < 2 || len > KW_MAXLEN)
        return KW_NONE;
    char up[KW_MAXLEN];
    for (size_t i = 0; i < len; i++)
        up[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
    size_t lo = 1, hi = KW_COUNT;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *k = keywords[mid].name;
        size_t klen = keywords[mid].len, i = 0;
        while (i < len && i < klen && up[i] == k[i])
            i++;
        int c = i < len && i < klen ? (unsigned char)up[i] - (unsigned char)k[i] : (int)len - (int)klen;
        if (c == 0)
            return (enum keyword)mid;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return KW_NONE;
}

/* Records the first error; later ones are consequences and are dropped. */
__attribute__((format(printf, 3, 4))) void sp_fail(struct parser *p, int code, const char *fmt, ...)
{
    if (p->err)
        return;
    p->err = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->out->error, sizeof p->out->error, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Tokens (sqllex.c) and parameters                                   */
/* ------------------------------------------------------------------ */

/* Next parameter index for "?" and first-seen named parameters. */
static void param_next(struct parser *p, size_t at)
{
    if (p->nvar >= MAX_PARAM)
        sp_fail(p, SQLPARSE_ESYNTAX, "too many parameters at offset %zu (limit %d)", at, MAX_PARAM);
    else
        p->nvar++;
}

/* ?NNN or $NNN at s[at..end): parameter number NNN. */
static void param_number(struct parser *p, size_t at, size_t digits, size_t end)
{
    size_t v = 0;
    for (size_t i = digits; i < end && v <= MAX_PARAM; i++)
        v = v * 10 + (size_t)(p->sql[i] - '0');
    if (v == 0 || v > MAX_PARAM)
        sp_fail(p, SQLPARSE_ESYNTAX, "parameter number out of range (1..%d) at offset %zu", MAX_PARAM, at);
    else if (v > p->nvar)
        p->nvar = v;
}

/* A named parameter gets a new index the first time its name appears. */
static void param_named(struct parser *p, size_t at, size_t end)
{
    struct token t = {.type = SQLTOK_PARAM, .kw = KW_NONE, .pos = at, .len = end - at};
    if (sp_names_add(p, NAME_PARAM, NULL, &t, NULL) == 1)
        param_next(p, at);
}

/* Numbers the parameter token t: ?, ?NNN, $NNN, or a named one. */
static void param_of(struct parser *p, const struct token *t)
{
    const unsigned char *s = (const unsigned char *)p->sql;
    size_t i = t->pos, end = t->pos + t->len;
    if (s[i] == '?' && end > i + 1)
        param_number(p, i, i + 1, end);
    else if (s[i] == '?')
        param_next(p, i);
    else if (s[i] == '$' && end > i + 1 && s[i + 1] >= '0' && s[i + 1] <= '9')
        param_number(p, i, i + 1, end);
    else
        param_named(p, i, end);
}

/* Returns the next token, skipping whitespace and comments: SQLTOK_EOF at
 * the end of input or after an error. */
static struct token lex(struct parser *p)
{
    struct token t = {.type = SQLTOK_EOF, .kw = KW_NONE, .pos = p->len, .len = 0};
    if (p->err)
        return t;
    struct sqltok k = sqllex_next(p->sql, p->len, p->pos, 0);
    if (k.type == SQLTOK_ERROR) {
        sp_fail(p, SQLPARSE_ESYNTAX, "unterminated %s at offset %zu", k.what, k.pos);
        return t;
    }
    p->pos = k.pos;
    if (k.type == SQLTOK_EOF)
        return t;
    struct token got = {.type = k.type, .kw = KW_NONE, .pos = k.pos, .len = k.len};
    if (k.type == SQLTOK_PARAM)
        param_of(p, &got);
    else if (k.type == SQLTOK_WORD)
        got.kw = keyword_lookup((const unsigned char *)p->sql + k.pos, k.len);
    if (p->err)
        return t;
    p->pos = k.pos + k.len;
    return got;
}

/* Returns the k-th token not yet consumed (k < LOOKAHEAD). */
struct token sp_peek(struct parser *p, unsigned k)
{
    while (p->la_n <= k) {
        p->la[(p->la_head + p->la_n) % LOOKAHEAD] = lex(p);
        p->la_n++;
    }
    return p->la[(p->la_head + k) % LOOKAHEAD];
}

/* Consumes and returns the next token; it becomes p->cur. */
struct token sp_next(struct parser *p)
{
    struct token t;
    if (p->la_n > 0) {
        t = p->la[p->la_head];
        p->la_head = (p->la_head + 1) % LOOKAHEAD;
        p->la_n--;
    } else {
        t = lex(p);
    }
    p->prev = p->cur;
    p->cur = t;
    return t;
}

/* ------------------------------------------------------------------ */
/* Token classes                                                      */
/* ------------------------------------------------------------------ */

bool sp_tok_is(const struct token *t, enum keyword kw)
{
    return t->type == SQLTOK_WORD && t->kw == kw;
}

static bool is_plain_string(const struct parser *p, const struct token *t)
{
    return t->type == SQLTOK_STRING && p->sql[t->pos] == '\'';
}

/* Can t stand for a table name? SQLite also accepts 'string' names. */
bool sp_is_name(const struct parser *p, const struct token *t)
{
    return t->type == SQLTOK_QUOTED || is_plain_string(p, t) ||
           (t->type == SQLTOK_WORD && !(keywords[t->kw].flags & KF_RESERVED));
}

/* Can t be the alias after a table reference? */
bool sp_is_alias(const struct parser *p, const struct token *t)
{
    return sp_is_name(p, t) && !(t->type == SQLTOK_WORD && (keywords[t->kw].flags & KF_NOALIAS));
}

/* Does '(' after t open a function call's arguments? */
static bool is_call(const struct token *t)
{
    return t->type == SQLTOK_QUOTED ||
           (t->type == SQLTOK_WORD && (t->kw == KW_NONE || (keywords[t->kw].flags & KF_FUNC)));
}

/* Is the (unquoted, case-folded) text of t equal to lit (lowercase)? */
bool sp_tok_text_is(const struct parser *p, const struct token *t, const char *lit)
{
    size_t n = strlen(lit), start = t->pos, len = t->len;
    if (t->type == SQLTOK_QUOTED || is_plain_string(p, t)) {
        start++;
        len -= 2;
    } else if (t->type != SQLTOK_WORD) {
        return false;
    }
    if (len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (sqllex_lower((unsigned char)p->sql[start + i]) != (unsigned char)lit[i])
            return false;
    return true;
}

/* ------------------------------------------------------------------ */
/* Names                                                              */
/* ------------------------------------------------------------------ */

/* Completes the name whose first part, first, was just consumed. */
struct qname sp_take_qname(struct parser *p, struct token first)
{
    struct qname qn = {.schema = first, .name = first, .qualified = false};
    for (;;) {
        struct token dot = sp_peek(p, 0), part = sp_peek(p, 1);
        if (dot.type != SQLTOK_DOT ||
            !(part.type == SQLTOK_WORD || part.type == SQLTOK_QUOTED || is_plain_string(p, &part)))
            return qn;
        sp_next(p);
        sp_next(p);
        qn.schema = qn.name;
        qn.name = part;
        qn.qualified = true;
    }
}

bool sp_in_temp_schema(const struct parser *p, const struct qname *qn)
{
    return qn->qualified && sp_tok_text_is(p, &qn->schema, "temp");
}

/* Consumes "[ONLY] name" if present and returns whether it did. */
bool sp_take_table(struct parser *p, struct qname *qn)
{
    struct token t = sp_peek(p, 0);
    if (sp_tok_is(&t, KW_ONLY)) {
        struct token after = sp_peek(p, 1);
        if (sp_is_name(p, &after)) {
            sp_next(p);
            t = after;
        }
    }
    if (!sp_is_name(p, &t))
        return false;
    sp_next(p);
    *qn = sp_take_qname(p, t);
    return true;
}

/* Consumes and records "[ONLY] name [, [ONLY] name ...]". */
void sp_take_table_list(struct parser *p)
{
    struct qname qn;
    while (sp_take_table(p, &qn)) {
        sp_record(p, &qn);
        struct token t = sp_peek(p, 0);
        if (t.type != SQLTOK_COMMA)
            return;
        sp_next(p);
    }
}

/* Consumes IF [NOT] EXISTS. */
void sp_skip_if_exists(struct parser *p)
{
    struct token a = sp_peek(p, 0), b = sp_peek(p, 1), c = sp_peek(p, 2);
    if (!sp_tok_is(&a, KW_IF))
        return;
    if (sp_tok_is(&b, KW_EXISTS)) {
        sp_next(p);
        sp_next(p);
    } else if (sp_tok_is(&b, KW_NOT) && sp_tok_is(&c, KW_EXISTS)) {
        sp_next(p);
        sp_next(p);
        sp_next(p);
    }
}

/* Consumes a balanced parenthesized group starting at the next token, which
 * is '(' (PostgreSQL option lists). */
void sp_skip_group(struct parser *p)
{
    size_t open = 0;
    do {
        struct token t = sp_next(p);
        if (t.type == SQLTOK_LPAREN) {
            open++;
        } else if (t.type == SQLTOK_RPAREN) {
            open--;
        } else if (t.type == SQLTOK_EOF || t.type == SQLTOK_SEMI) {
            sp_fail(p, SQLPARSE_ESYNTAX, "unbalanced parentheses: '(' not closed");
            return;
        }
    } while (open > 0);
}

/* ------------------------------------------------------------------ */
/* The state machine                                                  */
/* ------------------------------------------------------------------ */

/* After UPDATE: [OR conflict-action], then the target table. */
static void begin_update(struct parser *p, struct frame *f)
{
    struct token a = sp_peek(p, 0), b = sp_peek(p, 1);
    if (sp_tok_is(&a, KW_OR) && b.type == SQLTOK_WORD) {
        sp_next(p);
        sp_next(p);
    }
    f->flags |= F_QUERY;
    f->flags &= (unsigned char)~F_FROM;
    f->state = S_TARGET;
    if (p->depth == 0 && p->kind == STMT_UPDATE)
        p->write_pending = true;
}

/* WITH: a CTE list when followed by [RECURSIVE] name (AS | '('); not for
 * WITH TIME ZONE, WITH ORDINALITY, WITH (options), WITH CHECK OPTION. */
static void begin_with(struct parser *p, struct frame *f)
{
    struct token r = sp_peek(p, 0);
    unsigned k = sp_tok_is(&r, KW_RECURSIVE) ? 1 : 0;
    struct token name = sp_peek(p, k), after = sp_peek(p, k + 1);
    if (!sp_is_name(p, &name) || !(sp_tok_is(&after, KW_AS) || after.type == SQLTOK_LPAREN))
        return;
    if (k)
        sp_next(p);
    f->state = S_CTE_NAME;
    f->flags |= F_QUERY;
    f->flags &= (unsigned char)~F_FROM;
}

/* A word in S_NONE: the keywords that open table positions or clauses. */
static void on_keyword(struct parser *p, struct frame *f, const struct token *t)
{
    bool call_args = (f->flags & (F_FUNC | F_QUERY)) == F_FUNC;
    bool position_args = (f->flags & (F_POSITION | F_QUERY)) == F_POSITION;
    struct token after;
    if (t->type != SQLTOK_WORD)
        return;
    switch (t->kw) {
    case KW_FROM:
        if (call_args) /* substring(x FROM 2), EXTRACT(year FROM d) */
            return;
        f->flags |= F_FROM;
        f->state = S_TABLE;
        return;
    case KW_JOIN:
        f->flags |= F_FROM;
        f->state = S_TABLE;
        return;
    case KW_INTO:
        if (p->depth == 0 && p->kind == STMT_INSERT && !p->target_seen)
            p->write_pending = p->target_seen = true;
        f->state = S_TARGET;
        return;
    case KW_REFERENCES:
        p->references_pending = true;
        f->state = S_TARGET;
        return;
    case KW_IN:
        after = sp_peek(p, 0);
        if (!position_args && sp_is_name(p, &after))
            f->state = S_IN_TABLE;
        return;
    case KW_SELECT:
    case KW_VALUES:
        f->flags |= F_QUERY;
        f->flags &= (unsigned char)~F_FROM;
        return;
    case KW_DELETE:
        if (p->depth == 0 && p->kind == STMT_DELETE && !p->target_seen)
            p->write_pending = p->target_seen = true;
        f->flags |= F_QUERY;
        return;
    case KW_INSERT:
    case KW_UPDATE: f->flags |= F_QUERY; return;
    case KW_WITH: begin_with(p, f); return;
    case KW_DISTINCT: /* IS [NOT] DISTINCT FROM */
        after = sp_peek(p, 0);
        if ((sp_tok_is(&p->prev, KW_IS) || sp_tok_is(&p->prev, KW_NOT)) && sp_tok_is(&after, KW_FROM))
            sp_next(p);
        return;
    case KW_WHERE:
    case KW_GROUP:
    case KW_HAVING:
    case KW_ORDER:
    case KW_LIMIT:
    case KW_OFFSET:
    case KW_WINDOW:
    case KW_UNION:
    case KW_INTERSECT:
    case KW_EXCEPT:
    case KW_SET:
    case KW_RETURNING:
    case KW_FOR:
    case KW_FETCH:
    case KW_DO: f->flags &= (unsigned char)~F_FROM; return;
    case KW_CASE:
        if (f->case_depth < UINT_MAX)
            f->case_depth++;
        return;
    case KW_END:
        if (f->case_depth > 0) {
            f->case_depth--;
        } else if (p->depth == 0 && (f->flags & F_BODY)) {
            f->flags &= (unsigned char)~(F_BODY | F_FROM | F_QUERY);
        }
        return;
    case KW_BEGIN:
        if (p->depth == 0 && p->body_pending) {
            p->body_pending = false;
            f->flags |= F_BODY;
            f->flags &= (unsigned char)~(F_FROM | F_QUERY);
            f->case_depth = 0;
            f->state = S_STMT_START;
        }
        return;
    default: return;
    }
}

static void open_paren(struct parser *p, struct frame *f)
{
    if (p->depth >= MAX_DEPTH) {
        sp_fail(p, SQLPARSE_ESYNTAX, "too deeply nested (more than %d parentheses)", MAX_DEPTH);
        return;
    }
    struct frame child = {.state = S_STMT_START, .flags = 0, .case_depth = 0};
    switch (f->state) {
    case S_TABLE: /* a subquery or a parenthesized join */
        child.state = S_TABLE;
        child.flags = F_FROM;
        f->state = S_AFTER_TABLE;
        break;
    case S_CTE_AS: /* the CTE body */ f->state = S_CTE_AFTER_BODY; break;
    case S_CTE_AFTER_NAME: /* the CTE's column names */
        child.state = S_NONE;
        child.flags = F_FUNC;
        break;
    default:
        if (is_call(&p->prev)) {
            child.state = S_NONE;
            child.flags = F_FUNC;
            if (sp_tok_text_is(p, &p->prev, "position"))
                child.flags |= F_POSITION;
        }
        if (f->state != S_AFTER_TABLE) /* keep: json_each(x) AS j */
            f->state = S_NONE;
        break;
    }
    p->frames[++p->depth] = child;
}

/* Feeds one consumed token (p->cur) to the state machine. ';' at depth 0
 * outside a trigger body never gets here. */
static void step(struct parser *p, const struct token *t)
{
    struct frame *f = &p->frames[p->depth];
    struct token after;
    switch (t->type) {
    case SQLTOK_LPAREN: open_paren(p, f); return;
    case SQLTOK_RPAREN:
        if (p->depth == 0)
            sp_fail(p, SQLPARSE_ESYNTAX, "unbalanced parentheses: unexpected ')' at offset %zu", t->pos);
        else
            p->depth--;
        return;
    case SQLTOK_SEMI:
        if (p->depth > 0) {
            sp_fail(p, SQLPARSE_ESYNTAX, "unbalanced parentheses: ';' inside parentheses at offset %zu",
                    t->pos);
            return;
        }
        f->state = S_STMT_START; /* next statement of a trigger body */
        f->flags &= (unsigned char)~(F_FROM | F_QUERY);
        f->case_depth = 0;
        return;
    case SQLTOK_COMMA:
        if (f->state == S_CTE_AFTER_BODY)
            f->state = S_CTE_NAME;
        else
            f->state = (f->flags & F_FROM) ? S_TABLE : S_NONE;
        return;
    default: break;
    }

    /* A state either takes the token or hands it on to the next one. */
    for (;;) {
        switch ((enum state)f->state) {
        case S_STMT_START:
            f->state = S_NONE;
            if (t->type != SQLTOK_WORD)
                continue;
            if (p->kind_pending && p->depth == 0 && t->kw != KW_WITH) {
                p->kind = sp_kind_of(t->kw);
                p->kind_pending = false;
            }
            if (t->kw == KW_UPDATE) {
                begin_update(p, f);
                return;
            }
            continue;
        case S_TABLE:
            if (sp_tok_is(t, KW_ONLY) || sp_tok_is(t, KW_LATERAL)) {
                after = sp_peek(p, 0);
                if (after.type == SQLTOK_LPAREN || sp_is_name(p, &after))
                    return;
            }
            if (sp_is_name(p, t) && !sp_tok_is(t, KW_WITH)) { /* FROM (WITH ... */
                struct qname qn = sp_take_qname(p, *t);
                f->state = S_AFTER_TABLE;
                after = sp_peek(p, 0);
                if (after.type != SQLTOK_LPAREN) /* else json_each(...) */
                    sp_record(p, &qn);
                return;
            }
            f->state = S_NONE;
            continue;
        case S_AFTER_TABLE:
            after = sp_peek(p, 0);
            if (sp_tok_is(t, KW_AS)) {
                f->state = S_ALIAS;
                return;
            }
            if (sp_tok_is(t, KW_INDEXED)) { /* INDEXED BY index */
                struct token index = sp_peek(p, 1);
                if (sp_tok_is(&after, KW_BY) && sp_is_name(p, &index)) {
                    sp_next(p);
                    sp_next(p);
                }
                return;
            }
            if (sp_tok_is(t, KW_NOT) && sp_tok_is(&after, KW_INDEXED)) {
                sp_next(p);
                return;
            }
            if (sp_tok_is(t, KW_USING)) {
                /* JOIN ... USING (cols); PostgreSQL DELETE ... USING t */
                f->state = after.type == SQLTOK_LPAREN ? S_NONE : S_TABLE;
                return;
            }
            if (sp_is_alias(p, t))
                return;
            f->state = S_NONE;
            continue;
        case S_ALIAS:
            f->state = S_AFTER_TABLE;
            if (sp_is_name(p, t))
                return;
            f->state = S_NONE;
            continue;
        case S_TARGET:
            if (sp_tok_is(t, KW_ONLY)) {
                after = sp_peek(p, 0);
                if (sp_is_name(p, &after))
                    return;
            }
            f->state = S_NONE;
            if (sp_is_name(p, t)) {
                struct qname qn = sp_take_qname(p, *t);
                sp_record(p, &qn);
                return;
            }
            p->write_pending = p->references_pending = false;
            continue;
        case S_IN_TABLE:
            f->state = S_NONE;
            if (sp_is_name(p, t)) {
                struct qname qn = sp_take_qname(p, *t);
                after = sp_peek(p, 0);
                p->noalias_pending = true;
                if (after.type != SQLTOK_LPAREN) /* else x IN tvf(...) */
                    sp_record(p, &qn);
                p->noalias_pending = false;
                return;
            }
            continue;
        case S_CTE_NAME:
            if (sp_is_name(p, t)) {
                f->state = S_CTE_AFTER_NAME;
                sp_names_add(p, NAME_CTE, NULL, t, NULL);
                return;
            }
            f->state = S_NONE;
            continue;
        case S_CTE_AFTER_NAME:
            if (sp_tok_is(t, KW_AS)) {
                f->state = S_CTE_AS;
                return;
            }
            f->state = S_NONE;
            continue;
        case S_CTE_AS:
            if (sp_tok_is(t, KW_NOT) || sp_tok_is(t, KW_MATERIALIZED))
                return;
            f->state = S_NONE;
            continue;
        case S_CTE_AFTER_BODY:
            f->state = S_STMT_START; /* the main statement */
            continue;
        case S_NONE:
        default: on_keyword(p, f, t); return;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Public interface                                                   */
/* ------------------------------------------------------------------ */

/* The statement proper: head, then every token up to EOF or the first
 * ';' at depth 0 outside a trigger body, after which only comments may
 * follow. */
static void analyze(struct parser *p)
{
    struct token t = sp_peek(p, 0);
    if (t.type == SQLTOK_SEMI) {
        while (t.type == SQLTOK_SEMI) {
            sp_next(p);
            t = sp_peek(p, 0);
        }
        if (t.type != SQLTOK_EOF)
            sp_fail(p, SQLPARSE_EMULTI, "more than one statement (empty statement before offset %zu)", t.pos);
    }
    if (t.type == SQLTOK_EOF) {
        sp_fail(p, SQLPARSE_ESYNTAX, "empty statement");
        return;
    }
    sp_head(p, false);
    while (!p->err) {
        t = sp_next(p);
        if (t.type == SQLTOK_EOF)
            break;
        if (t.type == SQLTOK_SEMI && p->depth == 0 && !(p->frames[0].flags & F_BODY)) {
            struct token rest = sp_next(p);
            if (rest.type != SQLTOK_EOF)
                sp_fail(p, SQLPARSE_EMULTI, "more than one statement (text after ';' at offset %zu)",
                        rest.pos);
            return;
        }
        step(p, &t);
    }
    if (p->err)
        return;
    if (p->depth > 0)
        sp_fail(p, SQLPARSE_ESYNTAX, "unbalanced parentheses: %zu '(' not closed", p->depth);
    else if (p->frames[0].flags & F_BODY)
        sp_fail(p, SQLPARSE_ESYNTAX, "unterminated CREATE TRIGGER body (missing END)");
}

int sqlparse_analyze(const char *sql, size_t len, struct route_info *out)
{
    memset(out, 0, sizeof *out);
    out->target = SIZE_MAX;
    if (sql == NULL)
        len = 0;
    const void *nul = len ? memchr(sql, '\0', len) : NULL;
    if (nul != NULL) {
        snprintf(out->error, sizeof out->error, "NUL byte at offset %zu", (size_t)((const char *)nul - sql));
        return SQLPARSE_ESYNTAX;
    }

    struct parser p;
    p.sql = sql ? sql : "";
    p.len = len;
    p.pos = 0;
    p.la_head = p.la_n = 0;
    p.cur = p.prev = (struct token){.type = SQLTOK_EOF, .kw = KW_NONE, .pos = 0, .len = 0};
    p.out = out;
    p.err = 0;
    p.kind = STMT_OTHER;
    p.flags = 0;
    p.kind_pending = p.body_pending = p.suppress = false;
    p.nvar = 0;
    p.depth = 0;
    p.frames[0] = (struct frame){.state = S_STMT_START, .flags = 0, .case_depth = 0};
    p.refs = p.inline_refs;
    p.nrefs = 0;
    p.refs_cap = sizeof p.inline_refs / sizeof p.inline_refs[0];
    p.head_writes = p.write_pending = p.target_seen = p.references_pending = p.noalias_pending = false;
    /* The seed only spreads the hash index; results do not depend on it. */
    sp_names_init(&p.names, (uint32_t)((uintptr_t)&p >> 4));

    analyze(&p);
    if (!p.err && !sp_build_result(&p))
        sp_fail(&p, SQLPARSE_ENOMEM, "out of memory");
    sp_names_free(&p.names);
    if (p.refs != p.inline_refs)
        free(p.refs);
    if (p.err) {
        sqlparse_info_free(out);
        return p.err;
    }
    out->kind = p.kind;
    out->flags = p.flags;
    out->nparams = p.nvar;
    return SQLPARSE_OK;
}

void sqlparse_info_free(struct route_info *ri)
{
    if (ri == NULL)
        return;
    free(ri->tables);
    free(ri->names);
    free(ri->refs);
    ri->tables = NULL;
    ri->names = NULL;
    ri->refs = NULL;
    ri->ntables = 0;
    ri->nrefs = 0;
    ri->target = SIZE_MAX;
}

const char *sqlparse_kind_name(enum stmt_kind kind)
{
    switch (kind) {
    case STMT_SELECT: return "select";
    case STMT_INSERT: return "insert";
    case STMT_UPDATE: return "update";
    case STMT_DELETE: return "delete";
    case STMT_DDL: return "ddl";
    case STMT_BEGIN: return "begin";
    case STMT_COMMIT: return "commit";
    case STMT_ROLLBACK: return "rollback";
    case STMT_SAVEPOINT: return "savepoint";
    case STMT_PRAGMA: return "pragma";
    case STMT_ATTACH: return "attach";
    case STMT_DETACH: return "detach";
    case STMT_VACUUM: return "vacuum";
    case STMT_EXPLAIN: return "explain";
    case STMT_OTHER:
    default: return "other";
    }
}
