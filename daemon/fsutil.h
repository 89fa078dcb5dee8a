/*
 * Small file-system helpers shared by the daemon, the migration command
 * and snapshots: making folders and removing a database with the files
 * SQLite keeps beside it.
 */
#ifndef SQLMUX_DAEMON_FSUTIL_H
#define SQLMUX_DAEMON_FSUTIL_H

/* Create the folder `dir` and any missing parents (mode 0750). 0, or -1
 * with errno set. */
int fs_mkdir_p(const char *dir);

/* Create the missing parent folders of the file `path`. 0, or -1 with
 * errno set. */
int fs_mkdir_parents(const char *path);

/* Remove the SQLite database `path` and its -journal, -wal and -shm files;
 * missing files are fine. */
void fs_remove_db(const char *path);

#endif
