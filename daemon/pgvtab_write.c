/*
 * sqlmux_pg's writes (see daemon/pgvtab.c, "Writes"): xUpdate, the
 * transaction methods and savepoints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/pgvtab_int.h"

/* ---- Writes and transactions -------------------------------------------- */

/* " WHERE <the row is rowid $n>" */
static void put_rowid_where(sqlite3_str *s, const struct pgtable *t, int n)
{
    if (t->keycol >= 0)
        sqlite3_str_appendf(s, " WHERE %s = $%d::int8", t->cols[t->keycol].qname, n);
    else
        sqlite3_str_appendf(s, " WHERE ctid = $%d::tid", n);
}

int pgv_update(sqlite3_vtab *tab, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    struct pgvt *vt = (struct pgvt *)tab;
    struct pgvtab *v = vt->v;
    const struct pgtable *t = vt->t;
    if (!t->writable) {
        sqlite3_free(tab->zErrMsg);
        tab->zErrMsg = sqlite3_mprintf("%s is not a plain PostgreSQL table: read-only here", t->label);
        return SQLITE_READONLY;
    }
    PGconn *c = pgv_bind_conn(v, tab, t->bind);
    if (!c)
        return SQLITE_ERROR;
    sqlite3_str *s = sqlite3_str_new(NULL);
    char **vals = sqlite3_malloc64(sizeof *vals * (size_t)(t->ncols + 2));
    int n = 0, rc = SQLITE_OK;
    if (!vals) {
        sqlite3_free(sqlite3_str_finish(s));
        return SQLITE_NOMEM;
    }
    bool expect_row = true;
    if (argc == 1) { /* DELETE */
        vals[n++] = pgv_rowid_param(t, sqlite3_value_int64(argv[0]));
        sqlite3_str_appendf(s, "DELETE FROM %s", t->qualified);
        put_rowid_where(s, t, 1);
    } else if (sqlite3_value_type(argv[0]) == SQLITE_NULL) { /* INSERT */
        sqlite3_str_appendf(s, "INSERT INTO %s (", t->qualified);
        for (int i = 0; i < t->ncols; i++)
            sqlite3_str_appendf(s, "%s%s", i ? ", " : "", t->cols[i].qname);
        sqlite3_str_appendall(s, t->ncols ? ") VALUES (" : ") DEFAULT VALUES");
        for (int i = 0; i < t->ncols; i++) {
            sqlite3_value *val = argv[2 + i];
            if (sqlite3_value_type(val) == SQLITE_NULL && t->cols[i].hasdef) {
                sqlite3_str_appendf(s, "%sDEFAULT", i ? ", " : "");
                continue;
            }
            vals[n] = pgv_write_text(&t->cols[i], val);
            sqlite3_str_appendf(s, "%s$%d", i ? ", " : "", ++n);
        }
        sqlite3_str_appendf(s, "%s RETURNING %s", t->ncols ? ")" : "",
                            t->keycol >= 0 ? t->cols[t->keycol].qname : "ctid");
    } else { /* UPDATE */
        if (sqlite3_value_int64(argv[0]) != sqlite3_value_int64(argv[1])) {
            sqlite3_free(sqlite3_str_finish(s));
            sqlite3_free(vals);
            tab->zErrMsg =
                sqlite3_mprintf("the rowid of a PostgreSQL row cannot be set (change its key column)");
            return SQLITE_CONSTRAINT;
        }
        sqlite3_str_appendf(s, "UPDATE %s SET ", t->qualified);
        int set = 0;
        for (int i = 0; i < t->ncols; i++) {
            if (sqlite3_value_nochange(argv[2 + i]))
                continue;
            vals[n] = pgv_write_text(&t->cols[i], argv[2 + i]);
            sqlite3_str_appendf(s, "%s%s = $%d", set++ ? ", " : "", t->cols[i].qname, ++n);
        }
        vals[n] = pgv_rowid_param(t, sqlite3_value_int64(argv[0]));
        put_rowid_where(s, t, ++n);
        if (!set)
            expect_row = false;
    }
    char *sql = sqlite3_str_finish(s);
    if (!sql)
        rc = SQLITE_NOMEM;
    if (rc == SQLITE_OK && expect_row) {
        PGresult *r = PQexecParams(c, sql, n, NULL, (const char *const *)vals, NULL, NULL, 0);
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            rc = pgv_pg_fail(v, tab, c, r,
                             argc == 1                                    ? "DELETE"
                             : sqlite3_value_type(argv[0]) == SQLITE_NULL ? "INSERT"
                                                                          : "UPDATE");
            if (rc == SQLITE_ERROR && PQresultErrorField(r, PG_DIAG_SQLSTATE) &&
                strncmp(PQresultErrorField(r, PG_DIAG_SQLSTATE), "23", 2) == 0)
                rc = SQLITE_CONSTRAINT;
        } else if (strcmp(PQcmdTuples(r), "1") != 0) {
            pgv_set_sqlstate(v, "40001");
            sqlite3_free(tab->zErrMsg);
            tab->zErrMsg = sqlite3_mprintf("PostgreSQL: the row of %s was changed or deleted by another "
                                           "transaction meanwhile",
                                           t->label);
            rc = SQLITE_ERROR;
        } else if (argc > 1 && sqlite3_value_type(argv[0]) == SQLITE_NULL) {
            const char *got = PQgetvalue(r, 0, 0);
            *rowid = t->keycol >= 0 ? strtoll(got, NULL, 10) : pgv_ctid_rowid(got);
        }
        PQclear(r);
    }
    sqlite3_free(sql);
    for (int i = 0; i < n; i++)
        sqlite3_free(vals[i]);
    sqlite3_free(vals);
    return rc;
}

int pgv_begin(sqlite3_vtab *tab)
{
    struct pgvt *vt = (struct pgvt *)tab;
    struct pgvtab *v = vt->v;
    v->sqlstate[0] = 0;
    PGconn *c = pgv_bind_conn(v, tab, vt->t->bind);
    if (!c)
        return SQLITE_ERROR;
    struct pgbind *b = &v->binds[vt->t->bind];
    if (PQtransactionStatus(c) == PQTRANS_IDLE) {
        int rc = pgv_pg_command(v, tab, c, "BEGIN");
        if (rc != SQLITE_OK)
            return rc;
        b->own_txn = true;
    }
    b->writers++;
    return SQLITE_OK;
}

/* Phase one: commits the module's own transaction (its error still stops
 * SQLite's commit); a transaction the caller opened is the caller's. */
int pgv_sync(sqlite3_vtab *tab)
{
    struct pgvt *vt = (struct pgvt *)tab;
    struct pgbind *b = &vt->v->binds[vt->t->bind];
    if (!b->own_txn || !b->conn)
        return SQLITE_OK;
    b->own_txn = false;
    b->sp_depth = 0;
    return pgv_pg_command(vt->v, tab, b->conn, "COMMIT");
}

int pgv_commit(sqlite3_vtab *tab)
{
    struct pgvt *vt = (struct pgvt *)tab;
    struct pgbind *b = &vt->v->binds[vt->t->bind];
    if (b->writers > 0)
        b->writers--;
    return SQLITE_OK;
}

int pgv_rollback(sqlite3_vtab *tab)
{
    struct pgvt *vt = (struct pgvt *)tab;
    struct pgbind *b = &vt->v->binds[vt->t->bind];
    int rc = SQLITE_OK;
    if (b->writers > 0)
        b->writers--;
    if (b->own_txn && b->conn) {
        b->own_txn = false;
        b->sp_depth = 0;
        if (PQstatus(b->conn) == CONNECTION_OK)
            rc = pgv_pg_command(vt->v, tab, b->conn, "ROLLBACK");
    }
    return rc;
}

/* Savepoint `i` (SQLite's numbering) on the bind: 0 = SAVEPOINT,
 * 1 = RELEASE, 2 = ROLLBACK TO. */
static int savepoint(sqlite3_vtab *tab, int i, int what)
{
    struct pgvt *vt = (struct pgvt *)tab;
    struct pgbind *b = &vt->v->binds[vt->t->bind];
    if (!b->conn || PQtransactionStatus(b->conn) == PQTRANS_IDLE)
        return SQLITE_OK;
    char sql[64];
    if (what == 0) {
        if (b->sp_depth > i)
            return SQLITE_OK; /* another vtab of the bind made it */
        snprintf(sql, sizeof sql, "SAVEPOINT sqlmux_sp_%d", i);
        b->sp_depth = i + 1;
    } else {
        if (b->sp_depth <= i)
            return SQLITE_OK;
        snprintf(sql, sizeof sql, "%s sqlmux_sp_%d", what == 1 ? "RELEASE" : "ROLLBACK TO", i);
        b->sp_depth = what == 1 ? i : i + 1;
    }
    return pgv_pg_command(vt->v, tab, b->conn, sql);
}

int pgv_savepoint(sqlite3_vtab *tab, int i)
{
    return savepoint(tab, i, 0);
}

int pgv_release(sqlite3_vtab *tab, int i)
{
    return savepoint(tab, i, 1);
}

int pgv_rollback_to(sqlite3_vtab *tab, int i)
{
    return savepoint(tab, i, 2);
}
