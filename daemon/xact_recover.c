/*
 * Recovery of transactions across binds (xact.h): each entry of the
 * coordinator log resolved in every bind, from the changesets it holds and
 * the marker rows the binds committed; at start-up (xact_open) and after a
 * commit that failed half-way (xact_commit).
 */
#define SQLITE_ENABLE_SESSION        1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1

#include "daemon/xact_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/config.h"
#include "daemon/backend_sqlite.h"
#include "daemon/log.h"
#include "daemon/xact_log.h"

/* ---- Recovery ------------------------------------------------------------ */

static const struct bind_conf *bind_by_name(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nbinds; i++)
        if (strcmp(cfg->binds[i].name, name) == 0)
            return &cfg->binds[i];
    return NULL;
}

/* A connection of recovery's own to a file bind; NULL (with err) when it
 * cannot be opened. missing_ok: a file that does not exist gives NULL
 * without an error. */
static sqlite3 *recovery_open(const struct bind_conf *bc, bool missing_ok, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc;

    if (missing_ok && access(bc->path, F_OK) != 0)
        return NULL;
    rc = sqlite3_open_v2(bc->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "bind %s: cannot open %s for recovery: %s", bc->name, bc->path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, bc->busy_timeout_ms > 0 ? bc->busy_timeout_ms : 5000);
    return db;
}

static bool has_marker_table(sqlite3 *db)
{
    return sqlite3_table_column_metadata(db, "main", XACT_MARKER_TABLE, NULL, NULL, NULL, NULL, NULL, NULL) ==
           SQLITE_OK;
}

/* 1 when db holds the marker of txid, 0 when not, -1 on error. */
static int marker_present(sqlite3 *db, uint64_t txid)
{
    sqlite3_stmt *stmt = NULL;
    int rc;

    if (!has_marker_table(db))
        return 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM " XACT_MARKER_TABLE " WHERE txid = ?1", -1, &stmt, NULL) !=
        SQLITE_OK)
        return -1;
    sqlite3_bind_int64(stmt, 1, (sqlite3_int64)txid);
    rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

struct apply_ctx {
    const char *bind;
    char why[200];
};

/* A conflict means the bind is not as the transaction left it before its
 * commit: never guessed at. The marker table's own rows (the deletion of
 * old markers) are the exception: they may be gone already. */
static int on_conflict(void *arg, int kind, sqlite3_changeset_iter *it)
{
    struct apply_ctx *ctx = arg;
    const char *table = NULL;
    int ncol = 0, op = 0, indirect = 0;

    sqlite3changeset_op(it, &table, &ncol, &op, &indirect);
    if (table != NULL && strcmp(table, XACT_MARKER_TABLE) == 0)
        return SQLITE_CHANGESET_OMIT;
    snprintf(ctx->why, sizeof ctx->why, "table %s: %s", table ? table : "?",
             kind == SQLITE_CHANGESET_DATA         ? "a row differs from what the transaction saw"
             : kind == SQLITE_CHANGESET_NOTFOUND   ? "a row the transaction changed is missing"
             : kind == SQLITE_CHANGESET_CONFLICT   ? "a row the transaction inserted exists already"
             : kind == SQLITE_CHANGESET_CONSTRAINT ? "a constraint fails"
                                                   : "a foreign key fails");
    return SQLITE_CHANGESET_ABORT;
}

static const char marker_create[] = "CREATE TABLE IF NOT EXISTS " XACT_MARKER_TABLE XACT_MARKER_COLUMNS;

/* Apply a changeset to a bind that lacks the transaction. 0, or -1. */
static int apply_changeset(sqlite3 *db, const char *bind, const struct xact_part *p, uint64_t txid, char *err,
                           size_t errlen)
{
    struct apply_ctx ctx = {bind, ""};
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, marker_create, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3changeset_apply(db, (int)p->len, p->change, NULL, on_conflict, &ctx);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "bind %s: transaction %llu: cannot apply its changes: %s", bind,
                 (unsigned long long)txid, ctx.why[0] ? ctx.why : sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

/* The recovery connection to file bind bc (conns[] indexed like
 * cfg->binds, opened at first use; the caller closes them). */
static sqlite3 *recovery_conn(const struct config *cfg, sqlite3 **conns, const struct bind_conf *bc,
                              char *err, size_t errlen)
{
    size_t i = (size_t)(bc - cfg->binds);

    if (conns[i] == NULL)
        conns[i] = recovery_open(bc, false, err, errlen);
    return conns[i];
}

/* Whether file bind bc holds transaction txid's marker: 1 or 0 with *db
 * its recovery connection, -1 with err set. */
static int part_marker(const struct config *cfg, sqlite3 **conns, const struct bind_conf *bc, uint64_t txid,
                       sqlite3 **db, char *err, size_t errlen)
{
    int present;

    if ((*db = recovery_conn(cfg, conns, bc, err, errlen)) == NULL)
        return -1;
    if ((present = marker_present(*db, txid)) < 0)
        snprintf(err, errlen, "bind %s: cannot read its marker rows: %s", bc->name, sqlite3_errmsg(*db));
    return present;
}

void xact_recovery_close(const struct config *cfg, sqlite3 **conns)
{
    for (size_t i = 0; i < cfg->nbinds; i++)
        sqlite3_close(conns[i]);
    free(conns);
}

/* Resolve one decision (see xact.h). Returns 1 when it is committed in
 * every file bind now, 0 when it never committed anywhere (its anchor lacks
 * the marker), -1 with err set on failure. at_start: the crash point
 * "recovery" applies. */
int xact_recover_entry(const struct config *cfg, sqlite3 **conns, const struct xact_entry *e, bool at_start,
                       char *err, size_t errlen)
{
    for (size_t i = 0; i < e->nparts; i++) {
        const struct bind_conf *bc = bind_by_name(cfg, e->parts[i].bind);
        if (bc == NULL) {
            snprintf(
                err, errlen,
                "the coordinator log holds transaction %llu over bind %s, which the configuration no longer "
                "has: put the bind back until the daemon has started once",
                (unsigned long long)e->txid, e->parts[i].bind);
            return -1;
        }
    }
    for (size_t i = 0; i < e->nparts; i++) {
        const struct xact_part *p = &e->parts[i];
        const struct bind_conf *bc = bind_by_name(cfg, p->bind);
        sqlite3 *db;
        int present;
        if (!(p->flags & XACT_PART_ANCHOR) || bc->type != BIND_SQLITE_FILE)
            continue;
        if ((present = part_marker(cfg, conns, bc, e->txid, &db, err, errlen)) < 0)
            return -1;
        if (present == 0) {
            log_debug("transaction %llu across binds: its home bind %s never committed it: nothing to undo",
                      (unsigned long long)e->txid, bc->name);
            return 0;
        }
    }
    for (size_t i = 0; i < e->nparts; i++) {
        const struct xact_part *p = &e->parts[i];
        const struct bind_conf *bc = bind_by_name(cfg, p->bind);
        sqlite3 *db;
        int present;
        if ((p->flags & XACT_PART_ANCHOR) || bc->type != BIND_SQLITE_FILE)
            continue; /* the in-memory bind after a restart holds its snapshot only */
        if ((present = part_marker(cfg, conns, bc, e->txid, &db, err, errlen)) < 0)
            return -1;
        if (present == 0) {
            if (apply_changeset(db, bc->name, p, e->txid, err, errlen) != 0)
                return -1;
            log_info("transaction %llu across binds: bind %s lacked it: its changes applied (%zu bytes)",
                     (unsigned long long)e->txid, bc->name, p->len);
            if (at_start)
                xact_crash_point("recovery");
        }
    }
    return 1;
}

/* fdatasync a file by name; a missing one is fine. 0, or -1. */
static int sync_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    rc = fdatasync(fd);
    close(fd);
    return rc;
}

/* Make every file bind's commits durable: fdatasync paths[0..n). */
int xact_sync_files(char *const *paths, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (sync_file(paths[i]) != 0)
            return -1;
    return 0;
}

/* The largest marker txid in any file bind (0: none). */
uint64_t xact_markers_max(const struct config *cfg)
{
    uint64_t max = 0;
    char err[256];

    for (size_t i = 0; i < cfg->nbinds; i++) {
        sqlite3 *db;
        sqlite3_stmt *stmt = NULL;
        if (cfg->binds[i].type != BIND_SQLITE_FILE)
            continue;
        db = recovery_open(&cfg->binds[i], true, err, sizeof err);
        if (db != NULL && has_marker_table(db) &&
            sqlite3_prepare_v2(db, "SELECT max(txid) FROM " XACT_MARKER_TABLE, -1, &stmt, NULL) ==
                SQLITE_OK &&
            sqlite3_step(stmt) == SQLITE_ROW && (uint64_t)sqlite3_column_int64(stmt, 0) > max)
            max = (uint64_t)sqlite3_column_int64(stmt, 0);
        sqlite3_finalize(stmt);
        sqlite3_close(db);
    }
    return max;
}

int xact_markers_decisions(const struct config *cfg, uint64_t floor, struct xact_entry **entries, size_t *n,
                           char *err, size_t errlen)
{
    for (size_t i = 0; i < cfg->nbinds; i++) {
        const struct bind_conf *bc = &cfg->binds[i];
        sqlite3_stmt *stmt = NULL;
        sqlite3 *db;
        int rc = SQLITE_DONE;
        if (bc->type != BIND_SQLITE_FILE)
            continue;
        db = recovery_open(bc, true, err, errlen);
        if (db == NULL || sqlite3_table_column_metadata(db, "main", XACT_MARKER_TABLE, "parts", NULL, NULL,
                                                        NULL, NULL, NULL) != SQLITE_OK) {
            sqlite3_close(db);
            continue;
        }
        if (sqlite3_prepare_v2(db,
                               "SELECT txid, parts FROM " XACT_MARKER_TABLE
                               " WHERE parts IS NOT NULL AND txid >= ?1 ORDER BY txid",
                               -1, &stmt, NULL) == SQLITE_OK) {
            sqlite3_bind_int64(stmt, 1, (sqlite3_int64)floor);
            while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
                const char *why = "out of memory";
                struct xact_entry *grown = realloc(*entries, (*n + 1) * sizeof *grown);
                if (grown != NULL)
                    *entries = grown;
                if (grown == NULL ||
                    xact_log_decode(sqlite3_column_blob(stmt, 1), (size_t)sqlite3_column_bytes(stmt, 1),
                                    &grown[*n], &why) != 0) {
                    if (grown != NULL)
                        xact_entries_free_parts(&grown[*n]);
                    snprintf(err, errlen,
                             "bind %s: the decision in its marker row of transaction %lld is damaged (%s): "
                             "repair or restore the bind (never guessed at)",
                             bc->name, (long long)sqlite3_column_int64(stmt, 0), why);
                    sqlite3_finalize(stmt);
                    sqlite3_close(db);
                    return -1;
                }
                (*n)++;
            }
        }
        if (rc != SQLITE_DONE) {
            snprintf(err, errlen, "bind %s: cannot read its marker rows: %s", bc->name, sqlite3_errmsg(db));
            sqlite3_finalize(stmt);
            sqlite3_close(db);
            return -1;
        }
        sqlite3_finalize(stmt);
        sqlite3_close(db);
    }
    return 0;
}
