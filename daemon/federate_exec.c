/*
 * Executor connections of statements across binds (federate.h,
 * federate_int.h) and the rewrite of a statement for them.
 *
 * An executor is a struct worker of the SQLite backend with a stand-in
 * sqlite_bind, bind and bind_conf of its own: sqlite_exec.c and
 * sqlite_conn.c read their settings from there (statement cache size,
 * busy_timeout, statement_timeout, foreign_keys), set per statement from
 * the binds it touches. Binds are attached on demand and stay attached
 * (ATTACH opens the file and reads its schema: paying that per statement
 * would cost more than the statement); when SQLite's attach limit is
 * reached, binds the statement does not use are detached, after the
 * statement cache is emptied (a cached statement may name them).
 *
 * The rewrite replaces each table reference that sqlparse reports (its
 * byte span) with "bind"."table" for SQLite binds and the virtual table's
 * name for PostgreSQL tables (pgvtab.h). SQLite's own tables (sqlite_schema
 * and friends) go to the statement's first SQLite bind, as the router
 * decides for a single bind.
 *
 * The PostgreSQL virtual table module is daemon/pgvtab.c; its functions
 * are weak references here, so a build without it links and a statement
 * that needs a PostgreSQL table gets -ERR UNSUPPORTED.
 */
#include "daemon/federate_int.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "daemon/backend_pg.h"
#include "daemon/backend_sqlite.h"
#include "daemon/log.h"
#include "daemon/pgvtab.h"
#include "daemon/server.h"
#include "daemon/sqllex.h"

#pragma weak pgvtab_open
#pragma weak pgvtab_expose
#pragma weak pgvtab_forget
#pragma weak pgvtab_plan
#pragma weak pgvtab_sqlstate
#pragma weak pgvtab_set_outer
#pragma weak pgvtab_close

/* SQLite's hard maximum of attached databases; the build's own limit
 * (10 on Debian) is what sqlite3_limit() then reports. */
#define FED_ATTACH_HARD_MAX 125

/* ---- Executors ------------------------------------------------------------ */

sqlite3 *federate_exec_db(struct fed_exec *x)
{
    return x->w.db;
}

struct pgvtab *federate_exec_pgvtab(struct fed_exec *x)
{
    return x->vt;
}

/* Finalize every cached statement (before a DETACH: they may name it). */
static void exec_flush_cache(struct fed_exec *x)
{
    for (size_t i = 0; i < x->w.ncache; i++)
        sqlite_cached_free(&x->w.cache[i]);
    x->w.ncache = 0;
}

/* federate_exec_open(), or with quick the loop thread's executor: URI
 * file names (ATTACH through the nowait VFS), no busy wait, reads only,
 * the quick-read limits. */
struct fed_exec *fed_exec_open(struct server *srv, bool quick, char *err, size_t errlen)
{
    const struct config *cfg = srv->cfg;
    struct fed_exec *x = calloc(1, sizeof *x);

    if (x == NULL) {
        snprintf(err, errlen, "federation: out of memory");
        return NULL;
    }
    x->srv = srv;
    x->conf.name = FEDERATE_NAME;
    x->conf.type = BIND_SQLITE_FILE;
    x->conf.busy_timeout_ms = 5000;
    x->bind.host = &srv->host;
    x->bind.conf = &x->conf;
    x->bind.impl = &x->sb;
    x->bind.ops = &backend_sqlite_ops;
    x->sb.bind = &x->bind;
    x->sb.filename = ":memory:";
    /* Binds are attached by URI (a VFS named) and otherwise by their
     * absolute paths, which never start with "file:". */
    x->sb.open_flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
    x->sb.stmt_cache = (size_t)cfg->stmt_cache;
    atomic_init(&x->sb.writes, 0);
    snprintf(x->sb.readonly_msg, sizeof x->sb.readonly_msg, "a read across binds may not write");
    x->w.sb = &x->sb;
    x->w.tail = &x->w.head;
    x->w.federated = true;
    x->w.cache = calloc(x->sb.stmt_cache + 1, sizeof *x->w.cache);
    if (x->w.cache == NULL) {
        snprintf(err, errlen, "federation: out of memory");
        federate_exec_close(x);
        return NULL;
    }
    if (sqlite_conn_open(&x->sb, &x->w.db, NULL, err, errlen) != 0 ||
        sqlite_conn_harden(&x->w, NULL, err, errlen) != 0) {
        federate_exec_close(x);
        return NULL;
    }
    /* The daemon attaches the binds itself (the authorizer still refuses
     * a client's ATTACH): as many as the build allows. */
    sqlite3_limit(x->w.db, SQLITE_LIMIT_ATTACHED, FED_ATTACH_HARD_MAX);
    x->max_attached = sqlite3_limit(x->w.db, SQLITE_LIMIT_ATTACHED, -1);
    x->att = calloc((size_t)x->max_attached + 1, sizeof *x->att);
    x->schemas = calloc((size_t)x->max_attached + 2, sizeof *x->schemas);
    if (x->att == NULL || x->schemas == NULL) {
        snprintf(err, errlen, "federation: out of memory");
        federate_exec_close(x);
        return NULL;
    }
    if (quick) {
        /* As a bind's quick-read connection (sqlite_quick_open). */
        x->quick = x->w.quick = x->w.readonly = true;
        sqlite_conn_exec_internal(&x->w, "PRAGMA temp_store = MEMORY");
        sqlite_conn_query_only(&x->w, true);
        sqlite3_busy_timeout(x->w.db, 0);
        sqlite_conn_max_value(&x->w, cfg->max_value, QUICK_MAX_LENGTH);
        sqlite3_limit(x->w.db, SQLITE_LIMIT_LIKE_PATTERN_LENGTH, QUICK_MAX_PATTERN);
        sqlite3_progress_handler(x->w.db, QUICK_PROGRESS_STEPS, sqlite_quick_progress, &x->w);
    }
    return x;
}

struct fed_exec *federate_exec_open(struct server *srv, char *err, size_t errlen)
{
    return fed_exec_open(srv, false, err, errlen);
}

void federate_exec_close(struct fed_exec *x)
{
    if (x == NULL)
        return;
    if (x->vt != NULL) {
        exec_flush_cache(x); /* no statement may use its tables */
        x->w.internal = true;
        pgvtab_close(x->vt);
    }
    for (size_t i = 0; i < x->npg; i++) {
        PQfinish(x->pg[i].conn);
        free(x->pg[i].name);
    }
    free(x->pg);
    for (size_t i = 0; i < x->natt; i++) {
        free(x->att[i].name);
        free(x->att[i].file);
    }
    free(x->att);
    free(x->schemas);
    x->sb.stmt_cache = 0;
    if (x->w.cache != NULL || x->w.db != NULL)
        sqlite_worker_close(&x->w);
    free(x);
}

/* The libpq connection of x to PostgreSQL bind `bind` of cfg. */
PGconn *federate_exec_pg(struct fed_exec *x, const struct config *cfg, size_t bind, char **err)
{
    const struct bind_conf *bc = &cfg->binds[bind];
    struct fed_pg *slot = NULL;
    char msg[512];

    x->pg_down = false;
    for (size_t i = 0; i < x->npg; i++)
        if (strcmp(x->pg[i].name, bc->name) == 0)
            slot = &x->pg[i];
    if (slot != NULL && slot->conn != NULL && PQstatus(slot->conn) == CONNECTION_OK)
        return slot->conn;
    if (slot == NULL) {
        struct fed_pg *pg = realloc(x->pg, (x->npg + 1) * sizeof *pg);
        if (pg == NULL) {
            *err = strdup("out of memory");
            return NULL;
        }
        x->pg = pg;
        slot = &x->pg[x->npg];
        slot->conn = NULL;
        slot->name = strdup(bc->name);
        if (slot->name == NULL) {
            *err = strdup("out of memory");
            return NULL;
        }
        x->npg++;
    }
    PQfinish(slot->conn);
    slot->conn =
        PQconnectdbParams((const char *const *)bc->pg_keywords, (const char *const *)bc->pg_values, 0);
    /* SQLite's text is UTF-8: PostgreSQL converts from the database's
     * encoding (a LATIN1 database), whatever the URL or PGCLIENTENCODING
     * asked for. */
    if (slot->conn != NULL && PQstatus(slot->conn) == CONNECTION_OK &&
        PQsetClientEncoding(slot->conn, "UTF8") == 0)
        return slot->conn;
    snprintf(msg, sizeof msg, "bind %s is unavailable: %s", bc->name,
             slot->conn != NULL ? PQerrorMessage(slot->conn) : "out of memory");
    msg[strcspn(msg, "\n")] = '\0';
    PQfinish(slot->conn);
    slot->conn = NULL;
    x->pg_down = true;
    *err = strdup(msg);
    return NULL;
}

static PGconn *exec_pg_for_vtab(void *arg, size_t bind, char **err)
{
    struct fed_exec *x = arg;
    return federate_exec_pg(x, x->vt_cfg, bind, err);
}

int fed_exec_attach(struct fed_exec *x, const char *name, const char *uri, bool memory, char *msg,
                    size_t msglen)
{
    char sql[320];
    sqlite3_stmt *stmt = NULL;
    int rc;

    snprintf(sql, sizeof sql, "ATTACH ?1 AS \"%s\"", name);
    x->w.internal = true;
    rc = sqlite3_prepare_v2(x->w.db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(stmt, 1, uri, -1, SQLITE_STATIC);
        rc = sqlite3_step(stmt);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(stmt);
    if (rc == SQLITE_OK) {
        /* The settings a bind's own connections have (sqlite_conn_open). */
        snprintf(sql, sizeof sql,
                 memory ? "PRAGMA \"%s\".mmap_size = " MEMORY_MMAP_SIZE "; PRAGMA \"%s\".synchronous = OFF"
                 : x->quick ? "PRAGMA \"%s\".mmap_size = 0; PRAGMA \"%s\".cache_size = " QUICK_CACHE_KIB
                            : "PRAGMA \"%s\".journal_size_limit = " WAL_LIMIT_TEXT,
                 name, name);
        sqlite3_exec(x->w.db, sql, NULL, NULL, NULL);
    }
    x->w.internal = false;
    if (rc != SQLITE_OK) {
        snprintf(msg, msglen, "cannot attach bind %s: %s", name, sqlite3_errmsg(x->w.db));
        return -1;
    }
    return 0;
}

static void exec_detach(struct fed_exec *x, size_t i)
{
    char sql[160];

    snprintf(sql, sizeof sql, "DETACH \"%s\"", x->att[i].name);
    if (sqlite_conn_exec_internal(&x->w, sql) != SQLITE_OK)
        log_warn("federation: cannot detach %s: %s", x->att[i].name, sqlite3_errmsg(x->w.db));
    free(x->att[i].name);
    free(x->att[i].file);
    x->att[i] = x->att[--x->natt];
}

/* The held bind of job named like bc, NULL when the job does not hold it. */
static struct bind *job_xbind(const struct job *job, const struct bind_conf *bc)
{
    for (size_t i = 0; i < job->nxbinds; i++)
        if (strcmp(job->xbinds[i]->conf->name, bc->name) == 0)
            return job->xbinds[i];
    return NULL;
}

/* Attach the SQLite binds of route r (those not attached yet), detaching
 * unused ones when the limit is reached; fill x->schemas with them. */
static int exec_attach_route(struct fed_exec *x, const struct job *job, const struct config *cfg,
                             const struct route *r, const char **code, char *msg, size_t msglen)
{
    size_t nsqlite = 0;
    bool flushed = false;

    for (size_t i = 0; i < x->natt; i++)
        x->att[i].used = false;
    for (size_t k = 0; k < r->nbinds; k++)
        nsqlite += cfg->binds[r->binds[k].index].type != BIND_POSTGRES;
    if (nsqlite > (size_t)x->max_attached) {
        *code = "BINDLIMIT";
        snprintf(msg, msglen,
                 "the statement uses %zu SQLite binds; one statement can join at most %d (SQLite's limit of "
                 "attached databases in this build)",
                 nsqlite, x->max_attached);
        return -1;
    }
    nsqlite = 0;
    for (size_t k = 0; k < r->nbinds; k++) {
        const struct bind_conf *bc = &cfg->binds[r->binds[k].index];
        struct bind *b;
        const char *file;
        size_t i;

        if (bc->type == BIND_POSTGRES)
            continue;
        b = job_xbind(job, bc);
        if (b == NULL || b->impl == NULL) {
            *code = "UNAVAILABLE";
            snprintf(msg, msglen, "bind %s is not open", bc->name);
            return -1;
        }
        if (strcmp(bc->name, "main") == 0 || strcmp(bc->name, "temp") == 0) {
            *code = "UNSUPPORTED";
            snprintf(msg, msglen,
                     "a bind named %s cannot join a statement across binds (SQLite reserves the name)",
                     bc->name);
            return -1;
        }
        file = ((const struct sqlite_bind *)b->impl)->filename;
        for (i = 0; i < x->natt; i++)
            if (strcmp(x->att[i].name, bc->name) == 0)
                break;
        if (i < x->natt && strcmp(x->att[i].file, file) != 0) {
            /* A reload replaced the bind: its database moved. */
            if (!flushed)
                exec_flush_cache(x);
            flushed = true;
            exec_detach(x, i);
            i = x->natt;
        }
        if (i == x->natt) {
            if (x->natt == (size_t)x->max_attached) {
                size_t victim = 0;
                while (x->att[victim].used)
                    victim++;
                if (!flushed)
                    exec_flush_cache(x);
                flushed = true;
                exec_detach(x, victim);
                i = x->natt;
            }
            bool memory = bc->type == BIND_SQLITE_MEMORY;
            char uri[4200];
            if (sqlite_attach_uri(file, memory, uri, sizeof uri) != 0) {
                *code = "SQL";
                snprintf(msg, msglen, "cannot attach bind %s: its file name is too long", bc->name);
                return -1;
            }
            if (fed_exec_attach(x, bc->name, uri, memory, msg, msglen) != 0) {
                *code = "SQL";
                return -1;
            }
            x->att[i].name = strdup(bc->name);
            x->att[i].file = strdup(file);
            if (x->att[i].name == NULL || x->att[i].file == NULL) {
                free(x->att[i].name);
                free(x->att[i].file);
                *code = "NOMEM";
                snprintf(msg, msglen, "out of memory");
                return -1;
            }
            x->natt++;
        }
        x->att[i].used = true;
        x->schemas[nsqlite++] = x->att[i].name;
    }
    x->schemas[nsqlite] = NULL;
    return 0;
}

/* Appends name as a quoted SQL identifier. */
static int put_ident(struct buf *b, const char *name)
{
    int rc = buf_putc(b, '"');
    for (const char *p = name; rc == 0 && *p != '\0'; p++)
        rc = *p == '"' ? buf_puts(b, "\"\"") : buf_putc(b, *p);
    return rc == 0 ? buf_putc(b, '"') : rc;
}

/* The pgvtab for cfg, opened (again) when missing or made for another
 * configuration. */
static int exec_vtab(struct fed_exec *x, const struct config *cfg, const char **code, char *msg,
                     size_t msglen)
{
    /* The module creates and drops its tables in main: a read-only
     * statement's query_only (sqlite_exec_job sets it per job) must not
     * be on for that. */
    sqlite_conn_query_only(&x->w, false);
    if (pgvtab_open == NULL) {
        *code = "UNSUPPORTED";
        snprintf(msg, msglen,
                 "this build cannot join PostgreSQL tables with other binds (the PostgreSQL virtual table "
                 "module, daemon/pgvtab.c, is not in it)");
        return -1;
    }
    if (x->vt != NULL && x->vt_cfg == cfg) {
        uint64_t now = x->catalog != NULL ? atomic_load(x->catalog) : 0;
        if (now != x->catalog_seen) {
            /* A PostgreSQL table may have new columns: read them again. */
            exec_flush_cache(x);
            x->w.internal = true;
            pgvtab_forget(x->vt);
            x->w.internal = false;
            x->catalog_seen = now;
        }
        return 0;
    }
    x->catalog_seen = x->catalog != NULL ? atomic_load(x->catalog) : 0;
    if (x->vt != NULL) {
        exec_flush_cache(x);
        x->w.internal = true;
        pgvtab_close(x->vt);
        x->w.internal = false;
    }
    x->vt_cfg = cfg;
    x->w.internal = true;
    x->vt = pgvtab_open(x->w.db, cfg, exec_pg_for_vtab, x);
    x->w.internal = false;
    if (x->vt == NULL) {
        *code = "NOMEM";
        snprintf(msg, msglen, "cannot set up the PostgreSQL virtual tables");
        return -1;
    }
    return 0;
}

/* Whether the table reference at pos of sql may be on the preserved side
 * of an outer join (pgvtab_set_outer): the statement has a RIGHT or FULL
 * word, or a LEFT one and the reference is not right after LEFT [OUTER]
 * JOIN (there SQLite offers the table only its own join's ON clause). A
 * column so named costs only pushdown. */
static bool ref_preserved(const char *sql, size_t len, size_t pos)
{
    struct sqltok t, last[3] = {{0}};
    bool left = false, other = false, right_of_left = false;

    for (size_t at = 0; (t = sqllex_next(sql, len, at, 0)).type != SQLTOK_EOF && t.type != SQLTOK_ERROR;
         at = t.pos + t.len) {
        if (t.pos == pos) {
            bool join = last[0].type == SQLTOK_WORD && last[0].len == 4 &&
                        strncasecmp(sql + last[0].pos, "join", 4) == 0;
            size_t k = last[1].type == SQLTOK_WORD && last[1].len == 5 &&
                               strncasecmp(sql + last[1].pos, "outer", 5) == 0
                           ? 2
                           : 1;
            right_of_left = join && last[k].type == SQLTOK_WORD && last[k].len == 4 &&
                            strncasecmp(sql + last[k].pos, "left", 4) == 0;
        }
        if (t.type == SQLTOK_WORD && t.len == 4 && strncasecmp(sql + t.pos, "left", 4) == 0)
            left = true;
        if (t.type == SQLTOK_WORD && ((t.len == 5 && strncasecmp(sql + t.pos, "right", 5) == 0) ||
                                      (t.len == 4 && strncasecmp(sql + t.pos, "full", 4) == 0)))
            other = true;
        last[2] = last[1];
        last[1] = last[0];
        last[0] = t;
    }
    return other || (left && !right_of_left);
}

/* The rewritten statement into *out: every reference of ri replaced. */
int fed_exec_rewrite(struct fed_exec *x, const struct config *cfg, const struct route *r,
                     const struct route_info *ri, const char *sql, size_t len, const struct fed_insert *ins,
                     size_t nins, struct buf *out, const char **code, char *msg, size_t msglen)
{
    const char *sys_bind = NULL;
    size_t pos = 0, next = 0;
    int rc = 0;

    for (size_t k = 0; k < r->nbinds && sys_bind == NULL; k++)
        if (cfg->binds[r->binds[k].index].type != BIND_POSTGRES)
            sys_bind = cfg->binds[r->binds[k].index].name;
    for (size_t i = 0; rc == 0 && i < ri->nrefs; i++) {
        const struct route_ref *ref = &ri->refs[i];
        const struct route_table *t = &ri->tables[ref->table];
        const struct bind_conf *bc;

        for (; rc == 0 && ins != NULL && next < nins && ins[next].pos <= ref->pos; next++) {
            rc = buf_append(out, sql + pos, ins[next].pos - pos);
            if (rc == 0)
                rc = buf_puts(out, ins[next].text);
            pos = ins[next].pos;
        }
        if (rc == 0)
            rc = buf_append(out, sql + pos, ref->pos - pos);
        pos = ref->pos + ref->len;
        if (rc != 0)
            break;
        if (route_is_system_table(t)) {
            if (sys_bind == NULL) {
                rc = buf_append(out, sql + ref->pos, ref->len);
                continue;
            }
            rc = put_ident(out, sys_bind);
        } else {
            bc = &cfg->binds[route_table_bind(cfg, t->schema, t->name)];
            if (bc->type == BIND_POSTGRES) {
                char name[512];
                char *perr = NULL;
                if (exec_vtab(x, cfg, code, msg, msglen) != 0)
                    return -1;
                x->uses_pg = true;
                /* The module creates its virtual table in main: the
                 * daemon's own statement, past the authorizer. */
                x->w.internal = true;
                rc = pgvtab_expose(x->vt, (size_t)(bc - cfg->binds), t->schema, t->name, name, sizeof name,
                                   &perr);
                x->w.internal = false;
                if (rc != 0) {
                    *code = x->pg_down ? "UNAVAILABLE" : "SQL";
                    snprintf(msg, msglen, "%s", perr != NULL ? perr : "cannot use the PostgreSQL table");
                    free(perr);
                    return -1;
                }
                if (ref_preserved(sql, len, ref->pos))
                    pgvtab_set_outer(x->vt, (size_t)(bc - cfg->binds), t->schema, t->name);
                rc = buf_puts(out, name);
                /* Column references name the table as written: the
                 * virtual table gets that name as its alias. */
                if (rc == 0 && !(ref->flags & (REF_F_ALIASED | REF_F_NOALIAS))) {
                    rc = buf_puts(out, " AS ");
                    if (rc == 0)
                        rc = put_ident(out, t->name);
                }
                continue;
            }
            rc = put_ident(out, bc->name);
        }
        if (rc == 0)
            rc = buf_putc(out, '.');
        if (rc == 0)
            rc = put_ident(out, t->name);
    }
    for (; rc == 0 && ins != NULL && next < nins; next++) {
        rc = buf_append(out, sql + pos, ins[next].pos - pos);
        if (rc == 0)
            rc = buf_puts(out, ins[next].text);
        pos = ins[next].pos;
    }
    if (rc == 0)
        rc = buf_append(out, sql + pos, len - pos);
    if (rc != 0) {
        *code = "NOMEM";
        snprintf(msg, msglen, "out of memory rewriting the statement");
        return -1;
    }
    return 0;
}

/* Per statement: the settings of the binds it touches. busy_timeout and
 * statement_timeout: the longest of them (0, never, wins for the latter);
 * foreign_keys: the target's (a connection-wide PRAGMA; outside
 * transactions only). */
static void exec_settings(struct fed_exec *x, const struct config *cfg, const struct route *r)
{
    bool fk = false;

    x->conf.busy_timeout_ms = 0;
    x->conf.statement_timeout_ms = -1;
    for (size_t k = 0; k < r->nbinds; k++) {
        const struct bind_conf *bc = &cfg->binds[r->binds[k].index];
        if (bc->busy_timeout_ms > x->conf.busy_timeout_ms)
            x->conf.busy_timeout_ms = bc->busy_timeout_ms;
        if (x->conf.statement_timeout_ms != 0 &&
            (bc->statement_timeout_ms == 0 || bc->statement_timeout_ms > x->conf.statement_timeout_ms))
            x->conf.statement_timeout_ms = bc->statement_timeout_ms;
        if (r->binds[k].writes && bc->type != BIND_POSTGRES)
            fk = bc->foreign_keys;
    }
    if (x->conf.statement_timeout_ms < 0)
        x->conf.statement_timeout_ms = 0;
    if (fk != x->conf.foreign_keys && sqlite3_get_autocommit(x->w.db) &&
        sqlite_conn_exec_internal(&x->w, fk ? "PRAGMA foreign_keys = ON" : "PRAGMA foreign_keys = OFF") ==
            SQLITE_OK)
        x->conf.foreign_keys = fk;
}

int federate_exec_prepare(struct fed_exec *x, struct job *job, char **sql, size_t *len, const char **code,
                          char *msg, size_t msglen)
{
    const struct config *cfg = confref_cfg(job->cfgref);
    struct buf out = BUF_INIT;
    struct fed_insert *ins = NULL;
    size_t nins = 0;
    struct route_info ri;
    struct route r;
    int rc = -1;

    route_compute(cfg, job->catset, job->req.text, job->req.len, &r, &ri);
    x->w.write_schema = NULL;
    x->schemas[0] = NULL;
    x->uses_pg = false;
    x->semijoins = 0;
    if (x->vt != NULL)
        pgvtab_set_outer(x->vt, 0, NULL, NULL);
    if (r.err_code != NULL && strcmp(r.err_code, "CROSSBIND") != 0) {
        *code = r.err_code;
        snprintf(msg, msglen, "%s", r.err_msg ? r.err_msg : "out of memory");
        goto done;
    }
    if (exec_attach_route(x, job, cfg, &r, code, msg, msglen) != 0 ||
        fed_exec_rewrite(x, cfg, &r, &ri, job->req.text, job->req.len, NULL, 0, &out, code, msg, msglen) != 0)
        goto done;
    /* A join of an SQLite table with a PostgreSQL table: the same
     * statement with semi-join filters (federate_semi.c), rewritten again
     * now that the PostgreSQL tables are exposed. */
    if (x->uses_pg && !x->quick) {
        if (fed_semijoins(x, cfg, &ri, job->req.text, job->req.len, &ins, &nins) != 0) {
            *code = "NOMEM";
            snprintf(msg, msglen, "out of memory rewriting the statement");
            goto done;
        }
        if (nins > 0) {
            buf_truncate(&out, 0);
            if (fed_exec_rewrite(x, cfg, &r, &ri, job->req.text, job->req.len, ins, nins, &out, code, msg,
                                 msglen) != 0)
                goto done;
            x->semijoins = nins;
        }
    }
    x->w.schemas = x->schemas;
    for (size_t k = 0; k < r.nbinds; k++) {
        const struct bind_conf *bc = &cfg->binds[r.binds[k].index];
        if (r.binds[k].writes && r.kind != STMT_SELECT)
            x->w.write_schema = bc->type == BIND_POSTGRES ? "main" : job_xbind(job, bc)->conf->name;
    }
    exec_settings(x, cfg, &r);
    *sql = out.data;
    *len = out.len;
    out = (struct buf)BUF_INIT;
    rc = 0;
done:
    fed_inserts_free(ins, nins);
    buf_free(&out);
    route_clear(&r);
    sqlparse_info_free(&ri);
    return rc;
}

/* The target bind's SQLite backend, NULL when it has none. */
static struct sqlite_bind *exec_target(const struct fed_exec *x, const struct job *job)
{
    for (size_t i = 0; x->w.write_schema != NULL && i < job->nxbinds; i++)
        if (strcmp(job->xbinds[i]->conf->name, x->w.write_schema) == 0 &&
            job->xbinds[i]->conf->type != BIND_POSTGRES)
            return job->xbinds[i]->impl;
    return NULL;
}

/* .plan: prepare the rewritten statement (job->req.text) and answer, per
 * PostgreSQL table, the SQL its virtual table will send: "=bind\ttable\tsent"
 * rows, then +OK bind=* postgresql=N, with semijoins=M when the rewrite
 * added M semi-join filters (federate_semi.c). */
static void exec_plan(struct fed_exec *x, struct job *job, struct buf *out)
{
    static const char *const cols[] = {"bind", "table", "sent"};
    sqlite3_stmt *stmt = NULL;
    char *plan = NULL, facts[64];
    struct codec_row row;
    size_t n = 0;
    int rc;

    x->w.denied = NULL;
    rc = sqlite3_prepare_v2(x->w.db, job->req.text, (int)job->req.len, &stmt, NULL);
    if (rc != SQLITE_OK) {
        x->w.mark = 0;
        sqlite_reply_db_error(&x->w, out, rc);
        job->failed = true;
        return;
    }
    if (x->uses_pg && (plan = pgvtab_plan(x->vt, stmt)) == NULL)
        rc = SQLITE_NOMEM;
    sqlite3_finalize(stmt);
    codec_header_begin(&row, out);
    for (size_t i = 0; i < 3; i++) {
        codec_field_str(&row, cols[i]);
        codec_field_str(&row, "");
    }
    rc |= codec_row_end(&row);
    /* Lines of "bind.schema.table: SQL". */
    for (char *line = plan; rc == 0 && line != NULL && *line != '\0'; n++) {
        char *end = strchr(line, '\n'), *colon = strstr(line, ": "), *dot = strchr(line, '.');
        if (end != NULL)
            *end = '\0';
        codec_row_begin(&row, out);
        if (colon != NULL && dot != NULL && dot < colon) {
            codec_field_text(&row, line, (size_t)(dot - line));
            codec_field_text(&row, dot + 1, (size_t)(colon - dot - 1));
            codec_field_str(&row, colon + 2);
        } else {
            codec_field_str(&row, "");
            codec_field_str(&row, "");
            codec_field_str(&row, line);
        }
        rc |= codec_row_end(&row);
        line = end != NULL ? end + 1 : NULL;
    }
    free(plan);
    if (x->semijoins > 0)
        snprintf(facts, sizeof facts, "bind=* postgresql=%zu semijoins=%zu", n, x->semijoins);
    else
        snprintf(facts, sizeof facts, "bind=* postgresql=%zu", n);
    if (rc != 0 || codec_put_ok(out, facts) != 0) {
        sqlite_reply_error(out, "NOMEM", "out of memory");
        job->failed = true;
    }
    job->rows = n;
}

void federate_exec_run(struct fed_exec *x, struct job *job, struct buf *out)
{
    struct sqlite_bind *target;
    const char *code = "SQL";
    char msg[600];
    char *sql = NULL;
    size_t len = 0;

    x->w.tid = gettid();
    if (federate_exec_prepare(x, job, &sql, &len, &code, msg, sizeof msg) != 0) {
        sqlite_reply_error(out, code, msg);
        job->failed = true;
        job->errors = 1;
        return;
    }
    codec_request_set_text(&job->req, sql, len);
    if (job->plan) {
        exec_plan(x, job, out);
        x->w.write_schema = NULL;
        x->schemas[0] = NULL;
        return;
    }
    target = exec_target(x, job);
    sqlite_exec_job(&x->w, job, out);
    if (job->failed && x->uses_pg)
        sqlite_pg_error(x->vt, out);
    else if (x->w.write_schema != NULL && strcmp(x->w.write_schema, "main") == 0)
        sqlite_drop_last_id(out);
    /* Quick reads of the target bind take a fresh snapshot from now on. */
    if (target != NULL)
        atomic_fetch_add_explicit(&target->writes, 1, memory_order_release);
    x->w.write_schema = NULL;
    x->schemas[0] = NULL;
}
