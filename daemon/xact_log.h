/*
 * The coordinator log of transactions across binds: one append-only file
 * in data_dir (XACT_LOG_NAME). Pure file format and I/O, no SQLite; the
 * commit path and recovery that use it are in xact.c and xact_recover.c.
 *
 * Layout (integers little-endian):
 *
 *   file header   "SQLMUXXL" (8 bytes), version u32 (1), reserved u32 (0)
 *   record        length u32, its complement u32 (~length), crc32 u32 of
 *                 the payload (zlib's crc32), then `length` payload bytes
 *   payload       type u8 (XACT_REC_COMMIT), txid u64, nparts u16, and
 *                 per part: name length u16, the bind's name, flags u8
 *                 (XACT_PART_*), changeset length u32, the changeset
 *                 (SQLite session extension format; none, length 0, for a
 *                 PostgreSQL part: its changes are in the prepared
 *                 transaction named by the daemon id, the txid and the
 *                 bind, pg_2pc.h)
 *
 *   room          zero bytes, XACT_LOG_ROOM of them past the header,
 *                 written for real when the log is (re)started; records
 *                 overwrite them (the fdatasync of a file that does not
 *                 grow writes data only), and the first all-zero record
 *                 head ends the records
 *
 * A record is written with one pwrite() and fdatasync'ed before any bind
 * commits. There is no "done" record: whether a bind has a transaction is
 * what its marker row says, so recovery checks every record, and the log
 * is started again (after every bind's files were fsync'ed) at start-up
 * and whenever it grows past XACT_LOG_COMPACT_BYTES with no commit in
 * flight. Reading is strict: a record that fails its checks, or non-zero
 * bytes after the end of the records, is a start-up error naming the file
 * and the offset, except ONE case read as "not written": the LAST record,
 * when the file ends inside it, or when it fails its checks and only zero
 * bytes follow it (from its end; from its head when its length is what is
 * damaged). Only a write that never finished leaves that, and such a
 * record was never fdatasync'ed, so no bind committed on its word.
 */
#ifndef SQLMUX_DAEMON_XACT_LOG_H
#define SQLMUX_DAEMON_XACT_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define XACT_LOG_NAME "sqlmux-xact.log"

/* Records larger than this are refused on write and are corruption on
 * read (the changesets of one transaction live in memory anyway). */
#define XACT_LOG_MAX_RECORD (256u * 1024 * 1024)

/* The zeroed room written after the header (see above). */
#define XACT_LOG_ROOM (4u * 1024 * 1024 + 256 * 1024)

enum xact_rec_type {
    XACT_REC_COMMIT = 1, /* the decision: the transaction commits */
};

enum {
    XACT_PART_ANCHOR = 1, /* the home bind, committed first, without a
                             changeset: its marker row decides */
    XACT_PART_PG = 2,     /* a PostgreSQL bind, prepared before the record
                             was written; no changeset */
};

struct xact_part {
    char *bind;            /* the bind's name */
    unsigned flags;        /* XACT_PART_* */
    unsigned char *change; /* the changeset (NULL for the anchor) */
    size_t len;
};

/* One decision record. */
struct xact_entry {
    uint64_t txid;
    size_t nparts;
    struct xact_part *parts;
};

struct xact_log {
    char *path;
    int fd;
    pthread_mutex_t lock; /* appends and resets */
    off_t size;           /* bytes in the file (the end of the last record) */
};

/* Open (creating it with its header) the log at path and read it: the
 * decision records, in order, into *entries (free with
 * xact_entries_free()), the largest txid seen into *max_txid. A torn last
 * record is dropped and *torn set (the caller logs it). 0, or -1 with
 * err set ("PATH: offset N: what is wrong"). */
int xact_log_open(struct xact_log *log, const char *path, struct xact_entry **entries, size_t *nentries,
                  uint64_t *max_txid, bool *torn, char *err, size_t errlen);

/* Parse a log image (the whole file) into entries; the same rules and
 * results as xact_log_open(). *valid_end: where the last good record ends.
 * name is used in messages. */
int xact_log_parse(const unsigned char *data, size_t len, const char *name, struct xact_entry **entries,
                   size_t *nentries, uint64_t *max_txid, bool *torn, size_t *valid_end, char *err,
                   size_t errlen);

void xact_entries_free(struct xact_entry *entries, size_t n);
/* Free one entry's parts (the entry itself is the caller's). */
void xact_entries_free_parts(struct xact_entry *e);

/* The size of the file header: a log this size holds no record. */
#define XACT_LOG_HEADER 16

/* Decode one encoded record (as xact_log_encode_commit made it; kept
 * elsewhere than in the log: the home bind's marker row) into *e (zeroed
 * first; free its parts as xact_entries_free does). 0, or -1 with *why. */
int xact_log_decode(const unsigned char *rec, size_t len, struct xact_entry *e, const char **why);

/* Encode a decision record for txid over parts[0..n) into a malloc'd
 * buffer (*out, *outlen). 0, or -1 (out of memory, or over
 * XACT_LOG_MAX_RECORD). */
int xact_log_encode_commit(uint64_t txid, const struct xact_part *parts, size_t n, unsigned char **out,
                           size_t *outlen);

/* Append an encoded record; sync: fdatasync before returning. crash_half:
 * write only the first half and return (the test crash point "log_torn").
 * Any thread. 0, or -1 with errno set (the file is cut back to where it
 * was, so a failed append leaves no partial record behind). */
int xact_log_append(struct xact_log *log, const unsigned char *rec, size_t len, bool sync, bool crash_half);

/* Cut the log back to its header, durably. Any thread. 0, or -1. */
int xact_log_reset(struct xact_log *log);

/* Start the log again holding only the records keep[0..len) (encoded
 * ones, back to back): written to a new file that replaces the log by a
 * rename, so a crash leaves the old log or the new one, never a log that
 * lost them. len 0 is xact_log_reset(). Any thread. 0, or -1 with errno
 * (the log is as it was). */
int xact_log_reset_keep(struct xact_log *log, const unsigned char *keep, size_t len);

void xact_log_close(struct xact_log *log);

#endif
