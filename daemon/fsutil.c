/*
 * File-system helpers: folders and database files.
 */
#include "daemon/fsutil.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Make every folder named by a prefix of path that ends before a '/', and
 * path itself when `whole`. */
static int make_folders(const char *path, int whole)
{
    char tmp[PATH_MAX];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0750) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (whole && mkdir(tmp, 0750) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

int fs_mkdir_p(const char *dir)
{
    return make_folders(dir, 1);
}

int fs_mkdir_parents(const char *path)
{
    return make_folders(path, 0);
}

void fs_remove_db(const char *path)
{
    static const char *const suffixes[] = {"", "-journal", "-wal", "-shm"};
    char p[PATH_MAX + 16];

    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
        unlink(p);
    }
}
