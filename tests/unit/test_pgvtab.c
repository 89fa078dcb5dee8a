/*
 * Tests of the PostgreSQL virtual table module (daemon/pgvtab.c) and the
 * two-phase commit primitives (daemon/pg_2pc.c) against a real PostgreSQL.
 *
 * tests/integration/test_pgvtab.py starts a private cluster (statements
 * logged: log_statement = all) and runs this program with
 *   SQLMUX_PGVTAB_CONNINFO   libpq conninfo of a fresh database
 *   SQLMUX_PGVTAB_LOG        the server's log file (what PostgreSQL received)
 *   SQLMUX_PGVTAB_NOPREP     conninfo of a server with max_prepared_transactions = 0
 *   SQLMUX_PGVTAB_DATADIR    an empty folder (the daemon id)
 * Without them (tests/run runs every unit binary) it reports a skip.
 *
 * Results are checked against a plain SQLite table holding a copy of the
 * same rows with the same declared types: the virtual table must answer as
 * that table would, whatever it pushed down.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/pg_2pc.h"
#include "daemon/pgvtab.h"
#include "tests/unit/unit.h"

static const char *conninfo;
static PGconn *pg;    /* the module's connection (the callback's) */
static PGconn *admin; /* set-up and checks, its own session */
static bool unavailable;
static sqlite3 *db;
static struct pgvtab *v;
static struct config cfg;
static struct bind_conf binds[2];

static PGconn *get_conn(void *arg, size_t bind, char **err)
{
    (void)arg;
    if (bind != 1 || unavailable) {
        *err = strdup("test: bind down");
        return NULL;
    }
    if (pg && PQstatus(pg) != CONNECTION_OK) {
        PQfinish(pg);
        pg = NULL;
    }
    if (!pg) {
        pg = PQconnectdb(conninfo);
        if (PQstatus(pg) != CONNECTION_OK) {
            *err = strdup(PQerrorMessage(pg));
            PQfinish(pg);
            pg = NULL;
        }
    }
    return pg;
}

static void admin_exec(const char *sql)
{
    PGresult *r = PQexec(admin, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fprintf(stderr, "  set-up failed: %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

static char *admin_value(const char *sql)
{
    static char buf[256];
    PGresult *r = PQexec(admin, sql);
    snprintf(buf, sizeof buf, "%s",
             PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "(error)");
    PQclear(r);
    return buf;
}

static void sql_exec(const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fprintf(stderr, "  sqlite: %s: %s\n", sql, msg);
    sqlite3_free(msg);
}

/* sql_exec() of a formatted statement (the exposed table's name in it). */
__attribute__((format(printf, 1, 2))) static void execf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *sql = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    sql_exec(sql);
    sqlite3_free(sql);
}

/* The rows of sql as one string: values separated by ',', rows by ';',
 * each value with its type letter (i, r, t, b, n). NULL on an error (the
 * message in errbuf). */
static char errbuf[512];
static char *rows_of(const char *sql)
{
    sqlite3_stmt *st;
    errbuf[0] = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(errbuf, sizeof errbuf, "%s", sqlite3_errmsg(db));
        return NULL;
    }
    sqlite3_str *s = sqlite3_str_new(NULL);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            if (i)
                sqlite3_str_appendchar(s, 1, ',');
            switch (sqlite3_column_type(st, i)) {
            case SQLITE_INTEGER: sqlite3_str_appendf(s, "i%lld", sqlite3_column_int64(st, i)); break;
            case SQLITE_FLOAT: sqlite3_str_appendf(s, "r%!.17g", sqlite3_column_double(st, i)); break;
            case SQLITE_TEXT: sqlite3_str_appendf(s, "t%s", sqlite3_column_text(st, i)); break;
            case SQLITE_BLOB: {
                sqlite3_str_appendchar(s, 1, 'b');
                const unsigned char *b = sqlite3_column_blob(st, i);
                for (int k = 0; k < sqlite3_column_bytes(st, i); k++)
                    sqlite3_str_appendf(s, "%02x", b[k]);
                break;
            }
            default: sqlite3_str_appendchar(s, 1, 'n');
            }
        }
        sqlite3_str_appendchar(s, 1, ';');
    }
    if (rc != SQLITE_DONE)
        snprintf(errbuf, sizeof errbuf, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    char *out = sqlite3_str_finish(s);
    if (rc != SQLITE_DONE) {
        sqlite3_free(out);
        return NULL;
    }
    return out ? out : sqlite3_mprintf("");
}

/* ---- The server log: what PostgreSQL received ------------------------- */

static long log_mark(void)
{
    const char *path = getenv("SQLMUX_PGVTAB_LOG");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

/* The log written since mark (the server writes it at once; a short wait
 * for the collector-less file). malloc'd. */
static char *log_since(long mark)
{
    const char *path = getenv("SQLMUX_PGVTAB_LOG");
    usleep(150 * 1000);
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    long n = end > mark ? end - mark : 0;
    char *buf = malloc((size_t)n + 1);
    fseek(f, mark, SEEK_SET);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = 0;
    fclose(f);
    return buf;
}

#define CHECK_LOG(log, needle)                                                                               \
    do {                                                                                                     \
        if (!strstr((log), (needle))) {                                                                      \
            unit_failed_checks++;                                                                            \
            fprintf(stderr, "  %s:%d: PostgreSQL did not receive \"%s\"; log:\n%s\n", __FILE__, __LINE__,    \
                    (needle), (log));                                                                        \
        }                                                                                                    \
    } while (0)

#define CHECK_NOT_LOG(log, needle)                                                                           \
    do {                                                                                                     \
        if (strstr((log), (needle))) {                                                                       \
            unit_failed_checks++;                                                                            \
            fprintf(stderr, "  %s:%d: PostgreSQL received \"%s\"; log:\n%s\n", __FILE__, __LINE__, (needle), \
                    (log));                                                                                  \
        }                                                                                                    \
    } while (0)

/* SQL function touch_wc(): another session moves wc's row 'a' (n + 1). */
static void touch_wc(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    admin_exec("UPDATE wc SET n = n + 1 WHERE name = 'a'");
    sqlite3_result_int(ctx, 100);
}

static char vname[128]; /* the exposed name of the last expose() */

static int expose(const char *table)
{
    char *err = NULL;
    int rc = pgvtab_expose(v, 1, "", table, vname, sizeof vname, &err);
    if (rc != 0)
        fprintf(stderr, "  expose %s: %s\n", table, err ? err : "?");
    free(err);
    return rc;
}

/* ---- Set-up ------------------------------------------------------------ */

/* t: an ICU collation, whose order is not SQLite's (ABC > abc) */
static const char *TYPES_DDL =
    "CREATE TABLE t_types (id int PRIMARY KEY, i4 int, i8 bigint, n numeric(20,5), f float8, f4 real, "
    "t text COLLATE \"und-x-icu\", b bytea, ok bool, ts timestamp, d date, v varchar(10))";

static const char *TYPES_DECL = "CREATE TABLE loc (id INTEGER, i4 INTEGER, i8 BIGINT, n NUMERIC(20,5), "
                                "f DOUBLE PRECISION, f4 REAL, t TEXT, b BLOB, ok BOOLEAN, ts TIMESTAMP, "
                                "d DATE, v VARCHAR(10))";

static void setup(void)
{
    admin_exec("DROP TABLE IF EXISTS t_types, big, w, wc");
    admin_exec(TYPES_DDL);
    admin_exec(
        "INSERT INTO t_types VALUES "
        "(1, 5, 9007199254740993, 12.5, 1.5, 1.1, 'abc', '\\x00ff10', true, '2024-02-29 13:45:00', "
        "'2024-02-29', 'x'),"
        "(2, -3, -1, 42, 'Infinity', 2.5, 'ABC', '\\x', false, '1999-12-31 23:59:59.5', '1999-12-31', 'y'),"
        "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
        "(4, 0, 0, 'NaN', 'NaN', 0, '', '\\x41', false, '2024-01-01 00:00:00', '2024-01-01', ''),"
        "(5, 7, 7, -0.00001, '-Infinity', -1, 'héllo wörld', '\\xff', true, '2024-02-29 13:45:00', "
        "'2024-03-01', 'z'),"
        "(6, 5, 123, 7, 7.25, 7.25, '10', '\\x3130', true, '2030-06-01 12:00:00', '2030-06-01', '10'),"
        "(7, 100, 9, 100.125, 1e300, 3, 'b''q\"x\\y', '\\x00', false, NULL, NULL, 'q'),"
        "(8, 6, 5, 6, 6, 6, 'abd', '\\x0001', NULL, '2024-02-29 13:45:01', '2024-02-28', 'ab')");
    admin_exec("CREATE TABLE big (id int PRIMARY KEY, val int NOT NULL, name text)");
    admin_exec("INSERT INTO big SELECT g, g % 1000, 'name ' || g FROM generate_series(1, 1000000) g");
    admin_exec("ANALYZE big");
    admin_exec("ANALYZE t_types");
    admin_exec("CREATE TABLE w (id serial PRIMARY KEY, name text UNIQUE, n int, data bytea)");
    admin_exec("CREATE TABLE wc (name text, n int)"); /* no key: rows addressed by ctid */
    sql_exec("CREATE TABLE s (id INTEGER PRIMARY KEY)");
    sql_exec("WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 1000) "
             "INSERT INTO s SELECT (i * 997) % 1000000 + 1 FROM k");
    /* SQLite's planner takes a table without statistics for a million rows */
    sql_exec("ANALYZE s");
}

/* ---- Tests ------------------------------------------------------------- */

static void test_expose(void)
{
    char name[128], *err = NULL;
    CHECK(pgvtab_expose(v, 1, "", "t_types", name, sizeof name, &err) == 0);
    CHECK_STR(name, "\"main\".\"pg$pg$public$t_types\"");
    free(err);
    err = NULL;
    CHECK(pgvtab_expose(v, 1, "public", "t_types", name, sizeof name, &err) == 0);
    CHECK_STR(name, "\"main\".\"pg$pg$public$t_types\"");
    free(err);
    err = NULL;
    CHECK(pgvtab_expose(v, 1, "", "no_such_table", name, sizeof name, &err) == -1);
    CHECK(err && strstr(err, "no_such_table"));
    CHECK_STR(pgvtab_sqlstate(v), "42P01");
    free(err);
    err = NULL;
    CHECK(pgvtab_expose(v, 0, "", "t_types", name, sizeof name, &err) == -1);
    free(err);
    /* declared types as the reply shows them */
    char *r = rows_of(
        "SELECT group_concat(name || ' ' || type, ', ') FROM pragma_table_info('pg$pg$public$t_types')");
    CHECK_STR(r, "tid INTEGER, i4 INTEGER, i8 BIGINT, n NUMERIC(20,5), f DOUBLE PRECISION, f4 REAL, t TEXT, "
                 "b BLOB, ok BOOLEAN, ts TIMESTAMP WITHOUT TIME ZONE, d DATE, v CHARACTER VARYING(10);");
    sqlite3_free(r);
}

static void test_types(void)
{
    CHECK(expose("t_types") == 0);
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT * FROM %s ORDER BY id", vname);
    char *r = rows_of(sql);
    CHECK_STR(r,
              "i1,i5,i9007199254740993,r12.5,r1.5,r1.1000000000000001,tabc,b00ff10,i1,t2024-02-29 13:45:00,"
              "t2024-02-29,tx;"
              "i2,i-3,i-1,i42,rInf,r2.5,tABC,b,i0,t1999-12-31 23:59:59.5,t1999-12-31,ty;"
              "i3,n,n,n,n,n,n,n,n,n,n,n;"
              "i4,i0,i0,n,n,r0.0,t,b41,i0,t2024-01-01 00:00:00,t2024-01-01,t;"
              "i5,i7,i7,r-1.0000000000000001e-05,r-Inf,r-1.0,th\xc3\xa9llo w\xc3\xb6rld,bff,i1,"
              "t2024-02-29 13:45:00,t2024-03-01,tz;"
              "i6,i5,i123,i7,r7.25,r7.25,t10,b3130,i1,t2030-06-01 12:00:00,t2030-06-01,t10;"
              "i7,i100,i9,r100.125,r1.0e+300,r3.0,tb'q\"x\\y,b00,i0,n,n,tq;"
              "i8,i6,i5,i6,r6.0,r6.0,tabd,b0001,n,t2024-02-29 13:45:01,t2024-02-28,tab;");
    sqlite3_free(r);
    /* the copy the comparisons run against */
    sql_exec("DROP TABLE IF EXISTS loc");
    sql_exec(TYPES_DECL);
    execf("INSERT INTO loc SELECT * FROM %s", vname);
}

/* Every WHERE gives what the plain SQLite copy gives. */
static void test_same_as_sqlite(void)
{
    static const char *cols[] = {"id", "i4", "i8", "n", "f", "f4", "t", "b", "ok", "ts", "d", "v"};
    static const char *vals[] = {"5",
                                 "5.0",
                                 "5.5",
                                 "-3",
                                 "'5'",
                                 "'abc'",
                                 "'ABC'",
                                 "''",
                                 "'10'",
                                 "x'00ff10'",
                                 "x''",
                                 "NULL",
                                 "12.5",
                                 "1e400",
                                 "-1e400",
                                 "'2024-02-29'",
                                 "'2024-02-29 13:45:00'",
                                 "'héllo wörld'",
                                 "'a'",
                                 "0",
                                 "1",
                                 "9007199254740993",
                                 "'x'",
                                 "x'41'",
                                 "'b''q\"x\\y'",
                                 "'abc' || char(0)",
                                 "'ab' || char(0) || 'z'",
                                 "char(0)",
                                 "CAST(x'ff' AS TEXT)",
                                 "'ab' || CAST(x'c3' AS TEXT)",
                                 "CAST(x'616263eda080' AS TEXT)"};
    static const char *ops[] = {"=", "<>", "<", "<=", ">", ">=", "IS", "IS NOT"};
    char a[512], b[512];
    int n = 0, bad = 0;
    for (size_t c = 0; c < sizeof cols / sizeof *cols; c++) {
        for (size_t o = 0; o < sizeof ops / sizeof *ops; o++) {
            for (size_t k = 0; k < sizeof vals / sizeof *vals; k++) {
                snprintf(a, sizeof a, "SELECT id FROM %s WHERE %s %s %s ORDER BY id", vname, cols[c], ops[o],
                         vals[k]);
                snprintf(b, sizeof b, "SELECT id FROM loc WHERE %s %s %s ORDER BY id", cols[c], ops[o],
                         vals[k]);
                char *ra = rows_of(a), *rb = rows_of(b);
                n++;
                if (!ra || !rb || strcmp(ra, rb) != 0) {
                    if (bad++ < 15)
                        fprintf(stderr, "  WHERE %s %s %s: vtab %s (%s), sqlite %s\n", cols[c], ops[o],
                                vals[k], ra ? ra : "error", errbuf, rb ? rb : "error");
                    unit_failed_checks++;
                }
                sqlite3_free(ra);
                sqlite3_free(rb);
            }
        }
        static const char *more[] = {"IS NULL",
                                     "IS NOT NULL",
                                     "IN (5, '5', 'abc', x'41', NULL, 7.25)",
                                     "IN (1, 2, 3)",
                                     "NOT IN (5, 7)",
                                     "IN ('abc', 'ABC', 'x')",
                                     "IN (SELECT 5 UNION SELECT 'abc')",
                                     "IN ('abc' || char(0), 'ABC')",
                                     "LIKE 'a%'",
                                     "= 'abc' COLLATE NOCASE",
                                     "< 'b' COLLATE NOCASE",
                                     "BETWEEN 1 AND 6",
                                     "BETWEEN 'a' AND 'b'",
                                     "IN ()"};
        for (size_t m = 0; m < sizeof more / sizeof *more; m++) {
            snprintf(a, sizeof a, "SELECT id FROM %s WHERE %s %s ORDER BY id", vname, cols[c], more[m]);
            snprintf(b, sizeof b, "SELECT id FROM loc WHERE %s %s ORDER BY id", cols[c], more[m]);
            char *ra = rows_of(a), *rb = rows_of(b);
            n++;
            if (!ra || !rb || strcmp(ra, rb) != 0) {
                if (bad++ < 15)
                    fprintf(stderr, "  WHERE %s %s: vtab %s (%s), sqlite %s\n", cols[c], more[m],
                            ra ? ra : "error", errbuf, rb ? rb : "error");
                unit_failed_checks++;
            }
            sqlite3_free(ra);
            sqlite3_free(rb);
        }
    }
    /* ORDER BY / LIMIT / OFFSET on every column */
    for (size_t c = 0; c < sizeof cols / sizeof *cols; c++) {
        for (int desc = 0; desc < 2; desc++) {
            snprintf(a, sizeof a, "SELECT id FROM %s ORDER BY %s %s, id LIMIT 4 OFFSET 1", vname, cols[c],
                     desc ? "DESC" : "");
            snprintf(b, sizeof b, "SELECT id FROM loc ORDER BY %s %s, id LIMIT 4 OFFSET 1", cols[c],
                     desc ? "DESC" : "");
            char *ra = rows_of(a), *rb = rows_of(b);
            n++;
            if (!ra || !rb || strcmp(ra, rb) != 0) {
                if (bad++ < 15)
                    fprintf(stderr, "  ORDER BY %s %s: vtab %s (%s), sqlite %s\n", cols[c],
                            desc ? "DESC" : "", ra ? ra : "error", errbuf, rb ? rb : "error");
                unit_failed_checks++;
            }
            sqlite3_free(ra);
            sqlite3_free(rb);
        }
    }
    fprintf(stderr, "  %d statements compared, %d differed\n", n, bad);
}

/* What PostgreSQL received for each pushed operator. */
static void test_pushdown_sent(void)
{
    static const struct {
        const char *where, *sent;
    } cases[] = {
        {"i4 = 5", "WHERE \"i4\" = $1::int8"},
        {"i4 < 5", "WHERE \"i4\" < $1::int8"},
        {"i4 <= 5", "WHERE \"i4\" <= $1::int8"},
        {"i4 > 5", "WHERE \"i4\" > $1::int8"},
        {"i4 >= 5", "WHERE \"i4\" >= $1::int8"},
        {"i4 <> 5", "WHERE \"i4\" <> $1::int8"},
        {"i4 IS NULL", "WHERE \"i4\" IS NULL"},
        {"i4 IS NOT NULL", "WHERE \"i4\" IS NOT NULL"},
        {"i4 IN (5, 7)", "WHERE \"i4\" = ANY($1::int8[])"},
        {"t = 'abc'", "WHERE \"t\" = $1::text"},
        {"t < 'abc'", "WHERE \"t\" < $1::text COLLATE \"C\""},
        {"t IN ('abc', 'x\"y')", "WHERE \"t\" = ANY($1::text[])"},
        {"b = x'00ff10'", "WHERE \"b\" = $1::bytea"},
        {"ok = 1", "WHERE \"ok\"::int4 = $1::int8"},
        {"ts > '2024-01-01'", "WHERE \"ts\"::text > $1::text COLLATE \"C\""},
        {"f > 2", "WHERE \"f\" > $1::int8"},
        {"n > 2.5", "WHERE \"n\" > $1::float8"},
        {"i4 = 5 AND t = 'abc'", "AND"},
        {"t < CAST(x'ff' AS TEXT)", "WHERE convert_to(\"t\", 'UTF8') < $1::bytea"},
    };
    char sql[256];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        long mark = log_mark();
        snprintf(sql, sizeof sql, "SELECT id FROM %s WHERE %s", vname, cases[i].where);
        sqlite3_free(rows_of(sql));
        char *log = log_since(mark);
        CHECK_LOG(log, cases[i].sent);
        free(log);
    }
    /* a value goes as a parameter, never in the SQL */
    long mark = log_mark();
    snprintf(sql, sizeof sql, "SELECT id FROM %s WHERE t = 'x''); DROP TABLE big; --'", vname);
    sqlite3_free(rows_of(sql));
    char *log = log_since(mark);
    CHECK_LOG(log, "parameters: $1 = 'x''); DROP TABLE big; --'");
    CHECK_NOT_LOG(log, "FROM \"public\".\"t_types\" WHERE \"t\" = 'x");
    free(log);
    CHECK_STR(admin_value("SELECT count(*) FROM big"), "1000000");
    /* LIKE and NOCASE stay SQLite's: nothing pushed */
    mark = log_mark();
    snprintf(sql, sizeof sql, "SELECT id FROM %s WHERE t LIKE 'a%%' OR t = 'x' COLLATE NOCASE", vname);
    sqlite3_free(rows_of(sql));
    log = log_since(mark);
    CHECK_NOT_LOG(log, "WHERE");
    free(log);
    /* colUsed: only the columns used */
    mark = log_mark();
    snprintf(sql, sizeof sql, "SELECT t FROM %s WHERE i4 = 5", vname);
    sqlite3_free(rows_of(sql));
    log = log_since(mark);
    CHECK_LOG(log, "SELECT \"i4\", \"t\", \"id\" FROM \"public\".\"t_types\" WHERE");
    free(log);
}

static void test_limit_in_and_rows_fetched(void)
{
    CHECK(expose("big") == 0);
    char sql[256];
    long mark = log_mark();
    uint64_t before = pgvtab_rows_fetched(v);
    snprintf(sql, sizeof sql, "SELECT id FROM %s ORDER BY id DESC LIMIT 3 OFFSET 2", vname);
    char *r = rows_of(sql);
    CHECK_STR(r, "i999998;i999997;i999996;");
    sqlite3_free(r);
    CHECK(pgvtab_rows_fetched(v) - before == 3);
    char *log = log_since(mark);
    CHECK_LOG(log, "ORDER BY \"id\" DESC NULLS LAST LIMIT $1::int8 OFFSET $2::int8");
    free(log);

    before = pgvtab_rows_fetched(v);
    snprintf(sql, sizeof sql, "SELECT id, name FROM %s WHERE id IN (10, 500000, 999999, 'x', 2000000)",
             vname);
    r = rows_of(sql);
    CHECK_STR(r, "i10,tname 10;i500000,tname 500000;i999999,tname 999999;");
    sqlite3_free(r);
    CHECK(pgvtab_rows_fetched(v) - before == 3);

    before = pgvtab_rows_fetched(v);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE id > 999990 AND val < 995", vname);
    r = rows_of(sql);
    CHECK_STR(r, "i5;");
    sqlite3_free(r);
    CHECK(pgvtab_rows_fetched(v) - before == 5);
}

/* The bench's shape: a small SQLite table probes the big one by key. */
static void test_join_probes(void)
{
    CHECK(expose("big") == 0);
    char sql[512];
    uint64_t before = pgvtab_rows_fetched(v);
    snprintf(sql, sizeof sql, "SELECT count(*), sum(b.val) FROM s JOIN %s b ON b.id = s.id", vname);
    char *r = rows_of(sql);
    char *want = rows_of("SELECT count(*), sum(id % 1000) FROM s");
    CHECK_STR(r, want);
    sqlite3_free(r);
    sqlite3_free(want);
    uint64_t got = pgvtab_rows_fetched(v) - before;
    CHECK(got == 1000);
    fprintf(stderr, "  join: PostgreSQL sent %llu rows\n", (unsigned long long)got);
    /* .plan's text */
    sqlite3_stmt *st;
    CHECK(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
    char *plan = pgvtab_plan(v, st);
    CHECK_STR(plan, "pg.public.big: SELECT \"id\", \"val\" FROM \"public\".\"big\" WHERE \"id\" = $1\n");
    free(plan);
    sqlite3_finalize(st);
    /* the module's read transaction is over */
    CHECK(PQtransactionStatus(pg) == PQTRANS_IDLE);

    /* the probes run a named prepared statement (no parse, no plan each) */
    long mark = log_mark();
    sqlite3_free(rows_of(sql));
    char *log = log_since(mark);
    int probes = 0;
    for (const char *p = log; (p = strstr(p, "FROM \"public\".\"big\" WHERE \"id\" = $1::int8")); p++)
        probes++;
    CHECK(probes == 1000);
    CHECK_LOG(log, "execute sqlmux_pgv_s");
    CHECK_NOT_LOG(log, "execute <unnamed>: SELECT \"id\", \"val\" FROM \"public\".\"big\" WHERE");
    free(log);

    /* a semi-join on the key: one query with every key in one array */
    mark = log_mark();
    before = pgvtab_rows_fetched(v);
    snprintf(sql, sizeof sql,
             "SELECT count(*), sum(b.val) FROM s JOIN %s b ON b.id = s.id WHERE b.id IN (SELECT id FROM s)",
             vname);
    r = rows_of(sql);
    want = rows_of("SELECT count(*), sum(id % 1000) FROM s");
    CHECK_STR(r, want);
    sqlite3_free(r);
    sqlite3_free(want);
    CHECK(pgvtab_rows_fetched(v) - before == 1000);
    log = log_since(mark);
    CHECK_LOG(log, "WHERE \"id\" = ANY($1::int8[])");
    CHECK_NOT_LOG(log, "\"id\" = $1::int8");
    free(log);
}

static long vm_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, strlen(key)) == 0)
            kb = atol(line + strlen(key) + 1);
    if (f)
        fclose(f);
    return kb;
}

/* A million rows stream through a cursor: memory stays flat. */
static void test_stream_flat(void)
{
    CHECK(expose("big") == 0);
    char sql[256];
    FILE *cr = fopen("/proc/self/clear_refs", "w"); /* "5": VmHWM starts again from VmRSS */
    if (cr) {
        fputs("5", cr);
        fclose(cr);
    }
    /* The peak from here on, not the earlier tests' (under ASan they leave
     * a high-water mark far above this one): 5 resets VmHWM (Linux 4.0+). */
    FILE *refs = fopen("/proc/self/clear_refs", "w");
    if (refs != NULL) {
        fputs("5", refs);
        fclose(refs);
    }
    long rss0 = vm_kib("VmRSS");
    uint64_t before = pgvtab_rows_fetched(v);
    long mark = log_mark();
    snprintf(sql, sizeof sql, "SELECT count(*), sum(val), max(length(name)) FROM %s", vname);
    char *r = rows_of(sql);
    CHECK_STR(r, "i1000000,i499500000,i12;");
    sqlite3_free(r);
    CHECK(pgvtab_rows_fetched(v) - before == 1000000);
    long peak = vm_kib("VmHWM");
    fprintf(stderr, "  1M rows: RSS before %ld KiB, peak %ld KiB\n", rss0, peak);
    CHECK(peak - rss0 < 32 * 1024); /* the whole result would be ~100 MiB; ASan keeps 16 MiB freed */
    char *log = log_since(mark);
    CHECK_LOG(log, "NO SCROLL CURSOR FOR SELECT \"val\", \"name\", \"id\" FROM \"public\".\"big\"");
    CHECK_LOG(log, "FETCH 1000 FROM sqlmux_pgv_");
    free(log);
    CHECK(PQtransactionStatus(pg) == PQTRANS_IDLE);
}

static void test_writes(void)
{
    CHECK(expose("w") == 0);
    char sql[512];
    snprintf(sql, sizeof sql, "INSERT INTO %s (name, n, data) VALUES ('a', 1, x'0001'), ('b', 2, NULL)",
             vname);
    sql_exec(sql);
    CHECK_STR(
        admin_value("SELECT string_agg(id || ':' || name || ':' || n || ':' || coalesce(encode(data, 'hex'), "
                    "'-'), ',' ORDER BY id) FROM w"),
        "1:a:1:0001,2:b:2:-");
    execf("UPDATE %s SET n = n + 10 WHERE name = 'b'", vname);
    CHECK_STR(admin_value("SELECT n FROM w WHERE name = 'b'"), "12");
    execf("DELETE FROM %s WHERE id = 1", vname);
    CHECK_STR(admin_value("SELECT count(*) FROM w"), "1");
    CHECK(PQtransactionStatus(pg) == PQTRANS_IDLE);

    /* SQLite's ROLLBACK rolls PostgreSQL back */
    sql_exec("BEGIN");
    execf("INSERT INTO %s (name, n) VALUES ('c', 3)", vname);
    snprintf(sql, sizeof sql, "SELECT name FROM %s ORDER BY name", vname);
    char *r = rows_of(sql);
    CHECK_STR(r, "tb;tc;"); /* the transaction sees its own write */
    sqlite3_free(r);
    CHECK_STR(admin_value("SELECT count(*) FROM w"), "1");
    sql_exec("ROLLBACK");
    CHECK_STR(admin_value("SELECT count(*) FROM w"), "1");
    CHECK(PQtransactionStatus(pg) == PQTRANS_IDLE);

    /* a failing statement leaves nothing, keeps the SQLSTATE */
    snprintf(sql, sizeof sql, "INSERT INTO %s (name, n) VALUES ('d', 4), ('b', 5)", vname);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    CHECK(rc == SQLITE_CONSTRAINT);
    CHECK(msg && strstr(msg, "duplicate key"));
    CHECK_STR(pgvtab_sqlstate(v), "23505");
    sqlite3_free(msg);
    CHECK_STR(admin_value("SELECT string_agg(name, ',') FROM w"), "b");
    CHECK(PQtransactionStatus(pg) == PQTRANS_IDLE);

    /* inside a transaction: the statement rolls back to its savepoint */
    sql_exec("BEGIN");
    execf("INSERT INTO %s (name, n) VALUES ('e', 1)", vname);
    snprintf(sql, sizeof sql, "INSERT INTO %s (name, n) VALUES ('f', 1), ('b', 5)", vname);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_CONSTRAINT);
    sql_exec("COMMIT");
    CHECK_STR(admin_value("SELECT string_agg(name, ',' ORDER BY name) FROM w"), "b,e");

    /* INSERT ... SELECT from a SQLite table; a changed row is an error */
    execf("INSERT INTO %s (name, n) SELECT 'k' || id, id FROM s WHERE id < 3000", vname);
    CHECK_STR(admin_value("SELECT string_agg(name, ',' ORDER BY n) FROM w WHERE name LIKE 'k%'"),
              "k998,k1995,k2992");
    /* the new key is SQLite's last insert rowid */
    execf("INSERT INTO %s (name) VALUES ('last')", vname);
    char lastid[32];
    snprintf(lastid, sizeof lastid, "%lld", (long long)sqlite3_last_insert_rowid(db));
    CHECK_STR(admin_value("SELECT id FROM w WHERE name = 'last'"), lastid);

    /* a table without a key: rows by ctid; a row changed meanwhile is an error */
    CHECK(expose("wc") == 0);
    execf("INSERT INTO %s VALUES ('a', 1), ('b', 2), ('c', 3)", vname);
    execf("UPDATE %s SET n = n * 10 WHERE name <> 'a'", vname);
    execf("DELETE FROM %s WHERE name = 'c'", vname);
    CHECK_STR(admin_value("SELECT string_agg(name || n, ',' ORDER BY name) FROM wc"), "a1,b20");
    sqlite3_stmt *st;
    snprintf(sql, sizeof sql, "UPDATE %s SET n = n + 1 WHERE name = 'a' AND n < 100", vname);
    CHECK(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
    sql_exec("BEGIN");
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES ('z', 0)", vname); /* the transaction starts */
    sql_exec(sql);
    admin_exec("UPDATE wc SET n = 5 WHERE name = 'a'"); /* a new ctid, committed */
    CHECK(sqlite3_step(st) == SQLITE_DONE);             /* read committed: it sees the new row */
    sqlite3_reset(st);
    sql_exec("ROLLBACK");
    CHECK_STR(admin_value("SELECT string_agg(name || n, ',' ORDER BY name) FROM wc"), "a5,b20");
    sqlite3_finalize(st);
    /* another session updates the row between the scan and the write:
     * its ctid is gone, an error (never a silent skip) */
    snprintf(sql, sizeof sql, "UPDATE %s SET n = n + touch_wc() WHERE name = 'a'", vname);
    char *emsg = NULL;
    CHECK(sqlite3_exec(db, sql, NULL, NULL, &emsg) == SQLITE_ERROR);
    CHECK(emsg && strstr(emsg, "changed or deleted by another transaction"));
    CHECK_STR(pgvtab_sqlstate(v), "40001");
    sqlite3_free(emsg);
    CHECK_STR(admin_value("SELECT string_agg(name || n, ',' ORDER BY name) FROM wc"), "a6,b20");
}

/* The module's errors: a bind down, PostgreSQL killed in the middle of a
 * scan: a clean error with the SQLSTATE, then it works again. */
static void test_errors(void)
{
    CHECK(expose("big") == 0);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", vname);
    unavailable = true;
    char *r = rows_of(sql);
    CHECK(r == NULL);
    CHECK(strstr(errbuf, "unavailable") != NULL);
    CHECK_STR(pgvtab_sqlstate(v), "08001");
    unavailable = false;

    sqlite3_stmt *st;
    snprintf(sql, sizeof sql, "SELECT id FROM %s", vname);
    CHECK(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
    int rows = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (++rows == 1500)
            kill(PQbackendPID(pg), SIGKILL);
    }
    CHECK(rc == SQLITE_ERROR);
    CHECK(rows >= 1500 && rows < 1000000);
    const char *state = pgvtab_sqlstate(v);
    fprintf(stderr, "  killed after %d rows: %s (SQLSTATE %s)\n", rows, sqlite3_errmsg(db),
            state ? state : "-");
    CHECK(state != NULL);
    CHECK(strstr(sqlite3_errmsg(db), "PostgreSQL") != NULL);
    sqlite3_finalize(st);
    /* the server restarts its backends; a new connection works */
    for (int i = 0; i < 100; i++) {
        snprintf(sql, sizeof sql, "SELECT name FROM %s WHERE id = 77", vname);
        r = rows_of(sql);
        if (r)
            break;
        usleep(100 * 1000);
    }
    CHECK_STR(r, "tname 77;");
    sqlite3_free(r);
}

static void test_2pc(void)
{
    char id[PG2PC_DAEMON_ID_LEN + 1], id2[PG2PC_DAEMON_ID_LEN + 1], *err = NULL;
    const char *dir = getenv("SQLMUX_PGVTAB_DATADIR");
    CHECK(dir != NULL);
    if (!dir)
        return;
    CHECK(pg2pc_daemon_id(dir, id, &err) == 0);
    CHECK(strlen(id) == PG2PC_DAEMON_ID_LEN);
    CHECK(pg2pc_daemon_id(dir, id2, &err) == 0);
    CHECK_STR(id2, id);
    char gid[PG2PC_GID_MAX], bind[PG2PC_GID_MAX];
    uint64_t txid = 0;
    CHECK(pg2pc_gid(gid, id, 42, "pg_main") == 0);
    CHECK(strncmp(gid, "sqlmux_", 7) == 0 && strstr(gid, "_42_pg_main"));
    CHECK(pg2pc_gid_parse(gid, id, &txid, bind) == 0 && txid == 42);
    CHECK_STR(bind, "pg_main");
    CHECK(pg2pc_gid_parse(gid, "0000000000000000", &txid, bind) == -1);
    CHECK(pg2pc_gid_parse("sqlmux_x", id, &txid, bind) == -1);

    PGconn *c = PQconnectdb(conninfo);
    CHECK(pg2pc_check(c, &err) == 0);
    free(err);
    err = NULL;
    char *gids1 = NULL;
    (void)gids1;
    PQclear(PQexec(c, "BEGIN"));
    PQclear(PQexec(c, "INSERT INTO w (name, n) VALUES ('p1', 1)"));
    CHECK(pg2pc_prepare(c, gid, &err) == 0);
    CHECK(PQtransactionStatus(c) == PQTRANS_IDLE);
    CHECK_STR(admin_value("SELECT count(*) FROM w WHERE name = 'p1'"), "0");
    char gid2[PG2PC_GID_MAX];
    CHECK(pg2pc_gid(gid2, id, 43, "pg_main") == 0);
    PQclear(PQexec(c, "BEGIN"));
    PQclear(PQexec(c, "INSERT INTO w (name, n) VALUES ('p2', 1)"));
    CHECK(pg2pc_prepare(c, gid2, &err) == 0);
    char **gids;
    size_t n;
    CHECK(pg2pc_list(c, id, &gids, &n, &err) == 0);
    CHECK(n == 2);
    if (n == 2) {
        CHECK_STR(gids[0], gid);
        CHECK_STR(gids[1], gid2);
    }
    pg2pc_list_free(gids, n);
    CHECK(pg2pc_commit(c, gid, &err) == 0);
    CHECK(pg2pc_rollback(c, gid2, &err) == 0);
    CHECK_STR(admin_value("SELECT string_agg(name, ',') FROM w WHERE name LIKE 'p%'"), "p1");
    CHECK(pg2pc_commit(c, gid, &err) == 1); /* done before: idempotent */
    CHECK(pg2pc_rollback(c, gid2, &err) == 1);
    CHECK(pg2pc_list(c, id, &gids, &n, &err) == 0 && n == 0);
    pg2pc_list_free(gids, n);
    /* not in a transaction; a failed transaction is not prepared */
    CHECK(pg2pc_prepare(c, gid, &err) == -1);
    free(err);
    err = NULL;
    PQclear(PQexec(c, "BEGIN"));
    PQclear(PQexec(c, "SELECT 1/0"));
    CHECK(pg2pc_prepare(c, gid, &err) == -1);
    CHECK(err && strstr(err, "25P02"));
    free(err);
    err = NULL;
    CHECK(PQtransactionStatus(c) == PQTRANS_IDLE);
    PQfinish(c);

    /* a server without prepared transactions: a clear error */
    const char *noprep = getenv("SQLMUX_PGVTAB_NOPREP");
    CHECK(noprep != NULL);
    if (noprep) {
        c = PQconnectdb(noprep);
        CHECK(pg2pc_check(c, &err) == -1);
        CHECK(err && strstr(err, "max_prepared_transactions is 0"));
        free(err);
        err = NULL;
        PQfinish(c);
    }
    /* a damaged id file is an error naming it, never replaced */
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, PG2PC_DAEMON_ID_FILE);
    FILE *f = fopen(path, "w");
    fputs("xyz\n", f);
    fclose(f);
    CHECK(pg2pc_daemon_id(dir, id2, &err) == -1);
    CHECK(err && strstr(err, path) && strstr(err, "damaged"));
    free(err);
}

static void test_forget(void)
{
    CHECK(expose("t_types") == 0);
    admin_exec("ALTER TABLE t_types ADD COLUMN extra int DEFAULT 9");
    pgvtab_forget(v);
    CHECK(expose("t_types") == 0);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT extra FROM %s WHERE id = 1", vname);
    char *r = rows_of(sql);
    CHECK_STR(r, "i9;");
    sqlite3_free(r);
}

int main(void)
{
    conninfo = getenv("SQLMUX_PGVTAB_CONNINFO");
    if (!conninfo) {
        printf("ok - test_pgvtab # SKIP needs PostgreSQL: run by tests/integration/test_pgvtab.py\n");
        return 0;
    }
    admin = PQconnectdb(conninfo);
    if (PQstatus(admin) != CONNECTION_OK) {
        fprintf(stderr, "cannot connect: %s", PQerrorMessage(admin));
        printf("not ok - connect\n");
        return 1;
    }
    binds[0].name = "default";
    binds[0].type = BIND_SQLITE_FILE;
    binds[1].name = "pg";
    binds[1].type = BIND_POSTGRES;
    cfg.binds = binds;
    cfg.nbinds = 2;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK)
        return 1;
    v = pgvtab_open(db, &cfg, get_conn, NULL);
    sqlite3_create_function(db, "touch_wc", 0, SQLITE_UTF8, NULL, touch_wc, NULL, NULL);
    setup();
    RUN(test_expose);
    RUN(test_types);
    RUN(test_same_as_sqlite);
    RUN(test_pushdown_sent);
    RUN(test_limit_in_and_rows_fetched);
    RUN(test_join_probes);
    RUN(test_stream_flat);
    RUN(test_writes);
    RUN(test_2pc);
    RUN(test_forget);
    RUN(test_errors);
    pgvtab_close(v);
    sqlite3_close(db);
    PQfinish(pg);
    PQfinish(admin);
    UNIT_MAIN_END;
}
