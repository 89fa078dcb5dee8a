/*
 * Unit tests of a large [tables] map (conf/config.c's rule index,
 * config_rule_find, and daemon/route.c's lookup through it): a generated
 * file of 100,000 entries routes every name to its bind, a duplicate
 * anywhere in it is refused with both line numbers, names compare without
 * case, an exact rule beats a pattern whichever comes first, and a
 * qualified "schema.name" rule beats the bare one; and 20,000 [user.NAME]
 * sections (indexed by name and cert_cn the same way) are each found, a
 * repeated cert_cn with the first one's line. Each file is written to one
 * temporary folder (created by main, removed at the end).
 */
#include "conf/config.h"
#include "daemon/route.h"
#include "tests/unit/unit.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#define BIG 100000

static char tmpdir[64];        /* the test folder, /tmp/... */
static char cfgpath[PATH_MAX]; /* tmpdir/sqlmux.ini */

/* The lines before entry 0 of every generated file; entry i is on line
 * FIRST_ENTRY_LINE + i. */
static const char big_head[] = "[binds]\ndefault = sqlite://\nb1 = sqlite://\nb2 = sqlite://\n"
                               "b3 = sqlite://\n[tables]\n";
#define FIRST_ENTRY_LINE 7

/* Entry i of the generated map: every tenth a qualified "Sk.Ti" written in
 * capitals, the others a bare "ti"; bind i % 4 (default, b1, b2, b3). */
static void entry_name(size_t i, char *buf, size_t len)
{
    if (i % 10 == 0)
        snprintf(buf, len, "S%zu.T%06zu", i % 5, i);
    else
        snprintf(buf, len, "t%06zu", i);
}

static const char *const bind_names[] = {"default", "b1", "b2", "b3"};

/* Writes big_head, the lines `before`, the BIG entries with the lines
 * `extra` after entry `extra_after`, then loads the file. */
static int load_big(const char *before, const char *extra, size_t extra_after, struct config **cfg, char *err,
                    size_t errlen)
{
    FILE *f = fopen(cfgpath, "w");
    if (f == NULL) {
        perror(cfgpath);
        exit(2);
    }
    fputs(big_head, f);
    fputs(before, f);
    for (size_t i = 0; i < BIG; i++) {
        char name[64];
        entry_name(i, name, sizeof name);
        fprintf(f, "%s = %s\n", name, bind_names[i % 4]);
        if (i == extra_after)
            fputs(extra, f);
    }
    fclose(f);
    return config_load(cfgpath, cfg, err, errlen);
}

/* load_big must fail on line `line` with exactly `msg` after the prefix. */
static void expect_big_error_at(const char *before, const char *extra, size_t extra_after, int line,
                                const char *msg, int srcline)
{
    struct config *cfg = NULL;
    char err[1024] = "", want[PATH_MAX + 1100];
    int rc = load_big(before, extra, extra_after, &cfg, err, sizeof err);
    snprintf(want, sizeof want, "%s:%d: %s", cfgpath, line, msg);
    if (rc != -1 || cfg != NULL || strcmp(err, want) != 0) {
        unit_failed_checks++;
        fprintf(stderr, "  %s:%d: rc %d, want \"%s\", got \"%s\"\n", __FILE__, srcline, rc, want, err);
    }
    config_free(cfg);
}
#define EXPECT_BIG_ERROR(before, extra, after, line, msg)                                                    \
    expect_big_error_at((before), (extra), (after), (line), (msg), __LINE__)

/* Writes `text` as the config file and loads it; NULL (a failed check)
 * when it does not load. */
static struct config *load_small(const char *text)
{
    struct config *cfg = NULL;
    char err[1024] = "";
    FILE *f = fopen(cfgpath, "w");
    if (f == NULL) {
        perror(cfgpath);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
    if (config_load(cfgpath, &cfg, err, sizeof err) != 0) {
        unit_failed_checks++;
        fprintf(stderr, "  config_load failed: %s\n", err);
    }
    return cfg;
}

/* The rule kind and bind of schema.name under cfg (no catalogs). */
static enum route_rule rule_of(const struct config *cfg, const char *schema, const char *name, size_t *bind)
{
    struct route_table t = {schema, name};
    *bind = SIZE_MAX;
    return route_table_rule(cfg, NULL, &t, bind);
}

/* Every one of 100,000 names goes to its bind: the qualified ones under
 * their schema only, the bare ones under any schema; names the map does
 * not hold go to a pattern or to the default. */
static void test_big_map_routes_every_name(void)
{
    struct config *cfg = NULL;
    char err[1024] = "";
    /* Two patterns before the map: t0* would match every bare name. */
    CHECK(load_big("t0* = b3\nzz_* = b2\n", "", BIG, &cfg, err, sizeof err) == 0);
    if (cfg == NULL) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK(cfg->nrules == BIG + 2);
    CHECK(cfg->npatterns == 2);
    size_t wrong = 0;
    for (size_t i = 0; i < BIG; i++) {
        char schema[16], name[32];
        size_t want = i % 4, bind;
        snprintf(name, sizeof name, "t%06zu", i);
        if (i % 10 == 0) {
            snprintf(schema, sizeof schema, "s%zu", i % 5);
            wrong += route_table_bind(cfg, schema, name) != want;
            wrong += rule_of(cfg, schema, name, &bind) != ROUTE_RULE_MAP || bind != want;
            /* The bare name is no entry: the first pattern takes it. */
            wrong += route_table_bind(cfg, "", name) != 3;
            wrong += rule_of(cfg, "", name, &bind) != ROUTE_RULE_PATTERN || bind != 3;
            /* Another schema: neither the qualified entry nor a bare one. */
            snprintf(schema, sizeof schema, "s%zu", (i + 1) % 5);
            wrong += route_table_bind(cfg, schema, name) != 3;
        } else {
            wrong += route_table_bind(cfg, "", name) != want;
            wrong += route_table_bind(cfg, NULL, name) != want;
            wrong += route_table_bind(cfg, "main", name) != want; /* falls back to the bare name */
            wrong += rule_of(cfg, "", name, &bind) != ROUTE_RULE_MAP || bind != want;
        }
    }
    CHECK(wrong == 0);
    if (wrong != 0)
        fprintf(stderr, "  %zu wrong lookups\n", wrong);
    CHECK(route_table_bind(cfg, "", "zz_top") == 2);
    CHECK(route_table_bind(cfg, "", "t1") == 0);        /* shorter than any entry, no pattern */
    CHECK(route_table_bind(cfg, "", "t0000001") == 3);  /* longer: the pattern */
    CHECK(route_table_bind(cfg, "", "T000001") == 0);   /* names arrive lowercased: no rule */
    CHECK(route_table_bind(cfg, "s0", "t000001") == 1); /* qualified lookup of a bare entry */
    CHECK(route_table_bind(cfg, "", "other") == 0);
    /* The entries as the file wrote them, lowercased, on their lines. */
    CHECK_STR(cfg->rules[2].pattern, "s0.t000000");
    CHECK(cfg->rules[2].line == FIRST_ENTRY_LINE + 2 && cfg->rules[2].bind == 0);
    CHECK_STR(cfg->rules[BIG + 1].pattern, "t099999");
    CHECK(cfg->rules[BIG + 1].line == FIRST_ENTRY_LINE + 2 + BIG - 1 && cfg->rules[BIG + 1].bind == 3);
    config_free(cfg);
}

/* A duplicate at the start, the middle or the end of the map is refused
 * with the line of the entry it repeats, whatever the case it is written
 * in; so is a repeated pattern. */
static void test_big_map_duplicates(void)
{
    char msg[256];
    /* Entry 0 ("S0.T000000", line 7) again after the last entry. */
    snprintf(msg, sizeof msg, "duplicate table rule 's0.t000000' (first on line %d)", FIRST_ENTRY_LINE);
    EXPECT_BIG_ERROR("", "s0.t000000 = b1\n", BIG - 1, FIRST_ENTRY_LINE + BIG, msg);
    /* Entry 50,001 right after itself, in capitals. */
    snprintf(msg, sizeof msg, "duplicate table rule 't050001' (first on line %d)", FIRST_ENTRY_LINE + 50001);
    EXPECT_BIG_ERROR("", "T050001 = default\n", 50001, FIRST_ENTRY_LINE + 50002, msg);
    /* The last entry written before the map, in capitals: the map's own
     * line is the second. */
    snprintf(msg, sizeof msg, "duplicate table rule 't099999' (first on line %d)", FIRST_ENTRY_LINE);
    EXPECT_BIG_ERROR("T099999 = b2\n", "", BIG, FIRST_ENTRY_LINE + BIG, msg);
    /* A qualified entry in another [tables] section, mixed case. */
    snprintf(msg, sizeof msg, "duplicate table rule 's0.t099990' (first on line %d)",
             FIRST_ENTRY_LINE + 99990);
    EXPECT_BIG_ERROR("", "[server]\n[tables]\ns0.T099990 = b1\n", BIG - 1, FIRST_ENTRY_LINE + BIG + 2, msg);
    /* A pattern before the map, again in its middle. */
    snprintf(msg, sizeof msg, "duplicate table rule 'audit_*' (first on line %d)", FIRST_ENTRY_LINE);
    EXPECT_BIG_ERROR("audit_* = b1\n", "AUDIT_* = b2\n", 70000, FIRST_ENTRY_LINE + 70002, msg);
}

/* An exact rule and a pattern that matches the same name: the exact rule
 * wins, before or after the pattern; among patterns the first wins. */
static void test_exact_beats_pattern_either_order(void)
{
    struct config *cfg = load_small("[binds]\ndefault = sqlite://\nb1 = sqlite://\nb2 = sqlite://\n"
                                    "[tables]\nhot* = b1\nhotel = b2\nrooms = b2\nroom* = b1\n"
                                    "*s = b2\nhot*l = b2\n");
    if (cfg == NULL)
        return;
    size_t bind;
    CHECK(rule_of(cfg, "", "hotel", &bind) == ROUTE_RULE_MAP && bind == 2);    /* exact after the pattern */
    CHECK(rule_of(cfg, "", "rooms", &bind) == ROUTE_RULE_MAP && bind == 2);    /* exact before the pattern */
    CHECK(rule_of(cfg, "", "hostel", &bind) == ROUTE_RULE_NONE);               /* no rule matches */
    CHECK(rule_of(cfg, "", "hotl", &bind) == ROUTE_RULE_PATTERN && bind == 1); /* hot* before hot*l */
    CHECK(rule_of(cfg, "", "roomy", &bind) == ROUTE_RULE_PATTERN && bind == 1);
    CHECK(rule_of(cfg, "", "beds", &bind) == ROUTE_RULE_PATTERN && bind == 2);
    /* A name holding '*' is no pattern: only a glob can match it. */
    CHECK(rule_of(cfg, "", "hot*", &bind) == ROUTE_RULE_PATTERN && bind == 1);
    config_free(cfg);
}

/* "schema.name" beats "name" for that schema only; a bare name with a dot
 * in it is the same text as the qualified one. */
static void test_qualified_beats_bare(void)
{
    struct config *cfg = load_small("[binds]\ndefault = sqlite://\nb1 = sqlite://\nb2 = sqlite://\n"
                                    "[tables]\nt5 = b2\nMain.T5 = b1\naux.* = b2\n");
    if (cfg == NULL)
        return;
    size_t bind;
    CHECK(rule_of(cfg, "main", "t5", &bind) == ROUTE_RULE_MAP && bind == 1);
    CHECK(rule_of(cfg, "", "t5", &bind) == ROUTE_RULE_MAP && bind == 2);
    CHECK(rule_of(cfg, "temp", "t5", &bind) == ROUTE_RULE_MAP && bind == 2);
    CHECK(rule_of(cfg, "aux", "t5", &bind) == ROUTE_RULE_PATTERN && bind == 2);
    CHECK(rule_of(cfg, "", "main.t5", &bind) == ROUTE_RULE_MAP && bind == 1);
    CHECK(rule_of(cfg, "main", "t", &bind) == ROUTE_RULE_NONE);
    CHECK(rule_of(cfg, "main", "t55", &bind) == ROUTE_RULE_NONE);
    config_free(cfg);
}

/* config_rule_find: the pieces are compared by their lengths (they need
 * not end in NUL), patterns are found by their own text. */
static void test_rule_find(void)
{
    struct config *cfg = load_small("[binds]\ndefault = sqlite://\n[tables]\nmain.orders = default\n"
                                    "orders = default\nord* = default\n");
    if (cfg == NULL)
        return;
    const char *text = "main.orders_and_more";
    const struct table_rule *r = config_rule_find(cfg, text, 4, text + 5, 6);
    CHECK(r != NULL && strcmp(r->pattern, "main.orders") == 0 && r->line == 4 && !r->is_pattern);
    r = config_rule_find(cfg, NULL, 0, text + 5, 6);
    CHECK(r != NULL && strcmp(r->pattern, "orders") == 0 && r->line == 5);
    CHECK(config_rule_find(cfg, NULL, 0, text + 5, 5) == NULL);
    CHECK(config_rule_find(cfg, NULL, 0, text + 5, 7) == NULL);
    CHECK(config_rule_find(cfg, text, 3, text + 5, 6) == NULL);
    CHECK(config_rule_find(cfg, NULL, 0, text, 11) == cfg->rules); /* "main.orders" bare */
    r = config_rule_find(cfg, NULL, 0, "ord*", 4);
    CHECK(r != NULL && r->is_pattern && r->line == 6);
    CHECK(config_rule_find(cfg, NULL, 0, "", 0) == NULL);
    config_free(cfg);
    cfg = load_small("[binds]\ndefault = sqlite://\n");
    if (cfg == NULL)
        return;
    CHECK(config_rule_find(cfg, NULL, 0, "orders", 6) == NULL); /* an empty map */
    CHECK(route_table_bind(cfg, "main", "orders") == 0);
    config_free(cfg);
}

/* Many [user.NAME] sections (they are indexed by name and by cert_cn
 * too): each is found by config_user(), a reopened one continues the
 * first, and a cert_cn repeated in the last section names the first
 * user's line. */
#define USERS 20000
static void test_many_users(void)
{
    FILE *f = fopen(cfgpath, "w");
    if (f == NULL)
        return;
    fputs("[binds]\ndefault = sqlite://\n", f); /* user i: header on line 3 + 2i, cert_cn on 4 + 2i */
    for (int i = 0; i < USERS; i++)
        fprintf(f, "[user.u%d]\ncert_cn = cn%d\n", i, i);
    fputs("[user.u7]\nadmin = on\n", f);
    fclose(f);
    struct config *cfg = NULL;
    char err[1024] = "", want[PATH_MAX + 200];
    CHECK(config_load(cfgpath, &cfg, err, sizeof err) == 0);
    if (cfg == NULL) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK(cfg->nusers == USERS);
    size_t wrong = 0;
    for (int i = 0; i < USERS; i++) {
        char name[32], cn[32];
        snprintf(name, sizeof name, "u%d", i);
        snprintf(cn, sizeof cn, "cn%d", i);
        const struct user_conf *u = config_user(cfg, name);
        wrong += u == NULL || strcmp(u->name, name) != 0 || u->cert_cn == NULL ||
                 strcmp(u->cert_cn, cn) != 0 || u->line != 3 + 2 * i || u->admin != (i == 7);
    }
    CHECK(wrong == 0);
    CHECK(config_user(cfg, "u20000") == NULL);
    CHECK(config_user(cfg, "U7") == NULL); /* user names keep their case */
    config_free(cfg);

    f = fopen(cfgpath, "a");
    if (f == NULL)
        return;
    fputs("[user.extra]\ncert_cn = cn4321\n", f);
    fclose(f);
    CHECK(config_load(cfgpath, &cfg, err, sizeof err) == -1 && cfg == NULL);
    snprintf(want, sizeof want, "%s:%d: cert_cn = cn4321 is also the cert_cn of [user.u4321] (line %d)",
             cfgpath, 3 + 2 * USERS + 3, 4 + 2 * 4321);
    CHECK_STR(err, want);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sqlmux-test-cfg-rules-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    snprintf(cfgpath, sizeof cfgpath, "%s/sqlmux.ini", tmpdir);

    RUN(test_big_map_routes_every_name);
    RUN(test_big_map_duplicates);
    RUN(test_exact_beats_pattern_either_order);
    RUN(test_qualified_beats_bare);
    RUN(test_rule_find);
    RUN(test_many_users);

    unlink(cfgpath);
    rmdir(tmpdir);
    UNIT_MAIN_END;
}
