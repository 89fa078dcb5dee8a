/*
 * Routing, in one place: the table map's lookup (which bind a table lives
 * in, from the config's [tables] rules), then the binds' catalogs
 * (catalog.h: which bind holds it), the decision for a statement (the
 * binds it touches, or the error it gets), combining sqlparse_analyze()
 * with those lookups, and a bounded cache of those decisions keyed by the
 * statement text, so a repeated statement is not analysed again. The
 * cache is cleared whenever the catalogs change.
 */
#ifndef SQLMUX_DAEMON_ROUTE_H
#define SQLMUX_DAEMON_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/config.h"
#include "daemon/catalog.h"
#include "daemon/sqlparse.h"
#include "proto/buf.h"
#include "proto/codec.h"

/*
 * The bind for a table. schema and name are already unquoted and lowercased
 * (schema "" when unqualified). A qualified name is looked up as
 * "schema.name" first (exact, then patterns), then as the bare name. An
 * exact rule wins over any pattern; among patterns the first in the file
 * wins. Unmapped tables go to bind 0, "default". This is the table map
 * alone: statements route with route_table_rule(), which asks the binds'
 * catalogs about unmapped tables.
 */
size_t route_table_bind(const struct config *cfg, const char *schema, const char *name);

/* Which rule routes a table (README, Routing: the rules in this order). */
enum route_rule {
    ROUTE_RULE_SYSTEM,    /* every bind has one (route_is_system_table) */
    ROUTE_RULE_MAP,       /* an exact [tables] entry */
    ROUTE_RULE_PATTERN,   /* a [tables] pattern */
    ROUTE_RULE_CATALOG,   /* the one bind whose catalog holds it */
    ROUTE_RULE_AMBIGUOUS, /* the catalogs of several binds hold it, no entry
                             maps it: the statement gets -ERR AMBIGUOUS */
    ROUTE_RULE_NONE,      /* no bind holds it: it goes with the statement's
                             other tables, else to the session's bind */
};

/* For .tables: a table that bind `in` holds (its catalog, or the live
 * listing): how it routes (*rule, *to; *to is `in` for SYSTEM, NONE and
 * AMBIGUOUS) and, into warn[0..n), why that may surprise ("" when it
 * would not): a [tables] entry pins it to another bind, or it is
 * ambiguous. */
enum route_rule route_explain(const struct config *cfg, const struct catset *cs, const struct route_table *t,
                              size_t in, size_t *to, char *warn, size_t n);

/* Encode one row of .tables for the table schema.name ("" schema: bare)
 * that bind `in` holds: shown[0..shown_len), type, the bind, routed_to,
 * rule, warning (route_explain; NULL when there is none). 0, or -1 on
 * ENOMEM. Any thread, while cfg and cs are held. */
int route_put_table_row(struct buf *out, const struct config *cfg, const struct catset *cs, size_t in,
                        const char *shown, size_t shown_len, const char *type, const char *schema,
                        const char *name);

/* "system", "map", "pattern", "catalog", "ambiguous", "session". */
const char *route_rule_name(enum route_rule rule);

/* How table t routes under cfg and the catalogs cs (NULL: none read):
 * *bind gets the bind for MAP, PATTERN and CATALOG, the first holder for
 * AMBIGUOUS. Any thread, while cfg and cs are held. */
enum route_rule route_table_rule(const struct config *cfg, const struct catset *cs,
                                 const struct route_table *t, size_t *bind);

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
                             "MULTI", "CROSSBIND", "AMBIGUOUS", "DENIED",
                             "NOMEM" */
    char *err_msg;        /* with err_code: the message (owned by the route) */
    enum stmt_kind kind;
    unsigned flags;
    size_t nbinds;            /* 0: the statement names no table of a bind */
    struct route_bind *binds; /* [nbinds], owned by the route */
    int bind;                 /* binds[0].index when nbinds == 1, else
                                 ROUTE_NO_TABLE */
    enum route_rule rule;     /* the rule that decided bind (ROUTE_RULE_NONE
                                 when no table did: the session's bind) */
};

struct routecache;

/* A cache of `entries` decisions (0: no caching). NULL on ENOMEM. */
struct routecache *routecache_new(size_t entries);
void routecache_free(struct routecache *rc);

/* Forget every decision (the table map changed). */
void routecache_clear(struct routecache *rc);

/* Route by the catalogs cs from now on (not owned: the caller keeps it
 * alive until the next call or routecache_free) and forget every decision
 * made with the previous ones. Loop thread. */
void routecache_set_catalogs(struct routecache *rc, const struct catset *cs);

/* The decision for sql[0..len) under cfg and the cache's catalogs. The
 * result stays valid until the next call on rc. Never NULL: failures come
 * back as err_code "NOMEM". */
const struct route *routecache_get(struct routecache *rc, const struct config *cfg, const char *sql,
                                   size_t len);

/* routecache_get for a request: its text, and its hash made once here
 * (req->hash) for whoever runs it. */
const struct route *routecache_get_request(struct routecache *rc, const struct config *cfg,
                                           struct request *req);

/* The normalised form (sqlnorm.h) the last routecache_get on rc made of
 * req's text, copied for req->norm, when req has no parameters of its
 * own; else (or out of memory) NULL. Loop thread, right after the get. */
struct request *routecache_norm(const struct routecache *rc, const struct request *req);

/* Compute a decision under cfg and the catalogs cs (may be NULL) without
 * the cache into *out (free with route_clear()), and leave the analysis in
 * *ri (free with sqlparse_info_free()). */
void route_compute(const struct config *cfg, const struct catset *cs, const char *sql, size_t len,
                   struct route *out, struct route_info *ri);

void route_clear(struct route *r);

/* SQLite's own tables (sqlite_schema, sqlite_sequence, ...), PostgreSQL's
 * (pg_catalog.*, information_schema.*) and the version tables of migration
 * tools (sqlmux_migrations of migrate.h, Alembic's alembic_version), which
 * each bind has its own of: they do not decide the route. */
bool route_is_system_table(const struct route_table *t);

#endif
