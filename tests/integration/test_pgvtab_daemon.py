"""
PostgreSQL tables in statements across binds, through the daemon (issue
15): the executor's pgvtab (daemon/pgvtab.c) pushes down what PostgreSQL
can do, sends values as parameters, streams rows, writes in transactions,
and keeps PostgreSQL's SQLSTATE. What PostgreSQL received is read from the
server log (log_statement = all on the test's database).
"""

import sqlite3
import time

from harness import TestFailure, eq, expect_err, expect_ok, expect_rows, expect_status
import pgfixture
from pgfixture import pg_daemon, shared

ITEMS = [(1, "apple", "1.50"), (2, "pear", "2.25"), (3, "plum", None), (4, "fig", "10"), (5, "kiwi", "0.5")]


def setup_pg(pg, db, big=0):
    sql = ["CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2))",
           "INSERT INTO items VALUES " + ", ".join(
               "(%d, '%s', %s)" % (i, n, p if p is not None else "NULL") for i, n, p in ITEMS),
           "CREATE TABLE orders (id serial PRIMARY KEY, item int, qty int)"]
    if big:
        sql += ["CREATE TABLE big (id int PRIMARY KEY, val int)",
                "INSERT INTO big SELECT g, g %% 1000 FROM generate_series(1, %d) g" % big,
                "ANALYZE big"]
    pg.psql(sql, db=db, user=pgfixture.USER)
    pg.psql("ALTER DATABASE %s SET log_statement = 'all'" % db, db="postgres")


def log_lines(pg, db):
    time.sleep(0.2)    # the server's log lines reach the file
    return [ln for ln in (pg.log_text() or "").splitlines() if "@%s " % db in ln]


def fill_test1(c, rows):
    for i, color in rows:
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (%d, '%s')" % (i, color)))


TABLES = (("items", None), ("orders", None), ("big", None))


def test_pgvtab_join_sqlite_and_postgresql():
    pg = shared()
    with pg.database() as db:
        setup_pg(pg, db, big=20000)
        with pg_daemon(pg, db, tables=TABLES) as d:
            c = d.connect()
            fill_test1(c, [(1, "red"), (3, "blue"), (4, "green"), (9, "pink")])
            # a small PostgreSQL table: read once, joined in SQLite
            r = c.request("SELECT t.color, i.name, i.price FROM test1 t JOIN items i ON i.id = t.id "
                          "ORDER BY t.id")
            expect_rows(r, [["red", "apple", "1.5"], ["blue", "plum", None], ["green", "fig", "10"]])
            # a big one, once SQLite knows test1 is small: probed by key
            expect_ok(c.request("ANALYZE test1"))
            mark = len(log_lines(pg, db))
            r = c.request("SELECT t.id, b.val FROM test1 t JOIN big b ON b.id = t.id ORDER BY t.id")
            expect_rows(r, [["1", "1"], ["3", "3"], ["4", "4"], ["9", "9"]])
            sent = "\n".join(log_lines(pg, db)[mark:])
            if sent.count('FROM "public"."big" WHERE "id" = $1::int8') != 4 or "CURSOR" in sent:
                raise TestFailure("the join did not probe big by key, 4 times:\n" + sent)
            # IN list, comparison: pushed; values as parameters
            mark = len(log_lines(pg, db))
            r = c.request("SELECT i.name FROM items i WHERE i.id IN (SELECT id FROM test1) AND i.name > 'b' "
                          "ORDER BY i.name")
            expect_rows(r, [["fig"], ["plum"]])
            sent = "\n".join(log_lines(pg, db)[mark:])
            for want in ('"id" = ANY($1::int8[])', '"name" > $2::text COLLATE "C"'):
                if want not in sent:
                    raise TestFailure("PostgreSQL did not receive %r:\n%s" % (want, sent))
            # the module's read transactions end with their statements
            time.sleep(0.2)
            busy = [b for b in pg.backends(db) if b[1] != "idle"]
            if busy:
                raise TestFailure("sqlmux's PostgreSQL sessions are not idle after the statements: %r" % busy)


def test_pgvtab_writes_from_sqlite():
    pg = shared()
    with pg.database() as db:
        setup_pg(pg, db)
        with pg_daemon(pg, db, tables=TABLES) as d:
            c = d.connect()
            fill_test1(c, [(1, "red"), (2, "blue")])
            expect_status(c.request("INSERT INTO orders (item, qty) SELECT id, id * 10 FROM test1"),
                          "+OK changes=2")  # no last_id for a PostgreSQL target (federate.c)
            eq(pg.psql("SELECT item, qty FROM orders ORDER BY id", db=db), [["1", "10"], ["2", "20"]])
            expect_ok(c.request("UPDATE orders SET qty = qty + 1 WHERE item IN (SELECT id FROM test1 "
                                "WHERE color = 'blue')"))
            eq(pg.psql("SELECT item, qty FROM orders ORDER BY id", db=db), [["1", "10"], ["2", "21"]])
            # the write is atomic in PostgreSQL: a failing row undoes the others
            r = c.request("INSERT INTO items (id, name) SELECT id + 5, color FROM test1 "
                          "UNION ALL SELECT 1, 'dup'")
            if r.ok:
                raise TestFailure("a duplicate key was accepted: %r" % r)
            eq(pg.value("SELECT count(*) FROM items", db=db), "5")


def test_pgvtab_postgresql_killed_mid_query():
    with pgfixture.PgCluster() as pg:
        db = pg.create_database("pgv_")
        setup_pg(pg, db, big=300000)
        with pg_daemon(pg, db, tables=TABLES) as d:
            c = d.connect()
            fill_test1(c, [(1, "red")])
            # A long scan of big joined with test1, killed while it streams:
            # the first row is read (the statement is running), then the
            # client stops reading; ~60 MB of answer cannot all be buffered,
            # so the statement is still fetching from PostgreSQL when it dies.
            c.send(b"SELECT b.id, printf('%0200d', b.val) FROM big b JOIN test1 t ON t.id <= b.val\n")
            header, first = c.readline(), c.readline()
            if not (header.startswith(b"*") and first.startswith(b"=")):
                raise TestFailure("the scan did not start streaming: %r %r" % (header, first))
            pg.kill()
            lines = 0
            while True:
                line = c.readline()
                if not line.startswith(b"="):
                    break
                lines += 1
            if not line.startswith(b"-ERR"):
                raise TestFailure("a query whose PostgreSQL was killed ended %r after %d rows" % (line, lines))
            pg.start()
            for _ in range(100):
                r = c.request("SELECT count(*) FROM items i JOIN test1 t ON t.id = i.id")
                if r.ok:
                    break
                time.sleep(0.1)
            expect_rows(r, [["1"]])
            expect_ok(c.request(".ping"))


test_pgvtab_postgresql_killed_mid_query.timeout = 120
