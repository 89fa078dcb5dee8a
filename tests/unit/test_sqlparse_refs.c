/*
 * Unit tests of the table references sqlparse.c reports for queries across
 * binds: the byte span of every reference as written, the table it names,
 * and its role (read, write target, REFERENCES), plus the write target.
 * REFS() compares them as one string: "text:role" per reference, role r, w
 * or f, then +a when an alias follows, +n when none may, joined by
 * commas; then the target's name or "-".
 */
#include "daemon/sqlparse.h"
#include "tests/unit/unit.h"

#include <stdint.h>
#include <stdlib.h>

static const char *refs_str(const char *sql, const struct route_info *ri, char *buf, size_t size)
{
    static const char roles[] = {'r', 'w', 'f'};
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ri->nrefs && o < size; i++) {
        const struct route_ref *r = &ri->refs[i];
        if (r->table >= ri->ntables || r->pos + r->len > strlen(sql)) {
            o += (size_t)snprintf(buf + o, size - o, "%sBAD", i ? "," : "");
            continue;
        }
        o += (size_t)snprintf(buf + o, size - o, "%s%.*s:%c%s", i ? "," : "", (int)r->len, sql + r->pos,
                              roles[r->role],
                              r->flags & REF_F_ALIASED ? "+a" : r->flags & REF_F_NOALIAS ? "+n" : "");
    }
    if (o < size)
        snprintf(buf + o, size - o, " target=%s", ri->target == SIZE_MAX ? "-" : ri->tables[ri->target].name);
    return buf;
}

#define REFS(sql, want)                                                                                      \
    do {                                                                                                     \
        struct route_info ri_;                                                                               \
        char buf_[2048];                                                                                     \
        int rc_ = sqlparse_analyze((sql), strlen(sql), &ri_);                                                \
        CHECK(rc_ == SQLPARSE_OK);                                                                           \
        CHECK_STR(refs_str((sql), &ri_, buf_, sizeof buf_), (want));                                         \
        sqlparse_info_free(&ri_);                                                                            \
    } while (0)

static void select_refs(void)
{
    REFS("SELECT * FROM test1 JOIN test2 USING (id) JOIN test3 USING (id)",
         "test1:r,test2:r,test3:r target=-");
    REFS("select a.x from main.t1 a, \"Q\" . t2 where a.id in (select id from t1)",
         "main.t1:r+a,\"Q\" . t2:r,t1:r target=-");
    REFS("SELECT 1 WHERE x IN t3", "t3:r+n target=-");
    REFS("SELECT * FROM a x JOIN b AS y ON x.i = y.i, c WHERE 1", "a:r+a,b:r+a,c:r target=-");
    REFS("UPDATE t AS u SET v = 1", "t:w+a target=t");
    REFS("INSERT INTO t AS u (a) VALUES (1) ON CONFLICT DO NOTHING", "t:w+a target=t");
}

static void cte_names_are_not_refs(void)
{
    REFS("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM c WHERE n < 3) SELECT * FROM c JOIN t ON t.id = n",
         "t:r target=-");
}

static void write_targets(void)
{
    REFS("INSERT INTO test2 SELECT id, color FROM test1 JOIN test3 USING (id)",
         "test2:w,test1:r,test3:r target=test2");
    REFS("UPDATE test1 SET color = 'x' WHERE id IN (SELECT id FROM test3)", "test1:w,test3:r target=test1");
    REFS("DELETE FROM test1 WHERE EXISTS (SELECT 1 FROM test3 WHERE test3.id = test1.id)",
         "test1:w,test3:r target=test1");
    REFS("INSERT INTO t(id, v) SELECT id, v FROM u WHERE true ON CONFLICT(id) DO UPDATE SET v = excluded.v",
         "t:w,u:r target=t");
    REFS("WITH s AS (SELECT id FROM u) INSERT INTO t SELECT * FROM s", "u:r,t:w target=t");
    REFS("REPLACE INTO t SELECT * FROM u", "t:w,u:r target=t");
    /* The target read again in a subquery is the same table. */
    REFS("DELETE FROM t WHERE id NOT IN (SELECT id FROM t)", "t:w,t:r target=t");
}

static void ddl_targets(void)
{
    REFS("CREATE TABLE nuts (id INTEGER PRIMARY KEY, tree_name TEXT REFERENCES tree(name))",
         "nuts:w+n,tree:f+n target=nuts");
    REFS("CREATE TABLE n (a, FOREIGN KEY (a) REFERENCES p(id) ON DELETE CASCADE)", "n:w+n,p:f+n target=n");
    REFS("CREATE VIEW v AS SELECT * FROM a JOIN b USING (id)", "v:w+n,a:r,b:r target=v");
    REFS("CREATE TRIGGER tr AFTER INSERT ON a BEGIN INSERT INTO b VALUES (1); END", "a:w+n,b:r target=a");
}

int main(void)
{
    RUN(select_refs);
    RUN(cte_names_are_not_refs);
    RUN(write_targets);
    RUN(ddl_targets);
    UNIT_MAIN_END;
}
