"""Statements across binds (issue 15) on SQLite binds: the note's test1
(default, app.db), test2 (second_db, second.db) and test3 (memory_db, in
memory) joined, read in subqueries, CTEs and unions, and written from one
another, run on the federation pool instead of answering -ERR CROSSBIND.
Each test checks the path: the federation row of .stats counts it."""

import sqlite3

from harness import (Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows,
                     expect_status, make_config, run_once, standard_files)


DATA = (("test1", ["red", "green", "blue", "black"]),
        ("test2", ["red", "yellow", "blue"]),
        ("test3", ["blue", "red", "white", "green", "pink"]))


def fill(c):
    for t, colors in DATA:
        for i, col in enumerate(colors, 1):
            expect_status(c.request("INSERT INTO %s (id, color) VALUES (%d, '%s')" % (t, i, col)),
                          "+OK changes=1 last_id=%d" % i)


def reference():
    """One SQLite database holding copies of the three tables."""
    db = sqlite3.connect(":memory:")
    for t, colors in DATA:
        db.execute("CREATE TABLE %s (id INTEGER PRIMARY KEY, color VARCHAR(64))" % t)
        db.executemany("INSERT INTO %s VALUES (?, ?)" % t, list(enumerate(colors, 1)))
    return db


def as_text(rows):
    return [[None if v is None else str(v) for v in row] for row in rows]


def federation_row(c):
    r = c.request(".stats")
    for row in r.rows:
        if row[0] == "*federation*":
            return dict(zip(r.names, row))
    raise TestFailure("no *federation* row in .stats: %r" % r.rows)


def statements_run(c):
    return int(federation_row(c)["statements"])


def q(c, sql, rows=None, columns=None):
    """sql answers rows (default: what one SQLite database with copies of
    the tables answers), and ran on the federation pool."""
    if rows is None:
        rows = as_text(reference().execute(sql).fetchall())
    before = statements_run(c)
    expect_rows(c.request(sql), rows, columns)
    eq(statements_run(c), before + 1, "statements on the federation pool after %s" % sql)


def test_note_three_bind_join(d):
    c = d.connect()
    fill(c)
    q(c, "SELECT test1.id, test1.color, test2.color, test3.color FROM test1 "
         "JOIN test2 ON test2.id = test1.id JOIN test3 ON test3.id = test1.id ORDER BY test1.id",
      [["1", "red", "red", "blue"], ["2", "green", "yellow", "red"], ["3", "blue", "blue", "white"]],
      [("id", "INTEGER"), ("color", "VARCHAR(64)"), ("color", "VARCHAR(64)"), ("color", "VARCHAR(64)")])
    q(c, "SELECT * FROM test1 JOIN test2 USING (id) ORDER BY id",
      [["1", "red", "red"], ["2", "green", "yellow"], ["3", "blue", "blue"]])
    q(c, "SELECT a.color FROM test1 AS a, test3 b WHERE a.color = b.color ORDER BY 1",
      [["blue"], ["green"], ["red"]])


def test_shapes(d):
    c = d.connect()
    fill(c)
    for sql in [
        "SELECT id FROM test3 WHERE color IN (SELECT color FROM test2) ORDER BY id",
        "SELECT id FROM test1 WHERE EXISTS (SELECT 1 FROM test3 WHERE test3.color = test1.color) ORDER BY id",
        "SELECT id FROM test1 WHERE NOT EXISTS (SELECT 1 FROM test3 WHERE test3.color = test1.color)",
        "SELECT (SELECT count(*) FROM test2), (SELECT max(id) FROM test3), count(*) FROM test1",
        "WITH c AS (SELECT color FROM test1 UNION SELECT color FROM test3) SELECT count(*) FROM c",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5) "
        "SELECT i, test2.color, test3.color FROM n LEFT JOIN test2 ON test2.id = i "
        "JOIN test3 ON test3.id = i ORDER BY i",
        "SELECT color FROM test1 UNION SELECT color FROM test2 UNION ALL SELECT color FROM test3 "
        "ORDER BY 1 LIMIT 3 OFFSET 2",
        "SELECT test3.color, count(*) AS n FROM test3 JOIN test1 USING (color) GROUP BY test3.color "
        "HAVING n > 0 ORDER BY test3.color DESC",
        "SELECT t.c FROM (SELECT color AS c FROM test2 WHERE id > 1) t JOIN test1 ON test1.color = t.c",
        "SELECT color FROM test1 INTERSECT SELECT color FROM test2 EXCEPT SELECT color FROM test3 "
        "WHERE id > 2 ORDER BY 1",
        "SELECT a.id, b.id FROM test1 a LEFT JOIN test3 b ON b.color = a.color ORDER BY a.id DESC LIMIT 2",
    ]:
        q(c, sql)
    # Not the same answer by accident: a plain expectation too.
    q(c, "SELECT id FROM test3 WHERE color IN (SELECT color FROM test2) ORDER BY id", [["1"], ["2"]])


def test_parameters(d):
    c = d.connect()
    fill(c)
    before = statements_run(c)
    expect_rows(c.inline("SELECT test1.color, test2.color FROM test1 JOIN test2 USING (id) WHERE id = ?",
                         [2]), [["green", "yellow"]])
    expect_rows(c.bulk("SELECT count(*) FROM test1, test3 WHERE test3.color = :c AND test1.color = :c",
                       ["blue"]), [["1"]])
    eq(statements_run(c), before + 2, "federated statements")


def test_writes_one_target(d):
    c = d.connect()
    fill(c)
    before = statements_run(c)
    # INSERT ... SELECT reading two other binds.
    expect_status(c.request("INSERT INTO test2 (id, color) SELECT test1.id + 10, test3.color "
                            "FROM test1 JOIN test3 USING (id)"), "+OK changes=4 last_id=14")
    expect_rows(c.request("SELECT id, color FROM test2 WHERE id > 10 ORDER BY id"),
                [["11", "blue"], ["12", "red"], ["13", "white"], ["14", "green"]])
    # UPDATE ... WHERE id IN (SELECT ...) from another bind.
    expect_status(c.request("UPDATE test1 SET color = 'x' WHERE id IN (SELECT id FROM test3 WHERE "
                            "color IN ('red', 'white'))"), "+OK changes=2")
    expect_rows(c.request("SELECT id FROM test1 WHERE color = 'x' ORDER BY id"), [["2"], ["3"]])
    # DELETE ... WHERE EXISTS.
    expect_status(c.request("DELETE FROM test3 WHERE EXISTS (SELECT 1 FROM test2 WHERE "
                            "test2.color = test3.color)"), "+OK changes=4")
    expect_rows(c.request("SELECT id, color FROM test3"), [["5", "pink"]])
    # UPSERT into the memory bind from a file bind.
    expect_status(c.request("INSERT INTO test3 (id, color) SELECT id, color FROM test1 WHERE true "
                            "ON CONFLICT (id) DO UPDATE SET color = excluded.color || '!'"),
                  "+OK changes=4 last_id=4")
    expect_rows(c.request("SELECT id, color FROM test3 ORDER BY id"),
                [["1", "red"], ["2", "x"], ["3", "x"], ["4", "black"], ["5", "pink"]])
    eq(statements_run(c), before + 4, "federated writes")
    # The rows are in the target bind's file, nowhere else.
    eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(7,)])
    eq(d.file_query("app.db", "SELECT id FROM test1 WHERE color = 'x' ORDER BY id"), [(2,), (3,)])


def test_write_is_atomic_in_target(d):
    c = d.connect()
    fill(c)
    # The third row collides with test2's primary key: nothing is inserted.
    expect_err(c.request("INSERT INTO test2 (id, color) SELECT id - 2, color FROM test3"), "CONSTRAINT")
    eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(3,)])


def test_write_only_target_bind(d):
    """The authorizer lets a statement across binds write its target only:
    a trigger in no way helps, and the read binds stay unchanged."""
    c = d.connect()
    fill(c)
    expect_status(c.request("UPDATE test3 SET color = (SELECT color FROM test1 WHERE test1.id = test3.id) "
                            "WHERE id = 1"), "+OK changes=1")
    expect_rows(c.request("SELECT color FROM test3 WHERE id = 1"), [["red"]])
    eq(d.file_query("app.db", "SELECT count(*) FROM test1"), [(4,)])


def test_attach_still_refused(d):
    c = d.connect()
    expect_err(c.request("ATTACH 'x.db' AS x"), "DENIED")
    expect_err(c.request("DETACH second_db"), "DENIED")


def test_in_transaction_txnbind(d):
    c = d.connect()
    fill(c)
    # Inside a transaction the statement runs on the transaction's
    # connection, where the other SQLite binds are attached (issue 16,
    # test_xact.py).
    expect_ok(c.request("BEGIN"))
    expect_rows(c.request("SELECT count(*) FROM test1"), [["4"]])
    expect_status(c.request("SELECT * FROM test1 JOIN test2 USING (id)"), "+OK rows=3")
    expect_ok(c.request("ROLLBACK"))
    expect_ok(c.request("BEGIN"))   # held: nothing ran yet
    expect_status(c.request("SELECT * FROM test1 JOIN test2 USING (id)"), "+OK rows=3")
    expect_ok(c.request("ROLLBACK"))
    expect_rows(c.request("SELECT count(*) FROM test1 JOIN test2 USING (id)"), [["3"]])


def test_stats_row(d):
    c = d.connect()
    row = federation_row(c)
    eq(row["pool_size"], "2", "federation_pool default")
    eq(row["statements"], "0", "statements")
    fill(c)
    expect_rows(c.request("SELECT count(*) FROM test1, test2"), [["12"]])
    row = federation_row(c)
    eq((row["statements"], row["rows"]), ("1", "1"), "after one statement")
    # A big one runs on a pool thread, which opens its executor connection.
    expect_status(c.request("SELECT * FROM test1, test2, test3, test1 AS a, test2 AS b, test3 AS x"),
                  "+OK rows=%d" % (4 * 3 * 5) ** 2)
    row = federation_row(c)
    eq((row["statements"], row["connections"]), ("2", "1"), "after a statement on a pool thread")


def test_pool_size_config():
    with Daemon(server={"federation_pool": "5"}) as d:
        eq(federation_row(d.connect())["pool_size"], "5", "pool_size")
    for bad in ("0", "65"):
        text = make_config(server={"federation_pool": bad})
        rc, out, err, path, _ = run_once(text, files=standard_files(), check=True, timeout=5)
        if rc == 0 or "federation_pool" not in err:
            raise TestFailure("federation_pool = %s: exit %d, stderr %r" % (bad, rc, err))


def test_quick_reads_on_the_loop(d):
    """A small read across SQLite binds is answered on the loop thread
    (on_loop of the *federation* row), and always sees the writes answered
    before it, pipelined or from other clients."""
    c = d.connect()
    fill(c)
    other = d.connect()
    for i in range(20):
        expect_rows(c.request("SELECT count(*) FROM test1 JOIN test2 USING (id)"), [[str(3 + i)]])
        # A write to one bind, then a read across binds in the same batch.
        c.send(("INSERT INTO test2 (id, color) VALUES (%d, 'n')\n"
                "INSERT INTO test1 (id, color) VALUES (%d, 'n')\n"
                "SELECT count(*) FROM test1 JOIN test2 USING (id)\n" % (100 + i, 100 + i)).encode())
        rs = c.read_responses(3)
        eq(rs[2].rows, [[str(4 + i)]], "the read after the writes")
        expect_rows(other.request("SELECT count(*) FROM test3 JOIN test2 USING (id)"), [["3"]])
    row = federation_row(c)
    if int(row["on_loop"]) < 10:
        raise TestFailure("reads across binds did not run on the loop: %r" % row)
