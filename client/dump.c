/*
 * .schema and .dump of the sqlmux CLI (dump.h): the CREATE statements of a
 * bind's tables from its catalog, and INSERTs of their rows, written as
 * SQL that loads back through sqlmux.
 *
 * SQLite: the CREATE text is sqlite_schema's, and each value's storage
 * class comes from typeof() beside it, so an integer 1 and a text '1' stay
 * apart. PostgreSQL: CREATE TABLE is built from pg_catalog (columns, types,
 * defaults, NOT NULL, serial and identity columns, constraints, indexes,
 * views); values are the server's text output, typed by the result's
 * column types. What is not reproduced is listed in README.md.
 *
 * Catalog queries name no user table, so they run on the session's bind
 * (.use): sqlite_schema always does; pg_catalog's tables go where the
 * table map sends them, which is checked first.
 */
#include "client/dump.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "client/format.h"
#include "proto/buf.h"

bool dump_name_matches(const char *pattern, const char *name)
{
    const char *star = NULL, *resume = NULL;
    while (*name != '\0') {
        if (*pattern == '*' || *pattern == '%') {
            star = pattern++;
            resume = name;
        } else if (*pattern != '\0' && (*pattern == '?' || *pattern == '_' ||
                                        tolower((unsigned char)*pattern) == tolower((unsigned char)*name))) {
            pattern++;
            name++;
        } else if (star != NULL) {
            pattern = star + 1;
            name = ++resume;
        } else {
            return false;
        }
    }
    while (*pattern == '*' || *pattern == '%')
        pattern++;
    return *pattern == '\0';
}

static bool wanted(const struct dump_request *q, const char *name)
{
    if (q->npatterns == 0)
        return true;
    for (size_t i = 0; i < q->npatterns; i++)
        if (dump_name_matches(q->patterns[i], name))
            return true;
    return false;
}

/* ---- Errors and requests --------------------------------------------- */

static int fail(struct dump_error *err, const char *code, const char *msg)
{
    snprintf(err->code, sizeof err->code, "%s", code);
    snprintf(err->msg, sizeof err->msg, "%s", msg);
    return -1;
}

/* r failed: its error in *err, r freed. -1. */
static int fail_result(struct dump_error *err, sqlmux_result *r)
{
    fail(err, sqlmux_errcode(r) != NULL ? sqlmux_errcode(r) : "INTERNAL", sqlmux_errmsg(r));
    sqlmux_free(r);
    return -1;
}

/* Run sql (buffered); NULL with *err set when it failed. */
static sqlmux_result *run(sqlmux_conn *c, const char *sql, struct dump_error *err)
{
    sqlmux_result *r = sqlmux_exec(c, sql, NULL, 0);
    if (sqlmux_status(r) != SQLMUX_OK) {
        fail_result(err, r);
        return NULL;
    }
    return r;
}

/* The bind a statement reading `from` runs on (.route), in bind[n]; "" when
 * it cannot be routed. */
static int route_of(sqlmux_conn *c, const char *from, char *bind, size_t n, struct dump_error *err)
{
    struct buf line = BUF_INIT;
    bind[0] = '\0';
    if (strpbrk(from, "\n\r") != NULL)
        return 0; /* a name no command line can hold: not routable */
    if (buf_printf(&line, ".route SELECT 1 FROM %s", from) != 0 || buf_putc(&line, '\0') != 0) {
        buf_free(&line);
        return fail(err, "NOMEM", "out of memory");
    }
    sqlmux_result *r = sqlmux_command(c, line.data);
    buf_free(&line);
    if (sqlmux_status(r) == SQLMUX_OK && sqlmux_fact(r, "bind") != NULL)
        snprintf(bind, n, "%s", sqlmux_fact(r, "bind"));
    else if (sqlmux_conn_errmsg(c) != NULL)
        return fail_result(err, r);
    sqlmux_free(r);
    return 0;
}

/* ---- SQL text -------------------------------------------------------- */

/* "name" with "" for each ". */
static int put_ident(struct buf *b, const char *s)
{
    int rc = buf_putc(b, '"');
    for (; *s != '\0'; s++)
        rc |= *s == '"' ? buf_puts(b, "\"\"") : buf_putc(b, *s);
    return rc | buf_putc(b, '"');
}

/* 'text' with '' for each '. */
static void put_string(FILE *out, const char *s, size_t n)
{
    fputc('\'', out);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\'')
            fputc('\'', out);
        fputc(s[i], out);
    }
    fputc('\'', out);
}

static void put_hex(FILE *out, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%02x", s[i]);
}

/* A text a line-by-line reader would change (a CR before a line end is
 * dropped) or SQL text cannot hold (NUL). */
static bool unsafe_text(const char *s, size_t n)
{
    return memchr(s, '\r', n) != NULL || memchr(s, '\0', n) != NULL;
}

/* A SQL number literal as PostgreSQL prints numbers (not NaN, Infinity). */
static bool sql_number(const char *s, size_t n)
{
    size_t digits = 0;
    for (size_t i = 0; i < n; i++) {
        if (isdigit((unsigned char)s[i]))
            digits++;
        else if (strchr(".-+eE", s[i]) == NULL || s[i] == '\0')
            return false;
    }
    return digits > 0;
}

/* Run query sql[0..len) as a stream and write an INSERT per row: head,
 * then nvalues values (-1: one per column) each written by put(out, r, k),
 * then ");". 0, or -1 with *err set. */
static int insert_rows(sqlmux_conn *c, const char *sql, size_t len, const char *head, int nvalues,
                       void (*put)(FILE *, const sqlmux_result *, int), FILE *out, struct dump_error *err)
{
    sqlmux_result *r = sqlmux_queryn(c, sql, len, NULL, 0);
    while (sqlmux_step(r) == SQLMUX_ROW) {
        int n = nvalues >= 0 ? nvalues : sqlmux_ncols(r);
        fputs(head, out);
        for (int k = 0; k < n; k++) {
            if (k > 0)
                fputc(',', out);
            put(out, r, k);
        }
        fputs(");\n", out);
    }
    if (sqlmux_status(r) != SQLMUX_OK)
        return fail_result(err, r);
    sqlmux_free(r);
    return 0;
}

/* ---- SQLite ---------------------------------------------------------- */

/* The daemon's own tables, in every bind: not the user's schema. */
static bool sqlite_internal(const char *name)
{
    return strncmp(name, "sqlite_", 7) == 0 || strcmp(name, "sqlmux_migrations") == 0;
}

/* Value 2*k+1 of the current row, whose storage class is value 2*k. */
static void sqlite_value(FILE *out, const sqlmux_result *r, int k)
{
    const char *kind = sqlmux_text(r, 2 * k);
    const char *s = sqlmux_text(r, 2 * k + 1);
    size_t n = sqlmux_len(r, 2 * k + 1);

    if (kind == NULL || s == NULL || strcmp(kind, "null") == 0) {
        fputs("NULL", out);
    } else if (strcmp(kind, "blob") == 0) {
        fputs("X'", out);
        put_hex(out, sqlmux_blob(r, 2 * k + 1), n);
        fputc('\'', out);
    } else if (strcmp(kind, "text") == 0) {
        if (unsafe_text(s, n)) {
            fputs("CAST(X'", out);
            put_hex(out, s, n);
            fputs("' AS TEXT)", out);
        } else {
            put_string(out, s, n);
        }
    } else if (strcmp(s, "inf") == 0 || strcmp(s, "-inf") == 0) {
        fputs(s[0] == '-' ? "-1e999" : "1e999", out);
    } else {
        fwrite(s, 1, n, out); /* integer; a real in its shortest exact form */
    }
}

/* INSERTs of table `name`'s rows. */
static int sqlite_rows(sqlmux_conn *c, const char *name, FILE *out, struct dump_error *err)
{
    struct buf table = BUF_INIT, sql = BUF_INIT, head = BUF_INIT;
    int rc = -1;

    if (put_ident(&table, name) != 0 || buf_puts(&sql, "SELECT * FROM ") != 0 ||
        buf_append(&sql, table.data, table.len) != 0 || buf_puts(&sql, " LIMIT 0") != 0 ||
        buf_putc(&sql, '\0') != 0) {
        fail(err, "NOMEM", "out of memory");
        goto done;
    }
    sqlmux_result *cols = run(c, sql.data, err);
    if (cols == NULL)
        goto done;
    int ncols = sqlmux_ncols(cols);
    buf_reset(&sql);
    int brc = buf_puts(&sql, "SELECT ");
    for (int i = 0; i < ncols; i++) {
        brc |= buf_puts(&sql, i > 0 ? ", typeof(" : "typeof(") | put_ident(&sql, sqlmux_colname(cols, i)) |
               buf_puts(&sql, "), ") | put_ident(&sql, sqlmux_colname(cols, i));
    }
    brc |= buf_puts(&sql, " FROM ") | buf_append(&sql, table.data, table.len);
    sqlmux_free(cols);
    if (brc != 0) {
        fail(err, "NOMEM", "out of memory");
        goto done;
    }
    buf_reset(&head);
    if (buf_puts(&head, "INSERT INTO ") != 0 || buf_append(&head, table.data, table.len) != 0 ||
        buf_puts(&head, " VALUES(") != 0 || buf_putc(&head, '\0') != 0) {
        fail(err, "NOMEM", "out of memory");
        goto done;
    }
    rc = insert_rows(c, sql.data, sql.len, head.data, ncols, sqlite_value, out, err);
done:
    buf_free(&table);
    buf_free(&sql);
    buf_free(&head);
    return rc;
}

/* Rows of table `name` when the table map sends it to this bind (else a
 * comment saying why not). */
static int rows_if_routed(sqlmux_conn *c, const struct dump_request *q, const char *name, const char *from,
                          FILE *out,
                          int (*dump_rows)(sqlmux_conn *, const char *, FILE *, struct dump_error *),
                          struct dump_error *err)
{
    char bind[256];
    if (route_of(c, from, bind, sizeof bind, err) < 0)
        return -1;
    if (strcmp(bind, q->bind) != 0) {
        fprintf(out, "-- the rows of %s are not dumped: the table map sends it to bind %s\n", from,
                bind[0] != '\0' ? bind : "(none)");
        return 0;
    }
    return dump_rows(c, name, out, err);
}

static int sqlite_dump(sqlmux_conn *c, const struct dump_request *q, FILE *out, struct dump_error *err)
{
    sqlmux_result *schema = run(
        c, "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY rowid", err);
    int n = 0;
    struct buf from = BUF_INIT;

    if (schema == NULL)
        return -1;
    /* Tables (with their rows) first, then what depends on them: indexes,
     * triggers (after the rows, so loading does not fire them), views. */
    for (int pass = 0; pass < 2; pass++) {
        (void)sqlmux_seek(schema, -1);
        while (sqlmux_step(schema) == SQLMUX_ROW) {
            const char *type = sqlmux_text(schema, 0), *name = sqlmux_text(schema, 1);
            const char *table = sqlmux_text(schema, 2), *sql = sqlmux_text(schema, 3);
            bool is_table = strcmp(type, "table") == 0;
            if (is_table != (pass == 0) || sqlite_internal(table) || !(wanted(q, name) || wanted(q, table)))
                continue;
            if (n++ == 0 && q->rows)
                fputs("BEGIN;\n", out);
            fprintf(out, "%s;\n", sql);
            if (!is_table || !q->rows)
                continue;
            buf_reset(&from);
            if (put_ident(&from, name) != 0 || buf_putc(&from, '\0') != 0) {
                n = fail(err, "NOMEM", "out of memory");
                goto done;
            }
            if (rows_if_routed(c, q, name, from.data, out, sqlite_rows, err) < 0) {
                n = -1;
                goto done;
            }
        }
    }
    if (n > 0 && q->rows)
        fputs("COMMIT;\n", out);
done:
    buf_free(&from);
    sqlmux_free(schema);
    return n;
}

/* ---- PostgreSQL ------------------------------------------------------ */

/* The user's tables and views: oid, name as SQL writes it (schema-qualified
 * outside public), relkind, bare name. */
static const char pg_relations_sql[] =
    "SELECT c.oid, CASE WHEN n.nspname = 'public' THEN pg_catalog.quote_ident(c.relname) "
    "ELSE pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) END, "
    "c.relkind, c.relname FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p', 'v') AND n.nspname <> 'information_schema' "
    "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY c.oid";

/* Columns of relation ? (an oid): name, type, NOT NULL, default or
 * generation expression, identity, generated, owned sequence and its last
 * value. */
static const char pg_columns_sql[] =
    "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, "
    "pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, "
    "pg_catalog.pg_get_serial_sequence(a.attrelid::regclass::text, a.attname), "
    "pg_catalog.pg_sequence_last_value(pg_catalog.pg_get_serial_sequence(a.attrelid::regclass::text, "
    "a.attname)::regclass) "
    "FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_attrdef d "
    "ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
    "WHERE a.attrelid = ?::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

static const char pg_constraints_sql[] =
    "SELECT pg_catalog.quote_ident(conname), contype, pg_catalog.pg_get_constraintdef(oid) "
    "FROM pg_catalog.pg_constraint WHERE conrelid = ?::oid ORDER BY contype, conname";

/* Indexes that no constraint made. */
static const char pg_indexes_sql[] =
    "SELECT pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i "
    "WHERE i.indrelid = ?::oid AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k "
    "WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid) ORDER BY i.indexrelid";

static const char pg_view_sql[] = "SELECT pg_catalog.pg_get_viewdef(?::oid)";

/* Run one of the catalog queries above for relation oid (its parameter). */
static sqlmux_result *pg_catalog_run(sqlmux_conn *c, const char *sql, const char *oid, struct dump_error *err)
{
    sqlmux_value param = sqlmux_val_text(oid);
    sqlmux_result *r = sqlmux_exec(c, sql, &param, 1);
    if (sqlmux_status(r) != SQLMUX_OK) {
        fail_result(err, r);
        return NULL;
    }
    return r;
}

/* A PostgreSQL value of a column of type `type` as SQL. */
static void pg_value(FILE *out, const sqlmux_result *r, int col)
{
    const char *s = sqlmux_text(r, col);
    size_t n = sqlmux_len(r, col);

    switch (sqlmux_type(r, col)) {
    case SQLMUX_NULL: fputs("NULL", out); return;
    case SQLMUX_BLOB:
        fputs("'\\x", out);
        put_hex(out, sqlmux_blob(r, col), n);
        fputs("'::bytea", out);
        return;
    default: break;
    }
    if (format_value_kind(sqlmux_coltype(r, col)) == FORMAT_KIND_NUMBER && sql_number(s, n)) {
        fwrite(s, 1, n, out);
    } else if (memchr(s, '\r', n) != NULL) {
        fputs("E'", out);
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '\r')
                fputs("\\r", out);
            else if (s[i] == '\\' || s[i] == '\'')
                fprintf(out, "%c%c", s[i], s[i]);
            else
                fputc(s[i], out);
        }
        fputc('\'', out);
    } else {
        put_string(out, s, n); /* the server reads its own text output back */
    }
}

/* One PostgreSQL table: CREATE TABLE, its rows, its sequences' values; its
 * indexes and foreign keys go to `later`. */
static int pg_table(sqlmux_conn *c, const struct dump_request *q, const char *oid, const char *name,
                    FILE *out, struct buf *later, struct dump_error *err)
{
    sqlmux_result *cols = pg_catalog_run(c, pg_columns_sql, oid, err), *cons = NULL, *idx = NULL;
    struct buf insert = BUF_INIT, select = BUF_INIT;
    bool always = false;
    int rc = -1, brc = 0;

    if (cols == NULL || (cons = pg_catalog_run(c, pg_constraints_sql, oid, err)) == NULL ||
        (idx = pg_catalog_run(c, pg_indexes_sql, oid, err)) == NULL)
        goto done;
    fprintf(out, "CREATE TABLE %s (", name);
    bool first = true;
    while (sqlmux_step(cols) == SQLMUX_ROW) {
        const char *col = sqlmux_text(cols, 0), *type = sqlmux_text(cols, 1), *def = sqlmux_text(cols, 3);
        const char *identity = sqlmux_text(cols, 4), *generated = sqlmux_text(cols, 5);
        bool serial = sqlmux_text(cols, 6) != NULL && def != NULL && strncmp(def, "nextval(", 8) == 0;
        struct buf id = BUF_INIT;
        if (put_ident(&id, col) != 0 || buf_putc(&id, '\0') != 0) {
            buf_free(&id);
            fail(err, "NOMEM", "out of memory");
            goto done;
        }
        fprintf(out, "%s\n    %s ", first ? "" : ",", id.data);
        first = false;
        if (serial && strcmp(type, "integer") == 0)
            fputs("serial", out);
        else if (serial && strcmp(type, "bigint") == 0)
            fputs("bigserial", out);
        else if (serial && strcmp(type, "smallint") == 0)
            fputs("smallserial", out);
        else
            serial = false;
        if (!serial)
            fputs(type, out);
        if (identity != NULL && (identity[0] == 'a' || identity[0] == 'd')) {
            fprintf(out, " GENERATED %s AS IDENTITY", identity[0] == 'a' ? "ALWAYS" : "BY DEFAULT");
            always |= identity[0] == 'a';
        } else if (generated != NULL && generated[0] == 's') {
            fprintf(out, " GENERATED ALWAYS AS (%s) STORED", def);
        } else if (def != NULL && !serial) {
            fprintf(out, " DEFAULT %s", def);
        }
        if (strcmp(sqlmux_text(cols, 2), "t") == 0)
            fputs(" NOT NULL", out);
        if (generated == NULL || generated[0] == '\0') {
            brc |= buf_puts(&select, select.len > 0 ? ", " : "") | buf_puts(&select, id.data);
        }
        buf_free(&id);
    }
    while (sqlmux_step(cons) == SQLMUX_ROW) {
        const char *cname = sqlmux_text(cons, 0), *ctype = sqlmux_text(cons, 1), *def = sqlmux_text(cons, 2);
        if (strcmp(ctype, "f") == 0)
            brc |= buf_printf(later, "ALTER TABLE %s ADD CONSTRAINT %s %s;\n", name, cname, def);
        else
            fprintf(out, ",\n    CONSTRAINT %s %s", cname, def);
    }
    fputs("\n);\n", out);
    while (sqlmux_step(idx) == SQLMUX_ROW)
        brc |= buf_printf(later, "%s;\n", sqlmux_text(idx, 0));
    if (brc != 0 || buf_putc(&select, '\0') != 0) {
        fail(err, "NOMEM", "out of memory");
        goto done;
    }
    if (q->rows) {
        char bind[256];
        if (route_of(c, name, bind, sizeof bind, err) < 0)
            goto done;
        if (strcmp(bind, q->bind) != 0) {
            fprintf(out, "-- the rows of %s are not dumped: the table map sends it to bind %s\n", name,
                    bind[0] != '\0' ? bind : "(none)");
        } else if (select.len > 1) {
            /* The INSERT's head, its NUL, then the query. */
            int hrc = buf_printf(&insert, "INSERT INTO %s (%s)%s VALUES(", name, select.data,
                                 always ? " OVERRIDING SYSTEM VALUE" : "") |
                      buf_putc(&insert, '\0');
            size_t at = insert.len;
            if ((hrc | buf_printf(&insert, "SELECT %s FROM %s", select.data, name)) != 0) {
                fail(err, "NOMEM", "out of memory");
                goto done;
            }
            if (insert_rows(c, insert.data + at, insert.len - at, insert.data, -1, pg_value, out, err) < 0)
                goto done;
        }
        /* The sequences go on from where they were. */
        (void)sqlmux_seek(cols, -1);
        while (sqlmux_step(cols) == SQLMUX_ROW) {
            if (sqlmux_isnull(cols, 7))
                continue;
            fputs("SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence(", out);
            put_string(out, name, strlen(name));
            fputs(", ", out);
            put_string(out, sqlmux_text(cols, 0), sqlmux_len(cols, 0));
            fprintf(out, "), %s);\n", sqlmux_text(cols, 7));
        }
    }
    rc = 0;
done:
    sqlmux_free(cols);
    sqlmux_free(cons);
    sqlmux_free(idx);
    buf_free(&insert);
    buf_free(&select);
    return rc;
}

static int pg_view(sqlmux_conn *c, const char *oid, const char *name, struct buf *later,
                   struct dump_error *err)
{
    sqlmux_result *r = pg_catalog_run(c, pg_view_sql, oid, err);
    if (r == NULL)
        return -1;
    int rc = 0;
    if (sqlmux_step(r) == SQLMUX_ROW) {
        const char *def = sqlmux_text(r, 0);
        size_t n = strlen(def);
        while (n > 0 && (isspace((unsigned char)def[n - 1]) || def[n - 1] == ';'))
            n--;
        rc = buf_printf(later, "CREATE VIEW %s AS\n%.*s;\n", name, (int)n, def);
    }
    sqlmux_free(r);
    return rc != 0 ? fail(err, "NOMEM", "out of memory") : 0;
}

static int pg_dump(sqlmux_conn *c, const struct dump_request *q, FILE *out, struct dump_error *err)
{
    char bind[256];
    struct buf later = BUF_INIT;
    int n = 0;

    if (route_of(c, "pg_catalog.pg_class", bind, sizeof bind, err) < 0)
        return -1;
    if (strcmp(bind, q->bind) != 0) {
        snprintf(err->code, sizeof err->code, "ARGS");
        snprintf(err->msg, sizeof err->msg,
                 "cannot read the catalog of PostgreSQL bind %s: the table map sends pg_catalog.* to bind %s "
                 "(add pg_catalog.* = %s to [tables], or make it the default bind)",
                 q->bind, bind[0] != '\0' ? bind : "(none)", q->bind);
        return -1;
    }
    sqlmux_result *rels = run(c, pg_relations_sql, err);
    if (rels == NULL)
        return -1;
    while (sqlmux_step(rels) == SQLMUX_ROW) {
        const char *oid = sqlmux_text(rels, 0), *name = sqlmux_text(rels, 1), *kind = sqlmux_text(rels, 2);
        if (!wanted(q, sqlmux_text(rels, 3)) && !wanted(q, name))
            continue;
        if (n++ == 0 && q->rows)
            fputs("BEGIN;\n", out);
        int rc = strcmp(kind, "v") == 0 ? pg_view(c, oid, name, &later, err)
                                        : pg_table(c, q, oid, name, out, &later, err);
        if (rc < 0) {
            n = -1;
            goto done;
        }
    }
    if (later.len > 0) /* later.data is NULL while empty */
        fwrite(later.data, 1, later.len, out);
    if (n > 0 && q->rows)
        fputs("COMMIT;\n", out);
done:
    sqlmux_free(rels);
    buf_free(&later);
    return n;
}

int dump_bind(sqlmux_conn *c, const struct dump_request *q, FILE *out, struct dump_error *err)
{
    char use[300];
    snprintf(use, sizeof use, ".use %s", q->bind);
    sqlmux_result *r = sqlmux_command(c, use);
    if (sqlmux_status(r) != SQLMUX_OK)
        return fail_result(err, r);
    sqlmux_free(r);
    if (strcmp(q->type, "postgresql") == 0)
        return pg_dump(c, q, out, err);
    return sqlite_dump(c, q, out, err);
}
