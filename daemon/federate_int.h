/*
 * Internal to the federation (federate.c: the pool and its quick reads;
 * federate_exec.c: executor connections and the rewrite), not for other
 * modules: the executor's struct, and the functions federate_exec.c lends
 * the pool. federate.h is the federation's interface; federate_refs.c (DDL
 * across binds) needs none of this.
 */
#ifndef SQLMUX_DAEMON_FEDERATE_INT_H
#define SQLMUX_DAEMON_FEDERATE_INT_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/backend_sqlite.h"
#include "daemon/federate.h"

struct fed_attached {
    char *name; /* the schema name: the bind's name */
    char *file; /* the database file attached under it */
    bool used;  /* by the statement being prepared */
};

struct fed_pg {
    char *name; /* the PostgreSQL bind's name */
    PGconn *conn;
};

struct fed_exec {
    struct worker w; /* w.db: the executor connection; w.sb = &sb */
    struct sqlite_bind sb;
    struct bind bind;
    struct bind_conf conf;
    struct server *srv;
    int max_attached;
    struct fed_attached *att; /* [max_attached] */
    size_t natt;
    const char **schemas; /* the running statement's binds, NULL-terminated [max_attached + 1] */
    struct pgvtab *vt;
    const struct config *vt_cfg; /* the configuration vt was opened with */
    struct fed_pg *pg;
    size_t npg;
    bool pg_down;                  /* the last federate_exec_pg failed */
    bool uses_pg;                  /* the statement being run uses PostgreSQL tables */
    bool quick;                    /* the loop thread's (fed_quick): binds attached through the nowait VFS */
    size_t semijoins;              /* filters the rewrite added to the statement being run (.plan) */
    uint64_t catalog_seen;         /* the pool's catalog count when vt last forgot */
    atomic_uint_fast64_t *catalog; /* the pool's count of PostgreSQL DDL */
};

/* federate_exec_open(), or with quick the loop thread's executor: URI
 * file names (ATTACH through the nowait VFS), no busy wait, reads only,
 * the quick-read limits. */
struct fed_exec *fed_exec_open(struct server *srv, bool quick, char *err, size_t errlen);

/* Attach the database at uri (sqlite_attach_uri) as schema name (the
 * daemon's own statement); memory: the in-memory bind's. 0 or -1. */
int fed_exec_attach(struct fed_exec *x, const char *name, const char *uri, bool memory, char *msg,
                    size_t msglen);

/* Text to insert into a statement: text goes right before sql[pos]. */
struct fed_insert {
    size_t pos;
    char *text; /* sqlite3_malloc'd */
};

/* The rewritten statement into *out: every reference of ri replaced, and
 * ins[0..nins) (sorted by pos, none inside a reference) inserted. */
int fed_exec_rewrite(struct fed_exec *x, const struct config *cfg, const struct route *r,
                     const struct route_info *ri, const char *sql, size_t len, const struct fed_insert *ins,
                     size_t nins, struct buf *out, const char **code, char *msg, size_t msglen);

/* A SELECT of at most this many rows of an SQLite table joined on a
 * PostgreSQL table's column gets a semi-join filter (federate_semi.c). */
#define FED_SEMIJOIN_MAX_ROWS 10000

/*
 * The semi-join filters of a SELECT that joins SQLite tables with
 * PostgreSQL tables (federate_semi.c): for each equality between their
 * columns that may get one, the text to insert into sql (ri its analysis)
 * so that SQLite hands the PostgreSQL table all the keys at once. Runs
 * after x has the statement's binds attached and its PostgreSQL tables
 * exposed. *ins (sorted by pos; free with fed_inserts_free) and *nins get
 * them, none for other statements. 0, or -1 when out of memory.
 */
int fed_semijoins(struct fed_exec *x, const struct config *cfg, const struct route_info *ri, const char *sql,
                  size_t len, struct fed_insert **ins, size_t *nins);
void fed_inserts_free(struct fed_insert *ins, size_t n);

#endif
