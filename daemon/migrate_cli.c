/*
 * `sqlmuxd migrate`: migration status, upgrade and downgrade per bind,
 * run from the command line against the binds of a config file (while the
 * daemon runs or not), as `flask db upgrade` does for each database of a
 * multidb setup.
 *
 *   sqlmuxd migrate CONFIG [status]             every bind: version, files and their state
 *   sqlmuxd migrate CONFIG up [VERSION]         apply pending migrations (up to VERSION)
 *   sqlmuxd migrate CONFIG down VERSION --bind NAME
 *                                               revert NAME's migrations above VERSION
 *   --bind NAME                                 only that bind
 *
 * A file bind whose database does not exist yet is created as the daemon
 * would (WAL mode, its schema file) before `up`. In-memory binds live in
 * the daemon only: it migrates them at every start, so they are listed
 * but not touched. Exit status: 0, 1 on any error (or an applied file that
 * changed, for status), 2 for bad usage.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/fsutil.h"
#include "daemon/migrate.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: sqlmuxd migrate CONFIG [status | up [VERSION] | down VERSION] [--bind NAME]\n"
               "\n"
               "  status        show each bind's applied and pending migrations (the default)\n"
               "  up [VERSION]  apply pending migrations, all or up to VERSION\n"
               "  down VERSION  revert the migrations above VERSION with their down files\n"
               "                (needs --bind; VERSION 0 reverts them all)\n"
               "  --bind NAME   only this bind\n");
}

static bool parse_version(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (s[0] == '\0' || *end != '\0' || errno != 0 || v < 0)
        return false;
    *out = v;
    return true;
}

static void print_done(void *arg, const char *bind, const struct migration *m, bool down, double ms)
{
    (void)arg;
    printf("bind %s: %s %s (%.0f ms)\n", bind, down ? "reverted" : "applied", m->file, ms);
    fflush(stdout);
}

/* ---- Opening binds ---------------------------------------------------- */

/* Open a file bind's database. A missing file is NULL with *missing set
 * when !create; with create it is made as the daemon makes it. NULL with
 * err on failure. */
static sqlite3 *open_file_bind(const struct bind_conf *bc, bool create, bool *missing, char *err,
                               size_t errlen)
{
    struct stat st;
    bool is_new = stat(bc->path, &st) != 0;
    sqlite3 *db = NULL;

    *missing = false;
    if (is_new && !create) {
        *missing = true;
        return NULL;
    }
    if (is_new && fs_mkdir_parents(bc->path) != 0) {
        snprintf(err, errlen, "bind %s: cannot create the folder of %s: %s", bc->name, bc->path,
                 strerror(errno));
        return NULL;
    }
    if (sqlite3_open_v2(bc->path, &db, SQLITE_OPEN_READWRITE | (is_new ? SQLITE_OPEN_CREATE : 0), NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "bind %s: cannot open %s: %s", bc->name, bc->path,
                 db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, bc->busy_timeout_ms);
    if (is_new) {
        bool applied = false;
        if (migrate_sqlite_setup(db, bc->name, bc->path, bc->schema, bc->busy_timeout_ms, &applied, err,
                                 errlen) != 0) {
            sqlite3_close(db);
            return NULL;
        }
        if (applied)
            printf("bind %s: created %s with schema %s\n", bc->name, bc->path, bc->schema);
    }
    return db;
}

/* ---- Commands ----------------------------------------------------------- */

struct print_state {
    int changed; /* files applied and changed since, or missing */
    int pending;
};

static int print_row(void *arg, long long version, const char *name, const char *state,
                     const char *applied_at)
{
    struct print_state *ps = arg;
    printf("  %04lld  %-32s %-8s %s\n", version, name, state, applied_at ? applied_at : "");
    if (strcmp(state, "pending") == 0)
        ps->pending++;
    else if (strcmp(state, "applied") != 0)
        ps->changed++;
    return 0;
}

static long long top_version(const struct migration_rows *rows)
{
    return rows->n ? rows->items[rows->n - 1].version : 0;
}

/* Status of one bind; 0, or 1 when it cannot be read or has changed files. */
static int bind_status(const struct bind_conf *bc, const struct migration_set *set, const char *where,
                       sqlite3 *db, PGconn *pg, bool missing)
{
    struct migration_rows rows = {0};
    struct print_state ps = {0, 0};
    char err[1024];
    int rc = 0;

    if (db != NULL && migrate_sqlite_rows(db, &rows, err, sizeof err) != 0) {
        fprintf(stderr, "bind %s: %s\n", bc->name, err);
        return 1;
    }
    if (pg != NULL && migrate_pg_rows(pg, &rows, err, sizeof err) != 0) {
        fprintf(stderr, "bind %s: %s\n", bc->name, err);
        return 1;
    }
    printf("bind %s (%s): ", bc->name, where);
    if (bc->type == BIND_SQLITE_MEMORY)
        printf("in memory; the daemon applies its migrations at every start\n");
    else if (missing)
        printf("the database file does not exist yet\n");
    else
        printf("version %lld\n", top_version(&rows));
    (void)migrate_status_each(set, &rows, print_row, &ps);
    if (set->n == 0 && rows.n == 0)
        printf("  (no migrations in %s)\n", set->dir);
    if (ps.changed > 0) {
        fprintf(stderr, "bind %s: %d applied migration%s changed or missing; `up` and `down` refuse to run\n",
                bc->name, ps.changed, ps.changed == 1 ? " is" : "s are");
        rc = 1;
    }
    migrate_rows_free(&rows);
    return rc;
}

enum cli_op { CLI_STATUS, CLI_UP, CLI_DOWN };

/* One bind; returns 0 or 1. */
static int run_bind(const struct config *cfg, const struct bind_conf *bc, enum cli_op op, long long target,
                    bool explicit)
{
    struct migrate_notify notify = {print_done, NULL};
    struct migration_set set;
    sqlite3 *db = NULL;
    PGconn *pg = NULL;
    bool missing = false;
    char err[2048];
    const char *where = bc->type == BIND_SQLITE_FILE ? bc->path
                        : bc->type == BIND_POSTGRES  ? bc->url_redacted
                                                     : "sqlite in memory";
    int rc = 1;

    if (migrate_scan(cfg->migrations, bc->name, &set, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (bc->type == BIND_SQLITE_MEMORY) {
        if (op == CLI_STATUS) {
            rc = bind_status(bc, &set, where, NULL, NULL, false);
        } else if (explicit) {
            fprintf(stderr, "bind %s is in memory: the daemon migrates it at every start\n", bc->name);
        } else {
            printf("bind %s: in memory, skipped (the daemon migrates it at every start)\n", bc->name);
            rc = 0;
        }
        goto out;
    }
    if (op != CLI_STATUS && set.n == 0 && !explicit) {
        printf("bind %s: no migrations in %s\n", bc->name, set.dir);
        rc = 0;
        goto out;
    }
    if (bc->type == BIND_POSTGRES)
        pg = migrate_pg_connect(bc, err, sizeof err);
    else
        db = open_file_bind(bc, op == CLI_UP, &missing, err, sizeof err);
    if (pg == NULL && db == NULL && !missing) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    if (op == CLI_STATUS) {
        rc = bind_status(bc, &set, where, db, pg, missing);
    } else if (missing) {
        fprintf(stderr, "bind %s: %s does not exist: nothing to revert\n", bc->name, bc->path);
    } else {
        enum migrate_op mop = op == CLI_UP ? MIGRATE_UP : MIGRATE_DOWN;
        struct migration_rows rows = {0};
        int mrc = db ? migrate_sqlite(db, bc->name, &set, mop, target, &notify, err, sizeof err)
                     : migrate_pg(pg, bc->name, &set, mop, target, &notify, err, sizeof err);
        if (mrc != 0) {
            fprintf(stderr, "%s\n", err);
        } else if ((db ? migrate_sqlite_rows(db, &rows, err, sizeof err)
                       : migrate_pg_rows(pg, &rows, err, sizeof err)) != 0) {
            fprintf(stderr, "bind %s: %s\n", bc->name, err);
        } else {
            printf("bind %s: at version %lld\n", bc->name, top_version(&rows));
            rc = 0;
        }
        migrate_rows_free(&rows);
    }
out:
    if (db != NULL)
        sqlite3_close(db);
    PQfinish(pg);
    migrate_set_free(&set);
    return rc;
}

int migrate_main(int argc, char **argv)
{
    const char *path = NULL, *bind = NULL;
    enum cli_op op = CLI_STATUS;
    bool have_op = false, have_version = false;
    long long target = LLONG_MAX;
    struct config *cfg = NULL;
    char err[1024];
    int rc = 0;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--bind") == 0 && i + 1 < argc) {
            bind = argv[++i];
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (a[0] == '-') {
            usage(stderr);
            return 2;
        } else if (path == NULL) {
            path = a;
        } else if (!have_op && (strcmp(a, "status") == 0 || strcmp(a, "up") == 0 || strcmp(a, "down") == 0)) {
            op = a[0] == 's' ? CLI_STATUS : a[0] == 'u' ? CLI_UP : CLI_DOWN;
            have_op = true;
        } else if (have_op && op != CLI_STATUS && !have_version && parse_version(a, &target)) {
            have_version = true;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (path == NULL || (op == CLI_DOWN && !have_version)) {
        usage(stderr);
        return 2;
    }
    if (op == CLI_DOWN && bind == NULL) {
        fprintf(stderr, "sqlmuxd migrate: down needs --bind NAME (versions are per bind)\n");
        return 2;
    }
    if (config_load(path, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (size_t i = 0; i < cfg->nwarnings; i++)
        fprintf(stderr, "%s\n", cfg->warnings[i]);
    if (cfg->migrations == NULL) {
        fprintf(stderr, "%s: no migrations folder: set migrations = DIR under [server]\n", cfg->path);
        config_free(cfg);
        return 1;
    }
    if (bind != NULL) {
        int i = config_bind_index(cfg, bind);
        if (i < 0) {
            fprintf(stderr, "%s: no bind named '%s'\n", cfg->path, bind);
            config_free(cfg);
            return 1;
        }
        rc = run_bind(cfg, &cfg->binds[i], op, target, true);
    } else {
        for (size_t i = 0; i < cfg->nbinds; i++) {
            if (run_bind(cfg, &cfg->binds[i], op, target, false) != 0) {
                rc = 1;
                if (op != CLI_STATUS)
                    break; /* later binds are left as they are */
            }
        }
    }
    config_free(cfg);
    return rc;
}
