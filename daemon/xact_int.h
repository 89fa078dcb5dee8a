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
#include "daemon/pg_2pc.h"
#include "daemon/xact.h"
#include "daemon/xact_log.h"

/* SQLite's compile-time limit of attached databases on Debian is 10; one
 * is kept for VACUUM's scratch database. */
#define XACT_MAX_ATTACHED 9

/* The columns of the marker table (XACT_MARKER_TABLE), the same wherever
 * it is created (a changeset applied by recovery must find the table as it
 * was captured). parts: in the home bind's row, the decision record
 * (xact_log_encode_commit): the other binds' changes and the PostgreSQL
 * parts; NULL in the other binds' rows. */
#define XACT_MARKER_COLUMNS " (txid INTEGER PRIMARY KEY, at INTEGER NOT NULL, parts BLOB)"

/* PostgreSQL binds one transaction may write (the commit keeps their parts
 * on its stack). */
#define XACT_MAX_PG 64

struct capture_ctx {
    struct worker *w;
    size_t i; /* attached bind */
};

/* What a worker connection knows about its attached binds. */
struct xact_conn {
    struct capture_ctx ctx[XACT_MAX_ATTACHED];
    sqlite3_stmt *begin, *lock_main; /* xact_begin's, prepared at attach */
    sqlite3_stmt *pk_check;          /* the capture filter's, prepared at first use */
    /* The marker INSERT of main ([0], with the decision) and of attached
     * bind i ([i + 1]), prepared at first use, and the floor below which
     * this connection last deleted that bind's old markers. */
    sqlite3_stmt *mark[XACT_MAX_ATTACHED + 1];
    uint64_t mark_gc[XACT_MAX_ATTACHED + 1];
    size_t n; /* attached binds */
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

/* A PostgreSQL part of a decided transaction not resolved yet, or a
 * resolution handed to the resolver (xact_pg.c). */
struct xact_pgpart {
    uint64_t txid;
    char *bind;    /* the bind's name, as in the gid */
    bool commit;   /* COMMIT PREPARED (a decision), else ROLLBACK PREPARED */
    bool resolver; /* the resolver does it (else the session) */
};

struct xact_resolver;

/* The coordinator (one per daemon). */
struct xact {
    struct xact_log log;
    pthread_mutex_t lock; /* the fields below but counters' (see there) */
    uint64_t next_txid;
    uint64_t txid_end;    /* the reservation in XACT_TXID_FILE ends here */
    uint64_t synced;      /* XACT_TXID_FILE: decisions in marker rows below it are done */
    size_t marker_bytes;  /* decisions written into marker rows since the last sync */
    uint64_t start_floor; /* the first txid of this run: gids below it are of earlier runs */
    uint64_t gen_start;   /* marker rows below this (and below late_min) name no log entry */
    uint64_t late_min;    /* the smallest txid below gen_start logged since the last cut */
    int inflight;         /* commits and decisions under way */
    bool compacting;      /* a sync point runs (outside lock): commits wait on cut_done */
    pthread_cond_t cut_done;
    pthread_mutex_t ids_lock; /* writes of XACT_TXID_FILE; file_end, file_synced: what it says */
    uint64_t file_end, file_synced;
    bool unresolved; /* a failed commit left an entry for the next start */
    char daemon_id[PG2PC_DAEMON_ID_LEN + 1];
    char *data_dir;
    char **files; /* the file binds' files at start: synced before a cut */
    size_t nfiles;
    /* PostgreSQL parts of decisions not resolved yet (commit), and
     * resolutions handed to the resolver (xact_pg.c). */
    struct xact_pgpart *pg;
    size_t npg, pgcap;
    char **sweep; /* PostgreSQL binds not reached at start: their gids to resolve */
    size_t nsweep;
    struct xact_resolver *res;
    /* Each open SQLite bind's write count (sqlite_bind.writes) and file, by
     * name: a worker of another bind that committed writes there moves the
     * count on, as the bind's own workers do (quick reads and the
     * checkpoint thread go by it); a file other than the one a worker
     * attached means a reload replaced the bind. Guarded by lock. */
    struct {
        char *name;
        atomic_uint_fast64_t *writes;
        const char *file; /* the open bind's sqlite_bind.filename */
    } counters[64];
    size_t ncounters;
};

/* ---- xact.c ---------------------------------------------------------------- */

/* A commit or decision is over: when the log is large and nothing is in
 * flight, sync the file binds and cut the log back, keeping the decisions
 * with unresolved PostgreSQL parts. */
void xact_commit_finished(struct xact *x);

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

/* Make every file bind's commits durable: fdatasync paths[0..n) (their
 * database and WAL files; a missing one is fine). 0, or -1 with errno. */
int xact_sync_files(char *const *paths, size_t n);

/* The largest marker txid in any file bind (0: none). */
uint64_t xact_markers_max(const struct config *cfg);

/* The decisions kept in the home bind's marker row (column parts) of
 * every file bind, txid >= floor, appended to *entries[*n] (realloc'd).
 * 0, or -1 with err set (a record that fails its checks: never guessed
 * at). */
int xact_markers_decisions(const struct config *cfg, uint64_t floor, struct xact_entry **entries, size_t *n,
                           char *err, size_t errlen);

/* ---- xact_pg.c ------------------------------------------------------------- */

/* xact_open's first part: the daemon id (made at the first start) and
 * XACT_TXID_FILE: x->txid_end (the last reservation's end) and x->synced
 * (decisions in marker rows below it need no recovery). 0, or -1 with err
 * set (a damaged file). */
int xact_ids_load(struct xact *x, const char *data_dir, char *err, size_t errlen);
/* Write XACT_TXID_FILE durably: the reservation's end and the sync floor,
 * each the larger of the given one and what the file says (0: keep it).
 * Any thread, without x->lock or with it. 0, or -1 with errno. */
int xact_ids_save(struct xact *x, uint64_t end, uint64_t synced);

/* xact_open's part: the PostgreSQL gids of every bind resolved by the
 * entries' outcomes (decided[i]: entry i committed), the ones that cannot
 * be resolved now kept for the resolver. *max_txid: raised to the largest
 * txid of a gid seen. 0, or -1 with err set (out of memory). */
int xact_pg_open(struct xact *x, const struct config *cfg, const struct xact_entry *entries,
                 const bool *decided, size_t n, uint64_t *max_txid, char *err, size_t errlen);

/* The decision of txid with PostgreSQL parts binds[0..n) is durable: keep
 * it until they are resolved. Any thread. */
void xact_pg_decided(struct xact *x, uint64_t txid, const char *const *binds, size_t n);

/* With x->lock held: the decisions to keep when the log is cut back,
 * encoded back to back (malloc'd, *len 0 and NULL when none). 0, or -1. */
int xact_pg_keep(struct xact *x, unsigned char **out, size_t *len);

/* Free the PostgreSQL state (xact_close). */
void xact_pg_free(struct xact *x);

#endif
