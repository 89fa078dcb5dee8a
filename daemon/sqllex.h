/*
 * The one SQL lexer of the daemon: splits SQL text into tokens, skipping
 * whitespace and comments, for the statement analysis (sqlparse.c), the
 * PostgreSQL backend's placeholder rewriting and the migration runner's
 * statement splitter. It knows SQLite's lexical rules and PostgreSQL's
 * common additions ($1 parameters, :: casts, E'' strings, $tag$ dollar
 * quoting); the flags pick where the two dialects differ.
 *
 * Pure functions over the caller's text: no allocation, no state, any
 * thread.
 */
#ifndef SQLMUX_DAEMON_SQLLEX_H
#define SQLMUX_DAEMON_SQLLEX_H

#include <stdbool.h>
#include <stddef.h>

enum sqltok_type {
    SQLTOK_EOF,
    SQLTOK_WORD,   /* bare identifier or keyword */
    SQLTOK_QUOTED, /* "x", [x] or `x` */
    SQLTOK_STRING, /* 'x', E'x' or $tag$x$tag$ */
    SQLTOK_BLOB,   /* X'..' or B'..' */
    SQLTOK_NUMBER,
    SQLTOK_PARAM, /* ?, ?N, :x, @x, $x, $N */
    SQLTOK_LPAREN,
    SQLTOK_RPAREN,
    SQLTOK_COMMA,
    SQLTOK_DOT,
    SQLTOK_SEMI,
    SQLTOK_OP,    /* any other punctuation */
    SQLTOK_ERROR, /* an unterminated literal or comment starts at pos */
};

/* Dialect flags; 0 reads as SQLite does (plus the common additions). */
enum {
    SQLLEX_NESTED_COMMENTS = 1, /* block comments nest (PostgreSQL) */
    SQLLEX_NO_BRACKETS = 2,     /* [ and ` are operators, not quotes */
    SQLLEX_POSTGRES = SQLLEX_NESTED_COMMENTS | SQLLEX_NO_BRACKETS,
};

/* A token is sql[pos..pos+len); quoted tokens include their quotes and
 * prefix letter. For SQLTOK_ERROR, len runs to the end of the input and
 * what names the unterminated thing (e.g. "string literal")
 * for an "unterminated <what> at offset <pos>" message. At the end of the
 * input the token is SQLTOK_EOF at pos = len. */
struct sqltok {
    enum sqltok_type type;
    size_t pos, len;
    const char *what;
};

static inline unsigned char sqllex_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* The token at or after offset at of sql[0..len). */
struct sqltok sqllex_next(const char *sql, size_t len, size_t at, unsigned flags);

/* The offset of the first token at or after at: whitespace and comments
 * skipped; len when none; the start of an unterminated comment. */
size_t sqllex_skip(const char *sql, size_t len, size_t at, unsigned flags);

#endif
