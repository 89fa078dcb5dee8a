/*
 * The migration engine's SQLite adapter (struct mdb_ops: the migration
 * lock is BEGIN IMMEDIATE, the version table a plain table) and the SQLite
 * set-up every bind connection gets: schema file, journal mode, the
 * version table read for .migrations.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "daemon/migrate_int.h"
#include "daemon/sqllex.h"

#define MIGRATE_SQLITE_TABLE_DDL                                                                             \
    "CREATE TABLE IF NOT EXISTS " MIGRATE_TABLE " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "        \
    "checksum TEXT NOT NULL, applied_at TEXT NOT NULL)"

static int sq_exec(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "%s: %s", what, sqlite3_errmsg(db));
    return -1;
}

static int sq_begin(void *h, char *err, size_t errlen)
{
    sqlite3 *db = h;
    if (sq_exec(db, "BEGIN IMMEDIATE", "cannot lock the database for migrations", err, errlen) != 0)
        return -1;
    if (sq_exec(db, MIGRATE_SQLITE_TABLE_DDL, "cannot create " MIGRATE_TABLE, err, errlen) != 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static int sq_end(void *h, bool commit, char *err, size_t errlen)
{
    sqlite3 *db = h;
    if (sqlite3_get_autocommit(db))
        return 0;
    if (!commit) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return 0;
    }
    if (sq_exec(db, "COMMIT", "COMMIT", err, errlen) != 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static bool sq_in_txn(void *h)
{
    return !sqlite3_get_autocommit(h);
}

int migrate_sqlite_rows(sqlite3 *db, struct migration_rows *rows, char *err, size_t errlen)
{
    sqlite3_stmt *stmt = NULL;
    bool exists;
    int rc;

    rc = sqlite3_prepare_v2(db,
                            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '" MIGRATE_TABLE "'",
                            -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "reading " MIGRATE_TABLE ": %s", sqlite3_errmsg(db));
        return -1;
    }
    rc = sqlite3_step(stmt);
    exists = rc == SQLITE_ROW;
    sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        snprintf(err, errlen, "reading " MIGRATE_TABLE ": %s", sqlite3_errmsg(db));
        return -1;
    }
    if (!exists)
        return 0;
    if (sqlite3_prepare_v2(db, MIGRATE_SELECT, -1, &stmt, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading " MIGRATE_TABLE ": %s", sqlite3_errmsg(db));
        return -1;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (migrate_rows_add(rows, sqlite3_column_int64(stmt, 0), (const char *)sqlite3_column_text(stmt, 1),
                             (const char *)sqlite3_column_text(stmt, 2),
                             (const char *)sqlite3_column_text(stmt, 3)) != 0) {
            sqlite3_finalize(stmt);
            snprintf(err, errlen, "reading " MIGRATE_TABLE ": out of memory");
            return -1;
        }
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "reading " MIGRATE_TABLE ": %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

static int sq_rows(void *h, struct migration_rows *rows, char *err, size_t errlen)
{
    return migrate_sqlite_rows(h, rows, err, errlen);
}

static int sq_script(void *h, const char *path, const char *sql, size_t len, char *err, size_t errlen)
{
    sqlite3 *db = h;
    size_t pos = 0;

    while (pos < len) {
        sqlite3_stmt *stmt = NULL;
        const char *tail = NULL;
        size_t rest = len - pos;
        int rc = sqlite3_prepare_v2(db, sql + pos, rest > INT_MAX ? INT_MAX : (int)rest, &stmt, &tail);

        if (rc != SQLITE_OK) {
            int off = sqlite3_error_offset(db);
            size_t at = off >= 0 ? pos + (size_t)off : sqllex_skip(sql, len, pos, 0);
            snprintf(err, errlen, "%s:%d: %s", path, migrate_line_at(sql, at), sqlite3_errmsg(db));
            return -1;
        }
        if (stmt != NULL) {
            while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
                ;
            if (rc != SQLITE_DONE) {
                snprintf(err, errlen, "%s:%d: %s", path, migrate_line_at(sql, sqllex_skip(sql, len, pos, 0)),
                         sqlite3_errmsg(db));
                sqlite3_finalize(stmt);
                return -1;
            }
            sqlite3_finalize(stmt);
        }
        if (tail == NULL || tail <= sql + pos)
            break;
        pos = (size_t)(tail - sql);
    }
    return 0;
}

static int sq_record(void *h, const struct migration *m, bool add, char *err, size_t errlen)
{
    sqlite3 *db = h;
    sqlite3_stmt *stmt = NULL;
    char at[32];
    int rc;

    rc = sqlite3_prepare_v2(db,
                            add ? "INSERT INTO " MIGRATE_TABLE " (version, name, checksum, applied_at) "
                                  "VALUES (?1, ?2, ?3, ?4)"
                                : "DELETE FROM " MIGRATE_TABLE " WHERE version = ?1",
                            -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        migrate_iso_now(at);
        sqlite3_bind_int64(stmt, 1, m->version);
        if (add) {
            sqlite3_bind_text(stmt, 2, m->name, -1, SQLITE_STATIC);
            sqlite3_bind_text(stmt, 3, m->checksum, -1, SQLITE_STATIC);
            sqlite3_bind_text(stmt, 4, at, -1, SQLITE_STATIC);
        }
        rc = sqlite3_step(stmt);
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "recording %s in " MIGRATE_TABLE ": %s", m->file, sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

const struct mdb_ops migrate_sqlite_mdb = {sq_begin, sq_end, sq_in_txn, sq_rows, sq_script, sq_record};

static int sqlite_run_file(sqlite3 *db, const char *path, bool only_if_empty, bool *applied, char *err,
                           size_t errlen);

/* Has the database no table, view, index or trigger yet? */
static bool sqlite_empty(sqlite3 *db)
{
    sqlite3_stmt *stmt = NULL;
    bool empty = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_schema", -1, &stmt, NULL) == SQLITE_OK &&
                 sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_int(stmt, 0) == 0;
    sqlite3_finalize(stmt);
    return empty;
}

int migrate_sqlite_run_file(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    bool applied;
    return sqlite_run_file(db, path, false, &applied, err, errlen);
}

/* Run the SQL file at path in one transaction. only_if_empty: take the
 * write lock first (BEGIN IMMEDIATE) and run nothing when the database
 * already has a schema, so that several processes setting up one new
 * database apply the file exactly once. */
static int sqlite_run_file(sqlite3 *db, const char *path, bool only_if_empty, bool *applied, char *err,
                           size_t errlen)
{
    size_t len = 0;
    char *sql = migrate_read_all(path, &len);
    int rc;

    *applied = false;
    if (sql == NULL) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    /* A database with a schema is left alone without taking its write
     * lock (clients may hold it); an empty one is checked again under the
     * lock. */
    if (only_if_empty && !sqlite_empty(db)) {
        free(sql);
        return 0;
    }
    rc = sq_exec(db, only_if_empty ? "BEGIN IMMEDIATE" : "BEGIN", path, err, errlen);
    if (rc == 0 && only_if_empty && !sqlite_empty(db)) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        free(sql);
        return 0;
    }
    if (rc == 0 && sq_script(db, path, sql, len, err, errlen) != 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        rc = -1;
    }
    if (rc == 0 && sq_end(db, true, err, errlen) != 0)
        rc = -1;
    *applied = rc == 0;
    free(sql);
    return rc;
}

int migrate_sqlite_setup(sqlite3 *db, const char *name, const char *filename, const char *schema,
                         int busy_timeout_ms, bool *applied, char *err, size_t errlen)
{
    int waited = 0;

    *applied = false;
    for (;;) {
        sqlite3_stmt *stmt = NULL;
        const char *mode = NULL;
        int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(stmt);
            if (rc == SQLITE_ROW)
                mode = (const char *)sqlite3_column_text(stmt, 0);
        }
        if (mode != NULL && strcasecmp(mode, "wal") == 0) {
            sqlite3_finalize(stmt);
            break;
        }
        sqlite3_finalize(stmt);
        /* Another process may be setting the same new database up. */
        if (((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) && waited < busy_timeout_ms) {
            usleep(10000);
            waited += 10;
            continue;
        }
        snprintf(err, errlen, "bind %s: cannot use WAL mode on %s: %s", name, filename, sqlite3_errmsg(db));
        return -1;
    }
    if (schema == NULL)
        return 0;
    return sqlite_run_file(db, schema, true, applied, err, errlen);
}
