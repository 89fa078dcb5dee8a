/*
 * Unit tests of daemon/xact_log.c (issue 16): decision records round-trip
 * through a real file; the one torn case (the file ends inside the last
 * record, or the last record alone fails its checksum) reads as "not
 * written" and is cut off; any other damage is an error naming the file
 * and the offset.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/xact_log.h"
#include "tests/unit/unit.h"

static char dir[] = "/tmp/sqlmux-xlog-XXXXXX";
static char path[512];

static void append_commit(struct xact_log *log, uint64_t txid, const char *cs)
{
    struct xact_part parts[2] = {
        {.bind = "default", .flags = XACT_PART_ANCHOR},
        {.bind = "second_db", .change = (unsigned char *)cs, .len = strlen(cs)},
    };
    unsigned char *rec;
    size_t len;

    CHECK(xact_log_encode_commit(txid, parts, 2, &rec, &len) == 0);
    CHECK(xact_log_append(log, rec, len, true, false) == 0);
    free(rec);
}

static int reopen(struct xact_entry **e, size_t *n, uint64_t *max, bool *torn, char *err, size_t errlen)
{
    struct xact_log log;
    int rc = xact_log_open(&log, path, e, n, max, torn, err, errlen);
    xact_log_close(&log);
    return rc;
}

static long file_size(void)
{
    FILE *f = fopen(path, "rb");
    long n;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fclose(f);
    return n;
}

/* Two decision records; returns where the second ends. */
static long write_two(void)
{
    struct xact_log log;
    struct xact_entry *e;
    size_t n;
    uint64_t max;
    bool torn;
    char err[512];
    long end;

    unlink(path);
    CHECK(xact_log_open(&log, path, &e, &n, &max, &torn, err, sizeof err) == 0);
    CHECK(n == 0 && !torn);
    append_commit(&log, 41, "first changeset");
    append_commit(&log, 42, "second");
    end = (long)log.size;
    xact_log_close(&log);
    return end;
}

static void test_round_trip(void)
{
    struct xact_entry *e;
    size_t n;
    uint64_t max;
    bool torn;
    char err[512];

    write_two();
    CHECK(reopen(&e, &n, &max, &torn, err, sizeof err) == 0);
    CHECK(n == 2 && !torn && max == 42);
    CHECK(e[0].txid == 41 && e[0].nparts == 2);
    CHECK_STR(e[0].parts[0].bind, "default");
    CHECK(e[0].parts[0].flags == XACT_PART_ANCHOR && e[0].parts[0].len == 0);
    CHECK_STR(e[0].parts[1].bind, "second_db");
    CHECK(e[0].parts[1].len == strlen("first changeset") &&
          memcmp(e[0].parts[1].change, "first changeset", e[0].parts[1].len) == 0);
    CHECK(e[1].txid == 42 && e[1].parts[1].len == 6);
    xact_entries_free(e, n);
}

static void zero_range(long at, int n)
{
    FILE *f = fopen(path, "r+b");
    fseek(f, at, SEEK_SET);
    for (int i = 0; i < n; i++)
        fputc(0, f);
    fclose(f);
}

static void test_torn_tail_is_not_written(void)
{
    struct xact_entry *e;
    size_t n;
    uint64_t max;
    bool torn;
    char err[512];
    long end;

    end = write_two();
    CHECK(file_size() > end);            /* the zeroed room */
    CHECK(truncate(path, end - 3) == 0); /* the last record cut short by the end of the file */
    CHECK(reopen(&e, &n, &max, &torn, err, sizeof err) == 0);
    CHECK(torn && n == 1 && e[0].txid == 41);
    xact_entries_free(e, n);
    /* ... and cleared: the next open finds a clean file. */
    CHECK(reopen(&e, &n, &max, &torn, err, sizeof err) == 0);
    CHECK(!torn && n == 1);
    xact_entries_free(e, n);
    /* Written in part, the rest still the zeroed room. */
    end = write_two();
    zero_range(end - 4, 4);
    CHECK(reopen(&e, &n, &max, &torn, err, sizeof err) == 0);
    CHECK(torn && n == 1);
    xact_entries_free(e, n);
}

static void flip(long at)
{
    FILE *f = fopen(path, "r+b");
    int c;
    fseek(f, at, SEEK_SET);
    c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

static void test_last_record_bad_checksum_is_torn(void)
{
    struct xact_entry *e;
    size_t n;
    uint64_t max;
    bool torn;
    char err[512];

    flip(write_two() - 2);
    CHECK(reopen(&e, &n, &max, &torn, err, sizeof err) == 0);
    CHECK(torn && n == 1);
    xact_entries_free(e, n);
}

static void test_damage_before_the_end_is_an_error(void)
{
    struct xact_entry *e;
    size_t n;
    uint64_t max;
    bool torn;
    char err[512];

    write_two();
    flip(16 + 12 + 4); /* the first record's payload */
    CHECK(reopen(&e, &n, &max, &torn, err, sizeof err) == -1);
    CHECK(strstr(err, path) != NULL && strstr(err, "offset 16") != NULL && strstr(err, "checksum") != NULL);

    write_two();
    flip(16 + 1); /* the first record's length */
    CHECK(reopen(&e, &n, &max, &torn, err, sizeof err) == -1);
    CHECK(strstr(err, "length is damaged") != NULL);

    write_two();
    flip(2); /* the magic */
    CHECK(reopen(&e, &n, &max, &torn, err, sizeof err) == -1);
    CHECK(strstr(err, "not a coordinator log") != NULL);

    flip(write_two() + 100); /* bytes after the end of the records */
    CHECK(reopen(&e, &n, &max, &torn, err, sizeof err) == -1);
    CHECK(strstr(err, "bytes follow the end of the records") != NULL);

    write_two();
    CHECK(truncate(path, 9) == 0); /* inside the header */
    CHECK(reopen(&e, &n, &max, &torn, err, sizeof err) == -1);
    CHECK(strstr(err, path) != NULL);
}

static void test_reset(void)
{
    struct xact_log log;
    struct xact_entry *e;
    size_t n;
    uint64_t max;
    bool torn;
    char err[512];

    write_two();
    CHECK(xact_log_open(&log, path, &e, &n, &max, &torn, err, sizeof err) == 0);
    xact_entries_free(e, n);
    CHECK(xact_log_reset(&log) == 0);
    append_commit(&log, 50, "after the reset");
    xact_log_close(&log);
    CHECK(reopen(&e, &n, &max, &torn, err, sizeof err) == 0);
    CHECK(n == 1 && e[0].txid == 50 && !torn);
    xact_entries_free(e, n);
}

/* A PostgreSQL part (no changeset) round-trips; records kept by a reset
 * are read back, and appends follow them. */
static void test_pg_parts_and_reset_keep(void)
{
    struct xact_part parts[2] = {
        {.bind = "default", .flags = XACT_PART_ANCHOR},
        {.bind = "pg", .flags = XACT_PART_PG},
    };
    struct xact_part pg_only = {.bind = "pg", .flags = XACT_PART_PG};
    struct xact_log log;
    struct xact_entry *e;
    unsigned char *rec, *keep;
    size_t n, len, keeplen;
    uint64_t max;
    bool torn;
    char err[512];

    unlink(path);
    CHECK(xact_log_open(&log, path, &e, &n, &max, &torn, err, sizeof err) == 0 && n == 0);
    CHECK(xact_log_encode_commit(60, parts, 2, &rec, &len) == 0);
    CHECK(xact_log_append(&log, rec, len, true, false) == 0);
    free(rec);
    append_commit(&log, 61, "forgotten by the reset");
    CHECK(xact_log_encode_commit(60, &pg_only, 1, &keep, &keeplen) == 0);
    CHECK(xact_log_reset_keep(&log, keep, keeplen) == 0);
    free(keep);
    append_commit(&log, 62, "after the reset");
    xact_log_close(&log);
    CHECK(reopen(&e, &n, &max, &torn, err, sizeof err) == 0);
    CHECK(n == 2 && !torn && max == 62);
    if (n == 2) {
        CHECK(e[0].txid == 60 && e[0].nparts == 1);
        CHECK_STR(e[0].parts[0].bind, "pg");
        CHECK(e[0].parts[0].flags == XACT_PART_PG && e[0].parts[0].len == 0 && e[0].parts[0].change == NULL);
        CHECK(e[1].txid == 62);
    }
    xact_entries_free(e, n);
    CHECK(access(path, F_OK) == 0);
    {
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        CHECK(access(tmp, F_OK) != 0);
    }
}

int main(void)
{
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(path, sizeof path, "%s/sqlmux-xact.log", dir);
    RUN(test_round_trip);
    RUN(test_torn_tail_is_not_written);
    RUN(test_last_record_bad_checksum_is_torn);
    RUN(test_damage_before_the_end_is_an_error);
    RUN(test_reset);
    RUN(test_pg_parts_and_reset_keep);
    unlink(path);
    rmdir(dir);
    UNIT_MAIN_END;
}
