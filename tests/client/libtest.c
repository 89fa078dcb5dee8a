/*
 * Tests of libsqlmux against a real daemon and over real sockets.
 *
 *   libtest URL CASE...
 *
 * runs the named cases (see `cases` at the end) against the daemon at URL
 * and prints "ok - CASE" or "not ok - CASE" for each, with the failed
 * checks on stderr; exit status 1 when any failed. The daemon is started
 * by tests/integration/test_libsqlmux.py (harness.Daemon), which chooses
 * the cases and the daemon's configuration; a few cases read more from
 * the environment: LIBTEST_UNIX_URL (the daemon's unix socket URL),
 * LIBTEST_DAEMON_PID (for the case that kills it). The auth_* cases want
 * a daemon with users (see "Logging in").
 *
 * Cases that need a misbehaving peer (silent, closing in the middle of a
 * reply) run a small fake server on a thread of this process.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client/sqlmux.h"
#include "tests/unit/unit.h"

static const char *url;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static sqlmux_conn *connect_or_die(const char *u)
{
    char *err = NULL;
    sqlmux_conn *c = sqlmux_connect(u, 10000, &err);
    if (c == NULL) {
        fprintf(stderr, "  cannot connect to %s: %s\n", u, err ? err : "?");
        free(err);
        exit(2);
    }
    return c;
}

/* Run sql and check it succeeded; the result is freed. */
static void exec_ok(sqlmux_conn *c, const char *sql)
{
    sqlmux_result *r = sqlmux_exec(c, sql, NULL, 0);
    if (sqlmux_status(r) != SQLMUX_OK)
        fprintf(stderr, "  %s: %s %s\n", sql, sqlmux_errcode(r), sqlmux_errmsg(r));
    CHECK(sqlmux_status(r) == SQLMUX_OK);
    sqlmux_free(r);
}

/* Run sql and check it failed with code. */
static void exec_err(sqlmux_conn *c, const char *sql, const sqlmux_value *p, size_t n, const char *code)
{
    sqlmux_result *r = sqlmux_exec(c, sql, p, n);
    CHECK(sqlmux_status(r) == SQLMUX_ERROR);
    CHECK_STR(sqlmux_errcode(r), code);
    CHECK(strlen(sqlmux_errmsg(r)) > 0);
    sqlmux_free(r);
}

/* The single integer a query returns. */
static int64_t query_int(sqlmux_conn *c, const char *sql)
{
    sqlmux_result *r = sqlmux_exec(c, sql, NULL, 0);
    int64_t v = -999;
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    v = sqlmux_int64(r, 0);
    CHECK(sqlmux_step(r) == SQLMUX_DONE);
    sqlmux_free(r);
    return v;
}

/* ---- Values ---------------------------------------------------------- */

/* SELECT ?, typeof(?) with v: the field comes back as want[0..wlen) with
 * type wtype, and typeof() says wtypeof. */
static void roundtrip(sqlmux_conn *c, sqlmux_value v, enum sqlmux_type wtype, const void *want, size_t wlen,
                      const char *wtypeof)
{
    sqlmux_value p[] = {v, v};
    sqlmux_result *r = sqlmux_exec(c, "SELECT ? AS v, typeof(?) AS t", p, 2);
    CHECK(sqlmux_status(r) == SQLMUX_OK);
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK(sqlmux_type(r, 0) == wtype);
    CHECK(sqlmux_isnull(r, 0) == (wtype == SQLMUX_NULL));
    CHECK(sqlmux_len(r, 0) == wlen);
    if (wtype != SQLMUX_NULL) {
        CHECK(sqlmux_blob(r, 0) != NULL);
        CHECK(wlen == 0 || memcmp(sqlmux_blob(r, 0), want, wlen) == 0);
        CHECK(sqlmux_text(r, 0)[wlen] == '\0');
    } else {
        CHECK(sqlmux_text(r, 0) == NULL && sqlmux_blob(r, 0) == NULL);
    }
    CHECK_STR(sqlmux_text(r, 1), wtypeof);
    CHECK(sqlmux_step(r) == SQLMUX_DONE);
    sqlmux_free(r);
}

static void check_int(sqlmux_conn *c, int64_t i)
{
    char s[32];
    snprintf(s, sizeof s, "%lld", (long long)i);
    roundtrip(c, sqlmux_val_int(i), SQLMUX_TEXT, s, strlen(s), "integer");
    sqlmux_value p = sqlmux_val_int(i);
    sqlmux_result *r = sqlmux_exec(c, "SELECT ?", &p, 1);
    CHECK(sqlmux_step(r) == SQLMUX_ROW && sqlmux_int64(r, 0) == i);
    sqlmux_free(r);
}

static void check_double(sqlmux_conn *c, double d)
{
    sqlmux_value p = sqlmux_val_double(d);
    sqlmux_result *r = sqlmux_exec(c, "SELECT ?, typeof(?)", (sqlmux_value[]){p, p}, 2);
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    double got = sqlmux_double(r, 0);
    if (!(got == d && signbit(got) == signbit(d)))
        fprintf(stderr, "  double %.17g came back as %s\n", d, sqlmux_text(r, 0));
    CHECK(got == d && signbit(got) == signbit(d));
    CHECK_STR(sqlmux_text(r, 1), "real");
    sqlmux_free(r);
}

static void types(void)
{
    sqlmux_conn *c = connect_or_die(url);

    roundtrip(c, sqlmux_val_null(), SQLMUX_NULL, NULL, 0, "null");
    roundtrip(c, sqlmux_val_text(NULL), SQLMUX_NULL, NULL, 0, "null");
    check_int(c, 0);
    check_int(c, -42);
    check_int(c, INT64_MAX);
    check_int(c, INT64_MIN);
    check_double(c, 0.1);
    check_double(c, -2.5);
    check_double(c, 1.0);
    check_double(c, 1e300);
    check_double(c, -1e-300);
    check_double(c, 1.5e-7);
    check_double(c, 3.141592653589793);
    check_double(c, 9007199254740993.0);
    check_double(c, INFINITY);
    check_double(c, -INFINITY);
    check_double(c, 5e-324);

    /* Text: the escapes, the look-alikes of NULL and blobs, NUL bytes,
     * UTF-8, and bytes that are not UTF-8. */
    static const struct {
        const char *s;
        size_t n;
    } texts[] = {
#define TEXT(s) {s, sizeof s - 1}
        TEXT(""),         TEXT("NULL"),          TEXT("\\N"),
        TEXT("\\x41"),    TEXT("a\tb\nc\rd\\e"), TEXT("a\0b"),
        TEXT("\0"),       TEXT("it's"),          TEXT("h\xc3\xa9llo \xe2\x98\x83"),
        TEXT("\xff\xfe"), TEXT("trailing\\"),    TEXT(" lead"),
#undef TEXT
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        roundtrip(c, sqlmux_val_textn(texts[i].s, texts[i].n), SQLMUX_TEXT, texts[i].s, texts[i].n, "text");

    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    roundtrip(c, sqlmux_val_blob(all, sizeof all), SQLMUX_BLOB, all, sizeof all, "blob");
    roundtrip(c, sqlmux_val_blob(NULL, 0), SQLMUX_BLOB, "", 0, "blob");
    roundtrip(c, sqlmux_val_blob("\x00", 1), SQLMUX_BLOB, "\x00", 1, "blob");

    /* Big values: 300 KB of text with every escape, a 200 KB blob. */
    size_t bign = 300000;
    char *big = malloc(bign);
    for (size_t i = 0; i < bign; i++)
        big[i] = (char)("ab\t\n\\\r\0z"[i % 8]);
    roundtrip(c, sqlmux_val_textn(big, bign), SQLMUX_TEXT, big, bign, "text");
    unsigned char *blob = malloc(200000);
    for (size_t i = 0; i < 200000; i++)
        blob[i] = (unsigned char)(i * 7919);
    roundtrip(c, sqlmux_val_blob(blob, 200000), SQLMUX_BLOB, blob, 200000, "blob");

    /* Stored and read back from a table, every type in one row. */
    exec_ok(c, "CREATE TABLE IF NOT EXISTS lt_types (i INTEGER, r REAL, t TEXT, b BLOB, n)");
    sqlmux_value row[] = {sqlmux_val_int(INT64_MIN), sqlmux_val_double(-0.125), sqlmux_val_textn(big, bign),
                          sqlmux_val_blob(blob, 200000), sqlmux_val_null()};
    sqlmux_result *r = sqlmux_exec(c, "INSERT INTO lt_types VALUES (?, ?, ?, ?, ?)", row, 5);
    CHECK(sqlmux_status(r) == SQLMUX_OK && sqlmux_changes(r) == 1);
    int64_t id = sqlmux_last_id(r);
    sqlmux_free(r);
    sqlmux_value idp = sqlmux_val_int(id);
    r = sqlmux_exec(c, "SELECT i, r, t, b, n FROM lt_types WHERE rowid = ?", &idp, 1);
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK(sqlmux_int64(r, 0) == INT64_MIN);
    CHECK(sqlmux_double(r, 1) == -0.125);
    CHECK(sqlmux_len(r, 2) == bign && memcmp(sqlmux_text(r, 2), big, bign) == 0);
    CHECK(sqlmux_type(r, 3) == SQLMUX_BLOB && sqlmux_len(r, 3) == 200000);
    CHECK(memcmp(sqlmux_blob(r, 3), blob, 200000) == 0);
    CHECK(sqlmux_isnull(r, 4));
    sqlmux_free(r);
    free(big);
    free(blob);

    /* Number parsing of fields. */
    r = sqlmux_exec(c, "SELECT '12abc', 'abc', 2.9, -2.9, 1e300, '9223372036854775808', X'31'", NULL, 0);
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK(sqlmux_int64(r, 0) == 12);
    CHECK(sqlmux_int64(r, 1) == 0 && sqlmux_double(r, 1) == 0.0);
    CHECK(sqlmux_int64(r, 2) == 2 && sqlmux_int64(r, 3) == -2);
    CHECK(sqlmux_int64(r, 4) == INT64_MAX);
    CHECK(sqlmux_int64(r, 5) == INT64_MAX);
    CHECK(sqlmux_int64(r, 6) == 0); /* a blob is not a number */
    sqlmux_free(r);
    sqlmux_close(c);
}

/* Any SQL text: several lines, tabs and CRs, bytes that are not UTF-8,
 * names with tabs; given with a length, so also with a NUL after it. */
static void sql_any_bytes(void)
{
    sqlmux_conn *c = connect_or_die(url);
    sqlmux_result *r = sqlmux_exec(c,
                                   "SELECT\n\t1 AS \"a\tb\",\r\n"
                                   "  '\xff\xfe' AS \"x\ny\", -- a comment; with a semicolon\n"
                                   "  'line1\nline2' AS \"back\\slash\"",
                                   NULL, 0);
    CHECK(sqlmux_status(r) == SQLMUX_OK);
    CHECK(sqlmux_ncols(r) == 3);
    CHECK_STR(sqlmux_colname(r, 0), "a\tb");
    CHECK_STR(sqlmux_colname(r, 1), "x\ny");
    CHECK_STR(sqlmux_colname(r, 2), "back\\slash");
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK_STR(sqlmux_text(r, 1), "\xff\xfe");
    CHECK_STR(sqlmux_text(r, 2), "line1\nline2");
    sqlmux_free(r);

    const char sql[] = "SELECT 7 AS seven;GARBAGE AFTER THE LENGTH";
    r = sqlmux_execn(c, sql, strlen("SELECT 7 AS seven;"), NULL, 0);
    CHECK(sqlmux_step(r) == SQLMUX_ROW && sqlmux_int64(r, 0) == 7);
    sqlmux_free(r);
    sqlmux_close(c);
}

/* ---- Results --------------------------------------------------------- */

static void columns_and_rows(void)
{
    sqlmux_conn *c = connect_or_die(url);
    exec_ok(c, "CREATE TABLE IF NOT EXISTS lt_cols (id INTEGER PRIMARY KEY, color VARCHAR(64), w REAL)");
    exec_ok(c, "DELETE FROM lt_cols");
    exec_ok(c, "INSERT INTO lt_cols (color, w) VALUES ('red', 1.5), ('green', NULL), (NULL, 3)");
    sqlmux_result *r =
        sqlmux_exec(c, "SELECT id, color, w, w * 2 AS twice FROM lt_cols ORDER BY id", NULL, 0);
    CHECK(sqlmux_status(r) == SQLMUX_OK);
    CHECK(sqlmux_errcode(r) == NULL);
    CHECK_STR(sqlmux_errmsg(r), "");
    CHECK(sqlmux_ncols(r) == 4);
    CHECK_STR(sqlmux_colname(r, 0), "id");
    CHECK_STR(sqlmux_coltype(r, 0), "INTEGER");
    CHECK_STR(sqlmux_coltype(r, 1), "VARCHAR(64)");
    CHECK_STR(sqlmux_coltype(r, 3), "");
    CHECK(sqlmux_colname(r, 4) == NULL && sqlmux_colname(r, -1) == NULL);
    CHECK(sqlmux_rows(r) == 3);
    CHECK_STR(sqlmux_facts(r), "rows=3");
    int64_t rows = 0;
    CHECK(sqlmux_fact_int(r, "rows", &rows) && rows == 3);
    /* Before the first step there is no current row. */
    CHECK(sqlmux_text(r, 0) == NULL && sqlmux_isnull(r, 0));
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK_STR(sqlmux_text(r, 1), "red");
    CHECK(sqlmux_double(r, 2) == 1.5 && sqlmux_double(r, 3) == 3.0);
    CHECK(sqlmux_text(r, 9) == NULL && sqlmux_len(r, 9) == 0);
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK(sqlmux_isnull(r, 2) && !sqlmux_isnull(r, 1));
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK(sqlmux_isnull(r, 1));
    CHECK(sqlmux_step(r) == SQLMUX_DONE);
    CHECK(sqlmux_step(r) == SQLMUX_DONE);
    /* Pointers of a buffered result stay valid: read row 0 again. */
    CHECK(sqlmux_seek(r, 0) == SQLMUX_OK);
    const char *red = sqlmux_text(r, 1);
    CHECK(sqlmux_seek(r, 2) == SQLMUX_OK);
    CHECK_STR(red, "red");
    CHECK(sqlmux_step(r) == SQLMUX_DONE);
    CHECK(sqlmux_seek(r, 3) == SQLMUX_ERROR);
    CHECK(sqlmux_seek(r, -1) == SQLMUX_OK);
    CHECK(sqlmux_step(r) == SQLMUX_ROW && sqlmux_int64(r, 0) == 1);
    sqlmux_free(r);

    /* No rows: columns, then DONE. */
    r = sqlmux_exec(c, "SELECT id FROM lt_cols WHERE 0", NULL, 0);
    CHECK(sqlmux_ncols(r) == 1 && sqlmux_rows(r) == 0);
    CHECK(sqlmux_step(r) == SQLMUX_DONE);
    sqlmux_free(r);
    sqlmux_close(c);
}

static void changes_and_last_id(void)
{
    sqlmux_conn *c = connect_or_die(url);
    exec_ok(c, "CREATE TABLE IF NOT EXISTS lt_ids (id INTEGER PRIMARY KEY, v TEXT)");
    sqlmux_value p[] = {sqlmux_val_int(41), sqlmux_val_text("a")};
    sqlmux_result *r = sqlmux_exec(c, "INSERT INTO lt_ids (id, v) VALUES (?, ?)", p, 2);
    CHECK(sqlmux_changes(r) == 1 && sqlmux_last_id(r) == 41);
    CHECK(sqlmux_ncols(r) == 0);
    CHECK(sqlmux_step(r) == SQLMUX_DONE);
    sqlmux_free(r);
    r = sqlmux_exec(c, "INSERT INTO lt_ids (v) VALUES ('b'), ('c')", NULL, 0);
    CHECK(sqlmux_changes(r) == 2 && sqlmux_last_id(r) == 43);
    sqlmux_free(r);
    r = sqlmux_exec(c, "UPDATE lt_ids SET v = 'z' WHERE id >= 41", NULL, 0);
    CHECK(sqlmux_changes(r) == 3);
    CHECK(sqlmux_last_id(r) == 0);
    CHECK(sqlmux_fact(r, "last_id") == NULL);
    CHECK_STR(sqlmux_fact(r, "changes"), "3");
    sqlmux_free(r);
    r = sqlmux_exec(c, "DELETE FROM lt_ids", NULL, 0);
    CHECK(sqlmux_changes(r) == 3);
    sqlmux_free(r);
    sqlmux_close(c);
}

/* ---- Errors ---------------------------------------------------------- */

static void server_errors(void)
{
    sqlmux_conn *c = connect_or_die(url);
    exec_ok(c, "CREATE TABLE IF NOT EXISTS lt_err (id INTEGER PRIMARY KEY, u TEXT UNIQUE NOT NULL)");
    exec_ok(c, "DELETE FROM lt_err");
    exec_ok(c, "INSERT INTO lt_err (u) VALUES ('x')");
    exec_err(c, "SELECT * FROM no_such_table", NULL, 0, "SQL");
    exec_err(c, "INSERT INTO lt_err (u) VALUES ('x')", NULL, 0, "CONSTRAINT");
    exec_err(c, "INSERT INTO lt_err (u) VALUES (NULL)", NULL, 0, "CONSTRAINT");
    sqlmux_value one = sqlmux_val_int(1);
    exec_err(c, "SELECT ?, ?", &one, 1, "PARAMS");
    exec_err(c, "SELECT 1", &one, 1, "PARAMS");
    exec_err(c, "SELECT 1; SELECT 2", NULL, 0, "MULTI");
    exec_err(c, "SELECT 'unterminated", NULL, 0, "SYNTAX");
    exec_err(c, "CREATE TRIGGER tr AFTER INSERT ON test1 BEGIN DELETE FROM test2; END", NULL, 0, "CROSSBIND");
    exec_err(c, "ATTACH 'x.db' AS x", NULL, 0, "DENIED");
    /* The message is the daemon's, whole. */
    sqlmux_result *r = sqlmux_exec(c, "SELECT * FROM no_such_table", NULL, 0);
    CHECK_STR(sqlmux_errmsg(r), "no such table: no_such_table");
    CHECK(sqlmux_step(r) == SQLMUX_ERROR);
    CHECK_STR(sqlmux_facts(r), "");
    sqlmux_free(r);
    r = sqlmux_command(c, ".nope");
    CHECK_STR(sqlmux_errcode(r), "UNKNOWN");
    sqlmux_free(r);
    /* After every daemon error the connection goes on. */
    CHECK(sqlmux_conn_errmsg(c) == NULL);
    CHECK(query_int(c, "SELECT 5") == 5);
    sqlmux_close(c);
}

static void misuse(void)
{
    sqlmux_conn *c = connect_or_die(url);
    sqlmux_value nan_param = sqlmux_val_double(NAN);
    exec_err(c, "SELECT ?", &nan_param, 1, "MISUSE");
    CHECK(sqlmux_send(c, "SELECT ?", &nan_param, 1) == SQLMUX_ERROR);
    CHECK(sqlmux_pending(c) == 0);
    sqlmux_value no_bytes = {.type = SQLMUX_TEXT, .p = NULL, .len = 3};
    exec_err(c, "SELECT ?", &no_bytes, 1, "MISUSE");
    exec_err(c, NULL, NULL, 0, "MISUSE");
    sqlmux_result *r = sqlmux_recv(c);
    CHECK_STR(sqlmux_errcode(r), "MISUSE");
    sqlmux_free(r);
    r = sqlmux_command(c, ".ping\n.ping");
    CHECK_STR(sqlmux_errcode(r), "MISUSE");
    sqlmux_free(r);
    r = sqlmux_command(c, "SELECT 1");
    CHECK_STR(sqlmux_errcode(r), "MISUSE");
    sqlmux_free(r);
    /* exec while pipelined results wait. */
    CHECK(sqlmux_send(c, "SELECT 1", NULL, 0) == SQLMUX_OK);
    exec_err(c, "SELECT 2", NULL, 0, "MISUSE");
    r = sqlmux_recv(c);
    CHECK(sqlmux_step(r) == SQLMUX_ROW && sqlmux_int64(r, 0) == 1);
    sqlmux_free(r);
    sqlmux_free(NULL);
    sqlmux_close(NULL);
    CHECK(sqlmux_conn_errmsg(c) == NULL);
    CHECK(query_int(c, "SELECT 6") == 6);
    sqlmux_close(c);
}

/* ---- Commands -------------------------------------------------------- */

static void commands(void)
{
    sqlmux_conn *c = connect_or_die(url);
    sqlmux_result *r = sqlmux_command(c, ".ping");
    CHECK(sqlmux_status(r) == SQLMUX_OK && sqlmux_ncols(r) == 0);
    sqlmux_free(r);

    r = sqlmux_command(c, ".binds");
    CHECK(sqlmux_status(r) == SQLMUX_OK);
    CHECK(sqlmux_ncols(r) >= 5 && sqlmux_rows(r) == 3);
    CHECK_STR(sqlmux_colname(r, 0), "name");
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK_STR(sqlmux_text(r, 0), "default");
    sqlmux_free(r);

    r = sqlmux_command(c, ".use second_db");
    CHECK(sqlmux_status(r) == SQLMUX_OK);
    CHECK_STR(sqlmux_fact(r, "bind"), "second_db");
    CHECK_STR(sqlmux_facts(r), "bind=second_db");
    sqlmux_free(r);
    r = sqlmux_command(c, ".use nowhere");
    CHECK_STR(sqlmux_errcode(r), "NOBIND");
    sqlmux_free(r);

    /* A refused .route lists the tables first: rows and an error. */
    r = sqlmux_command(c, ".route CREATE TRIGGER tr AFTER INSERT ON test1 BEGIN DELETE FROM test2; END");
    CHECK(sqlmux_status(r) == SQLMUX_ERROR);
    CHECK_STR(sqlmux_errcode(r), "CROSSBIND");
    CHECK(sqlmux_ncols(r) == 3 && sqlmux_rows(r) == 2);
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK_STR(sqlmux_text(r, 0), "test1");
    CHECK_STR(sqlmux_text(r, 1), "default");
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK_STR(sqlmux_text(r, 1), "second_db");
    CHECK(sqlmux_step(r) == SQLMUX_ERROR);
    sqlmux_free(r);
    r = sqlmux_command(c, ".route SELECT * FROM test3");
    CHECK_STR(sqlmux_fact(r, "bind"), "memory_db");
    sqlmux_free(r);
    sqlmux_close(c);
}

/* ---- Streaming ------------------------------------------------------- */

static const char *const count_sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                                     "WHERE x < ?) SELECT x, 'row ' || x AS label FROM c";

static void streaming(void)
{
    sqlmux_conn *c = connect_or_die(url);
    const int64_t n = 200000;
    sqlmux_value p = sqlmux_val_int(n);
    sqlmux_result *r = sqlmux_query(c, count_sql, &p, 1);
    CHECK(sqlmux_status(r) == SQLMUX_OK);
    CHECK(sqlmux_ncols(r) == 2);
    CHECK_STR(sqlmux_colname(r, 1), "label");
    CHECK(sqlmux_seek(r, 0) == SQLMUX_ERROR);
    /* While the stream is open the connection reads nothing else. */
    exec_err(c, "SELECT 1", NULL, 0, "MISUSE");
    int64_t sum = 0, count = 0, ready = 0;
    bool in_order = true;
    int rc;
    /* Rows arrive in chunks of many: most steps find theirs received. */
    while ((ready += sqlmux_step_ready(r), rc = sqlmux_step(r)) == SQLMUX_ROW) {
        count++;
        in_order = in_order && sqlmux_int64(r, 0) == count;
        sum += sqlmux_int64(r, 0);
        if (count == n / 2) {
            char want[32];
            snprintf(want, sizeof want, "row %lld", (long long)count);
            CHECK_STR(sqlmux_text(r, 1), want);
        }
    }
    CHECK(rc == SQLMUX_DONE);
    CHECK(in_order);
    CHECK(count == n && sum == n * (n + 1) / 2);
    CHECK(sqlmux_rows(r) == n);
    CHECK_STR(sqlmux_facts(r), "rows=200000");
    CHECK(ready > n / 2 && ready <= n);
    CHECK(sqlmux_step_ready(r));
    CHECK(sqlmux_step(r) == SQLMUX_DONE);
    sqlmux_free(r);

    /* Freed early: the rest of the rows are skipped, the next result is
     * the right one. Twice in a row, with a pipelined request between. */
    for (int k = 0; k < 2; k++) {
        r = sqlmux_query(c, count_sql, &p, 1);
        for (int i = 0; i < 10; i++)
            CHECK(sqlmux_step(r) == SQLMUX_ROW);
        CHECK(sqlmux_send(c, "SELECT 'after'", NULL, 0) == SQLMUX_OK);
        sqlmux_free(r);
        r = sqlmux_recv(c);
        CHECK(sqlmux_step(r) == SQLMUX_ROW);
        CHECK_STR(sqlmux_text(r, 0), "after");
        sqlmux_free(r);
    }

    /* A stream of a statement that fails at once, and of one without
     * rows. */
    r = sqlmux_query(c, "SELECT * FROM no_such_table", NULL, 0);
    CHECK(sqlmux_status(r) == SQLMUX_ERROR);
    CHECK(sqlmux_step(r) == SQLMUX_ERROR);
    CHECK_STR(sqlmux_errcode(r), "SQL");
    sqlmux_free(r);
    r = sqlmux_query(c, "CREATE TABLE IF NOT EXISTS lt_stream (x)", NULL, 0);
    CHECK(sqlmux_ncols(r) == 0 && sqlmux_step(r) == SQLMUX_DONE);
    sqlmux_free(r);

    /* A stream from sqlmux_recv_stream() after other pipelined results. */
    CHECK(sqlmux_send(c, "SELECT 1", NULL, 0) == SQLMUX_OK);
    CHECK(sqlmux_send(c, count_sql, &p, 1) == SQLMUX_OK);
    r = sqlmux_recv(c);
    sqlmux_free(r);
    r = sqlmux_recv_stream(c);
    count = 0;
    while (sqlmux_step(r) == SQLMUX_ROW)
        count++;
    CHECK(count == n);
    sqlmux_free(r);

    /* Closing the connection under an open stream. */
    r = sqlmux_query(c, count_sql, &p, 1);
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    sqlmux_close(c);
    CHECK(sqlmux_step(r) == SQLMUX_ERROR);
    CHECK_STR(sqlmux_errcode(r), "CONNECTION");
    sqlmux_free(r);
}

/* ---- Pipelining ------------------------------------------------------ */

static void pipelining(void)
{
    sqlmux_conn *c = connect_or_die(url);
    enum { N = 10000 };
    exec_ok(c, "CREATE TABLE IF NOT EXISTS lt_pipe (id INTEGER PRIMARY KEY, v INTEGER, t TEXT)");
    exec_ok(c, "DELETE FROM lt_pipe");
    int64_t t0 = now_ms();
    /* In one transaction, alternate INSERTs and SELECTs, one statement
     * failing every 1000 (a failed statement leaves the transaction
     * open). */
    CHECK(sqlmux_send(c, "BEGIN", NULL, 0) == SQLMUX_OK);
    for (int i = 0; i < N; i++) {
        sqlmux_value p[] = {sqlmux_val_int(i + 1), sqlmux_val_int(i * 3), sqlmux_val_text("x\ty")};
        int rc;
        if (i % 1000 == 999)
            rc = sqlmux_send(c, "SELECT * FROM no_such_table", NULL, 0);
        else if (i % 2 == 0)
            rc = sqlmux_send(c, "INSERT INTO lt_pipe (id, v, t) VALUES (?, ?, ?)", p, 3);
        else
            rc = sqlmux_send(c, "SELECT ?, ? * 2", p, 2);
        CHECK(rc == SQLMUX_OK);
    }
    CHECK(sqlmux_send(c, "COMMIT", NULL, 0) == SQLMUX_OK);
    CHECK(sqlmux_pending(c) == N + 2);
    sqlmux_result *begin = sqlmux_recv(c);
    CHECK(sqlmux_status(begin) == SQLMUX_OK);
    sqlmux_free(begin);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        sqlmux_result *r = sqlmux_recv(c);
        bool ok;
        if (i % 1000 == 999)
            ok = sqlmux_status(r) == SQLMUX_ERROR && strcmp(sqlmux_errcode(r), "SQL") == 0;
        else if (i % 2 == 0)
            ok = sqlmux_status(r) == SQLMUX_OK && sqlmux_last_id(r) == i + 1;
        else
            ok = sqlmux_step(r) == SQLMUX_ROW && sqlmux_int64(r, 0) == i + 1 && sqlmux_int64(r, 1) == 6 * i;
        if (!ok && bad++ == 0)
            fprintf(stderr, "  request %d: %s %s\n", i, sqlmux_errcode(r), sqlmux_errmsg(r));
        sqlmux_free(r);
    }
    CHECK(bad == 0);
    sqlmux_result *commit = sqlmux_recv(c);
    CHECK(sqlmux_status(commit) == SQLMUX_OK);
    sqlmux_free(commit);
    CHECK(sqlmux_pending(c) == 0);
    int64_t ms = now_ms() - t0;
    fprintf(stderr, "  %d pipelined requests in %lld ms\n", N, (long long)ms);
    CHECK(query_int(c, "SELECT count(*) FROM lt_pipe") == N / 2);

    /* Explicit flush, results read later. */
    for (int i = 0; i < 100; i++)
        CHECK(sqlmux_send_command(c, ".ping") == SQLMUX_OK);
    CHECK(sqlmux_flush(c) == SQLMUX_OK);
    for (int i = 0; i < 100; i++) {
        sqlmux_result *r = sqlmux_recv(c);
        CHECK(sqlmux_status(r) == SQLMUX_OK);
        sqlmux_free(r);
    }
    sqlmux_close(c);
}

/* Requests and answers far larger than the socket buffers and than the
 * daemon's read-ahead: sending must go on reading, or both sides wait on
 * each other. */
static void pipelining_large(void)
{
    sqlmux_conn *c = connect_or_die(url);
    enum { N = 600, SIZE = 64 * 1024 };
    char *text = malloc(SIZE);
    for (int i = 0; i < SIZE; i++)
        text[i] = (char)('a' + i % 26);
    for (int i = 0; i < N; i++) {
        sqlmux_value p[] = {sqlmux_val_textn(text, SIZE), sqlmux_val_int(i)};
        CHECK(sqlmux_send(c, "SELECT ?, ?", p, 2) == SQLMUX_OK);
    }
    int bad = 0;
    for (int i = 0; i < N; i++) {
        sqlmux_result *r = sqlmux_recv(c);
        bad += !(sqlmux_step(r) == SQLMUX_ROW && sqlmux_len(r, 0) == SIZE &&
                 memcmp(sqlmux_text(r, 0), text, SIZE) == 0 && sqlmux_int64(r, 1) == i);
        sqlmux_free(r);
    }
    CHECK(bad == 0);
    free(text);
    sqlmux_close(c);
}

/* ---- Connections ----------------------------------------------------- */

/* A TCP port on 127.0.0.1 with nothing listening. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static void expect_connect_error(const char *u, int timeout_ms, const char *needle)
{
    char *err = NULL;
    sqlmux_conn *c = sqlmux_connect(u, timeout_ms, &err);
    CHECK(c == NULL);
    CHECK(err != NULL);
    if (err != NULL && strstr(err, needle) == NULL)
        fprintf(stderr, "  connect %s: message \"%s\" lacks \"%s\"\n", u, err, needle);
    CHECK(err != NULL && strstr(err, needle) != NULL);
    free(err);
    sqlmux_close(c);
    CHECK(sqlmux_connect(u, timeout_ms, NULL) == NULL); /* errmsg may be NULL */
}

static void connect_refused(void)
{
    char u[64];
    snprintf(u, sizeof u, "sqlmux://127.0.0.1:%d", closed_port());
    expect_connect_error(u, 2000, "refused");
    expect_connect_error("unix:///nonexistent/sqlmux.sock", 2000, "No such file");
    expect_connect_error("http://127.0.0.1:7654", 2000, "bad URL");
    expect_connect_error("sqlmux://127.0.0.1:0", 2000, "bad port");
    expect_connect_error("sqlmux://127.0.0.1:99999", 2000, "bad port");
    expect_connect_error("sqlmux://127.0.0.1:7654/extra", 2000, "unexpected text");
    expect_connect_error("sqlmux://[::1", 2000, "unterminated");
    expect_connect_error("unix://", 2000, "no socket path");
    expect_connect_error("sqlmux://no-such-host.invalid:7654", 2000, "could not connect");
}

/* The URL forms that reach the daemon: the one given, bracket-less and
 * default-port forms are in connect_refused's parser checks; here the unix
 * socket and the $SQLMUX_URL default. */
static void connect_forms(void)
{
    const char *unix_url = getenv("LIBTEST_UNIX_URL");
    CHECK(unix_url != NULL);
    if (unix_url != NULL) {
        sqlmux_conn *c = connect_or_die(unix_url);
        CHECK(query_int(c, "SELECT 11") == 11);
        CHECK_STR(sqlmux_conn_url(c), unix_url);
        sqlmux_close(c);
    }
    setenv("SQLMUX_URL", url, 1);
    sqlmux_conn *c = connect_or_die(NULL);
    CHECK_STR(sqlmux_conn_url(c), url);
    CHECK(query_int(c, "SELECT 12") == 12);
    sqlmux_close(c);
    c = connect_or_die("");
    sqlmux_close(c);
    unsetenv("SQLMUX_URL");
}

/* A fake daemon on a thread: it listens on 127.0.0.1 and, for the one
 * client it accepts, answers the greeting .ping with +OK, then reads a
 * request and writes `reply` (NULL: nothing) and closes, or stays silent
 * until the client goes. */
struct fake {
    int listener;
    int port;
    const char *reply;
    bool accept;
    pthread_t thread;
};

/* Read from fd until a '\n' has come. */
static void read_line_from(int fd)
{
    char ch;
    while (read(fd, &ch, 1) == 1 && ch != '\n') {
    }
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    if (!f->accept)
        return NULL;
    int fd = accept(f->listener, NULL, NULL);
    if (fd < 0)
        return NULL;
    read_line_from(fd);
    if (write(fd, "+OK\n", 4) != 4)
        goto out;
    if (f->reply != NULL) {
        read_line_from(fd); /* "$len n" */
        read_line_from(fd); /* the SQL (one line in these tests) */
        size_t n = strlen(f->reply);
        if (write(fd, f->reply, n) != (ssize_t)n)
            goto out;
    } else {
        char buf[256];
        while (read(fd, buf, sizeof buf) > 0) {
        }
    }
out:
    close(fd);
    return NULL;
}

static void fake_start(struct fake *f, bool do_accept, const char *reply)
{
    memset(f, 0, sizeof *f);
    f->listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(f->listener, (struct sockaddr *)&a, sizeof a) < 0 || listen(f->listener, 8) < 0 ||
        getsockname(f->listener, (struct sockaddr *)&a, &len) < 0) {
        perror("fake daemon");
        exit(2);
    }
    f->port = ntohs(a.sin_port);
    f->accept = do_accept;
    f->reply = reply;
    pthread_create(&f->thread, NULL, fake_main, f);
}

static void fake_stop(struct fake *f)
{
    pthread_join(f->thread, NULL);
    close(f->listener);
}

static void timeouts(void)
{
    char u[64];
    struct fake f;

    /* Connected (the kernel's backlog accepts), but nobody answers. */
    fake_start(&f, false, NULL);
    snprintf(u, sizeof u, "sqlmux://127.0.0.1:%d", f.port);
    int64_t t0 = now_ms();
    expect_connect_error(u, 300, "no reply from the daemon within 300 ms");
    int64_t ms = now_ms() - t0;
    CHECK(ms >= 250 && ms < 3000);
    fake_stop(&f);

    /* Greets, then says nothing: the statement times out and the
     * connection is broken for good. */
    fake_start(&f, true, NULL);
    snprintf(u, sizeof u, "sqlmux://127.0.0.1:%d", f.port);
    sqlmux_conn *c = sqlmux_connect(u, 300, NULL);
    CHECK(c != NULL);
    if (c != NULL) {
        t0 = now_ms();
        exec_err(c, "SELECT 1", NULL, 0, "NOREPLY");
        ms = now_ms() - t0;
        CHECK(ms >= 250 && ms < 3000);
        CHECK(sqlmux_conn_errmsg(c) != NULL);
        exec_err(c, "SELECT 1", NULL, 0, "NOREPLY");
        CHECK(sqlmux_send(c, "SELECT 1", NULL, 0) == SQLMUX_ERROR);
        sqlmux_close(c);
    }
    fake_stop(&f);

    /* The real daemon, a statement slower than the timeout. */
    c = connect_or_die(url);
    sqlmux_set_timeout(c, 200);
    sqlmux_value p = sqlmux_val_int(300000000);
    exec_err(c,
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
             "SELECT count(*) FROM c",
             &p, 1, "NOREPLY");
    sqlmux_close(c);
    c = connect_or_die(url);
    CHECK(query_int(c, "SELECT 13") == 13);
    sqlmux_close(c);
}

static void closed_mid_result(void)
{
    char u[64];
    struct fake f;

    /* Two rows, then the connection closes: the rows are kept, the error
     * says CONNECTION. */
    fake_start(&f, true, "*a\t\tb\tTEXT\n=1\tx\n=2\ty\n");
    snprintf(u, sizeof u, "sqlmux://127.0.0.1:%d", f.port);
    sqlmux_conn *c = connect_or_die(u);
    sqlmux_result *r = sqlmux_exec(c, "SELECT a, b FROM t", NULL, 0);
    CHECK_STR(sqlmux_errcode(r), "CONNECTION");
    CHECK(sqlmux_rows(r) == 2 && sqlmux_ncols(r) == 2);
    CHECK_STR(sqlmux_coltype(r, 1), "TEXT");
    CHECK(sqlmux_step(r) == SQLMUX_ROW && sqlmux_int64(r, 0) == 1);
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK_STR(sqlmux_text(r, 1), "y");
    CHECK(sqlmux_step(r) == SQLMUX_ERROR);
    sqlmux_free(r);
    CHECK(sqlmux_conn_errmsg(c) != NULL);
    sqlmux_close(c);
    fake_stop(&f);

    /* The same, streamed, cut inside a line. */
    fake_start(&f, true, "*a\t\n=1\n=2\n=3");
    snprintf(u, sizeof u, "sqlmux://127.0.0.1:%d", f.port);
    c = connect_or_die(u);
    r = sqlmux_query(c, "SELECT a FROM t", NULL, 0);
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK(sqlmux_step(r) == SQLMUX_ROW && sqlmux_int64(r, 0) == 2);
    CHECK(sqlmux_step(r) == SQLMUX_ERROR);
    CHECK_STR(sqlmux_errcode(r), "CONNECTION");
    CHECK(strstr(sqlmux_errmsg(r), "middle of a reply") != NULL);
    sqlmux_free(r);
    sqlmux_close(c);
    fake_stop(&f);

    /* Not the protocol at all. */
    fake_start(&f, true, "HTTP/1.1 400 Bad Request\n");
    snprintf(u, sizeof u, "sqlmux://127.0.0.1:%d", f.port);
    c = connect_or_die(u);
    r = sqlmux_exec(c, "SELECT 1", NULL, 0);
    CHECK_STR(sqlmux_errcode(r), "BADREPLY");
    sqlmux_free(r);
    sqlmux_close(c);
    fake_stop(&f);

    /* A row with the wrong number of fields. */
    fake_start(&f, true, "*a\t\n=1\t2\n+OK rows=1\n");
    snprintf(u, sizeof u, "sqlmux://127.0.0.1:%d", f.port);
    c = connect_or_die(u);
    r = sqlmux_exec(c, "SELECT 1", NULL, 0);
    CHECK_STR(sqlmux_errcode(r), "BADREPLY");
    sqlmux_free(r);
    sqlmux_close(c);
    fake_stop(&f);
}

/* The daemon closes the connection itself after .quit: the answers sent
 * before still arrive, the later requests fail with CONNECTION. */
static void daemon_quits(void)
{
    sqlmux_conn *c = connect_or_die(url);
    CHECK(sqlmux_send_command(c, ".ping") == SQLMUX_OK);
    CHECK(sqlmux_send(c, "SELECT 21", NULL, 0) == SQLMUX_OK);
    CHECK(sqlmux_send_command(c, ".quit") == SQLMUX_OK);
    CHECK(sqlmux_send(c, "SELECT 22", NULL, 0) == SQLMUX_OK);
    CHECK(sqlmux_send(c, "SELECT 23", NULL, 0) == SQLMUX_OK);
    sqlmux_result *r = sqlmux_recv(c);
    CHECK(sqlmux_status(r) == SQLMUX_OK);
    sqlmux_free(r);
    r = sqlmux_recv(c);
    CHECK(sqlmux_step(r) == SQLMUX_ROW && sqlmux_int64(r, 0) == 21);
    sqlmux_free(r);
    r = sqlmux_recv(c);
    CHECK(sqlmux_status(r) == SQLMUX_OK);
    sqlmux_free(r);
    for (int i = 0; i < 2; i++) {
        r = sqlmux_recv(c);
        CHECK_STR(sqlmux_errcode(r), "CONNECTION");
        sqlmux_free(r);
    }
    CHECK(sqlmux_pending(c) == 0);
    CHECK(sqlmux_conn_errmsg(c) != NULL);
    exec_err(c, "SELECT 1", NULL, 0, "CONNECTION");
    sqlmux_close(c);
}

/* The daemon dies (SIGKILL) while a result streams. */
static void daemon_killed(void)
{
    const char *pid = getenv("LIBTEST_DAEMON_PID");
    CHECK(pid != NULL);
    if (pid == NULL)
        return;
    sqlmux_conn *c = connect_or_die(url);
    sqlmux_value p = sqlmux_val_int(50000000);
    sqlmux_result *r = sqlmux_query(c, count_sql, &p, 1);
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK(kill((pid_t)atol(pid), SIGKILL) == 0);
    int64_t rows = 1;
    int rc;
    while ((rc = sqlmux_step(r)) == SQLMUX_ROW)
        rows++;
    CHECK(rc == SQLMUX_ERROR);
    CHECK(rows < 50000000);
    CHECK_STR(sqlmux_errcode(r), "CONNECTION");
    sqlmux_free(r);
    exec_err(c, "SELECT 1", NULL, 0, "CONNECTION");
    sqlmux_close(c);
}

/* The cancel fd ends a wait at once; the daemon, seeing the connection
 * close, interrupts the statement and rolls back the transaction. */
struct canceller {
    int fd;
    int delay_ms;
};

static void *cancel_later(void *arg)
{
    struct canceller *k = arg;
    struct timespec ts = {k->delay_ms / 1000, (long)(k->delay_ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    if (write(k->fd, "x", 1) != 1)
        perror("cancel");
    return NULL;
}

static void interrupt(void)
{
    int fds[2];
    CHECK(pipe(fds) == 0);
    sqlmux_conn *c = connect_or_die(url);
    exec_ok(c, "CREATE TABLE IF NOT EXISTS lt_cancel (id INTEGER PRIMARY KEY, v TEXT)");
    exec_ok(c, "DELETE FROM lt_cancel");
    exec_ok(c, "BEGIN");
    exec_ok(c, "INSERT INTO lt_cancel (v) VALUES ('uncommitted')");
    sqlmux_set_cancel_fd(c, fds[0]);
    struct canceller k = {fds[1], 300};
    pthread_t t;
    pthread_create(&t, NULL, cancel_later, &k);
    int64_t t0 = now_ms();
    sqlmux_value p = sqlmux_val_int(2000000000);
    exec_err(c,
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
             "SELECT count(*) FROM c",
             &p, 1, "CANCELLED");
    int64_t ms = now_ms() - t0;
    CHECK(ms >= 250 && ms < 3000);
    pthread_join(t, NULL);
    CHECK(sqlmux_conn_errmsg(c) != NULL);
    sqlmux_close(c);

    /* The transaction was rolled back: its write lock is gone (an
     * IMMEDIATE transaction gets it) and its row never appears. */
    c = connect_or_die(url);
    exec_ok(c, "BEGIN IMMEDIATE");
    exec_ok(c, "INSERT INTO lt_cancel (v) VALUES ('committed')");
    exec_ok(c, "COMMIT");
    CHECK(query_int(c, "SELECT count(*) FROM lt_cancel WHERE v = 'uncommitted'") == 0);
    CHECK(query_int(c, "SELECT count(*) FROM lt_cancel WHERE v = 'committed'") == 1);
    sqlmux_close(c);
    close(fds[0]);
    close(fds[1]);
}

static void max_clients(void)
{
    sqlmux_conn *first = connect_or_die(url);
    expect_connect_error(url, 2000, "MAXCLIENTS");
    sqlmux_close(first);
}

/* ---- Logging in ------------------------------------------------------ */

/* The auth_* cases run against a daemon with the users of test_auth.py
 * (alice "wonder land": read-write everywhere; bob "b0b-secret": only
 * reads the default bind) and dave, whose password holds every character
 * a URL must escape. auth_fail_delay is short. */
#define DAVE_PASSWORD "p:w@ x/?&%#1"
#define DAVE_ENCODED  "p%3Aw%40%20x%2F%3F%26%25%231"

/* url (sqlmux://HOST:PORT) with USERINFO@ and ?QUERY (either may be
 * NULL). */
static void login_url(char *out, size_t n, const char *userinfo, const char *query)
{
    snprintf(out, n, "sqlmux://%s%s%s%s%s", userinfo != NULL ? userinfo : "", userinfo != NULL ? "@" : "",
             url + strlen("sqlmux://"), query != NULL ? "?" : "", query != NULL ? query : "");
}

/* connect to u fails with a message holding needle and not secret. */
static void expect_login_error(const char *u, const char *user, const char *password, const char *needle,
                               const char *secret)
{
    char *err = NULL;
    sqlmux_conn *c = sqlmux_connect_auth(u, user, password, 10000, &err);
    CHECK(c == NULL);
    CHECK(err != NULL);
    if (err != NULL && (strstr(err, needle) == NULL || (secret != NULL && strstr(err, secret) != NULL)))
        fprintf(stderr, "  connect %s: message \"%s\": want \"%s\"%s%s\n", u, err, needle,
                secret != NULL ? ", not " : "", secret != NULL ? secret : "");
    CHECK(err != NULL && strstr(err, needle) != NULL);
    CHECK(err == NULL || secret == NULL || strstr(err, secret) == NULL);
    free(err);
    sqlmux_close(c);
}

/* Logged in as alice: reads and writes default. */
static void check_alice(sqlmux_conn *c)
{
    CHECK_STR(sqlmux_conn_user(c), "alice");
    CHECK(query_int(c, "SELECT 41 + 1") == 42);
    exec_ok(c, "INSERT INTO test1 (color) VALUES ('by alice')");
}

/* Logged in as bob: reads default, may not write it. */
static void check_bob(sqlmux_conn *c)
{
    CHECK_STR(sqlmux_conn_user(c), "bob");
    CHECK(query_int(c, "SELECT count(*) >= 0 FROM test1") == 1);
    exec_err(c, "INSERT INTO test1 (color) VALUES ('by bob')", NULL, 0, "NOPERM");
}

/* USER:PASSWORD@ in the URL, ?user=&password=, both on a unix socket; the
 * URL shown hides the password. */
static void auth_url(void)
{
    char u[512], shown[512];

    login_url(u, sizeof u, "alice:wonder%20land", NULL);
    sqlmux_conn *c = connect_or_die(u);
    check_alice(c);
    login_url(shown, sizeof shown, "alice:***", NULL);
    CHECK_STR(sqlmux_conn_url(c), shown);
    sqlmux_close(c);

    login_url(u, sizeof u, NULL, "user=bob&password=b0b-secret");
    c = connect_or_die(u);
    check_bob(c);
    login_url(shown, sizeof shown, NULL, "user=bob&password=***");
    CHECK_STR(sqlmux_conn_url(c), shown);
    sqlmux_close(c);

    /* The URL's user, the query's password (and a trailing '/'). */
    snprintf(u, sizeof u, "sqlmux://bob@%s/?password=b0b-secret", url + strlen("sqlmux://"));
    c = connect_or_die(u);
    check_bob(c);
    sqlmux_close(c);

    const char *unix_url = getenv("LIBTEST_UNIX_URL");
    CHECK(unix_url != NULL);
    if (unix_url != NULL) {
        snprintf(u, sizeof u, "%s?password=wonder%%20land&user=alice", unix_url);
        c = connect_or_die(u);
        check_alice(c);
        snprintf(shown, sizeof shown, "%s?password=***&user=alice", unix_url);
        CHECK_STR(sqlmux_conn_url(c), shown);
        sqlmux_close(c);
    }
}

/* A password with ':', '@', ' ', '/', '?', '&', '%' and '#', percent-
 * encoded in the URL; and given to sqlmux_connect_auth() as it is. */
static void auth_special_password(void)
{
    char u[512];
    login_url(u, sizeof u, "dave:" DAVE_ENCODED, NULL);
    sqlmux_conn *c = connect_or_die(u);
    CHECK_STR(sqlmux_conn_user(c), "dave");
    CHECK(query_int(c, "SELECT 7") == 7);
    CHECK(strstr(sqlmux_conn_url(c), "p%3A") == NULL && strstr(sqlmux_conn_url(c), ":***@") != NULL);
    sqlmux_close(c);

    login_url(u, sizeof u, NULL, "user=dave&password=" DAVE_ENCODED);
    c = connect_or_die(u);
    CHECK_STR(sqlmux_conn_user(c), "dave");
    sqlmux_close(c);

    char *err = NULL;
    c = sqlmux_connect_auth(url, "dave", DAVE_PASSWORD, 10000, &err);
    CHECK(c != NULL);
    if (c == NULL)
        fprintf(stderr, "  sqlmux_connect_auth dave: %s\n", err != NULL ? err : "?");
    free(err);
    if (c != NULL) {
        CHECK_STR(sqlmux_conn_user(c), "dave");
        CHECK(query_int(c, "SELECT 8") == 8);
        /* Given arguments win over the URL's login. */
        sqlmux_close(c);
    }
    login_url(u, sizeof u, "bob:wrong", NULL);
    c = sqlmux_connect_auth(u, "alice", "wonder land", 10000, NULL);
    CHECK(c != NULL);
    if (c != NULL)
        check_alice(c);
    sqlmux_close(c);
    /* The raw password in the URL is not the password. */
    login_url(u, sizeof u, "dave:p:w@ x", NULL);
    expect_login_error(u, NULL, NULL, "AUTH invalid user name or password", "p:w@");
}

/* A refused login fails the connect with the daemon's AUTH answer and
 * never shows the password; logins that cannot be sent fail before. */
static void auth_refused(void)
{
    char u[512];

    login_url(u, sizeof u, "alice:not-the-password", NULL);
    expect_login_error(u, NULL, NULL, "AUTH invalid user name or password", "not-the-password");
    login_url(u, sizeof u, "nosuchuser:not-the-password", NULL);
    expect_login_error(u, NULL, NULL, "AUTH invalid user name or password", "not-the-password");
    login_url(u, sizeof u, NULL, "user=alice&password=not-the-password");
    expect_login_error(u, NULL, NULL, "AUTH invalid user name or password", "not-the-password");
    expect_login_error(url, "alice", "not-the-password", "AUTH invalid user name or password",
                       "not-the-password");
    expect_login_error(url, "alice", "not-the-password", " as alice: ", NULL);

    /* A user without a password, a password without a user. */
    unsetenv("SQLMUX_USER");
    unsetenv("SQLMUX_PASSWORD");
    login_url(u, sizeof u, "alice", NULL);
    expect_login_error(u, NULL, NULL, "no password for user alice", NULL);
    expect_login_error(url, "alice", NULL, "no password for user alice", NULL);
    login_url(u, sizeof u, ":wonder%20land", NULL);
    expect_login_error(u, NULL, NULL, "no user name", "wonder");
    expect_login_error(url, NULL, "wonder land", "no user name", "wonder");

    /* Bad URLs: the message shows the URL with the password hidden. */
    login_url(u, sizeof u, "alice:secret%zz", NULL);
    expect_login_error(u, NULL, NULL, "bad %-escape in the password", "secret");
    login_url(u, sizeof u, "alice:secret%00x", NULL);
    expect_login_error(u, NULL, NULL, ":***@", "secret");
    login_url(u, sizeof u, NULL, "user=alice&password=secret&color=red");
    expect_login_error(u, NULL, NULL, "unknown URL parameter", "secret");
    login_url(u, sizeof u, "alice:secret", "user=alice");
    expect_login_error(u, NULL, NULL, "user name is given twice", "secret");
    login_url(u, sizeof u, "alice:%20secret", NULL);
    expect_login_error(u, NULL, NULL, "may not begin or end with a blank", "secret");
    expect_login_error(url, "alice", "two\nlines", "line break", "lines");
    expect_login_error(url, "al ice", "wonder land", "user name may not hold blanks", "wonder");
}

/* $SQLMUX_USER and $SQLMUX_PASSWORD when the URL has no login; the URL's
 * user and password each win over them. sqlmux_url_user() tells. */
static void auth_env(void)
{
    char u[512];
    bool has = true;

    unsetenv("SQLMUX_USER");
    unsetenv("SQLMUX_PASSWORD");
    CHECK(sqlmux_url_user(url, &has) == NULL && !has);

    setenv("SQLMUX_USER", "alice", 1);
    setenv("SQLMUX_PASSWORD", "wonder land", 1);
    sqlmux_conn *c = connect_or_die(url);
    check_alice(c);
    sqlmux_close(c);
    char *user = sqlmux_url_user(url, &has);
    CHECK_STR(user, "alice");
    CHECK(has);
    free(user);

    /* The URL's user with the environment's password. */
    setenv("SQLMUX_PASSWORD", "b0b-secret", 1);
    login_url(u, sizeof u, "bob", NULL);
    c = connect_or_die(u);
    check_bob(c);
    sqlmux_close(c);
    user = sqlmux_url_user(u, &has);
    CHECK_STR(user, "bob");
    CHECK(has);
    free(user);

    /* The URL's password wins over the environment's. */
    setenv("SQLMUX_PASSWORD", "not-the-password", 1);
    login_url(u, sizeof u, "bob:b0b-secret", NULL);
    c = connect_or_die(u);
    check_bob(c);
    sqlmux_close(c);
    expect_login_error(url, NULL, NULL, "AUTH invalid user name or password", "not-the-password");

    /* A user in the environment, no password anywhere. */
    unsetenv("SQLMUX_PASSWORD");
    user = sqlmux_url_user(NULL, &has); /* NULL: $SQLMUX_URL, else the default */
    CHECK_STR(user, "alice");
    CHECK(!has);
    free(user);
    expect_login_error(url, NULL, NULL, "no password for user alice", NULL);
    unsetenv("SQLMUX_USER");
}

/* Without a login the daemon answers NOAUTH; sqlmux_auth() logs in on the
 * open connection; a refused one leaves it as it was; arguments that
 * cannot be sent are MISUSE. */
static void auth_explicit(void)
{
    unsetenv("SQLMUX_USER");
    unsetenv("SQLMUX_PASSWORD");
    sqlmux_conn *c = connect_or_die(url);
    CHECK(sqlmux_conn_user(c) == NULL);
    exec_err(c, "SELECT 1", NULL, 0, "NOAUTH");
    sqlmux_result *r = sqlmux_command(c, ".tables");
    CHECK_STR(sqlmux_errcode(r), "NOAUTH");
    sqlmux_free(r);

    r = sqlmux_auth(c, "alice", "not-the-password");
    CHECK_STR(sqlmux_errcode(r), "AUTH");
    CHECK_STR(sqlmux_errmsg(r), "invalid user name or password");
    sqlmux_free(r);
    CHECK(sqlmux_conn_errmsg(c) == NULL);
    CHECK(sqlmux_conn_user(c) == NULL);
    exec_err(c, "SELECT 1", NULL, 0, "NOAUTH");

    const char *misuse[][2] = {
        {"", "x"},
        {"alice", ""},
        {"al ice", "x"},
        {"alice", " wonder land"},
        {"alice", "x\n"},
        {"alice", "a\rb"},
        {"alice", "wonder land\t"},
    };
    for (size_t i = 0; i < sizeof misuse / sizeof misuse[0]; i++) {
        r = sqlmux_auth(c, misuse[i][0], misuse[i][1]);
        CHECK_STR(sqlmux_errcode(r), "MISUSE");
        sqlmux_free(r);
    }
    r = sqlmux_auth(c, NULL, NULL);
    CHECK_STR(sqlmux_errcode(r), "MISUSE");
    sqlmux_free(r);
    char longpw[SQLMUX_AUTH_MAX + 2];
    memset(longpw, 'x', sizeof longpw - 1);
    longpw[sizeof longpw - 1] = '\0';
    r = sqlmux_auth(c, "alice", longpw);
    CHECK_STR(sqlmux_errcode(r), "MISUSE");
    sqlmux_free(r);
    /* Not while pipelined results wait. */
    CHECK(sqlmux_send_command(c, ".ping") == SQLMUX_OK);
    r = sqlmux_auth(c, "alice", "wonder land");
    CHECK_STR(sqlmux_errcode(r), "MISUSE");
    sqlmux_free(r);
    r = sqlmux_recv(c);
    CHECK(sqlmux_status(r) == SQLMUX_OK);
    sqlmux_free(r);

    r = sqlmux_auth(c, "alice", "wonder land");
    CHECK(sqlmux_status(r) == SQLMUX_OK);
    CHECK_STR(sqlmux_fact(r, "user"), "alice");
    sqlmux_free(r);
    check_alice(c);
    /* A refused second login keeps the first. */
    r = sqlmux_auth(c, "bob", "wrong");
    CHECK_STR(sqlmux_errcode(r), "AUTH");
    sqlmux_free(r);
    check_alice(c);
    r = sqlmux_auth(c, "bob", "b0b-secret");
    CHECK(sqlmux_status(r) == SQLMUX_OK);
    sqlmux_free(r);
    check_bob(c);
    sqlmux_close(c);
}

/* A daemon without users: a login given with the URL is not needed and
 * the connection works; sqlmux_auth() says AUTH. */
static void auth_off(void)
{
    char u[512];
    login_url(u, sizeof u, "alice:whatever", NULL);
    sqlmux_conn *c = connect_or_die(u);
    CHECK(sqlmux_conn_user(c) == NULL);
    CHECK(query_int(c, "SELECT 5") == 5);
    sqlmux_result *r = sqlmux_auth(c, "alice", "whatever");
    CHECK_STR(sqlmux_errcode(r), "AUTH");
    CHECK(strstr(sqlmux_errmsg(r), "authentication is off") != NULL);
    sqlmux_free(r);
    CHECK(query_int(c, "SELECT 6") == 6);
    sqlmux_close(c);
    /* A user without a password: nothing to log in to, no error. */
    unsetenv("SQLMUX_PASSWORD");
    login_url(u, sizeof u, "bob", NULL);
    c = connect_or_die(u);
    CHECK(sqlmux_conn_user(c) == NULL);
    CHECK(query_int(c, "SELECT 7") == 7);
    sqlmux_close(c);
}

/* ---- The note's scenario through the library ------------------------- */

/* Three binds behind one connection: statements go to the bind of their
 * tables, transactions stay on one bind. The Python side then checks the
 * database files. */
static void note_scenario(void)
{
    sqlmux_conn *c = connect_or_die(url);
    sqlmux_value green = sqlmux_val_text("green");
    sqlmux_result *r = sqlmux_exec(c, "INSERT INTO test1 (color) VALUES (?)", &green, 1);
    CHECK(sqlmux_changes(r) == 1 && sqlmux_last_id(r) == 1);
    sqlmux_free(r);
    exec_ok(c, "INSERT INTO test2 DEFAULT VALUES");
    sqlmux_value seven = sqlmux_val_int(7);
    exec_ok(c, "BEGIN");
    r = sqlmux_exec(c, "INSERT INTO test3 (id) VALUES (?)", &seven, 1);
    CHECK(sqlmux_last_id(r) == 7);
    sqlmux_free(r);
    exec_ok(c, "INSERT INTO test1 (color) VALUES ('other bind')"); /* joins the transaction (issue 16) */
    exec_ok(c, "COMMIT");
    r = sqlmux_exec(c, "SELECT id, color FROM test3", NULL, 0);
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK(sqlmux_int64(r, 0) == 7);
    CHECK_STR(sqlmux_text(r, 1), "blue");
    CHECK_STR(sqlmux_coltype(r, 1), "VARCHAR(64)");
    sqlmux_free(r);
    r = sqlmux_exec(c, "SELECT color FROM test2", NULL, 0);
    CHECK(sqlmux_step(r) == SQLMUX_ROW);
    CHECK_STR(sqlmux_text(r, 0), "red");
    sqlmux_free(r);
    /* Another connection sees the in-memory bind's row. */
    sqlmux_conn *other = connect_or_die(url);
    CHECK(query_int(other, "SELECT count(*) FROM test3 WHERE id = 7") == 1);
    sqlmux_close(other);
    sqlmux_close(c);
}

/* One connection per thread, at once. */
static void *thread_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    sqlmux_conn *c = connect_or_die(url);
    for (int i = 0; i < 300; i++) {
        sqlmux_value p[] = {sqlmux_val_int(id), sqlmux_val_int(i)};
        sqlmux_result *r = sqlmux_exec(c, "INSERT INTO lt_threads (t, i) VALUES (?, ?)", p, 2);
        if (sqlmux_status(r) != SQLMUX_OK) {
            fprintf(stderr, "  thread %d: %s %s\n", id, sqlmux_errcode(r), sqlmux_errmsg(r));
            sqlmux_free(r);
            sqlmux_close(c);
            return (void *)1;
        }
        sqlmux_free(r);
    }
    sqlmux_close(c);
    return NULL;
}

static void threads(void)
{
    sqlmux_conn *c = connect_or_die(url);
    exec_ok(c, "CREATE TABLE IF NOT EXISTS lt_threads (t INTEGER, i INTEGER)");
    exec_ok(c, "DELETE FROM lt_threads");
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)i);
    for (int i = 0; i < 4; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        CHECK(ret == NULL);
    }
    CHECK(query_int(c, "SELECT count(*) FROM lt_threads") == 1200);
    CHECK(query_int(c, "SELECT count(DISTINCT t) FROM lt_threads") == 4);
    sqlmux_close(c);
}

/* ---- Runner ---------------------------------------------------------- */

static const struct {
    const char *name;
    void (*fn)(void);
} cases[] = {
    {"types", types},
    {"sql_any_bytes", sql_any_bytes},
    {"columns_and_rows", columns_and_rows},
    {"changes_and_last_id", changes_and_last_id},
    {"server_errors", server_errors},
    {"misuse", misuse},
    {"commands", commands},
    {"streaming", streaming},
    {"pipelining", pipelining},
    {"pipelining_large", pipelining_large},
    {"connect_refused", connect_refused},
    {"connect_forms", connect_forms},
    {"timeouts", timeouts},
    {"closed_mid_result", closed_mid_result},
    {"daemon_quits", daemon_quits},
    {"daemon_killed", daemon_killed},
    {"interrupt", interrupt},
    {"max_clients", max_clients},
    {"note_scenario", note_scenario},
    {"threads", threads},
    {"auth_url", auth_url},
    {"auth_special_password", auth_special_password},
    {"auth_refused", auth_refused},
    {"auth_env", auth_env},
    {"auth_explicit", auth_explicit},
    {"auth_off", auth_off},
};

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: libtest URL CASE...\ncases:");
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            fprintf(stderr, " %s", cases[i].name);
        fputc('\n', stderr);
        return 2;
    }
    url = argv[1];
    for (int a = 2; a < argc; a++) {
        size_t i = 0;
        while (i < sizeof cases / sizeof cases[0] && strcmp(cases[i].name, argv[a]) != 0)
            i++;
        if (i == sizeof cases / sizeof cases[0]) {
            fprintf(stderr, "no case %s\n", argv[a]);
            return 2;
        }
        unit_failed_checks = 0;
        cases[i].fn();
        if (unit_failed_checks) {
            unit_failed_tests++;
            printf("not ok - %s\n", cases[i].name);
        } else {
            printf("ok - %s\n", cases[i].name);
        }
        fflush(stdout);
    }
    UNIT_MAIN_END;
}
