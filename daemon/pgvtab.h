/*
 * pgvtab: the SQLite virtual table module `sqlmux_pg`, which makes tables of
 * PostgreSQL binds usable in SQL run on an executor connection (issue 15,
 * "Contract 1" of the cross-bind design).
 *
 * Every function here runs on the thread that owns the SQLite connection (an
 * executor's worker thread), never on the loop thread: it blocks on libpq.
 * The libpq connections come from the caller's pgvtab_conn_fn; the module
 * never opens or closes one.
 */
#ifndef SQLMUX_DAEMON_PGVTAB_H
#define SQLMUX_DAEMON_PGVTAB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"

/* Supplies the libpq connection for PostgreSQL bind `bind` (index into
 * config.binds) on the calling thread (never the loop). NULL with *err
 * (malloc'd) set when the bind is unavailable. The vtab never closes it.
 * The connection may be in a transaction the caller opened (issue 16). */
typedef PGconn *(*pgvtab_conn_fn)(void *arg, size_t bind, char **err);

struct pgvtab; /* per executor connection */

/* Registers the module `sqlmux_pg` on db. NULL when out of memory. cfg must
 * outlive the pgvtab (its binds name the tables). */
struct pgvtab *pgvtab_open(sqlite3 *db, const struct config *cfg, pgvtab_conn_fn conn, void *arg);

/* Make `schema.table` (schema "" = first match on the search_path) of
 * PostgreSQL bind `bind` usable in SQL run on db; writes into out[outlen]
 * the quoted SQLite name to put in the rewritten SQL
 * ("main"."pg$BIND$SCHEMA$TABLE"). Idempotent and cached; columns read from
 * pg_catalog on first use and again after pgvtab_forget(). -1 and *err
 * (malloc'd) on failure (no such table: the PostgreSQL error, with its
 * SQLSTATE in pgvtab_sqlstate()). Runs CREATE VIRTUAL TABLE (and, for a
 * leftover of an earlier connection, DROP TABLE) on db's "main" schema. */
int pgvtab_expose(struct pgvtab *v, size_t bind, const char *schema, const char *table, char *out,
                  size_t outlen, char **err);

/* The catalog changed (DDL): drops every exposed table; the next
 * pgvtab_expose() reads pg_catalog again. */
/* Before the first pgvtab_expose: create the virtual tables in db's temp
 * schema instead of main (db's main is a bind's own database: a worker
 * connection running a statement of a transaction across binds, which
 * must not write its schema). Names are then "temp"."pg$...". */
void pgvtab_in_temp(struct pgvtab *v);
void pgvtab_forget(struct pgvtab *v);

/* Marks the exposed table `schema.table` of bind `bind` (as
 * pgvtab_expose() named it) as maybe on the preserved side of an outer
 * join in the statements prepared from now on; table NULL clears every
 * mark. SQLite 3.40 offers a condition of an ON clause on the preserved
 * side's table alone (`p.k <> 3`, `p.k IS NOT NULL`) to that table's
 * xBestIndex as usable, where it must not filter rows: xBestIndex pushes
 * no <> and no IS NOT NULL for a marked table (SQLite checks them). Keep
 * the marks while the statement steps (a schema change prepares it
 * again). */
void pgvtab_set_outer(struct pgvtab *v, size_t bind, const char *schema, const char *table);

/* After sqlite3_prepare of a statement on db: for each PostgreSQL table, the
 * SQL xBestIndex chose to send (columns, WHERE with $n, ORDER BY,
 * LIMIT/OFFSET), one line each ("bind.schema.table: SELECT ..."), for
 * `.plan`. malloc'd; "" when the statement uses no PostgreSQL table; NULL
 * when out of memory. */
char *pgvtab_plan(struct pgvtab *v, sqlite3_stmt *stmt);

/* The last statement's PostgreSQL error: its SQLSTATE ("08006" when the
 * connection broke without one), or NULL when there was none. The message
 * is SQLite's (sqlite3_errmsg). Cleared when a statement opens its first
 * PostgreSQL cursor or starts a write. */
const char *pgvtab_sqlstate(struct pgvtab *v);

/* Rows PostgreSQL has sent to this pgvtab since it was opened (for tests and
 * the bench: what pushdown saved). */
uint64_t pgvtab_rows_fetched(const struct pgvtab *v);

/* Drops the exposed tables, unregisters the module and frees v; call it
 * before sqlite3_close(db), with no statement of db running. NULL is a
 * no-op. */
void pgvtab_close(struct pgvtab *v);

#endif
