/*
 * Output modes of the sqlmux CLI (format.h): tables measured and drawn in
 * two passes over a buffered result, CSV, TSV and JSON written row by row.
 * TSV and the hex of blobs come from the shared codec, so they are the
 * wire's own COPY text form.
 */
#include "client/format.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wchar.h>

#include "proto/buf.h"
#include "proto/codec.h"

static const struct {
    const char *name;
    enum format_mode mode;
} format_modes[] = {
    {"box", FORMAT_BOX}, {"table", FORMAT_TABLE}, {"csv", FORMAT_CSV},
    {"tsv", FORMAT_TSV}, {"json", FORMAT_JSON},   {"expanded", FORMAT_EXPANDED},
};

bool format_mode_parse(const char *name, enum format_mode *mode)
{
    for (size_t i = 0; i < sizeof format_modes / sizeof format_modes[0]; i++)
        if (strcmp(name, format_modes[i].name) == 0) {
            *mode = format_modes[i].mode;
            return true;
        }
    return false;
}

const char *format_mode_name(enum format_mode mode)
{
    for (size_t i = 0; i < sizeof format_modes / sizeof format_modes[0]; i++)
        if (format_modes[i].mode == mode)
            return format_modes[i].name;
    return "?";
}

bool format_is_table(enum format_mode mode)
{
    return mode == FORMAT_BOX || mode == FORMAT_TABLE;
}

bool format_for_people(enum format_mode mode)
{
    return format_is_table(mode) || mode == FORMAT_EXPANDED;
}

bool format_keep(const struct format *f, const sqlmux_result *res)
{
    return f->keep == NULL || f->keep(res, f->keep_arg);
}

/* ---- UTF-8 ----------------------------------------------------------- */

/* Decode the UTF-8 character at s[0..n): its length (1..4) and code point
 * in *cp, or 0 when the bytes are not valid UTF-8. */
static size_t utf8_decode(const unsigned char *s, size_t n, unsigned *cp)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, min = 0x80, c &= 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, min = 0x800, c &= 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, min = 0x10000, c &= 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

/* Columns a printable string takes on the terminal. */
static size_t display_width(const char *s, size_t n, bool utf8)
{
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        unsigned cp;
        size_t len = utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (len == 0)
            len = 1;
        int cw = utf8 && cp >= 0x80 ? wcwidth((wchar_t)cp) : 1;
        w += cw >= 0 ? (size_t)cw : 1;
        i += len;
    }
    return w;
}

/* ---- Tables ---------------------------------------------------------- */

/* Append text s[0..n) to out in the table form: control bytes and
 * invalid UTF-8 escaped (\n, \t, \r, \xHH), so nothing can break a line
 * or a border. Column names and values alike. 0 or -1. */
static int escape_text(struct buf *out, const char *text, size_t n)
{
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < n;) {
        unsigned cp;
        size_t len = utf8_decode(s + i, n - i, &cp);
        int rc;
        if (len == 1 && (cp < 0x20 || cp == 0x7f)) {
            rc = cp == '\n'   ? buf_puts(out, "\\n")
                 : cp == '\t' ? buf_puts(out, "\\t")
                 : cp == '\r' ? buf_puts(out, "\\r")
                              : buf_printf(out, "\\x%02x", cp);
        } else if (len == 0) {
            rc = buf_printf(out, "\\x%02x", s[i]);
            len = 1;
        } else {
            rc = buf_append(out, s + i, len);
        }
        if (rc < 0)
            return -1;
        i += len;
    }
    return 0;
}

/* Append the table form of field col of the current row to out: text
 * escaped (escape_text), a blob in hex, or nothing for NULL (the caller
 * prints null_text). 0 or -1. */
static int table_cell(struct buf *out, const sqlmux_result *res, int col)
{
    buf_reset(out);
    switch (sqlmux_type(res, col)) {
    case SQLMUX_NULL: return 0;
    case SQLMUX_BLOB: return codec_put_blob(out, sqlmux_blob(res, col), sqlmux_len(res, col));
    default: return escape_text(out, sqlmux_text(res, col), sqlmux_len(res, col));
    }
}

/* The table form of column col's name in out (escape_text). 0 or -1. */
static int table_name(struct buf *out, const sqlmux_result *res, int col)
{
    const char *name = sqlmux_colname(res, col);
    buf_reset(out);
    return escape_text(out, name, strlen(name));
}

/* Does text look like a number (right-aligned in tables)? */
static bool looks_numeric(const char *s, size_t n)
{
    size_t i = 0, digits = 0;
    if (n == 0)
        return false;
    if (s[i] == '-' || s[i] == '+')
        i++;
    if (n - i == 3 && strncmp(s + i, "inf", 3) == 0)
        return true;
    for (; i < n && isdigit((unsigned char)s[i]); i++)
        digits++;
    if (i < n && s[i] == '.')
        for (i++; i < n && isdigit((unsigned char)s[i]); i++)
            digits++;
    if (digits == 0)
        return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            i++;
        size_t exp = 0;
        for (; i < n && isdigit((unsigned char)s[i]); i++)
            exp++;
        if (exp == 0)
            return false;
    }
    return i == n;
}

struct table_lines {
    const char *h, *v;                                      /* horizontal, vertical */
    const char *tl, *tm, *tr, *ml, *mm, *mr, *bl, *bm, *br; /* corners and joins */
};

static const struct table_lines box_lines = {"─", "│", "┌", "┬", "┐", "├", "┼", "┤", "└", "┴", "┘"};
static const struct table_lines ascii_lines = {"-", "|", "+", "+", "+", "+", "+", "+", "+", "+", "+"};

static void table_rule(FILE *out, const struct table_lines *l, const size_t *width, int ncols,
                       const char *left, const char *mid, const char *right)
{
    fputs(left, out);
    for (int c = 0; c < ncols; c++) {
        for (size_t k = 0; k < width[c] + 2; k++)
            fputs(l->h, out);
        fputs(c + 1 < ncols ? mid : right, out);
    }
    fputc('\n', out);
}

static void pad(FILE *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fputc(' ', out);
}

int format_table(const struct format *f, sqlmux_result *res)
{
    const struct table_lines *l = f->mode == FORMAT_BOX ? &box_lines : &ascii_lines;
    int ncols = sqlmux_ncols(res);
    size_t null_width = display_width(f->null_text, strlen(f->null_text), f->utf8);
    struct buf cell = BUF_INIT;
    size_t *width = calloc((size_t)ncols, sizeof *width);
    bool *numeric = calloc((size_t)ncols, sizeof *numeric);
    bool *seen = calloc((size_t)ncols, sizeof *seen);
    int rc = -1;

    if (width == NULL || numeric == NULL || seen == NULL)
        goto done;
    for (int c = 0; c < ncols; c++) {
        if (f->header) {
            if (table_name(&cell, res, c) < 0)
                goto done;
            width[c] = display_width(cell.data, cell.len, f->utf8);
        }
        numeric[c] = true;
    }
    /* Pass 1: widths, and which columns hold only numbers. */
    (void)sqlmux_seek(res, -1);
    while (sqlmux_step(res) == SQLMUX_ROW) {
        if (!format_keep(f, res))
            continue;
        for (int c = 0; c < ncols; c++) {
            size_t w = null_width;
            if (!sqlmux_isnull(res, c)) {
                if (table_cell(&cell, res, c) < 0)
                    goto done;
                w = display_width(cell.data, cell.len, f->utf8);
                seen[c] = true;
                if (sqlmux_type(res, c) != SQLMUX_TEXT || !looks_numeric(cell.data, cell.len))
                    numeric[c] = false;
            }
            if (w > width[c])
                width[c] = w;
        }
    }
    /* Pass 2: draw. Headers are centered, numbers right-aligned. */
    FILE *out = f->out;
    table_rule(out, l, width, ncols, l->tl, l->tm, l->tr);
    if (f->header) {
        fputs(l->v, out);
        for (int c = 0; c < ncols; c++) {
            if (table_name(&cell, res, c) < 0)
                goto done;
            size_t w = display_width(cell.data, cell.len, f->utf8);
            size_t left = (width[c] - w) / 2;
            pad(out, 1 + left);
            fwrite(cell.data, 1, cell.len, out);
            pad(out, width[c] - w - left + 1);
            fputs(l->v, out);
        }
        fputc('\n', out);
        table_rule(out, l, width, ncols, l->ml, l->mm, l->mr);
    }
    (void)sqlmux_seek(res, -1);
    while (sqlmux_step(res) == SQLMUX_ROW) {
        if (!format_keep(f, res))
            continue;
        fputs(l->v, out);
        for (int c = 0; c < ncols; c++) {
            bool null = sqlmux_isnull(res, c);
            const char *text = f->null_text;
            size_t len = strlen(text), w = null_width;
            if (!null) {
                if (table_cell(&cell, res, c) < 0)
                    goto done;
                text = cell.data;
                len = cell.len;
                w = display_width(text, len, f->utf8);
            }
            bool right = numeric[c] && seen[c];
            pad(out, 1 + (right ? width[c] - w : 0));
            if (null && f->color)
                fputs("\033[2m", out);
            fwrite(text, 1, len, out);
            if (null && f->color)
                fputs("\033[0m", out);
            pad(out, 1 + (right ? 0 : width[c] - w));
            fputs(l->v, out);
        }
        fputc('\n', out);
    }
    table_rule(out, l, width, ncols, l->bl, l->bm, l->br);
    rc = 0;
done:
    buf_free(&cell);
    free(width);
    free(numeric);
    free(seen);
    return rc;
}

/* ---- CSV ------------------------------------------------------------- */

static void csv_field(FILE *out, const char *s, size_t n, bool null)
{
    if (null)
        return;
    bool quote = n == 0;
    for (size_t i = 0; i < n && !quote; i++)
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
    if (!quote) {
        fwrite(s, 1, n, out);
        return;
    }
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            fputc('"', out);
        fputc(s[i], out);
    }
    fputc('"', out);
}

/* ---- JSON ------------------------------------------------------------ */

static void json_string(FILE *out, const char *s, size_t n)
{
    fputc('"', out);
    for (size_t i = 0; i < n;) {
        unsigned cp;
        size_t len = utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (len == 0) {
            fputs("\\ufffd", out); /* not UTF-8: the replacement character */
            i++;
            continue;
        }
        switch (cp) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        case '\b': fputs("\\b", out); break;
        case '\f': fputs("\\f", out); break;
        default:
            if (cp < 0x20)
                fprintf(out, "\\u%04x", cp);
            else
                fwrite(s + i, 1, len, out);
        }
        i += len;
    }
    fputc('"', out);
}

/* A JSON number, as RFC 8259 spells one. */
static bool json_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0')
        i++;
    else if (i < n && s[i] >= '1' && s[i] <= '9')
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
    else
        return false;
    if (i < n && s[i] == '.') {
        size_t d = ++i;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        if (i == d)
            return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t d = i;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        if (i == d)
            return false;
    }
    return i == n;
}

/* Does type (in upper case) name one of words[]? */
static bool type_has(const char *up, const char *const *words)
{
    for (size_t i = 0; words[i] != NULL; i++)
        if (strstr(up, words[i]) != NULL)
            return true;
    return false;
}

enum format_kind format_value_kind(const char *type)
{
    /* PostgreSQL's names, as the daemon sends them (PROTOCOL.md): exact,
     * lower case. */
    static const char *const pg_numbers[] = {"int2",   "int4",    "int8", "float4",
                                             "float8", "numeric", "oid",  NULL};
    static const char *const pg_others[] = {"bytea",  "char",  "name",      "text",        "json",
                                            "xml",    "money", "inet",      "bpchar",      "varchar",
                                            "date",   "time",  "timestamp", "timestamptz", "interval",
                                            "timetz", "uuid",  "jsonb",     NULL};
    static const char *const sqlite_text[] = {"CHAR", "CLOB", "TEXT", "BLOB", NULL};
    char up[64];
    size_t n = strlen(type);

    if (n == 0 || type[0] == '_' || strncmp(type, "oid:", 4) == 0)
        return FORMAT_KIND_TEXT; /* an expression, an array, an unknown type */
    if (strcmp(type, "bool") == 0)
        return FORMAT_KIND_BOOL;
    for (size_t i = 0; pg_numbers[i] != NULL; i++)
        if (strcmp(type, pg_numbers[i]) == 0)
            return FORMAT_KIND_NUMBER;
    for (size_t i = 0; pg_others[i] != NULL; i++)
        if (strcmp(type, pg_others[i]) == 0)
            return FORMAT_KIND_TEXT;
    /* A SQLite declared type: its affinity (sqlite.org/datatype3.html,
     * 3.1). INTEGER, REAL and NUMERIC affinity store a value that reads as
     * a number as a number. */
    if (n >= sizeof up)
        n = sizeof up - 1;
    for (size_t i = 0; i < n; i++)
        up[i] = (char)toupper((unsigned char)type[i]);
    up[n] = '\0';
    if (strstr(up, "INT") != NULL)
        return FORMAT_KIND_NUMBER;
    return type_has(up, sqlite_text) ? FORMAT_KIND_TEXT : FORMAT_KIND_NUMBER;
}

/* The JSON form of a text field of a column of declared type `type`: a
 * number or a boolean when the type says the column holds those and the
 * text is one (a SQLite column of numeric affinity may still hold text
 * that is not a number, PostgreSQL's numeric may be NaN); else a string. */
static void json_text(FILE *out, const char *type, const char *s, size_t n)
{
    switch (format_value_kind(type)) {
    case FORMAT_KIND_NUMBER:
        if (json_number(s, n)) {
            fwrite(s, 1, n, out);
            return;
        }
        break;
    case FORMAT_KIND_BOOL:
        if (n == 1 && (s[0] == 't' || s[0] == 'f')) {
            fputs(s[0] == 't' ? "true" : "false", out);
            return;
        }
        break;
    default: break;
    }
    json_string(out, s, n);
}

/* ---- Expanded ---------------------------------------------------------- */

/* One record of the expanded mode, psql's \x:
 *
 *   -[ RECORD 1 ]-
 *   id    | 1
 *   color | red
 */
static void expanded_row(const struct format *f, const sqlmux_result *res, int64_t index)
{
    int ncols = sqlmux_ncols(res);
    size_t wide = 0;
    struct buf b = BUF_INIT;

    for (int c = 0; c < ncols; c++) {
        if (table_name(&b, res, c) < 0)
            goto done;
        size_t w = display_width(b.data, b.len, f->utf8);
        if (w > wide)
            wide = w;
    }
    fprintf(f->out, "-[ RECORD %lld ]-\n", (long long)index + 1);
    for (int c = 0; c < ncols; c++) {
        if (table_name(&b, res, c) < 0)
            goto done;
        fwrite(b.data, 1, b.len, f->out);
        pad(f->out, wide - display_width(b.data, b.len, f->utf8));
        fputs(" | ", f->out);
        if (sqlmux_isnull(res, c)) {
            fputs(f->null_text, f->out);
        } else {
            if (table_cell(&b, res, c) < 0)
                goto done;
            fwrite(b.data, 1, b.len, f->out);
        }
        fputc('\n', f->out);
    }
done:
    buf_free(&b);
}

/* ---- Streaming modes ------------------------------------------------- */

void format_begin(const struct format *f, const sqlmux_result *res)
{
    int ncols = sqlmux_ncols(res);
    struct buf b = BUF_INIT;
    switch (f->mode) {
    case FORMAT_CSV:
    case FORMAT_TSV:
        if (!f->header)
            return;
        for (int c = 0; c < ncols; c++) {
            const char *name = sqlmux_colname(res, c);
            if (c > 0)
                fputc(f->mode == FORMAT_CSV ? ',' : '\t', f->out);
            if (f->mode == FORMAT_CSV) {
                csv_field(f->out, name, strlen(name), false);
            } else {
                buf_reset(&b);
                if (codec_put_text(&b, name, strlen(name)) == 0)
                    fwrite(b.data, 1, b.len, f->out);
            }
        }
        fputc('\n', f->out);
        break;
    case FORMAT_JSON: fputc('[', f->out); break;
    default: break;
    }
    buf_free(&b);
}

void format_row(const struct format *f, const sqlmux_result *res, int64_t index)
{
    int ncols = sqlmux_ncols(res);
    FILE *out = f->out;
    struct buf b = BUF_INIT;

    if (f->mode == FORMAT_EXPANDED) {
        expanded_row(f, res, index);
        return;
    }
    if (f->mode == FORMAT_JSON)
        fputs(index > 0 ? ",\n{" : "{", out);
    for (int c = 0; c < ncols; c++) {
        enum sqlmux_type t = sqlmux_type(res, c);
        const char *s = sqlmux_text(res, c);
        size_t n = sqlmux_len(res, c);
        buf_reset(&b);
        switch (f->mode) {
        case FORMAT_CSV:
            if (c > 0)
                fputc(',', out);
            if (t == SQLMUX_BLOB && codec_put_blob(&b, s, n) == 0)
                csv_field(out, b.data, b.len, false);
            else
                csv_field(out, s, n, t == SQLMUX_NULL);
            break;
        case FORMAT_TSV: {
            if (c > 0)
                fputc('\t', out);
            int rc = t == SQLMUX_NULL   ? codec_put_null(&b)
                     : t == SQLMUX_BLOB ? codec_put_blob(&b, s, n)
                                        : codec_put_text(&b, s, n);
            if (rc == 0)
                fwrite(b.data, 1, b.len, out);
            break;
        }
        case FORMAT_JSON: {
            const char *name = sqlmux_colname(res, c);
            if (c > 0)
                fputc(',', out);
            json_string(out, name, strlen(name));
            fputc(':', out);
            if (t == SQLMUX_NULL)
                fputs("null", out);
            else if (t == SQLMUX_BLOB && codec_put_blob(&b, s, n) == 0)
                json_string(out, b.data, b.len);
            else
                json_text(out, sqlmux_coltype(res, c), s, n);
            break;
        }
        default: break;
        }
    }
    fputs(f->mode == FORMAT_JSON ? "}" : "\n", out);
    buf_free(&b);
}

void format_end(const struct format *f, const sqlmux_result *res, int64_t rows)
{
    (void)res;
    (void)rows;
    if (f->mode == FORMAT_JSON)
        fputs("]\n", f->out);
}
