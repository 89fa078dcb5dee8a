/*
 * The "sqlmux-nowait" VFS (see nowait_vfs.h). It is a copy of the default
 * VFS whose xOpen wraps each database and WAL file: the file's method table
 * is the default one with xRead replaced, and the VFS's own data (the
 * descriptor it reads through) sits after the default VFS's file struct.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include "daemon/nowait_vfs.h"

/* Files read through this VFS in the daemon's life, at most. */
#define HELD_MAX 64

/* A descriptor kept open for reading one file (never closed: see the
 * header). ram: the file lives in memory (tmpfs), where a read cannot wait
 * for a disk and RWF_NOWAIT is not supported. */
struct held {
    dev_t dev;
    ino_t ino;
    int fd;
    bool ram;
};

/* What the VFS keeps after the default VFS's file struct. */
struct extra {
    int fd; /* -1: not a database or WAL file */
    bool ram;
    const sqlite3_io_methods *orig; /* the default VFS's methods */
};

/* The VFS's state is process-wide on purpose (server.h): SQLite keeps
 * one list of VFSes per process, and a file's descriptor must be kept
 * once per process, whatever binds or servers open it, because the locks
 * that closing one would drop are the process's. Loop thread only. */
static struct held held[HELD_MAX];
static size_t nheld;
static sqlite3_vfs vfs;
static sqlite3_vfs *root;
static size_t extra_at; /* offset of struct extra in a file */
static bool registered;

/* The default VFS has a few method tables (by locking style); each gets a
 * copy with our xRead. */
static struct {
    const sqlite3_io_methods *orig;
    sqlite3_io_methods ours;
} tables[4];
static size_t ntables;

static struct extra *extra_of(sqlite3_file *f)
{
    return (struct extra *)(void *)((char *)f + extra_at);
}

/* The descriptor held for the file at path, opened at its first use. */
static const struct held *held_for(const char *path)
{
    struct stat st;
    struct statfs fs;
    struct held *h;
    int fd;

    if (stat(path, &st) == 0)
        for (size_t i = 0; i < nheld; i++)
            if (held[i].dev == st.st_dev && held[i].ino == st.st_ino)
                return &held[i];
    if (nheld == HELD_MAX) {
        errno = EMFILE;
        return NULL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    h = &held[nheld++]; /* kept even if fstat fails: it is never closed */
    h->fd = fd;
    if (fstat(fd, &st) != 0)
        return NULL;
    h->dev = st.st_dev;
    h->ino = st.st_ino;
    h->ram = fstatfs(fd, &fs) == 0 && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC);
    return h;
}

static int nowait_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
    const struct extra *x = extra_of(f);
    struct iovec iov = {buf, (size_t)amt};
    struct stat st;
    ssize_t n;

    if (x->fd < 0 || x->ram)
        return x->orig->xRead(f, buf, amt, off);
    do
        n = preadv2(x->fd, &iov, 1, off, RWF_NOWAIT);
    while (n < 0 && errno == EINTR);
    if (n == amt)
        return SQLITE_OK;
    if (n < 0)
        return SQLITE_IOERR_READ; /* EAGAIN: not in the page cache */
    /* Short: past the end of the file (as the default VFS: zero-fill), or
     * only part of it is cached. */
    if (fstat(x->fd, &st) == 0 && off + n >= st.st_size) {
        memset((char *)buf + n, 0, (size_t)(amt - n));
        return SQLITE_IOERR_SHORT_READ;
    }
    return SQLITE_IOERR_READ;
}

static const sqlite3_io_methods *table_for(const sqlite3_io_methods *orig)
{
    for (size_t i = 0; i < ntables; i++)
        if (tables[i].orig == orig)
            return &tables[i].ours;
    if (ntables == sizeof tables / sizeof tables[0])
        return NULL;
    tables[ntables].orig = orig;
    tables[ntables].ours = *orig;
    tables[ntables].ours.xRead = nowait_read;
    return &tables[ntables++].ours;
}

static int nowait_open(sqlite3_vfs *self, sqlite3_filename name, sqlite3_file *f, int flags, int *outflags)
{
    struct extra *x = extra_of(f);
    const sqlite3_io_methods *ours;
    int rc;

    (void)self;
    rc = root->xOpen(root, name, f, flags, outflags);
    if (rc != SQLITE_OK || f->pMethods == NULL)
        return rc;
    x->fd = -1;
    x->ram = false;
    x->orig = f->pMethods;
    if (name != NULL && (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL)) != 0) {
        const struct held *h = held_for(name);
        if (h == NULL) {
            x->orig->xClose(f);
            f->pMethods = NULL;
            return SQLITE_CANTOPEN;
        }
        x->fd = h->fd;
        x->ram = h->ram;
    }
    ours = table_for(x->orig);
    if (ours == NULL) {
        x->orig->xClose(f);
        f->pMethods = NULL;
        return SQLITE_CANTOPEN;
    }
    f->pMethods = ours;
    return SQLITE_OK;
}

static int nowait_register(void)
{
    if (registered)
        return 0;
    root = sqlite3_vfs_find(NULL);
    if (root == NULL)
        return -1;
    vfs = *root;
    vfs.pNext = NULL;
    vfs.zName = NOWAIT_VFS_NAME;
    extra_at = ((size_t)root->szOsFile + _Alignof(struct extra) - 1) & ~(_Alignof(struct extra) - 1);
    vfs.szOsFile = (int)(extra_at + sizeof(struct extra));
    vfs.xOpen = nowait_open;
    if (sqlite3_vfs_register(&vfs, 0) != SQLITE_OK)
        return -1;
    registered = true;
    return 0;
}

int nowait_vfs_check(const char *path, char *why, size_t whylen)
{
    const struct held *h;
    char byte;
    struct iovec iov = {&byte, 1};
    ssize_t n;

    if (nowait_register() != 0) {
        snprintf(why, whylen, "cannot register the %s SQLite VFS", NOWAIT_VFS_NAME);
        return -1;
    }
    h = held_for(path);
    if (h == NULL) {
        snprintf(why, whylen, "cannot open %s for reading: %s", path, strerror(errno));
        return -1;
    }
    if (h->ram)
        return 0;
    n = preadv2(h->fd, &iov, 1, 0, RWF_NOWAIT);
    if (n < 0 && errno != EAGAIN) {
        snprintf(why, whylen, "its file system cannot read without waiting for the disk (RWF_NOWAIT: %s)",
                 strerror(errno));
        return -1;
    }
    return 0;
}
