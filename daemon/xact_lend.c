/*
 * A statement across SQLite and PostgreSQL binds inside a transaction
 * (session_xact.c): it runs on the transaction's SQLite worker connection
 * (its home, where the SQLite part of the transaction is open), and reads
 * or writes the PostgreSQL tables through virtual tables (pgvtab.h) over
 * the connections of the transaction's PostgreSQL participants, lent to
 * the worker for this one statement (job->xact_lent, blocking mode; the
 * loop does not touch them until the job is done). So the statement sees
 * the transaction's own uncommitted writes in every bind.
 *
 * The virtual tables live in the connection's temp schema (its main is
 * the home bind's own database) for the statement only: made before it,
 * dropped after it, with a pgvtab of their own.
 *
 * Worker threads only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/backend_sqlite.h"
#include "daemon/pgvtab.h"
#include "daemon/route.h"
#include "daemon/xact.h"

/* pgvtab_conn_fn: the lent connection of bind `bind`. */
static PGconn *lent_conn(void *arg, size_t bind, char **err)
{
    const struct job *job = arg;

    for (size_t i = 0; i < job->nxact_lent; i++)
        if (job->xact_lent[i].bind == bind)
            return job->xact_lent[i].conn;
    *err = strdup("this PostgreSQL bind is not part of the transaction's statement");
    return NULL;
}

static int put_quoted(struct buf *b, const char *name)
{
    int rc = buf_putc(b, '"');
    for (const char *p = name; rc == 0 && *p != '\0'; p++)
        rc = *p == '"' ? buf_puts(b, "\"\"") : buf_putc(b, *p);
    return rc == 0 ? buf_putc(b, '"') : rc;
}

int xact_lend_begin(struct worker *w, struct job *job, struct pgvtab **vtp, struct buf *out)
{
    const struct config *cfg = confref_cfg(job->cfgref);
    struct buf sql = BUF_INIT;
    struct route_info ri;
    struct route r;
    struct pgvtab *vt;
    size_t pos = 0;
    char msg[600];
    const char *code = "NOMEM";
    int rc = 0;

    *vtp = NULL;
    route_compute(cfg, job->catset, job->req.text, job->req.len, &r, &ri);
    w->internal = true;
    vt = pgvtab_open(w->db, cfg, lent_conn, job);
    w->internal = false;
    if (vt == NULL) {
        snprintf(msg, sizeof msg, "cannot set up the PostgreSQL virtual tables");
        rc = -1;
    } else {
        pgvtab_in_temp(vt);
    }
    /* The PostgreSQL tables' references become their virtual tables
     * (named as written: the alias); SQLite tables stay as they are. */
    for (size_t i = 0; rc == 0 && i < ri.nrefs; i++) {
        const struct route_ref *ref = &ri.refs[i];
        const struct route_table *t = &ri.tables[ref->table];
        char name[512];
        char *perr = NULL;
        size_t bind;

        if (route_is_system_table(t) || route_table_rule(cfg, job->catset, t, &bind) == ROUTE_RULE_SYSTEM ||
            bind >= cfg->nbinds || cfg->binds[bind].type != BIND_POSTGRES)
            continue;
        w->internal = true;
        rc = pgvtab_expose(vt, bind, t->schema, t->name, name, sizeof name, &perr);
        w->internal = false;
        if (rc != 0) {
            code = pgvtab_sqlstate(vt) != NULL && strcmp(pgvtab_sqlstate(vt), "08001") == 0 ? "UNAVAILABLE"
                                                                                            : "SQL";
            snprintf(msg, sizeof msg, "%s", perr != NULL ? perr : "cannot use the PostgreSQL table");
            free(perr);
            break;
        }
        rc = buf_append(&sql, job->req.text + pos, ref->pos - pos);
        rc |= buf_puts(&sql, name);
        if (!(ref->flags & (REF_F_ALIASED | REF_F_NOALIAS))) {
            rc |= buf_puts(&sql, " AS ");
            rc |= put_quoted(&sql, t->name);
        }
        pos = ref->pos + ref->len;
        if (rc != 0)
            snprintf(msg, sizeof msg, "out of memory rewriting the statement");
    }
    if (rc == 0 &&
        (buf_append(&sql, job->req.text + pos, job->req.len - pos) != 0 || buf_putc(&sql, '\0') != 0)) {
        snprintf(msg, sizeof msg, "out of memory rewriting the statement");
        rc = -1;
    }
    route_clear(&r);
    sqlparse_info_free(&ri);
    if (rc != 0) {
        buf_free(&sql);
        sqlite_reply_error_at(out, w->mark, code, msg);
        xact_lend_end(w, job, vt, out);
        return -1;
    }
    codec_request_set_text(&job->req, sql.data, sql.len - 1);
    w->lent_pg = true;
    *vtp = vt;
    return 0;
}

void xact_lend_end(struct worker *w, struct job *job, struct pgvtab *vt, struct buf *out)
{
    if (vt == NULL)
        return;
    if (job->failed)
        sqlite_pg_error(vt, out);
    else if (job->kind == STMT_INSERT)
        for (size_t i = 0; i < job->nxact_binds; i++)
            if (job->xact_binds[i].writes &&
                confref_cfg(job->cfgref)->binds[job->xact_binds[i].index].type == BIND_POSTGRES)
                sqlite_drop_last_id(out);
    w->lent_pg = false;
    w->internal = true;
    pgvtab_close(vt);
    w->internal = false;
}
