/*
 * One SQLite connection of a bind: opening it, the settings that keep
 * clients away from the daemon's files, the authorizer, the progress and
 * busy handlers, and how an SQLite error becomes an -ERR line.
 *
 * A statement that has run for LONG_STATEMENT_MS lowers its worker thread's
 * scheduling priority (nice LONG_STATEMENT_NICE) until it ends, so on a
 * machine with few cores the short statements of other clients and binds,
 * and the loop thread, run first: a long report costs others little
 * latency and still gets every idle cycle. Only when the process may raise
 * the priority back (root, CAP_SYS_NICE, or RLIMIT_NICE of 20: the systemd
 * unit's LimitNICE=+0), checked once.
 *
 * Clients cannot reach the daemon's files: ATTACH is limited to zero
 * databases, extension loading is off, SQLITE_DBCONFIG_DEFENSIVE is on, and
 * an authorizer refuses ATTACH/DETACH, temporary objects, the functions and
 * virtual tables that expose memory or other clients' statements
 * (function_denied, module_denied) and every PRAGMA not known to be
 * harmless. A read-only user's statements run with PRAGMA query_only on.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/backend_sqlite.h"
#include "daemon/log.h"
#include "daemon/xact.h"

/* ---- Errors ----------------------------------------------------------- */

/* The protocol's error code for an SQLite result code. */
const char *sqlite_code(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: return "CONSTRAINT";
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return "BUSY";
    case SQLITE_READONLY: return "READONLY";
    case SQLITE_TOOBIG: return "TOOBIG";
    case SQLITE_MISMATCH: return "MISMATCH";
    case SQLITE_RANGE: return "PARAMS";
    case SQLITE_AUTH: return "DENIED";
    case SQLITE_FULL: return "FULL";
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return "CORRUPT";
    case SQLITE_IOERR: return "IOERR";
    case SQLITE_NOMEM: return "NOMEM";
    case SQLITE_INTERRUPT: return "INTERRUPTED";
    default: return "SQL";
    }
}

/* Replace the response being built from out[mark] on (earlier statements
 * of a batch keep theirs) with one -ERR line. */
void sqlite_reply_error_at(struct buf *out, size_t mark, const char *code, const char *msg)
{
    buf_truncate(out, mark);
    if (codec_put_error(out, code, msg) != 0)
        buf_truncate(out, mark); /* nothing to say; the session notices an empty reply */
}

void sqlite_reply_error(struct buf *out, const char *code, const char *msg)
{
    sqlite_reply_error_at(out, 0, code, msg);
}

void sqlite_reply_db_error(struct worker *w, struct buf *out, int rc)
{
    char msg[160];

    if (w->readonly && (rc & 0xff) == SQLITE_READONLY) {
        sqlite_reply_error_at(out, w->mark, "NOPERM", w->sb->readonly_msg); /* PRAGMA query_only */
    } else if (w->denied != NULL) {
        sqlite_reply_error_at(out, w->mark, w->denied_code ? w->denied_code : "DENIED", w->denied);
    } else if ((rc & 0xff) == SQLITE_TOOBIG) {
        snprintf(msg, sizeof msg, "%s: a string or blob may have at most max_value = %d bytes",
                 sqlite3_errmsg(w->db), w->max_length);
        sqlite_reply_error_at(out, w->mark, "TOOBIG", msg);
    } else {
        sqlite_reply_error_at(out, w->mark, sqlite_code(rc), sqlite3_errmsg(w->db));
    }
}

/* Bound every string and blob the connection makes or returns by
 * max_value (at most `cap`): SQLite refuses a larger one with
 * SQLITE_TOOBIG before allocating it. The thread that uses w->db. */
void sqlite_conn_max_value(struct worker *w, size_t max_value, size_t cap)
{
    int limit = (int)(max_value < cap ? max_value : cap);

    if (w->max_length != limit) {
        sqlite3_limit(w->db, SQLITE_LIMIT_LENGTH, limit);
        w->max_length = sqlite3_limit(w->db, SQLITE_LIMIT_LENGTH, -1);
    }
}

/* ---- Safety ----------------------------------------------------------- */

/* PRAGMAs a client may run. `arg` says whether it may take an argument or
 * value (a table name, or a persistent database setting); the others are
 * read-only. Anything absent is refused. */
static const struct {
    const char *name;
    bool arg;
} pragma_allowed[] = {
    {"table_info", true},       {"table_xinfo", true},       {"table_list", true},
    {"index_list", true},       {"index_info", true},        {"index_xinfo", true},
    {"foreign_key_list", true}, {"foreign_key_check", true}, {"integrity_check", true},
    {"quick_check", true},      {"user_version", true},      {"application_id", true},
    {"optimize", true},         {"schema_version", false},   {"page_count", false},
    {"page_size", false},       {"freelist_count", false},   {"compile_options", false},
    {"function_list", false},   {"pragma_list", false},      {"collation_list", false},
    {"module_list", false},     {"data_version", false},     {"encoding", false},
    {"foreign_keys", false},    {"journal_mode", false},     {"synchronous", false},
    {"auto_vacuum", false},     {"busy_timeout", false},     {"cache_size", false},
};

/* A function or virtual table module no client may use, and why. */
struct denial {
    const char *name;
    const char *why;
};

/* Functions no client may call. */
static const struct denial function_denied[] = {
    {"load_extension", "load_extension() is not allowed"},
    /* With one argument it answers the address of a tokenizer in the
     * daemon's memory; with two it installs one from a blob, and the next
     * full-text query jumps there. */
    {"fts3_tokenizer", "fts3_tokenizer() is not allowed: it reads and sets addresses in the daemon's memory"},
    /* Debugging aids that decode any blob as an r-tree node. */
    {"rtreenode", "rtreenode() is not allowed: it is a debugging function"},
    {"rtreedepth", "rtreedepth() is not allowed: it is a debugging function"},
};

/* Virtual table modules no client may read or create a table of. */
static const struct denial module_denied[] = {
    /* The statements prepared on the connection: other clients' SQL text,
     * literals included. */
    {"sqlite_stmt", "sqlite_stmt is not allowed: it shows other clients' statements"},
};

#define DENIED_IN(list, name) denied_why((list), sizeof(list) / sizeof((list)[0]), (name))

/* Why `name` (may be NULL) is in list[0..n), or NULL when it is not. */
static const char *denied_why(const struct denial *list, size_t n, const char *name)
{
    for (size_t i = 0; name != NULL && i < n; i++)
        if (strcasecmp(list[i].name, name) == 0)
            return list[i].why;
    return NULL;
}

/* Whether an authorizer call is SQLite's own bookkeeping for a statement
 * being prepared, not a change the client asked for:
 * - ALTER TABLE ... RENAME and DROP COLUMN also rewrite the temporary
 *   schema's triggers and views that name the table (an UPDATE of
 *   sqlite_temp_master, which holds nothing here: clients cannot create
 *   temporary objects);
 * - a table-valued function or eponymous virtual table (json_each,
 *   pragma_table_info, ...) makes SQLite code an UPDATE of sqlite_master
 *   that never runs.
 * Clients cannot write either table themselves (SQLITE_DBCONFIG_DEFENSIVE),
 * and a statement that would write anything is refused to a read-only user
 * by sqlite3_stmt_readonly() before it runs. */
static bool authorize_internal(const struct worker *w, int action, const char *table, const char *db)
{
    if (action != SQLITE_UPDATE || table == NULL || db == NULL)
        return false;
    if (strcmp(db, "temp") == 0)
        return w->altering && strcmp(table, "sqlite_temp_master") == 0;
    return strcmp(db, "main") == 0 && strcmp(table, "sqlite_master") == 0;
}

/* Whether a statement on w's connection may use the database (schema)
 * named db: main, temp (which the authorizer guards on its own), VACUUM's
 * scratch database, and the ones the connection was opened with. */
static bool schema_allowed(const struct worker *w, const char *db)
{
    if (db == NULL || strcmp(db, "main") == 0 || strcmp(db, "temp") == 0 || strcmp(db, "vacuum_db") == 0)
        return true;
    for (const char *const *s = w->schemas; s != NULL && *s != NULL; s++)
        if (strcmp(*s, db) == 0)
            return true;
    return false;
}

/* Authorizer actions that change the database. */
static bool authorize_writes(int action)
{
    switch (action) {
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_CREATE_VTABLE:
    case SQLITE_DROP_TABLE:
    case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TRIGGER:
    case SQLITE_DROP_VIEW:
    case SQLITE_DROP_VTABLE:
    case SQLITE_ALTER_TABLE:
    case SQLITE_REINDEX:
    case SQLITE_ANALYZE: return true;
    default: return false;
    }
}

static int authorize(void *arg, int action, const char *a1, const char *a2, const char *db,
                     const char *trigger)
{
    struct worker *w = arg;

    (void)trigger;
    if (w->internal)
        return SQLITE_OK;
    if (w->xact != NULL && xact_authorize(w, action, authorize_writes(action), a1, a2, db) != SQLITE_OK)
        return SQLITE_DENY;
    if (action == SQLITE_ALTER_TABLE)
        w->altering = true;
    if (authorize_internal(w, action, a1, db))
        return SQLITE_OK;
    /* ALTER TABLE names its database in a1 (db: the column it drops). */
    if (!schema_allowed(w, action == SQLITE_ALTER_TABLE ? a1 : db)) {
        w->denied = "this database is not part of the statement's binds";
        return SQLITE_DENY;
    }
    /* A read-only user's statement may not even be prepared when it
     * writes; sqlite3_stmt_readonly() checks again before each run (a
     * cached statement was authorized for whoever prepared it). */
    if (w->readonly && authorize_writes(action)) {
        w->denied = w->sb->readonly_msg;
        w->denied_code = "NOPERM";
        return SQLITE_DENY;
    }
    /* A statement across binds writes its target bind and nothing else:
     * not the others it reads, not the executor's scratch database. */
    if (w->federated && authorize_writes(action)) {
        const char *where = action == SQLITE_ALTER_TABLE ? a1 : db;
        if (w->write_schema == NULL || where == NULL || strcmp(where, w->write_schema) != 0) {
            w->denied = "a statement across binds may write only the bind of its target table";
            return SQLITE_DENY;
        }
    }
    switch (action) {
    case SQLITE_ATTACH:
        /* VACUUM attaches a scratch database with an empty name; the
         * ATTACH statement itself never gets here (the router refuses it). */
        if (a1 != NULL && a1[0] == '\0')
            return SQLITE_OK;
        w->denied = "ATTACH and DETACH are not allowed: each bind is one database";
        return SQLITE_DENY;
    case SQLITE_DETACH:
        if (a1 != NULL && strcmp(a1, "vacuum_db") == 0)
            return SQLITE_OK;
        w->denied = "ATTACH and DETACH are not allowed: each bind is one database";
        return SQLITE_DENY;
    case SQLITE_CREATE_TEMP_TABLE:
    case SQLITE_CREATE_TEMP_INDEX:
    case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_CREATE_TEMP_VIEW:
        w->denied = "temporary objects are not allowed: connections are shared between clients";
        return SQLITE_DENY;
    case SQLITE_FUNCTION:
        if ((w->denied = DENIED_IN(function_denied, a2)) != NULL)
            return SQLITE_DENY;
        /* The quick-read connection's SQLITE_LIMIT_LENGTH turns every
         * oversized value into an error, so a worker runs that statement,
         * except that printf() and format() answer NULL instead (SQLite
         * 3.40): statements using them run on workers. */
        if (w->quick && a2 != NULL && (strcasecmp(a2, "printf") == 0 || strcasecmp(a2, "format") == 0))
            return SQLITE_DENY;
        return SQLITE_OK;
    case SQLITE_READ:
        /* a1 is the table: an eponymous virtual table is named after its
         * module, and no other table of one can be created (below). */
        if ((w->denied = DENIED_IN(module_denied, a1)) != NULL)
            return SQLITE_DENY;
        return SQLITE_OK;
    case SQLITE_CREATE_VTABLE:
        if ((w->denied = DENIED_IN(module_denied, a2)) != NULL)
            return SQLITE_DENY;
        return SQLITE_OK;
    case SQLITE_PRAGMA:
        for (size_t i = 0; i < sizeof pragma_allowed / sizeof pragma_allowed[0]; i++) {
            if (strcasecmp(a1, pragma_allowed[i].name) == 0) {
                if (a2 == NULL || pragma_allowed[i].arg)
                    return SQLITE_OK;
                break;
            }
        }
        w->denied = "this PRAGMA is not allowed: it would change the connection or the files";
        return SQLITE_DENY;
    case SQLITE_CREATE_TABLE:
    case SQLITE_CREATE_INDEX:
    case SQLITE_CREATE_TRIGGER:
    case SQLITE_CREATE_VIEW:
    case SQLITE_INSERT:
    case SQLITE_UPDATE:
    case SQLITE_DELETE:
        /* CREATE TABLE temp.x and writes to the temp schema, but for the
         * PostgreSQL tables of a statement of a transaction across binds
         * (xact_lend.c). */
        if (db != NULL && strcmp(db, "temp") == 0 && w->lent_pg && action != SQLITE_CREATE_TABLE &&
            a1 != NULL && strncmp(a1, "pg$", 3) == 0)
            return SQLITE_OK;
        if (db != NULL && strcmp(db, "temp") == 0) {
            w->denied = "temporary objects are not allowed: connections are shared between clients";
            return SQLITE_DENY;
        }
        return SQLITE_OK;
    default: return SQLITE_OK;
    }
}

/* Whether this process may lower a thread's priority and raise it back:
 * tried once on a scratch thread. A fact about the process, not about a
 * bind (one of the globals server.h lists): written once under
 * pthread_once, read by every worker after. */
static pthread_once_t renice_once = PTHREAD_ONCE_INIT;
static bool renice_ok;

static void *renice_probe(void *arg)
{
    (void)arg;
    renice_ok = setpriority(PRIO_PROCESS, (id_t)gettid(), LONG_STATEMENT_NICE) == 0 &&
                setpriority(PRIO_PROCESS, (id_t)gettid(), 0) == 0;
    return NULL;
}

static void renice_check(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, renice_probe, NULL) == 0)
        pthread_join(t, NULL);
    if (!renice_ok)
        log_info("long statements keep their worker's priority: the process may not raise a thread's "
                 "priority back (give it RLIMIT_NICE 20, e.g. LimitNICE=+0 in its systemd unit)");
}

void sqlite_renice_init(void)
{
    pthread_once(&renice_once, renice_check);
}

/* SQLite calls the progress handler once more after a statement's last
 * instruction, when an autocommit statement has committed and one inside
 * a transaction has kept its changes, and still answers SQLITE_INTERRUPT
 * if the handler says stop: the client would be told that a write that
 * is done failed. sqlite3_stmt_busy() tells whether it still runs. */
bool sqlite_conn_may_stop(const struct worker *w)
{
    return w->stepping == NULL || sqlite3_stmt_busy(w->stepping);
}

/* Progress handler, every 1000 virtual machine steps: lower the priority
 * of a statement that has run LONG_STATEMENT_MS, and stop one that ran
 * past statement_timeout (SQLite then returns SQLITE_INTERRUPT and undoes
 * it) unless it has ended. */
static int on_progress(void *arg)
{
    struct worker *w = arg;
    uint64_t now;

    if (w->started_ns == 0)
        return 0;
    now = uv_hrtime();
    if (!w->lowered && renice_ok && now - w->started_ns > (uint64_t)LONG_STATEMENT_MS * 1000000u)
        w->lowered = setpriority(PRIO_PROCESS, (id_t)w->tid, LONG_STATEMENT_NICE) == 0;
    return w->deadline_ns != 0 && now > w->deadline_ns && sqlite_conn_may_stop(w);
}

/* Busy handler of the workers' connections: wait for a lock another
 * connection holds, up to busy_timeout. SQLite's own handler sleeps 1, 2,
 * 5, 10 ms and more between tries; the bind's workers hold the write lock
 * for microseconds per statement, so with several writers most of their
 * time went to those naps. This one naps BUSY_NAP_MIN_US at first,
 * doubling up to BUSY_NAP_MAX_US. */
#define BUSY_NAP_MIN_US 20
#define BUSY_NAP_MAX_US 2000

static int on_busy(void *arg, int count)
{
    struct worker *w = arg;
    uint64_t now = uv_hrtime();
    uint64_t limit = (uint64_t)(w->restarting ? WAL_WAIT_MS : w->sb->bind->conf->busy_timeout_ms) * 1000000u;
    unsigned nap = BUSY_NAP_MIN_US;

    if (count == 0)
        w->busy_since_ns = now;
    if (now - w->busy_since_ns >= limit)
        return 0;
    for (int i = 0; i < count && nap < BUSY_NAP_MAX_US; i++)
        nap *= 2;
    if (nap > BUSY_NAP_MAX_US)
        nap = BUSY_NAP_MAX_US;
    usleep(nap);
    return 1;
}

int sqlite_conn_wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    struct worker *w = arg;
    const char *wal;
    struct stat st;

    if (pages < QUICK_WAL_PAGES)
        return SQLITE_OK;
    wal = sqlite3_filename_wal(sqlite3_db_filename(db, name));
    if (wal != NULL && stat(wal, &st) == 0 && st.st_size > WAL_LIMIT_BYTES) {
        int rc;
        w->restarting = true;
        rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_RESTART, NULL, NULL);
        w->restarting = false;
        log_debug("bind %s: a writer's restart of its %lld-byte log (%s): %s", w->sb->bind->conf->name,
                  (long long)st.st_size, name, sqlite3_errstr(rc));
    } else {
        sqlite3_wal_checkpoint(db, name);
    }
    return SQLITE_OK;
}

/* ---- Connections ------------------------------------------------------ */

/* Open a connection to the bind's database through the named VFS (NULL:
 * the default). */
int sqlite_conn_open(struct sqlite_bind *sb, sqlite3 **out, const char *vfs, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc;

    if (vfs == NULL && sb->bind->conf->type == BIND_SQLITE_MEMORY)
        vfs = MEMORY_VFS;
    rc = sqlite3_open_v2(sb->filename, &db, sb->open_flags, vfs);

    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "bind %s: cannot open %s: %s", sb->bind->conf->name,
                 sb->bind->conf->path ? sb->bind->conf->path : "memory database",
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, sb->bind->conf->busy_timeout_ms);
    /* The in-memory bind's file lives in RAM: map it, so a lookup reads
     * the page where it is instead of copying it with a pread() per page
     * that is not in this connection's cache; and do not sync it (a
     * commit's fdatasync() buys nothing there). */
    if (sb->bind->conf->type == BIND_SQLITE_MEMORY)
        sqlite3_exec(db, "PRAGMA mmap_size = " MEMORY_MMAP_SIZE "; PRAGMA synchronous = OFF", NULL, NULL,
                     NULL);
    sqlite3_exec(db, "PRAGMA journal_size_limit = " WAL_LIMIT_TEXT, NULL, NULL, NULL);
    *out = db;
    return 0;
}

int sqlite_file_uri(const char *path, const char *vfs, char *out, size_t outlen)
{
    size_t o = (size_t)snprintf(out, outlen, "file:");
    int n;

    for (const char *p = path; *p != '\0'; p++) {
        if (o + 4 >= outlen)
            return -1;
        if (*p == '%' || *p == '?' || *p == '#')
            o += (size_t)snprintf(out + o, outlen - o, "%%%02X", (unsigned char)*p);
        else
            out[o++] = *p;
    }
    n = snprintf(out + o, outlen - o, "?vfs=%s", vfs);
    return n < 0 || (size_t)n >= outlen - o ? -1 : 0;
}

int sqlite_attach_uri(const char *path, bool memory, char *out, size_t outlen)
{
    return sqlite_file_uri(path, memory ? MEMORY_VFS : sqlite3_vfs_find(NULL)->zName, out, outlen);
}

/* Settings of a connection that serves clients (backend_sqlite.h). */
int sqlite_conn_harden(struct worker *w, const char *const *schemas, char *err, size_t errlen)
{
    const struct bind_conf *bc = w->sb->bind->conf;
    sqlite3 *db = w->db;
    int attached = 1;

    w->schemas = schemas;
    for (const char *const *s = schemas; s != NULL && *s != NULL; s++)
        attached++;

    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, (int *)NULL);
    /* VACUUM's scratch database and the allowed schemas; the authorizer
     * refuses a client's ATTACH. */
    sqlite3_limit(db, SQLITE_LIMIT_ATTACHED, attached);
    if (bc->foreign_keys && sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "bind %s: foreign_keys: %s", bc->name, sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_set_authorizer(db, authorize, w);
    sqlite3_progress_handler(db, 1000, on_progress, w);
    sqlite3_busy_handler(db, on_busy, w);
    return 0;
}

/* Run the daemon's own SQL on w's connection, past the authorizer. */
int sqlite_conn_exec_internal(struct worker *w, const char *sql)
{
    int rc;

    w->internal = true;
    rc = sqlite3_exec(w->db, sql, NULL, NULL, NULL);
    w->internal = false;
    return rc;
}

/* Turn PRAGMA query_only on for a read-only user's statements, off for
 * the others. The authorizer and sqlite3_stmt_readonly() judge the
 * statement a client sent; query_only also stops the writes a read runs
 * on the side: the statements a virtual table prepares for itself, once
 * cached, are not authorized again (FTS4's optimize() in a SELECT merges
 * the index). */
void sqlite_conn_query_only(struct worker *w, bool on)
{
    if (w->query_only == on)
        return;
    if (sqlite_conn_exec_internal(w, on ? "PRAGMA query_only = 1" : "PRAGMA query_only = 0") == SQLITE_OK)
        w->query_only = on;
}
