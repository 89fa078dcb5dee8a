/*
 * Snapshot files of in-memory binds: atomic saves with the online backup
 * API, and checked loads. See snapshot.h for the guarantees.
 */
#include "daemon/fsutil.h"
#include "daemon/snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/log.h"

/* How long a step may keep retrying a busy source or destination. */
#define SNAPSHOT_BUSY_MS 10000

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

void snapshot_format_time(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The folder part of path (".": none), in dir[PATH_MAX]. */
static void dir_of(const char *path, char *dir)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        snprintf(dir, PATH_MAX, ".");
    else if (slash == path)
        snprintf(dir, PATH_MAX, "/");
    else
        snprintf(dir, PATH_MAX, "%.*s", (int)(slash - path), path);
}

static int fsync_path(const char *path, bool dir)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | (dir ? O_DIRECTORY : 0));
    int rc;

    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

/* Remove FILE.tmp-PID* left by saves of daemons that are gone (a crash
 * mid-save), and our own. */
static void remove_stale_temps(const char *path)
{
    char dir[PATH_MAX], file[PATH_MAX * 2];
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t blen = strlen(base);
    struct dirent *e;
    DIR *d;

    dir_of(path, dir);
    d = opendir(dir);
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid;
        if (strncmp(e->d_name, base, blen) != 0 || strncmp(e->d_name + blen, ".tmp-", 5) != 0)
            continue;
        pid = strtol(e->d_name + blen + 5, &end, 10);
        if (end == e->d_name + blen + 5 || pid <= 0)
            continue;
        if (pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
            continue; /* a live daemon's save in progress */
        snprintf(file, sizeof file, "%s/%s", dir, e->d_name);
        if (unlink(file) == 0)
            log_info("removed %s, left by an interrupted snapshot save", file);
    }
    closedir(d);
}

/* ---- Loading ----------------------------------------------------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Checks the database header against the file's size, which catches a
 * truncated (or empty) file that SQLite itself would open as a smaller or
 * empty database. 0, or -1 with why. */
static int check_header(const char *path, long long size, char *why, size_t n)
{
    unsigned char h[100];
    uint32_t page_size, pages;
    ssize_t got;
    int fd;

    if (size < (long long)sizeof h) {
        snprintf(why, n, "the file is %lld bytes long, too short for a database", size);
        return -1;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, n, "cannot read it: %s", strerror(errno));
        return -1;
    }
    got = read(fd, h, sizeof h);
    close(fd);
    if (got != (ssize_t)sizeof h) {
        snprintf(why, n, "cannot read its header");
        return -1;
    }
    if (memcmp(h, "SQLite format 3", 16) != 0) {
        snprintf(why, n, "it is not an SQLite database (bad header)");
        return -1;
    }
    page_size = (uint32_t)h[16] << 8 | h[17];
    if (page_size == 1)
        page_size = 65536;
    if (page_size < 512 || page_size > 65536 || (page_size & (page_size - 1)) != 0) {
        snprintf(why, n, "bad page size %u in its header", page_size);
        return -1;
    }
    pages = be32(h + 28);
    /* The page count is valid when "version-valid-for" matches the change
     * counter, as it always does in files SQLite 3.7+ wrote. */
    if (be32(h + 92) == be32(h + 24) && (long long)pages * page_size != size) {
        snprintf(why, n,
                 "its header says %u pages of %u bytes (%lld bytes) but the file has %lld: it was "
                 "truncated or overwritten",
                 pages, page_size, (long long)pages * page_size, size);
        return -1;
    }
    if (size % page_size != 0) {
        snprintf(why, n, "its size (%lld bytes) is not a whole number of %u-byte pages", size, page_size);
        return -1;
    }
    return 0;
}

/* PRAGMA integrity_check on db: 0 when it says "ok", else -1 with the
 * first problem in why. */
static int integrity(sqlite3 *db, char *why, size_t n)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check(5)", -1, &stmt, NULL);

    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const char *r = (const char *)sqlite3_column_text(stmt, 0);
        if (r != NULL && strcmp(r, "ok") == 0) {
            sqlite3_finalize(stmt);
            return 0;
        }
        snprintf(why, n, "integrity check: %s", r ? r : "(no answer)");
    } else {
        snprintf(why, n, "integrity check: %s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(stmt);
    return -1;
}

int snapshot_load(sqlite3 *dest, const char *bind, const char *path, enum snapshot_damage on_damage,
                  struct snapshot_info *info, char *err, size_t errlen)
{
    double t0 = now_ms();
    sqlite3 *src = NULL;
    sqlite3_backup *b;
    char why[512];
    struct stat st;
    int rc;

    remove_stale_temps(path);
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) {
            log_info("bind %s: no snapshot %s yet: starting empty", bind, path);
            return 0;
        }
        snprintf(err, errlen, "bind %s: snapshot %s: %s", bind, path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "bind %s: snapshot %s is not a regular file", bind, path);
        return -1;
    }
    if (check_header(path, (long long)st.st_size, why, sizeof why) != 0)
        goto damaged;
    rc = sqlite3_open_v2(path, &src, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        snprintf(why, sizeof why, "cannot open it: %s", src ? sqlite3_errmsg(src) : sqlite3_errstr(rc));
        goto damaged;
    }
    if (integrity(src, why, sizeof why) != 0)
        goto damaged;
    b = sqlite3_backup_init(dest, "main", src, "main");
    if (b == NULL) {
        snprintf(err, errlen, "bind %s: loading snapshot %s: %s", bind, path, sqlite3_errmsg(dest));
        sqlite3_close(src);
        return -1;
    }
    rc = sqlite3_backup_step(b, -1);
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE) {
        snprintf(why, sizeof why, "copying it: %s", sqlite3_errstr(rc));
        if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB)
            goto damaged;
        snprintf(err, errlen, "bind %s: loading snapshot %s: %s", bind, path, why);
        sqlite3_close(src);
        return -1;
    }
    sqlite3_close(src);
    info->bytes = (int64_t)st.st_size;
    info->written_at = (int64_t)st.st_mtime;
    info->ms = now_ms() - t0;
    return 1;

damaged:
    sqlite3_close(src);
    if (on_damage == SNAPSHOT_DAMAGE_FAIL) {
        snprintf(err, errlen,
                 "bind %s: snapshot %s is damaged: %s; the bind was not started (move the file away, or set "
                 "snapshot_on_damage = move to set damaged snapshots aside and start empty)",
                 bind, path, why);
        return -1;
    }
    {
        char stamp[32], aside[PATH_MAX + 64];
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
        snprintf(aside, sizeof aside, "%s.damaged-%s", path, stamp);
        if (rename(path, aside) != 0) {
            snprintf(err, errlen, "bind %s: snapshot %s is damaged (%s) and cannot be moved to %s: %s", bind,
                     path, why, aside, strerror(errno));
            return -1;
        }
        log_warn("bind %s: snapshot %s is damaged: %s; moved to %s, starting empty", bind, path, why, aside);
    }
    return 0;
}

/* ---- Saving ------------------------------------------------------------ */

int snapshot_save(sqlite3 *src, const char *path, int step_pages, int pause_ms, struct snapshot_info *info,
                  char *err, size_t errlen)
{
    double t0 = now_ms(), busy_since = 0;
    char tmp[PATH_MAX + 32], dir[PATH_MAX];
    sqlite3 *dst = NULL;
    sqlite3_backup *b = NULL;
    sqlite3_stmt *stmt = NULL;
    const char *mode = NULL;
    struct stat st;
    int rc;

    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    fs_remove_db(tmp);
    if (fs_mkdir_parents(path) != 0) {
        snprintf(err, errlen, "snapshot %s: cannot create its folder: %s", path, strerror(errno));
        return -1;
    }
    rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "snapshot %s: cannot create %s: %s", path, tmp,
                 dst ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
        goto fail;
    }
    /* One read transaction for the whole copy: the backup then copies one
     * consistent state and is not restarted by other connections' writes,
     * which go on meanwhile (WAL). */
    if (sqlite3_exec(src, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(src, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "snapshot %s: cannot read the database: %s", path, sqlite3_errmsg(src));
        goto fail;
    }
    b = sqlite3_backup_init(dst, "main", src, "main");
    if (b == NULL) {
        snprintf(err, errlen, "snapshot %s: %s", path, sqlite3_errmsg(dst));
        goto fail;
    }
    for (;;) {
        rc = sqlite3_backup_step(b, step_pages);
        if (rc == SQLITE_DONE)
            break;
        if (rc == SQLITE_OK) {
            busy_since = 0;
            if (pause_ms > 0)
                sleep_ms(pause_ms);
            continue;
        }
        if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
            if (busy_since == 0)
                busy_since = now_ms();
            if (now_ms() - busy_since < SNAPSHOT_BUSY_MS) {
                sleep_ms(10);
                continue;
            }
        }
        break;
    }
    sqlite3_backup_finish(b);
    b = NULL;
    sqlite3_exec(src, "ROLLBACK", NULL, NULL, NULL); /* end the read transaction */
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "snapshot %s: copying: %s", path, sqlite3_errstr(rc));
        goto fail;
    }
    /* The copy carries the WAL flag of the live database; make the file
     * stand alone (no -wal or -shm needed to read it). */
    if (sqlite3_prepare_v2(dst, "PRAGMA journal_mode = DELETE", -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        mode = (const char *)sqlite3_column_text(stmt, 0);
    if (mode == NULL || strcmp(mode, "delete") != 0) {
        snprintf(err, errlen, "snapshot %s: cannot leave WAL mode: %s", path, sqlite3_errmsg(dst));
        sqlite3_finalize(stmt);
        goto fail;
    }
    sqlite3_finalize(stmt);
    if (sqlite3_close(dst) != SQLITE_OK) {
        snprintf(err, errlen, "snapshot %s: closing %s: %s", path, tmp, sqlite3_errmsg(dst));
        goto fail;
    }
    dst = NULL;
    if (fsync_path(tmp, false) != 0) {
        snprintf(err, errlen, "snapshot %s: fsync %s: %s", path, tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "snapshot %s: rename from %s: %s", path, tmp, strerror(errno));
        goto fail;
    }
    dir_of(path, dir);
    if (fsync_path(dir, true) != 0)
        log_warn("snapshot %s: fsync of its folder: %s", path, strerror(errno));
    fs_remove_db(tmp);
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "snapshot %s: %s", path, strerror(errno));
        return -1;
    }
    info->bytes = (int64_t)st.st_size;
    info->written_at = (int64_t)time(NULL);
    info->ms = now_ms() - t0;
    return 0;

fail:
    if (b != NULL)
        sqlite3_backup_finish(b);
    if (!sqlite3_get_autocommit(src))
        sqlite3_exec(src, "ROLLBACK", NULL, NULL, NULL);
    if (dst != NULL)
        sqlite3_close(dst);
    fs_remove_db(tmp);
    return -1;
}
