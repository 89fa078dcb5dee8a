"""Refusals for safety (-ERR DENIED): ATTACH, DETACH, VACUUM INTO,
load_extension, temporary objects, PRAGMAs that change the connection or the
files; and that harmless PRAGMAs still work."""

import os

from harness import TestFailure, eq, expect_ok, expect_rows, expect_status


def _report(problems):
    if problems:
        raise TestFailure("%d problem(s):\n  " % len(problems) + "\n  ".join(problems))


def test_denied_statements(d):
    c = d.connect()
    x = os.path.join(d.dir, "x.db")
    y = os.path.join(d.dir, "y.db")
    z = os.path.join(d.dir, "z.db")
    denied = [
        "ATTACH DATABASE '%s' AS x" % x,
        "attach '%s' as x" % x,
        "/* hello */ ATTACH DATABASE '%s' AS x" % x,
        "ATTACH DATABASE ':memory:' AS m",
        "DETACH DATABASE x",
        "DETACH x",
        "SELECT load_extension('x')",
        "select LOAD_EXTENSION('x', 'entry')",
        "SELECT * FROM test1 WHERE id = load_extension('x')",
        "SELECT * FROM test2 WHERE color = load_extension('x')",
        "VACUUM INTO '%s'" % y,
        "VACUUM main INTO '%s'" % z,
        "PRAGMA journal_mode=DELETE",
        "PRAGMA main.journal_mode = DELETE",
        "PRAGMA journal_mode('OFF')",
        "PRAGMA synchronous=OFF",
        "PRAGMA synchronous = 0",
        "PRAGMA writable_schema=ON",
        "PRAGMA writable_schema = 1",
        "PRAGMA locking_mode=EXCLUSIVE",
        "PRAGMA foreign_keys=OFF",
        "PRAGMA query_only=ON",
        "CREATE TEMP TABLE t (x)",
        "CREATE TEMPORARY TABLE t (x)",
        "create temp view tv AS SELECT 1",
        "CREATE TEMP TRIGGER tt AFTER INSERT ON test1 BEGIN SELECT 1; END",
        "CREATE TABLE temp.t2 (x)",
    ]
    p = []
    for sql in denied:
        r = c.request(sql)
        if r.err_code != "DENIED":
            p.append("%r: want -ERR DENIED, got %r" % (sql, r))
        r = c.request(".ping")
        if r.raw != [b"+OK"]:
            p.append("after %r: .ping got %r" % (sql, r))
    for path in (x, y, z):
        if os.path.exists(path):
            p.append("file %s was created" % path)
    # also refused in the parameter and bulk forms
    for req in (c.inline("ATTACH DATABASE ? AS x", [x]),
                c.bulk("ATTACH DATABASE ?\n  AS x", [x]),
                c.bulk("VACUUM\nINTO ?", [y]),
                c.inline("SELECT load_extension(?)", ["x"]),
                c.bulk("PRAGMA\n  synchronous = OFF")):
        if req.err_code != "DENIED":
            p.append("parameter/bulk form: want -ERR DENIED, got %r" % req)
    for path in (x, y):
        if os.path.exists(path):
            p.append("file %s was created" % path)
    _report(p)


def test_denied_in_routing_too(d):
    c = d.connect()
    p = []
    # What routing knows from the text alone; PRAGMA policy is the backend's
    # (the SQLite authorizer), so .route does not judge PRAGMAs.
    for sql in ("ATTACH DATABASE '/tmp/sqlmux-never.db' AS x", "DETACH x",
                "CREATE TEMP TABLE t (x)", "VACUUM INTO '/tmp/sqlmux-never.db'"):
        r = c.request(".route " + sql)
        if r.err_code != "DENIED":
            p.append(".route %s: want -ERR DENIED (the error the statement would get), got %r"
                     % (sql, r))
    _report(p)


def test_connection_state_unchanged_after_refusals(d):
    # After the refused PRAGMAs and temp objects, every pooled connection
    # still behaves: no temp table visible, writes work and are durable.
    conns = [d.connect() for _ in range(6)]
    for c in conns:
        c.request("CREATE TEMP TABLE leak (x)")
        c.request("PRAGMA query_only=ON")
        c.request("CREATE TABLE temp.leak2 (x)")
    p = []
    for i, c in enumerate(conns):
        for t, sql in (("test1", "INSERT INTO test1 DEFAULT VALUES"),
                       ("test2", "INSERT INTO test2 DEFAULT VALUES"),
                       ("test3", "INSERT INTO test3 DEFAULT VALUES")):
            r = c.request(sql)
            if r.status != "+OK changes=1 last_id=%d" % (i + 1):
                p.append("client %d %s: %r" % (i, t, r))
        for sql in ("SELECT * FROM leak", "SELECT * FROM temp.leak2"):
            r = c.request(sql)
            if r.ok:
                p.append("client %d: a temporary table exists: %s -> %r" % (i, sql, r))
    eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(6,)])
    _report(p)


def test_harmless_pragmas(d):
    c = d.connect()
    r = c.request("PRAGMA table_info(test2)")
    expect_rows(r, [["0", "id", "INTEGER", "0", None, "1"],
                    ["1", "color", "VARCHAR(64)", "0", "'red'", "0"]])
    eq(r.names, ["cid", "name", "type", "notnull", "dflt_value", "pk"], "table_info columns")
    expect_status(c.request(".route PRAGMA table_info(test2)"), "+OK bind=second_db")
    r = c.request("PRAGMA table_info(test3)")
    expect_rows(r, [["0", "id", "INTEGER", "0", None, "1"],
                    ["1", "color", "VARCHAR(64)", "0", "'blue'", "0"]])
    r = c.request("PRAGMA table_info('test1')")
    eq(r.col("name"), ["id", "color"], "table_info('test1')")
    r = c.request("PRAGMA user_version")
    expect_rows(r, [["0"]], [("user_version", "")])
    expect_ok(c.request("PRAGMA integrity_check"))
    expect_rows(c.request("PRAGMA index_list(test2)"), [])


def test_plain_vacuum_allowed(d):
    c = d.connect()
    expect_ok(c.request("INSERT INTO test1 DEFAULT VALUES"))
    expect_status(c.request("VACUUM"), "+OK changes=0")
    expect_rows(c.request("SELECT count(*) FROM test1"), [["1"]])
