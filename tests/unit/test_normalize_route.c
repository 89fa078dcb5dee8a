/*
 * Unit tests of the route cache's literal keys (issue 18, daemon/route.c
 * with sqlnorm_route_key()): statements that differ only in literal values
 * share one cached decision, but a name written as a string ('test2')
 * routes by its value, and an error is never shared. Uses the example
 * config (conf/sqlmux.ini: test2 -> second_db) and catalogs in which
 * default holds test1.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "conf/config.h"
#include "daemon/route.h"
#include "tests/unit/unit.h"

static struct config *cfg;
static struct catset *cats;

static struct catset *make_catalogs(void)
{
    struct catset *cs = catset_new(cfg->nbinds);
    struct catalog *c0 = catalog_new(1), *c1 = catalog_new(1);
    if (cs == NULL || c0 == NULL || c1 == NULL || catalog_add(c0, "main", "test1", true) != 0 ||
        catalog_add(c1, "main", "test2", true) != 0)
        return NULL;
    catalog_seal(c0);
    catalog_seal(c1);
    cs->cats[0] = c0;
    cs->cats[1] = c1;
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
    char src[PATH_MAX];
    char err[1024] = "";
    snprintf(src, sizeof src, "conf/sqlmux.ini");
    if (access(src, R_OK) != 0) {
        snprintf(src, sizeof src, "%s", __FILE__);
        char *slash = strrchr(src, '/');
        snprintf(slash ? slash + 1 : src, sizeof src - (size_t)(slash ? slash + 1 - src : 0),
                 "../../conf/sqlmux.ini");
    }
    if (config_load(src, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    cats = make_catalogs();
    if (cats == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    CHECK(cfg->normalize_literals);
    RUN(test_literal_variants_share_a_decision);
    RUN(test_string_names_route_by_value);
    RUN(test_errors_are_not_shared);
    catset_drop(cats);
    config_free(cfg);
    UNIT_MAIN_END;
}
