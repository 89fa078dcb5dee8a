/*
 * Output modes of the sqlmux CLI: aligned tables for people (box, with
 * Unicode lines, or table, with ASCII ones) and CSV, TSV and JSON for
 * programs. Writes to a FILE; reads results only through the libsqlmux
 * API.
 *
 * How values look:
 *
 *   mode          NULL          '' (empty)   blob            text
 *   box/table/    null_text     (nothing)    \x0aff          control bytes as \n \t \r \xHH
 *   expanded
 *   csv           (nothing)     ""           \x0aff          RFC 4180 quoting when needed
 *   tsv           \N            (nothing)    \x0aff          COPY text form: \\ \t \n \r \0
 *   json          null          ""           "\\x0aff"       a JSON string, number or boolean (below)
 *
 * Column names are escaped as values are (a newline in a name cannot
 * break a table's border).
 *
 * JSON decides by the column's declared type (format_value_kind), never by
 * the look of the text: the protocol sends every value as text, so in a
 * column without a declared type (an expression: SELECT '1', SELECT 1)
 * '1' and 1 look the same and both stay strings. A numeric column (SQLite:
 * INTEGER, REAL or NUMERIC affinity; PostgreSQL: int2/4/8, float4/8,
 * numeric, oid) gives numbers, written exactly as sent ("15.10" stays
 * 15.10), except for text that is not a JSON number ("inf", "NaN", text
 * SQLite kept in such a column); PostgreSQL's bool gives true/false.
 */
#ifndef SQLMUX_CLIENT_FORMAT_H
#define SQLMUX_CLIENT_FORMAT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "client/sqlmux.h"

enum format_mode {
    FORMAT_BOX,   /* ┌──┐ lines */
    FORMAT_TABLE, /* +--+ lines */
    FORMAT_CSV,
    FORMAT_TSV,
    FORMAT_JSON,
    FORMAT_EXPANDED, /* one "-[ RECORD n ]-" block per row, psql's \\x */
};

/* What a column's values are in JSON, from its declared type. */
enum format_kind {
    FORMAT_KIND_TEXT,   /* strings (also: no declared type) */
    FORMAT_KIND_NUMBER, /* numbers, when the text is a JSON number */
    FORMAT_KIND_BOOL,   /* PostgreSQL's bool: t/f */
};

struct format {
    enum format_mode mode;
    FILE *out;
    bool header;           /* csv, tsv, box, table: the column names first */
    bool color;            /* box, table: NULL dimmed (ANSI) */
    bool utf8;             /* box, table: measure text as UTF-8 */
    const char *null_text; /* box, table, expanded: how NULL shows */
    /* When not NULL: only the rows keep() says true of are shown (the
     * CLI's .tables PATTERN). */
    bool (*keep)(const sqlmux_result *res, void *arg);
    void *keep_arg;
};

/* Parse a mode name ("box", "table", "csv", "tsv", "json", "expanded"). */
bool format_mode_parse(const char *name, enum format_mode *mode);
const char *format_mode_name(enum format_mode mode);

/* True for the modes that need the whole result (box, table). */
bool format_is_table(enum format_mode mode);

/* True for the modes meant for people (box, table, expanded): status
 * lines follow their results. */
bool format_for_people(enum format_mode mode);

/* Whether the current row of res is shown (f->keep). */
bool format_keep(const struct format *f, const sqlmux_result *res);

/* What a column of declared type `type` ("" for none) holds, for JSON and
 * for the CLI's .dump. */
enum format_kind format_value_kind(const char *type);

/* Print every row of a buffered result that has columns, as an aligned
 * table. The result's current row is left at its end. 0, or -1 when out of
 * memory. */
int format_table(const struct format *f, sqlmux_result *res);

/* CSV, TSV and JSON print as rows arrive: format_begin() once the columns
 * are known, format_row() for the current row (index counts from 0), and
 * format_end() after the last one. */
void format_begin(const struct format *f, const sqlmux_result *res);
void format_row(const struct format *f, const sqlmux_result *res, int64_t index);
void format_end(const struct format *f, const sqlmux_result *res, int64_t rows);

#endif
