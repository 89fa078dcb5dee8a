/*
 * Snapshots of an in-memory bind: a plain SQLite file that lets the bind
 * survive a restart when its config asks for one (`snapshot = FILE`).
 *
 * Saving copies the live database with the online backup API, a few pages
 * per step inside one read transaction (a consistent copy that never
 * blocks writers: the bind is in WAL mode), into FILE.tmp-PID, which is
 * fsynced and renamed over FILE, and the folder fsynced: a crash at any
 * moment leaves the old snapshot or the new one, never a torn file.
 * Loading checks the file (header, size, PRAGMA integrity_check) before
 * copying it into the bind; a damaged file stops the start or, with
 * snapshot_on_damage = move, is renamed to FILE.damaged-TIME.
 *
 * Both block and may run on any thread that owns the connection given.
 */
#ifndef SQLMUX_DAEMON_SNAPSHOT_H
#define SQLMUX_DAEMON_SNAPSHOT_H

#include <sqlite3.h>
#include <stdint.h>

#include "conf/config.h"

struct snapshot_info {
    int64_t bytes;      /* size of the file */
    int64_t written_at; /* when it was written (unix seconds) */
    double ms;          /* how long the save or load took */
};

/*
 * Load the snapshot at path into dest, an empty database. Returns 1 when
 * it was loaded (info filled), 0 when there is none (no file yet, or a
 * damaged one moved aside under SNAPSHOT_DAMAGE_MOVE, which is logged),
 * or -1 with err naming the file (damaged under SNAPSHOT_DAMAGE_FAIL, or
 * unreadable). Leftover temporary files of crashed saves are removed.
 */
__attribute__((warn_unused_result)) int snapshot_load(sqlite3 *dest, const char *bind, const char *path,
                                                      enum snapshot_damage on_damage,
                                                      struct snapshot_info *info, char *err, size_t errlen);

/*
 * Write src's main database to path, atomically. step_pages pages are
 * copied per backup step (-1: all at once) with pause_ms milliseconds
 * between steps. src must not be inside a transaction. 0 (info filled),
 * or -1 with err; the old snapshot is then untouched.
 */
__attribute__((warn_unused_result)) int snapshot_save(sqlite3 *src, const char *path, int step_pages,
                                                      int pause_ms, struct snapshot_info *info, char *err,
                                                      size_t errlen);

/* "2024-05-01T12:00:00Z" for unix seconds t, into out[32]. */
void snapshot_format_time(int64_t t, char out[32]);

#endif
