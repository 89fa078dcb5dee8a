/*
 * Literal normalisation (sqlnorm.h): one pass of the lexer over an SQLite
 * statement, copying it with its replaceable literals turned into ?N and
 * their values decoded.
 *
 * What is replaced: decimal integers that fit in 64 bits (bound as
 * integers), '...' strings (as text, '' undone) and X'..' blobs (as
 * blobs), of at most SQLNORM_MAX_VALUE bytes. A literal and a parameter
 * both have no affinity and the same type, so comparisons, arithmetic and
 * the values stored are the same; what could differ is left alone:
 * - reals (1.5, .5, 1e3) and hex integers (0x10): SQLite's own conversion
 *   of the text is what a client gets, not strtod()'s;
 * - "-5" keeps its minus as an operator (-?1 with 5 bound is the same
 *   value; -9223372036854775808 stays a literal, as its digits do not fit);
 * - the result column list of every SELECT, and everything nested in it
 *   (SQLite names a column by its expression's text: SELECT 1 answers a
 *   column "1"), and what follows RETURNING;
 * - ORDER BY, GROUP BY and PARTITION BY (ordinals: ORDER BY 1), LIMIT and
 *   OFFSET, an upsert's conflict target, up to the end of the clause's
 *   parentheses or the next compound operator;
 * - the right side of LIKE, GLOB, REGEXP, MATCH and ESCAPE (the LIKE
 *   prefix optimisation), a literal next to COLLATE, AS or a dot, and one
 *   directly followed by an identifier character (?1 and a digit would
 *   merge);
 * - every statement but SELECT, INSERT, REPLACE, UPDATE, DELETE, WITH and
 *   VALUES (no DDL, PRAGMA, transaction control or EXPLAIN);
 * - statements with named parameters (:x, @x, $x, #x, and $x$..$x$, which
 *   the lexer takes for a PostgreSQL string), text with a NUL byte, text
 *   over SQLNORM_MAX_TEXT, unbalanced parentheses, unterminated literals,
 *   more than one statement.
 * A plain ? after a replaced literal would take the literal's number plus
 * one (SQLite numbers ? after the largest so far): it is written ?N with
 * the number it had. Literals take the numbers after the request's own
 * parameters, which must be exactly nparams in the original.
 *
 * A string in a name's place (SELECT * FROM 'tbl', INSERT INTO t('a'))
 * becomes a parameter where SQLite wants a name: a syntax error, on which
 * the caller runs the original text.
 */
#include "daemon/sqlnorm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "daemon/sqllex.h"

#define MAX_DEPTH 64
#define MAX_PARAM 32766 /* SQLite's SQLITE_MAX_VARIABLE_NUMBER */

/* Where a token stands, per parenthesis depth. */
enum region {
    REGION_NORMAL, /* literals may be replaced */
    REGION_RESULT, /* a SELECT's result columns: up to FROM, WHERE, ... */
    REGION_SKIP,   /* ORDER BY ... to the end of the parentheses */
};

struct level {
    enum region region;
    bool inside_kept; /* an outer level keeps its literals */
};

struct norm_state {
    const char *sql;
    size_t len;
    struct sqlnorm *n;
    size_t copied;  /* sql[0..copied) is in n->req.text */
    size_t values;  /* n->values[0..values) used */
    size_t nlits;   /* literals replaced */
    size_t nparams; /* the request's parameters */
};

/* The keywords the rules look at, each classified once per token (a
 * lookup by length, then one comparison or a few). */
enum {
    KW_HEAD = 1,        /* a statement that may be normalised starts with it */
    KW_SELECT = 2,      /* starts a result column list */
    KW_SKIP = 4,        /* starts ORDER BY ... (literals kept to the clause's end) */
    KW_RESET = 8,       /* a compound operator or DO: literals replaceable again */
    KW_END_RESULT = 16, /* ends a result column list */
    KW_KEEP_AFTER = 32, /* the literal right after it is kept */
    KW_FROM = 64,
    KW_DISTINCT = 128,
    KW_COLLATE = 256,
};

struct keyword {
    const char *name;
    unsigned flags;
};

/* By length: keywords_by_len[n] lists the keywords of n letters. */
static const struct keyword kw2[] = {{"as", KW_KEEP_AFTER}, {"do", KW_RESET}, {NULL, 0}};
static const struct keyword kw4[] = {{"from", KW_END_RESULT | KW_FROM},
                                     {"glob", KW_KEEP_AFTER},
                                     {"like", KW_KEEP_AFTER},
                                     {"with", KW_HEAD},
                                     {NULL, 0}};
static const struct keyword kw5[] = {{"group", KW_SKIP | KW_END_RESULT},
                                     {"limit", KW_SKIP | KW_END_RESULT},
                                     {"match", KW_KEEP_AFTER},
                                     {"order", KW_SKIP | KW_END_RESULT},
                                     {"union", KW_RESET | KW_END_RESULT},
                                     {"where", KW_END_RESULT},
                                     {NULL, 0}};
static const struct keyword kw6[] = {{"delete", KW_HEAD},
                                     {"escape", KW_KEEP_AFTER},
                                     {"except", KW_RESET | KW_END_RESULT},
                                     {"having", KW_END_RESULT},
                                     {"insert", KW_HEAD},
                                     {"offset", KW_SKIP},
                                     {"regexp", KW_KEEP_AFTER},
                                     {"select", KW_HEAD | KW_SELECT},
                                     {"update", KW_HEAD},
                                     {"values", KW_HEAD | KW_END_RESULT},
                                     {"window", KW_END_RESULT},
                                     {NULL, 0}};
static const struct keyword kw7[] = {
    {"collate", KW_KEEP_AFTER | KW_COLLATE}, {"default", KW_KEEP_AFTER}, {"replace", KW_HEAD}, {NULL, 0}};
static const struct keyword kw8[] = {{"conflict", KW_SKIP}, {"distinct", KW_DISTINCT}, {NULL, 0}};
static const struct keyword kw9[] = {
    {"intersect", KW_RESET | KW_END_RESULT}, {"partition", KW_SKIP}, {"returning", KW_SKIP}, {NULL, 0}};

#define KW_MAX_LEN 9

static const struct keyword *const keywords_by_len[KW_MAX_LEN + 1] = {NULL, NULL, kw2, NULL, kw4,
                                                                      kw5,  kw6,  kw7, kw8,  kw9};

/* The KW_ flags of token t (0: not a keyword the rules look at). */
static unsigned kw_flags(const char *sql, const struct sqltok *t)
{
    const struct keyword *k;
    char lower[KW_MAX_LEN];

    if (t->type != SQLTOK_WORD || t->len > KW_MAX_LEN)
        return 0;
    k = keywords_by_len[t->len];
    if (k == NULL)
        return 0;
    for (size_t i = 0; i < t->len; i++)
        lower[i] = (char)sqllex_lower((unsigned char)sql[t->pos + i]);
    for (; k->name != NULL; k++)
        if (k->name[0] == lower[0] && memcmp(k->name, lower, t->len) == 0)
            return k->flags;
    return 0;
}

static bool is_id_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (sqllex_lower(c) >= 'a' && sqllex_lower(c) <= 'z') || c == '_' ||
           c == '$' || c >= 0x80;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = sqllex_lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Make room for `more` bytes of text. */
static bool text_reserve(struct sqlnorm *n, size_t more)
{
    if (n->req.len + more <= n->text_cap)
        return true;
    size_t cap = n->text_cap ? n->text_cap : 256;
    while (cap < n->req.len + more)
        cap *= 2;
    char *p = realloc(n->req.text, cap);
    if (p == NULL)
        return false;
    n->req.text = p;
    n->text_cap = cap;
    return true;
}

static bool text_append(struct sqlnorm *n, const char *s, size_t len)
{
    if (!text_reserve(n, len))
        return false;
    memcpy(n->req.text + n->req.len, s, len);
    n->req.len += len;
    return true;
}

/* Copy the text up to token t, then "?index" in its place. */
static bool put_param(struct norm_state *st, const struct sqltok *t, size_t index)
{
    char num[24];
    size_t k = sizeof num;

    do {
        num[--k] = (char)('0' + index % 10);
        index /= 10;
    } while (index > 0);
    num[--k] = '?';
    if (!text_append(st->n, st->sql + st->copied, t->pos - st->copied) ||
        !text_append(st->n, num + k, sizeof num - k))
        return false;
    st->copied = t->pos + t->len;
    return true;
}

/* Decode the literal t into v: true when it is one that may be replaced
 * (its form, not its place). Strings and blobs go to st->n->values. */
static bool decode_literal(struct norm_state *st, const struct sqltok *t, struct value *v)
{
    const unsigned char *s = (const unsigned char *)st->sql + t->pos;
    char *dst = st->n->values + st->values;
    size_t o = 0;

    memset(v, 0, sizeof *v);
    switch (t->type) {
    case SQLTOK_NUMBER: {
        uint64_t x = 0;
        for (size_t i = 0; i < t->len; i++) {
            if (s[i] < '0' || s[i] > '9' || x > (uint64_t)(INT64_MAX - (s[i] - '0')) / 10)
                return false;
            x = x * 10 + (uint64_t)(s[i] - '0');
        }
        v->type = VALUE_INT;
        v->i = (int64_t)x;
        return true;
    }
    case SQLTOK_STRING:
        if (s[0] != '\'' || t->len - 2 > SQLNORM_MAX_VALUE)
            return false;
        for (size_t i = 1; i + 1 < t->len; i++) {
            if (s[i] == '\'')
                i++; /* the lexer guarantees quotes come in pairs */
            dst[o++] = (char)s[i];
        }
        v->type = VALUE_TEXT;
        break;
    case SQLTOK_BLOB:
        if (sqllex_lower(s[0]) != 'x' || (t->len - 3) % 2 != 0 || (t->len - 3) / 2 > SQLNORM_MAX_VALUE)
            return false;
        for (size_t i = 2; i + 1 < t->len; i += 2) {
            int hi = hex_value(s[i]), lo = hex_value(s[i + 1]);
            if (hi < 0 || lo < 0)
                return false;
            dst[o++] = (char)(hi << 4 | lo);
        }
        v->type = VALUE_BLOB;
        break;
    default: return false;
    }
    v->p = dst; /* never NULL, so '' and X'' bind as empty, not NULL */
    v->len = o;
    st->values += o;
    return true;
}

/* Whether the literal t, between prev and next, stands where a parameter
 * means the same (the context rules of the file comment). */
static bool replaceable_here(const char *sql, size_t len, const struct sqltok *prev, unsigned prev_kw,
                             const struct sqltok *t, const struct sqltok *next, unsigned next_kw)
{
    size_t end = t->pos + t->len;

    if (end < len && is_id_char((unsigned char)sql[end]))
        return false;
    if (prev->type == SQLTOK_DOT || next->type == SQLTOK_DOT || (next_kw & KW_COLLATE))
        return false;
    return !(prev_kw & KW_KEEP_AFTER);
}

/* Whether the plain or numbered ? t may stay; *index gets its number
 * (SQLite's: ?N is N, ? is the largest so far plus one). */
static bool param_index(const char *sql, const struct sqltok *t, size_t max_so_far, size_t *index)
{
    size_t x = 0;

    if (sql[t->pos] != '?')
        return false; /* named: :x @x $x */
    if (t->len == 1) {
        *index = max_so_far + 1;
        return true;
    }
    for (size_t i = 1; i < t->len; i++) {
        x = x * 10 + (size_t)(sql[t->pos + i] - '0');
        if (x > MAX_PARAM)
            return false;
    }
    *index = x;
    return x > 0;
}

/* Make room for the request's parameters plus one more literal. */
static bool params_reserve(struct sqlnorm *n, size_t want)
{
    if (want <= n->params_cap)
        return true;
    size_t cap = n->params_cap ? n->params_cap * 2 : 16;
    while (cap < want)
        cap *= 2;
    struct value *p = realloc(n->req.params, cap * sizeof *p);
    if (p == NULL)
        return false;
    n->req.params = p;
    n->params_cap = cap;
    return true;
}

/* Make room for want literal positions. */
static bool lits_reserve(struct sqlnorm *n, size_t want)
{
    if (want <= n->lits_cap)
        return true;
    size_t cap = n->lits_cap ? n->lits_cap * 2 : 16;
    while (cap < want)
        cap *= 2;
    size_t *p = realloc(n->lits, cap * sizeof *p);
    if (p == NULL)
        return false;
    n->lits = p;
    n->lits_cap = cap;
    return true;
}

/* sqlnorm_sqlite(), and sqlnorm_route_key() when any_params (the request's
 * parameters are not known: their count is not checked). */
static bool normalise(struct sqlnorm *n, const char *sql, size_t len, const struct value *params,
                      size_t nparams, size_t max_len, bool any_params)
{
    struct level levels[MAX_DEPTH];
    struct norm_state st = {.sql = sql, .len = len, .n = n, .nparams = nparams};
    struct sqltok none = {.type = SQLTOK_EOF, .pos = 0, .len = 0, .what = NULL};
    struct sqltok prev = none, t, next;
    size_t depth = 0, max_param = 0;
    unsigned prev_kw = 0, kw, next_kw;
    bool ended = false;

    if (len > max_len || len > SQLNORM_MAX_TEXT || nparams > MAX_PARAM || memchr(sql, '\0', len) != NULL)
        return false;
    t = sqllex_next(sql, len, 0, 0);
    kw = kw_flags(sql, &t);
    if (!(kw & KW_HEAD))
        return false;
    if (n->values_cap < len + 1) {
        char *v = realloc(n->values, len + 1);
        if (v == NULL)
            return false;
        n->values = v;
        n->values_cap = len + 1;
    }
    if (!params_reserve(n, nparams + 1))
        return false;
    if (nparams > 0)
        memcpy(n->req.params, params, nparams * sizeof *params);
    n->req.type = REQUEST_SQL;
    n->req.len = 0;
    n->nlits = 0;
    levels[0] = (struct level){REGION_NORMAL, false};
    for (; t.type != SQLTOK_EOF; prev = t, prev_kw = kw, t = next, kw = next_kw) {
        struct level *lv = &levels[depth];
        next = sqllex_next(sql, len, t.pos + t.len, 0);
        next_kw = kw_flags(sql, &next);
        if (t.type == SQLTOK_ERROR || (ended && t.type != SQLTOK_SEMI))
            return false;
        switch (t.type) {
        case SQLTOK_SEMI: ended = true; break;
        case SQLTOK_LPAREN:
            if (++depth == MAX_DEPTH)
                return false;
            levels[depth] = (struct level){REGION_NORMAL, lv->inside_kept || lv->region != REGION_NORMAL};
            break;
        case SQLTOK_RPAREN:
            if (depth-- == 0)
                return false;
            break;
        case SQLTOK_WORD:
            if (kw & KW_SELECT)
                lv->region = REGION_RESULT;
            else if (kw & KW_SKIP)
                lv->region = REGION_SKIP;
            else if (kw & KW_RESET)
                lv->region = REGION_NORMAL;
            else if (lv->region == REGION_RESULT && (kw & KW_END_RESULT) &&
                     !((kw & KW_FROM) && (prev_kw & KW_DISTINCT)))
                lv->region = REGION_NORMAL;
            break;
        case SQLTOK_OP:
            if (sql[t.pos] == '#')
                return false; /* SQLite reads #name as a parameter */
            break;
        case SQLTOK_PARAM: {
            size_t index;
            if (!param_index(sql, &t, max_param, &index))
                return false;
            if (index > max_param)
                max_param = index;
            if (st.nlits > 0 && t.len == 1) {
                /* A literal before it took a number: keep its own. */
                if (lv->inside_kept || lv->region != REGION_NORMAL || !put_param(&st, &t, index))
                    return false;
            }
            break;
        }
        case SQLTOK_NUMBER:
        case SQLTOK_STRING:
        case SQLTOK_BLOB: {
            struct value v;
            if (sql[t.pos] == '$')
                return false; /* $x$...$x$ is a parameter to SQLite */
            if (lv->inside_kept || lv->region != REGION_NORMAL || st.nlits == SQLNORM_MAX_LITERALS ||
                nparams + st.nlits + 1 > MAX_PARAM ||
                !replaceable_here(sql, len, &prev, prev_kw, &t, &next, next_kw) ||
                !decode_literal(&st, &t, &v))
                break;
            if (!params_reserve(n, nparams + st.nlits + 1) || !lits_reserve(n, st.nlits + 1))
                return false;
            n->lits[n->nlits++] = n->req.len + (t.pos - st.copied);
            if (!put_param(&st, &t, nparams + st.nlits + 1))
                return false;
            n->req.params[nparams + st.nlits++] = v;
            break;
        }
        default: break;
        }
    }
    if (st.nlits == 0 || depth != 0 || (max_param != nparams && !any_params) ||
        !text_append(n, sql + st.copied, len - st.copied))
        return false;
    n->req.nparams = nparams + st.nlits;
    n->max_param = max_param;
    return true;
}

bool sqlnorm_sqlite(struct sqlnorm *n, const char *sql, size_t len, const struct value *params,
                    size_t nparams, size_t max_len)
{
    return normalise(n, sql, len, params, nparams, max_len, false);
}

bool sqlnorm_route_key(struct sqlnorm *n, const char *sql, size_t len)
{
    return normalise(n, sql, len, NULL, 0, SQLNORM_MAX_TEXT, true);
}

/* The replaceable literal at sql[at..len) into v (strings and blobs
 * decoded into n->values at *values), as decode_literal() takes it: a
 * decimal integer that fits in 64 bits, a '...' string or an X'..' blob of
 * at most SQLNORM_MAX_VALUE bytes (a string with a NUL byte is not: the
 * lexer's caller refuses such a text). Returns its end, or 0. */
static size_t match_literal(struct sqlnorm *n, const char *sql, size_t len, size_t at, size_t *values,
                            struct value *v)
{
    const unsigned char *s = (const unsigned char *)sql;
    char *dst = n->values + *values;
    size_t i = at, o = 0;

    memset(v, 0, sizeof *v);
    /* A number or X'' right after a name's last character would be part
     * of the name to the lexer ("AND5"); a string would not. */
    if (i > 0 && is_id_char(s[i - 1]) && s[i] != '\'')
        return 0;
    if (i < len && s[i] >= '0' && s[i] <= '9') {
        uint64_t x = 0;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (x > (uint64_t)(INT64_MAX - (s[i] - '0')) / 10)
                return 0;
            x = x * 10 + (uint64_t)(s[i] - '0');
        }
        v->type = VALUE_INT;
        v->i = (int64_t)x;
        return i;
    }
    if (i < len && s[i] == '\'') {
        for (i++;; i++) {
            /* At most SQLNORM_MAX_VALUE bytes between the quotes, as
             * written (decode_literal()). */
            if (i >= len || s[i] == '\0' || i - at - 1 > SQLNORM_MAX_VALUE)
                return 0;
            if (s[i] == '\'') {
                if (i + 1 < len && s[i + 1] == '\'')
                    i++; /* '' is one quote */
                else
                    break;
            }
            dst[o++] = (char)s[i];
        }
        v->type = VALUE_TEXT;
    } else if (i + 1 < len && sqllex_lower(s[i]) == 'x' && s[i + 1] == '\'') {
        for (i += 2; i + 1 < len && s[i] != '\''; i += 2) {
            int hi = hex_value(s[i]), lo = hex_value(s[i + 1]);
            if (hi < 0 || lo < 0 || o == SQLNORM_MAX_VALUE)
                return 0;
            dst[o++] = (char)(hi << 4 | lo);
        }
        if (i >= len || s[i] != '\'')
            return 0;
        v->type = VALUE_BLOB;
    } else {
        return 0;
    }
    v->p = dst;
    v->len = o;
    *values += o;
    return i + 1;
}

bool sqlnorm_match(struct sqlnorm *n, const char *tmpl, size_t tlen, const size_t *lits, size_t nlits,
                   const char *sql, size_t len)
{
    size_t i = 0, j = 0, values = 0;

    if (nlits == 0 || len > SQLNORM_MAX_TEXT || !params_reserve(n, nlits) || !lits_reserve(n, nlits))
        return false;
    if (n->values_cap < len + 1) {
        char *v = realloc(n->values, len + 1);
        if (v == NULL)
            return false;
        n->values = v;
        n->values_cap = len + 1;
    }
    for (size_t k = 0; k < nlits; k++) {
        size_t seg = lits[k] - j;
        if (lits[k] < j || lits[k] >= tlen || len - i < seg || memcmp(sql + i, tmpl + j, seg) != 0)
            return false;
        i += seg;
        /* Past "?N", N = k + 1. */
        j = lits[k] + 1;
        while (j < tlen && tmpl[j] >= '0' && tmpl[j] <= '9')
            j++;
        i = match_literal(n, sql, len, i, &values, &n->req.params[k]);
        if (i == 0)
            return false;
    }
    if (len - i != tlen - j || memcmp(sql + i, tmpl + j, tlen - j) != 0)
        return false;
    n->req.len = 0;
    if (!text_append(n, tmpl, tlen))
        return false;
    n->req.type = REQUEST_SQL;
    n->req.nparams = nlits;
    memcpy(n->lits, lits, nlits * sizeof *lits);
    n->nlits = nlits;
    n->max_param = 0;
    return true;
}

struct request *sqlnorm_copy(const struct sqlnorm *n)
{
    const struct request *src = &n->req;
    size_t values = 0, at;
    struct request *r;
    char *block;

    if (n->max_param != 0)
        return NULL;
    for (size_t i = 0; i < src->nparams; i++)
        values +=
            src->params[i].type == VALUE_TEXT || src->params[i].type == VALUE_BLOB ? src->params[i].len : 0;
    block = malloc(sizeof *r + src->nparams * sizeof *src->params + src->len + 1 + values);
    if (block == NULL)
        return NULL;
    r = (struct request *)(void *)block;
    *r = (struct request){.type = REQUEST_SQL, .len = src->len, .nparams = src->nparams};
    r->params = (struct value *)(void *)(block + sizeof *r);
    at = sizeof *r + src->nparams * sizeof *src->params;
    r->text = block + at;
    memcpy(r->text, src->text, src->len);
    r->text[src->len] = '\0';
    at += src->len + 1;
    for (size_t i = 0; i < src->nparams; i++) {
        r->params[i] = src->params[i];
        if (src->params[i].type == VALUE_TEXT || src->params[i].type == VALUE_BLOB) {
            r->params[i].p = block + at;
            memcpy(r->params[i].p, src->params[i].p, src->params[i].len);
            at += src->params[i].len;
        }
    }
    return r;
}

void sqlnorm_free(struct sqlnorm *n)
{
    free(n->req.text);
    free(n->req.params);
    free(n->values);
    free(n->lits);
    memset(n, 0, sizeof *n);
}
