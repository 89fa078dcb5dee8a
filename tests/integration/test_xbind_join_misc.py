"""Leftovers of issue 15 around statements across binds: a PostgreSQL
database in LATIN1 returns correct text through a join with an SQLite
table (the executors' libpq connections use client_encoding UTF8), and
`.route` of a CREATE VIEW over several binds gives the reason running it
gives."""

from harness import Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows
from pgfixture import USER, pg_daemon, shared


def test_latin1_database_text_through_a_join():
    pg = shared()
    db = "t_latin1_%d" % id(pg)
    pg.psql("DROP DATABASE IF EXISTS %s" % db, db="postgres")
    pg.psql("CREATE DATABASE %s OWNER %s ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
            % (db, USER), db="postgres")
    try:
        # chr() gives the database's characters: é, ï, ü in LATIN1.
        pg.psql(["CREATE TABLE names (id integer PRIMARY KEY, name text)",
                 "INSERT INTO names VALUES (1, 'caf' || chr(233)), (2, 'na' || chr(239) || 've'), "
                 "(3, 'gr' || chr(252) || 'n')"], db=db, user=USER)
        eq(pg.psql("SELECT encoding::text FROM pg_database d JOIN (SELECT pg_char_to_encoding('LATIN1') e) x "
                   "ON d.encoding = x.e WHERE datname = current_database()", db=db), [["8"]], "a LATIN1 database")
        with pg_daemon(pg, db, tables=(("names", None),),
                       env={"PGCLIENTENCODING": "LATIN1"}) as d:
            c = d.connect()
            expect_ok(c.request("CREATE TABLE sq (id INTEGER PRIMARY KEY, word TEXT)"))
            expect_ok(c.request("INSERT INTO sq VALUES (1, 'café'), (2, 'x'), (3, 'grün')"))
            expect_rows(c.request("SELECT s.id, n.name, n.name = s.word FROM sq s JOIN names n ON n.id = s.id "
                                  "ORDER BY 1"), [["1", "café", "1"], ["2", "naïve", "0"], ["3", "grün", "1"]])
            # A value sent to PostgreSQL is converted too: the comparison
            # runs there (pushed down) and finds the row.
            expect_rows(c.request("SELECT n.id FROM sq s JOIN names n ON n.name = s.word ORDER BY 1"),
                        [["1"], ["3"]])
    finally:
        pg.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % db, db="postgres")


def test_route_of_a_view_across_binds_says_why():
    with Daemon() as d:
        c = d.connect()
        sql = "CREATE VIEW v AS SELECT * FROM test1 JOIN test2 USING (id)"
        run = expect_err(c.request(sql), "CROSSBIND")
        route = expect_err(c.request(".route " + sql), "CROSSBIND")
        if "view" not in route.err_msg:
            raise TestFailure(".route does not say why: %r" % route.status)
        eq(route.err_msg, run.err_msg, ".route's reason is the one running it gives")
        eq([row[:2] for row in route.rows], [["v", "default"], ["test1", "default"], ["test2", "second_db"]],
           ".route's tables")
        # A view over one bind routes there as before.
        r = c.request(".route CREATE VIEW w AS SELECT * FROM test2")
        if not r.ok or "bind=second_db" not in r.status:
            raise TestFailure(".route of a one-bind view: %r" % r.status)
