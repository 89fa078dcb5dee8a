/*
 * The migration engine: reading a bind's migration files, the version
 * table, and applying or reverting migrations one transaction at a time
 * on SQLite or PostgreSQL through one small adapter (struct mdb_ops).
 * See migrate.h for the model; migrate_cli.c is the `sqlmuxd migrate`
 * command built on it.
 *
 * Every function here blocks on its database and may run on any thread
 * that owns the connection it is given.
 */
#include "daemon/migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "daemon/log.h"
#include "daemon/sqllex.h"
#include "proto/codec.h"

/* pg_advisory_xact_lock key of migration runs: "sqlmux" as a number. */
#define MIGRATE_PG_LOCK "126930987611512"

#define MIGRATE_SQLITE_TABLE_DDL                                                                             \
    "CREATE TABLE IF NOT EXISTS " MIGRATE_TABLE " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "        \
    "checksum TEXT NOT NULL, applied_at TEXT NOT NULL)"
#define MIGRATE_PG_TABLE_DDL                                                                                 \
    "CREATE TABLE IF NOT EXISTS " MIGRATE_TABLE " (version bigint PRIMARY KEY, name text NOT NULL, "         \
    "checksum text NOT NULL, applied_at text NOT NULL)"
#define MIGRATE_SELECT "SELECT version, name, checksum, applied_at FROM " MIGRATE_TABLE " ORDER BY version"

/* ---- Small helpers ---------------------------------------------------- */

/* The whole file at path, NUL-terminated, in a new buffer; *len its size.
 * NULL with errno set on failure. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct buf b = BUF_INIT;
    char tmp[8192];
    size_t n;

    if (f == NULL)
        return NULL;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (buf_append(&b, tmp, n) != 0) {
            buf_free(&b);
            fclose(f);
            errno = ENOMEM;
            return NULL;
        }
    }
    if (ferror(f) || buf_putc(&b, '\0') != 0) {
        int e = ferror(f) ? EIO : ENOMEM;
        buf_free(&b);
        fclose(f);
        errno = e;
        return NULL;
    }
    fclose(f);
    *len = b.len - 1;
    return b.data;
}

static int sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return -1;
    for (unsigned int i = 0; i < mdlen; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* The 1-based line of byte offset `at` in s. */
static int line_at(const char *s, size_t at)
{
    int line = 1;
    for (size_t i = 0; i < at; i++)
        if (s[i] == '\n')
            line++;
    return line;
}

static void iso_now(char out[32])
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* ---- Files ------------------------------------------------------------ */

static void migration_free(struct migration *m)
{
    free(m->name);
    free(m->file);
    free(m->up_path);
    free(m->down_path);
    free(m->sql);
}

void migrate_set_free(struct migration_set *set)
{
    for (size_t i = 0; i < set->n; i++)
        migration_free(&set->items[i]);
    free(set->items);
    free(set->dir);
    memset(set, 0, sizeof *set);
}

/* Split "NNNN_name.sql" / "NNNN_name.down.sql". False when fname is not a
 * migration name; *name_len is the length of "name". */
static bool parse_file_name(const char *fname, long long *version, size_t *name_off, size_t *name_len,
                            bool *down)
{
    size_t digits = 0, rest;
    const char *tail;

    while (isdigit((unsigned char)fname[digits]))
        digits++;
    if (digits == 0 || digits > 18 || fname[digits] != '_')
        return false;
    *version = strtoll(fname, NULL, 10);
    tail = fname + digits + 1;
    rest = strlen(tail);
    if (rest > 9 && strcmp(tail + rest - 9, ".down.sql") == 0) {
        *down = true;
        *name_len = rest - 9;
    } else if (rest > 4 && strcmp(tail + rest - 4, ".sql") == 0) {
        *down = false;
        *name_len = rest - 4;
    } else {
        return false;
    }
    *name_off = digits + 1;
    return true;
}

static int cmp_migration(const void *a, const void *b)
{
    const struct migration *x = a, *y = b;
    return x->version < y->version ? -1 : x->version > y->version;
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Down files found while scanning, matched to their up files afterwards. */
struct down_file {
    long long version;
    char *fname;
};

int migrate_scan(const char *root, const char *bind, struct migration_set *set, char *err, size_t errlen)
{
    struct down_file *downs = NULL;
    size_t ndowns = 0, cap = 0, downs_cap = 0;
    struct dirent *e;
    DIR *d;
    int rc = -1;

    memset(set, 0, sizeof *set);
    set->dir = path_join(root, bind);
    if (set->dir == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    d = opendir(set->dir);
    if (d == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s: cannot open: %s", set->dir, strerror(errno));
        migrate_set_free(set);
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        long long version;
        size_t name_off, name_len, flen = strlen(e->d_name);
        bool down;

        if (e->d_name[0] == '.' || flen < 4 || strcmp(e->d_name + flen - 4, ".sql") != 0)
            continue; /* README files and the like */
        if (!parse_file_name(e->d_name, &version, &name_off, &name_len, &down)) {
            snprintf(err, errlen, "%s/%s: not a migration file name (NNNN_name.sql or NNNN_name.down.sql)",
                     set->dir, e->d_name);
            goto out;
        }
        if (version <= 0) {
            snprintf(err, errlen, "%s/%s: versions start at 1", set->dir, e->d_name);
            goto out;
        }
        if (down) {
            if (ndowns == downs_cap) {
                size_t ncap = downs_cap ? downs_cap * 2 : 8;
                struct down_file *p = realloc(downs, ncap * sizeof *p);
                if (p == NULL)
                    goto nomem;
                downs = p;
                downs_cap = ncap;
            }
            downs[ndowns].version = version;
            downs[ndowns].fname = strdup(e->d_name);
            if (downs[ndowns].fname == NULL)
                goto nomem;
            ndowns++;
            continue;
        }
        if (set->n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct migration *p = realloc(set->items, ncap * sizeof *p);
            if (p == NULL)
                goto nomem;
            set->items = p;
            cap = ncap;
        }
        struct migration *m = &set->items[set->n++];
        memset(m, 0, sizeof *m);
        m->version = version;
        m->name = strndup(e->d_name + name_off, name_len);
        m->file = strdup(e->d_name);
        m->up_path = path_join(set->dir, e->d_name);
        if (m->name == NULL || m->file == NULL || m->up_path == NULL)
            goto nomem;
        m->sql = read_all(m->up_path, &m->len);
        if (m->sql == NULL) {
            snprintf(err, errlen, "%s: cannot read: %s", m->up_path, strerror(errno));
            goto out;
        }
        if (sha256_hex(m->sql, m->len, m->checksum) != 0) {
            snprintf(err, errlen, "%s: cannot compute its SHA-256", m->up_path);
            goto out;
        }
    }
    if (set->n > 0)
        qsort(set->items, set->n, sizeof *set->items, cmp_migration);
    for (size_t i = 1; i < set->n; i++) {
        if (set->items[i].version == set->items[i - 1].version) {
            snprintf(err, errlen, "%s: %s and %s have the same version %lld", set->dir,
                     set->items[i - 1].file, set->items[i].file, set->items[i].version);
            goto out;
        }
    }
    for (size_t i = 0; i < ndowns; i++) {
        struct migration key = {.version = downs[i].version};
        struct migration *m =
            set->n ? bsearch(&key, set->items, set->n, sizeof *set->items, cmp_migration) : NULL;
        size_t base = m ? strlen(m->file) - 4 : 0;
        if (m == NULL) {
            snprintf(err, errlen, "%s/%s: no migration %lld to go with this down file", set->dir,
                     downs[i].fname, downs[i].version);
            goto out;
        }
        if (strncmp(downs[i].fname, m->file, base) != 0 || strcmp(downs[i].fname + base, ".down.sql") != 0) {
            snprintf(err, errlen, "%s/%s: does not match %s (the down file of %s is %.*s.down.sql)", set->dir,
                     downs[i].fname, m->file, m->file, (int)base, m->file);
            goto out;
        }
        if (m->down_path != NULL) {
            snprintf(err, errlen, "%s/%s: %s has two down files", set->dir, downs[i].fname, m->file);
            goto out;
        }
        m->down_path = path_join(set->dir, downs[i].fname);
        if (m->down_path == NULL)
            goto nomem;
    }
    rc = 0;
    goto out;
nomem:
    snprintf(err, errlen, "%s: out of memory", set->dir);
out:
    closedir(d);
    for (size_t i = 0; i < ndowns; i++)
        free(downs[i].fname);
    free(downs);
    if (rc != 0)
        migrate_set_free(set);
    return rc;
}

static const struct migration *set_find(const struct migration_set *set, long long version)
{
    struct migration key = {.version = version};
    if (set->n == 0)
        return NULL;
    return bsearch(&key, set->items, set->n, sizeof *set->items, cmp_migration);
}

/* ---- The version table's rows ------------------------------------------ */

int migrate_rows_add(struct migration_rows *rows, long long version, const char *name, const char *checksum,
                     const char *applied_at)
{
    struct migration_row *r;

    if (rows->n == rows->cap) {
        size_t ncap = rows->cap ? rows->cap * 2 : 8;
        struct migration_row *p = realloc(rows->items, ncap * sizeof *p);
        if (p == NULL)
            return -1;
        rows->items = p;
        rows->cap = ncap;
    }
    r = &rows->items[rows->n];
    r->version = version;
    r->name = strdup(name ? name : "");
    r->checksum = strdup(checksum ? checksum : "");
    r->applied_at = strdup(applied_at ? applied_at : "");
    if (r->name == NULL || r->checksum == NULL || r->applied_at == NULL) {
        free(r->name);
        free(r->checksum);
        free(r->applied_at);
        return -1;
    }
    rows->n++;
    return 0;
}

void migrate_rows_free(struct migration_rows *rows)
{
    for (size_t i = 0; i < rows->n; i++) {
        free(rows->items[i].name);
        free(rows->items[i].checksum);
        free(rows->items[i].applied_at);
    }
    free(rows->items);
    memset(rows, 0, sizeof *rows);
}

static const struct migration_row *rows_find(const struct migration_rows *rows, long long version)
{
    for (size_t i = 0; i < rows->n; i++)
        if (rows->items[i].version == version)
            return &rows->items[i];
    return NULL;
}

static long long rows_version(const struct migration_rows *rows)
{
    long long v = 0;
    for (size_t i = 0; i < rows->n; i++)
        if (rows->items[i].version > v)
            v = rows->items[i].version;
    return v;
}

static const char *migrate_state(const struct migration *m, const struct migration_row *row)
{
    if (row == NULL)
        return "pending";
    if (m == NULL)
        return "missing";
    return strcmp(m->checksum, row->checksum) == 0 ? "applied" : "changed";
}

int migrate_status_each(const struct migration_set *set, const struct migration_rows *applied,
                        migrate_status_fn fn, void *arg)
{
    size_t i = 0, j = 0;

    /* Both lists are sorted by version: merge them. */
    while (i < set->n || j < applied->n) {
        const struct migration *m = i < set->n ? &set->items[i] : NULL;
        const struct migration_row *r = j < applied->n ? &applied->items[j] : NULL;
        int rc;
        if (m != NULL && (r == NULL || m->version < r->version)) {
            rc = fn(arg, m->version, m->name, migrate_state(m, NULL), NULL);
            i++;
        } else if (m == NULL || r->version < m->version) {
            rc = fn(arg, r->version, r->name, migrate_state(NULL, r), r->applied_at);
            j++;
        } else {
            rc = fn(arg, m->version, m->name, migrate_state(m, r), r->applied_at);
            i++;
            j++;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

struct status_out {
    const char *bind;
    struct buf *out;
    uint64_t *count;
};

static int put_status_row(void *arg, long long version, const char *name, const char *state,
                          const char *applied_at)
{
    struct status_out *so = arg;
    struct buf *out = so->out;
    struct codec_row r;

    codec_row_begin(&r, out);
    codec_field_str(&r, so->bind);
    codec_field_int(&r, version);
    codec_field_str(&r, name);
    codec_field_str(&r, state);
    codec_field_str(&r, applied_at);
    if (codec_row_end(&r) != 0)
        return -1;
    (*so->count)++;
    return 0;
}

int migrate_put_status(const char *bind, const struct migration_set *set,
                       const struct migration_rows *applied, struct buf *out, uint64_t *count)
{
    struct status_out so = {bind, out, count};
    return migrate_status_each(set, applied, put_status_row, &so);
}

/* ---- The adapter ------------------------------------------------------- */

/* What the engine needs of a database. h is a sqlite3 * or a PGconn *.
 * Functions return 0, or -1 with err set. */
struct mdb_ops {
    /* Start a transaction that holds the migration lock; the version table
     * exists inside it. */
    int (*begin)(void *h, char *err, size_t errlen);
    /* COMMIT (commit) or ROLLBACK. */
    int (*end)(void *h, bool commit, char *err, size_t errlen);
    bool (*in_txn)(void *h);
    int (*rows)(void *h, struct migration_rows *rows, char *err, size_t errlen);
    /* Run every statement of sql; errors as "path:line: message". */
    int (*script)(void *h, const char *path, const char *sql, size_t len, char *err, size_t errlen);
    /* Add (add) or remove m's version-table row. */
    int (*record)(void *h, const struct migration *m, bool add, char *err, size_t errlen);
};

/* ---- SQLite -------------------------------------------------------------- */

static int sq_exec(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "%s: %s", what, sqlite3_errmsg(db));
    return -1;
}

static int sq_begin(void *h, char *err, size_t errlen)
{
    sqlite3 *db = h;
    if (sq_exec(db, "BEGIN IMMEDIATE", "cannot lock the database for migrations", err, errlen) != 0)
        return -1;
    if (sq_exec(db, MIGRATE_SQLITE_TABLE_DDL, "cannot create " MIGRATE_TABLE, err, errlen) != 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static int sq_end(void *h, bool commit, char *err, size_t errlen)
{
    sqlite3 *db = h;
    if (sqlite3_get_autocommit(db))
        return 0;
    if (!commit) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return 0;
    }
    if (sq_exec(db, "COMMIT", "COMMIT", err, errlen) != 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static bool sq_in_txn(void *h)
{
    return !sqlite3_get_autocommit(h);
}

int migrate_sqlite_rows(sqlite3 *db, struct migration_rows *rows, char *err, size_t errlen)
{
    sqlite3_stmt *stmt = NULL;
    bool exists;
    int rc;

    rc = sqlite3_prepare_v2(db,
                            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '" MIGRATE_TABLE "'",
                            -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "reading " MIGRATE_TABLE ": %s", sqlite3_errmsg(db));
        return -1;
    }
    rc = sqlite3_step(stmt);
    exists = rc == SQLITE_ROW;
    sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        snprintf(err, errlen, "reading " MIGRATE_TABLE ": %s", sqlite3_errmsg(db));
        return -1;
    }
    if (!exists)
        return 0;
    if (sqlite3_prepare_v2(db, MIGRATE_SELECT, -1, &stmt, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading " MIGRATE_TABLE ": %s", sqlite3_errmsg(db));
        return -1;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (migrate_rows_add(rows, sqlite3_column_int64(stmt, 0), (const char *)sqlite3_column_text(stmt, 1),
                             (const char *)sqlite3_column_text(stmt, 2),
                             (const char *)sqlite3_column_text(stmt, 3)) != 0) {
            sqlite3_finalize(stmt);
            snprintf(err, errlen, "reading " MIGRATE_TABLE ": out of memory");
            return -1;
        }
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "reading " MIGRATE_TABLE ": %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

static int sq_rows(void *h, struct migration_rows *rows, char *err, size_t errlen)
{
    return migrate_sqlite_rows(h, rows, err, errlen);
}

static int sq_script(void *h, const char *path, const char *sql, size_t len, char *err, size_t errlen)
{
    sqlite3 *db = h;
    size_t pos = 0;

    while (pos < len) {
        sqlite3_stmt *stmt = NULL;
        const char *tail = NULL;
        size_t rest = len - pos;
        int rc = sqlite3_prepare_v2(db, sql + pos, rest > INT_MAX ? INT_MAX : (int)rest, &stmt, &tail);

        if (rc != SQLITE_OK) {
            int off = sqlite3_error_offset(db);
            size_t at = off >= 0 ? pos + (size_t)off : sqllex_skip(sql, len, pos, 0);
            snprintf(err, errlen, "%s:%d: %s", path, line_at(sql, at), sqlite3_errmsg(db));
            return -1;
        }
        if (stmt != NULL) {
            while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
                ;
            if (rc != SQLITE_DONE) {
                snprintf(err, errlen, "%s:%d: %s", path, line_at(sql, sqllex_skip(sql, len, pos, 0)),
                         sqlite3_errmsg(db));
                sqlite3_finalize(stmt);
                return -1;
            }
            sqlite3_finalize(stmt);
        }
        if (tail == NULL || tail <= sql + pos)
            break;
        pos = (size_t)(tail - sql);
    }
    return 0;
}

static int sq_record(void *h, const struct migration *m, bool add, char *err, size_t errlen)
{
    sqlite3 *db = h;
    sqlite3_stmt *stmt = NULL;
    char at[32];
    int rc;

    rc = sqlite3_prepare_v2(db,
                            add ? "INSERT INTO " MIGRATE_TABLE " (version, name, checksum, applied_at) "
                                  "VALUES (?1, ?2, ?3, ?4)"
                                : "DELETE FROM " MIGRATE_TABLE " WHERE version = ?1",
                            -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        iso_now(at);
        sqlite3_bind_int64(stmt, 1, m->version);
        if (add) {
            sqlite3_bind_text(stmt, 2, m->name, -1, SQLITE_STATIC);
            sqlite3_bind_text(stmt, 3, m->checksum, -1, SQLITE_STATIC);
            sqlite3_bind_text(stmt, 4, at, -1, SQLITE_STATIC);
        }
        rc = sqlite3_step(stmt);
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "recording %s in " MIGRATE_TABLE ": %s", m->file, sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

static const struct mdb_ops sqlite_mdb = {sq_begin, sq_end, sq_in_txn, sq_rows, sq_script, sq_record};

static int sqlite_run_file(sqlite3 *db, const char *path, bool only_if_empty, bool *applied, char *err,
                           size_t errlen);

/* Has the database no table, view, index or trigger yet? */
static bool sqlite_empty(sqlite3 *db)
{
    sqlite3_stmt *stmt = NULL;
    bool empty = sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_schema", -1, &stmt, NULL) == SQLITE_OK &&
                 sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_int(stmt, 0) == 0;
    sqlite3_finalize(stmt);
    return empty;
}

int migrate_sqlite_run_file(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    bool applied;
    return sqlite_run_file(db, path, false, &applied, err, errlen);
}

/* Run the SQL file at path in one transaction. only_if_empty: take the
 * write lock first (BEGIN IMMEDIATE) and run nothing when the database
 * already has a schema, so that several processes setting up one new
 * database apply the file exactly once. */
static int sqlite_run_file(sqlite3 *db, const char *path, bool only_if_empty, bool *applied, char *err,
                           size_t errlen)
{
    size_t len = 0;
    char *sql = read_all(path, &len);
    int rc;

    *applied = false;
    if (sql == NULL) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    /* A database with a schema is left alone without taking its write
     * lock (clients may hold it); an empty one is checked again under the
     * lock. */
    if (only_if_empty && !sqlite_empty(db)) {
        free(sql);
        return 0;
    }
    rc = sq_exec(db, only_if_empty ? "BEGIN IMMEDIATE" : "BEGIN", path, err, errlen);
    if (rc == 0 && only_if_empty && !sqlite_empty(db)) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        free(sql);
        return 0;
    }
    if (rc == 0 && sq_script(db, path, sql, len, err, errlen) != 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        rc = -1;
    }
    if (rc == 0 && sq_end(db, true, err, errlen) != 0)
        rc = -1;
    *applied = rc == 0;
    free(sql);
    return rc;
}

int migrate_sqlite_setup(sqlite3 *db, const char *name, const char *filename, const char *schema,
                         int busy_timeout_ms, bool *applied, char *err, size_t errlen)
{
    int waited = 0;

    *applied = false;
    for (;;) {
        sqlite3_stmt *stmt = NULL;
        const char *mode = NULL;
        int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(stmt);
            if (rc == SQLITE_ROW)
                mode = (const char *)sqlite3_column_text(stmt, 0);
        }
        if (mode != NULL && strcasecmp(mode, "wal") == 0) {
            sqlite3_finalize(stmt);
            break;
        }
        sqlite3_finalize(stmt);
        /* Another process may be setting the same new database up. */
        if (((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) && waited < busy_timeout_ms) {
            usleep(10000);
            waited += 10;
            continue;
        }
        snprintf(err, errlen, "bind %s: cannot use WAL mode on %s: %s", name, filename, sqlite3_errmsg(db));
        return -1;
    }
    if (schema == NULL)
        return 0;
    return sqlite_run_file(db, schema, true, applied, err, errlen);
}

/* ---- PostgreSQL -------------------------------------------------------- */

/* "message (SQLSTATE XXXXX)" of an error result, or the connection's
 * error. */
static void pg_error_text(PGconn *conn, const PGresult *res, char *dst, size_t n)
{
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    size_t len;

    if (primary != NULL && state != NULL) {
        snprintf(dst, n, "%s (SQLSTATE %s)", primary, state);
        return;
    }
    snprintf(dst, n, "%s",
             res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) : PQerrorMessage(conn));
    len = strlen(dst);
    while (len > 0 && (dst[len - 1] == '\n' || dst[len - 1] == ' '))
        dst[--len] = '\0';
}

/* Run one command; 0 when it succeeded. */
static int pg_exec(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    char msg[512];

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(res);
        return 0;
    }
    pg_error_text(conn, res, msg, sizeof msg);
    snprintf(err, errlen, "%s: %s", what, msg);
    PQclear(res);
    return -1;
}

static int pg_begin(void *h, char *err, size_t errlen)
{
    PGconn *conn = h;
    if (pg_exec(conn, "BEGIN", "BEGIN", err, errlen) != 0)
        return -1;
    if (pg_exec(conn, "SELECT pg_advisory_xact_lock(" MIGRATE_PG_LOCK ")", "cannot take the migration lock",
                err, errlen) != 0 ||
        pg_exec(conn, MIGRATE_PG_TABLE_DDL, "cannot create " MIGRATE_TABLE, err, errlen) != 0) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return -1;
    }
    return 0;
}

static int pg_end(void *h, bool commit, char *err, size_t errlen)
{
    PGconn *conn = h;
    PGresult *res;
    bool ok;

    if (PQtransactionStatus(conn) == PQTRANS_IDLE)
        return 0;
    if (!commit) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return 0;
    }
    res = PQexec(conn, "COMMIT");
    /* A transaction in error answers COMMIT with ROLLBACK. */
    ok = PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(res), "COMMIT") == 0;
    if (!ok) {
        char msg[512];
        pg_error_text(conn, res, msg, sizeof msg);
        snprintf(err, errlen, "COMMIT: %s", PQresultStatus(res) == PGRES_COMMAND_OK ? "rolled back" : msg);
    }
    PQclear(res);
    if (!ok && PQtransactionStatus(conn) != PQTRANS_IDLE)
        PQclear(PQexec(conn, "ROLLBACK"));
    return ok ? 0 : -1;
}

static bool pg_in_txn(void *h)
{
    return PQtransactionStatus(h) == PQTRANS_INTRANS;
}

int migrate_pg_rows(PGconn *conn, struct migration_rows *rows, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, "SELECT to_regclass('" MIGRATE_TABLE "') IS NOT NULL");
    char msg[512];
    bool exists;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        pg_error_text(conn, res, msg, sizeof msg);
        snprintf(err, errlen, "reading " MIGRATE_TABLE ": %s", msg);
        PQclear(res);
        return -1;
    }
    exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!exists)
        return 0;
    res = PQexec(conn, MIGRATE_SELECT);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pg_error_text(conn, res, msg, sizeof msg);
        snprintf(err, errlen, "reading " MIGRATE_TABLE ": %s", msg);
        PQclear(res);
        return -1;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        if (migrate_rows_add(rows, strtoll(PQgetvalue(res, r, 0), NULL, 10), PQgetvalue(res, r, 1),
                             PQgetvalue(res, r, 2), PQgetvalue(res, r, 3)) != 0) {
            PQclear(res);
            snprintf(err, errlen, "reading " MIGRATE_TABLE ": out of memory");
            return -1;
        }
    }
    PQclear(res);
    return 0;
}

static int pg_rows(void *h, struct migration_rows *rows, char *err, size_t errlen)
{
    return migrate_pg_rows(h, rows, err, errlen);
}

/* The offset of the first token of the index-th (from 0) non-empty
 * statement of sql, as PostgreSQL splits a simple query: at ';' outside
 * quotes ('' and E'' strings, "" names, $tag$ bodies) and comments (--,
 * nested C-style), read by sqllex.c's PostgreSQL dialect. `len` when
 * there is no such statement. */
static size_t pg_statement_start(const char *sql, size_t len, int index)
{
    size_t at = 0;
    bool in_statement = false;

    for (;;) {
        struct sqltok t = sqllex_next(sql, len, at, SQLLEX_POSTGRES);
        if (t.type == SQLTOK_EOF)
            return len;
        if (t.type == SQLTOK_SEMI) {
            in_statement = false;
        } else if (!in_statement) {
            if (index-- == 0)
                return t.pos;
            in_statement = true;
        }
        if (t.type == SQLTOK_ERROR)
            return len; /* the rest is one unterminated literal */
        at = t.pos + t.len;
    }
}

/* The byte offset of 1-based character position pos in UTF-8 text. */
static size_t utf8_offset(const char *s, size_t len, long pos)
{
    long chars = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xc0) != 0x80 && ++chars == pos)
            return i;
    }
    return len;
}

static int pg_script(void *h, const char *path, const char *sql, size_t len, char *err, size_t errlen)
{
    PGconn *conn = h;
    PGresult *res;
    int done = 0; /* statements that succeeded */
    bool failed = false;
    char msg[512] = "";
    size_t at = 0;

    if (!PQsendQuery(conn, sql)) {
        pg_error_text(conn, NULL, msg, sizeof msg);
        snprintf(err, errlen, "%s: %s", path, msg);
        return -1;
    }
    while ((res = PQgetResult(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (failed) {
            PQclear(res);
            continue;
        }
        switch (st) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
        case PGRES_EMPTY_QUERY: done++; break;
        case PGRES_COPY_IN: PQputCopyEnd(conn, "COPY FROM STDIN is not supported in migrations"); break;
        case PGRES_COPY_OUT: {
            char *row = NULL;
            while (PQgetCopyData(conn, &row, 0) > 0)
                PQfreemem(row);
            failed = true;
            snprintf(msg, sizeof msg, "COPY TO STDOUT is not supported in migrations");
            at = pg_statement_start(sql, len, done);
            break;
        }
        default: {
            const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
            failed = true;
            pg_error_text(conn, res, msg, sizeof msg);
            at = pos != NULL ? utf8_offset(sql, len, strtol(pos, NULL, 10))
                             : pg_statement_start(sql, len, done);
            break;
        }
        }
        PQclear(res);
    }
    if (!failed && PQstatus(conn) != CONNECTION_OK) {
        failed = true;
        pg_error_text(conn, NULL, msg, sizeof msg);
        at = pg_statement_start(sql, len, done);
    }
    if (!failed)
        return 0;
    snprintf(err, errlen, "%s:%d: %s", path, line_at(sql, at < len ? at : len), msg);
    return -1;
}

static int pg_record(void *h, const struct migration *m, bool add, char *err, size_t errlen)
{
    PGconn *conn = h;
    char version[32], at[32], msg[512];
    const char *values[4] = {version, m->name, m->checksum, at};
    PGresult *res;
    int rc = 0;

    snprintf(version, sizeof version, "%lld", m->version);
    iso_now(at);
    if (add)
        res = PQexecParams(conn,
                           "INSERT INTO " MIGRATE_TABLE " (version, name, checksum, applied_at) "
                           "VALUES ($1::bigint, $2::text, $3::text, $4::text)",
                           4, NULL, values, NULL, NULL, 0);
    else
        res = PQexecParams(conn, "DELETE FROM " MIGRATE_TABLE " WHERE version = $1::bigint", 1, NULL, values,
                           NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        pg_error_text(conn, res, msg, sizeof msg);
        snprintf(err, errlen, "recording %s in " MIGRATE_TABLE ": %s", m->file, msg);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

static const struct mdb_ops pg_mdb = {pg_begin, pg_end, pg_in_txn, pg_rows, pg_script, pg_record};

static void pg_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

PGconn *migrate_pg_connect(const struct bind_conf *bc, char *err, size_t errlen)
{
    size_t n = 0;
    bool has_timeout = false;
    const char **keys, **values;
    char timeout[16];
    PGconn *conn;

    while (bc->pg_keywords != NULL && bc->pg_keywords[n] != NULL) {
        if (strcmp(bc->pg_keywords[n], "connect_timeout") == 0)
            has_timeout = true;
        n++;
    }
    keys = calloc(n + 2, sizeof *keys);
    values = calloc(n + 2, sizeof *values);
    if (keys == NULL || values == NULL) {
        free(keys);
        free(values);
        snprintf(err, errlen, "bind %s: out of memory", bc->name);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        keys[i] = bc->pg_keywords[i];
        values[i] = bc->pg_values[i];
    }
    if (!has_timeout) {
        /* libpq counts whole seconds (at least 2). */
        snprintf(timeout, sizeof timeout, "%d", (bc->connect_timeout_ms + 999) / 1000);
        keys[n] = "connect_timeout";
        values[n] = timeout;
    }
    conn = PQconnectdbParams(keys, values, 0);
    free(keys);
    free(values);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        char msg[512];
        pg_error_text(conn, NULL, msg, sizeof msg);
        snprintf(err, errlen, "bind %s: cannot connect to %s: %s", bc->name, bc->url_redacted,
                 conn ? msg : "out of memory");
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, pg_quiet, NULL);
    return conn;
}

/* ---- The engine -------------------------------------------------------- */

/* Refuse to go on when an applied migration's file changed or is gone. */
static int check_applied(const char *bind, const struct migration_set *set, const struct migration_rows *rows,
                         char *err, size_t errlen)
{
    for (size_t i = 0; i < rows->n; i++) {
        const struct migration_row *r = &rows->items[i];
        const struct migration *m = set_find(set, r->version);
        if (m == NULL) {
            snprintf(err, errlen,
                     "bind %s: migration %lld (%s) is applied but %s has no file with that version; restore "
                     "the file",
                     bind, r->version, r->name, set->dir);
            return -1;
        }
        if (strcmp(m->checksum, r->checksum) != 0) {
            snprintf(err, errlen,
                     "%s: changed after it was applied to bind %s on %s (checksum %.12s..., now %.12s...); "
                     "restore it and put the change in a new migration",
                     m->up_path, bind, r->applied_at, r->checksum, m->checksum);
            return -1;
        }
    }
    return 0;
}

/* Apply (or with down, revert) one migration in its own locked
 * transaction. It is skipped when another run got there first. */
static int run_one(const struct mdb_ops *ops, void *h, const char *bind, const struct migration *m, bool down,
                   const struct migrate_notify *notify, char *err, size_t errlen)
{
    struct migration_rows now = {0};
    const struct migration_row *row;
    const char *sql = m->sql, *path = m->up_path;
    char *down_sql = NULL;
    size_t len = m->len;
    double t0 = now_ms();
    int rc = -1;

    if (down) {
        down_sql = read_all(m->down_path, &len);
        if (down_sql == NULL) {
            snprintf(err, errlen, "%s: cannot read: %s", m->down_path, strerror(errno));
            return -1;
        }
        sql = down_sql;
        path = m->down_path;
    }
    if (ops->begin(h, err, errlen) != 0)
        goto out;
    if (ops->rows(h, &now, err, errlen) != 0)
        goto rollback;
    row = rows_find(&now, m->version);
    if (!down && row != NULL) {
        /* Another run applied it while we waited for the lock. */
        if (strcmp(row->checksum, m->checksum) != 0) {
            snprintf(err, errlen, "%s: applied to bind %s by another run with a different checksum",
                     m->up_path, bind);
            goto rollback;
        }
        rc = ops->end(h, false, err, errlen);
        goto out;
    }
    if (down && row == NULL) {
        rc = ops->end(h, false, err, errlen);
        goto out;
    }
    if (ops->script(h, path, sql, len, err, errlen) != 0) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, " (bind %s stays at version %lld)", bind, rows_version(&now));
        goto rollback;
    }
    if (!ops->in_txn(h)) {
        snprintf(err, errlen,
                 "%s: the migration ended its transaction itself (COMMIT or ROLLBACK in the file); it is not "
                 "recorded and its changes may be partly committed",
                 path);
        goto rollback;
    }
    if (ops->record(h, m, !down, err, errlen) != 0)
        goto rollback;
    if (ops->end(h, true, err, errlen) != 0)
        goto out;
    if (notify != NULL && notify->done != NULL)
        notify->done(notify->arg, bind, m, down, now_ms() - t0);
    rc = 0;
    goto out;
rollback:
    ops->end(h, false, NULL, 0);
out:
    migrate_rows_free(&now);
    free(down_sql);
    return rc;
}

static int engine(const struct mdb_ops *ops, void *h, const char *bind, const struct migration_set *set,
                  enum migrate_op op, long long target, const struct migrate_notify *notify, char *err,
                  size_t errlen)
{
    struct migration_rows rows = {0};
    int rc = -1;

    /* Make the version table (under the lock), then plan from it. */
    if (ops->begin(h, err, errlen) != 0 || ops->end(h, true, err, errlen) != 0)
        return -1;
    if (ops->rows(h, &rows, err, errlen) != 0)
        goto out;
    for (size_t i = 0; i < rows.n; i++) {
        if (i > 0 && rows.items[i].version <= rows.items[i - 1].version) {
            snprintf(err, errlen, "bind %s: " MIGRATE_TABLE " is not ordered by version", bind);
            goto out;
        }
    }
    if (check_applied(bind, set, &rows, err, errlen) != 0)
        goto out;
    if (op == MIGRATE_UP) {
        for (size_t i = 0; i < set->n; i++) {
            const struct migration *m = &set->items[i];
            if (m->version > target)
                break;
            if (rows_find(&rows, m->version) == NULL &&
                run_one(ops, h, bind, m, false, notify, err, errlen) != 0)
                goto out;
        }
    } else {
        for (size_t i = rows.n; i-- > 0;) {
            const struct migration *m = set_find(set, rows.items[i].version);
            if (rows.items[i].version <= target)
                break;
            if (m->down_path == NULL) {
                snprintf(err, errlen, "%s: no down file (%.*s.down.sql) to revert it with", m->up_path,
                         (int)(strlen(m->file) - 4), m->file);
                goto out;
            }
            if (run_one(ops, h, bind, m, true, notify, err, errlen) != 0)
                goto out;
        }
    }
    rc = 0;
out:
    migrate_rows_free(&rows);
    return rc;
}

int migrate_sqlite(sqlite3 *db, const char *bind, const struct migration_set *set, enum migrate_op op,
                   long long target, const struct migrate_notify *notify, char *err, size_t errlen)
{
    return engine(&sqlite_mdb, db, bind, set, op, target, notify, err, errlen);
}

int migrate_pg(PGconn *conn, const char *bind, const struct migration_set *set, enum migrate_op op,
               long long target, const struct migrate_notify *notify, char *err, size_t errlen)
{
    return engine(&pg_mdb, conn, bind, set, op, target, notify, err, errlen);
}

/* ---- Start-up ---------------------------------------------------------- */

static void log_done(void *arg, const char *bind, const struct migration *m, bool down, double ms)
{
    (void)arg;
    log_info("bind %s: migration %s %s (%.0f ms)", bind, m->file, down ? "reverted" : "applied", ms);
}

int migrate_startup_sqlite(const struct config *cfg, const struct bind_conf *bc, sqlite3 *db, char *err,
                           size_t errlen)
{
    struct migrate_notify notify = {log_done, NULL};
    struct migration_set set;
    int rc;

    if (cfg->migrations == NULL)
        return 0;
    if (migrate_scan(cfg->migrations, bc->name, &set, err, errlen) != 0)
        return -1;
    rc = set.n == 0 ? 0 : migrate_sqlite(db, bc->name, &set, MIGRATE_UP, LLONG_MAX, &notify, err, errlen);
    migrate_set_free(&set);
    return rc;
}

int migrate_startup_pg(const struct config *cfg, const struct bind_conf *bc, char *err, size_t errlen)
{
    struct migrate_notify notify = {log_done, NULL};
    struct migration_set set;
    PGconn *conn;
    int rc;

    if (cfg->migrations == NULL)
        return 0;
    if (migrate_scan(cfg->migrations, bc->name, &set, err, errlen) != 0)
        return -1;
    if (set.n == 0) {
        migrate_set_free(&set);
        return 0;
    }
    conn = migrate_pg_connect(bc, err, errlen);
    rc = conn == NULL ? -1 : migrate_pg(conn, bc->name, &set, MIGRATE_UP, LLONG_MAX, &notify, err, errlen);
    PQfinish(conn);
    migrate_set_free(&set);
    return rc;
}
