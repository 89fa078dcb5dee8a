/*
 * What the migration engine's files share, and nothing else includes:
 * migrate.c (files, version table, status lines, the engine, start-up
 * runs) drives a database through struct mdb_ops, which migrate_sqlite.c
 * and migrate_pg.c implement.
 */
#ifndef SQLMUX_DAEMON_MIGRATE_INT_H
#define SQLMUX_DAEMON_MIGRATE_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "daemon/migrate.h"

#define MIGRATE_SELECT "SELECT version, name, checksum, applied_at FROM " MIGRATE_TABLE " ORDER BY version"

/* What the engine needs of a database. h is a sqlite3 * or a PGconn *.
 * Functions return 0, or -1 with err set. */
struct mdb_ops {
    /* Start a transaction that holds the migration lock; the version table
     * exists inside it. */
    int (*begin)(void *h, char *err, size_t errlen);
    /* COMMIT (commit) or ROLLBACK. */
    int (*end)(void *h, bool commit, char *err, size_t errlen);
    bool (*in_txn)(void *h);
    int (*rows)(void *h, struct migration_rows *rows, char *err, size_t errlen);
    /* Run every statement of sql; errors as "path:line: message". */
    int (*script)(void *h, const char *path, const char *sql, size_t len, char *err, size_t errlen);
    /* Add (add) or remove m's version-table row. */
    int (*record)(void *h, const struct migration *m, bool add, char *err, size_t errlen);
};

/* The adapters of migrate_sqlite.c (h: a sqlite3 *) and migrate_pg.c (h: a
 * PGconn *). */
extern const struct mdb_ops migrate_sqlite_mdb;
extern const struct mdb_ops migrate_pg_mdb;

/* The whole file at path, NUL-terminated, in a new buffer; *len its size.
 * NULL with errno set on failure. */
char *migrate_read_all(const char *path, size_t *len);

/* The 1-based line of byte offset `at` in s. */
int migrate_line_at(const char *s, size_t at);

/* Now, UTC, as 2026-01-31T12:00:00Z (the version table's applied_at). */
void migrate_iso_now(char out[32]);

#endif
