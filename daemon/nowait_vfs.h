/*
 * The "sqlmux-nowait" SQLite VFS: the default unix VFS, except that reads
 * of a database or WAL file never wait for the disk. A read asks the
 * kernel for data already in the page cache (preadv2 with RWF_NOWAIT) and
 * fails with SQLITE_IOERR_READ when it would have to wait, so a statement
 * run through it either finishes from memory or fails at once. The loop
 * thread's quick-read connections use it; a statement that fails there
 * runs on a worker instead (which reads from the disk and so warms the
 * cache).
 *
 * POSIX record locks belong to a process and a file: closing any
 * descriptor of a file drops every lock the process holds on it, which
 * would silently unlock other connections' transactions. So the VFS reads
 * through descriptors of its own that it opens once per file (by device
 * and inode) and keeps open for the daemon's life, never closing one.
 *
 * Loop thread only: the quick-read connections are opened and used there.
 */
#ifndef SQLMUX_DAEMON_NOWAIT_VFS_H
#define SQLMUX_DAEMON_NOWAIT_VFS_H

#include <stddef.h>

#define NOWAIT_VFS_NAME "sqlmux-nowait"

/* Register the VFS (idempotent). Then check that reads of the existing
 * file at path can be made without waiting: 0, or -1 with why set (the
 * file system cannot, or the file cannot be opened). */
int nowait_vfs_check(const char *path, char *why, size_t whylen);

#endif
