"""A PostgreSQL part that cannot be committed after the decision (issue 16;
daemon/session_xact.c, the resolver of daemon/xact_pg.c): bind pg (its own
cluster) is prepared, then stopped while bind pg2's PREPARE waits for a lock;
the decision is written, COMMIT PREPARED on pg fails: the client still gets
+OK (the transaction is committed), pg2's part is there at once, `.binds`
counts pg's part in doubt, and once pg is back the resolver commits it."""

import subprocess
import time

import pgfixture
from harness import TestFailure, eq, expect_ok, expect_status
from pgfixture import USER, PgCluster, binds_by_name, pg_daemon, shared, wait_for


def test_xact_pg_commit_prepared_fails_after_the_decision():
    other = shared()
    with PgCluster() as pg, pg.database() as db, other.database() as db2:
        pg.psql(["CREATE TABLE items (id integer PRIMARY KEY, color text)"], db=db, user=USER)
        other.psql(["CREATE TABLE tags (name text, UNIQUE (name) DEFERRABLE INITIALLY DEFERRED)"], db=db2,
                   user=USER)
        with pg_daemon(pg, db, tables=(("items", None), ("tags", "pg2")),
                       extra_binds=(("pg2", other.url(db=db2)),)) as d:
            c = d.connect()
            blocker = subprocess.Popen(
                [pgfixture.PSQL, "-h", other.dir, "-p", str(other.port), "-U", USER, "-d", db2, "-c",
                 "BEGIN; INSERT INTO tags VALUES ('k'); SELECT pg_sleep(4); ROLLBACK"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for(lambda: other.value("SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' AND "
                                             "query LIKE '%%pg_sleep%%'" % db2, db="postgres") != "0", 10,
                         "the blocker holds its row")
                expect_ok(c.request("BEGIN"))
                expect_ok(c.request("INSERT INTO items (id, color) VALUES (1, 'doubt')"))
                expect_ok(c.request("INSERT INTO tags (name) VALUES ('k')"))
                c.send("COMMIT\n")
                # pg is prepared; pg2's PREPARE waits for the blocker.
                wait_for(lambda: other.value("SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' AND "
                                             "query LIKE 'PREPARE TRANSACTION%%' AND wait_event_type = 'Lock'"
                                             % db2, db="postgres") != "0", 10, "pg2's PREPARE waits")
                eq(pg.value("SELECT count(*) FROM pg_prepared_xacts WHERE database = '%s'" % db, db="postgres"),
                   "1", "pg's part prepared")
                pg.stop()
            finally:
                blocker.wait(timeout=30)
            expect_status(c.read_response(), "+OK changes=0")
            eq(other.psql("SELECT name FROM tags", db=db2), [["k"]], "pg2's part committed at once")
            eq(binds_by_name(c)["pg"]["in_doubt"], "1", "pg's part in doubt")
            pg.start()
            wait_for(lambda: pg.value("SELECT count(*) FROM items", db=db) == "1", 30,
                     "the resolver commits pg's part once it is back")
            eq(pg.value("SELECT count(*) FROM pg_prepared_xacts", db="postgres"), "0", "nothing left prepared")
            wait_for(lambda: binds_by_name(c)["pg"]["in_doubt"] == "0", 10, "in_doubt back to 0")
            if "handed to the resolver" not in d.stderr_text():
                raise TestFailure("no log line for the part handed to the resolver")
