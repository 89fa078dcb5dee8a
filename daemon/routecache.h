/*
 * Routing decisions: from a statement's text to the bind it runs on (or the
 * error it gets), combining sqlparse_analyze() with the config's table map,
 * and a bounded cache of those decisions keyed by the statement text, so a
 * repeated statement is not tokenized again.
 */
#ifndef SQLMUX_DAEMON_ROUTECACHE_H
#define SQLMUX_DAEMON_ROUTECACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/config.h"
#include "daemon/sqlparse.h"

#define ROUTE_NO_TABLE (-1)

struct route {
    const char *err_code;   /* NULL when the statement can run; else "SYNTAX",
                               "MULTI", "CROSSBIND", "DENIED", "NOMEM" */
    char *err_msg;          /* with err_code: the message (owned by the route) */
    enum stmt_kind kind;
    unsigned flags;
    int bind;               /* bind index, or ROUTE_NO_TABLE */
};

struct routecache;

/* A cache of `entries` decisions (0: no caching). NULL on ENOMEM. */
struct routecache *routecache_new(size_t entries);
void routecache_free(struct routecache *rc);

/* Forget every decision (the table map changed). */
void routecache_clear(struct routecache *rc);

/* The decision for sql[0..len) under cfg. The result stays valid until the
 * next call on rc. Never NULL: failures come back as err_code "NOMEM". */
const struct route *routecache_get(struct routecache *rc, const struct config *cfg,
                                   const char *sql, size_t len);

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
