/*
 * Routing, in one place: the table map's lookup (which bind a table lives
 * in, from the config's [tables] rules), the decision for a statement (the
 * binds it touches, or the error it gets), combining sqlparse_analyze()
 * with that lookup, and a bounded cache of those decisions keyed by the
 * statement text, so a repeated statement is not analysed again.
 */
#ifndef SQLMUX_DAEMON_ROUTE_H
#define SQLMUX_DAEMON_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/config.h"
#include "daemon/sqlparse.h"

/*
 * The bind for a table. schema and name are already unquoted and lowercased
 * (schema "" when unqualified). A qualified name is looked up as
 * "schema.name" first (exact, then patterns), then as the bare name. An
 * exact rule wins over any pattern; among patterns the first in the file
 * wins. Unmapped tables go to bind 0, "default".
 */
size_t route_table_bind(const struct config *cfg, const char *schema, const char *name);

#define ROUTE_NO_TABLE (-1)

/* One bind a statement touches. */
struct route_bind {
    size_t index; /* into config.binds */
    bool writes;  /* the statement may change data there: only the
                     bind of its write target (route_info.target)
                     when it has one, else every bind of a statement
                     that is not a SELECT */
};

/* The decision for one statement. binds[] is the set of binds its tables
 * live in, in order of first use (system tables, which every bind has,
 * add none). A statement over more than one bind carries err_code
 * CROSSBIND as well, so the session refuses it as it always has; the set
 * is there for the work that runs such statements. */
struct route {
    const char *err_code; /* NULL when the statement can run; else "SYNTAX",
                             "MULTI", "CROSSBIND", "DENIED", "NOMEM" */
    char *err_msg;        /* with err_code: the message (owned by the route) */
    enum stmt_kind kind;
    unsigned flags;
    size_t nbinds;            /* 0: the statement names no table of a bind */
    struct route_bind *binds; /* [nbinds], owned by the route */
    int bind;                 /* binds[0].index when nbinds == 1, else
                                 ROUTE_NO_TABLE */
};

struct routecache;

/* A cache of `entries` decisions (0: no caching). NULL on ENOMEM. */
struct routecache *routecache_new(size_t entries);
void routecache_free(struct routecache *rc);

/* Forget every decision (the table map changed). */
void routecache_clear(struct routecache *rc);

/* The decision for sql[0..len) under cfg. The result stays valid until the
 * next call on rc. Never NULL: failures come back as err_code "NOMEM". */
const struct route *routecache_get(struct routecache *rc, const struct config *cfg, const char *sql,
                                   size_t len);

/* Compute a decision without the cache into *out (free with route_clear()),
 * and leave the analysis in *ri (free with sqlparse_info_free()). */
void route_compute(const struct config *cfg, const char *sql, size_t len, struct route *out,
                   struct route_info *ri);

void route_clear(struct route *r);

/* SQLite's own tables (sqlite_schema, sqlite_sequence, ...) and the
 * migrations' version table (sqlmux_migrations, migrate.h) exist in every
 * bind: they do not decide the route. */
bool route_is_system_table(const struct route_table *t);

#endif
