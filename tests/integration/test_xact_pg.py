"""Transactions across binds with PostgreSQL participants (issue 16;
daemon/session_xact.c): a transaction that began on any bind writes SQLite
and PostgreSQL binds and commits once, all or nothing (PREPARE TRANSACTION,
the decision, COMMIT PREPARED), rolls back everywhere, leaves no prepared
transaction behind; savepoints on every participant; the
max_prepared_transactions rule; a single-bind transaction never prepares."""

import contextlib
import time

import harness
import pgfixture
from harness import TestFailure, eq, expect_err, expect_ok, expect_rows, expect_status
from pgfixture import USER, pg_daemon, shared

ITEMS = "CREATE TABLE items (id integer PRIMARY KEY, color text)"
LEDGER = "CREATE TABLE ledger (id integer PRIMARY KEY, amount integer)"


@contextlib.contextmanager
def setup(pg=None, **cfg):
    """A daemon with the three SQLite binds, PostgreSQL bind pg (items, in
    one database) and pg2 (ledger, in another database of the cluster)."""
    pg = pg or shared()
    with pg.database() as db, pg.database() as db2:
        pg.psql([ITEMS], db=db, user=USER)
        pg.psql([LEDGER], db=db2, user=USER)
        # Every statement the daemon sends goes to the server's log.
        log_statements(pg, db, db2)
        with pg_daemon(pg, db, tables=(("items", None), ("ledger", "pg2")),
                       extra_binds=(("pg2", pg.url(db=db2)),), **cfg) as d:
            yield pg, db, db2, d


def prepared(pg, *dbs):
    """The prepared transactions left in the test's databases (the shared
    cluster serves other tests at the same time)."""
    return pg.psql("SELECT gid FROM pg_prepared_xacts WHERE database IN (%s)" % ", ".join(
        "'%s'" % db for db in dbs), db="postgres")


def items(pg, db):
    return pg.psql("SELECT id, color FROM items ORDER BY id", db=db)


def ledger(pg, db2):
    return pg.psql("SELECT id, amount FROM ledger ORDER BY id", db=db2)


def test1(d):
    return d.file_query("app.db", "SELECT id, color FROM test1 ORDER BY id")


def log_statements(pg, *dbs):
    for db in dbs:
        pg.psql("ALTER DATABASE %s SET log_statement = 'all'" % db, db="postgres")


def test_xact_pg_sqlite_first_commit():
    with setup() as (pg, db, db2, d):
        mark = len(pg.log_text())
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_status(c.request("INSERT INTO test1 (id, color) VALUES (1, 'one')"), "+OK changes=1 last_id=1")
        expect_status(c.request("INSERT INTO items (id, color) VALUES (1, 'uno')"), "+OK changes=1")
        expect_status(c.request("INSERT INTO test3 (id, color) VALUES (7, 'mem')"), "+OK changes=1 last_id=7")
        # Its own writes on every participant; nobody else sees them.
        expect_rows(c.request("SELECT color FROM items"), [["uno"]])
        expect_rows(c.request("SELECT color FROM test1"), [["one"]])
        eq(items(pg, db), [], "PostgreSQL before COMMIT")
        eq(test1(d), [], "SQLite before COMMIT")
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["1", "uno"]], "PostgreSQL after COMMIT")
        eq(test1(d), [(1, "one")], "SQLite after COMMIT")
        expect_rows(d.connect().request("SELECT color FROM test3"), [["mem"]])
        eq(prepared(pg, db, db2), [], "no prepared transaction left")
        sent = pg.log_since(mark, (db, db2))
        if "PREPARE TRANSACTION 'sqlmux_" not in sent or "COMMIT PREPARED 'sqlmux_" not in sent:
            raise TestFailure("no two-phase commit in the PostgreSQL log:\n%s" % sent[-3000:])
        # The connection is back in the pool, outside any transaction.
        expect_rows(c.request("SELECT count(*) FROM items"), [["1"]])


def test_xact_pg_pg_first_commit_and_memory():
    with setup() as (pg, db, db2, d):
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_status(c.request("INSERT INTO items (id, color) VALUES (2, 'dos')"), "+OK changes=1")
        expect_status(c.request("INSERT INTO test3 (id, color) VALUES (2, 'mem')"), "+OK changes=1 last_id=2")
        expect_status(c.request("INSERT INTO test1 (id, color) VALUES (2, 'file')"), "+OK changes=1 last_id=2")
        expect_status(c.request("UPDATE items SET color = 'DOS' WHERE id = 2"), "+OK changes=1")
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["2", "DOS"]], "PostgreSQL")
        eq(test1(d), [(2, "file")], "SQLite file bind")
        expect_rows(d.connect().request("SELECT id, color FROM test3"), [["2", "mem"]])
        eq(prepared(pg, db, db2), [], "no prepared transaction left")


def test_xact_pg_two_postgresql_binds():
    with setup() as (pg, db, db2, d):
        mark = len(pg.log_text())
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_status(c.request("INSERT INTO ledger (id, amount) VALUES (1, -5)"), "+OK changes=1")
        expect_status(c.request("INSERT INTO items (id, color) VALUES (1, 'five')"), "+OK changes=1")
        expect_rows(c.request("SELECT amount FROM ledger"), [["-5"]])
        eq(ledger(pg, db2), [], "before COMMIT")
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["1", "five"]], "items")
        eq(ledger(pg, db2), [["1", "-5"]], "ledger")
        eq(prepared(pg, db, db2), [], "no prepared transaction left")
        sent = pg.log_since(mark, (db, db2))
        if sent.count("PREPARE TRANSACTION 'sqlmux_") != 2 or sent.count("COMMIT PREPARED 'sqlmux_") != 2:
            raise TestFailure("expected two prepared parts in the PostgreSQL log:\n%s" % sent[-3000:])
        # A statement across the two PostgreSQL binds runs on an SQLite
        # home (test_xact_pgpg.py); .route says so, and where the others go.
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("SELECT * FROM items"))
        expect_rows(c.request("SELECT color, amount FROM items JOIN ledger USING (id)"), [["five", "-5"]])
        expect_status(c.request(".route SELECT * FROM items JOIN ledger USING (id)"), "+OK bind=*")
        expect_status(c.request(".route SELECT * FROM ledger"), "+OK bind=pg2")
        expect_status(c.request(".route SELECT * FROM test1"), "+OK bind=default")
        expect_status(c.request(".route SELECT * FROM test1 JOIN ledger USING (id)"), "+OK bind=*")
        expect_ok(c.request("ROLLBACK"))


def test_xact_pg_rollback_and_disconnect_leave_nothing():
    with setup() as (pg, db, db2, d):
        c = d.connect()
        for first in ("INSERT INTO items (id, color) VALUES (3, 'x')",
                      "INSERT INTO test1 (id, color) VALUES (3, 'x')"):
            expect_ok(c.request("BEGIN"))
            expect_ok(c.request(first))
            expect_ok(c.request("INSERT INTO ledger (id, amount) VALUES (3, 3)"))
            expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (3, 'x')"))
            expect_ok(c.request("INSERT INTO items (id, color) VALUES (4, 'y')"))
            expect_status(c.request("ROLLBACK"), "+OK changes=0")
            eq(items(pg, db), [], "items after ROLLBACK")
            eq(ledger(pg, db2), [], "ledger after ROLLBACK")
            eq(test1(d), [], "test1 after ROLLBACK")
            eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(0,)], "test2 after ROLLBACK")
        # Disconnect in the middle of the transaction.
        c2 = d.connect()
        expect_ok(c2.request("BEGIN"))
        expect_ok(c2.request("INSERT INTO test1 (id, color) VALUES (5, 'gone')"))
        expect_ok(c2.request("INSERT INTO items (id, color) VALUES (5, 'gone')"))
        expect_ok(c2.request("INSERT INTO ledger (id, amount) VALUES (5, 5)"))
        c2.close()
        # The rows stay invisible, the locks go: another client writes the
        # same keys at once.
        c3 = d.connect()
        pgfixture.wait_for(lambda: c3.request("INSERT INTO items (id, color) VALUES (5, 'mine')").ok, 10,
                           "items row 5 free again")
        expect_ok(c3.request("INSERT INTO ledger (id, amount) VALUES (5, 6)"))
        expect_ok(c3.request("INSERT INTO test1 (id, color) VALUES (5, 'mine')"))
        eq(items(pg, db), [["5", "mine"]], "items")
        eq(test1(d), [(5, "mine")], "test1")
        eq(prepared(pg, db, db2), [], "no prepared transaction left")
        # The pool's connections are all outside transactions again.
        pgfixture.wait_for(lambda: pg.value("SELECT count(*) FROM pg_stat_activity WHERE state LIKE "
                                            "'idle in transaction%%' AND datname IN ('%s', '%s')" % (db, db2),
                                            db="postgres") == "0", 10, "no connection left in a transaction")


def test_xact_pg_statement_across_sqlite_and_postgresql():
    """A statement joining a SQLite and a PostgreSQL table inside the
    transaction sees the transaction's own uncommitted writes in both, and
    may write either side; whichever bind the transaction began on."""
    with setup() as (pg, db, db2, d):
        c = d.connect()
        for n, first in enumerate(("INSERT INTO test1 (id, color) VALUES (1, 'red')",
                                   "INSERT INTO items (id, color) VALUES (1, 'red')",
                                   "SELECT count(*) FROM ledger")):
            expect_ok(c.request("BEGIN"))
            expect_ok(c.request(first))
            if "test1" not in first:
                expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'red')"))
            if "items" not in first:
                expect_ok(c.request("INSERT INTO items (id, color) VALUES (1, 'red')"))
            expect_ok(c.request("INSERT INTO items (id, color) VALUES (2, 'blue')"))
            expect_rows(c.request("SELECT test1.id, items.color FROM test1 JOIN items ON items.id = test1.id"),
                        [["1", "red"]])
            # Writes through the join: a PostgreSQL target, a SQLite target.
            expect_status(c.request("INSERT INTO items (id, color) SELECT id + 10, color FROM test1"),
                          "+OK changes=1")
            expect_status(c.request("INSERT INTO test1 (id, color) SELECT id, color FROM items WHERE id > 1"),
                          "+OK changes=2 last_id=11")
            expect_rows(c.request("SELECT count(*) FROM test1 JOIN items USING (id)"), [["3"]])
            eq(items(pg, db), [], "nothing visible outside before COMMIT")
            if n == 0:
                expect_status(c.request("ROLLBACK"), "+OK changes=0")
                eq(items(pg, db), [], "items after ROLLBACK")
                eq(test1(d), [], "test1 after ROLLBACK")
                continue
            expect_status(c.request("COMMIT"), "+OK changes=0")
            eq(items(pg, db), [["1", "red"], ["2", "blue"], ["11", "red"]], "items after COMMIT")
            eq(test1(d), [(1, "red"), (2, "blue"), (11, "red")], "test1 after COMMIT")
            eq(prepared(pg, db, db2), [], "no prepared transaction left")
            expect_ok(c.request("DELETE FROM items"))
            expect_ok(c.request("DELETE FROM test1"))
        # The lent connections went back: the pool serves as before.
        for _ in range(5):
            expect_rows(c.request("SELECT count(*) FROM items"), [["0"]])


def test_xact_pg_savepoints():
    with setup() as (pg, db, db2, d):
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'kept')"))
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (1, 'kept')"))
        expect_status(c.request("SAVEPOINT sp1"), "+OK changes=0")
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (2, 'undone')"))
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (2, 'undone')"))
        expect_status(c.request("ROLLBACK TO SAVEPOINT sp1"), "+OK changes=0")
        expect_rows(c.request("SELECT id FROM items ORDER BY id"), [["1"]])
        expect_rows(c.request("SELECT id FROM test1 ORDER BY id"), [["1"]])
        expect_ok(c.request("SAVEPOINT sp2"))
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (3, 'released')"))
        expect_status(c.request("RELEASE SAVEPOINT sp2"), "+OK changes=0")
        # A savepoint one participant does not know: the error, and the
        # transaction goes on.
        expect_err(c.request("ROLLBACK TO SAVEPOINT nosuch"), "SQL")
        expect_ok(c.request("ROLLBACK"))
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'kept')"))
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (1, 'kept')"))
        expect_ok(c.request("SAVEPOINT a"))
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (3, 'released')"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (3, 'released')"))
        expect_ok(c.request("RELEASE SAVEPOINT a"))
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["1", "kept"], ["3", "released"]], "items")
        eq(test1(d), [(1, "kept"), (3, "released")], "test1")
        # Binds that join after a savepoint get it too: ROLLBACK TO undoes
        # what they did since (SQLAlchemy's begin_nested() before the
        # first statement of another bind).
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (5, 'kept')"))
        expect_ok(c.request("SAVEPOINT a"))
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (5, 'undone')"))
        expect_ok(c.request("SAVEPOINT b"))
        expect_ok(c.request("INSERT INTO ledger (id, amount) VALUES (5, 5)"))
        expect_status(c.request("ROLLBACK TO SAVEPOINT b"), "+OK changes=0")
        expect_rows(c.request("SELECT count(*) FROM ledger"), [["0"]])
        expect_rows(c.request("SELECT count(*) FROM items WHERE id = 5"), [["1"]])
        expect_status(c.request("ROLLBACK TO SAVEPOINT a"), "+OK changes=0")
        expect_rows(c.request("SELECT count(*) FROM items WHERE id = 5"), [["0"]])
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (6, 'kept')"))
        expect_status(c.request("RELEASE SAVEPOINT a"), "+OK changes=0")
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["1", "kept"], ["3", "released"], ["6", "kept"]], "items")
        eq(ledger(pg, db2), [], "ledger")
        eq(test1(d), [(1, "kept"), (3, "released"), (5, "kept")], "test1")
        # Begun on PostgreSQL, the SQLite home joins after the savepoint.
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (7, 'kept')"))
        expect_ok(c.request("SAVEPOINT c"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (7, 'undone')"))
        expect_ok(c.request("INSERT INTO test3 (id, color) VALUES (7, 'undone')"))
        expect_status(c.request("ROLLBACK TO c"), "+OK changes=0")
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["1", "kept"], ["3", "released"], ["6", "kept"], ["7", "kept"]], "items")
        eq(test1(d), [(1, "kept"), (3, "released"), (5, "kept")], "test1")
        expect_rows(c.request("SELECT count(*) FROM test3"), [["0"]])


def test_xact_pg_failed_prepare_leaves_nothing():
    with setup() as (pg, db, db2, d):
        pg.psql(["CREATE TABLE tags (id integer, name text, UNIQUE (name) DEFERRABLE INITIALLY DEFERRED)"],
                db=db, user=USER)
        d.reload_catalog = None
        c = d.connect()
        # The daemon learns of the new table.
        pgfixture.wait_for(lambda: c.request("SELECT count(*) FROM tags").ok, 10, "tags routed")
        for first in ("INSERT INTO test1 (id, color) VALUES (1, 'a')", "INSERT INTO ledger (id, amount) VALUES (1, 1)"):
            expect_ok(c.request("BEGIN"))
            expect_ok(c.request(first))
            expect_ok(c.request("INSERT INTO tags (id, name) VALUES (1, 'dup')"))
            expect_ok(c.request("INSERT INTO tags (id, name) VALUES (2, 'dup')"))
            expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (1, 'b')"))
            r = expect_err(c.request("COMMIT"), "CONSTRAINT")
            if not r.err_msg.startswith("COMMIT failed: bind pg could not prepare its part, nothing was committed: ") \
                    or "(SQLSTATE 23505)" not in r.err_msg:
                raise TestFailure("the cause and the outcome are not said: %r" % r.status)
            eq(test1(d), [], "test1")
            eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(0,)], "test2")
            eq(pg.psql("SELECT count(*) FROM tags", db=db), [["0"]], "tags")
            eq(ledger(pg, db2), [], "ledger")
            eq(prepared(pg, db, db2), [], "no prepared transaction left")
            # The session is out of its transaction.
            expect_rows(c.request("SELECT count(*) FROM test1"), [["0"]])
            expect_ok(c.request("BEGIN"))
            expect_ok(c.request("ROLLBACK"))


def test_xact_pg_single_bind_never_prepares():
    with setup() as (pg, db, db2, d):
        mark = len(pg.log_text())
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (1, 'solo')"))
        expect_ok(c.request("UPDATE items SET color = 'SOLO'"))
        expect_status(c.request("COMMIT"), "+OK changes=0")
        # Reading another bind is not writing it: still one written part.
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (2, 'two')"))
        expect_rows(c.request("SELECT count(*) FROM test1"), [["0"]])
        expect_rows(c.request("SELECT count(*) FROM ledger"), [["0"]])
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["1", "SOLO"], ["2", "two"]], "items")
        sent = pg.log_since(mark, (db, db2))
        if "PREPARE TRANSACTION" in sent:
            raise TestFailure("a transaction that wrote one bind prepared:\n%s" % sent[-3000:])


def test_xact_pg_max_prepared_transactions_zero():
    with pgfixture.PgCluster(extra_opts="-c max_prepared_transactions=0") as noprep:
        with setup(noprep) as (pg, db, db2, d):
            c = d.connect()
            # Alone in its transaction: fine.
            expect_ok(c.request("BEGIN"))
            expect_ok(c.request("INSERT INTO items (id, color) VALUES (1, 'alone')"))
            expect_rows(c.request("SELECT count(*) FROM test1"), [["0"]])
            expect_status(c.request("COMMIT"), "+OK changes=0")
            # The second written bind: refused at that statement, the
            # transaction goes on.
            for first, second in (("INSERT INTO test1 (id, color) VALUES (1, 'a')",
                                   "INSERT INTO items (id, color) VALUES (2, 'b')"),
                                  ("INSERT INTO items (id, color) VALUES (2, 'b')",
                                   "INSERT INTO test1 (id, color) VALUES (1, 'a')")):
                expect_ok(c.request("BEGIN"))
                expect_ok(c.request(first))
                r = expect_err(c.request(second), "XACT")
                if "max_prepared_transactions" not in r.err_msg or "bind pg " not in r.err_msg:
                    raise TestFailure("the refusal does not name the bind and the setting: %r" % r.status)
                expect_status(c.request("COMMIT"), "+OK changes=0")
            eq(items(pg, db), [["1", "alone"], ["2", "b"]], "items")
            eq(test1(d), [(1, "a")], "test1")


def test_xact_pg_first_statement_spans_binds():
    """BEGIN, then a statement joining SQLite and PostgreSQL first: both
    join the transaction."""
    with setup() as (pg, db, db2, d):
        c = d.connect()
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'red')"))
        expect_ok(c.request("BEGIN"))
        expect_status(c.request("INSERT INTO items (id, color) SELECT id, color FROM test1"), "+OK changes=1")
        expect_ok(c.request("UPDATE test1 SET color = 'RED'"))
        expect_rows(c.request("SELECT items.color, test1.color FROM items JOIN test1 USING (id)"), [["red", "RED"]])
        eq(items(pg, db), [], "before COMMIT")
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["1", "red"]], "items")
        eq(test1(d), [(1, "RED")], "test1")
        eq(prepared(pg, db, db2), [], "no prepared transaction left")


def test_xact_pg_part_ended_or_aborted_refuses_commit():
    with setup() as (pg, db, db2, d):
        c = d.connect()
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'old')"))
        # A PostgreSQL error aborts that part: PostgreSQL would answer the
        # COMMIT with a silent ROLLBACK, so the whole COMMIT is refused.
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (2, 'a')"))
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (1, 'a')"))
        expect_err(c.request("INSERT INTO items (id, color) VALUES (1, 'dup')"), "CONSTRAINT")
        r = expect_err(c.request("COMMIT"), "XACT")
        if "bind pg" not in r.err_msg:
            raise TestFailure("the refusal does not name the bind: %r" % r.status)
        eq(items(pg, db), [], "items")
        eq(test1(d), [(1, "old")], "test1")
        # ... unless ROLLBACK TO a savepoint before the error undid it.
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (2, 'a')"))
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (1, 'a')"))
        expect_ok(c.request("SAVEPOINT s"))
        expect_err(c.request("INSERT INTO items (id, color) VALUES (1, 'dup')"), "CONSTRAINT")
        expect_ok(c.request("ROLLBACK TO SAVEPOINT s"))
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["1", "a"]], "items")
        eq(test1(d), [(1, "old"), (2, "a")], "test1")
        # SQLite ends its own part (a conflict clause ROLLBACK): the rest of
        # the transaction cannot commit without it.
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (5, 'b')"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (5, 'b')"))
        expect_err(c.request("INSERT OR ROLLBACK INTO test1 (id, color) VALUES (5, 'again')"), "CONSTRAINT")
        r = expect_err(c.request("INSERT INTO items (id, color) VALUES (6, 'c')"), "XACT")
        if "bind default" not in r.err_msg:
            raise TestFailure("the error does not name the bind: %r" % r.status)
        expect_err(c.request("COMMIT"), "XACT")
        eq(items(pg, db), [["1", "a"]], "items")
        eq(prepared(pg, db, db2), [], "no prepared transaction left")
        expect_ok(c.request("INSERT INTO items (id, color) VALUES (5, 'after')"))


def test_xact_pg_grants():
    from test_auth import auth_daemon, login
    pg = shared()
    with pg.database() as db:
        pg.psql([ITEMS], db=db, user=USER)
        grants = {"bob": ["grant.default = read-write", "grant.pg = read", "grant.second_db = read-write"],
                  "carol": ["grant.default = read-write"]}
        binds = [("pg", pg.url(db=db))]
        with auth_daemon(grants, binds=list(harness.DEFAULT_BINDS) + binds,
                         tables=list(harness.DEFAULT_TABLES) + [("items", "pg")]) as d:
            bob = login(d, "bob")
            expect_ok(bob.request("BEGIN"))
            expect_ok(bob.request("INSERT INTO test1 (id, color) VALUES (1, 'a')"))
            expect_rows(bob.request("SELECT count(*) FROM items"), [["0"]])
            r = expect_err(bob.request("INSERT INTO items (id, color) SELECT id, color FROM test1"), "NOPERM")
            if "bind pg" not in r.err_msg:
                raise TestFailure("NOPERM does not name the bind: %r" % r.status)
            expect_ok(bob.request("INSERT INTO test2 (id, color) SELECT id, color FROM items"))
            expect_ok(bob.request("COMMIT"))
            eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(0,)], "test2")
            # A write PostgreSQL refused (the read-only transaction) aborts
            # that part: the COMMIT is refused, nothing is committed.
            expect_ok(bob.request("BEGIN"))
            expect_ok(bob.request("INSERT INTO test1 (id, color) VALUES (3, 'c')"))
            expect_err(bob.request("INSERT INTO items (id, color) VALUES (1, 'no')"), "NOPERM")
            expect_err(bob.request("COMMIT"), "XACT")
            eve = login(d, "carol")
            expect_ok(eve.request("BEGIN"))
            expect_ok(eve.request("INSERT INTO test1 (id, color) VALUES (2, 'b')"))
            r = expect_err(eve.request("SELECT * FROM items"), "NOPERM")
            if "bind pg" not in r.err_msg:
                raise TestFailure("NOPERM does not name the bind: %r" % r.status)
            expect_err(eve.request("SELECT * FROM test1 JOIN items USING (id)"), "NOPERM")
            expect_ok(eve.request("COMMIT"))
            eq(test1(d), [(1, "a"), (2, "b")], "test1")
            eq(pg.psql("SELECT count(*) FROM items", db=db), [["0"]], "items")


def test_xact_pg_deadlock_across_postgresql_binds_ends():
    """Two transactions each hold a row in one PostgreSQL bind and wait
    for the other's in the other bind: no server sees the cycle; the
    participants' lock_timeout (the SQLite binds' busy_timeout) ends it."""
    fast = dict((b, {"busy_timeout": "800"}) for b in ("default", "second_db", "memory_db"))
    with setup(bind_opts=fast) as (pg, db, db2, d):
        pg.psql(["INSERT INTO items VALUES (1, 'x')"], db=db, user=USER)
        pg.psql(["INSERT INTO ledger VALUES (1, 0)"], db=db2, user=USER)
        a, b = d.connect(), d.connect()
        expect_ok(a.request("BEGIN"))
        expect_ok(a.request("UPDATE items SET color = 'a' WHERE id = 1"))
        expect_ok(b.request("BEGIN"))
        expect_ok(b.request("UPDATE ledger SET amount = 2 WHERE id = 1"))
        t0 = time.time()
        a.send("UPDATE ledger SET amount = 1 WHERE id = 1\n")
        time.sleep(0.2)
        b.send("UPDATE items SET color = 'b' WHERE id = 1\n")
        ra = a.read_response()
        expect_ok(a.request("ROLLBACK"))
        rb = b.read_response()
        took = time.time() - t0
        if ra.ok and rb.ok:
            raise TestFailure("both statements of the cycle succeeded")
        if ra.ok or ra.err_code != "BUSY" or "(SQLSTATE 55P03)" not in ra.err_msg:
            raise TestFailure("the first waiter's error is not the lock timeout: %r" % ra.status)
        if took > 10:
            raise TestFailure("the cycle took %.1f s to end" % took)
        expect_ok(b.request("ROLLBACK"))
        eq(items(pg, db), [["1", "x"]], "items")
        eq(ledger(pg, db2), [["1", "0"]], "ledger")


def test_xact_pg_client_gone_during_commit():
    """A client that disconnects while its COMMIT's PREPARE waits for a lock
    (a deferred unique check waiting for another transaction): the commit
    goes on to its end on its own; nothing stays prepared, both binds have
    it, the connections are back in the pool."""
    import subprocess
    with setup() as (pg, db, db2, d):
        pg.psql(["CREATE TABLE tags (name text, UNIQUE (name) DEFERRABLE INITIALLY DEFERRED)"], db=db, user=USER)
        c = d.connect()
        pgfixture.wait_for(lambda: c.request("SELECT count(*) FROM tags").ok, 10, "tags routed")
        blocker = subprocess.Popen([pgfixture.PSQL, "-h", pg.dir, "-p", str(pg.port), "-U", USER, "-d", db,
                                    "-c", "BEGIN; INSERT INTO tags VALUES ('k'); SELECT pg_sleep(2); ROLLBACK"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            pgfixture.wait_for(lambda: pg.value("SELECT count(*) FROM pg_locks l JOIN pg_database d ON "
                                                "d.oid = l.database WHERE d.datname = '%s' AND l.mode = "
                                                "'RowExclusiveLock'" % db, db="postgres") != "0", 10,
                               "the blocker holds its row")
            expect_ok(c.request("BEGIN"))
            expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'gone')"))
            expect_ok(c.request("INSERT INTO tags (name) VALUES ('k')"))
            c.send("COMMIT\n")
            time.sleep(0.5)
            c.close()
        finally:
            blocker.wait(timeout=30)
        pgfixture.wait_for(lambda: pg.psql("SELECT count(*) FROM tags", db=db) == [["1"]], 10, "tags committed")
        eq(test1(d), [(1, "gone")], "test1 committed with it")
        eq(prepared(pg, db, db2), [], "no prepared transaction left")
        c2 = d.connect()
        for _ in range(6):
            expect_rows(c2.request("SELECT count(*) FROM tags"), [["1"]])
