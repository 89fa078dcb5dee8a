/*
 * Output modes of the sqlmux CLI: aligned tables for people (box, with
 * Unicode lines, or table, with ASCII ones) and CSV, TSV and JSON for
 * programs. Writes to a FILE; reads results only through the libsqlmux
 * API.
 *
 * How values look:
 *
 *   mode       NULL          '' (empty)   blob            text
 *   box/table  null_text     (nothing)    \x0aff          control bytes as \n \t \r \xHH
 *   csv        (nothing)     ""           \x0aff          RFC 4180 quoting when needed
 *   tsv        \N            (nothing)    \x0aff          COPY text form: \\ \t \n \r \0
 *   json       null          ""           "\\x0aff"       a JSON string, or a number (below)
 *
 * JSON writes a field as a number when its text is a JSON number (every
 * integer and real the daemon sends is) unless the column's declared type
 * has text affinity (CHAR, CLOB, TEXT), where it stays a string. "inf" and
 * "-inf" stay strings. The wire protocol does not say whether '42' was an
 * integer or a text in an untyped column, so such text becomes 42.
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
};

struct format {
    enum format_mode mode;
    FILE *out;
    bool header;           /* csv, tsv: a line of column names first */
    bool color;            /* box, table: NULL dimmed (ANSI) */
    bool utf8;             /* box, table: measure text as UTF-8 */
    const char *null_text; /* box, table: how NULL shows */
};

/* Parse a mode name ("box", "table", "csv", "tsv", "json"). */
bool format_mode_parse(const char *name, enum format_mode *mode);
const char *format_mode_name(enum format_mode mode);

/* True for the modes that need the whole result (box, table). */
bool format_is_table(enum format_mode mode);

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
