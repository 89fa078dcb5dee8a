/*
 * Unit tests of daemon/route.c (issue 21): a route holds the set of binds
 * a statement touches and which of them it writes, while a statement over
 * two binds still carries CROSSBIND; the cache gives back the same
 * decision. Uses the example config (conf/sqlmux.ini: test2 -> second_db)
 * and catalogs (issue 14): default holds test1 and shared, second_db holds
 * test2, shared and s.only_s2.
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

static void route_of(const char *sql, struct route *r)
{
    struct route_info ri;
    route_compute(cfg, cats, sql, strlen(sql), r, &ri);
    sqlparse_info_free(&ri);
}

/* The catalogs the tests route with. */
static struct catset *make_catalogs(void)
{
    struct catset *cs = catset_new(cfg->nbinds);
    struct catalog *c0 = catalog_new(1), *c1 = catalog_new(1);
    if (cs == NULL || c0 == NULL || c1 == NULL || catalog_add(c0, "main", "Test1", true) != 0 ||
        catalog_add(c0, "main", "shared", true) != 0 || catalog_add(c1, "main", "test2", true) != 0 ||
        catalog_add(c1, "main", "shared", true) != 0 || catalog_add(c1, "s", "only_s2", false) != 0)
        return NULL;
    catalog_seal(c0);
    catalog_seal(c1);
    cs->cats[0] = c0;
    cs->cats[1] = c1;
    return cs;
}

static void test_catalog_rules(void)
{
    struct route r;
    route_of("SELECT * FROM main.test1", &r);
    CHECK(r.err_code == NULL && r.bind == 0 && r.rule == ROUTE_RULE_CATALOG);
    route_clear(&r);
    route_of("SELECT * FROM test2", &r); /* mapped and held: the map decides */
    CHECK(r.err_code == NULL && r.bind == 1 && r.rule == ROUTE_RULE_MAP);
    route_clear(&r);
    route_of("SELECT * FROM s.only_s2", &r);
    CHECK(r.err_code == NULL && r.bind == 1 && r.rule == ROUTE_RULE_CATALOG);
    route_clear(&r);
    route_of("SELECT * FROM only_s2", &r); /* not on the search path */
    CHECK(r.err_code == NULL && r.bind == ROUTE_NO_TABLE && r.rule == ROUTE_RULE_NONE);
    route_clear(&r);
    route_of("SELECT * FROM test1 JOIN shared USING (id)", &r);
    CHECK(r.err_code != NULL && strcmp(r.err_code, "AMBIGUOUS") == 0);
    CHECK(r.err_msg != NULL && strstr(r.err_msg, "binds default, second_db") != NULL);
    route_clear(&r);
    /* A name no bind holds follows the others; alone, the session's bind. */
    route_of("CREATE VIEW v AS SELECT * FROM test2", &r);
    CHECK(r.err_code == NULL && r.bind == 1);
    route_clear(&r);
    route_of("CREATE TABLE brand_new (x)", &r);
    CHECK(r.err_code == NULL && r.bind == ROUTE_NO_TABLE && r.nbinds == 0);
    route_clear(&r);
    /* PostgreSQL's catalogs and the version tables of every bind. */
    route_of(
        "SELECT * FROM information_schema.tables JOIN pg_catalog.pg_class ON 1 JOIN alembic_version ON 1",
        &r);
    CHECK(r.err_code == NULL && r.bind == ROUTE_NO_TABLE);
    route_clear(&r);
}

static void test_one_bind(void)
{
    struct route r;
    route_of("SELECT * FROM test2 JOIN sqlite_master ON 1", &r);
    CHECK(r.err_code == NULL);
    CHECK(r.nbinds == 1 && r.binds[0].index == 1 && !r.binds[0].writes);
    CHECK(r.bind == 1);
    route_clear(&r);
    route_of("INSERT INTO test1 SELECT * FROM test1", &r);
    CHECK(r.err_code == NULL);
    CHECK(r.nbinds == 1 && r.binds[0].index == 0 && r.binds[0].writes);
    CHECK(r.bind == 0);
    route_clear(&r);
}

static void test_no_bind(void)
{
    struct route r;
    route_of("SELECT 1", &r);
    CHECK(r.err_code == NULL && r.nbinds == 0 && r.bind == ROUTE_NO_TABLE);
    route_clear(&r);
    route_of("SELECT * FROM sqlite_master", &r);
    CHECK(r.err_code == NULL && r.nbinds == 0 && r.bind == ROUTE_NO_TABLE);
    route_clear(&r);
}

static void test_two_binds_still_refused(void)
{
    struct route r;
    route_of("UPDATE test2 SET a = (SELECT max(a) FROM test1 WHERE a IN (SELECT a FROM test2))", &r);
    CHECK(r.err_code != NULL && strcmp(r.err_code, "CROSSBIND") == 0);
    CHECK(r.nbinds == 2);
    CHECK(r.nbinds == 2 && r.binds[0].index == 1 && r.binds[1].index == 0);
    /* Only the UPDATE's target bind is written; test1 is only read. */
    CHECK(r.nbinds == 2 && r.binds[0].writes && !r.binds[1].writes);
    CHECK(r.bind == ROUTE_NO_TABLE);
    route_clear(&r);
}

static void test_cache_keeps_the_set(void)
{
    struct routecache *rc = routecache_new(16);
    routecache_set_catalogs(rc, cats);
    const char *sql = "SELECT * FROM test1, test2";
    const struct route *a = routecache_get(rc, cfg, sql, strlen(sql));
    CHECK(a->nbinds == 2 && strcmp(a->err_code, "CROSSBIND") == 0);
    const struct route *b = routecache_get(rc, cfg, sql, strlen(sql));
    CHECK(a == b && b->nbinds == 2 && b->binds[1].index == 1);
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
    RUN(test_one_bind);
    RUN(test_catalog_rules);
    RUN(test_no_bind);
    RUN(test_two_binds_still_refused);
    RUN(test_cache_keeps_the_set);
    catset_drop(cats);
    config_free(cfg);
    UNIT_MAIN_END;
}
