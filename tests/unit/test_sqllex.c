/*
 * Unit tests of the one SQL lexer, daemon/sqllex.c (issue 21): the two
 * dialects' comments and quotes, unterminated input, the token classes
 * the analysis, the PostgreSQL placeholder rewriting and the migration
 * splitter rely on.
 */
#include <string.h>

#include "daemon/sqllex.h"
#include "tests/unit/unit.h"

/* The types of the tokens of sql, as letters, into out. */
static void types_of(const char *sql, unsigned flags, char *out, size_t cap)
{
    static const char letters[] = "EWQSBNP(),.;OX";
    size_t len = strlen(sql), at = 0, o = 0;
    for (;;) {
        struct sqltok t = sqllex_next(sql, len, at, flags);
        if (o + 1 < cap)
            out[o++] = letters[t.type];
        if (t.type == SQLTOK_EOF || t.type == SQLTOK_ERROR)
            break;
        at = t.pos + t.len;
    }
    out[o] = '\0';
}

static void test_token_classes(void)
{
    char got[64];
    types_of("SELECT a.b, 'x''y', \"q\", 1.5e3, ?2, :n, @m, $1, $$s;$$ FROM t;", 0, got, sizeof got);
    CHECK_STR(got, "WW.W,S,Q,N,P,P,P,P,SWW;E");
    types_of("x::int := E'\\'' X'0a'", 0, got, sizeof got);
    CHECK_STR(got, "WOWOSBE");
    types_of("a$1 $tag$ ; $tag$", 0, got, sizeof got);
    CHECK_STR(got, "WSE");
}

static void test_comments_by_dialect(void)
{
    const char *sql = "/* a /* b */ c */ ?";
    char got[16];
    types_of(sql, 0, got, sizeof got); /* SQLite: the comment ends at the first close */
    CHECK_STR(got, "WOOPE");
    types_of(sql, SQLLEX_POSTGRES, got, sizeof got);
    CHECK_STR(got, "PE");
    CHECK(sqllex_skip(sql, strlen(sql), 0, SQLLEX_NESTED_COMMENTS) == strlen(sql) - 1);
    CHECK(sqllex_skip("-- x\n  y", 8, 0, 0) == 7);
}

static void test_brackets_by_dialect(void)
{
    char got[16];
    types_of("[a?] `b`", 0, got, sizeof got);
    CHECK_STR(got, "QQE");
    types_of("a[?]", SQLLEX_POSTGRES, got, sizeof got);
    CHECK_STR(got, "WOPOE");
}

static void test_unterminated(void)
{
    const char *cases[] = {"'abc", "\"abc", "[abc", "$q$ abc", "/* abc", "E'\\'"};
    const char *whats[] = {"string literal",       "quoted identifier", "[identifier]",
                           "dollar-quoted string", "/* comment",        "string literal"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = strlen(cases[i]);
        struct sqltok t = sqllex_next(cases[i], len, 0, 0);
        CHECK(t.type == SQLTOK_ERROR);
        CHECK(t.pos == 0 && t.len == len);
        CHECK_STR(t.what, whats[i]);
    }
    /* Nested: one close is not enough. */
    struct sqltok t = sqllex_next("/* /* */ x", 10, 0, SQLLEX_POSTGRES);
    CHECK(t.type == SQLTOK_ERROR);
    CHECK(sqllex_skip("  /* /* */ x", 12, 0, SQLLEX_POSTGRES) == 2);
}

int main(void)
{
    RUN(test_token_classes);
    RUN(test_comments_by_dialect);
    RUN(test_brackets_by_dialect);
    RUN(test_unterminated);
    UNIT_MAIN_END;
}
