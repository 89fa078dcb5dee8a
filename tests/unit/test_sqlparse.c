/*
 * Unit tests of daemon/sqlparse.c: statement kinds, the tables each statement
 * shape references, parameter counts, statement boundaries and the errors
 * for input that cannot be tokenized. EXPECT() compares the tables as one
 * string, "schema.name" or "name" joined by commas, in result order.
 */
#include "daemon/sqlparse.h"
#include "tests/unit/unit.h"

#include <stdint.h>
#include <stdlib.h>

/* Joins ri's tables as "a,main.b" into buf. */
static const char *tables_str(const struct route_info *ri, char *buf, size_t size)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ri->ntables && o < size; i++) {
        const struct route_table *t = &ri->tables[i];
        o += (size_t)snprintf(buf + o, size - o, "%s%s%s%s", i ? "," : "", t->schema, t->schema[0] ? "." : "",
                              t->name);
    }
    return buf;
}

/* Analyzes a NUL-terminated statement. */
static int analyze(const char *sql, struct route_info *ri)
{
    return sqlparse_analyze(sql, strlen(sql), ri);
}

/* sql must analyze to kind_ with exactly the tables tables_. */
#define EXPECT(sql, kind_, tables_)                                                                          \
    do {                                                                                                     \
        struct route_info ri_;                                                                               \
        char buf_[2048];                                                                                     \
        int rc_ = analyze((sql), &ri_);                                                                      \
        CHECK(rc_ == SQLPARSE_OK);                                                                           \
        if (rc_ != SQLPARSE_OK)                                                                              \
            fprintf(stderr, "    %s: %s\n", (sql), ri_.error);                                               \
        CHECK_STR(sqlparse_kind_name(ri_.kind), sqlparse_kind_name(kind_));                                  \
        CHECK_STR(tables_str(&ri_, buf_, sizeof buf_), (tables_));                                           \
        sqlparse_info_free(&ri_);                                                                            \
    } while (0)

/* sql must fail with code_ and an error message containing msg_. */
#define EXPECT_ERR(sql, code_, msg_)                                                                         \
    do {                                                                                                     \
        struct route_info ri_;                                                                               \
        int rc_ = analyze((sql), &ri_);                                                                      \
        CHECK(rc_ == (code_));                                                                               \
        if (strstr(ri_.error, (msg_)) == NULL) {                                                             \
            unit_failed_checks++;                                                                            \
            fprintf(stderr, "  %s:%d: error \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, ri_.error, (msg_));  \
        }                                                                                                    \
        CHECK(ri_.ntables == 0 && ri_.tables == NULL && ri_.names == NULL);                                  \
        sqlparse_info_free(&ri_);                                                                            \
    } while (0)

/* sql must analyze with nparams == n_. */
#define EXPECT_PARAMS(sql, n_)                                                                               \
    do {                                                                                                     \
        struct route_info ri_;                                                                               \
        int rc_ = analyze((sql), &ri_);                                                                      \
        CHECK(rc_ == SQLPARSE_OK);                                                                           \
        if (rc_ != SQLPARSE_OK)                                                                              \
            fprintf(stderr, "    %s: %s\n", (sql), ri_.error);                                               \
        CHECK(ri_.nparams == (size_t)(n_));                                                                  \
        if (ri_.nparams != (size_t)(n_))                                                                     \
            fprintf(stderr, "    %s: nparams %zu\n", (sql), ri_.nparams);                                    \
        sqlparse_info_free(&ri_);                                                                            \
    } while (0)

/* sql must analyze with route flags == flags_. */
#define EXPECT_FLAGS(sql, flags_)                                                                            \
    do {                                                                                                     \
        struct route_info ri_;                                                                               \
        CHECK(analyze((sql), &ri_) == SQLPARSE_OK);                                                          \
        CHECK(ri_.flags == (unsigned)(flags_));                                                              \
        sqlparse_info_free(&ri_);                                                                            \
    } while (0)

/* ---- SELECT: FROM lists and joins ---- */

static void select_simple(void)
{
    EXPECT("SELECT * FROM test1", STMT_SELECT, "test1");
    EXPECT("select a, b from t where a = 1 order by b limit 3", STMT_SELECT, "t");
    EXPECT("SELECT 1", STMT_SELECT, "");
    EXPECT("SELECT * FROM t;", STMT_SELECT, "t");
}

static void select_comma_aliases(void)
{
    EXPECT("SELECT * FROM a, b AS x, c y WHERE x.id = y.id", STMT_SELECT, "a,b,c");
    EXPECT("SELECT * FROM a AS \"A 1\", b 'bee', c [see]", STMT_SELECT, "a,b,c");
}

static void select_join_kinds(void)
{
    EXPECT("SELECT * FROM a, b AS x, c y JOIN d ON d.id = a.id "
           "LEFT OUTER JOIN e USING (id) NATURAL JOIN f CROSS JOIN g",
           STMT_SELECT, "a,b,c,d,e,f,g");
    EXPECT("SELECT * FROM a INNER JOIN b ON a.x = b.x RIGHT JOIN c ON 1 "
           "FULL OUTER JOIN d ON 1 LEFT JOIN e AS ee ON ee.k = d.k",
           STMT_SELECT, "a,b,c,d,e");
}

static void select_join_on_then_comma(void)
{
    EXPECT("SELECT * FROM a JOIN b ON a.id = b.id AND b.x IN (1, 2), c WHERE c.z", STMT_SELECT, "a,b,c");
    EXPECT("SELECT * FROM a JOIN b USING (x, y), c", STMT_SELECT, "a,b,c");
}

static void select_indexed_by(void)
{
    EXPECT("SELECT * FROM t INDEXED BY t_idx WHERE x = 1", STMT_SELECT, "t");
    EXPECT("SELECT * FROM t AS x NOT INDEXED, u INDEXED BY u_i JOIN v", STMT_SELECT, "t,u,v");
    EXPECT("DELETE FROM t INDEXED BY i WHERE a", STMT_DELETE, "t");
}

static void select_parenthesized_join(void)
{
    EXPECT("SELECT * FROM (a JOIN b ON a.x = b.x), c", STMT_SELECT, "a,b,c");
    EXPECT("SELECT * FROM ((a, b)) AS j", STMT_SELECT, "a,b");
}

/* ---- subqueries ---- */

static void subquery_in_from(void)
{
    EXPECT("SELECT s.x FROM (SELECT x FROM h) AS s, t", STMT_SELECT, "h,t");
    EXPECT("SELECT * FROM (SELECT * FROM a UNION SELECT * FROM b) s JOIN c", STMT_SELECT, "a,b,c");
    EXPECT("SELECT * FROM (VALUES (1, 2), (3, 4)) AS v(a, b)", STMT_SELECT, "");
}

static void subquery_in_where(void)
{
    EXPECT("SELECT * FROM t WHERE x IN (SELECT y FROM i)", STMT_SELECT, "t,i");
    EXPECT("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id) "
           "AND NOT EXISTS(SELECT 1 FROM v)",
           STMT_SELECT, "t,u,v");
    EXPECT("SELECT * FROM t WHERE x = ANY(SELECT y FROM u) AND z > ALL (SELECT w FROM v)", STMT_SELECT,
           "t,u,v");
}

static void subquery_scalar(void)
{
    EXPECT("SELECT (SELECT max(x) FROM u) AS m, t.* FROM t", STMT_SELECT, "u,t");
    EXPECT("SELECT coalesce((SELECT a FROM u LIMIT 1), 0) FROM t", STMT_SELECT, "u,t");
}

static void subquery_order_by_and_case(void)
{
    EXPECT("SELECT a FROM t ORDER BY (SELECT count(*) FROM u WHERE u.a = t.a)", STMT_SELECT, "t,u");
    EXPECT("SELECT CASE WHEN EXISTS (SELECT 1 FROM u) THEN (SELECT b FROM v) ELSE 0 END "
           "FROM t GROUP BY 1 HAVING count(*) > (SELECT 1 FROM w)",
           STMT_SELECT, "u,v,t,w");
}

static void subquery_three_deep(void)
{
    EXPECT("SELECT * FROM a WHERE x IN (SELECT x FROM b WHERE y IN "
           "(SELECT y FROM c WHERE z IN (SELECT z FROM d JOIN e)))",
           STMT_SELECT, "a,b,c,d,e");
    EXPECT("SELECT * FROM (SELECT * FROM (SELECT * FROM (SELECT * FROM deep) x) y) z", STMT_SELECT, "deep");
}

static void compound_selects(void)
{
    EXPECT("SELECT a FROM t1 UNION SELECT a FROM t2 UNION ALL SELECT a FROM t3 "
           "INTERSECT SELECT a FROM t4 EXCEPT SELECT a FROM t5 ORDER BY 1",
           STMT_SELECT, "t1,t2,t3,t4,t5");
    EXPECT("VALUES (1) UNION SELECT x FROM t", STMT_SELECT, "t");
}

static void dedup_in_order(void)
{
    EXPECT("SELECT * FROM b, a, B, main.a, \"a\", MAIN.A JOIN b", STMT_SELECT, "b,a,main.a");
}

/* ---- WITH ---- */

static void cte_basic(void)
{
    EXPECT("WITH c AS (SELECT * FROM a) SELECT * FROM c, b", STMT_SELECT, "a,b");
    EXPECT("WITH c(x, y) AS (SELECT 1, 2) SELECT x FROM c", STMT_SELECT, "");
}

static void cte_recursive(void)
{
    EXPECT("WITH RECURSIVE cnt(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM cnt WHERE x < 10) "
           "SELECT x FROM cnt",
           STMT_SELECT, "");
    EXPECT("WITH RECURSIVE tree AS (SELECT id FROM nodes WHERE parent IS NULL UNION ALL "
           "SELECT n.id FROM nodes n JOIN tree ON n.parent = tree.id) SELECT * FROM tree",
           STMT_SELECT, "nodes");
}

static void cte_multiple_materialized(void)
{
    EXPECT("WITH a AS (SELECT * FROM t1), b AS NOT MATERIALIZED (SELECT * FROM a JOIN t2), "
           "c AS MATERIALIZED (SELECT * FROM b) SELECT * FROM c JOIN t3",
           STMT_SELECT, "t1,t2,t3");
}

static void cte_shadows_table(void)
{
    EXPECT("WITH t AS (SELECT 1) SELECT * FROM t, main.t", STMT_SELECT, "main.t");
    EXPECT("WITH \"T\" AS (SELECT 1) SELECT * FROM u WHERE x IN (SELECT * FROM t)", STMT_SELECT, "u");
}

static void cte_main_statement_kinds(void)
{
    EXPECT("WITH c AS (SELECT * FROM a) INSERT INTO t SELECT * FROM c", STMT_INSERT, "a,t");
    EXPECT("WITH c AS (SELECT id FROM a) UPDATE t SET x = 1 WHERE id IN c", STMT_UPDATE, "a,t");
    EXPECT("WITH c AS (SELECT id FROM a) DELETE FROM t WHERE id IN (SELECT id FROM c)", STMT_DELETE, "a,t");
    EXPECT("WITH c AS (SELECT 1) VALUES (2)", STMT_SELECT, "");
    EXPECT("WITH c AS (SELECT 1) REPLACE INTO t VALUES (1)", STMT_INSERT, "t");
}

static void cte_nested(void)
{
    EXPECT("SELECT * FROM (WITH x AS (SELECT * FROM a) SELECT * FROM x) s JOIN b", STMT_SELECT, "a,b");
    EXPECT("INSERT INTO t WITH x AS (SELECT * FROM a) SELECT * FROM x", STMT_INSERT, "t,a");
}

static void cte_pg_data_modifying(void)
{
    EXPECT("WITH moved AS (DELETE FROM src WHERE old RETURNING *) "
           "INSERT INTO dst SELECT * FROM moved",
           STMT_INSERT, "src,dst");
    EXPECT("WITH u AS (UPDATE acc SET n = n + 1 RETURNING id) SELECT * FROM u", STMT_SELECT, "acc");
}

/* ---- things that are not tables ---- */

static void table_valued_functions(void)
{
    EXPECT("SELECT * FROM json_each('[1,2]')", STMT_SELECT, "");
    EXPECT("SELECT * FROM generate_series(1, 10) AS g, t", STMT_SELECT, "t");
    EXPECT("SELECT name FROM pragma_table_info('t') JOIN u ON 1", STMT_SELECT, "u");
    EXPECT("SELECT j.value FROM t, json_each(t.doc) j", STMT_SELECT, "t");
    EXPECT("SELECT * FROM t WHERE x IN json_each(?)", STMT_SELECT, "t");
}

static void functions_and_columns(void)
{
    EXPECT("SELECT count(*), t.col, t.*, u.x FROM t, u", STMT_SELECT, "t,u");
    EXPECT("SELECT replace(a, 'x', 'y'), left(b, 2), \"lower\"(c) FROM t", STMT_SELECT, "t");
}

static void cast_is_not_alias(void)
{
    EXPECT("SELECT CAST(x AS INTEGER) AS n, CAST(y AS TEXT) FROM t", STMT_SELECT, "t");
}

static void window_and_filter(void)
{
    EXPECT("SELECT row_number() OVER (PARTITION BY a ORDER BY b), "
           "count(*) FILTER (WHERE c > 0) OVER w FROM t WINDOW w AS (ORDER BY a)",
           STMT_SELECT, "t");
}

static void pg_from_inside_functions(void)
{
    EXPECT("SELECT substring(name FROM 2 FOR 3) FROM t", STMT_SELECT, "t");
    EXPECT("SELECT EXTRACT(year FROM created_at) FROM orders", STMT_SELECT, "orders");
    EXPECT("SELECT trim(both 'x' from name), position('a' in name) FROM t", STMT_SELECT, "t");
    EXPECT("SELECT ARRAY(SELECT x FROM u) FROM t", STMT_SELECT, "u,t");
}

static void is_distinct_from(void)
{
    EXPECT("SELECT * FROM t WHERE a IS DISTINCT FROM b", STMT_SELECT, "t");
    EXPECT("SELECT a IS NOT DISTINCT FROM b FROM t", STMT_SELECT, "t");
    EXPECT("SELECT DISTINCT a FROM t", STMT_SELECT, "t");
}

static void strings_and_comments_hide_keywords(void)
{
    EXPECT("SELECT 'FROM x' FROM t WHERE a = 'JOIN y' AND b = 'it''s FROM z'", STMT_SELECT, "t");
    EXPECT("SELECT a -- FROM x\n FROM t /* JOIN y */ WHERE b", STMT_SELECT, "t");
    EXPECT("/* leading FROM q */ SELECT 1 -- FROM r", STMT_SELECT, "");
    EXPECT("SELECT \"from\" FROM t", STMT_SELECT, "t");
}

static void in_table_sqlite(void)
{
    EXPECT("SELECT * FROM t WHERE x IN u", STMT_SELECT, "t,u");
    EXPECT("SELECT * FROM t WHERE x NOT IN main.u", STMT_SELECT, "t,main.u");
    EXPECT("SELECT * FROM t WHERE x IN (1, 2, 3)", STMT_SELECT, "t");
    EXPECT("SELECT coalesce(x IN u, 0), position('a' IN s) FROM t", STMT_SELECT, "u,t");
}

/* ---- INSERT ---- */

static void insert_values(void)
{
    EXPECT("INSERT INTO t VALUES (1, 'a')", STMT_INSERT, "t");
    EXPECT("INSERT INTO main.t (a, b) VALUES (1, 2), (3, 4)", STMT_INSERT, "main.t");
    EXPECT("insert into t(a) values ((select max(a) from u))", STMT_INSERT, "t,u");
}

static void insert_or_and_replace(void)
{
    EXPECT("INSERT OR REPLACE INTO t VALUES (1)", STMT_INSERT, "t");
    EXPECT("INSERT OR IGNORE INTO t (x) VALUES (1)", STMT_INSERT, "t");
    EXPECT("REPLACE INTO t VALUES (1)", STMT_INSERT, "t");
}

static void insert_select(void)
{
    EXPECT("INSERT INTO t SELECT * FROM u WHERE u.x IN (SELECT x FROM v)", STMT_INSERT, "t,u,v");
}

static void insert_default_values_alias(void)
{
    EXPECT("INSERT INTO t DEFAULT VALUES", STMT_INSERT, "t");
    EXPECT("INSERT INTO t AS x (a) VALUES (1)", STMT_INSERT, "t");
}

static void insert_upsert(void)
{
    EXPECT("INSERT INTO t (id, v) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET v = excluded.v "
           "WHERE t.v < excluded.v",
           STMT_INSERT, "t");
    EXPECT("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", STMT_INSERT, "t");
    EXPECT("INSERT INTO t SELECT * FROM u WHERE true ON CONFLICT (id) DO UPDATE SET "
           "a = (SELECT a FROM w), b = 2",
           STMT_INSERT, "t,u,w");
}

static void returning_clause(void)
{
    EXPECT("INSERT INTO t (a) VALUES (1) RETURNING id, a", STMT_INSERT, "t");
    EXPECT("DELETE FROM t WHERE a RETURNING *, (SELECT 1 FROM u)", STMT_DELETE, "t,u");
}

/* ---- UPDATE / DELETE ---- */

static void update_basic(void)
{
    EXPECT("UPDATE t SET a = 1, b = b + 1 WHERE id = ?", STMT_UPDATE, "t");
    EXPECT("UPDATE OR ROLLBACK main.t AS x SET a = 1", STMT_UPDATE, "main.t");
    EXPECT("UPDATE t SET a = (SELECT b FROM u WHERE u.id = t.id)", STMT_UPDATE, "t,u");
}

static void update_from(void)
{
    EXPECT("UPDATE t SET x = u.y FROM u, v AS w WHERE t.id = u.id AND w.k = 1", STMT_UPDATE, "t,u,v");
    EXPECT("UPDATE t SET x = s.y FROM (SELECT y FROM src) AS s", STMT_UPDATE, "t,src");
}

static void delete_basic(void)
{
    EXPECT("DELETE FROM t", STMT_DELETE, "t");
    EXPECT("DELETE FROM main.t WHERE id IN (SELECT id FROM u) LIMIT 5", STMT_DELETE, "main.t,u");
}

/* ---- DDL ---- */

static void create_table_references(void)
{
    EXPECT("CREATE TABLE t (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p(id) ON DELETE "
           "CASCADE, qid INT, FOREIGN KEY (qid) REFERENCES main.q (id))",
           STMT_DDL, "t,p,main.q");
    EXPECT("CREATE TABLE IF NOT EXISTS t (a TEXT DEFAULT 'x', b INT CHECK (b > 0)) "
           "WITHOUT ROWID, STRICT",
           STMT_DDL, "t");
}

static void create_table_as(void)
{
    EXPECT("CREATE TABLE t AS SELECT * FROM u JOIN v", STMT_DDL, "t,u,v");
}

static void create_index(void)
{
    EXPECT("CREATE INDEX i ON t(a)", STMT_DDL, "t");
    EXPECT("CREATE UNIQUE INDEX IF NOT EXISTS i ON t (a, b) WHERE c > 0", STMT_DDL, "t");
    EXPECT("CREATE INDEX aux.i ON t(a)", STMT_DDL, "aux.t");
    EXPECT("CREATE INDEX CONCURRENTLY ON ONLY t USING btree (a)", STMT_DDL, "t");
}

static void create_view(void)
{
    EXPECT("CREATE VIEW v AS SELECT a FROM u WHERE b IN (SELECT b FROM w)", STMT_DDL, "v,u,w");
    EXPECT("CREATE VIEW IF NOT EXISTS v(x) AS WITH c AS (SELECT 1) SELECT * FROM c", STMT_DDL, "v");
    EXPECT("CREATE OR REPLACE VIEW v AS SELECT 1", STMT_DDL, "v");
}

static void create_trigger_body(void)
{
    EXPECT("CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW BEGIN "
           "INSERT INTO log VALUES (new.a); UPDATE cnt SET n = n + 1; "
           "DELETE FROM stale WHERE k = new.k; SELECT RAISE(IGNORE) FROM chk; END;",
           STMT_DDL, "t,log,cnt,stale,chk");
}

static void create_trigger_case_in_body(void)
{
    EXPECT("CREATE TRIGGER tr BEFORE UPDATE ON t BEGIN "
           "UPDATE u SET a = CASE WHEN new.a > 0 THEN 1 ELSE CASE new.b WHEN 1 THEN 2 END END; "
           "INSERT INTO v SELECT * FROM w; END",
           STMT_DDL, "t,u,v,w");
}

static void create_trigger_header_forms(void)
{
    EXPECT("CREATE TRIGGER IF NOT EXISTS main.tr INSTEAD OF UPDATE OF a, b ON vw "
           "WHEN new.a IN (SELECT a FROM allowed) BEGIN SELECT 1; END",
           STMT_DDL, "main.vw,allowed");
    EXPECT("CREATE TEMP TRIGGER tr DELETE ON main.t BEGIN DELETE FROM u; END", STMT_DDL, "main.t,u");
    EXPECT("CREATE TRIGGER tr BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION f()", STMT_DDL, "t");
}

static void create_virtual_table(void)
{
    EXPECT("CREATE VIRTUAL TABLE docs USING fts5(title, body, content='x')", STMT_DDL, "docs");
}

static void create_other_objects(void)
{
    EXPECT("CREATE SEQUENCE s START 1", STMT_DDL, "");
    EXPECT("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 FROM t; $$ LANGUAGE sql", STMT_DDL, "");
    EXPECT("CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1 FROM t; SELECT 2; END", STMT_DDL, "t");
}

static void temp_flags(void)
{
    EXPECT_FLAGS("CREATE TEMP TABLE t (a)", ROUTE_TEMP);
    EXPECT_FLAGS("CREATE TEMPORARY VIEW v AS SELECT 1", ROUTE_TEMP);
    EXPECT_FLAGS("CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END", ROUTE_TEMP);
    EXPECT_FLAGS("CREATE INDEX temp.i ON t(a)", ROUTE_TEMP);
    EXPECT_FLAGS("CREATE TABLE temp.t (a)", ROUTE_TEMP);
    EXPECT_FLAGS("CREATE TABLE t (a)", 0);
    EXPECT_FLAGS("SELECT * FROM temp.t", 0);
    EXPECT("CREATE TEMP TABLE t AS SELECT * FROM u", STMT_DDL, "t,u");
}

static void begin_write_flags(void)
{
    EXPECT_FLAGS("BEGIN IMMEDIATE", ROUTE_BEGIN_WRITE);
    EXPECT_FLAGS("begin exclusive transaction;", ROUTE_BEGIN_WRITE);
    EXPECT_FLAGS("/* c */ BEGIN  Immediate", ROUTE_BEGIN_WRITE);
    EXPECT_FLAGS("BEGIN", 0);
    EXPECT_FLAGS("BEGIN DEFERRED", 0);
    EXPECT_FLAGS("BEGIN TRANSACTION", 0);
    EXPECT_FLAGS("START TRANSACTION", 0);
}

static void drop_statements(void)
{
    EXPECT("DROP TABLE t", STMT_DDL, "t");
    EXPECT("DROP TABLE IF EXISTS main.t", STMT_DDL, "main.t");
    EXPECT("DROP VIEW v", STMT_DDL, "v");
    EXPECT("DROP INDEX i", STMT_DDL, "");
    EXPECT("DROP TRIGGER IF EXISTS tr", STMT_DDL, "");
    EXPECT("DROP TABLE IF EXISTS a, b CASCADE", STMT_DDL, "a,b");
}

static void alter_table(void)
{
    /* The new name counts: the map must route it to the same bind. */
    EXPECT("ALTER TABLE t RENAME TO u", STMT_DDL, "t,u");
    EXPECT("ALTER TABLE main.t RENAME TO \"U\"", STMT_DDL, "main.t,main.u");
    EXPECT("ALTER TABLE t RENAME a TO b", STMT_DDL, "t");
    EXPECT("ALTER TABLE main.t ADD COLUMN c INTEGER REFERENCES p(id)", STMT_DDL, "main.t,p");
    EXPECT("ALTER TABLE t RENAME COLUMN a TO b", STMT_DDL, "t");
    EXPECT("ALTER TABLE t DROP COLUMN c", STMT_DDL, "t");
    EXPECT("ALTER TABLE IF EXISTS ONLY t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES p (b)", STMT_DDL,
           "t,p");
}

/* ---- PRAGMA and maintenance ---- */

static void pragma_table_pragmas(void)
{
    EXPECT("PRAGMA table_info(t)", STMT_PRAGMA, "t");
    EXPECT("PRAGMA TABLE_XINFO('My Table')", STMT_PRAGMA, "my table");
    EXPECT("PRAGMA main.index_list(\"T\")", STMT_PRAGMA, "main.t");
    EXPECT("PRAGMA foreign_key_list([t])", STMT_PRAGMA, "t");
    EXPECT("PRAGMA aux.foreign_key_check(t);", STMT_PRAGMA, "aux.t");
    EXPECT("PRAGMA table_info = t", STMT_PRAGMA, "t");
    EXPECT("PRAGMA foreign_key_check", STMT_PRAGMA, "");
}

static void pragma_other(void)
{
    EXPECT("PRAGMA journal_mode = WAL", STMT_PRAGMA, "");
    EXPECT("PRAGMA main.user_version", STMT_PRAGMA, "");
    EXPECT("PRAGMA index_info(idx)", STMT_PRAGMA, "");
}

static void analyze_reindex(void)
{
    EXPECT("ANALYZE", STMT_OTHER, "");
    EXPECT("ANALYZE t", STMT_OTHER, "t");
    EXPECT("ANALYZE main.t", STMT_OTHER, "main.t");
    EXPECT("REINDEX t", STMT_OTHER, "t");
    EXPECT("REINDEX TABLE CONCURRENTLY t", STMT_OTHER, "t");
    EXPECT("REINDEX INDEX i", STMT_OTHER, "");
}

static void pg_truncate_lock_only(void)
{
    EXPECT("TRUNCATE TABLE t", STMT_OTHER, "t");
    EXPECT("TRUNCATE a, ONLY b RESTART IDENTITY", STMT_OTHER, "a,b");
    EXPECT("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", STMT_OTHER, "t");
    EXPECT("LOCK ONLY t, u IN SHARE MODE", STMT_OTHER, "t,u");
    EXPECT("SELECT * FROM ONLY t JOIN ONLY u ON true", STMT_SELECT, "t,u");
    EXPECT("UPDATE ONLY t SET a = 1", STMT_UPDATE, "t");
}

static void pg_delete_using_and_lateral(void)
{
    EXPECT("DELETE FROM t USING u, v WHERE t.id = u.id", STMT_DELETE, "t,u,v");
    EXPECT("SELECT * FROM t CROSS JOIN LATERAL (SELECT * FROM u WHERE u.t = t.id) x, "
           "LATERAL generate_series(1, t.n) g",
           STMT_SELECT, "t,u");
    EXPECT("SELECT * FROM unnest(arr) WITH ORDINALITY AS t(v, n)", STMT_SELECT, "");
}

static void pg_misc_statements(void)
{
    EXPECT("COPY t (a, b) FROM STDIN WITH (FORMAT csv)", STMT_OTHER, "t");
    EXPECT("COPY (SELECT * FROM t) TO STDOUT", STMT_OTHER, "t");
    EXPECT("FETCH NEXT FROM cur", STMT_OTHER, "");
    EXPECT("REVOKE SELECT ON t FROM someone", STMT_OTHER, "");
    EXPECT("SELECT a FROM t FOR UPDATE OF t, u", STMT_SELECT, "t");
    EXPECT("SELECT now()::timestamp with time zone FROM t", STMT_SELECT, "t");
}

/* ---- names ---- */

static void schema_qualified_forms(void)
{
    EXPECT("SELECT * FROM \"main\".\"test1\"", STMT_SELECT, "main.test1");
    EXPECT("SELECT * FROM [main].[test1]", STMT_SELECT, "main.test1");
    EXPECT("SELECT * FROM `main`.`test1`", STMT_SELECT, "main.test1");
    EXPECT("SELECT * FROM reports.daily d JOIN Reports.Weekly", STMT_SELECT, "reports.daily,reports.weekly");
    EXPECT("SELECT * FROM db.sch.tbl", STMT_SELECT, "sch.tbl");
    EXPECT("SELECT * FROM main . test1", STMT_SELECT, "main.test1");
}

static void quoted_identifiers(void)
{
    EXPECT("SELECT * FROM \"My Table\"", STMT_SELECT, "my table");
    EXPECT("SELECT * FROM \"a \"\"quoted\"\" name\"", STMT_SELECT, "a \"quoted\" name");
    EXPECT("SELECT * FROM `back``tick`", STMT_SELECT, "back`tick");
    EXPECT("SELECT * FROM [with \"dq\"]", STMT_SELECT, "with \"dq\"");
    EXPECT("SELECT * FROM 'str''ing'", STMT_SELECT, "str'ing");
    EXPECT("SELECT * FROM \"Ünïcode\"", STMT_SELECT, "Ünïcode");
}

static void keywords_case_insensitive(void)
{
    EXPECT("sElEcT * fRoM T1 jOiN T2 uSiNg (a)", STMT_SELECT, "t1,t2");
    EXPECT("wItH c aS (sElEcT 1) dElEtE fRoM X", STMT_DELETE, "x");
}

static void quoted_keywords_are_names(void)
{
    EXPECT("SELECT * FROM \"select\" JOIN [from] JOIN `where`", STMT_SELECT, "select,from,where");
    EXPECT("INSERT INTO \"order\" VALUES (1)", STMT_INSERT, "order");
    EXPECT("SELECT * FROM key, temp.data, replace", STMT_SELECT, "key,temp.data,replace");
}

static void names_storage(void)
{
    struct route_info ri;
    CHECK(analyze("SELECT * FROM a, main.b", &ri) == SQLPARSE_OK);
    CHECK(ri.ntables == 2);
    if (ri.ntables == 2) {
        CHECK_STR(ri.tables[0].schema, "");
        CHECK_STR(ri.tables[0].name, "a");
        CHECK_STR(ri.tables[1].schema, "main");
        CHECK_STR(ri.tables[1].name, "b");
        for (size_t i = 0; i < 2; i++) {
            CHECK(ri.tables[i].schema >= ri.names && ri.tables[i].schema < ri.names + 16);
            CHECK(ri.tables[i].name >= ri.names && ri.tables[i].name < ri.names + 16);
        }
    }
    sqlparse_info_free(&ri);
    CHECK(ri.tables == NULL && ri.names == NULL && ri.ntables == 0);
    sqlparse_info_free(&ri); /* a second free is harmless */
    sqlparse_info_free(NULL);
}

static void not_nul_terminated(void)
{
    char buf[32];
    memcpy(buf, "SELECT * FROM abcdefXXXXXXXXXXXXXXXXXXXXXXXX", sizeof buf);
    struct route_info ri;
    CHECK(sqlparse_analyze(buf, 17, &ri) == SQLPARSE_OK);
    CHECK(ri.ntables == 1 && ri.ntables == 1 && strcmp(ri.tables[0].name, "abc") == 0);
    sqlparse_info_free(&ri);
    CHECK(sqlparse_analyze(buf, 14, &ri) == SQLPARSE_OK); /* "SELECT * FROM " */
    CHECK(ri.ntables == 0);
    sqlparse_info_free(&ri);
}

/* ---- kinds ---- */

static void kinds_transactions(void)
{
    EXPECT("BEGIN", STMT_BEGIN, "");
    EXPECT("begin deferred", STMT_BEGIN, "");
    EXPECT("BEGIN IMMEDIATE TRANSACTION;", STMT_BEGIN, "");
    EXPECT("BEGIN EXCLUSIVE", STMT_BEGIN, "");
    EXPECT("START TRANSACTION", STMT_BEGIN, "");
    EXPECT("COMMIT", STMT_COMMIT, "");
    EXPECT("END TRANSACTION", STMT_COMMIT, "");
    EXPECT("end", STMT_COMMIT, "");
    EXPECT("ROLLBACK", STMT_ROLLBACK, "");
    EXPECT("ROLLBACK TRANSACTION", STMT_ROLLBACK, "");
    EXPECT("ROLLBACK TO sp1", STMT_SAVEPOINT, "");
    EXPECT("ROLLBACK TRANSACTION TO SAVEPOINT sp1", STMT_SAVEPOINT, "");
    EXPECT("SAVEPOINT sp1", STMT_SAVEPOINT, "");
    EXPECT("RELEASE SAVEPOINT sp1", STMT_SAVEPOINT, "");
    EXPECT("RELEASE sp1", STMT_SAVEPOINT, "");
}

static void kinds_misc(void)
{
    EXPECT("PRAGMA foreign_keys = ON", STMT_PRAGMA, "");
    EXPECT("ATTACH DATABASE 'x.db' AS aux", STMT_ATTACH, "");
    EXPECT("ATTACH 'x.db' AS aux", STMT_ATTACH, "");
    EXPECT("DETACH DATABASE aux", STMT_DETACH, "");
    EXPECT("DETACH aux", STMT_DETACH, "");
    EXPECT("VACUUM", STMT_VACUUM, "");
    EXPECT("VACUUM main", STMT_VACUUM, "");
    EXPECT("VALUES (1), (2)", STMT_SELECT, "");
    EXPECT("SHOW search_path", STMT_OTHER, "");
    EXPECT("SET search_path TO app", STMT_OTHER, "");
}

static void vacuum_into_flag(void)
{
    EXPECT_FLAGS("VACUUM INTO '/tmp/copy.db'", ROUTE_VACUUM_INTO);
    EXPECT_FLAGS("VACUUM main INTO 'copy.db'", ROUTE_VACUUM_INTO);
    EXPECT_FLAGS("VACUUM \"main\" INTO 'copy.db'", ROUTE_VACUUM_INTO);
    EXPECT_FLAGS("vacuum/**/[aux]/**/into'copy.db'", ROUTE_VACUUM_INTO);
    EXPECT_FLAGS("VACUUM e'x' INTO 'copy.db'", ROUTE_VACUUM_INTO);
    EXPECT_FLAGS("EXPLAIN VACUUM INTO 'copy.db'", ROUTE_VACUUM_INTO);
    EXPECT_FLAGS("VACUUM", 0);
    EXPECT_FLAGS("VACUUM main", 0);
    EXPECT("VACUUM aux INTO 'f.db'", STMT_VACUUM, "");
}

static void explain(void)
{
    EXPECT("EXPLAIN SELECT * FROM t", STMT_EXPLAIN, "t");
    EXPECT("EXPLAIN QUERY PLAN SELECT * FROM t JOIN u", STMT_EXPLAIN, "t,u");
    EXPECT("EXPLAIN QUERY PLAN WITH c AS (SELECT * FROM a) SELECT * FROM c", STMT_EXPLAIN, "a");
    EXPECT("EXPLAIN UPDATE t SET a = 1", STMT_EXPLAIN, "t");
    EXPECT("EXPLAIN CREATE INDEX i ON t(a)", STMT_EXPLAIN, "t");
    EXPECT("EXPLAIN ANALYZE SELECT * FROM t", STMT_EXPLAIN, "t");
    EXPECT("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t", STMT_EXPLAIN, "t");
    EXPECT("EXPLAIN ANALYZE t", STMT_EXPLAIN, "t");
}

static void kind_names(void)
{
    CHECK_STR(sqlparse_kind_name(STMT_OTHER), "other");
    CHECK_STR(sqlparse_kind_name(STMT_SELECT), "select");
    CHECK_STR(sqlparse_kind_name(STMT_INSERT), "insert");
    CHECK_STR(sqlparse_kind_name(STMT_UPDATE), "update");
    CHECK_STR(sqlparse_kind_name(STMT_DELETE), "delete");
    CHECK_STR(sqlparse_kind_name(STMT_DDL), "ddl");
    CHECK_STR(sqlparse_kind_name(STMT_BEGIN), "begin");
    CHECK_STR(sqlparse_kind_name(STMT_COMMIT), "commit");
    CHECK_STR(sqlparse_kind_name(STMT_ROLLBACK), "rollback");
    CHECK_STR(sqlparse_kind_name(STMT_SAVEPOINT), "savepoint");
    CHECK_STR(sqlparse_kind_name(STMT_PRAGMA), "pragma");
    CHECK_STR(sqlparse_kind_name(STMT_ATTACH), "attach");
    CHECK_STR(sqlparse_kind_name(STMT_DETACH), "detach");
    CHECK_STR(sqlparse_kind_name(STMT_VACUUM), "vacuum");
    CHECK_STR(sqlparse_kind_name(STMT_EXPLAIN), "explain");
    CHECK_STR(sqlparse_kind_name((enum stmt_kind)999), "other");
}

/* ---- boundaries and errors ---- */

static void trailing_semicolon_and_comments(void)
{
    EXPECT("SELECT * FROM t ;  -- done\n", STMT_SELECT, "t");
    EXPECT("SELECT * FROM t; /* c */ -- d", STMT_SELECT, "t");
    EXPECT("  \n\t SELECT 1  \n", STMT_SELECT, "");
    EXPECT("SELECT 1 -- no newline at end", STMT_SELECT, "");
}

static void multi_statements(void)
{
    EXPECT_ERR("SELECT 1; SELECT 2", SQLPARSE_EMULTI, "more than one statement");
    EXPECT_ERR("SELECT * FROM t; DROP TABLE t", SQLPARSE_EMULTI, "more than one statement");
    EXPECT_ERR("SELECT 1;;", SQLPARSE_EMULTI, "more than one statement");
    EXPECT_ERR("; SELECT 1", SQLPARSE_EMULTI, "more than one statement");
    EXPECT_ERR("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END; SELECT 2", SQLPARSE_EMULTI,
               "more than one statement");
    EXPECT_ERR("SELECT 'a;b'; x", SQLPARSE_EMULTI, "offset 14");
}

static void empty_statements(void)
{
    EXPECT_ERR("", SQLPARSE_ESYNTAX, "empty statement");
    EXPECT_ERR("   \n\t", SQLPARSE_ESYNTAX, "empty statement");
    EXPECT_ERR("-- only a comment", SQLPARSE_ESYNTAX, "empty statement");
    EXPECT_ERR("/* c */ -- d\n", SQLPARSE_ESYNTAX, "empty statement");
    EXPECT_ERR(";", SQLPARSE_ESYNTAX, "empty statement");
    EXPECT_ERR(" ; ; /**/ ;", SQLPARSE_ESYNTAX, "empty statement");
    struct route_info ri;
    CHECK(sqlparse_analyze(NULL, 0, &ri) == SQLPARSE_ESYNTAX);
    sqlparse_info_free(&ri);
}

static void unterminated_tokens(void)
{
    EXPECT_ERR("SELECT * FROM t WHERE a = 'abc", SQLPARSE_ESYNTAX,
               "unterminated string literal at offset 26");
    EXPECT_ERR("SELECT 'it''s", SQLPARSE_ESYNTAX, "unterminated string literal");
    EXPECT_ERR("SELECT * FROM \"t", SQLPARSE_ESYNTAX, "unterminated quoted identifier at offset 14");
    EXPECT_ERR("SELECT * FROM `t``", SQLPARSE_ESYNTAX, "unterminated quoted identifier");
    EXPECT_ERR("SELECT * FROM [t", SQLPARSE_ESYNTAX, "unterminated [identifier]");
    EXPECT_ERR("SELECT 1 /* open", SQLPARSE_ESYNTAX, "unterminated /* comment at offset 9");
    EXPECT_ERR("SELECT 1 /*/", SQLPARSE_ESYNTAX, "unterminated /* comment");
    EXPECT_ERR("SELECT X'AB", SQLPARSE_ESYNTAX, "unterminated string literal");
    EXPECT_ERR("SELECT $$abc", SQLPARSE_ESYNTAX, "unterminated dollar-quoted string");
    EXPECT_ERR("SELECT $x$abc$y$", SQLPARSE_ESYNTAX, "unterminated dollar-quoted string");
    EXPECT_ERR("SELECT E'abc\\'", SQLPARSE_ESYNTAX, "unterminated string literal");
}

static void unbalanced_parentheses(void)
{
    EXPECT_ERR("SELECT (1", SQLPARSE_ESYNTAX, "unbalanced parentheses");
    EXPECT_ERR("SELECT 1)", SQLPARSE_ESYNTAX, "unbalanced parentheses: unexpected ')' at offset 8");
    EXPECT_ERR("SELECT * FROM (SELECT * FROM t", SQLPARSE_ESYNTAX, "unbalanced parentheses");
    EXPECT_ERR("SELECT (1; SELECT 2)", SQLPARSE_ESYNTAX, "unbalanced parentheses");
    EXPECT_ERR("EXPLAIN (ANALYZE SELECT 1", SQLPARSE_ESYNTAX, "unbalanced parentheses");
}

static void unterminated_trigger_body(void)
{
    EXPECT_ERR("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; SELECT 2;", SQLPARSE_ESYNTAX,
               "missing END");
    EXPECT_ERR("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT CASE WHEN 1 THEN 2 END;", SQLPARSE_ESYNTAX,
               "missing END");
}

/* Builds "SELECT " + n '(' + "1" + n ')' (balanced when close). */
static char *nested(size_t n, bool close)
{
    char *s = malloc(2 * n + 16);
    if (s == NULL)
        abort();
    size_t o = (size_t)sprintf(s, "SELECT ");
    memset(s + o, '(', n);
    o += n;
    s[o++] = '1';
    if (close) {
        memset(s + o, ')', n);
        o += n;
    }
    s[o] = '\0';
    return s;
}

static void depth_limit(void)
{
    char *ok = nested(1000, true), *deep = nested(1001, true), *huge = nested(200000, false);
    EXPECT(ok, STMT_SELECT, "");
    EXPECT_ERR(deep, SQLPARSE_ESYNTAX, "too deeply nested");
    EXPECT_ERR(huge, SQLPARSE_ESYNTAX, "too deeply nested");
    free(ok);
    free(deep);
    free(huge);
}

static void nul_bytes(void)
{
    static const char sql[] = "SELECT * FROM a\0; DROP TABLE b";
    struct route_info ri;
    CHECK(sqlparse_analyze(sql, sizeof sql - 1, &ri) == SQLPARSE_ESYNTAX);
    CHECK(strstr(ri.error, "NUL byte at offset 15") != NULL);
    sqlparse_info_free(&ri);
    static const char in_string[] = "SELECT 'a\0b'";
    CHECK(sqlparse_analyze(in_string, sizeof in_string - 1, &ri) == SQLPARSE_ESYNTAX);
    sqlparse_info_free(&ri);
}

static void error_leaves_result_empty(void)
{
    struct route_info ri;
    CHECK(analyze("SELECT * FROM a, b; SELECT 2", &ri) == SQLPARSE_EMULTI);
    CHECK(ri.kind == STMT_OTHER && ri.ntables == 0 && ri.tables == NULL && ri.names == NULL);
    CHECK(ri.nparams == 0 && ri.flags == 0);
    sqlparse_info_free(&ri);
    CHECK(analyze("SELECT 1", &ri) == SQLPARSE_OK);
    CHECK(ri.error[0] == '\0' && ri.tables == NULL && ri.names == NULL);
    sqlparse_info_free(&ri);
}

/* ---- parameters ---- */

static void params_positional(void)
{
    EXPECT_PARAMS("SELECT * FROM t WHERE a = ? AND b = ? AND c IN (?, ?)", 4);
    EXPECT_PARAMS("SELECT 1", 0);
    EXPECT_PARAMS("INSERT INTO t VALUES (?,?,?)", 3);
}

static void params_numbered(void)
{
    EXPECT_PARAMS("SELECT ?1, ?1, ?2", 2);
    EXPECT_PARAMS("SELECT ?5", 5);
    EXPECT_PARAMS("SELECT ?2, ?", 3); /* "?" takes the next after the highest */
    EXPECT_ERR("SELECT ?0", SQLPARSE_ESYNTAX, "parameter number out of range");
    EXPECT_ERR("SELECT ?99999999999999999999999", SQLPARSE_ESYNTAX, "out of range");
    EXPECT_PARAMS("SELECT ?65535", 65535);
}

static void params_named(void)
{
    EXPECT_PARAMS("SELECT :a, :b, :a", 2);
    EXPECT_PARAMS("SELECT :a, @a, $a", 3); /* the prefix is part of the name */
    EXPECT_PARAMS("SELECT :a, ?, :a, ?", 3);
    EXPECT_PARAMS("SELECT :A, :a", 2); /* names are case-sensitive */
    EXPECT_PARAMS("SELECT @x1, @x1, @x_2", 2);
}

static void params_many_named(void)
{
    size_t n = 3000;
    char *s = malloc(n * 12 + 16), *o = s;
    if (s == NULL)
        abort();
    o += sprintf(o, "SELECT :p0");
    for (size_t i = 1; i < n; i++)
        o += sprintf(o, ",:p%zu", i % 2000);
    EXPECT_PARAMS(s, 2000);
    free(s);
}

static void params_pg_dollar_and_casts(void)
{
    EXPECT_PARAMS("SELECT $1::int, $2::text FROM t WHERE id = $1", 2);
    EXPECT_PARAMS("SELECT a::text, b :: int FROM t", 0);
    EXPECT_PARAMS("SELECT f(a := 1)", 0);
    EXPECT_PARAMS("SELECT data @> '{}' FROM t WHERE $3 > 0", 3);
    EXPECT("SELECT x::regclass FROM t", STMT_SELECT, "t");
}

static void params_not_in_literals(void)
{
    EXPECT_PARAMS("SELECT '?', \"?\", [:x], $$ :y $$, ? -- ?\n /* ? */", 1);
    EXPECT_PARAMS("SELECT * FROM t WHERE a = 'x:y@z'", 0);
}

/* ---- lexical corners ---- */

static void dollar_quoted_strings(void)
{
    EXPECT("SELECT $$ FROM x; $$ FROM t", STMT_SELECT, "t");
    EXPECT("SELECT $fn$ it's FROM x $$ $fn$ FROM t", STMT_SELECT, "t");
}

static void pg_escape_strings(void)
{
    EXPECT("SELECT E'it\\'s FROM x' FROM t", STMT_SELECT, "t");
    EXPECT("SELECT e'a\\\\' FROM t", STMT_SELECT, "t");
    EXPECT("SELECT X'41', B'0101' FROM t", STMT_SELECT, "t");
}

static void numbers(void)
{
    EXPECT("SELECT 1.5e10, .5, 0x1F, 1e-3, 1_000, 3. FROM t", STMT_SELECT, "t");
    EXPECT("SELECT t.a, 1.e5 FROM t", STMT_SELECT, "t");
}

static void operators_and_punctuation(void)
{
    EXPECT("SELECT a||b, a->>'x', a<>b, ~a, a%b, a<<2, a!=b FROM t WHERE a>=1", STMT_SELECT, "t");
    EXPECT("SELECT {x} # ! \\ FROM t", STMT_SELECT, "t");
}

/* ---- scale and garbage ---- */

static void many_tables_and_dedup(void)
{
    size_t n = 5000;
    char *s = malloc(n * 16 + 32), *o = s;
    if (s == NULL)
        abort();
    o += sprintf(o, "SELECT * FROM t0");
    for (size_t i = 1; i < n; i++)
        o += sprintf(o, ", t%zu", i % 3000);
    struct route_info ri;
    CHECK(analyze(s, &ri) == SQLPARSE_OK);
    CHECK(ri.ntables == 3000);
    if (ri.ntables == 3000) {
        CHECK_STR(ri.tables[0].name, "t0");
        CHECK_STR(ri.tables[2999].name, "t2999");
    }
    sqlparse_info_free(&ri);
    free(s);
}

static void huge_union(void)
{
    size_t n = 20000;
    char *s = malloc(n * 64 + 32), *o = s;
    if (s == NULL)
        abort();
    o += sprintf(o, "SELECT a FROM t");
    for (size_t i = 1; i < n; i++)
        o += sprintf(o, " UNION ALL SELECT a FROM t WHERE x IN (SELECT y FROM u)");
    EXPECT(s, STMT_SELECT, "t,u");
    free(s);
}

static void too_many_names(void)
{
    size_t n = 17000;
    char *s = malloc(n * 16 + 32), *o = s;
    if (s == NULL)
        abort();
    o += sprintf(o, "SELECT * FROM t0");
    for (size_t i = 1; i < n; i++)
        o += sprintf(o, ",t%zu", i);
    EXPECT_ERR(s, SQLPARSE_ESYNTAX, "too many distinct names");
    free(s);
}

static void garbage_does_not_crash(void)
{
    static const char alphabet[] = "SELECT FROM JOIN WITH ( ) , ; . ' \" [ ] ` ? : @ $ - / * "
                                   "CASE END BEGIN TRIGGER ON AS t u 1 \n x";
    uint32_t seed = 12345;
    char buf[256];
    for (int round = 0; round < 20000; round++) {
        size_t len = 0, want = (seed >> 8) % sizeof buf;
        while (len < want) {
            seed = seed * 1103515245u + 12345u;
            buf[len++] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        struct route_info ri;
        int rc = sqlparse_analyze(buf, len, &ri);
        CHECK(rc == SQLPARSE_OK || rc == SQLPARSE_ESYNTAX || rc == SQLPARSE_EMULTI);
        if (rc == SQLPARSE_OK)
            for (size_t i = 0; i < ri.ntables; i++)
                CHECK(ri.tables[i].schema != NULL && ri.tables[i].name != NULL);
        else
            CHECK(ri.error[0] != '\0' && ri.ntables == 0);
        sqlparse_info_free(&ri);
    }
}

/* sqlparse_main_slot(): where a transaction's statement for another bind
 * gets that bind's schema. "-" when there is no slot, else the replaced
 * text at the slot ("" for an insertion) and the offset. */
static const char *main_slot(const char *sql, char *buf, size_t n)
{
    size_t pos, del;
    if (!sqlparse_main_slot(sql, strlen(sql), &pos, &del))
        return "-";
    snprintf(buf, n, "%zu:%.*s", pos, (int)del, sql + pos);
    return buf;
}

static void main_slots(void)
{
    char b[64];
    CHECK_STR(main_slot("CREATE TABLE t (a)", b, sizeof b), "13:");
    CHECK_STR(main_slot("create unique index if not exists ix ON t (a)", b, sizeof b), "34:");
    CHECK_STR(main_slot("CREATE TABLE main.t (a)", b, sizeof b), "13:main");
    CHECK_STR(main_slot("CREATE VIEW \"v\" AS SELECT 1", b, sizeof b), "12:");
    CHECK_STR(main_slot("CREATE VIRTUAL TABLE v USING fts5(a)", b, sizeof b), "21:");
    CHECK_STR(main_slot("/* c */ CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END", b, sizeof b),
              "23:");
    CHECK_STR(main_slot("PRAGMA main.table_info(\"t\")", b, sizeof b), "7:main");
    CHECK_STR(main_slot("PRAGMA table_info(t)", b, sizeof b), "-");
    CHECK_STR(main_slot("PRAGMA temp.table_info(t)", b, sizeof b), "-");
    CHECK_STR(main_slot("CREATE TABLE other.t (a)", b, sizeof b), "-");
    CHECK_STR(main_slot("CREATE TEMP TABLE t (a)", b, sizeof b), "-");
    CHECK_STR(main_slot("CREATE TABLE IF t (a)", b, sizeof b), "-");
    CHECK_STR(main_slot("DROP TABLE t", b, sizeof b), "-");
    CHECK_STR(main_slot("CREATE TABLE", b, sizeof b), "-");
    CHECK_STR(main_slot("", b, sizeof b), "-");
}

int main(void)
{
    RUN(select_simple);
    RUN(select_comma_aliases);
    RUN(select_join_kinds);
    RUN(select_join_on_then_comma);
    RUN(select_indexed_by);
    RUN(select_parenthesized_join);
    RUN(subquery_in_from);
    RUN(subquery_in_where);
    RUN(subquery_scalar);
    RUN(subquery_order_by_and_case);
    RUN(subquery_three_deep);
    RUN(compound_selects);
    RUN(dedup_in_order);
    RUN(cte_basic);
    RUN(cte_recursive);
    RUN(cte_multiple_materialized);
    RUN(cte_shadows_table);
    RUN(cte_main_statement_kinds);
    RUN(cte_nested);
    RUN(cte_pg_data_modifying);
    RUN(table_valued_functions);
    RUN(functions_and_columns);
    RUN(cast_is_not_alias);
    RUN(window_and_filter);
    RUN(pg_from_inside_functions);
    RUN(is_distinct_from);
    RUN(strings_and_comments_hide_keywords);
    RUN(in_table_sqlite);
    RUN(insert_values);
    RUN(insert_or_and_replace);
    RUN(insert_select);
    RUN(insert_default_values_alias);
    RUN(insert_upsert);
    RUN(returning_clause);
    RUN(update_basic);
    RUN(update_from);
    RUN(delete_basic);
    RUN(create_table_references);
    RUN(create_table_as);
    RUN(create_index);
    RUN(create_view);
    RUN(create_trigger_body);
    RUN(create_trigger_case_in_body);
    RUN(create_trigger_header_forms);
    RUN(create_virtual_table);
    RUN(create_other_objects);
    RUN(temp_flags);
    RUN(begin_write_flags);
    RUN(drop_statements);
    RUN(alter_table);
    RUN(pragma_table_pragmas);
    RUN(pragma_other);
    RUN(analyze_reindex);
    RUN(pg_truncate_lock_only);
    RUN(pg_delete_using_and_lateral);
    RUN(pg_misc_statements);
    RUN(schema_qualified_forms);
    RUN(quoted_identifiers);
    RUN(keywords_case_insensitive);
    RUN(quoted_keywords_are_names);
    RUN(names_storage);
    RUN(not_nul_terminated);
    RUN(kinds_transactions);
    RUN(kinds_misc);
    RUN(vacuum_into_flag);
    RUN(explain);
    RUN(kind_names);
    RUN(trailing_semicolon_and_comments);
    RUN(multi_statements);
    RUN(empty_statements);
    RUN(unterminated_tokens);
    RUN(unbalanced_parentheses);
    RUN(unterminated_trigger_body);
    RUN(depth_limit);
    RUN(nul_bytes);
    RUN(error_leaves_result_empty);
    RUN(params_positional);
    RUN(params_numbered);
    RUN(params_named);
    RUN(params_many_named);
    RUN(params_pg_dollar_and_casts);
    RUN(params_not_in_literals);
    RUN(dollar_quoted_strings);
    RUN(pg_escape_strings);
    RUN(numbers);
    RUN(operators_and_punctuation);
    RUN(many_tables_and_dedup);
    RUN(huge_union);
    RUN(too_many_names);
    RUN(garbage_does_not_crash);
    RUN(main_slots);
    UNIT_MAIN_END;
}
