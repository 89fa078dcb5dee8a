/*
 * When the daemon reads its binds' catalogs (catalog.h) and how a new one
 * takes effect. Every read is a JOB_CATALOG on the bind's backend (the
 * SQLite workers, the non-blocking PostgreSQL pool), so none blocks the
 * loop thread:
 *   - at start, before the listeners open (catalog_load_all);
 *   - after a reload, for every bind;
 *   - every catalog_interval ms ([server]), which notices DDL made by other
 *     programs (SQLite answers from PRAGMA schema_version when nothing
 *     changed);
 *   - and by the backend itself, on the statement's own connection, after
 *     a statement that changed the schema (DDL, or the end of a
 *     transaction that ran some): the new catalog comes back with the
 *     statement's job and is installed before its answer goes out, so a
 *     client that saw +OK for its CREATE TABLE, and any client it tells,
 *     routes by the new catalog.
 * Installing a changed catalog publishes a new catset to the route cache,
 * which forgets its decisions. Loop thread, all of it.
 */
#ifndef SQLMUX_DAEMON_CATALOG_REFRESH_H
#define SQLMUX_DAEMON_CATALOG_REFRESH_H

#include <stdint.h>

struct server;
struct bind;
struct job;
struct catalog;

/* Start reading every bind's catalog and run the loop until all have
 * answered or timeout_ms passed (a PostgreSQL bind that does not answer:
 * its tables route as unknown until it does). Then start the
 * catalog_interval timer. Before the listeners open. 0, or -1 on ENOMEM. */
__attribute__((warn_unused_result)) int catalog_load_all(struct server *srv, uint64_t timeout_ms);

/* Read every bind's catalog again (after a reload swapped the binds and
 * the route cache: the cache gets the current catset first). */
void catalog_reloaded(struct server *srv);

/* A finished JOB_CATALOG (from the loop's event queue); unrefs the job. */
void catalog_job_done(struct job *job);

/* Install c, read from bind b by a backend (ownership moves here): it
 * replaces b's catalog when newer, and routing uses it from now on. */
void catalog_install(struct bind *b, struct catalog *c);

/* Stop the timer and release the catalogs (shutdown). */
void catalog_stop(struct server *srv);

#endif
