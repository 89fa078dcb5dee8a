/*
 * Transactions across SQLite binds (README, "Transactions across binds"):
 * the coordinator that makes a COMMIT that wrote several binds
 * all-or-nothing, even across kill -9.
 *
 * A transaction lives on the pinned worker connection of the bind it began
 * on (its "home" bind, the connection's main database). Every other SQLite
 * bind is ATTACHed to every worker connection under its bind name at
 * start-up (xact_attach_workers), so a statement of the transaction that
 * touches other binds runs right there, sees the transaction's own writes
 * in every bind, and SQLite takes each bind's write lock as it goes.
 *
 * Writes to a bind other than the home bind are captured with SQLite's
 * session extension from before the first statement that may write it. A
 * COMMIT that wrote only the home bind is a plain COMMIT (no coordinator
 * work). Otherwise (two or more binds, or one attached file bind):
 *   1. a marker row (the transaction id) goes into each written bind's
 *      sqlmux_xact table, inside the transaction;
 *   2. a decision record goes to the coordinator log (xact_log.h) with the
 *      changeset of every written bind but the home one (the anchor), and
 *      is fdatasync'ed;
 *   3. COMMIT: SQLite commits main (the anchor, synced as the bind says)
 *      first, then each attached bind in turn, each atomic on its own (WAL)
 *      and without a sync of its own (the log can redo it).
 * Recovery (xact_open, before any bind opens) takes each decision of the
 * log: when its anchor's marker is missing, the anchor never committed,
 * so no later bind did: nothing to do; otherwise every bind whose marker
 * is missing gets its changeset applied (marker included, so a second
 * recovery finds it and does nothing). A transaction whose home bind was
 * not written, or is the in-memory bind, has no anchor: its log record is
 * the decision. The in-memory bind holds after a restart only what its
 * snapshot held; recovery leaves it alone. The log is cut back to its
 * header once every file bind's files are synced: at start-up, and past
 * XACT_LOG_COMPACT_BYTES when no commit is in flight; marker rows older
 * than the last cut are deleted by later commits.
 *
 * Crash points for tests: SQLMUX_XACT_CRASH=<step>[:N] kills the daemon
 * with SIGKILL the Nth time (default the first) it passes that step
 * (xact_crash_point); unset, they cost a string test. The steps:
 * "markers", "log_torn" (half the decision record written), "logged",
 * "first_committed" (main committed, the next bind not: a VFS wrapper kills
 * at that bind's first WAL write), "committed", "recovery" (after recovery
 * redid one bind), "pg_resolve" (at start, after one prepared PostgreSQL
 * transaction was resolved, before the next).
 */
#ifndef SQLMUX_DAEMON_XACT_H
#define SQLMUX_DAEMON_XACT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "daemon/xact_log.h"
#include "proto/buf.h"

struct bind;
struct bind_host;
struct worker;
struct job;
struct xact;

/* The hidden table of marker rows in every SQLite bind a transaction
 * across binds wrote (route_is_system_table counts it as a system table). */
#define XACT_MARKER_TABLE "sqlmux_xact"

/* The log is cut back to its header once it is past this size and no
 * commit across binds is in flight. */
#define XACT_LOG_COMPACT_BYTES (4 * 1024 * 1024)

/* Start-up, before any bind opens: open the coordinator log in data_dir,
 * resolve every transaction it holds undecided, and cut the log back.
 * Loop thread. 0 with *out set, or -1 with err set (the daemon must not
 * start: a damaged log, a bind it names that is gone, a changeset that
 * does not apply). */
int xact_open(const struct config *cfg, struct xact **out, char *err, size_t errlen);
void xact_close(struct xact *x);

/* ---- PostgreSQL parts (daemon/xact_pg.c) ---------------------------------
 *
 * A PostgreSQL bind a transaction wrote is prepared (PREPARE TRANSACTION
 * under pg2pc_gid(daemon id, txid, bind)) BEFORE the decision is written;
 * the decision names it as a part flagged XACT_PART_PG (no changeset).
 * The recovery rule (Citus's): a prepared gid of this daemon commits when
 * its transaction has a decision (the home SQLite bind's marker row says
 * committed, or, with no SQLite home, the decision record exists);
 * otherwise it rolls back. At start (xact_open) every PostgreSQL bind's
 * gids of this daemon are resolved so; a bind that cannot be reached then
 * keeps its in-doubt gids with their outcome, and the resolver (a timer on
 * the loop, the blocking work on libuv's thread pool) retries every
 * XACT_PG_RETRY_MS until it is done. The log keeps (carries over when it
 * is cut back) every decision whose PostgreSQL parts are not all resolved.
 *
 * Transaction ids are never reused, across restarts too: each start
 * reserves XACT_TXID_RESERVE ids above every id seen (log, markers, the
 * last reservation) and the clock, and writes the end of the reservation
 * durably to data_dir/XACT_TXID_FILE before handing any out. XACT_PART_PG
 * (a part that is a PostgreSQL bind) is in xact_log.h. */
#define XACT_TXID_FILE     "sqlmux-xact.txid"
#define XACT_TXID_RESERVE  ((uint64_t)1 << 36)
#define XACT_PG_RETRY_MS   2000
#define XACT_PG_START_WAIT 5000 /* ms: a silent PostgreSQL bind at start */

/* The daemon id (data_dir/daemon-id, pg2pc_daemon_id) read by xact_open. */
const char *xact_daemon_id(const struct xact *x);
/* A new transaction id, never one any gid of this daemon may still carry
 * (across restarts too). Any thread. */
uint64_t xact_txid_new(struct xact *x);

/* Not the loop thread (a worker / pool job): the decision of a transaction
 * whose written parts are all PostgreSQL binds: write and sync it. Once it
 * returns 0 the transaction is committed. -1 with errno: not decided
 * (roll back the prepared gids). */
int xact_decide_pg(struct xact *x, uint64_t txid, const char *const *binds, size_t n);

/* Loop thread: after COMMIT PREPARED of every PostgreSQL part of txid (or
 * after a rollback of an undecided one): the decision may be dropped (parts
 * handed to the resolver stay until it has done them). */
void xact_resolved(struct xact *x, uint64_t txid);
/* Loop thread: a COMMIT PREPARED (commit=true) or ROLLBACK PREPARED that
 * could not be done now (the bind is down, the connection broke): the
 * resolver keeps it and retries until done; `.binds`/`.stats` show it. */
void xact_pg_in_doubt(struct xact *x, uint64_t txid, const char *bind, bool commit);

/* Loop thread, once, before the daemon serves: start the resolver on
 * host's loop (its timer runs when something is in doubt; a run reads the
 * binds' settings from host's current configuration). 0, or a libuv
 * error. */
int xact_serve(struct xact *x, struct bind_host *host);
/* Loop thread, at shutdown: stop the resolver (a run under way finishes
 * on its thread; the loop waits for it). */
void xact_stop(struct xact *x);
/* Loop thread: the prepared transactions of this daemon known to await
 * resolution on bind `name` (NULL: on every bind). */
size_t xact_in_doubt(struct xact *x, const char *name);

/* An SQLite bind opened (open) or closes: its file (kept by the caller
 * while open) and its write count, which workers of other binds move on
 * when they commit writes to it. Loop thread. */
void xact_bind_counter(struct xact *x, const char *name, const char *file, atomic_uint_fast64_t *writes,
                       bool open);

/* Once every bind is open, before the daemon serves: attach every other
 * SQLite bind to each SQLite bind's worker connections. Loop thread. 0,
 * or -1 with err set. */
int xact_attach_workers(struct bind *const *binds, size_t nbinds, char *err, size_t errlen);

/* ---- On a worker thread (backend_sqlite.c, sqlite_exec.c) ---------------- */

/* Run a BEGIN (a held one, or the group commit's) on w. BEGIN IMMEDIATE
 * and EXCLUSIVE would take the write lock of every attached bind: on a
 * connection with attachments they become a BEGIN that takes the write
 * lock of main only. writes: the caller knows sql takes the write lock
 * (else it is asked). The SQLite result code. */
int xact_begin(struct worker *w, const char *sql, bool writes);

/* Before a statement of a job with job->xact_binds runs on w: the schemas it
 * may use and write, and capture of the binds it may write. -1 with the
 * -ERR in out[w->mark..] when it cannot run. */
int xact_stmt_begin(struct worker *w, struct job *job, struct buf *out);
/* After it: back to the home bind only. */
void xact_stmt_end(struct worker *w);

/* A statement outside any transaction was refused when prepared because
 * SQLite would run it over every attached database (ANALYZE, REINDEX,
 * PRAGMA integrity_check, ... without a schema): detach the other binds
 * for it and return true (the caller runs it again, then calls
 * xact_reattach); false otherwise. */
bool xact_detach_for(struct worker *w);
void xact_reattach(struct worker *w);
/* Whether w must not reuse or cache prepared statements (a statement of a
 * transaction across binds is authorized for its own binds and grants). */
bool xact_stmt_uncached(const struct worker *w);

/* A COMMIT (job) on w: when the open transaction wrote more than one bind,
 * run the coordinated commit, append the response to out and return true;
 * otherwise false (a plain COMMIT runs as always).
 *
 * With PostgreSQL parts (job->xact_txid from xact_txid_new, used for the
 * gids, and job->xact_pg[job->nxact_pg], the names of the PostgreSQL binds
 * prepared) the coordinated commit always runs (even when only the home
 * SQLite bind was written), recording them with the decision; the home
 * bind's commit stays the commit point. Answers as without them (+OK, or
 * -ERR with the SQLite side rolled back: the caller then rolls the prepared
 * gids back), except when the outcome cannot be known until the next start
 * (an I/O error after the decision was written): -ERR IOERR with
 * job->xact_undecided set, and the caller must leave the gids prepared
 * (the next start resolves them). */
bool xact_commit(struct worker *w, struct job *job, struct buf *out);

struct pgvtab;
/* Before a statement of job with PostgreSQL connections lent to w
 * (job->xact_lent, xact_lend.c): its PostgreSQL tables as virtual tables
 * in w's temp schema over those connections, the statement rewritten to
 * use them (job->req). 0 with *vt set, or -1 with the -ERR in
 * out[w->mark..]. After it, xact_lend_end (its PostgreSQL error, the
 * virtual tables dropped). */
int xact_lend_begin(struct worker *w, struct job *job, struct pgvtab **vt, struct buf *out);
void xact_lend_end(struct worker *w, struct job *job, struct pgvtab *vt, struct buf *out);

/* The connection is out of its transaction: drop what it captured. */
void xact_txn_end(struct worker *w);

/* The authorizer's extra checks while a statement across binds is being
 * prepared (sqlite_conn.c; writes: the action changes the database):
 * SQLITE_OK, or SQLITE_DENY with w->denied set. */
int xact_authorize(struct worker *w, int action, bool writes, const char *a1, const char *a2, const char *db);

/* Free w's attachments state (worker_close). */
void xact_conn_free(struct worker *w);

/* ---- Test crash points --------------------------------------------------- */

/* SIGKILL the daemon when SQLMUX_XACT_CRASH names step and this is the
 * Nth time (xact_crash_armed: only say so, counting). Any thread. */
void xact_crash_point(const char *step);
bool xact_crash_armed(const char *step);

#endif
