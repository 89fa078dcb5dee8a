"""Routing: .route on every statement shape, CROSSBIND, patterns, and that
executed statements really land where .route says."""

from harness import (TestFailure, eq, expect_err, expect_ok, expect_rows,
                     expect_status)

ROUTE_COLS = [("table", ""), ("bind", ""), ("rule", "")]


def table_bind(rows):
    """.route's rows without the rule column (test_catalog checks that)."""
    return [row[:2] for row in rows] if rows is not None else None


def crossbind_msg(pairs):
    return ("statement references tables of more than one bind: "
            + ", ".join("%s (%s)" % p for p in pairs))


def check_route(c, sql, tables, bind, problems):
    """Collect a problem unless .route answers exactly the rows and bind."""
    r = c.request(".route " + sql)
    want = [list(t) for t in tables]
    if r.status != "+OK bind=%s" % bind or table_bind(r.rows) != want or r.columns != ROUTE_COLS:
        problems.append("%s\n      want rows %r, +OK bind=%s\n      got  %r"
                        % (sql, want, bind, r))


def check_crossbind(c, sql, tables, problems):
    """CROSSBIND with the exact message; rows before it, if any, must be
    the referenced tables (PROTOCOL.md shows both forms)."""
    r = c.request(".route " + sql)
    want_status = "-ERR CROSSBIND " + crossbind_msg(tables)
    bad = r.status != want_status
    if r.columns is not None and (r.columns != ROUTE_COLS or table_bind(r.rows) != [list(t) for t in tables]):
        bad = True
    if bad:
        problems.append("%s\n      want %r\n      got  %r" % (sql, want_status, r))


def _report(problems):
    if problems:
        raise TestFailure("%d routing problem(s):\n  " % len(problems) + "\n  ".join(problems))


def test_route_simple(d):
    c = d.connect()
    p = []
    check_route(c, "SELECT * FROM test1", [("test1", "default")], "default", p)
    check_route(c, "SELECT * FROM test2", [("test2", "second_db")], "second_db", p)
    check_route(c, "SELECT * FROM test3", [("test3", "memory_db")], "memory_db", p)
    check_route(c, "SELECT * FROM test2;", [("test2", "second_db")], "second_db", p)
    check_route(c, "select color from TEST2 where id = 1", [("test2", "second_db")], "second_db", p)
    check_route(c, 'SELECT * FROM "test2"', [("test2", "second_db")], "second_db", p)
    check_route(c, 'SELECT * FROM "Test2"', [("test2", "second_db")], "second_db", p)
    check_route(c, "SELECT * FROM [test2]", [("test2", "second_db")], "second_db", p)
    check_route(c, "SELECT * FROM `test2`", [("test2", "second_db")], "second_db", p)
    check_route(c, "SELECT 1", [], "default", p)
    check_route(c, "VALUES (1), (2)", [], "default", p)
    check_route(c, "SELECT * FROM unmapped_table", [("unmapped_table", "default")], "default", p)
    check_route(c, "INSERT INTO test2 (color) VALUES ('x')", [("test2", "second_db")], "second_db", p)
    check_route(c, "REPLACE INTO test3 (id, color) VALUES (1, 'x')", [("test3", "memory_db")],
                "memory_db", p)
    check_route(c, "UPDATE test3 SET color = 'x'", [("test3", "memory_db")], "memory_db", p)
    check_route(c, "DELETE FROM test2 WHERE id = 1", [("test2", "second_db")], "second_db", p)
    check_route(c, "CREATE INDEX test2_color ON test2 (color)", [("test2", "second_db")],
                "second_db", p)
    check_route(c, "PRAGMA table_info(test2)", [("test2", "second_db")], "second_db", p)
    check_route(c, "EXPLAIN QUERY PLAN SELECT * FROM test3", [("test3", "memory_db")],
                "memory_db", p)
    check_route(c, "/* test1 */ SELECT 'test1' AS test1 FROM test3 -- FROM test1",
                [("test3", "memory_db")], "memory_db", p)
    check_route(c, "SELECT * FROM pragma_table_info('test2')", [], "default", p)
    _report(p)


def test_route_joins_ctes_subqueries(d):
    c = d.connect()
    p = []
    check_route(c, "SELECT * FROM test2 a, test2 b WHERE a.id = b.id",
                [("test2", "second_db")], "second_db", p)
    check_route(c, "SELECT t.color, l.msg FROM test2 AS t, audit_log l WHERE l.id = t.id",
                [("test2", "second_db"), ("audit_log", "second_db")], "second_db", p)
    check_route(c, "SELECT * FROM test2 JOIN audit_x USING (id) LEFT JOIN audit_y ON audit_y.id = test2.id",
                [("test2", "second_db"), ("audit_x", "second_db"), ("audit_y", "second_db")],
                "second_db", p)
    check_route(c, "WITH c AS (SELECT * FROM test3) SELECT * FROM c",
                [("test3", "memory_db")], "memory_db", p)
    check_route(c, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5) "
                   "SELECT x FROM n", [], "default", p)
    # A CTE may shadow a table name: it is not that table.
    check_route(c, "WITH test1 AS (SELECT * FROM test2) SELECT * FROM test1",
                [("test2", "second_db")], "second_db", p)
    check_route(c, "SELECT * FROM test3 WHERE id IN (SELECT id FROM test3 WHERE color IN "
                   "(SELECT color FROM test3 t3 WHERE t3.id > 0))",
                [("test3", "memory_db")], "memory_db", p)
    check_route(c, "SELECT * FROM (SELECT * FROM (SELECT id FROM test2)) AS s",
                [("test2", "second_db")], "second_db", p)
    check_route(c, "SELECT (SELECT count(*) FROM audit_log) AS n, EXISTS (SELECT 1 FROM test2) AS e",
                [("audit_log", "second_db"), ("test2", "second_db")], "second_db", p)
    check_route(c, "INSERT INTO audit_log (id, msg) SELECT id, color FROM test2",
                [("audit_log", "second_db"), ("test2", "second_db")], "second_db", p)
    check_route(c, "UPDATE test2 SET color = a.msg FROM audit_log AS a WHERE a.id = test2.id",
                [("test2", "second_db"), ("audit_log", "second_db")], "second_db", p)
    _report(p)


def test_route_qualified_name(d):
    c = d.connect()
    r = c.request(".route SELECT * FROM main.test2")
    expect_status(r, "+OK bind=second_db")
    eq(len(r.rows), 1, "one table")
    eq(r.rows[0][1], "second_db", "bind of main.test2")
    expect_rows(c.request("SELECT count(*) FROM main.test2"), [["0"]])


def test_route_patterns(d):
    c = d.connect()
    p = []
    check_route(c, "SELECT * FROM audit_log", [("audit_log", "second_db")], "second_db", p)
    check_route(c, "SELECT * FROM AUDIT_2024", [("audit_2024", "second_db")], "second_db", p)
    check_route(c, "SELECT * FROM audit_", [("audit_", "second_db")], "second_db", p)
    check_route(c, "SELECT * FROM auditlog", [("auditlog", "default")], "default", p)
    check_route(c, "SELECT * FROM my_audit_log", [("my_audit_log", "default")], "default", p)
    check_route(c, "SELECT * FROM test22", [("test22", "default")], "default", p)
    _report(p)


def test_route_crossbind(d):
    c = d.connect()
    p = []
    # Statements across binds run (the federation pool): bind=*.
    for sql, tables in [
            ("SELECT * FROM test1 JOIN test2 USING (id)", [("test1", "default"), ("test2", "second_db")]),
            ("WITH c AS (SELECT * FROM test2) SELECT * FROM c JOIN test3 USING (id)",
             [("test2", "second_db"), ("test3", "memory_db")]),
            ("SELECT * FROM test2 WHERE id IN (SELECT id FROM test1)", [("test2", "second_db"), ("test1", "default")]),
            ("SELECT * FROM test3 a, test1 b WHERE a.id = b.id", [("test3", "memory_db"), ("test1", "default")]),
            ("INSERT INTO test1 (color) SELECT color FROM test2", [("test1", "default"), ("test2", "second_db")])]:
        check_route(c, sql, tables, "*", p)
    # A view's new name goes with the tables it reads (issue 14).
    check_route(c, "CREATE VIEW v12 AS SELECT * FROM test2",
                [("v12", "second_db"), ("test2", "second_db")], "second_db", p)
    check_crossbind(c, "CREATE TRIGGER t12 AFTER INSERT ON test1 BEGIN DELETE FROM test2; END",
                    [("test1", "default"), ("test2", "second_db")], p)
    _report(p)


def test_route_errors(d):
    c = d.connect()
    expect_err(c.request(".route SELECT 1; SELECT 2"), "MULTI")
    expect_err(c.request(".route SELECT 'unterminated"), "SYNTAX")
    expect_err(c.request(".route SELECT (1"), "SYNTAX")
    expect_status(c.request(".ping"), "+OK")


def test_route_does_not_execute(d):
    c = d.connect()
    expect_status(c.request(".route INSERT INTO test2 (color) VALUES ('routed')"), "+OK bind=second_db")
    expect_status(c.request(".route DROP TABLE test1"), "+OK bind=default")
    expect_rows(c.request("SELECT count(*) FROM test2"), [["0"]])
    expect_rows(c.request("SELECT count(*) FROM test1"), [["0"]])


def test_crossbind_statement_refused(d):
    c = d.connect()
    expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'a')"))
    expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (1, 'b')"))
    # Statements across binds run on the federation pool (test_xbind_*);
    # DDL that would tie two binds together is still refused.
    r = c.request("CREATE TRIGGER t1_copy AFTER INSERT ON test1 BEGIN INSERT INTO test2 (color) "
                  "VALUES (new.color); END")
    eq(r.raw, [b"-ERR CROSSBIND " + crossbind_msg([("test1", "default"),
                                                   ("test2", "second_db")]).encode()],
       "crossbind response")
    expect_err(c.request("CREATE TRIGGER t3 AFTER DELETE ON test3 BEGIN DELETE FROM test2; END"), "CROSSBIND")
    # nothing ran
    expect_rows(c.request("SELECT color FROM test1"), [["a"]])
    expect_status(c.request(".ping"), "+OK")


def test_statements_land_where_routed(d):
    c = d.connect()
    expect_status(c.request("CREATE TABLE audit_log (id INTEGER PRIMARY KEY, msg TEXT)"),
                  "+OK changes=0")
    expect_status(c.request("CREATE TABLE plain (x)"), "+OK changes=0")
    for i in range(3):
        expect_ok(c.request("INSERT INTO test2 (color) VALUES ('c%d')" % i))
    expect_status(c.request("INSERT INTO audit_log (id, msg) SELECT id, color FROM test2"),
                  "+OK changes=3 last_id=3")
    expect_status(c.request("UPDATE test2 SET color = a.msg || '!' FROM audit_log AS a "
                            "WHERE a.id = test2.id AND a.id > 1"), "+OK changes=2")
    expect_rows(c.request("SELECT t.color FROM test2 AS t, audit_log l WHERE l.id = t.id ORDER BY t.id"),
                [["c0"], ["c1!"], ["c2!"]])
    expect_rows(c.request("WITH x AS (SELECT msg FROM audit_log) SELECT count(*) FROM x"), [["3"]])
    expect_ok(c.request("INSERT INTO plain VALUES (42)"))
    eq(d.file_tables("second.db"), ["audit_log", "test2"], "second.db tables")
    eq(d.file_tables("app.db"), ["plain", "test1"], "app.db tables")
    eq(d.file_query("second.db", "SELECT id, msg FROM audit_log ORDER BY id"),
       [(1, "c0"), (2, "c1"), (3, "c2")])
    eq(d.file_query("app.db", "SELECT x FROM plain"), [(42,)])
    expect_status(c.request("DROP TABLE audit_log"), "+OK changes=0")
    eq(d.file_tables("second.db"), ["test2"], "second.db tables after DROP")


def test_unmapped_table_errors_come_from_default(d):
    c = d.connect()
    r = expect_err(c.request("SELECT * FROM nosuch_table"), "SQL")
    if "no such table: nosuch_table" not in r.err_msg:
        raise TestFailure("message should say 'no such table: nosuch_table': %r" % r.err_msg)
    # test2 only exists in second_db: routed there it works ...
    expect_rows(c.request("SELECT count(*) FROM test2"), [["0"]])
    # ... and an audit_* table that does not exist fails in second_db.
    expect_err(c.request("SELECT * FROM audit_nothing"), "SQL")


def test_route_ddl_triggers_references(d):
    c = d.connect()
    p = []
    check_route(c, "CREATE TABLE audit_log (id INTEGER PRIMARY KEY, msg TEXT)",
                [("audit_log", "second_db")], "second_db", p)
    check_route(c, "ALTER TABLE test2 ADD COLUMN extra TEXT", [("test2", "second_db")],
                "second_db", p)
    check_route(c, "DROP TABLE IF EXISTS audit_old", [("audit_old", "second_db")], "second_db", p)
    check_route(c, "CREATE VIEW audit_v AS SELECT * FROM test2", [("audit_v", "second_db"),
                                                                  ("test2", "second_db")],
                "second_db", p)
    r = c.request(".route CREATE TRIGGER audit_trg AFTER INSERT ON test2 BEGIN "
                  "INSERT INTO audit_log (msg) VALUES (new.color); END")
    if r.status != "+OK bind=second_db" or {row[1] for row in r.rows} != {"second_db"}:
        p.append("trigger on test2 writing audit_log: %r" % r)
    r = c.request(".route CREATE TRIGGER audit_trg2 AFTER INSERT ON test2 BEGIN "
                  "INSERT INTO test1 (color) VALUES (new.color); END")
    if r.err_code != "CROSSBIND":
        p.append("trigger on test2 writing test1: want CROSSBIND, got %r" % r)
    # A foreign key across binds is created in its own bind (test_xbind_ddl).
    r = c.request(".route CREATE TABLE audit_fk (id INTEGER REFERENCES test1 (id))")
    if r.status != "+OK bind=second_db warnings=1":
        p.append("audit_fk REFERENCES test1: want +OK bind=second_db warnings=1, got %r" % r)
    _report(p)


def test_trigger_runs_in_its_bind(d):
    c = d.connect()
    expect_status(c.request("CREATE TABLE audit_log (id INTEGER PRIMARY KEY, msg TEXT)"),
                  "+OK changes=0")
    expect_status(c.request("CREATE TRIGGER audit_trg AFTER INSERT ON test2 BEGIN "
                            "INSERT INTO audit_log (msg) VALUES ('new ' || new.color); END"),
                  "+OK changes=0")
    expect_status(c.request("INSERT INTO test2 (color) VALUES ('pink')"), "+OK changes=1 last_id=1")
    expect_rows(c.request("SELECT msg FROM audit_log"), [["new pink"]])
    eq(d.file_query("second.db", "SELECT msg FROM audit_log"), [("new pink",)])


def test_upsert_and_returning(d):
    c = d.connect()
    expect_status(c.request("INSERT INTO test2 (id, color) VALUES (1, 'a')"), "+OK changes=1 last_id=1")
    # "excluded" is not a table: this stays on second_db
    r = expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (1, 'b') "
                            "ON CONFLICT (id) DO UPDATE SET color = excluded.color"))
    eq(r.facts.get("changes"), "1", "changes of the upsert")   # last_id: see test_values
    expect_rows(c.request("SELECT color FROM test2"), [["b"]])
    expect_status(c.request("REPLACE INTO test2 (id, color) VALUES (5, 'r')"), "+OK changes=1 last_id=5")
    r = c.request("INSERT INTO test2 (color) VALUES ('ret') RETURNING id, color")
    expect_rows(r, [["6", "ret"]])
    eq(d.file_query("second.db", "SELECT id, color FROM test2 ORDER BY id"),
       [(1, "b"), (5, "r"), (6, "ret")])


def test_route_cache_respects_session_bind(d):
    # The same text, before and after .use, and on another connection.
    q = "SELECT count(*) AS n FROM pragma_table_info('test3')"
    c1 = d.connect()
    c2 = d.connect()
    expect_rows(c1.request(q), [["0"]])
    expect_status(c1.request(".use memory_db"), "+OK bind=memory_db")
    expect_rows(c1.request(q), [["2"]])
    expect_rows(c2.request(q), [["0"]])
    expect_status(c1.request(".use default"), "+OK bind=default")
    expect_rows(c1.request(q), [["0"]])


def test_schema_change_seen_by_all_connections(d):
    # Every pooled connection has "SELECT * FROM test2" prepared (clients
    # send at once so that several workers run); after ALTER TABLE every
    # answer must show the new column, in the header and in the rows.
    conns = [d.connect() for _ in range(6)]
    q = b"SELECT * FROM test2\n" * 10

    def burst(want_rows, want_cols):
        for c in conns:
            c.send(q)
        bad = []
        for i, c in enumerate(conns):
            for _ in range(10):
                r = c.read_response()
                if r.rows != want_rows or r.columns != want_cols:
                    bad.append("client %d: %r" % (i, r))
        if bad:
            raise TestFailure("%d stale answers, e.g.:\n  %s" % (len(bad), "\n  ".join(bad[:5])))

    expect_ok(conns[0].request("INSERT INTO test2 (color) VALUES ('c')"))
    burst([["1", "c"]], [("id", "INTEGER"), ("color", "VARCHAR(64)")])
    expect_status(conns[0].request("ALTER TABLE test2 ADD COLUMN extra TEXT DEFAULT 'e'"),
                  "+OK changes=0")
    burst([["1", "c", "e"]], [("id", "INTEGER"), ("color", "VARCHAR(64)"), ("extra", "TEXT")])
