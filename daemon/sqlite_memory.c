/*
 * The in-memory bind's storage and its snapshots.
 *
 * The in-memory bind is a WAL database in a private folder on a RAM file
 * system (/dev/shm), made fresh at every start and removed at exit; an
 * anchor connection stays open for the daemon's life. SQLite's memdb VFS
 * would be the obvious choice, but a memdb write transaction locks out
 * every reader of the database until it ends, so one client's open
 * transaction would stall all others; WAL gives readers a consistent
 * snapshot while a writer works. A folder left by a crashed daemon is
 * removed at the next start.
 *
 * A bind with a snapshot file has a snapshot thread with its own
 * connection: it runs the JOB_SAVE_SNAPSHOTs of .save and of the
 * snapshot_interval timer, so a save never takes a connection from
 * clients (snapshot.c does the copying).
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/backend_sqlite.h"
#include "daemon/log.h"
#include "daemon/snapshot.h"

/* ---- Folder ------------------------------------------------------------ */

/* Where in-memory binds live: a RAM file system when there is one. */
static const char *memory_root(void)
{
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK | X_OK) == 0)
        return "/dev/shm";
    return P_tmpdir;
}

/* Remove folders of in-memory binds whose daemon is gone. */
static void memory_reap(const char *root)
{
    DIR *d = opendir(root);
    struct dirent *e;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        char path[4096], file[4096 + 256];
        long pid;
        char *end;
        DIR *sub;
        struct dirent *f;

        if (strncmp(e->d_name, "sqlmux-", 7) != 0)
            continue;
        pid = strtol(e->d_name + 7, &end, 10);
        if (end == e->d_name + 7 || *end != '-' || pid <= 0)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* alive, or not ours to judge */
        snprintf(path, sizeof path, "%s/%s", root, e->d_name);
        sub = opendir(path);
        if (sub == NULL)
            continue;
        while ((f = readdir(sub)) != NULL) {
            if (f->d_name[0] == '.')
                continue;
            snprintf(file, sizeof file, "%s/%s", path, f->d_name);
            unlink(file);
        }
        closedir(sub);
        if (rmdir(path) == 0)
            log_info("removed %s, left by a daemon that is gone", path);
    }
    closedir(d);
}

/* Make the private folder and file name of an in-memory bind. */
int sqlite_memory_create(struct sqlite_bind *sb, char *err, size_t errlen)
{
    const char *root = memory_root();
    const char *name = sb->bind->conf->name;
    char tmpl[4096];
    size_t n;

    memory_reap(root);
    snprintf(tmpl, sizeof tmpl, "%s/sqlmux-%ld-XXXXXX", root, (long)getpid());
    if (mkdtemp(tmpl) == NULL) {
        snprintf(err, errlen, "bind %s: cannot create a folder in %s: %s", name, root, strerror(errno));
        return -1;
    }
    sb->memdir = strdup(tmpl);
    n = strlen(tmpl) + strlen(name) + 8;
    sb->filename = malloc(n);
    if (sb->memdir == NULL || sb->filename == NULL) {
        snprintf(err, errlen, "bind %s: out of memory", name);
        return -1;
    }
    snprintf(sb->filename, n, "%s/%s.db", tmpl, name);
    return 0;
}

/* ---- Snapshots --------------------------------------------------------- */

/* Pages copied per backup step while clients work, and the pause between
 * steps, so a large save leaves the disk to others now and then. */
#define SNAPSHOT_STEP_PAGES 256
#define SNAPSHOT_PAUSE_MS   1

/* Save the snapshot for one JOB_SAVE_SNAPSHOT (snapshot thread). Its response
 * is one .save row, "=bind\tfile\tbytes\tms", or -ERR IOERR. */
static void run_snapshot(struct sqlite_bind *sb, struct job *job)
{
    const struct bind_conf *bc = sb->bind->conf;
    struct snapshot_info info;
    struct buf out = BUF_INIT;
    char err[1024];

    if (snapshot_save(sb->snap_db, bc->snapshot, SNAPSHOT_STEP_PAGES, SNAPSHOT_PAUSE_MS, &info, err,
                      sizeof err) == 0) {
        pthread_mutex_lock(&sb->lock);
        sb->snap_at = info.written_at;
        sb->snap_bytes = info.bytes;
        pthread_mutex_unlock(&sb->lock);
        atomic_store(&sb->snap_failed, false);
        log_info("bind %s: snapshot %s written: %lld bytes in %.0f ms", bc->name, bc->snapshot,
                 (long long)info.bytes, info.ms);
        struct codec_row r;
        char ms[32];

        snprintf(ms, sizeof ms, "%.0f", info.ms);
        codec_row_begin(&r, &out);
        codec_field_str(&r, bc->name);
        codec_field_str(&r, bc->snapshot);
        codec_field_int(&r, info.bytes);
        codec_field_raw(&r, ms, strlen(ms));
        if (codec_row_end(&r) != 0) {
            sqlite_reply_error(&out, "NOMEM", "out of memory");
            job->failed = true;
        }
        job->rows = 1;
    } else {
        atomic_store(&sb->snap_failed, true);
        log_warn("bind %s: %s", bc->name, err);
        sqlite_reply_error(&out, "IOERR", err);
        job->failed = true;
    }
    atomic_fetch_sub(&sb->snap_inflight, 1);
    job_post_done(job, &out);
}

static void *snapshot_main(void *arg)
{
    struct sqlite_bind *sb = arg;

    pthread_mutex_lock(&sb->lock);
    for (;;) {
        struct job *job = NULL;
        if (sb->snap_head != NULL)
            job = sqlite_queue_pop(&sb->snap_head, &sb->snap_tail);
        else if (sb->stopping)
            break;
        if (job == NULL) {
            pthread_cond_wait(&sb->cond, &sb->lock);
            continue;
        }
        pthread_mutex_unlock(&sb->lock);
        run_snapshot(sb, job);
        pthread_mutex_lock(&sb->lock);
    }
    pthread_mutex_unlock(&sb->lock);
    return NULL;
}

/* Every snapshot_interval seconds (loop thread): save the snapshot when
 * something was committed since the last timed save (or it failed), and
 * no save is queued or running. */
static void on_snapshot_tick(uv_timer_t *t)
{
    struct sqlite_bind *sb = t->data;
    sqlite3_stmt *stmt = NULL;
    long long version = -1;
    uint64_t writes = atomic_load_explicit(&sb->writes, memory_order_acquire);
    struct job *job;

    if (atomic_load(&sb->snap_inflight) > 0)
        return;
    /* The anchor sees data_version change when another connection commits. */
    if (sqlite3_prepare_v2(sb->anchor, "PRAGMA data_version", -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        version = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    /* data_version also moves when the checkpoint thread restarts or
     * empties the log: a change without a write job since the last save
     * (the first one covers what the start applied) is no new data. */
    if (version >= 0 && !atomic_load(&sb->snap_failed) &&
        (version == sb->snap_version || (sb->snap_version >= 0 && writes == sb->snap_writes)))
        return;
    job = job_new(JOB_SAVE_SNAPSHOT, sb->bind, NULL, 0);
    if (job == NULL)
        return;
    sb->snap_version = version;
    sb->snap_writes = writes;
    job->queued_at = uv_now(sb->bind->host->loop);
    sqlite_snapshot_submit(sb, job);
}

/* Start the snapshot thread (with its own connection) and the
 * snapshot_interval timer of an in-memory bind with a snapshot file. */
int sqlite_snapshot_start(struct sqlite_bind *sb, char *err, size_t errlen)
{
    const struct bind_conf *bc = sb->bind->conf;
    int rc;

    if (sqlite_conn_open(sb, &sb->snap_db, NULL, err, errlen) != 0)
        return -1;
    if (pthread_create(&sb->snap_thread, NULL, snapshot_main, sb) != 0) {
        snprintf(err, errlen, "bind %s: cannot start the snapshot thread", bc->name);
        return -1;
    }
    sb->snap_started = true;
    if (bc->snapshot_interval_s > 0) {
        uint64_t ms = (uint64_t)bc->snapshot_interval_s * 1000;
        sb->snap_timer = malloc(sizeof *sb->snap_timer);
        if (sb->snap_timer == NULL) {
            snprintf(err, errlen, "bind %s: out of memory", bc->name);
            return -1;
        }
        if ((rc = uv_timer_init(sb->bind->host->loop, sb->snap_timer)) != 0) {
            free(sb->snap_timer);
            sb->snap_timer = NULL;
            snprintf(err, errlen, "bind %s: cannot start its snapshot timer: %s", bc->name, uv_strerror(rc));
            return -1;
        }
        sb->snap_timer->data = sb;
        uv_update_time(sb->bind->host->loop); /* after a slow snapshot load or schema */
        uv_timer_start(sb->snap_timer, on_snapshot_tick, ms, ms);
    }
    return 0;
}

/* A JOB_SAVE_SNAPSHOT goes to the snapshot thread; a bind without a snapshot
 * file answers it at once. */
void sqlite_snapshot_submit(struct sqlite_bind *sb, struct job *job)
{
    if (!sb->snap_started) {
        job_fail(job, "ARGS", "this bind has no snapshot file");
        return;
    }
    atomic_fetch_add(&sb->snap_inflight, 1);
    pthread_mutex_lock(&sb->lock);
    *sb->snap_tail = job;
    sb->snap_tail = &job->next;
    pthread_cond_broadcast(&sb->cond);
    pthread_mutex_unlock(&sb->lock);
}
