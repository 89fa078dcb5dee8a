/*
 * The coordinator log's file format and I/O (see xact_log.h for the
 * layout and the one torn-record rule).
 */
#include "daemon/xact_log.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static const unsigned char log_magic[8] = {'S', 'Q', 'L', 'M', 'U', 'X', 'X', 'L'};
#define LOG_VERSION  1u
#define HEADER_BYTES ((unsigned)XACT_LOG_HEADER)
#define REC_HEAD     12u

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static bool zeros(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

static uint32_t checksum(const unsigned char *p, size_t n)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

/* Frame a payload into a record: head + payload. */
static unsigned char *frame(unsigned char *rec, size_t payload_len)
{
    put_u32(rec, (uint32_t)payload_len);
    put_u32(rec + 4, ~(uint32_t)payload_len);
    put_u32(rec + 8, checksum(rec + REC_HEAD, payload_len));
    return rec;
}

int xact_log_encode_commit(uint64_t txid, const struct xact_part *parts, size_t n, unsigned char **out,
                           size_t *outlen)
{
    size_t len = 1 + 8 + 2;
    unsigned char *rec, *p;

    if (n > UINT16_MAX)
        return -1;
    for (size_t i = 0; i < n; i++) {
        size_t name = strlen(parts[i].bind);
        if (name > UINT16_MAX || parts[i].len > XACT_LOG_MAX_RECORD)
            return -1;
        len += 2 + name + 1 + 4 + parts[i].len;
    }
    if (len > XACT_LOG_MAX_RECORD)
        return -1;
    rec = malloc(REC_HEAD + len);
    if (rec == NULL)
        return -1;
    p = rec + REC_HEAD;
    *p++ = XACT_REC_COMMIT;
    put_u64(p, txid);
    p += 8;
    put_u16(p, (uint16_t)n);
    p += 2;
    for (size_t i = 0; i < n; i++) {
        size_t name = strlen(parts[i].bind);
        put_u16(p, (uint16_t)name);
        p += 2;
        memcpy(p, parts[i].bind, name);
        p += name;
        *p++ = (unsigned char)parts[i].flags;
        put_u32(p, (uint32_t)parts[i].len);
        p += 4;
        if (parts[i].len > 0)
            memcpy(p, parts[i].change, parts[i].len);
        p += parts[i].len;
    }
    *out = frame(rec, len);
    *outlen = REC_HEAD + len;
    return 0;
}

void xact_entries_free_parts(struct xact_entry *e)
{
    for (size_t j = 0; j < e->nparts; j++) {
        free(e->parts[j].bind);
        free(e->parts[j].change);
    }
    free(e->parts);
    e->parts = NULL;
    e->nparts = 0;
}

void xact_entries_free(struct xact_entry *entries, size_t n)
{
    for (size_t i = 0; i < n; i++)
        xact_entries_free_parts(&entries[i]);
    free(entries);
}

/* Decode a COMMIT payload's parts (after type and txid) into e. 0, or -1
 * with *why set. */
static int parse_parts(const unsigned char *p, size_t len, struct xact_entry *e, const char **why)
{
    const unsigned char *end = p + len;
    size_t n;

    if (len < 2) {
        *why = "a decision record without its part count";
        return -1;
    }
    n = get_u16(p);
    p += 2;
    e->parts = calloc(n ? n : 1, sizeof *e->parts);
    if (e->parts == NULL) {
        *why = "out of memory";
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct xact_part *pt = &e->parts[i];
        size_t name, cs;
        if (end - p < 2 || (size_t)(end - p) < 2u + (name = get_u16(p)) + 5u || name == 0) {
            *why = "a part of a decision record is cut short";
            return -1;
        }
        p += 2;
        pt->bind = strndup((const char *)p, name);
        p += name;
        pt->flags = *p++;
        cs = get_u32(p);
        p += 4;
        e->nparts++;
        if (pt->bind == NULL) {
            *why = "out of memory";
            return -1;
        }
        if ((size_t)(end - p) < cs) {
            *why = "a changeset of a decision record is cut short";
            return -1;
        }
        if (cs > 0) {
            pt->change = malloc(cs);
            if (pt->change == NULL) {
                *why = "out of memory";
                return -1;
            }
            memcpy(pt->change, p, cs);
        }
        pt->len = cs;
        p += cs;
    }
    if (p != end) {
        *why = "a decision record has bytes after its last part";
        return -1;
    }
    return 0;
}

int xact_log_decode(const unsigned char *rec, size_t len, struct xact_entry *e, const char **why)
{
    size_t plen;

    memset(e, 0, sizeof *e);
    if (len < REC_HEAD + 9 || (plen = get_u32(rec)) != len - REC_HEAD ||
        get_u32(rec + 4) != ~(uint32_t)plen || get_u32(rec + 8) != checksum(rec + REC_HEAD, plen) ||
        rec[REC_HEAD] != XACT_REC_COMMIT) {
        *why = "a decision record fails its checks";
        return -1;
    }
    e->txid = get_u64(rec + REC_HEAD + 1);
    return parse_parts(rec + REC_HEAD + 9, plen - 9, e, why);
}

int xact_log_parse(const unsigned char *data, size_t len, const char *name, struct xact_entry **entries,
                   size_t *nentries, uint64_t *max_txid, bool *torn, size_t *valid_end, char *err,
                   size_t errlen)
{
    struct xact_entry *list = NULL;
    size_t n = 0, cap = 0, off = HEADER_BYTES;
    const char *why = NULL;

    *entries = NULL;
    *nentries = 0;
    *max_txid = 0;
    *torn = false;
    *valid_end = HEADER_BYTES;
    if (len < HEADER_BYTES || memcmp(data, log_magic, sizeof log_magic) != 0) {
        snprintf(err, errlen,
                 "%s: not a coordinator log (%s); the file must be repaired or restored from a backup, never "
                 "guessed at",
                 name, len < HEADER_BYTES ? "shorter than its header" : "wrong magic");
        return -1;
    }
    if (get_u32(data + 8) != LOG_VERSION) {
        snprintf(err, errlen, "%s: coordinator log version %u, this daemon reads version %u", name,
                 get_u32(data + 8), LOG_VERSION);
        return -1;
    }
    while (off < len) {
        size_t left = len - off, plen;
        const unsigned char *p;
        uint64_t txid;

        if (left < REC_HEAD) {
            if (!zeros(data + off, left))
                *torn = true; /* the file ends inside the last record's head */
            break;
        }
        if (zeros(data + off, REC_HEAD)) {
            /* The end of the records: the rest is the zeroed room. */
            if (!zeros(data + off, left)) {
                why = "bytes follow the end of the records";
                goto corrupt;
            }
            break;
        }
        plen = get_u32(data + off);
        if (get_u32(data + off + 4) != ~(uint32_t)plen || plen < 9 || plen > XACT_LOG_MAX_RECORD) {
            if (zeros(data + off + REC_HEAD, left - REC_HEAD)) {
                *torn = true; /* a head written in part, nothing after it */
                break;
            }
            why = "a record's length is damaged";
            goto corrupt;
        }
        if (left - REC_HEAD < plen) {
            *torn = true; /* the file ends inside the last record */
            break;
        }
        p = data + off + REC_HEAD;
        if (get_u32(data + off + 8) != checksum(p, plen)) {
            if (zeros(p + plen, left - REC_HEAD - plen)) {
                *torn = true; /* the last record, written in part */
                break;
            }
            why = "a record's checksum does not match (records follow it: not a torn append)";
            goto corrupt;
        }
        txid = get_u64(p + 1);
        if (txid > *max_txid)
            *max_txid = txid;
        if (p[0] == XACT_REC_COMMIT) {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                struct xact_entry *grown = realloc(list, ncap * sizeof *grown);
                if (grown == NULL) {
                    why = "out of memory";
                    goto corrupt;
                }
                list = grown;
                cap = ncap;
            }
            memset(&list[n], 0, sizeof list[n]);
            list[n].txid = txid;
            n++;
            if (parse_parts(p + 9, plen - 9, &list[n - 1], &why) != 0)
                goto corrupt;
        } else {
            why = "a record of unknown type";
            goto corrupt;
        }
        off += REC_HEAD + plen;
        *valid_end = off;
    }
    *entries = list;
    *nentries = n;
    return 0;
corrupt:
    snprintf(
        err, errlen,
        "%s: offset %zu: %s; the coordinator log is damaged and the outcome of transactions across binds "
        "cannot be known: repair or restore it (never guessed at)",
        name, off, why);
    xact_entries_free(list, n);
    return -1;
}

/* fsync the folder holding path, so a new file's name is durable. */
static void sync_dir(const char *path)
{
    char *copy = strdup(path);
    int fd;

    if (copy == NULL)
        return;
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(copy);
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The header, then XACT_LOG_ROOM zero bytes written for real: a record
 * then overwrites blocks the file already has, and its fdatasync writes
 * data only (an append that grows the file also commits the file
 * system's journal: several times slower). */
static int write_header(int fd)
{
    static const unsigned char zero[64 * 1024];
    unsigned char head[HEADER_BYTES] = {0};

    memcpy(head, log_magic, sizeof log_magic);
    put_u32(head + 8, LOG_VERSION);
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0 || write_all(fd, head, sizeof head) != 0)
        return -1;
    for (size_t done = 0; done < XACT_LOG_ROOM; done += sizeof zero)
        if (write_all(fd, zero, sizeof zero) != 0)
            return -1;
    return fdatasync(fd);
}

int xact_log_open(struct xact_log *log, const char *path, struct xact_entry **entries, size_t *nentries,
                  uint64_t *max_txid, bool *torn, char *err, size_t errlen)
{
    struct stat st;
    unsigned char *data = NULL;
    size_t valid_end, got = 0;

    memset(log, 0, sizeof *log);
    log->fd = -1;
    *entries = NULL;
    *nentries = 0;
    *max_txid = 0;
    *torn = false;
    log->path = strdup(path);
    if (log->path == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    pthread_mutex_init(&log->lock, NULL);
    log->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (log->fd < 0 || fstat(log->fd, &st) != 0) {
        snprintf(err, errlen, "%s: cannot open the coordinator log: %s", path, strerror(errno));
        return -1;
    }
    if (st.st_size == 0) {
        /* New (or created and never written: a crash right after open). */
        if (write_header(log->fd) != 0) {
            snprintf(err, errlen, "%s: cannot write the coordinator log: %s", path, strerror(errno));
            return -1;
        }
        sync_dir(path);
        log->size = HEADER_BYTES;
        return 0;
    }
    data = malloc((size_t)st.st_size);
    if (data == NULL) {
        snprintf(err, errlen, "%s: out of memory reading the coordinator log", path);
        return -1;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = pread(log->fd, data + got, (size_t)st.st_size - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(err, errlen, "%s: cannot read the coordinator log: %s", path,
                     r < 0 ? strerror(errno) : "the file shrank while read");
            free(data);
            return -1;
        }
        got += (size_t)r;
    }
    if (xact_log_parse(data, got, path, entries, nentries, max_txid, torn, &valid_end, err, errlen) != 0) {
        free(data);
        return -1;
    }
    free(data);
    log->size = (off_t)valid_end;
    /* A torn tail is zeroed now, so the next append follows good records. */
    if (*torn) {
        static const unsigned char zero[4096];
        int rc = 0;
        for (off_t at = log->size; rc == 0 && at < st.st_size; at += (off_t)sizeof zero) {
            size_t n = st.st_size - at < (off_t)sizeof zero ? (size_t)(st.st_size - at) : sizeof zero;
            rc = pwrite(log->fd, zero, n, at) == (ssize_t)n ? 0 : -1;
        }
        if (rc != 0 || fdatasync(log->fd) != 0) {
            snprintf(err, errlen, "%s: cannot clear the torn last record: %s", path, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int xact_log_append(struct xact_log *log, const unsigned char *rec, size_t len, bool sync, bool crash_half)
{
    size_t n = crash_half ? len / 2 : len;
    int rc = 0;

    pthread_mutex_lock(&log->lock);
    if (pwrite(log->fd, rec, n, log->size) != (ssize_t)n)
        rc = -1;
    if (rc == 0 && (sync || crash_half) && fdatasync(log->fd) != 0)
        rc = -1;
    if (rc == 0 && !crash_half) {
        log->size += (off_t)len;
    } else if (rc != 0) {
        /* Zero what may have landed, so no part of a record that failed
         * stays behind the end of the records (best effort: a start-up
         * reads what is left as a torn last record). */
        static const unsigned char zero[4096];
        int saved = errno;
        for (size_t done = 0; done < n; done += sizeof zero)
            if (pwrite(log->fd, zero, n - done < sizeof zero ? n - done : sizeof zero,
                       log->size + (off_t)done) < 0)
                break;
        errno = saved;
    }
    pthread_mutex_unlock(&log->lock);
    return rc;
}

int xact_log_reset(struct xact_log *log)
{
    int rc;

    pthread_mutex_lock(&log->lock);
    rc = write_header(log->fd);
    if (rc == 0)
        log->size = HEADER_BYTES;
    pthread_mutex_unlock(&log->lock);
    return rc;
}

int xact_log_reset_keep(struct xact_log *log, const unsigned char *keep, size_t len)
{
    size_t tmp_len = strlen(log->path) + 5;
    char *tmp = malloc(tmp_len);
    int fd = -1, rc = -1, saved;

    if (len == 0) {
        free(tmp);
        return xact_log_reset(log);
    }
    if (tmp == NULL)
        return -1;
    snprintf(tmp, tmp_len, "%s.tmp", log->path);
    pthread_mutex_lock(&log->lock);
    fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0 && write_header(fd) == 0 && pwrite(fd, keep, len, HEADER_BYTES) == (ssize_t)len &&
        fdatasync(fd) == 0 && rename(tmp, log->path) == 0) {
        sync_dir(log->path);
        close(log->fd);
        log->fd = fd;
        log->size = (off_t)(HEADER_BYTES + len);
        fd = -1;
        rc = 0;
    }
    saved = errno;
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    pthread_mutex_unlock(&log->lock);
    free(tmp);
    errno = saved;
    return rc;
}

void xact_log_close(struct xact_log *log)
{
    if (log->path == NULL)
        return;
    if (log->fd >= 0)
        close(log->fd);
    pthread_mutex_destroy(&log->lock);
    free(log->path);
    log->path = NULL;
    log->fd = -1;
}
