/*
 * The migration engine: reading a bind's migration files, the version
 * table, and applying or reverting migrations one transaction at a time
 * on SQLite or PostgreSQL through one small adapter (struct mdb_ops,
 * migrate_int.h: migrate_sqlite.c and migrate_pg.c), and the start-up
 * runs. See migrate.h for the model; migrate_cli.c is the `sqlmuxd
 * migrate` command built on it.
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
#include <time.h>

#include "daemon/log.h"
#include "daemon/migrate_int.h"
#include "proto/codec.h"

/* ---- Small helpers ---------------------------------------------------- */

/* The whole file at path, NUL-terminated, in a new buffer; *len its size.
 * NULL with errno set on failure. */
char *migrate_read_all(const char *path, size_t *len)
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
int migrate_line_at(const char *s, size_t at)
{
    int line = 1;
    for (size_t i = 0; i < at; i++)
        if (s[i] == '\n')
            line++;
    return line;
}

void migrate_iso_now(char out[32])
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
        m->sql = migrate_read_all(m->up_path, &m->len);
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
        down_sql = migrate_read_all(m->down_path, &len);
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
    return engine(&migrate_sqlite_mdb, db, bind, set, op, target, notify, err, errlen);
}

int migrate_pg(PGconn *conn, const char *bind, const struct migration_set *set, enum migrate_op op,
               long long target, const struct migrate_notify *notify, char *err, size_t errlen)
{
    return engine(&migrate_pg_mdb, conn, bind, set, op, target, notify, err, errlen);
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
