/*
 * Unit tests of literal normalisation, daemon/sqlnorm.c (issue 18): which
 * literals become parameters, their decoded values and numbers, and the
 * texts left alone (comments, quotes, result columns, ORDER BY, LIKE,
 * DDL, named parameters).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/sqlnorm.h"
#include "tests/unit/unit.h"

static struct sqlnorm norm, route, matched;

/* "text | v1 | v2..." of a normalised request, its values from params[from]. */
static void format(const struct request *r, size_t from, char *out, size_t cap)
{
    size_t o = (size_t)snprintf(out, cap, "%.*s", (int)r->len, r->text);

    for (size_t i = from; i < r->nparams && o < cap; i++) {
        const struct value *v = &r->params[i];
        switch (v->type) {
        case VALUE_INT: o += (size_t)snprintf(out + o, cap - o, " | %lld", (long long)v->i); break;
        case VALUE_TEXT: o += (size_t)snprintf(out + o, cap - o, " | '%.*s'", (int)v->len, v->p); break;
        case VALUE_BLOB:
            o += (size_t)snprintf(out + o, cap - o, " | x");
            for (size_t k = 0; k < v->len && o < cap; k++)
                o += (size_t)snprintf(out + o, cap - o, "%02x", (unsigned char)v->p[k]);
            break;
        default: o += (size_t)snprintf(out + o, cap - o, " | ?"); break;
        }
    }
}

/* The normalised text of sql (sent with nparams integer parameters) and
 * its literals' values as "text | v1 | v2...", or "-" when it runs as it
 * is. Without parameters, the router's normalisation copied for the
 * request (sqlnorm_route_key, sqlnorm_copy) must be the same one. */
static const char *norm_of(const char *sql, size_t nparams)
{
    static char out[1024], copied[1024];
    struct value params[4];
    struct request *copy = NULL;
    bool ok;

    memset(params, 0, sizeof params);
    for (size_t i = 0; i < nparams; i++)
        params[i].type = VALUE_INT;
    if (nparams == 0 && sqlnorm_route_key(&route, sql, strlen(sql)))
        copy = sqlnorm_copy(&route);
    ok = sqlnorm_sqlite(&norm, sql, strlen(sql), params, nparams, 1000000);
    if (ok)
        format(&norm.req, nparams, out, sizeof out);
    if (nparams == 0) {
        if (copy != NULL)
            format(copy, 0, copied, sizeof copied);
        CHECK_STR(copy != NULL ? copied : "-", ok ? out : "-");
        free(copy);
        /* Its own template fills in to the same. */
        if (copy != NULL) {
            CHECK(sqlnorm_match(&matched, route.req.text, route.req.len, route.lits, route.nlits, sql,
                                strlen(sql)));
            format(&matched.req, 0, copied, sizeof copied);
            CHECK_STR(copied, out);
        }
    }
    return ok ? out : "-";
}

/* The template of tmpl_sql (its route key) filled in by sql: what it
 * makes, "-" when it does not fit; and whatever it makes must be what
 * sqlnorm_sqlite makes of sql. */
static const char *match_of(const char *tmpl_sql, const char *sql)
{
    static char out[1024];
    struct sqlnorm t = {0};
    const char *full;

    CHECK(sqlnorm_route_key(&t, tmpl_sql, strlen(tmpl_sql)));
    if (!sqlnorm_match(&matched, t.req.text, t.req.len, t.lits, t.nlits, sql, strlen(sql))) {
        sqlnorm_free(&t);
        return "-";
    }
    format(&matched.req, 0, out, sizeof out);
    full = norm_of(sql, 0);
    CHECK_STR(out, full);
    sqlnorm_free(&t);
    return out;
}

static void test_templates(void)
{
    const char *tmpl = "SELECT v FROM t WHERE id = 5 AND s = 'a' AND b = x'00' -- 'c'";

    CHECK_STR(match_of(tmpl, "SELECT v FROM t WHERE id = 123 AND s = 'it''s' AND b = X'0aFF' -- 'c'"),
              "SELECT v FROM t WHERE id = ?1 AND s = ?2 AND b = ?3 -- 'c' | 123 | 'it's' | x0aff");
    /* Any replaceable literal in a literal's place: a string for a number. */
    CHECK_STR(match_of(tmpl, "SELECT v FROM t WHERE id = '7' AND s = 8 AND b = '' -- 'c'"),
              "SELECT v FROM t WHERE id = ?1 AND s = ?2 AND b = ?3 -- 'c' | '7' | 8 | ''");
    /* What the lexer would read otherwise, or not replace, does not fit. */
    CHECK_STR(match_of(tmpl, "SELECT v FROM t WHERE id = 5.5 AND s = 'a' AND b = x'00' -- 'c'"), "-");
    CHECK_STR(match_of(tmpl, "SELECT v FROM t WHERE id = 1_0 AND s = 'a' AND b = x'00' -- 'c'"), "-");
    CHECK_STR(
        match_of(tmpl, "SELECT v FROM t WHERE id = 99999999999999999999 AND s = 'a' AND b = x'00' -- 'c'"),
        "-");
    CHECK_STR(match_of(tmpl, "SELECT v FROM t WHERE id = 0x5 AND s = 'a' AND b = x'00' -- 'c'"), "-");
    CHECK_STR(match_of(tmpl, "SELECT v FROM t WHERE id = 5 AND s = E'a' AND b = x'00' -- 'c'"), "-");
    CHECK_STR(match_of(tmpl, "SELECT v FROM t WHERE id = 5 AND s = 'a' AND b = x'0' -- 'c'"), "-");
    CHECK_STR(match_of(tmpl, "SELECT v FROM t WHERE id = 5 AND s = 'a' || 'b' AND b = x'00' -- 'c'"), "-");
    CHECK_STR(match_of(tmpl, "SELECT v FROM t WHERE id = 5 AND s = 'a' AND b = x'00' -- 'd'"), "-");
    CHECK_STR(match_of(tmpl, "SELECT v FROM t WHERE id = 5 AND s = 'a' AND b = x'00'"), "-");
    CHECK_STR(match_of(tmpl, "SELECT v FROM t WHERE id = 5 AND s = 'a' AND b = x'00' -- 'c' "), "-");
    CHECK_STR(match_of(tmpl, "select v FROM t WHERE id = 5 AND s = 'a' AND b = x'00' -- 'c'"), "-");
    CHECK(!sqlnorm_match(&matched, "SELECT v FROM t WHERE s = ?1", 28, (size_t[]){26}, 1,
                         "SELECT v FROM t WHERE s = 'a\0b'", 32));
    /* A string right after a word is a string; a number there is part of
     * the word. */
    CHECK_STR(match_of("SELECT v FROM t WHERE s IN('a')", "SELECT v FROM t WHERE s IN('b')"),
              "SELECT v FROM t WHERE s IN(?1) | 'b'");
    CHECK_STR(match_of("SELECT v FROM t WHERE s = 1 OR'a' = s", "SELECT v FROM t WHERE s = 1 OR5 = s"), "-");
    /* The length bound is the text's, as written. */
    {
        char a[1100], b[1100];
        size_t o = (size_t)snprintf(a, sizeof a, "SELECT v FROM t WHERE s = '");
        memcpy(b, a, o);
        memset(a + o, 'x', 10);
        snprintf(a + o + 10, sizeof a - o - 10, "'");
        for (size_t k = 0; k < 500; k++)
            memcpy(b + o + 2 * k, "''", 2);
        snprintf(b + o + 1000, sizeof b - o - 1000, "x'");
        CHECK_STR(match_of(a, b), "-");
    }
}

static void test_kinds_of_literal(void)
{
    CHECK_STR(norm_of("SELECT v FROM t WHERE id = 5", 0), "SELECT v FROM t WHERE id = ?1 | 5");
    CHECK_STR(norm_of("SELECT v FROM t WHERE s = 'it''s' AND b = x'0aFF'", 0),
              "SELECT v FROM t WHERE s = ?1 AND b = ?2 | 'it's' | x0aff");
    CHECK_STR(norm_of("SELECT v FROM t WHERE s = '' OR b = X''", 0),
              "SELECT v FROM t WHERE s = ?1 OR b = ?2 | '' | x");
    CHECK_STR(norm_of("INSERT INTO ins (v) VALUES ('row-1');", 0),
              "INSERT INTO ins (v) VALUES (?1); | 'row-1'");
    CHECK_STR(norm_of("UPDATE t SET a = 9223372036854775807 WHERE id = 007", 0),
              "UPDATE t SET a = ?1 WHERE id = ?2 | 9223372036854775807 | 7");
    /* Reals, hex and out-of-range integers stay as SQLite reads them. */
    CHECK_STR(norm_of("SELECT v FROM t WHERE a = .5 OR a = 1. OR a = 1e-3 OR a = 0x10", 0), "-");
    CHECK_STR(norm_of("SELECT v FROM t WHERE a = -9223372036854775808", 0), "-");
    CHECK_STR(norm_of("SELECT v FROM t WHERE a = -5 AND b = a-1", 0),
              "SELECT v FROM t WHERE a = -?1 AND b = a-?2 | 5 | 1");
    /* A blob with an odd or bad hex digit is SQLite's error to give. */
    CHECK_STR(norm_of("SELECT v FROM t WHERE b = x'abc'", 0), "-");
    CHECK_STR(norm_of("SELECT v FROM t WHERE b = x'zz'", 0), "-");
}

static void test_comments_and_quotes(void)
{
    CHECK_STR(norm_of("SELECT v FROM t -- id = 5\nWHERE id = 6", 0),
              "SELECT v FROM t -- id = 5\nWHERE id = ?1 | 6");
    CHECK_STR(norm_of("SELECT v /* 'x' 7 */ FROM t WHERE s = '--' || '/*'", 0),
              "SELECT v /* 'x' 7 */ FROM t WHERE s = ?1 || ?2 | '--' | '/*'");
    CHECK_STR(norm_of("SELECT \"5\" FROM t WHERE \"a'b\" = 'c\"d'", 0),
              "SELECT \"5\" FROM t WHERE \"a'b\" = ?1 | 'c\"d'");
    CHECK_STR(norm_of("SELECT v FROM t WHERE s = 'unterminated", 0), "-");
    CHECK_STR(norm_of("SELECT v FROM t WHERE id = 5 /* open", 0), "-");
}

static void test_places_kept(void)
{
    /* Result columns are named by their text, nested ones included. */
    CHECK_STR(norm_of("SELECT 1, 'a', (SELECT v FROM t WHERE id = 2) FROM t", 0), "-");
    CHECK_STR(norm_of("SELECT a IS DISTINCT FROM 5, b FROM t WHERE c = 6", 0),
              "SELECT a IS DISTINCT FROM 5, b FROM t WHERE c = ?1 | 6");
    CHECK_STR(norm_of("SELECT a FROM t WHERE a IN (SELECT 3 FROM u WHERE x = 4)", 0),
              "SELECT a FROM t WHERE a IN (SELECT 3 FROM u WHERE x = ?1) | 4");
    CHECK_STR(norm_of("SELECT a FROM t WHERE b = 1 ORDER BY 1 LIMIT 10 OFFSET 2", 0),
              "SELECT a FROM t WHERE b = ?1 ORDER BY 1 LIMIT 10 OFFSET 2 | 1");
    CHECK_STR(norm_of("SELECT a FROM t GROUP BY 1 HAVING count(*) > 2 UNION SELECT b FROM u WHERE c = 3", 0),
              "SELECT a FROM t GROUP BY 1 HAVING count(*) > 2 UNION SELECT b FROM u WHERE c = ?1 | 3");
    CHECK_STR(
        norm_of("SELECT a FROM t WHERE s LIKE 'ab%' ESCAPE '!' OR s GLOB 'x*' OR s = 'y' COLLATE nocase", 0),
        "-");
    CHECK_STR(norm_of("INSERT INTO t VALUES (1) RETURNING a, 2", 0),
              "INSERT INTO t VALUES (?1) RETURNING a, 2 | 1");
    CHECK_STR(norm_of("INSERT INTO t VALUES (1) ON CONFLICT (a) WHERE a > 0 DO UPDATE SET b = 2", 0),
              "INSERT INTO t VALUES (?1) ON CONFLICT (a) WHERE a > 0 DO UPDATE SET b = ?2 | 1 | 2");
    CHECK_STR(norm_of("SELECT a FROM t WHERE b = 'x'y", 0), "-");
    CHECK_STR(norm_of("SELECT a FROM t WHERE b = 'x'.y", 0), "-");
}

static void test_statements_left_alone(void)
{
    CHECK_STR(norm_of("CREATE TABLE t (a DEFAULT 5, CHECK (a > 1))", 0), "-");
    CHECK_STR(norm_of("PRAGMA table_info('t')", 0), "-");
    CHECK_STR(norm_of("EXPLAIN SELECT a FROM t WHERE b = 1", 0), "-");
    CHECK_STR(norm_of("BEGIN", 0), "-");
    CHECK_STR(norm_of("SELECT a FROM t WHERE b = :x AND c = 1", 0), "-");
    CHECK_STR(norm_of("SELECT a FROM t WHERE b = #x AND c = 1", 0), "-");
    CHECK_STR(norm_of("SELECT a FROM t WHERE b = $x$y$x$ AND c = 1", 0), "-");
    CHECK_STR(norm_of("SELECT a FROM t WHERE b = 1; SELECT 2", 0), "-");
    CHECK_STR(norm_of("SELECT a FROM t WHERE (b = 1", 0), "-");
    CHECK_STR(norm_of("SELECT a FROM t", 0), "-");
}

static void test_parameters(void)
{
    /* The request's parameters keep their numbers; a plain ? after a
     * literal is written with its own. */
    CHECK_STR(norm_of("SELECT a FROM t WHERE b = ? AND c = 5 AND d = ?", 2),
              "SELECT a FROM t WHERE b = ? AND c = ?3 AND d = ?2 | 5");
    CHECK_STR(norm_of("SELECT a FROM t WHERE b = ?2 AND c = 'x' AND d = ?1", 2),
              "SELECT a FROM t WHERE b = ?2 AND c = ?3 AND d = ?1 | 'x'");
    /* A count that differs from the request's: the original's error. */
    CHECK_STR(norm_of("SELECT a FROM t WHERE b = ? AND c = 5", 2), "-");
    CHECK_STR(norm_of("SELECT a FROM t WHERE b = ?0 AND c = 5", 0), "-");
    /* A plain ? in a kept place after a replaced literal would renumber. */
    CHECK_STR(norm_of("SELECT a FROM t WHERE c = 5 ORDER BY ?", 1), "-");
    CHECK_STR(norm_of("SELECT ? FROM t WHERE c = 5", 1), "SELECT ? FROM t WHERE c = ?2 | 5");
}

static void test_limits(void)
{
    char sql[4096];
    size_t o = (size_t)snprintf(sql, sizeof sql, "SELECT a FROM t WHERE s = '");
    memset(sql + o, 'x', SQLNORM_MAX_VALUE + 1);
    o += SQLNORM_MAX_VALUE + 1;
    snprintf(sql + o, sizeof sql - o, "'");
    CHECK_STR(norm_of(sql, 0), "-");
    CHECK(!sqlnorm_sqlite(&norm, "SELECT a FROM t WHERE b = 1", 27, NULL, 0, 26));
    CHECK(!sqlnorm_sqlite(&norm, "SELECT a FROM t WHERE b = '\0'", 30, NULL, 0, 100));
}

int main(void)
{
    RUN(test_kinds_of_literal);
    RUN(test_comments_and_quotes);
    RUN(test_places_kept);
    RUN(test_statements_left_alone);
    RUN(test_parameters);
    RUN(test_limits);
    RUN(test_templates);
    sqlnorm_free(&norm);
    sqlnorm_free(&route);
    sqlnorm_free(&matched);
    UNIT_MAIN_END;
}
