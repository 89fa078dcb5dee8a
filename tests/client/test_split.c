/*
 * Unit tests of the CLI's statement splitter (client/split.c): where
 * statements end across lines, quotes, comments and trigger bodies.
 */
#include <stdlib.h>
#include <string.h>

#include "client/split.h"
#include "tests/unit/unit.h"

/* Feed text line by line, collect every statement (and the rest at the
 * end) as "line:statement|" into out. */
static void split_all(const char *text, char *out, size_t cap)
{
    struct split sp;
    const char *stmt;
    size_t len;
    unsigned line;
    out[0] = '\0';
    split_init(&sp);
    for (;;) {
        const char *nl = strchr(text, '\n');
        size_t n = nl != NULL ? (size_t)(nl - text) : strlen(text);
        CHECK(split_feed(&sp, text, n) == 0);
        while (split_next(&sp, &stmt, &len, &line)) {
            size_t o = strlen(out);
            snprintf(out + o, cap - o, "%u:%.*s|", line, (int)len, stmt);
        }
        if (nl == NULL)
            break;
        text = nl + 1;
    }
    if (split_finish(&sp, &stmt, &len, &line)) {
        size_t o = strlen(out);
        snprintf(out + o, cap - o, "rest %u:%.*s|", line, (int)len, stmt);
    }
    split_free(&sp);
}

static void check_split(const char *text, const char *want)
{
    char got[4096];
    split_all(text, got, sizeof got);
    CHECK_STR(got, want);
}

static void simple_statements(void)
{
    check_split("SELECT 1;", "1:SELECT 1;|");
    check_split("SELECT 1; SELECT 2;", "1:SELECT 1;|1:SELECT 2;|");
    check_split("SELECT\n  1\n;", "1:SELECT\n  1\n;|");
    check_split("\n\n  SELECT 3;\nSELECT 4", "3:SELECT 3;|rest 4:SELECT 4|");
    check_split("", "");
    check_split(";;  ;", "");
}

static void quotes(void)
{
    check_split("SELECT 'a;b';", "1:SELECT 'a;b';|");
    check_split("SELECT 'it''s; fine';", "1:SELECT 'it''s; fine';|");
    check_split("SELECT \"a;\" FROM [b;c] WHERE `d;`=1;", "1:SELECT \"a;\" FROM [b;c] WHERE `d;`=1;|");
    check_split("SELECT 'multi\nline; text';\nSELECT 2;", "1:SELECT 'multi\nline; text';|3:SELECT 2;|");
    check_split("SELECT 'open;", "rest 1:SELECT 'open;|");
}

static void comments(void)
{
    check_split("-- a comment; not a statement\nSELECT 1; -- trailing;\n", "2:SELECT 1;|");
    check_split("/* block; comment */ SELECT 1;", "1:SELECT 1;|");
    check_split("SELECT /* ; \n ; */ 2;", "1:SELECT /* ; \n ; */ 2;|");
    check_split("-- only a comment\n/* and another */", "");
    check_split("SELECT 1 -- no semicolon here", "rest 1:SELECT 1 -- no semicolon here|");
}

static void triggers(void)
{
    check_split("CREATE TRIGGER t AFTER INSERT ON a BEGIN\n"
                "  INSERT INTO b VALUES (1);\n"
                "  UPDATE c SET x = CASE WHEN 1 THEN 2 END;\n"
                "END;\nSELECT 1;",
                "1:CREATE TRIGGER t AFTER INSERT ON a BEGIN\n"
                "  INSERT INTO b VALUES (1);\n"
                "  UPDATE c SET x = CASE WHEN 1 THEN 2 END;\n"
                "END;|5:SELECT 1;|");
    check_split("create temp trigger t before delete on a begin delete from b; end; select 2;",
                "1:create temp trigger t before delete on a begin delete from b; end;|1:select 2;|");
    /* END alone (a transaction) and CREATE TABLE are ordinary statements. */
    check_split("BEGIN; END; CREATE TABLE t (x); EXPLAIN SELECT 1;",
                "1:BEGIN;|1:END;|1:CREATE TABLE t (x);|1:EXPLAIN SELECT 1;|");
}

static void idle_and_discard(void)
{
    struct split sp;
    const char *stmt;
    size_t len;
    unsigned line;
    split_init(&sp);
    CHECK(split_idle(&sp));
    CHECK(split_feed(&sp, "SELECT 1,", 9) == 0);
    CHECK(!split_next(&sp, &stmt, &len, &line));
    CHECK(!split_idle(&sp));
    split_discard(&sp, 0); /* Ctrl-C */
    CHECK(split_idle(&sp));
    CHECK(split_feed(&sp, "/* open", 7) == 0);
    CHECK(!split_next(&sp, &stmt, &len, &line));
    CHECK(!split_idle(&sp)); /* inside a comment: a '.' line is not a command */
    CHECK(split_feed(&sp, "*/", 2) == 0);
    CHECK(!split_next(&sp, &stmt, &len, &line));
    CHECK(split_idle(&sp));
    split_discard(&sp, 1); /* a dot-command line on line 4 */
    CHECK(split_feed(&sp, "SELECT 5;", 9) == 0);
    CHECK(split_next(&sp, &stmt, &len, &line));
    CHECK(len == 9 && memcmp(stmt, "SELECT 5;", 9) == 0);
    CHECK(line == 5);
    split_free(&sp);
}

int main(void)
{
    RUN(simple_statements);
    RUN(quotes);
    RUN(comments);
    RUN(triggers);
    RUN(idle_and_discard);
    UNIT_MAIN_END;
}
