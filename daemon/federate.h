/*
 * Statements across binds (issue 15): the federation pool and its executor
 * connections.
 *
 * An executor connection is an SQLite connection of the daemon's own whose
 * main database is a private scratch database; every SQLite bind a
 * statement uses is ATTACHed to it under the bind's name (the in-memory
 * bind too: its WAL file lives on /dev/shm), and every PostgreSQL table it
 * uses is a virtual table of pgvtab.h. A client's statement runs there
 * rewritten: each table reference becomes "bind"."table" (or the virtual
 * table's name), so names resolve by the router's table map, never by
 * SQLite's search order. It runs through sqlite_exec.c like any SQLite
 * statement (prepare, bind, step, encode, stream under flow control), with
 * an authorizer that lets it use exactly its binds and write only its
 * target's.
 *
 * The federation pool is a sibling of the backends (struct backend_ops):
 * srv->federation is a struct bind of its own, not in srv->binds, with
 * `federation_pool` worker threads, each owning one executor. Its jobs are
 * JOB_EXEC jobs made by federate_job_new(), which hold every bind they
 * touch (job->xbinds). Nothing of it runs on the loop thread but the
 * submit, the grants and the job's making.
 *
 * Threads: functions marked "loop thread" run there; the federate_exec_*
 * functions run on any other thread, one thread at a time per executor.
 */
#ifndef SQLMUX_DAEMON_FEDERATE_H
#define SQLMUX_DAEMON_FEDERATE_H

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#include "daemon/backend.h"
#include "daemon/route.h"

struct server;
struct session;
struct fed_exec;
struct pgvtab;

/* The name the pool shows in .stats. */
#define FEDERATE_NAME "*federation*"

/* ---- The pool (loop thread) ------------------------------------------- */

/* Open srv->federation with cfg->federation_pool threads (their executors
 * open on first use). 0, or -1 with err set. */
int federate_open(struct server *srv, char *err, size_t errlen);

/* Whether a route that spans binds (err_code CROSSBIND, nbinds > 1) is a
 * statement the pool can run: a SELECT, an INSERT/UPDATE/DELETE with one
 * target bind (the others only read), or EXPLAIN of such. */
bool federate_runs(const struct route *r);

/* A reload swapped srv->binds (the replaced ones still open): the loop
 * thread's executor attaches the current binds again. */
void federate_config_changed(struct server *srv);

/* A DDL statement ran on a PostgreSQL bind: executors read the columns of
 * its tables again before their next use. */
void federate_catalog_changed(struct server *srv);

/* The grants a statement across binds needs from the session's user: read
 * on every bind it reads, read-write on the bind it writes. NULL when the
 * user has them; else the first bind lacking, with *write telling which
 * grant it lacks. */
const struct bind *federate_grant_missing(const struct session *s, const struct route *r, bool *write);

/* A JOB_EXEC for the pool that runs req (its memory taken) over r's binds,
 * each held in job->xbinds; job->bind is srv->federation. NULL on ENOMEM
 * (req is then freed). Submit it with session_start_job(). */
struct job *federate_job_new(struct session *s, const struct route *r, struct request *req);

/*
 * A CREATE TABLE whose tables in other binds are named only by REFERENCES
 * clauses (a foreign key across binds; the note's nuts -> tree): *out gets
 * a JOB_EXEC for the created table's bind, with those clauses taken out of
 * its text when that bind cannot keep them (PostgreSQL refuses a reference
 * to a table it does not have; SQLite with foreign_keys on would refuse
 * every insert), job->warnings set to how many references cross binds
 * (the answer gets warnings=N) and a log line for each: no database
 * enforces them. Returns 1 then (req's memory taken), 0 when the statement
 * is something else, with *why (static) set when a clearer refusal than
 * the route's CROSSBIND message applies (a view over several binds), -1
 * when out of memory. Loop thread.
 */
int federate_references(struct session *s, struct request *req, const struct route *r, struct job **out,
                        const char **why);

/* on_done of such a job: its +OK answer gets " warnings=N" (job->warnings).
 * Loop thread. */
void federate_references_done(struct session *s, struct job *job);

/* For .route: the number of references to other binds' tables of a CREATE
 * that federate_references() would run on its own bind (*bind), else 0,
 * with *why (static) set to the refusal federate_references() would give
 * instead of the route's CROSSBIND message (a view), else NULL. */
unsigned federate_references_route(const struct config *cfg, const struct catset *cs, const char *sql,
                                   size_t len, size_t *bind, const char **why);

/* ---- Executor connections (never the loop thread) --------------------- */

struct pgvtab;

/* Open an executor connection for srv's binds: scratch main, hardened as a
 * client connection (sqlite_conn_harden), no bind attached yet (attached
 * on demand by federate_exec_run/federate_exec_rewrite, up to SQLite's
 * attach limit), a pgvtab on it when the build has the module. NULL with
 * err set. */
struct fed_exec *federate_exec_open(struct server *srv, char *err, size_t errlen);

/* Close its libpq connections, the pgvtab, the statements and the
 * connection. NULL is fine. */
void federate_exec_close(struct fed_exec *x);

/* The executor's SQLite connection (for a transaction's BEGIN/COMMIT). */
sqlite3 *federate_exec_db(struct fed_exec *x);

/* Its pgvtab, NULL when the build lacks the module (pgvtab.c). */
struct pgvtab *federate_exec_pgvtab(struct fed_exec *x);

/* The executor's own blocking libpq connection to PostgreSQL bind `bind`
 * (index into cfg->binds), opened on first use, reopened when broken; the
 * pgvtab_conn_fn of its pgvtab. NULL with *err (malloc'd) when the bind
 * is unavailable ("bind NAME is unavailable: ..."). */
PGconn *federate_exec_pg(struct fed_exec *x, const struct config *cfg, size_t bind, char **err);

/*
 * Prepare x for job's statement and rewrite it: attach every SQLite bind
 * of its route (job->xbinds) that is not attached yet (detaching unused
 * ones when SQLite's attach limit is reached), expose its PostgreSQL
 * tables, and set the authorizer to its binds' schemas with writes only
 * to its target's. *sql gets the rewritten statement (malloc'd, *len).
 * 0, or -1 with *code (static) and msg set: BINDLIMIT (more SQLite binds
 * than one connection can attach), UNAVAILABLE (a PostgreSQL bind down),
 * UNSUPPORTED (PostgreSQL tables without the module), SQL, NOMEM.
 */
int federate_exec_prepare(struct fed_exec *x, struct job *job, char **sql, size_t *len, const char **code,
                          char *msg, size_t msglen);

/*
 * Run job (a JOB_EXEC with xbinds, from federate_job_new or a caller that
 * filled them the same way) on x: federate_exec_prepare, then the
 * rewritten statement through sqlite_exec.c, rows streamed to the client
 * under flow control, the response appended to out (the caller posts it
 * with job_post_done). Leaves the connection in the transaction state the
 * statement left (the pool rolls back what a lone statement left open; a
 * transaction across binds keeps it). Counts a write in the target bind
 * (quick reads on the loop thread see it next).
 */
void federate_exec_run(struct fed_exec *x, struct job *job, struct buf *out);

#endif
