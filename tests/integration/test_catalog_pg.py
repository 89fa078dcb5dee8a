"""Routing by the binds' catalogs with a PostgreSQL bind (issue 14): tables
created through the bind (unqualified, on the search_path, or
schema-qualified) route to it with no [tables] entry; pg_catalog.* and
information_schema.* follow the session's bind; DDL made by another
program is noticed within catalog_interval; a table that moves between a
SQLite and the PostgreSQL bind is found where it is, with the
PostgreSQL connection's prepared statement of the same text prepared
afresh."""

import time

from harness import TestFailure, eq, expect_err, expect_ok, expect_rows, expect_status
from pgfixture import USER, pg_daemon, shared


def _use(c, bind):
    expect_status(c.request(".use " + bind), "+OK bind=" + bind)


def test_pg_tables_created_through_the_bind_route_there():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, tables=()) as d:
        a = d.connect()
        _use(a, "pg")
        expect_ok(a.request("CREATE TABLE gadgets (id serial PRIMARY KEY, name text)"))
        expect_ok(a.request("CREATE SCHEMA stock"))
        expect_ok(a.request("CREATE TABLE stock.parts (n int)"))
        expect_ok(a.request("INSERT INTO stock.parts VALUES (42)"))
        b = d.connect()   # the default bind
        expect_status(b.request("INSERT INTO gadgets (name) VALUES ('lamp')"), "+OK changes=1")
        expect_rows(b.request("SELECT name FROM gadgets"), [["lamp"]])
        expect_rows(b.request("SELECT n FROM stock.parts"), [["42"]])
        expect_rows(b.request("SELECT name FROM public.gadgets"), [["lamp"]])
        eq(pg.psql("SELECT name FROM gadgets", db=db), [["lamp"]], "gadgets in PostgreSQL")
        eq(b.request(".route SELECT * FROM stock.parts").rows, [["stock.parts", "pg", "catalog"]], ".route")
        # parts is not on the search_path: unqualified, no bind holds it.
        eq(b.request(".route SELECT * FROM parts").rows, [["parts", "default", "session"]], ".route")
        rows = dict((r[0], r) for r in b.request(".tables pg").rows)
        eq(rows["gadgets"], ["gadgets", "table", "pg", "pg", "catalog", None], ".tables gadgets")
        eq(rows["stock.parts"], ["stock.parts", "table", "pg", "pg", "catalog", None], ".tables stock.parts")


def test_pg_catalogs_follow_the_session_bind():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, tables=()) as d:
        c = d.connect()
        _use(c, "pg")
        expect_ok(c.request("CREATE TABLE gadgets (id int)"))
        expect_rows(c.request("SELECT count(*) FROM information_schema.tables WHERE table_name = 'gadgets'"),
                    [["1"]])
        expect_rows(c.request("SELECT relname FROM pg_catalog.pg_class WHERE relname = 'gadgets'"),
                    [["gadgets"]])
        expect_rows(c.request("SELECT tablename FROM pg_tables WHERE tablename = 'gadgets'"),
                    [["gadgets"]])
        eq(c.request(".route SELECT * FROM pg_catalog.pg_class").status, "+OK bind=pg", ".route")


def test_pg_other_programs_ddl_is_noticed():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, tables=(), server={"catalog_interval": "100"}) as d:
        c = d.connect()
        expect_err(c.request("SELECT v FROM made_by_psql"), "SQL", "no such table: made_by_psql")
        pg.psql(["CREATE TABLE made_by_psql (v text)", "INSERT INTO made_by_psql VALUES ('psql')"],
                db=db, user=USER)
        deadline = time.time() + 10
        while True:
            r = c.request("SELECT v FROM made_by_psql")
            if r.ok:
                break
            if time.time() > deadline:
                raise TestFailure("the daemon did not notice psql's table: %r" % r.status)
            time.sleep(0.05)
        expect_rows(r, [["psql"]])


def test_pg_table_moves_between_binds_prepared_statement_follows():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, tables=()) as d:
        a, b = d.connect(), d.connect()
        sql = "SELECT * FROM mover"
        _use(a, "pg")
        expect_ok(a.request("CREATE TABLE mover (v text)"))
        expect_ok(a.request("INSERT INTO mover VALUES ('pg one')"))
        for _ in range(3):   # prepared and cached on the PostgreSQL connections
            expect_rows(b.request(sql), [["pg one"]])
        expect_ok(a.request("DROP TABLE mover"))
        _use(a, "second_db")
        expect_ok(a.request("CREATE TABLE mover (v TEXT)"))
        expect_ok(a.request("INSERT INTO mover VALUES ('sqlite')"))
        expect_rows(b.request(sql), [["sqlite"]])
        expect_ok(a.request("DROP TABLE mover"))
        _use(a, "pg")
        expect_ok(a.request("CREATE TABLE mover (n int, v text)"))
        expect_ok(a.request("INSERT INTO mover VALUES (2, 'pg two')"))
        for _ in range(3):
            expect_rows(b.request(sql), [["2", "pg two"]])
        # DDL in a transaction moves the name when it commits.
        expect_ok(a.request("BEGIN"))
        expect_ok(a.request("ALTER TABLE mover RENAME TO moved"))
        eq(b.request(".route SELECT v FROM moved").rows, [["moved", "default", "session"]],
           "not yet committed")
        expect_ok(a.request("COMMIT"))
        expect_rows(b.request("SELECT v FROM moved"), [["pg two"]])
        expect_err(b.request(sql), "SQL")
