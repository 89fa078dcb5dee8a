/*
 * Internal to transactions across binds (xact.c: the coordinator, its
 * crash points and the coordinated commit; xact_attach.c: attaching binds
 * to the workers and capturing their changes; xact_recover.c: recovery of
 * the log's entries), not for other modules: what a worker connection
 * knows of its attached binds, and the functions one file lends the
 * others. xact.h is the interface; xact_log.h the log's format.
 */
#ifndef SQLMUX_DAEMON_XACT_INT_H
#define SQLMUX_DAEMON_XACT_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/backend_sqlite.h"
#include "daemon/xact.h"
#include "daemon/xact_log.h"

/* SQLite's compile-time limit of attached databases on Debian is 10; one
 * is kept for VACUUM's scratch database. */
#define XACT_MAX_ATTACHED 9

struct capture_ctx {
    struct worker *w;
    size_t i; /* attached bind */
};

/* What a worker connection knows about its attached binds. */
struct xact_conn {
    struct capture_ctx ctx[XACT_MAX_ATTACHED];
    sqlite3_stmt *begin, *lock_main; /* xact_begin's, prepared at attach */
    size_t n;                        /* attached binds */
    char *names[XACT_MAX_ATTACHED];
    char *files[XACT_MAX_ATTACHED]; /* the file each was attached from */
    bool memory[XACT_MAX_ATTACHED];
    sqlite3_session *sess[XACT_MAX_ATTACHED];   /* capture, while a transaction runs */
    const char *allowed[XACT_MAX_ATTACHED + 1]; /* w->schemas during a statement */
    const char *ro[XACT_MAX_ATTACHED + 2];      /* schemas it may only read */
    bool checking;                              /* a statement across binds is prepared */
    bool wants_detach;        /* a statement of the home bind alone touched another (xact_detach_for) */
    bool detached;            /* the other binds are detached for it */
    bool committing;          /* xact_commit runs its COMMIT */
    const struct config *cfg; /* of the running job */
    char denied[256];
    char nopk[160]; /* a captured table without PRIMARY KEY, first seen */
};

/* ---- xact.c ---------------------------------------------------------------- */

/* Whether bind `name` is open on `file` (what a worker attached). */
bool xact_bind_current(struct xact *x, const char *name, const char *file);

/* Move the write count of bind `name` on (any thread). */
void xact_bump_writes(struct xact *x, const char *name);

/* ---- xact_attach.c --------------------------------------------------------- */

/* The index of attached bind `name` in xc, -1 when it is not attached. */
int xact_attached_index(const struct xact_conn *xc, const char *name);

/* ---- xact_recover.c -------------------------------------------------------- */

/* Resolve one decision (see xact.h). Returns 1 when it is committed in
 * every file bind now, 0 when it never committed anywhere (its anchor lacks
 * the marker), -1 with err set on failure. at_start: the crash point
 * "recovery" applies. conns: [cfg->nbinds] recovery's own connections,
 * opened as needed. */
int xact_recover_entry(const struct config *cfg, sqlite3 **conns, const struct xact_entry *e, bool at_start,
                       char *err, size_t errlen);

/* Close recovery's connections and free conns. */
void xact_recovery_close(const struct config *cfg, sqlite3 **conns);

/* Make every file bind's commits durable: their database and WAL files. */
int xact_sync_binds(const struct config *cfg);

/* The largest marker txid in any file bind (0: none). */
uint64_t xact_markers_max(const struct config *cfg);

#endif
