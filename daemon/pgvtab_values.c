/*
 * sqlmux_pg's values (see daemon/pgvtab.c): the mapping of PostgreSQL types
 * to SQLite declared types, affinities and classes, and the conversion of
 * values between the two (parameters, IN lists, results, rowids).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/pgvtab_int.h"

/* ---- Type mapping ------------------------------------------------------ */

/* SQLite's rule for the affinity of a declared type (datatype3.html 3.1),
 * with REAL and INTEGER folded into NUMERIC (all convert text the same way
 * for a comparison). */
static enum affinity decl_affinity(const char *decl)
{
    char up[64];
    size_t i;
    for (i = 0; decl[i] && i + 1 < sizeof up; i++)
        up[i] = (char)(decl[i] >= 'a' && decl[i] <= 'z' ? decl[i] - 32 : decl[i]);
    up[i] = 0;
    if (strstr(up, "INT"))
        return AFF_NUMERIC;
    if (strstr(up, "CHAR") || strstr(up, "CLOB") || strstr(up, "TEXT"))
        return AFF_TEXT;
    if (strstr(up, "BLOB") || !*up)
        return AFF_BLOB;
    return AFF_NUMERIC;
}

enum col_class pgv_kind_class(enum col_kind k)
{
    switch (k) {
    case KIND_TEXT:
    case KIND_OTHER: return CLASS_TEXT;
    case KIND_BYTEA: return CLASS_BLOB;
    default: return CLASS_NUM;
    }
}

/* Whether PostgreSQL decides a comparison exactly as SQLite would (the
 * constraint may be omitted). */
bool pgv_kind_exact(enum col_kind k)
{
    return k != KIND_FLOAT && k != KIND_NUMERIC && k != KIND_FLT4;
}

/* Whether ORDER BY the column in PostgreSQL gives SQLite's order. */
bool pgv_kind_orderable(enum col_kind k)
{
    return k == KIND_INT || k == KIND_BOOL || k == KIND_TEXT || k == KIND_BYTEA;
}

/* The column as PostgreSQL compares it. */
void pgv_put_col_expr(sqlite3_str *s, const struct pgcol *c)
{
    switch (c->kind) {
    case KIND_BOOL: sqlite3_str_appendf(s, "%s::int4", c->qname); break;
    case KIND_OTHER: sqlite3_str_appendf(s, "%s::text", c->qname); break;
    default: sqlite3_str_appendall(s, c->qname);
    }
}

/* Kind and declared type of a column of PostgreSQL type `typname`
 * (format_type's text `fmt`), collation deterministic or not. */
void pgv_col_type(struct pgcol *c, const char *typname, const char *fmt, bool deterministic)
{
    static const struct {
        const char *typname, *decl;
        enum col_kind kind;
    } map[] = {
        {"int2", "SMALLINT", KIND_INT},       {"int4", "INTEGER", KIND_INT},
        {"int8", "BIGINT", KIND_INT},         {"bool", "BOOLEAN", KIND_BOOL},
        {"float4", "REAL", KIND_FLT4},        {"float8", "DOUBLE PRECISION", KIND_FLOAT},
        {"numeric", "NUMERIC", KIND_NUMERIC}, {"text", "TEXT", KIND_TEXT},
        {"varchar", "VARCHAR", KIND_TEXT},    {"name", "TEXT", KIND_TEXT},
        {"bytea", "BLOB", KIND_BYTEA},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(typname, map[i].typname) == 0) {
            c->kind = map[i].kind;
            if (c->kind == KIND_TEXT && !deterministic)
                c->kind = KIND_OTHER;
            /* keep varchar(n) and numeric(p,s) as written */
            c->decl = (strcmp(typname, "varchar") == 0 || strcmp(typname, "numeric") == 0)
                          ? sqlite3_mprintf("%s", fmt)
                          : sqlite3_mprintf("%s", map[i].decl);
            break;
        }
    }
    if (!c->decl) {
        c->kind = KIND_OTHER;
        c->decl = sqlite3_mprintf("%s", fmt);
    }
    if (c->decl) {
        for (char *p = c->decl; *p; p++)
            if (*p >= 'a' && *p <= 'z')
                *p = (char)(*p - 32);
    }
    c->aff = c->decl ? decl_affinity(c->decl) : AFF_BLOB;
}

/* ---- Values to parameters ------------------------------------------------ */

/* The class of `val` after the column's affinity, as SQLite compares it.
 * *conv gets a converted copy when one was needed (free it). */
enum col_class pgv_value_class(const struct pgcol *c, sqlite3_value *val, sqlite3_value **conv)
{
    *conv = NULL;
    int type = sqlite3_value_type(val);
    if (type == SQLITE_TEXT && c->aff == AFF_NUMERIC) {
        sqlite3_value *d = sqlite3_value_dup(val);
        if (d) {
            type = sqlite3_value_numeric_type(d);
            *conv = d;
        }
    }
    switch (type) {
    case SQLITE_NULL: return CLASS_NULL;
    case SQLITE_INTEGER:
    case SQLITE_FLOAT: return c->aff == AFF_TEXT ? CLASS_TEXT : CLASS_NUM;
    case SQLITE_TEXT: return CLASS_TEXT;
    default: return CLASS_BLOB;
    }
}

/* Text of a number as PostgreSQL reads it; *cast "int8" or "float8". */
static char *num_text(sqlite3_value *val, const char **cast)
{
    if (sqlite3_value_type(val) == SQLITE_INTEGER) {
        *cast = "int8";
        return sqlite3_mprintf("%lld", (long long)sqlite3_value_int64(val));
    }
    double d = sqlite3_value_double(val);
    if (d == floor(d) && fabs(d) < 9.2e18) {
        *cast = "int8";
        return sqlite3_mprintf("%lld", (long long)d);
    }
    *cast = "float8";
    if (isinf(d))
        return sqlite3_mprintf("%s", d > 0 ? "Infinity" : "-Infinity");
    return sqlite3_mprintf("%!.17g", d);
}

/* bytes as bytea's hex input "\x0a1b". */
char *pgv_hex_text(const unsigned char *p, int n)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendall(s, "\\x");
    for (int i = 0; i < n; i++)
        sqlite3_str_appendf(s, "%02x", p[i]);
    return sqlite3_str_finish(s);
}

/* The parameter text of a value of the column's class. */
char *pgv_param_text(const struct pgcol *c, enum col_class cls, sqlite3_value *val, const char **cast)
{
    (void)c;
    switch (cls) {
    case CLASS_NUM: return num_text(val, cast);
    case CLASS_TEXT: *cast = "text"; return sqlite3_mprintf("%s", (const char *)sqlite3_value_text(val));
    default: *cast = "bytea"; return pgv_hex_text(sqlite3_value_blob(val), sqlite3_value_bytes(val));
    }
}

/* Whether a text value can be PostgreSQL text: valid UTF-8 (no overlong
 * forms, surrogates or code points past U+10FFFF) without NUL. SQLite
 * holds any bytes as text. */
bool pgv_pg_text_ok(sqlite3_value *val)
{
    const unsigned char *s = sqlite3_value_text(val);
    size_t n = (size_t)sqlite3_value_bytes(val), i = 0;
    while (s && i < n) {
        unsigned c = s[i], min;
        size_t len;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0)
            len = 2, min = 0x80, c &= 0x1F;
        else if ((c & 0xF0) == 0xE0)
            len = 3, min = 0x800, c &= 0x0F;
        else if ((c & 0xF8) == 0xF0)
            len = 4, min = 0x10000, c &= 0x07;
        else
            return false;
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            c = c << 6 | (s[i + k] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

/* An array literal element: "..." with \ and " escaped. */
static void put_array_elem(sqlite3_str *s, const char *v)
{
    sqlite3_str_appendchar(s, 1, '"');
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            sqlite3_str_appendchar(s, 1, '\\');
        sqlite3_str_appendchar(s, 1, *v);
    }
    sqlite3_str_appendchar(s, 1, '"');
}

/* The IN list of argv value `list` as an array parameter of the column's
 * class; *count gets its number of elements (0: no element can match),
 * *numbers whether the list holds integers or reals. */
int pgv_in_param(const struct pgcol *c, sqlite3_value *list, char **out, const char **cast, int *count,
                 bool *numbers)
{
    enum col_class want = pgv_kind_class(c->kind);
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_value *e = NULL;
    int n = 0;
    bool real = false;
    sqlite3_str_appendchar(s, 1, '{');
    int rc;
    for (rc = sqlite3_vtab_in_first(list, &e); rc == SQLITE_OK && e; rc = sqlite3_vtab_in_next(list, &e)) {
        sqlite3_value *conv;
        enum col_class cls = pgv_value_class(c, e, &conv);
        sqlite3_value *x = conv ? conv : e;
        *numbers =
            *numbers || sqlite3_value_type(e) == SQLITE_INTEGER || sqlite3_value_type(e) == SQLITE_FLOAT;
        if (cls == want && (cls != CLASS_TEXT || pgv_pg_text_ok(x))) { /* no PostgreSQL text equals it */
            const char *ec = NULL;
            char *txt = pgv_param_text(c, cls, x, &ec);
            if (!txt) {
                sqlite3_value_free(conv);
                rc = SQLITE_NOMEM;
                break;
            }
            if (n++)
                sqlite3_str_appendchar(s, 1, ',');
            put_array_elem(s, txt);
            real = real || strcmp(ec, "float8") == 0;
            sqlite3_free(txt);
        }
        sqlite3_value_free(conv);
    }
    sqlite3_str_appendchar(s, 1, '}');
    char *arr = sqlite3_str_finish(s);
    if (rc != SQLITE_OK && rc != SQLITE_DONE) {
        sqlite3_free(arr);
        return rc;
    }
    if (!arr)
        return SQLITE_NOMEM;
    *count = n;
    *out = arr;
    *cast = want == CLASS_NUM ? (real ? "float8[]" : "int8[]") : want == CLASS_TEXT ? "text[]" : "bytea[]";
    return SQLITE_OK;
}

/* What a comparison gives when the value's class differs from the
 * column's (SQLite: NULL < numbers < text < blobs). */
enum term_fix pgv_mismatch(enum term_op op, enum col_class col, enum col_class val)
{
    if (val == CLASS_NULL)
        return FIX_FALSE;
    bool col_less = col < val;
    switch (op) {
    case OP_NE: return FIX_TRUE;
    case OP_EQ: return FIX_FALSE;
    case OP_LT:
    case OP_LE: return col_less ? FIX_TRUE : FIX_FALSE;
    default: return col_less ? FIX_FALSE : FIX_TRUE;
    }
}

/* ---- Results, rowids and written values -------------------------------- */

/* A numeric's text as SQLite's NUMERIC affinity would store it: an integer
 * when integral and in range, else a real; NaN is NULL. */
void pgv_result_numeric(sqlite3_context *ctx, const char *s)
{
    char *end;
    errno = 0;
    long long i = strtoll(s, &end, 10);
    if (*end == 0 && errno == 0) {
        sqlite3_result_int64(ctx, i);
        return;
    }
    if (*end == '.') {
        const char *z = end + 1;
        while (*z == '0')
            z++;
        if (*z == 0 && errno == 0) {
            sqlite3_result_int64(ctx, i);
            return;
        }
    }
    double d = strtod(s, NULL);
    sqlite3_result_double(ctx, d); /* NaN becomes NULL in SQLite */
}

/* ctid "(block,offset)" <-> rowid block * 65536 + offset. */
char *pgv_rowid_param(const struct pgtable *t, sqlite3_int64 r)
{
    if (t->keycol >= 0)
        return sqlite3_mprintf("%lld", (long long)r);
    return sqlite3_mprintf("(%lld,%lld)", (long long)(r / 65536), (long long)(r % 65536));
}

sqlite3_int64 pgv_ctid_rowid(const char *s)
{
    unsigned long long blk = 0, off = 0;
    if (sscanf(s, "(%llu,%llu)", &blk, &off) != 2)
        return -1;
    return (sqlite3_int64)(blk * 65536 + off);
}

/* A column value as a text parameter (NULL: SQL NULL). */
char *pgv_write_text(const struct pgcol *c, sqlite3_value *val)
{
    switch (sqlite3_value_type(val)) {
    case SQLITE_NULL: return NULL;
    case SQLITE_INTEGER:
    case SQLITE_FLOAT:
        if (c->kind != KIND_BYTEA) {
            const char *cast;
            return num_text(val, &cast);
        }
        break;
    default: break;
    }
    if (c->kind == KIND_BYTEA)
        return pgv_hex_text(sqlite3_value_blob(val), sqlite3_value_bytes(val));
    return sqlite3_mprintf("%.*s", sqlite3_value_bytes(val), (const char *)sqlite3_value_text(val));
}
