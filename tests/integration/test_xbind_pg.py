"""Statements across a SQLite bind and a PostgreSQL bind (issue 15), on the
federation pool with the PostgreSQL virtual tables (pgvtab): the statement
shapes compared with one SQLite database holding copies of the tables,
writes with a SQLite or a PostgreSQL target, what PostgreSQL received (its
log, log_statement = all), new columns after DDL, and the errors: a
PostgreSQL error with its SQLSTATE, a PostgreSQL bind that is down."""

import socket
import sqlite3

from harness import TestFailure, eq, expect_err, expect_ok, expect_rows, expect_status
from pgfixture import USER, pg_daemon, shared

ITEMS = "CREATE TABLE items (id integer primary key, color text, n integer)"
ITEM_ROWS = [(1, "red", 5), (2, "blue", 7), (3, "green", None), (4, "red", 9), (6, "white", 1)]
TEST1_ROWS = [(1, "red"), (2, "green"), (3, "blue"), (5, "black")]
TEST3_ROWS = [(1, "pink"), (2, "blue"), (4, "red")]


def setup(pg, db, c):
    pg.psql([ITEMS] + ["INSERT INTO items VALUES (%d, '%s', %s)" % (i, col, "NULL" if n is None else n)
                       for i, col, n in ITEM_ROWS], db=db, user=USER)
    for i, col in TEST1_ROWS:
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (%d, '%s')" % (i, col)))
    for i, col in TEST3_ROWS:
        expect_ok(c.request("INSERT INTO test3 (id, color) VALUES (%d, '%s')" % (i, col)))


def reference():
    ref = sqlite3.connect(":memory:")
    ref.execute("CREATE TABLE items (id integer primary key, color text, n integer)")
    ref.execute("CREATE TABLE test1 (id INTEGER PRIMARY KEY, color VARCHAR(64))")
    ref.executemany("INSERT INTO items VALUES (?, ?, ?)", ITEM_ROWS)
    ref.executemany("INSERT INTO test1 VALUES (?, ?)", TEST1_ROWS)
    ref.execute("CREATE TABLE test3 (id INTEGER PRIMARY KEY, color VARCHAR(64))")
    ref.executemany("INSERT INTO test3 VALUES (?, ?)", TEST3_ROWS)
    return ref


def text(rows):
    return [[None if v is None else str(v) for v in row] for row in rows]


SHAPES = [
    "SELECT test1.id, test1.color, items.n FROM test1 JOIN items ON items.id = test1.id ORDER BY 1",
    "SELECT test1.id FROM test1 JOIN items USING (color) WHERE items.n > 4 ORDER BY 1",
    "SELECT id FROM test1 WHERE id IN (SELECT id FROM items WHERE n IS NOT NULL) ORDER BY id",
    "SELECT id FROM items WHERE EXISTS (SELECT 1 FROM test1 WHERE test1.color = items.color) ORDER BY id",
    "SELECT id FROM items WHERE NOT EXISTS (SELECT 1 FROM test1 WHERE test1.id = items.id) ORDER BY id",
    "WITH r AS (SELECT id, color FROM items WHERE color = 'red') SELECT test1.id, r.id FROM test1, r "
    "WHERE test1.color = r.color ORDER BY 2",
    "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < 6) "
    "SELECT i, items.color, test1.color FROM k LEFT JOIN items ON items.id = i LEFT JOIN test1 ON test1.id = i "
    "ORDER BY i",
    "SELECT color FROM items UNION SELECT color FROM test1 ORDER BY 1",
    "SELECT color FROM items UNION ALL SELECT color FROM test1 ORDER BY 1 LIMIT 3 OFFSET 1",
    "SELECT items.color, count(*), sum(items.n) FROM items JOIN test1 ON test1.color = items.color "
    "GROUP BY items.color ORDER BY 1",
    "SELECT (SELECT count(*) FROM items), (SELECT max(id) FROM test1)",
    # Three binds: a file bind, PostgreSQL and the memory bind.
    "SELECT test1.id, items.n, test3.color FROM test1 JOIN items USING (id) JOIN test3 USING (id) ORDER BY 1",
    "SELECT test3.id FROM test3 WHERE color IN (SELECT color FROM items WHERE id IN (SELECT id FROM test1)) "
    "ORDER BY 1",
    "SELECT items.id FROM items, test1 WHERE items.id = test1.id AND items.n BETWEEN 5 AND 8 ORDER BY 1 DESC "
    "LIMIT 1",
]


def test_pg_shapes_match_one_database():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, tables=(("items", None),)) as d:
        c = d.connect()
        setup(pg, db, c)
        ref = reference()
        for sql in SHAPES:
            r = c.request(sql)
            if not r.ok:
                raise TestFailure("%s\n  %s" % (sql, r.status))
            eq([list(x) for x in r.rows], text(ref.execute(sql).fetchall()), sql)
        fed = [row for row in c.request(".stats").rows if row[0] == "*federation*"][0]
        eq(fed[1], str(len(SHAPES)), "statements on the federation pool")


def test_pg_writes():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, tables=(("items", None),)) as d:
        c = d.connect()
        setup(pg, db, c)
        # SQLite target reading PostgreSQL.
        expect_status(c.request("INSERT INTO test1 (id, color) SELECT id + 100, color FROM items WHERE n > 6"),
                      "+OK changes=2 last_id=104")
        eq(d.file_query("app.db", "SELECT id, color FROM test1 WHERE id > 100 ORDER BY id"),
           [(102, "blue"), (104, "red")])
        expect_status(c.request("DELETE FROM test1 WHERE EXISTS (SELECT 1 FROM items WHERE items.id = test1.id "
                                "AND items.n IS NULL)"), "+OK changes=1")
        # PostgreSQL target reading SQLite.
        expect_status(c.request("INSERT INTO items (id, color, n) SELECT id + 10, color, id FROM test1 "
                                "WHERE id < 100"), "+OK changes=3")
        eq(pg.psql("SELECT id, color, n FROM items WHERE id > 10 ORDER BY id", db=db),
           [["11", "red", "1"], ["12", "green", "2"], ["15", "black", "5"]], "rows in PostgreSQL")
        expect_status(c.request("UPDATE items SET n = 0 WHERE id IN (SELECT id FROM test1)"), "+OK changes=2")
        eq(pg.psql("SELECT id FROM items WHERE n = 0 ORDER BY id", db=db), [["1"], ["2"]], "updated")
        expect_rows(c.request("SELECT id FROM items WHERE n = 0 ORDER BY id"), [["1"], ["2"]])
        # Atomic in the target: one bad row, nothing written.
        r = expect_err(c.request("INSERT INTO items (id, color, n) SELECT id, color, 1 FROM test1"), "CONSTRAINT")
        if "SQLSTATE 23505" not in r.err_msg:
            raise TestFailure("no SQLSTATE in %r" % r.status)
        eq(pg.psql("SELECT count(*) FROM items", db=db), [["8"]], "nothing inserted")


def test_pg_pushdown_and_new_columns():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, tables=(("items", None),)) as d:
        c = d.connect()
        setup(pg, db, c)
        pg.psql("ALTER DATABASE %s SET log_statement = 'all'" % db, db="postgres")
        mark = len(pg.log_text())
        expect_rows(c.request("SELECT test1.color, items.n FROM test1 JOIN items ON items.id = test1.id "
                              "WHERE items.n >= 7 ORDER BY 1"), [["green", "7"]])
        sent = pg.log_since(mark, (db,))
        lines = [ln for ln in sent.splitlines() if "items" in ln and ("statement:" in ln or "execute" in ln)]
        if not any("$" in ln and "n" in ln and "WHERE" in ln.upper() for ln in lines):
            raise TestFailure("no condition on items sent to PostgreSQL:\n" + "\n".join(lines))
        # .plan shows it without running anything.
        r = c.request(".plan SELECT test1.color, items.n FROM test1 JOIN items ON items.id = test1.id "
                      "WHERE items.n >= 7")
        expect_status(r, "+OK bind=* postgresql=1 semijoins=1")
        eq([row[:2] for row in r.rows], [["pg", "public.items"]], ".plan rows")
        if "WHERE" not in r.rows[0][2].upper() or "$" not in r.rows[0][2]:
            raise TestFailure(".plan shows no condition sent: %r" % r.rows)
        r = c.request(".plan SELECT * FROM items WHERE id = 1")
        expect_status(r, "+OK bind=pg postgresql=1")
        eq(r.rows, [["pg", "", "SELECT * FROM items WHERE id = 1"]], ".plan of a PostgreSQL-only statement")
        # DDL through the PostgreSQL bind: the next statement sees the column.
        expect_status(c.request("ALTER TABLE items ADD COLUMN note text"), "+OK changes=0")
        expect_status(c.request("UPDATE items SET note = 'n' || items.id WHERE id IN (SELECT id FROM test1)"),
                      "+OK changes=3")
        expect_rows(c.request("SELECT items.note FROM items JOIN test1 USING (id) ORDER BY 1"),
                    [["n1"], ["n2"], ["n3"]])


def test_pg_errors():
    pg = shared()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    down = "postgresql://%s:x@127.0.0.1:%d/nodb?connect_timeout=2" % (USER, dead)
    with pg.database() as db, pg_daemon(pg, db, tables=(("items", None), ("ghosts", "pgdown"),
                                                                    ("nosuch", None)),
                                        extra_binds=[("pgdown", down)]) as d:
        c = d.connect()
        setup(pg, db, c)
        r = expect_err(c.request("SELECT * FROM test1 JOIN ghosts USING (id)"), "UNAVAILABLE")
        if "pgdown" not in r.err_msg:
            raise TestFailure("UNAVAILABLE does not name the bind: %r" % r.status)
        # A table PostgreSQL does not have: its error, with the SQLSTATE.
        r = expect_err(c.request("SELECT * FROM test1 JOIN nosuch USING (id)"), "SQL")
        if "SQLSTATE 42P01" not in r.err_msg and "nosuch" not in r.err_msg:
            raise TestFailure("unclear error for a missing PostgreSQL table: %r" % r.status)
        # A value PostgreSQL refuses: its SQLSTATE and the matching code.
        r = expect_err(c.request("UPDATE items SET n = 'abc' || test1.color FROM test1 WHERE test1.id = items.id"),
                       "MISMATCH")
        if "SQLSTATE 22P02" not in r.err_msg:
            raise TestFailure("no SQLSTATE in %r" % r.status)
        expect_rows(c.request("SELECT count(*) FROM test1 JOIN items USING (id)"), [["3"]])
