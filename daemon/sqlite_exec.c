/*
 * Running statements on an SQLite connection: the per-connection cache of
 * prepared statements (shared by statements that differ only in literal
 * values: sqlnorm.h, sqlite_stmt_for), binding a request's parameters, encoding the
 * header, rows and status line, streaming them to the loop under flow
 * control, and one JOB_EXEC with its batched statements. Any kind of
 * SQLite execution (the workers, the quick reads) runs through here.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "daemon/backend_pg.h"
#include "daemon/backend_sqlite.h"
#include "daemon/hash.h"
#include "daemon/log.h"
#include "daemon/pgvtab.h"
#include "daemon/sqllex.h"
#include "daemon/xact.h"

/* ---- Prepared statement cache ------------------------------------------ */

/* Bring the connection's copy of the schema up to date: running any
 * statement makes SQLite compare the file's schema cookie with the one it
 * compiled against and re-read the schema when they differ. */
void sqlite_schema_refresh(sqlite3 *db)
{
    sqlite3_stmt *stmt = NULL;

    if (sqlite3_prepare_v2(db, "PRAGMA schema_version", -1, &stmt, NULL) == SQLITE_OK)
        (void)sqlite3_step(stmt);
    sqlite3_finalize(stmt);
}

/* Whether the PRAGMA sql[0..len) names database `name` ("PRAGMA name.x"
 * or "PRAGMA \"name\".x"). */
static bool pragma_names(const char *sql, size_t len, const char *name)
{
    struct sqltok t = sqllex_next(sql, len, 0, 0);
    size_t n = strlen(name);

    t = sqllex_next(sql, len, t.pos + t.len, 0);
    if (t.type == SQLTOK_QUOTED && t.len == n + 2 && sql[t.pos] == '"')
        return memcmp(sql + t.pos + 1, name, n) == 0;
    return t.type == SQLTOK_WORD && t.len == n && strncasecmp(sql + t.pos, name, n) == 0;
}

/* A PRAGMA is answered from the connection's copy of the schema, which
 * SQLite compares with the file only when the PRAGMA finds its table in it:
 * PRAGMA foreign_key_list or index_list of a table that another connection
 * created (a transaction on another bind's connection, where this bind is
 * attached) answer no rows. The databases' copies are brought up to date
 * first by a read of their sqlite_master (a statement that reads a table
 * makes SQLite compare the schema cookie; PRAGMA schema_version does not),
 * and PRAGMAs are never cached (w->pragma). Inside a transaction only main,
 * the databases it already reads and the one the PRAGMA names: a read
 * would fix the snapshot of the others before the transaction uses them. */
static void schema_refresh(struct worker *w, const char *sql, size_t len)
{
    bool in_txn = !sqlite3_get_autocommit(w->db);
    const char *name;

    for (int i = 0; (name = sqlite3_db_name(w->db, i)) != NULL; i++) {
        char *q;
        if (i == 1 || (in_txn && i > 0 && sqlite3_txn_state(w->db, name) == SQLITE_TXN_NONE &&
                       !pragma_names(sql, len, name)))
            continue; /* temp, or a database the transaction has not read */
        q = sqlite3_mprintf("SELECT 1 FROM \"%w\".sqlite_master LIMIT 0", name);
        if (q != NULL)
            (void)sqlite_conn_exec_internal(w, q);
        sqlite3_free(q);
    }
}

/* The cached statement for sql[0..len) (h: its hash_text()), marked
 * used, or NULL. */
static sqlite3_stmt *cache_find(struct worker *w, const char *sql, size_t len, uint64_t h)
{
    for (size_t i = 0; i < w->ncache; i++) {
        struct cached_stmt *c = &w->cache[i];
        if (c->hash == h && c->len == len && memcmp(c->sql, sql, len) == 0) {
            c->used = ++w->tick;
            w->cache_last = i;
            return c->stmt;
        }
    }
    return NULL;
}

/* A prepared statement for sql[0..len) (h: its hash_text()) on w's
 * connection, from the cache or newly prepared (and cached). *rc gets the
 * SQLite result; a NULL return with SQLITE_OK means the text holds no
 * statement. */
sqlite3_stmt *sqlite_stmt_get(struct worker *w, const char *sql, size_t len, uint64_t h, int *rc)
{
    size_t cap = w->sb->stmt_cache;
    struct cached_stmt *victim = NULL;
    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;

    /* A statement across binds is authorized for its own binds and
     * grants: it neither takes a cached statement nor leaves one. */
    if (xact_stmt_uncached(w) || w->pragma)
        cap = 0;
    if (cap > 0 && (stmt = cache_find(w, sql, len, h)) != NULL) {
        *rc = SQLITE_OK;
        return stmt;
    }
    w->denied = NULL;
    w->denied_code = NULL;
    w->altering = false;
    if (cap > 0 && !xact_stmt_uncached(w) && w->seen[h % STMT_SEEN] != h) {
        w->seen[h % STMT_SEEN] = h;
        cap = 0; /* first time: run it uncached */
    }
    *rc = sqlite3_prepare_v3(w->db, sql, (int)len, cap ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, &tail);
    if (*rc == SQLITE_ERROR && w->denied == NULL) {
        /* Prepared against an outdated copy of the schema (another
         * connection changed it): SQLite re-reads it only when a statement
         * runs, and some compile errors ("cannot modify v because it is a
         * view" after an INSTEAD OF trigger was added) do not make it
         * check. Try once more with the current schema. */
        sqlite_schema_refresh(w->db);
        *rc = sqlite3_prepare_v3(w->db, sql, (int)len, cap ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, &tail);
    }
    if (*rc != SQLITE_OK || stmt == NULL)
        return NULL;
    log_debug("bind %s: statement prepared (%zu bytes, %d parameters)", w->sb->bind->conf->name, len,
              sqlite3_bind_parameter_count(stmt));
    /* The router allows one statement; make sure SQLite agrees. */
    if (tail != NULL && tail < sql + len) {
        sqlite3_stmt *next = NULL;
        if (sqlite3_prepare_v2(w->db, tail, (int)(sql + len - tail), &next, NULL) == SQLITE_OK &&
            next != NULL) {
            sqlite3_finalize(next);
            sqlite3_finalize(stmt);
            *rc = SQLITE_MISUSE;
            return NULL;
        }
    }
    if (cap == 0)
        return stmt;
    if (w->ncache < cap) {
        victim = &w->cache[w->ncache++];
    } else {
        victim = &w->cache[0];
        for (size_t i = 1; i < w->ncache; i++)
            if (w->cache[i].used < victim->used)
                victim = &w->cache[i];
        sqlite_cached_free(victim);
    }
    victim->sql = malloc(len);
    if (victim->sql == NULL) {
        /* Run it uncached: mark the slot empty. */
        w->ncache--;
        *victim = w->cache[w->ncache];
        return stmt;
    }
    memcpy(victim->sql, sql, len);
    victim->len = len;
    victim->hash = h;
    victim->stmt = stmt;
    victim->used = ++w->tick;
    victim->straight = 0;
    victim->header = NULL;
    w->cache_last = (size_t)(victim - w->cache);
    return stmt;
}

void sqlite_cached_free(struct cached_stmt *c)
{
    sqlite3_finalize(c->stmt);
    free(c->sql);
    free(c->header);
}

/* Whether stmt, prepared from the normalised nr, is what the normaliser
 * meant: SQLite counts exactly nr's parameters, all of them ? or ?N (no
 * name the lexer did not see as one), and no column name shows a
 * parameter (a literal left in a name's text, as SQLite names a result
 * column by its expression, was made one; a name with a '?' of its own
 * takes the original text too). */
static bool stmt_as_normalised(sqlite3_stmt *stmt, const struct request *nr)
{
    int nparams = sqlite3_bind_parameter_count(stmt);
    int ncol = sqlite3_column_count(stmt);

    if ((size_t)nparams != nr->nparams)
        return false;
    for (int i = 1; i <= nparams; i++) {
        const char *name = sqlite3_bind_parameter_name(stmt, i);
        if (name != NULL && name[0] != '?')
            return false;
    }
    for (int i = 0; i < ncol; i++) {
        const char *name = sqlite3_column_name(stmt, i);
        if (name != NULL && strchr(name, '?') != NULL)
            return false;
    }
    return true;
}

sqlite3_stmt *sqlite_stmt_for(struct worker *w, const struct request *req, uint64_t h,
                              const struct request **run, int *rc)
{
    bool normalize = w->normalize && !w->federated && !w->pragma && !xact_stmt_uncached(w);
    const struct request *nr = NULL;
    sqlite3_stmt *stmt;

    *run = req;
    /* A text cached as it is (no literal to replace, or refused once
     * normalised) needs no second look. */
    if (normalize && w->sb->stmt_cache > 0 && (stmt = cache_find(w, req->text, req->len, h)) != NULL) {
        *rc = SQLITE_OK;
        return stmt;
    }
    /* The router's normalisation when it made one (routecache_norm),
     * else our own. */
    if (normalize) {
        size_t max_len = (size_t)sqlite3_limit(w->db, SQLITE_LIMIT_SQL_LENGTH, -1);
        if (req->norm != NULL)
            nr = req->norm->len <= max_len ? req->norm : NULL;
        else if (sqlnorm_sqlite(&w->norm, req->text, req->len, req->params, req->nparams, max_len))
            nr = &w->norm.req;
    }
    if (nr != NULL) {
        stmt = sqlite_stmt_get(w, nr->text, nr->len, hash_text(nr->text, nr->len), rc);
        if (stmt != NULL && stmt_as_normalised(stmt, nr)) {
            *run = nr;
            return stmt;
        }
        if (stmt != NULL)
            sqlite_stmt_done(w, stmt);
    }
    return sqlite_stmt_get(w, req->text, req->len, h, rc);
}

/* ---- Programs that run in bounded time -------------------------------- */

/* The opcodes of a single-row INSERT, UPDATE or DELETE of main and of the
 * expressions, defaults, affinities, constraints, index entries and
 * foreign key counters that come with it (SQLite 3.40's names), sorted.
 * None loops by itself: a jump among them is checked to go forward. */
static const char *const straight_ops[] = {
    "Add",       "Affinity",   "And",       "BitAnd",     "BitNot",    "BitOr",        "Blob",
    "Cast",      "CollSeq",    "Column",    "Concat",     "Copy",      "DeferredSeek", "Delete",
    "Divide",    "Eq",         "FkCounter", "FkIfZero",   "Found",     "Function",     "Ge",
    "Goto",      "Gt",         "Halt",      "HaltIfNull", "IdxDelete", "IdxGE",        "IdxGT",
    "IdxInsert", "IdxLE",      "IdxLT",     "IdxRowid",   "If",        "IfNot",        "Init",
    "Insert",    "Int64",      "IntCopy",   "Integer",    "IsNull",    "IsTrue",       "Le",
    "Lt",        "MakeRecord", "Multiply",  "MustBeInt",  "Ne",        "NewRowid",     "NoConflict",
    "Noop",      "Not",        "NotExists", "NotFound",   "NotNull",   "Null",         "Once",
    "OpenRead",  "OpenWrite",  "Or",        "PureFunc",   "Real",      "RealAffinity", "Remainder",
    "Rowid",     "SCopy",      "SeekGE",    "SeekGT",     "SeekLE",    "SeekLT",       "SeekRowid",
    "ShiftLeft", "ShiftRight", "SoftNull",  "String",     "String8",   "Subtract",     "Transaction",
    "TypeCheck", "Variable",   "ZeroOrNull"};

/* Those of them whose P2 is a jump target. */
static const char *const straight_jumps[] = {
    "Eq",      "FkIfZero", "Found",     "Ge",     "Goto",       "Gt",        "IdxGE",
    "IdxGT",   "IdxLE",    "IdxLT",     "If",     "IfNot",      "Init",      "IsNull",
    "Le",      "Lt",       "MustBeInt", "Ne",     "NoConflict", "NotExists", "NotFound",
    "NotNull", "Once",     "SeekGE",    "SeekGT", "SeekLE",     "SeekLT",    "SeekRowid"};

static int op_cmp(const void *key, const void *elem)
{
    return strcmp(key, *(const char *const *)elem);
}

static bool op_in(const char *op, const char *const *set, size_t n)
{
    return bsearch(op, set, n, sizeof *set, op_cmp) != NULL;
}

/* Read stmt's program: every opcode one of straight_ops, every jump
 * forward but the one of the epilogue (after Init's target, the Goto back
 * to the start), every database touched main (0). Address 0 (Init) is
 * never jumped to. */
static bool program_straight(struct worker *w, sqlite3_stmt *stmt)
{
    char *sql = sqlite3_mprintf("EXPLAIN %s", sqlite3_sql(stmt));
    sqlite3_stmt *ex = NULL;
    int64_t epilogue = INT64_MAX;
    bool ok;
    int rc;

    w->internal = true;
    ok = sql != NULL && sqlite3_prepare_v2(w->db, sql, -1, &ex, NULL) == SQLITE_OK && ex != NULL;
    sqlite3_free(sql);
    while (ok && (rc = sqlite3_step(ex)) == SQLITE_ROW) {
        int64_t addr = sqlite3_column_int64(ex, 0), p1 = sqlite3_column_int64(ex, 2),
                p2 = sqlite3_column_int64(ex, 3), p3 = sqlite3_column_int64(ex, 4);
        const char *op = (const char *)sqlite3_column_text(ex, 1);

        if (op == NULL || !op_in(op, straight_ops, sizeof straight_ops / sizeof *straight_ops))
            ok = false;
        else if (strcmp(op, "Init") == 0)
            epilogue = p2;
        else if (strcmp(op, "Transaction") == 0)
            ok = p1 == 0;
        else if (strcmp(op, "OpenWrite") == 0 || strcmp(op, "OpenRead") == 0)
            ok = p3 == 0;
        else if (op_in(op, straight_jumps, sizeof straight_jumps / sizeof *straight_jumps) && p2 <= addr &&
                 p2 != 0) /* (P2 0 is no jump: the SeekRowid of an UPSERT's row) */
            ok = strcmp(op, "Goto") == 0 && addr >= epilogue && p2 == 1;
    }
    if (ok && rc != SQLITE_DONE)
        ok = false;
    sqlite3_finalize(ex);
    w->internal = false;
    return ok;
}

/* The cache entry of stmt, or NULL: most often the one found last. */
static struct cached_stmt *cached_of(struct worker *w, const sqlite3_stmt *stmt)
{
    if (w->cache_last < w->ncache && w->cache[w->cache_last].stmt == stmt)
        return &w->cache[w->cache_last];
    for (size_t i = 0; i < w->ncache; i++)
        if (w->cache[i].stmt == stmt)
            return &w->cache[i];
    return NULL;
}

bool sqlite_stmt_straight(struct worker *w, sqlite3_stmt *stmt, int64_t schema)
{
    struct cached_stmt *c = cached_of(w, stmt);

    if (c == NULL)
        return false; /* not cached: run once and forgotten */
    if (c->straight == 0 || c->straight_schema != schema) {
        c->straight = program_straight(w, stmt) ? 1 : -1;
        c->straight_schema = schema;
    }
    return c->straight > 0;
}

void sqlite_stmt_done(struct worker *w, sqlite3_stmt *stmt)
{
    if (cached_of(w, stmt) != NULL) {
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
    } else {
        sqlite3_finalize(stmt);
    }
}

/* ---- Running jobs ------------------------------------------------------ */

int sqlite_bind_params(sqlite3_stmt *stmt, const struct request *req, struct buf *out, size_t mark)
{
    int want = sqlite3_bind_parameter_count(stmt);
    int rc = SQLITE_OK;

    if ((size_t)want != req->nparams) {
        char msg[120];
        snprintf(msg, sizeof msg, "the statement has %d parameter%s, the request sent %zu", want,
                 want == 1 ? "" : "s", req->nparams);
        sqlite_reply_error_at(out, mark, "PARAMS", msg);
        return -1;
    }
    for (size_t i = 0; i < req->nparams && rc == SQLITE_OK; i++) {
        const struct value *v = &req->params[i];
        int idx = (int)i + 1;
        switch (v->type) {
        case VALUE_NULL: rc = sqlite3_bind_null(stmt, idx); break;
        case VALUE_INT: rc = sqlite3_bind_int64(stmt, idx, v->i); break;
        case VALUE_REAL: rc = sqlite3_bind_double(stmt, idx, v->r); break;
        case VALUE_TEXT: rc = sqlite3_bind_text64(stmt, idx, v->p, v->len, SQLITE_STATIC, SQLITE_UTF8); break;
        case VALUE_BLOB: rc = sqlite3_bind_blob64(stmt, idx, v->p, v->len, SQLITE_STATIC); break;
        }
    }
    if (rc != SQLITE_OK) {
        sqlite_reply_error_at(out, mark, sqlite_code(rc), sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}

/* The header line: each column's name and declared type. A cached
 * statement keeps it from its first run for the next. */
static int put_header(struct worker *w, struct buf *out, sqlite3_stmt *stmt, int ncol)
{
    struct cached_stmt *c = cached_of(w, stmt);
    int prep = sqlite3_stmt_status(stmt, SQLITE_STMTSTATUS_REPREPARE, 0);
    size_t mark = out->len;
    struct codec_row r;

    if (c != NULL && c->header != NULL && c->header_prep == prep)
        return buf_append(out, c->header, c->header_len);
    codec_header_begin(&r, out);
    for (int i = 0; i < ncol; i++) {
        const char *name = sqlite3_column_name(stmt, i);
        const char *type = sqlite3_column_decltype(stmt, i);
        codec_field_text(&r, name ? name : "", name ? strlen(name) : 0);
        codec_field_text(&r, type ? type : "", type ? strlen(type) : 0);
    }
    if (codec_row_end(&r) != 0)
        return -1;
    if (c != NULL) {
        free(c->header);
        c->header_len = out->len - mark;
        c->header = malloc(c->header_len);
        if (c->header != NULL)
            memcpy(c->header, out->data + mark, c->header_len);
        c->header_prep = prep;
    }
    return 0;
}

static int put_row(struct buf *out, sqlite3_stmt *stmt, int ncol)
{
    struct codec_row r;

    codec_row_begin(&r, out);
    for (int i = 0; i < ncol; i++) {
        switch (sqlite3_column_type(stmt, i)) {
        case SQLITE_INTEGER: codec_field_int(&r, sqlite3_column_int64(stmt, i)); break;
        case SQLITE_FLOAT: codec_field_real(&r, sqlite3_column_double(stmt, i)); break;
        case SQLITE_TEXT:
            codec_field_text(&r, (const char *)sqlite3_column_text(stmt, i),
                             (size_t)sqlite3_column_bytes(stmt, i));
            break;
        case SQLITE_BLOB:
            codec_field_blob(&r, sqlite3_column_blob(stmt, i), (size_t)sqlite3_column_bytes(stmt, i));
            break;
        default: codec_field_null(&r); break;
        }
    }
    return codec_row_end(&r);
}

/* The status line after a result's rows: +OK rows=N. */
int sqlite_put_rows_status(struct buf *out, uint64_t rows)
{
    return codec_put_ok_rows(out, rows);
}

/* The status line of a statement without rows: +OK changes=N, and
 * last_id=ID after an INSERT that added rows. */
static int put_changes_status(struct buf *out, sqlite3_int64 changes, bool inserted, sqlite3_int64 last_id)
{
    int64_t id = last_id;

    return codec_put_ok_changes(out, changes, inserted ? &id : NULL);
}

int sqlite_put_done_status(sqlite3 *db, sqlite3_stmt *stmt, enum stmt_kind kind, sqlite3_int64 before,
                           uint64_t rows, struct buf *out)
{
    /* sqlite3_changes64() counts the statement's own rows (not a
     * trigger's) but keeps the previous statement's count after DDL; the
     * total tells whether this statement changed anything. */
    sqlite3_int64 changes = sqlite3_total_changes64(db) != before ? sqlite3_changes64(db) : 0;

    if (sqlite3_column_count(stmt) > 0)
        return sqlite_put_rows_status(out, rows);
    return put_changes_status(out, changes, kind == STMT_INSERT && changes > 0,
                              sqlite3_last_insert_rowid(db));
}

/* The connection a job runs on, for sqlite_interrupt() (backend_sqlite.c). */
static void set_running(struct job *job, sqlite3 *db)
{
    pthread_mutex_lock(&job->lock);
    job->running = db;
    pthread_mutex_unlock(&job->lock);
}

/* Step stmt to the end, streaming the header and rows into out. Returns the
 * final SQLite code (SQLITE_INTERRUPT when the client went away); *rows
 * counts the rows. job NULL: a quick read on the loop thread, stopped with
 * SQLITE_TOOBIG when its answer grows past QUICK_MAX_OUTPUT. */
int sqlite_stream_rows(struct worker *w, struct job *job, sqlite3_stmt *stmt, struct buf *out, uint64_t *rows)
{
    bool first = true;
    bool unfinished = false; /* its last step gave a row */
    int ncol = 0;
    int rc;

    for (;;) {
        w->stepping = stmt;
        rc = sqlite3_step(stmt);
        w->stepping = NULL;
        unfinished = rc == SQLITE_ROW;
        if (first) {
            /* Only now are the columns known for sure: the first step
             * re-prepares a statement whose schema changed (SELECT *). */
            first = false;
            ncol = sqlite3_column_count(stmt);
            if ((rc == SQLITE_ROW || rc == SQLITE_DONE) && ncol > 0 && put_header(w, out, stmt, ncol) != 0) {
                rc = SQLITE_NOMEM;
                break;
            }
        }
        if (rc != SQLITE_ROW)
            break;
        if (ncol == 0)
            continue;
        if (put_row(out, stmt, ncol) != 0) {
            rc = SQLITE_NOMEM;
            break;
        }
        (*rows)++;
        if (job == NULL) {
            if (out->len - w->mark > QUICK_MAX_OUTPUT) {
                rc = SQLITE_TOOBIG;
                break;
            }
        } else if (w->grouping && out->len >= CHUNK_BYTES) {
            /* Nothing may be posted before the group commits. */
            w->group_overflow = true;
            rc = SQLITE_TOOBIG;
            break;
        } else if (out->len >= CHUNK_BYTES) {
            if (job_post_chunk(job, out) != 0 || job_wait_credit(job) != 0) {
                rc = SQLITE_INTERRUPT;
                break;
            }
            w->mark = 0; /* what came before is on its way */
        }
    }
    /* Stopped here rather than by SQLite (the client went away, no memory,
     * an answer too large): a write with RETURNING has made its changes by
     * its first step, and a reset would commit them (inside a transaction,
     * keep them) under an -ERR answer. Interrupted, SQLite undoes them. */
    if (unfinished && !sqlite3_stmt_readonly(stmt)) {
        sqlite3_interrupt(w->db);
        while (sqlite3_step(stmt) == SQLITE_ROW)
            ;
    }
    return rc;
}

static void reply_readonly(struct worker *w, struct buf *out)
{
    sqlite_reply_error_at(out, w->mark, "NOPERM", w->sb->readonly_msg);
}

/* Whether a held BEGIN only reads (BEGIN IMMEDIATE and EXCLUSIVE take the
 * write lock). */
static bool begin_readonly(sqlite3 *db, const char *begin_sql)
{
    sqlite3_stmt *stmt = NULL;
    bool ro = sqlite3_prepare_v2(db, begin_sql, -1, &stmt, NULL) == SQLITE_OK && stmt != NULL &&
              sqlite3_stmt_readonly(stmt);
    sqlite3_finalize(stmt);
    return ro;
}

/* Run one statement of the job and append its whole response to out.
 * Returns false when the response is an -ERR. */
/* SQLite rolls back the whole transaction after some errors of a
 * statement in it (an interrupted write, a full disk, an I/O error, out
 * of memory: "Response To Errors Within A Transaction" in its docs). The
 * statement's -ERR, the last line of out, says so: the client's COMMIT
 * would only learn that no transaction is active. */
void sqlite_note_rolled_back(struct buf *out)
{
    static const char note[] = " (the transaction was rolled back)";

    if (out->len == 0 || out->data[out->len - 1] != '\n' || buf_reserve(out, sizeof note) != 0)
        return;
    /* Room reserved: the line loses its end only to get it back. */
    memcpy(out->data + out->len - 1, note, sizeof note - 1);
    out->len += sizeof note - 1;
    out->data[out->len - 1] = '\n';
    out->data[out->len] = '\0';
}

static bool run_stmt(struct worker *w, struct job *job, const struct request *req, enum stmt_kind kind,
                     const char *begin_sql, struct buf *out)
{
    sqlite3 *db = w->db;
    sqlite3_int64 before = sqlite3_total_changes64(db);
    uint64_t rows = 0;
    sqlite3_stmt *stmt;
    bool timed_out, in_txn;
    int timeout_ms;
    int rc;

    w->mark = out->len;
    if (begin_sql != NULL) {
        if (job->readonly && !begin_readonly(db, begin_sql)) {
            reply_readonly(w, out);
            return false;
        }
        rc = xact_begin(w, begin_sql, false);
        if (rc != SQLITE_OK) {
            sqlite_reply_db_error(w, out, rc);
            return false;
        }
    }
    w->pragma = kind == STMT_PRAGMA;
    if (w->pragma)
        schema_refresh(w, req->text, req->len);
    stmt = sqlite_stmt_for(w, req, request_hash(req), &req, &rc);
    w->pragma = false;
    if (stmt == NULL) {
        if (rc == SQLITE_MISUSE)
            sqlite_reply_error_at(out, w->mark, "MULTI", "one statement per request");
        else if (rc == SQLITE_OK && put_changes_status(out, 0, false, 0) != 0)
            sqlite_reply_error_at(out, w->mark, "NOMEM", "out of memory");
        else if (rc != SQLITE_OK)
            sqlite_reply_db_error(w, out, rc);
        return rc == SQLITE_OK;
    }
    /* SQLite itself says whether the prepared program writes: a write
     * hidden in a CTE, or done by a trigger, makes it not read-only. */
    if (job->readonly && !sqlite3_stmt_readonly(stmt)) {
        reply_readonly(w, out);
        sqlite_stmt_done(w, stmt);
        return false;
    }
    if (sqlite_bind_params(stmt, req, out, w->mark) != 0) {
        sqlite_stmt_done(w, stmt);
        return false;
    }
    w->denied = NULL;
    w->denied_code = NULL;
    w->altering = false;
    timeout_ms = w->sb->bind->conf->statement_timeout_ms;
    w->started_ns = uv_hrtime();
    w->deadline_ns = timeout_ms > 0 ? w->started_ns + (uint64_t)timeout_ms * 1000000u : 0;
    in_txn = !sqlite3_get_autocommit(db);
    rc = sqlite_stream_rows(w, job, stmt, out, &rows);
    timed_out = w->deadline_ns != 0 && uv_hrtime() > w->deadline_ns;
    w->deadline_ns = 0;
    w->started_ns = 0;
    if (w->lowered)
        w->lowered = setpriority(PRIO_PROCESS, (id_t)w->tid, 0) != 0;
    job->rows += rows;
    if (rc == SQLITE_DONE) {
        rc = sqlite_put_done_status(db, stmt, kind, before, rows, out);
        if (rc != 0)
            sqlite_reply_error_at(out, w->mark, "NOMEM", "out of memory writing the status line");
        sqlite_stmt_done(w, stmt);
        return rc == 0;
    }
    /* Rows already posted stay sent; the response ends with -ERR. */
    if ((rc & 0xff) == SQLITE_INTERRUPT && atomic_load(&job->cancelled)) {
        sqlite_reply_error_at(out, w->mark, "INTERRUPTED", "the client went away");
    } else if ((rc & 0xff) == SQLITE_INTERRUPT && timed_out) {
        char msg[120];
        snprintf(msg, sizeof msg, "statement exceeded statement_timeout (%d ms) and was interrupted",
                 timeout_ms);
        sqlite_reply_error_at(out, w->mark, "TIMEOUT", msg);
    } else {
        sqlite_reply_db_error(w, out, rc);
    }
    if (in_txn && sqlite3_get_autocommit(db))
        sqlite_note_rolled_back(out);
    sqlite_stmt_done(w, stmt);
    return false;
}

/* run_stmt on a connection that has the other binds attached (xact.h): a
 * statement that SQLite would run over every database of the connection
 * (ANALYZE, REINDEX, PRAGMA integrity_check without a schema) is refused
 * when prepared; outside a transaction it runs again with the other binds
 * detached for it, as on a connection of its bind alone. */
static bool run_stmt_attached(struct worker *w, struct job *job, const struct request *req,
                              enum stmt_kind kind, const char *begin_sql, struct buf *out)
{
    size_t mark = out->len;
    uint64_t rows = job->rows;
    bool ok = run_stmt(w, job, req, kind, begin_sql, out);

    if (!ok && job->rows == rows && out->len > mark && out->data[mark] == '-' && xact_detach_for(w)) {
        buf_truncate(out, mark);
        ok = run_stmt(w, job, req, kind, NULL, out);
        xact_reattach(w);
    }
    return ok;
}

/* The job's statement, then the ones batched after it, in order; each
 * gets its own response. A client that went away stops the batch. The
 * answers go out together when the batch ends (or by CHUNK_BYTES): one
 * wake-up of the loop and one write to the client per batch. (Posting a
 * batch's first half early, so the client would send more while the
 * second half ran, cost 35-40% more daemon CPU per statement in syscalls
 * and wake-ups and was slower at every depth: tests/bench/RESULTS.md.)
 * Before any answer to a statement that may have written is posted, the
 * bind's write count moves on: a quick read sent after that answer
 * arrived must take a fresh snapshot. */
void sqlite_exec_job(struct worker *w, struct job *job, struct buf *out)
{
    bool wrote = job->kind != STMT_SELECT;

    w->readonly = job->readonly;
    w->normalize = confref_cfg(job->cfgref)->normalize_literals;
    sqlite_conn_query_only(w, job->readonly);
    sqlite_conn_max_value(w, confref_cfg(job->cfgref)->max_value, INT_MAX);
    /* A COMMIT of a transaction that wrote several binds is the
     * coordinator's (xact.h). */
    if (job->kind == STMT_COMMIT && job->nmore == 0 && w->xact != NULL && xact_commit(w, job, out)) {
        job->errors = job->failed;
        w->readonly = false;
        atomic_fetch_add_explicit(&w->sb->writes, 1, memory_order_release);
        return;
    }
    set_running(job, w->db);
    w->mark = out->len;
    if (job->nxact_binds > 0 && xact_stmt_begin(w, job, out) != 0) {
        job->failed = true;
        job->errors = 1;
        set_running(job, NULL);
        w->readonly = false;
        return;
    }
    if (job->nxact_lent > 0) {
        struct pgvtab *vt;
        if (xact_lend_begin(w, job, &vt, out) != 0) {
            job->failed = true;
        } else {
            job->failed = !run_stmt_attached(w, job, &job->req, job->kind, job->begin_sql, out);
            xact_lend_end(w, job, vt, out);
        }
    } else {
        job->failed = !run_stmt_attached(w, job, &job->req, job->kind, job->begin_sql, out);
    }
    xact_stmt_end(w);
    job->errors = job->failed;
    for (size_t i = 0; i < job->nmore && !atomic_load(&job->cancelled); i++) {
        if (!run_stmt_attached(w, job, &job->more[i].req, job->more[i].kind, NULL, out))
            job->errors++;
        wrote |= job->more[i].kind != STMT_SELECT;
        if (out->len >= CHUNK_BYTES) {
            if (wrote)
                atomic_fetch_add_explicit(&w->sb->writes, 1, memory_order_release);
            wrote = false;
            if (job_post_chunk(job, out) != 0 || job_wait_credit(job) != 0)
                break;
        }
    }
    set_running(job, NULL);
    w->readonly = false;
    if (wrote && !w->grouping)
        atomic_fetch_add_explicit(&w->sb->writes, 1, memory_order_release);
}

/* A statement that failed in PostgreSQL: its -ERR (the last line of out)
 * gets the code of the SQLSTATE (UNAVAILABLE when the bind could not be
 * reached, CONNLOST when the connection broke) and the SQLSTATE itself,
 * as for a statement sent to a PostgreSQL bind directly. */
void sqlite_pg_error(struct pgvtab *vt, struct buf *out)
{
    const char *state = pgvtab_sqlstate(vt);
    size_t start, end = out->len, sp;
    struct buf line = BUF_INIT;

    if (state == NULL || end < 6 || out->data[end - 1] != '\n')
        return;
    for (start = end - 1; start > 0 && out->data[start - 1] != '\n'; start--)
        ;
    if (end - start < 6 || memcmp(out->data + start, "-ERR ", 5) != 0)
        return;
    for (sp = start + 5; sp < end - 1 && out->data[sp] != ' '; sp++)
        ;
    if (sp < end - 1)
        sp++;
    if (buf_printf(&line, "%.*s (SQLSTATE %s)", (int)(end - 1 - sp), out->data + sp, state) == 0 &&
        buf_putc(&line, '\0') == 0)
        sqlite_reply_error_at(out, start, strcmp(state, "08001") == 0 ? "UNAVAILABLE" : pg_code(state, false),
                              line.data);
    buf_free(&line);
}

/* An INSERT into a PostgreSQL table answers no last_id (a PostgreSQL bind
 * never does: the virtual table's rowid is no key of the table). */
void sqlite_drop_last_id(struct buf *out)
{
    size_t start = out->len;

    while (start > 0 && (start == out->len || out->data[start - 1] != '\n'))
        start--;
    for (size_t i = start; i + 9 <= out->len; i++) {
        if (memcmp(out->data + i, " last_id=", 9) == 0) {
            buf_truncate(out, i);
            if (buf_putc(out, '\n') != 0)
                buf_truncate(out, start);
            return;
        }
    }
}
