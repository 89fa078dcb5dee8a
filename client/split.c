/*
 * Statement splitting for the sqlmux CLI (split.h).
 *
 * A small lexer finds the tokens that matter (';', blanks and comments,
 * quoted strings and names, words) and feeds them to the state machine
 * SQLite's sqlite3_complete() uses to know when a statement is complete:
 * a CREATE [TEMP] TRIGGER statement holds ';'s in its body and ends only
 * at "; END ;". Other statements end at their first ';'. The lexer's
 * state survives between lines, so a string or a comment may span lines.
 */
#include "client/split.h"

#include <string.h>
#include <strings.h>

enum split_lex {
    LEX_CODE,
    LEX_SQUOTE,  /* '...' */
    LEX_DQUOTE,  /* "..." */
    LEX_BQUOTE,  /* `...` */
    LEX_BRACKET, /* [...] */
    LEX_LINE_COMMENT,
    LEX_BLOCK_COMMENT,
};

/* The tokens of the completion state machine. */
enum split_token {
    TK_SEMI,
    TK_WS, /* blanks and comments */
    TK_OTHER,
    TK_EXPLAIN,
    TK_CREATE,
    TK_TEMP, /* TEMP or TEMPORARY */
    TK_TRIGGER,
    TK_END,
};

/* The states: 0 nothing seen yet, 1 at the start of a statement, 2 inside
 * an ordinary statement, 3 after EXPLAIN, 4 after CREATE [TEMP], 5 inside
 * a trigger, 6 after a ';' in a trigger, 7 after "; END" in a trigger.
 * A TK_SEMI that lands in state 1 ends a statement. */
static const unsigned char split_next_state[8][8] = {
    /*            SEMI WS OTHER EXPLAIN CREATE TEMP TRIGGER END */
    /* 0 */ {1, 0, 2, 3, 4, 2, 2, 2},
    /* 1 */ {1, 1, 2, 3, 4, 2, 2, 2},
    /* 2 */ {1, 2, 2, 2, 2, 2, 2, 2},
    /* 3 */ {1, 3, 3, 2, 4, 2, 2, 2},
    /* 4 */ {1, 4, 2, 2, 2, 4, 5, 2},
    /* 5 */ {6, 5, 5, 5, 5, 5, 5, 5},
    /* 6 */ {6, 6, 5, 5, 5, 5, 5, 7},
    /* 7 */ {1, 7, 5, 5, 5, 5, 5, 5},
};

void split_init(struct split *sp)
{
    memset(sp, 0, sizeof *sp);
    sp->content = SPLIT_NONE;
    sp->lex = LEX_CODE;
    sp->line = 1;
    sp->stmt_line = 1;
}

void split_free(struct split *sp)
{
    buf_free(&sp->text);
}

static bool is_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_word_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || c >= 0x80;
}

static enum split_token word_token(const char *w, size_t n)
{
    static const struct {
        const char *word;
        enum split_token token;
    } words[] = {
        {"EXPLAIN", TK_EXPLAIN}, {"CREATE", TK_CREATE},   {"TEMP", TK_TEMP},
        {"TEMPORARY", TK_TEMP},  {"TRIGGER", TK_TRIGGER}, {"END", TK_END},
    };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i].word) == n && strncasecmp(w, words[i].word, n) == 0)
            return words[i].token;
    return TK_OTHER;
}

int split_feed(struct split *sp, const char *s, size_t n)
{
    if (sp->start > 0) {
        buf_consume(&sp->text, sp->start);
        sp->pos -= sp->start;
        if (sp->content != SPLIT_NONE)
            sp->content -= sp->start;
        sp->start = 0;
    }
    if (buf_reserve(&sp->text, n + 1) < 0)
        return -1;
    if (buf_append(&sp->text, s, n) < 0 || buf_putc(&sp->text, '\n') < 0)
        return -1;
    return 0;
}

/* Note a token that begins at `at`; true when it ends a statement. */
static bool split_token(struct split *sp, enum split_token tk, size_t at)
{
    if (tk != TK_WS && tk != TK_SEMI && sp->content == SPLIT_NONE) {
        sp->content = at;
        sp->stmt_line = sp->line;
    }
    sp->state = split_next_state[sp->state][tk];
    return tk == TK_SEMI && sp->state == 1;
}

/* Scan on from sp->pos. True when a statement ended: sp->pos is just past
 * its ';'. */
static bool split_scan(struct split *sp)
{
    const char *t = sp->text.data;
    size_t n = sp->text.len;

    while (sp->pos < n) {
        size_t i = sp->pos;
        unsigned char c = (unsigned char)t[i];
        if (c == '\n')
            sp->line++;
        switch (sp->lex) {
        case LEX_SQUOTE:
        case LEX_DQUOTE:
        case LEX_BQUOTE:
        case LEX_BRACKET: {
            static const char closer[] = {
                [LEX_SQUOTE] = '\'', [LEX_DQUOTE] = '"', [LEX_BQUOTE] = '`', [LEX_BRACKET] = ']'};
            /* A doubled quote reopens at once: the same as staying in. */
            if (c == (unsigned char)closer[sp->lex])
                sp->lex = LEX_CODE;
            sp->pos++;
            continue;
        }
        case LEX_LINE_COMMENT:
            if (c == '\n')
                sp->lex = LEX_CODE;
            sp->pos++;
            continue;
        case LEX_BLOCK_COMMENT:
            if (c == '*' && i + 1 < n && t[i + 1] == '/') {
                sp->lex = LEX_CODE;
                sp->pos++;
            }
            sp->pos++;
            continue;
        default: break;
        }
        /* In code. */
        enum split_token tk;
        size_t len = 1;
        if (is_blank(c)) {
            tk = TK_WS;
        } else if (c == '-' && i + 1 < n && t[i + 1] == '-') {
            sp->lex = LEX_LINE_COMMENT;
            tk = TK_WS;
            len = 2;
        } else if (c == '/' && i + 1 < n && t[i + 1] == '*') {
            sp->lex = LEX_BLOCK_COMMENT;
            tk = TK_WS;
            len = 2;
        } else if (c == ';') {
            tk = TK_SEMI;
        } else if (c == '\'' || c == '"' || c == '`' || c == '[') {
            sp->lex = c == '\'' ? LEX_SQUOTE : c == '"' ? LEX_DQUOTE : c == '`' ? LEX_BQUOTE : LEX_BRACKET;
            tk = TK_OTHER;
        } else if (is_word_char(c)) {
            while (i + len < n && is_word_char((unsigned char)t[i + len]))
                len++;
            tk = word_token(t + i, len);
        } else {
            tk = TK_OTHER;
        }
        sp->pos += len;
        if (split_token(sp, tk, i))
            return true;
    }
    return false;
}

bool split_next(struct split *sp, const char **stmt, size_t *len, unsigned *line)
{
    while (split_scan(sp)) {
        size_t first = sp->content;
        sp->content = SPLIT_NONE;
        sp->start = sp->pos;
        if (first == SPLIT_NONE)
            continue; /* nothing but ';' and comments */
        *stmt = sp->text.data + first;
        *len = sp->pos - first;
        *line = sp->stmt_line;
        return true;
    }
    return false;
}

bool split_finish(struct split *sp, const char **stmt, size_t *len, unsigned *line)
{
    (void)split_scan(sp); /* whole lines were fed: no ';' ends here */
    size_t first = sp->content;
    size_t end = sp->text.len;
    sp->content = SPLIT_NONE;
    sp->start = sp->pos = end;
    sp->lex = LEX_CODE;
    sp->state = 0;
    if (first == SPLIT_NONE)
        return false;
    while (end > first && is_blank((unsigned char)sp->text.data[end - 1]))
        end--;
    *stmt = sp->text.data + first;
    *len = end - first;
    *line = sp->stmt_line;
    return true;
}

bool split_idle(const struct split *sp)
{
    return sp->content == SPLIT_NONE && sp->lex == LEX_CODE;
}

void split_discard(struct split *sp, unsigned lines)
{
    buf_reset(&sp->text);
    sp->start = sp->pos = 0;
    sp->content = SPLIT_NONE;
    sp->lex = LEX_CODE;
    sp->state = 0;
    sp->line += lines;
}
