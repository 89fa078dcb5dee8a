/*
 * The migration engine's PostgreSQL adapter (struct mdb_ops: the migration
 * lock is a transaction-scoped advisory lock, errors carry their SQLSTATE
 * and the line of the failing statement) and the blocking connection
 * migrations use.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/migrate_int.h"
#include "daemon/sqllex.h"

/* pg_advisory_xact_lock key of migration runs: "sqlmux" as a number. */
#define MIGRATE_PG_LOCK "126930987611512"
#define MIGRATE_PG_TABLE_DDL                                                                                 \
    "CREATE TABLE IF NOT EXISTS " MIGRATE_TABLE " (version bigint PRIMARY KEY, name text NOT NULL, "         \
    "checksum text NOT NULL, applied_at text NOT NULL)"

/* "message (SQLSTATE XXXXX)" of an error result, or the connection's
 * error. */
static void pg_error_text(PGconn *conn, const PGresult *res, char *dst, size_t n)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    size_t len;

    if (primary != NULL && state != NULL) {
        snprintf(dst, n, "%s (SQLSTATE %s)", primary, state);
        return;
    }
    snprintf(dst, n, "%s",
             res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : PQerrorMessage(conn));
    len = strlen(dst);
    while (len > 0 && (dst[len - 1] == '\n' || dst[len - 1] == ' '))
        dst[--len] = '\0';
}

/* Run one command; 0 when it succeeded. */
static int pg_exec(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    char msg[512];

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(res);
        return 0;
    }
    pg_error_text(conn, res, msg, sizeof msg);
    snprintf(err, errlen, "%s: %s", what, msg);
    PQclear(res);
    return -1;
}

static int pg_begin(void *h, char *err, size_t errlen)
{
    PGconn *conn = h;
    if (pg_exec(conn, "BEGIN", "BEGIN", err, errlen) != 0)
        return -1;
    if (pg_exec(conn, "SELECT pg_advisory_xact_lock(" MIGRATE_PG_LOCK ")", "cannot take the migration lock",
                err, errlen) != 0 ||
        pg_exec(conn, MIGRATE_PG_TABLE_DDL, "cannot create " MIGRATE_TABLE, err, errlen) != 0) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return -1;
    }
    return 0;
}

static int pg_end(void *h, bool commit, char *err, size_t errlen)
{
    PGconn *conn = h;
    PGresult *res;
    bool ok;

    if (PQtransactionStatus(conn) == PQTRANS_IDLE)
        return 0;
    if (!commit) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return 0;
    }
    res = PQexec(conn, "COMMIT");
    /* A transaction in error answers COMMIT with ROLLBACK. */
    ok = PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(res), "COMMIT") == 0;
    if (!ok) {
        char msg[512];
        pg_error_text(conn, res, msg, sizeof msg);
        snprintf(err, errlen, "COMMIT: %s", PQresultStatus(res) == PGRES_COMMAND_OK ? "rolled back" : msg);
    }
    PQclear(res);
    if (!ok && PQtransactionStatus(conn) != PQTRANS_IDLE)
        PQclear(PQexec(conn, "ROLLBACK"));
    return ok ? 0 : -1;
}

static bool pg_in_txn(void *h)
{
    return PQtransactionStatus(h) == PQTRANS_INTRANS;
}

int migrate_pg_rows(PGconn *conn, struct migration_rows *rows, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, "SELECT to_regclass('" MIGRATE_TABLE "') IS NOT NULL");
    char msg[512];
    bool exists;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        pg_error_text(conn, res, msg, sizeof msg);
        snprintf(err, errlen, "reading " MIGRATE_TABLE ": %s", msg);
        PQclear(res);
        return -1;
    }
    exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!exists)
        return 0;
    res = PQexec(conn, MIGRATE_SELECT);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_error_text(conn, res, msg, sizeof msg);
        snprintf(err, errlen, "reading " MIGRATE_TABLE ": %s", msg);
        PQclear(res);
        return -1;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        if (migrate_rows_add(rows, strtoll(PQgetvalue(res, r, 0), NULL, 10), PQgetvalue(res, r, 1),
                             PQgetvalue(res, r, 2), PQgetvalue(res, r, 3)) != 0) {
            PQclear(res);
            snprintf(err, errlen, "reading " MIGRATE_TABLE ": out of memory");
            return -1;
        }
    }
    PQclear(res);
    return 0;
}

static int pg_rows(void *h, struct migration_rows *rows, char *err, size_t errlen)
{
    return migrate_pg_rows(h, rows, err, errlen);
}

/* The offset of the first token of the index-th (from 0) non-empty
 * statement of sql, as PostgreSQL splits a simple query: at ';' outside
 * quotes ('' and E'' strings, "" names, $tag$ bodies) and comments (--,
 * nested C-style), read by sqllex.c's PostgreSQL dialect. `len` when
 * there is no such statement. */
static size_t pg_statement_start(const char *sql, size_t len, int index)
{
    size_t at = 0;
    bool in_statement = false;

    for (;;) {
        struct sqltok t = sqllex_next(sql, len, at, SQLLEX_POSTGRES);
        if (t.type == SQLTOK_EOF)
            return len;
        if (t.type == SQLTOK_SEMI) {
            in_statement = false;
        } else if (!in_statement) {
            if (index-- == 0)
                return t.pos;
            in_statement = true;
        }
        if (t.type == SQLTOK_ERROR)
            return len; /* the rest is one unterminated literal */
        at = t.pos + t.len;
    }
}

/* The byte offset of 1-based character position pos in UTF-8 text. */
static size_t utf8_offset(const char *s, size_t len, long pos)
{
    long chars = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xc0) != 0x80 && ++chars == pos)
            return i;
    }
    return len;
}

static int pg_script(void *h, const char *path, const char *sql, size_t len, char *err, size_t errlen)
{
    PGconn *conn = h;
    PGresult *res;
    int done = 0; /* statements that succeeded */
    bool failed = false;
    char msg[512] = "";
    size_t at = 0;

    if (!PQsendQuery(conn, sql)) {
        pg_error_text(conn, NULL, msg, sizeof msg);
        snprintf(err, errlen, "%s: %s", path, msg);
        return -1;
    }
    while ((res = PQgetResult(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (failed) {
            PQclear(res);
            continue;
        }
        switch (st) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
        case PGRES_EMPTY_QUERY: done++; break;
        case PGRES_COPY_IN: PQputCopyEnd(conn, "COPY FROM STDIN is not supported in migrations"); break;
        case PGRES_COPY_OUT: {
            char *row = NULL;
            while (PQgetCopyData(conn, &row, 0) > 0)
                PQfreemem(row);
            failed = true;
            snprintf(msg, sizeof msg, "COPY TO STDOUT is not supported in migrations");
            at = pg_statement_start(sql, len, done);
            break;
        }
        default: {
            const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
            failed = true;
            pg_error_text(conn, res, msg, sizeof msg);
            at = pos != NULL ? utf8_offset(sql, len, strtol(pos, NULL, 10))
                             : pg_statement_start(sql, len, done);
            break;
        }
        }
        PQclear(res);
    }
    if (!failed && PQstatus(conn) != CONNECTION_OK) {
        failed = true;
        pg_error_text(conn, NULL, msg, sizeof msg);
        at = pg_statement_start(sql, len, done);
    }
    if (!failed)
        return 0;
    snprintf(err, errlen, "%s:%d: %s", path, migrate_line_at(sql, at < len ? at : len), msg);
    return -1;
}

static int pg_record(void *h, const struct migration *m, bool add, char *err, size_t errlen)
{
    PGconn *conn = h;
    char version[32], at[32], msg[512];
    const char *values[4] = {version, m->name, m->checksum, at};
    PGresult *res;
    int rc = 0;

    snprintf(version, sizeof version, "%lld", m->version);
    migrate_iso_now(at);
    if (add)
        res = PQexecParams(conn,
                           "INSERT INTO " MIGRATE_TABLE " (version, name, checksum, applied_at) "
                           "VALUES ($1::bigint, $2::text, $3::text, $4::text)",
                           4, NULL, values, NULL, NULL, 0);
    else
        res = PQexecParams(conn, "DELETE FROM " MIGRATE_TABLE " WHERE version = $1::bigint", 1, NULL, values,
                           NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        pg_error_text(conn, res, msg, sizeof msg);
        snprintf(err, errlen, "recording %s in " MIGRATE_TABLE ": %s", m->file, msg);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

const struct mdb_ops migrate_pg_mdb = {pg_begin, pg_end, pg_in_txn, pg_rows, pg_script, pg_record};

static void pg_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *migrate_pg_connect(const struct bind_conf *bc, char *err, size_t errlen)
{
    size_t n = 0;
    bool has_timeout = false;
    const char **keys, **values;
    char timeout[16];
    PGconn *conn;

    while (bc->pg_keywords != NULL && bc->pg_keywords[n] != NULL) {
        if (strcmp(bc->pg_keywords[n], "connect_timeout") == 0)
            has_timeout = true;
        n++;
    }
    keys = calloc(n + 2, sizeof *keys);
    values = calloc(n + 2, sizeof *values);
    if (keys == NULL || values == NULL) {
        free(keys);
        free(values);
        snprintf(err, errlen, "bind %s: out of memory", bc->name);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        keys[i] = bc->pg_keywords[i];
        values[i] = bc->pg_values[i];
    }
    if (!has_timeout) {
        /* libpq counts whole seconds (at least 2). */
        snprintf(timeout, sizeof timeout, "%d", (bc->connect_timeout_ms + 999) / 1000);
        keys[n] = "connect_timeout";
        values[n] = timeout;
    }
    conn = PQconnectdbParams(keys, values, 0);
    free(keys);
    free(values);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        char msg[512];
        pg_error_text(conn, NULL, msg, sizeof msg);
        snprintf(err, errlen, "bind %s: cannot connect to %s: %s", bc->name, bc->url_redacted,
                 conn ? msg : "out of memory");
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, pg_quiet, NULL);
    return conn;
}
