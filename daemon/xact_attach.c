/*
 * Transactions across binds (xact.h): attaching the other SQLite binds to
 * each worker connection, a transaction's BEGIN, the checks of each
 * statement (which binds it may read and write), and the capture of its
 * writes in each attached bind (the session extension) for xact_commit.
 */
#define SQLITE_ENABLE_SESSION        1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1

#include "daemon/xact_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/config.h"
#include "daemon/backend_sqlite.h"
#include "daemon/log.h"
#include "daemon/route.h"

/* ---- Attaching ----------------------------------------------------------- */

/* The commit hook of worker connections: a transaction that wrote two or
 * more binds may only commit through xact_commit (a RELEASE of its
 * outermost savepoint would commit it without the coordinator): refused,
 * so SQLite rolls it back. */
static int commit_guard(void *arg)
{
    struct worker *w = arg;
    struct xact_conn *xc = w->xact;
    int written = sqlite3_txn_state(w->db, "main") == SQLITE_TXN_WRITE;

    if (xc == NULL || xc->committing)
        return 0;
    for (size_t i = 0; i < xc->n; i++)
        written += sqlite3_txn_state(w->db, xc->names[i]) == SQLITE_TXN_WRITE;
    if (written < 2)
        return 0;
    w->denied = "a transaction across binds ends with COMMIT (a RELEASE that would commit it is refused, and "
                "the transaction is rolled back)";
    w->denied_code = "XACT";
    return 1;
}

static int attach_one(struct worker *w, const struct bind_conf *bc, const char *file, char *err,
                      size_t errlen)
{
    struct xact_conn *xc = w->xact;
    sqlite3_stmt *stmt = NULL;
    char uri[4200];
    int rc;

    if (sqlite_attach_uri(file, bc->type == BIND_SQLITE_MEMORY, uri, sizeof uri) != 0) {
        snprintf(err, errlen, "bind %s: cannot attach bind %s: its file name is too long",
                 w->sb->bind->conf->name, bc->name);
        return -1;
    }
    w->internal = true;
    rc = sqlite3_prepare_v2(w->db, "ATTACH DATABASE ?1 AS ?2", -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(stmt, 1, uri, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, bc->name, -1, SQLITE_STATIC);
        rc = sqlite3_step(stmt) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(w->db);
    }
    sqlite3_finalize(stmt);
    /* An attached bind commits without a sync of its own: what it commits
     * there is in the coordinator log, which was synced first, and the log
     * forgets nothing before the binds' files are synced (sync_binds). */
    if (rc == SQLITE_OK) {
        char *sql = sqlite3_mprintf("PRAGMA \"%w\".synchronous = OFF", bc->name);
        if (sql != NULL)
            sqlite3_exec(w->db, sql, NULL, NULL, NULL);
        sqlite3_free(sql);
    }
    w->internal = false;
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "bind %s: cannot attach bind %s to its connections: %s",
                 w->sb->bind->conf->name, bc->name, sqlite3_errmsg(w->db));
        return -1;
    }
    xc->names[xc->n] = strdup(bc->name);
    xc->files[xc->n] = strdup(file);
    if (xc->names[xc->n] == NULL || xc->files[xc->n] == NULL) {
        free(xc->names[xc->n]);
        free(xc->files[xc->n]);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    xc->memory[xc->n] = bc->type == BIND_SQLITE_MEMORY;
    xc->n++;
    return 0;
}

int xact_attach_workers(struct bind *const *binds, size_t nbinds, char *err, size_t errlen)
{
    for (size_t i = 0; i < nbinds; i++) {
        struct bind *b = binds[i];
        struct sqlite_bind *sb;
        size_t others = 0;
        bool postgres = false;
        if (b->ops != &backend_sqlite_ops)
            continue;
        sb = b->impl;
        for (size_t j = 0; j < nbinds; j++) {
            if (j != i && binds[j]->ops == &backend_sqlite_ops)
                others++;
            postgres |= binds[j]->conf->type == BIND_POSTGRES;
        }
        /* With no other SQLite bind there is nothing to attach, but a
         * transaction with PostgreSQL parts still commits through this
         * connection's coordinator state (markers, decision). */
        if (others == 0 && !postgres)
            continue;
        if (others > XACT_MAX_ATTACHED)
            log_warn(
                "bind %s: only %d other SQLite binds can join its transactions (SQLite attaches at most 10 "
                "databases)",
                b->conf->name, XACT_MAX_ATTACHED);
        /* The workers wait for jobs and none can come before the daemon
         * listens: their connections are free to use from here. */
        pthread_mutex_lock(&sb->lock);
        for (int k = 0; k < sb->nworkers; k++) {
            struct worker *w = &sb->workers[k];
            w->xact = calloc(1, sizeof *w->xact);
            if (w->xact == NULL) {
                pthread_mutex_unlock(&sb->lock);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            sqlite3_limit(w->db, SQLITE_LIMIT_ATTACHED,
                          1 + (int)(others < XACT_MAX_ATTACHED ? others : XACT_MAX_ATTACHED));
            for (size_t j = 0; j < nbinds && w->xact->n < XACT_MAX_ATTACHED; j++) {
                struct bind *o = binds[j];
                if (j == i || o->ops != &backend_sqlite_ops)
                    continue;
                if (attach_one(w, o->conf, ((struct sqlite_bind *)o->impl)->filename, err, errlen) != 0) {
                    pthread_mutex_unlock(&sb->lock);
                    return -1;
                }
            }
            w->internal = true;
            if (sqlite3_prepare_v3(w->db, "BEGIN", -1, SQLITE_PREPARE_PERSISTENT, &w->xact->begin, NULL) !=
                    SQLITE_OK ||
                sqlite3_prepare_v3(w->db, "PRAGMA main.incremental_vacuum(1)", -1, SQLITE_PREPARE_PERSISTENT,
                                   &w->xact->lock_main, NULL) != SQLITE_OK) {
                w->internal = false;
                pthread_mutex_unlock(&sb->lock);
                snprintf(err, errlen, "bind %s: %s", b->conf->name, sqlite3_errmsg(w->db));
                return -1;
            }
            w->internal = false;
            sqlite3_commit_hook(w->db, commit_guard, w);
        }
        pthread_mutex_unlock(&sb->lock);
    }
    return 0;
}

/* Step one of w's statements prepared at attach time to its end, past the
 * authorizer (SQLite prepares it again after a schema change). */
static int step_once(struct worker *w, sqlite3_stmt *stmt)
{
    int rc;

    w->internal = true;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        ;
    sqlite3_reset(stmt);
    w->internal = false;
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int xact_begin(struct worker *w, const char *sql, bool writes)
{
    struct xact_conn *xc = w->xact;
    int rc;

    if (xc == NULL || xc->begin == NULL)
        return sqlite3_exec(w->db, sql, NULL, NULL, NULL);
    if (!writes) {
        sqlite3_stmt *stmt = NULL;
        rc = sqlite3_prepare_v2(w->db, sql, -1, &stmt, NULL);
        writes = rc == SQLITE_OK && stmt != NULL && !sqlite3_stmt_readonly(stmt);
        sqlite3_finalize(stmt);
        if (!writes)
            return sqlite3_exec(w->db, sql, NULL, NULL, NULL);
    }
    rc = step_once(w, xc->begin);
    if (rc != SQLITE_OK)
        return sqlite3_extended_errcode(w->db);
    /* A write transaction on main alone that changes nothing: with
     * auto_vacuum off (the binds' default) incremental_vacuum only opens
     * it; with auto_vacuum = incremental it frees at most one page. */
    rc = step_once(w, xc->lock_main);
    if (rc != SQLITE_OK) {
        rc = sqlite3_extended_errcode(w->db);
        sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

/* Stop capturing: the transaction is over, or the connection closes. */
static void captures_delete(struct xact_conn *xc)
{
    for (size_t i = 0; i < xc->n; i++) {
        if (xc->sess[i] != NULL) {
            sqlite3session_delete(xc->sess[i]);
            xc->sess[i] = NULL;
        }
    }
    xc->nopk[0] = '\0';
}

void xact_conn_free(struct worker *w)
{
    struct xact_conn *xc = w->xact;

    if (xc == NULL)
        return;
    captures_delete(xc);
    sqlite3_finalize(xc->begin);
    sqlite3_finalize(xc->lock_main);
    sqlite3_finalize(xc->pk_check);
    for (size_t i = 0; i <= xc->n; i++)
        sqlite3_finalize(xc->mark[i]);
    for (size_t i = 0; i < xc->n; i++) {
        free(xc->names[i]);
        free(xc->files[i]);
    }
    free(xc);
    w->xact = NULL;
}

/* ---- Statements ---------------------------------------------------------- */

int xact_attached_index(const struct xact_conn *xc, const char *name)
{
    for (size_t i = 0; i < xc->n; i++)
        if (strcmp(xc->names[i], name) == 0)
            return (int)i;
    return -1;
}

/* Session filter: every table is captured; one without a PRIMARY KEY is
 * not (the session extension skips it), so it is noted and the COMMIT
 * refused. Runs inside the client's statement: the query is the daemon's. */
static int capture_filter(void *arg, const char *table)
{
    struct capture_ctx *ctx = arg;
    struct worker *w = ctx->w;
    struct xact_conn *xc = w->xact;
    sqlite3_stmt *stmt = NULL;
    bool internal = w->internal;

    if (xc->nopk[0] != '\0')
        return 1;
    w->internal = true;
    if (xc->pk_check == NULL)
        sqlite3_prepare_v3(w->db, "SELECT count(*) FROM pragma_table_info(?1, ?2) WHERE pk > 0", -1,
                           SQLITE_PREPARE_PERSISTENT, &xc->pk_check, NULL);
    if ((stmt = xc->pk_check) != NULL) {
        sqlite3_bind_text(stmt, 1, table, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, xc->names[ctx->i], -1, SQLITE_STATIC);
        if (sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_int(stmt, 0) == 0)
            snprintf(xc->nopk, sizeof xc->nopk, "%s.%s", xc->names[ctx->i], table);
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
    }
    w->internal = internal;
    return 1;
}

/* Start capturing the writes to attached bind i (before the first
 * statement that may write it). 0, or -1. */
static int capture_start(struct worker *w, size_t i)
{
    struct xact_conn *xc = w->xact;

    if (xc->sess[i] != NULL)
        return 0;
    if (sqlite3session_create(w->db, xc->names[i], &xc->sess[i]) != SQLITE_OK)
        return -1;
    xc->ctx[i].w = w;
    xc->ctx[i].i = i;
    sqlite3session_table_filter(xc->sess[i], capture_filter, &xc->ctx[i]);
    if (sqlite3session_attach(xc->sess[i], NULL) != SQLITE_OK) {
        sqlite3session_delete(xc->sess[i]);
        xc->sess[i] = NULL;
        return -1;
    }
    return 0;
}

int xact_stmt_begin(struct worker *w, struct job *job, struct buf *out)
{
    struct xact_conn *xc = w->xact;
    const struct config *cfg = confref_cfg(job->cfgref);
    size_t na = 0, nro = 0;

    if (xc == NULL) {
        sqlite_reply_error_at(out, w->mark, "TXNBIND",
                              "this bind's connections have no other bind attached (a bind added by a reload "
                              "joins transactions across binds after a restart)");
        return -1;
    }
    if (job->xact_home_readonly)
        xc->ro[nro++] = "main";
    for (size_t k = 0; k < job->nxact_binds; k++) {
        const struct job_xbind *xb = &job->xact_binds[k];
        const char *name = cfg->binds[xb->index].name;
        int i;
        if (strcmp(name, w->sb->bind->conf->name) == 0)
            continue; /* the home bind: main */
        if (cfg->binds[xb->index].type == BIND_POSTGRES)
            continue; /* through a lent connection (xact_lend.c) */
        i = xact_attached_index(xc, name);
        if (i < 0 || !xact_bind_current(w->sb->bind->host->xact, name, xc->files[i])) {
            char msg[256];
            snprintf(
                msg, sizeof msg,
                "bind %s is not attached to bind %s's connections (added or replaced by a reload: it joins "
                "transactions across binds after a restart)",
                name, w->sb->bind->conf->name);
            sqlite_reply_error_at(out, w->mark, "TXNBIND", msg);
            return -1;
        }
        xc->allowed[na++] = xc->names[i];
        if (xb->readonly)
            xc->ro[nro++] = xc->names[i];
        else if (xb->writes && capture_start(w, (size_t)i) != 0) {
            sqlite_reply_error_at(out, w->mark, "NOMEM", "cannot start capturing the transaction's writes");
            return -1;
        }
    }
    xc->allowed[na] = NULL;
    xc->ro[nro] = NULL;
    xc->cfg = cfg;
    xc->checking = true;
    w->schemas = xc->allowed;
    return 0;
}

bool xact_detach_for(struct worker *w)
{
    struct xact_conn *xc = w->xact;
    bool wanted;

    if (xc == NULL)
        return false;
    wanted = xc->wants_detach;
    xc->wants_detach = false;
    if (!wanted || xc->detached || !sqlite3_get_autocommit(w->db))
        return false;
    xc->detached = true;
    for (size_t i = 0; i < xc->n; i++) {
        char *sql = sqlite3_mprintf("DETACH DATABASE \"%w\"", xc->names[i]);
        int rc = sql != NULL ? sqlite_conn_exec_internal(w, sql) : SQLITE_NOMEM;
        sqlite3_free(sql);
        if (rc != SQLITE_OK) {
            log_warn("bind %s: cannot detach bind %s: %s", w->sb->bind->conf->name, xc->names[i],
                     sqlite3_errmsg(w->db));
            xact_reattach(w);
            return false;
        }
    }
    return true;
}

void xact_reattach(struct worker *w)
{
    struct xact_conn *xc = w->xact;

    if (xc == NULL || !xc->detached)
        return;
    xc->detached = false;
    for (size_t i = 0; i < xc->n; i++) {
        char *sql = NULL, uri[4200];
        int rc;
        if (sqlite3_db_filename(w->db, xc->names[i]) != NULL)
            continue; /* still attached (a detach that failed part way) */
        if (sqlite_attach_uri(xc->files[i], xc->memory[i], uri, sizeof uri) == 0)
            sql = sqlite3_mprintf("ATTACH DATABASE %Q AS \"%w\"; PRAGMA \"%w\".synchronous = OFF", uri,
                                  xc->names[i], xc->names[i]);
        rc = sql != NULL ? sqlite_conn_exec_internal(w, sql) : SQLITE_NOMEM;
        sqlite3_free(sql);
        if (rc != SQLITE_OK)
            log_error(
                "bind %s: cannot attach bind %s again: %s; transactions across binds reaching it from here "
                "fail until a restart",
                w->sb->bind->conf->name, xc->names[i], sqlite3_errmsg(w->db));
    }
}

void xact_stmt_end(struct worker *w)
{
    if (w->xact == NULL)
        return;
    w->xact->checking = false;
    w->xact->cfg = NULL;
    w->schemas = NULL;
}

bool xact_stmt_uncached(const struct worker *w)
{
    return w->xact != NULL && w->xact->checking;
}

int xact_authorize(struct worker *w, int action, bool writes, const char *a1, const char *a2, const char *db)
{
    struct xact_conn *xc = w->xact;
    const char *table = NULL, *where;
    char lower[128];
    size_t n, bind;

    if (xc == NULL || xc->detached)
        return SQLITE_OK;
    if (!xc->checking) {
        /* A statement of the home bind alone: SQLite runs ANALYZE, REINDEX
         * and these PRAGMAs over every attached database when they name
         * none (the schema check refuses the others' tables on its own). */
        bool all = action == SQLITE_PRAGMA && db == NULL && a1 != NULL &&
                   (strcasecmp(a1, "integrity_check") == 0 || strcasecmp(a1, "quick_check") == 0 ||
                    strcasecmp(a1, "foreign_key_check") == 0 || strcasecmp(a1, "optimize") == 0) &&
                   (a2 == NULL || strspn(a2, "0123456789") == strlen(a2));
        if (all || (db != NULL && xact_attached_index(xc, db) >= 0)) {
            xc->wants_detach = true;
            w->denied = "this database is not part of the statement's binds";
            return SQLITE_DENY;
        }
        return SQLITE_OK;
    }
    if (db == NULL || strcmp(db, "temp") == 0)
        return SQLITE_OK;
    if (writes) {
        for (size_t i = 0; xc->ro[i] != NULL; i++) {
            if (strcmp(xc->ro[i], db) == 0) {
                snprintf(xc->denied, sizeof xc->denied,
                         "read-only access to bind %s: this statement would write",
                         strcmp(db, "main") == 0 ? w->sb->bind->conf->name : db);
                w->denied = xc->denied;
                w->denied_code = "NOPERM";
                return SQLITE_DENY;
            }
        }
    }
    switch (action) {
    case SQLITE_READ:
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
    case SQLITE_CREATE_TABLE:
    case SQLITE_DROP_TABLE: table = a1; break;
    default: return SQLITE_OK;
    }
    if (table == NULL || (n = strlen(table)) >= sizeof lower || strncmp(table, "sqlite_", 7) == 0 ||
        strcmp(table, "sqlmux_migrations") == 0)
        return SQLITE_OK;
    if (strcmp(table, XACT_MARKER_TABLE) == 0) {
        if (action == SQLITE_READ)
            return SQLITE_OK;
        w->denied = "the table sqlmux_xact is the daemon's";
        return SQLITE_DENY;
    }
    for (size_t i = 0; i <= n; i++)
        lower[i] = (table[i] >= 'A' && table[i] <= 'Z') ? (char)(table[i] + 32) : table[i];
    /* SQLite found the table by its own search order (main, then the
     * attached binds): it must be where the table map routes it. */
    bind = route_table_bind(xc->cfg, "", lower);
    where = strcmp(db, "main") == 0 ? w->sb->bind->conf->name : db;
    if (strcmp(xc->cfg->binds[bind].name, where) == 0)
        return SQLITE_OK;
    snprintf(xc->denied, sizeof xc->denied,
             "table %s is mapped to bind %s, but inside this transaction the name finds the one in bind %s",
             table, xc->cfg->binds[bind].name, where);
    w->denied = xc->denied;
    w->denied_code = "TXNBIND";
    return SQLITE_DENY;
}

void xact_txn_end(struct worker *w)
{
    struct xact_conn *xc = w->xact;

    if (xc == NULL)
        return;
    /* The transaction may have written where it captured (committed or
     * not: a move too many costs a quick read a fresh snapshot). */
    for (size_t i = 0; i < xc->n; i++)
        if (xc->sess[i] != NULL)
            xact_bump_writes(w->sb->bind->host->xact, xc->names[i]);
    captures_delete(xc);
}
