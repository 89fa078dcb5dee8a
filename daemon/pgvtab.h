/*
 * PostgreSQL tables as SQLite virtual tables (module sqlmux_pg) on an
 * executor connection (federate.h), for statements across binds. The
 * contract of /work/coord/XBIND.md ("Contract 1"); the module itself,
 * daemon/pgvtab.c, is helper pgv's.
 */
#ifndef SQLMUX_DAEMON_PGVTAB_H
#define SQLMUX_DAEMON_PGVTAB_H

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stddef.h>

#include "conf/config.h"

/* Supplies the libpq connection for PostgreSQL bind `bind` (index into config.binds) on the calling
 * thread (never the loop). NULL with *err (malloc'd) set when the bind is unavailable. The vtab never
 * closes it. The connection may be in a transaction the caller opened (issue 16). */
typedef PGconn *(*pgvtab_conn_fn)(void *arg, size_t bind, char **err);

struct pgvtab; /* per executor connection */
struct pgvtab *pgvtab_open(sqlite3 *db, const struct config *cfg, pgvtab_conn_fn conn, void *arg);
/* Make `schema.table` (schema "" = first match on the search_path) of PostgreSQL bind `bind` usable in SQL
 * run on db; writes into out[outlen] the quoted SQLite name to put in the rewritten SQL (e.g.
 * "main"."pg$bind$table"). Idempotent and cached; columns read from pg_catalog on first use and again
 * after pgvtab_forget(). -1 and *err on failure (no such table: the PostgreSQL error with its SQLSTATE). */
int pgvtab_expose(struct pgvtab *v, size_t bind, const char *schema, const char *table, char *out, size_t outlen,
                  char **err);
void pgvtab_forget(struct pgvtab *v); /* the catalog changed (DDL) */
/* After sqlite3_prepare of a statement on db: for each PostgreSQL table, the SQL xBestIndex chose to send
 * (columns, WHERE with $n, ORDER BY, LIMIT/OFFSET), one line each, for `.plan`. malloc'd. */
char *pgvtab_plan(struct pgvtab *v, sqlite3_stmt *stmt);
/* The last statement's PostgreSQL errors: SQLSTATE and message, to turn into -ERR. */
const char *pgvtab_sqlstate(struct pgvtab *v);
void pgvtab_close(struct pgvtab *v);

#endif
