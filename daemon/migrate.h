/*
 * Per-bind migrations, as Flask-Migrate's multidb mode keeps them: the
 * folder named by `migrations` holds one sub-folder per bind, each with
 * numbered SQL files (0003_add_shade.sql, optionally 0003_add_shade.down.sql),
 * and every bind records what it has applied in its own version table,
 * sqlmux_migrations (version, name, checksum, applied_at), as Alembic keeps
 * alembic_version per database.
 *
 * One engine serves SQLite and PostgreSQL through a small adapter (begin a
 * locked transaction, run a script, read and write the version table). It
 * blocks: it runs in `sqlmuxd migrate` and at start-up before the daemon
 * serves, never on a loop that has clients. Each migration runs in its own
 * transaction together with its version-table row, so a failing one leaves
 * the bind at the previous version. The transaction is taken with a write
 * lock (SQLite BEGIN IMMEDIATE, PostgreSQL pg_advisory_xact_lock) and the
 * version table is read again inside it, so two runs at once never apply
 * the same migration twice.
 *
 * Threads: everything here may run on any thread, on connections that
 * thread owns. Nothing keeps global state.
 */
#ifndef SQLMUX_DAEMON_MIGRATE_H
#define SQLMUX_DAEMON_MIGRATE_H

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf/config.h"
#include "proto/buf.h"

#define MIGRATE_TABLE "sqlmux_migrations"

/* One migration file (and its optional down file). */
struct migration {
    long long version; /* the file name's number */
    char *name;        /* between "NNNN_" and ".sql" */
    char *file;        /* "NNNN_name.sql", for messages */
    char *up_path;     /* absolute paths; down_path may be NULL */
    char *down_path;
    char *sql; /* the up file's text, NUL-terminated */
    size_t len;
    char checksum[65]; /* SHA-256 of the up file, lowercase hex */
};

/* A bind's migration files, by version ascending. */
struct migration_set {
    char *dir; /* the bind's folder (it may not exist) */
    struct migration *items;
    size_t n;
};

/* One row of a bind's version table. */
struct migration_row {
    long long version;
    char *name, *checksum, *applied_at;
};

struct migration_rows {
    struct migration_row *items; /* by version ascending */
    size_t n, cap;
};

enum migrate_op {
    MIGRATE_UP,   /* apply pending migrations up to target */
    MIGRATE_DOWN, /* revert applied migrations above target */
};

/* Called after each migration applied or reverted (for logs and the CLI). */
struct migrate_notify {
    void (*done)(void *arg, const char *bind, const struct migration *m, bool down, double ms);
    void *arg;
};

/* Read the files of bind `bind` under root (root/bind/). A missing folder
 * is an empty set. 0, or -1 with err naming the file that is wrong (bad
 * name, duplicate version, unreadable). Free with migrate_set_free(). */
__attribute__((warn_unused_result)) int migrate_scan(const char *root, const char *bind,
                                                     struct migration_set *set, char *err, size_t errlen);
void migrate_set_free(struct migration_set *set);

/* Append a row (strings copied). 0, or -1 when out of memory. */
__attribute__((warn_unused_result)) int migrate_rows_add(struct migration_rows *rows, long long version,
                                                         const char *name, const char *checksum,
                                                         const char *applied_at);
void migrate_rows_free(struct migration_rows *rows);

/* Called for each migration of a bind in version order: every file, and
 * every applied version that has no file. state is "applied", "pending",
 * "changed" (applied, but the file differs now) or "missing" (applied,
 * but no file has its version); applied_at is NULL when not applied. A
 * non-zero return stops the walk and is returned. */
typedef int (*migrate_status_fn)(void *arg, long long version, const char *name, const char *state,
                                 const char *applied_at);
int migrate_status_each(const struct migration_set *set, const struct migration_rows *applied,
                        migrate_status_fn fn, void *arg);

/* The .migrations rows of one bind ("=bind\tversion\tname\tstate\tapplied_at\n"
 * per file and per applied version without a file), added to out; *count
 * is increased by the rows written. 0, or -1 when out of memory. */
__attribute__((warn_unused_result)) int migrate_put_status(const char *bind, const struct migration_set *set,
                                                           const struct migration_rows *applied,
                                                           struct buf *out, uint64_t *count);

/* The version table of a SQLite or PostgreSQL database (empty when it does
 * not exist). 0, or -1 with err. */
__attribute__((warn_unused_result)) int migrate_sqlite_rows(sqlite3 *db, struct migration_rows *rows,
                                                            char *err, size_t errlen);
__attribute__((warn_unused_result)) int migrate_pg_rows(PGconn *conn, struct migration_rows *rows, char *err,
                                                        size_t errlen);

/* Apply (MIGRATE_UP: every pending migration with version <= target) or
 * revert (MIGRATE_DOWN: every applied one above target, newest first,
 * with its down file) on a database the caller opened. An applied file
 * that changed, or an applied version without a file, refuses the whole
 * run. 0, or -1 with err ("file:line: message" for a failing
 * migration); migrations finished before the error stay applied. */
__attribute__((warn_unused_result)) int migrate_sqlite(sqlite3 *db, const char *bind,
                                                       const struct migration_set *set, enum migrate_op op,
                                                       long long target, const struct migrate_notify *notify,
                                                       char *err, size_t errlen);
__attribute__((warn_unused_result)) int migrate_pg(PGconn *conn, const char *bind,
                                                   const struct migration_set *set, enum migrate_op op,
                                                   long long target, const struct migrate_notify *notify,
                                                   char *err, size_t errlen);

/* Run the SQL file at path on db in one transaction (a bind's schema
 * file). 0, or -1 with err as "path:line: message". */
__attribute__((warn_unused_result)) int migrate_sqlite_run_file(sqlite3 *db, const char *path, char *err,
                                                                size_t errlen);

/* Set up a SQLite bind's database as the daemon and `sqlmuxd migrate` both
 * need it: WAL mode (waiting up to busy_timeout_ms while another process
 * holds the database), then the schema file (may be NULL) applied when the
 * database has no schema yet. The check and the schema run in one
 * BEGIN IMMEDIATE transaction, so processes setting up one new database at
 * once apply it exactly once, and a failing schema leaves the database
 * empty (it is tried again at the next start). *applied tells whether this
 * call ran the schema. 0, or -1 with err set ("file:line: message" for a
 * schema error). */
int migrate_sqlite_setup(sqlite3 *db, const char *name, const char *filename, const char *schema,
                         int busy_timeout_ms, bool *applied, char *err, size_t errlen);

/* A blocking libpq connection to a PostgreSQL bind, with notices silenced:
 * for the CLI, start-up, and the resolver of transactions in doubt on
 * libuv's thread pool (never the loop thread once it runs; a pool caller
 * frees OpenSSL's state of its thread after, as xact_pg.c's run_work does).
 * NULL with err on failure. */
PGconn *migrate_pg_connect(const struct bind_conf *bc, char *err, size_t errlen);

/* Start-up: apply the pending migrations of bind bc on db (SQLite) or on a
 * connection of its own (PostgreSQL), logging each. Does nothing when the
 * config names no migrations folder or the bind has no sub-folder.
 * 0, or -1 with err. */
__attribute__((warn_unused_result)) int migrate_startup_sqlite(const struct config *cfg,
                                                               const struct bind_conf *bc, sqlite3 *db,
                                                               char *err, size_t errlen);
__attribute__((warn_unused_result)) int
migrate_startup_pg(const struct config *cfg, const struct bind_conf *bc, char *err, size_t errlen);

/* `sqlmuxd migrate CONFIG [status | up [VERSION] | down VERSION] [--bind NAME]`
 * (migrate_cli.c): argv holds the words after "migrate". Returns the exit
 * status. */
int migrate_main(int argc, char **argv);

#endif
