/*
 * The one SQL lexer (sqllex.h): tokens of SQLite's lexical rules plus
 * PostgreSQL's common additions, comments skipped.
 *
 * Dialect notes. With flags 0 comments do not nest (SQLite); with
 * SQLLEX_NESTED_COMMENTS they do (PostgreSQL). "?" is always a parameter,
 * so PostgreSQL's jsonb "?" operator lexes as one. A letter directly
 * followed by a quote (E'..', X'..', B'..') is one literal, and $$..$$ or
 * $tag$..$tag$ is a dollar-quoted string: where SQLite would read an
 * identifier and a string, or a $-parameter, the PostgreSQL reading wins.
 * '$' is an identifier character after the first (as in both dialects),
 * so "a$1" is one word.
 *
 * Work is linear in the input: every byte is looked at a bounded number
 * of times (memchr/memmem for the ends of literals and comments).
 */
#include "daemon/sqllex.h"

#include <string.h>

static inline bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static inline bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline bool is_xdigit(unsigned char c)
{
    return is_digit(c) || (sqllex_lower(c) >= 'a' && sqllex_lower(c) <= 'f');
}

static inline bool is_id_start(unsigned char c)
{
    return (sqllex_lower(c) >= 'a' && sqllex_lower(c) <= 'z') || c == '_' || c >= 0x80;
}

static inline bool is_id_char(unsigned char c)
{
    return is_id_start(c) || is_digit(c) || c == '$';
}

/* The end of a block comment opened at s[at] ("/" "*"), just past its
 * close, or 0 when it is not closed. */
static size_t comment_end(const unsigned char *s, size_t n, size_t at, unsigned flags)
{
    if (!(flags & SQLLEX_NESTED_COMMENTS)) {
        const void *end = memmem(s + at + 2, n - at - 2, "*/", 2);
        return end ? (size_t)((const unsigned char *)end - s) + 2 : 0;
    }
    size_t depth = 1, j = at + 2;
    while (j + 1 < n) {
        if (s[j] == '/' && s[j + 1] == '*') {
            depth++;
            j += 2;
        } else if (s[j] == '*' && s[j + 1] == '/') {
            j += 2;
            if (--depth == 0)
                return j;
        } else {
            j++;
        }
    }
    return 0;
}

size_t sqllex_skip(const char *sql, size_t len, size_t at, unsigned flags)
{
    const unsigned char *s = (const unsigned char *)sql;
    size_t i = at;
    while (i < len) {
        if (is_space(s[i])) {
            i++;
        } else if (s[i] == '-' && i + 1 < len && s[i + 1] == '-') {
            const void *nl = memchr(s + i, '\n', len - i);
            i = nl ? (size_t)((const unsigned char *)nl - s) + 1 : len;
        } else if (s[i] == '/' && i + 1 < len && s[i + 1] == '*') {
            size_t end = comment_end(s, len, i, flags);
            if (end == 0)
                return i;
            i = end;
        } else {
            break;
        }
    }
    return i;
}

/* Scans a quoted token opened by s[at] whose quote character doubles to
 * escape itself; backslash escapes too when backslash is set (E'..').
 * Returns the offset just past the closing quote, or 0 when unterminated. */
static size_t scan_quoted(const unsigned char *s, size_t n, size_t at, unsigned char q, bool backslash)
{
    size_t i = at + 1;
    if (s[at] != q)
        i++; /* the prefix letter of E'..' / X'..' */
    for (;;) {
        if (backslash) {
            while (i < n && s[i] != q)
                i += s[i] == '\\' ? 2 : 1;
        } else {
            const void *hit = memchr(s + i, q, n - i);
            i = hit ? (size_t)((const unsigned char *)hit - s) : n;
        }
        if (i >= n)
            return 0;
        if (i + 1 < n && s[i + 1] == q) {
            i += 2;
            continue;
        }
        return i + 1;
    }
}

/* Scans a number at s[i]: 123, 1_000, 1.5e10, .5, 0x1F. Trailing
 * identifier characters are taken along (SQLite rejects "12abc" anyway). */
static size_t scan_number(const unsigned char *s, size_t n, size_t i)
{
    if (s[i] == '0' && i + 2 < n && sqllex_lower(s[i + 1]) == 'x' && is_xdigit(s[i + 2])) {
        i += 2;
        while (i < n && (is_xdigit(s[i]) || s[i] == '_'))
            i++;
    } else {
        while (i < n && (is_digit(s[i]) || s[i] == '_'))
            i++;
        if (i < n && s[i] == '.') {
            i++;
            while (i < n && (is_digit(s[i]) || s[i] == '_'))
                i++;
        }
        if (i < n && sqllex_lower(s[i]) == 'e') {
            size_t k = i + 1;
            if (k < n && (s[k] == '+' || s[k] == '-'))
                k++;
            if (k < n && is_digit(s[k])) {
                i = k;
                while (i < n && is_digit(s[i]))
                    i++;
            }
        }
    }
    while (i < n && is_id_char(s[i]))
        i++;
    return i;
}

/* Scans what follows '$' at s[at]: $N, $$..$$, $tag$..$tag$ or $name.
 * Returns the end, or 0 for an unterminated dollar quote. */
static size_t scan_dollar(const unsigned char *s, size_t n, size_t at, enum sqltok_type *type)
{
    size_t i = at + 1;
    *type = SQLTOK_PARAM;
    if (i < n && is_digit(s[i])) {
        while (i < n && is_digit(s[i]))
            i++;
        return i;
    }
    if (i < n && (s[i] == '$' || is_id_start(s[i]))) {
        size_t k = i;
        while (k < n && s[k] != '$' && is_id_char(s[k]))
            k++;
        if (k < n && s[k] == '$') {
            /* Dollar quote: the tag is s[at..k]. */
            size_t taglen = k - at + 1;
            const void *end = memmem(s + k + 1, n - k - 1, s + at, taglen);
            *type = SQLTOK_STRING;
            return end ? (size_t)((const unsigned char *)end - s) + taglen : 0;
        }
        while (k < n && is_id_char(s[k]))
            k++;
        return k;
    }
    *type = SQLTOK_OP;
    return i;
}

struct sqltok sqllex_next(const char *sql, size_t len, size_t at, unsigned flags)
{
    const unsigned char *s = (const unsigned char *)sql;
    size_t n = len, i = sqllex_skip(sql, len, at, flags);
    struct sqltok t = {.type = SQLTOK_EOF, .pos = n, .len = 0, .what = NULL};
    if (i >= n)
        return t;

    unsigned char c = s[i];
    size_t j = i + 1; /* end of the token; 0: unterminated */
    enum sqltok_type type = SQLTOK_OP;
    const char *what = NULL;
    switch (c) {
    case '(': type = SQLTOK_LPAREN; break;
    case ')': type = SQLTOK_RPAREN; break;
    case ',': type = SQLTOK_COMMA; break;
    case ';': type = SQLTOK_SEMI; break;
    case '/':
        if (j < n && s[j] == '*') { /* sqllex_skip() stopped at it */
            j = 0;
            what = "/* comment";
        }
        break;
    case '.':
        if (j < n && is_digit(s[j])) {
            type = SQLTOK_NUMBER;
            j = scan_number(s, n, i);
        } else {
            type = SQLTOK_DOT;
        }
        break;
    case '\'':
        type = SQLTOK_STRING;
        j = scan_quoted(s, n, i, '\'', false);
        what = "string literal";
        break;
    case '`':
        if (flags & SQLLEX_NO_BRACKETS)
            break;
        /* fall through */
    case '"':
        type = SQLTOK_QUOTED;
        j = scan_quoted(s, n, i, c, false);
        what = "quoted identifier";
        break;
    case '[':
        if (!(flags & SQLLEX_NO_BRACKETS)) {
            const void *end = memchr(s + i, ']', n - i);
            type = SQLTOK_QUOTED;
            j = end ? (size_t)((const unsigned char *)end - s) + 1 : 0;
            what = "[identifier]";
        }
        break;
    case '?':
        type = SQLTOK_PARAM;
        while (j < n && is_digit(s[j]))
            j++;
        break;
    case ':':
        if (j < n && (s[j] == ':' || s[j] == '=')) {
            j++; /* PostgreSQL cast "::" or named argument ":=" */
        } else if (j < n && is_id_char(s[j])) {
            type = SQLTOK_PARAM;
            while (j < n && is_id_char(s[j]))
                j++;
        }
        break;
    case '@':
        if (j < n && is_id_char(s[j])) {
            type = SQLTOK_PARAM;
            while (j < n && is_id_char(s[j]))
                j++;
        }
        break;
    case '$':
        j = scan_dollar(s, n, i, &type);
        what = "dollar-quoted string";
        break;
    default:
        if (is_digit(c)) {
            type = SQLTOK_NUMBER;
            j = scan_number(s, n, i);
        } else if (is_id_start(c)) {
            unsigned char lc = sqllex_lower(c);
            if (j < n && s[j] == '\'' && (lc == 'x' || lc == 'b' || lc == 'e')) {
                type = lc == 'e' ? SQLTOK_STRING : SQLTOK_BLOB;
                j = scan_quoted(s, n, i, '\'', lc == 'e');
                what = "string literal";
                break;
            }
            while (j < n && is_id_char(s[j]))
                j++;
            type = SQLTOK_WORD;
        }
        break;
    }
    t.pos = i;
    if (j == 0) {
        t.type = SQLTOK_ERROR;
        t.len = n - i;
        t.what = what;
    } else {
        t.type = type;
        t.len = j - i;
    }
    return t;
}
