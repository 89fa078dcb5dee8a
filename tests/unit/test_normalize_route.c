/*
 * Unit tests of the route cache's literal keys (issue 18, daemon/route.c
 * with sqlnorm_route_key()): statements that differ only in literal values
 * share one cached decision, but a name written as a string ('test2')
 * routes by its value, and an error is never shared. A config of its own
 * (test2 -> second_db) and catalogs in which default holds test1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/config.h"
#include "daemon/route.h"
#include "tests/unit/unit.h"

static struct config *cfg;
static struct catset *cats;

/* Catalogs in which bind 0 (default) holds test1 and bind 1 test2. */
static struct catset *make_catalogs(void)
{
    static const char *const held[] = {"test1", "test2"};
    struct catset *cs = catset_new(cfg->nbinds);

    for (size_t i = 0; cs != NULL && i < sizeof held / sizeof held[0]; i++) {
        struct catalog *c = catalog_new(1);
        if (c == NULL || catalog_add(c, "main", held[i], true) != 0)
            return NULL;
        catalog_seal(c);
        cs->cats[i] = c;
    }
    return cs;
}

static const struct route *get(struct routecache *rc, const char *sql)
{
    return routecache_get(rc, cfg, sql, strlen(sql));
}

static void test_literal_variants_share_a_decision(void)
{
    struct routecache *rc = routecache_new(1024);
    routecache_set_catalogs(rc, cats);
    const struct route *a = get(rc, "SELECT v FROM test2 WHERE id = 5 AND s = 'x'");
    const struct route *b = get(rc, "SELECT v FROM test2 WHERE id = 6 AND s = 'it''s'");
    CHECK(a == b && b->err_code == NULL && b->bind == 1);
    a = get(rc, "INSERT INTO test1 (v) VALUES ('row-1')");
    b = get(rc, "INSERT INTO test1 (v) VALUES ('row-2')");
    CHECK(a == b && b->err_code == NULL && b->bind == 0 && b->kind == STMT_INSERT);
    routecache_free(rc);

    /* Off: each text its own decision. */
    cfg->normalize_literals = false;
    rc = routecache_new(1024);
    routecache_set_catalogs(rc, cats);
    a = get(rc, "SELECT v FROM test2 WHERE id = 5 AND s = 'x'");
    b = get(rc, "SELECT v FROM test2 WHERE id = 6 AND s = 'it''s'");
    CHECK(a != b && b->bind == 1);
    routecache_free(rc);
    cfg->normalize_literals = true;
}

static void test_string_names_route_by_value(void)
{
    struct routecache *rc = routecache_new(1024);
    routecache_set_catalogs(rc, cats);
    for (int round = 0; round < 2; round++) {
        const struct route *r = get(rc, "SELECT * FROM 'test1' WHERE id = 5");
        CHECK(r->err_code == NULL && r->bind == 0);
        r = get(rc, "SELECT * FROM 'test2' WHERE id = 5");
        CHECK(r->err_code == NULL && r->bind == 1);
        r = get(rc, "SELECT * FROM test1 AS 'x' WHERE x.id = 5");
        CHECK(r->err_code == NULL && r->bind == 0);
        r = get(rc, "SELECT * FROM test2 AS 'x' WHERE x.id = 6");
        CHECK(r->err_code == NULL && r->bind == 1);
    }
    routecache_free(rc);
}

static void test_errors_are_not_shared(void)
{
    struct routecache *rc = routecache_new(1024);
    routecache_set_catalogs(rc, cats);
    const struct route *a = get(rc, "SELECT * FROM test1 WHERE id = 5 AND (");
    CHECK(a->err_code != NULL);
    const struct route *b = get(rc, "SELECT * FROM test1 WHERE id = 6 AND (");
    CHECK(a != b && b->err_code != NULL);
    b = get(rc, "SELECT * FROM test1 WHERE id = 6");
    CHECK(b->err_code == NULL && b->bind == 0);
    routecache_free(rc);
}

int main(void)
{
    static const char text[] = "[binds]\ndefault = sqlite:///app.db\nsecond_db = sqlite:///second.db\n"
                               "[tables]\ntest2 = second_db\n";
    char path[] = "/tmp/sqlmux-test-normalize-XXXXXX";
    char err[1024] = "";
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, sizeof text - 1) != (ssize_t)(sizeof text - 1) || close(fd) != 0 ||
        config_load(path, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "config: %s\n", err);
        return 1;
    }
    unlink(path);
    cats = make_catalogs();
    if (cats == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    CHECK(cfg->normalize_literals); /* the default */
    RUN(test_literal_variants_share_a_decision);
    RUN(test_string_names_route_by_value);
    RUN(test_errors_are_not_shared);
    catset_drop(cats);
    config_free(cfg);
    UNIT_MAIN_END;
}
