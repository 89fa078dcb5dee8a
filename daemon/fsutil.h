/*
 * Small file-system helpers shared by the daemon, the migration command
 * and snapshots: making folders and removing a database with the files
 * SQLite keeps beside it.
 */
#ifndef SQLMUX_DAEMON_FSUTIL_H
#define SQLMUX_DAEMON_FSUTIL_H

#include <stddef.h>

/* Create the folder `dir` and any missing parents (mode 0750). 0, or -1
 * with errno set. */
int fs_mkdir_p(const char *dir);

/* Create the missing parent folders of the file `path`. 0, or -1 with
 * errno set. */
int fs_mkdir_parents(const char *path);

/* Remove the SQLite database `path` and its -journal, -wal and -shm files;
 * missing files are fine. */
void fs_remove_db(const char *path);

/* Replace the file `path` by data[0..len) durably: written to PATH.tmp,
 * fsync'ed, renamed over path, the folder fsync'ed. A crash leaves the old
 * file or the new one. 0, or -1 with errno set. */
int fs_write_durably(const char *path, const void *data, size_t len);

#endif
