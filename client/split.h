/*
 * Splitting the sqlmux CLI's input into statements. A statement ends at a
 * ';' that is outside quotes ('', "", ``, []) and comments ("--" to the
 * end of the line, C-style blocks) and, for CREATE TRIGGER, only after the
 * body's "; END;" (the rule of sqlite3_complete()). Input comes in whole
 * lines, so a statement may span any number of lines and a line may hold
 * several statements. Pure: no I/O, no globals.
 */
#ifndef SQLMUX_CLIENT_SPLIT_H
#define SQLMUX_CLIENT_SPLIT_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/buf.h"

/* The text fed so far: text[0..start) was returned already, text[start..pos)
 * is scanned, text[pos..len) is not. `content` is where the current
 * statement's first token is (SPLIT_NONE before it). */
struct split {
    struct buf text;
    size_t start;
    size_t pos;
    size_t content;
    int lex;            /* inside code, a quote or a comment */
    int state;          /* the trigger-aware completion state */
    unsigned line;      /* the line being scanned, from 1 */
    unsigned stmt_line; /* the line of the statement's first token */
};

#define SPLIT_NONE ((size_t)-1)

void split_init(struct split *sp);
void split_free(struct split *sp);

/* Append one input line s[0..n) (without its line end; a '\n' is added).
 * Statements returned before are dropped now. 0, or -1 when out of
 * memory. */
__attribute__((warn_unused_result)) int split_feed(struct split *sp, const char *s, size_t n);

/* The next complete statement, from its first token through its ';', in
 * *stmt and *len (valid until the next split_feed or split_discard), with
 * the line it starts on. Statements with nothing but ';' or comments are
 * skipped. False when no statement is complete yet. */
bool split_next(struct split *sp, const char **stmt, size_t *len, unsigned *line);

/* At the end of the input: the incomplete rest (a statement without its
 * ';', maybe inside an unterminated quote), trailing blanks cut. False
 * when nothing but blanks and comments is left. */
bool split_finish(struct split *sp, const char **stmt, size_t *len, unsigned *line);

/* True when no statement has begun: no token since the last ';' and not
 * inside a quote or a comment. Then a line starting with '.' is a
 * dot-command, and the prompt is the first-line one. */
bool split_idle(const struct split *sp);

/* Drop the pending text (Ctrl-C at the prompt, or before a dot-command
 * line) and count `lines` more input lines that were not fed. */
void split_discard(struct split *sp, unsigned lines);

#endif
