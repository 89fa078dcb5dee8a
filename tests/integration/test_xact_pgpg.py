"""Statements across PostgreSQL binds only inside a transaction (README,
"Transactions across binds"): they run on an SQLite home (the
transaction's, else one picked read-only) with the PostgreSQL
participants' connections lent, so they see the transaction's uncommitted
writes, and commit or roll back with it."""

import contextlib
import os

import harness
from harness import eq, expect_err, expect_ok, expect_rows, expect_status
from pgfixture import USER, shared
from test_auth import login, users_text
from test_xact_pg import LEDGER, ITEMS, items, ledger, log_statements, prepared, setup

JOIN = "SELECT i.color, l.amount FROM items i JOIN ledger l USING (id) ORDER BY id"
COPY = "INSERT INTO items (id, color) SELECT id, 'from ledger' FROM ledger WHERE amount > 0"


def test_xact_pgpg_join_sees_uncommitted_write():
    with setup() as (pg, db, db2, d):
        pg.psql(["INSERT INTO ledger VALUES (1, 10), (2, 20)"], db=db2)
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        # The transaction begins on a PostgreSQL bind: no SQLite statement.
        expect_status(c.request("INSERT INTO items (id, color) VALUES (1, 'uno')"), "+OK changes=1")
        expect_status(c.request(".route " + JOIN), "+OK bind=*")
        expect_rows(c.request(JOIN), [["uno", "10"]])
        expect_status(c.request("UPDATE ledger SET amount = 11 WHERE id = 1"), "+OK changes=1")
        expect_rows(c.request(JOIN), [["uno", "11"]])
        eq(items(pg, db), [], "items before COMMIT")
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["1", "uno"]], "items after COMMIT")
        eq(ledger(pg, db2), [["1", "11"], ["2", "20"]], "ledger after COMMIT")
        eq(prepared(pg, db, db2), [], "no prepared transaction left")
        # The lent connections went back: the pool serves as before.
        expect_rows(c.request(JOIN), [["uno", "11"]])


def test_xact_pgpg_insert_select_commit_and_rollback():
    with setup() as (pg, db, db2, d):
        pg.psql(["INSERT INTO ledger VALUES (1, 10), (2, -3), (3, 30)"], db=db2)
        c = d.connect()
        # The first statement after BEGIN spans the two PostgreSQL binds.
        expect_ok(c.request("BEGIN"))
        expect_status(c.request(".route " + COPY), "+OK bind=*")
        expect_status(c.request(COPY), "+OK changes=2")
        expect_rows(c.request("SELECT id, color FROM items ORDER BY id"),
                    [["1", "from ledger"], ["3", "from ledger"]])
        eq(items(pg, db), [], "items before ROLLBACK")
        expect_status(c.request("ROLLBACK"), "+OK changes=0")
        eq(items(pg, db), [], "items after ROLLBACK")
        eq(prepared(pg, db, db2), [], "no prepared transaction left after ROLLBACK")
        # Again, inside a transaction that wrote ledger first, with a
        # savepoint each PostgreSQL bind has.
        expect_ok(c.request("BEGIN"))
        expect_status(c.request("INSERT INTO ledger (id, amount) VALUES (4, 40)"), "+OK changes=1")
        expect_ok(c.request("SAVEPOINT s1"))
        expect_status(c.request(COPY), "+OK changes=3")
        expect_ok(c.request("ROLLBACK TO s1"))
        expect_rows(c.request("SELECT count(*) FROM items"), [["0"]])
        expect_status(c.request(COPY), "+OK changes=3")
        eq(items(pg, db), [], "items before COMMIT")
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["1", "from ledger"], ["3", "from ledger"], ["4", "from ledger"]],
           "items after COMMIT")
        eq(ledger(pg, db2), [["1", "10"], ["2", "-3"], ["3", "30"], ["4", "40"]], "ledger after COMMIT")
        eq(prepared(pg, db, db2), [], "no prepared transaction left after COMMIT")
        # The SQLite home picked wrote nothing: nothing there.
        expect_rows(c.request("SELECT count(*) FROM test1"), [["0"]])


@contextlib.contextmanager
def auth_setup(grants):
    """setup()'s binds and tables, with users."""
    pg = shared()
    with pg.database() as db, pg.database() as db2:
        pg.psql([ITEMS], db=db, user=USER)
        pg.psql([LEDGER], db=db2, user=USER)
        binds = list(harness.DEFAULT_BINDS) + [("pg", pg.url(db=db)), ("pg2", pg.url(db=db2))]
        tables = list(harness.DEFAULT_TABLES) + [("items", "pg"), ("ledger", "pg2")]
        env = dict((k, None) for k in os.environ if k.startswith("PG"))
        cfg = harness.make_config(binds=binds, tables=tables)
        with harness.Daemon(config=cfg + users_text(grants), env=env) as d:
            yield pg, db, db2, d


def test_xact_pgpg_home_the_user_may_read_or_none():
    grants = {
        # No access to the .use bind (default): memory_db is the home.
        "bob": ["grant.pg = read-write", "grant.pg2 = read-write", "grant.memory_db = read"],
        # No SQLite bind at all: the statement cannot run in a transaction.
        "carol": ["grant.pg = read-write", "grant.pg2 = read-write"],
    }
    with auth_setup(grants) as (pg, db, db2, d):
        pg.psql(["INSERT INTO ledger VALUES (1, 10)"], db=db2)
        bob = login(d, "bob")
        expect_ok(bob.request("BEGIN"))
        expect_status(bob.request(COPY), "+OK changes=1")
        expect_rows(bob.request(JOIN), [["from ledger", "10"]])
        expect_status(bob.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["1", "from ledger"]], "items after COMMIT")
        eq(prepared(pg, db, db2), [], "no prepared transaction left")

        carol = login(d, "carol")
        expect_rows(carol.request(JOIN), [["from ledger", "10"]])  # outside: the federation pool
        expect_ok(carol.request("BEGIN"))
        expect_status(carol.request("UPDATE items SET color = 'x'"), "+OK changes=1")
        r = expect_err(carol.request(JOIN), "TXNBIND")
        if "may read no SQLite bind" not in r.err_msg:
            raise harness.TestFailure("want the reason in the message, got %r" % r.status)
        expect_err(carol.request(".route " + JOIN), "TXNBIND")
        # The transaction stays open.
        expect_rows(carol.request("SELECT color FROM items"), [["x"]])
        expect_status(carol.request("ROLLBACK"), "+OK changes=0")
        eq(items(pg, db), [["1", "from ledger"]], "items after ROLLBACK")


def test_xact_pgpg_lent_write_is_a_written_participant():
    # A PostgreSQL bind written only through a lent connection counts as
    # written: with the SQLite home written too, COMMIT is two-phase.
    with setup() as (pg, db, db2, d):
        mark = len(pg.log_text())
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_status(c.request("INSERT INTO test1 (id, color) VALUES (5, 'five')"), "+OK changes=1 last_id=5")
        expect_status(c.request("INSERT INTO items (id, color) SELECT id, color FROM test1"), "+OK changes=1")
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["5", "five"]], "items after COMMIT")
        eq(prepared(pg, db, db2), [], "no prepared transaction left")
        sent = pg.log_since(mark, (db, db2))
        if "PREPARE TRANSACTION 'sqlmux_" not in sent:
            raise harness.TestFailure("no two-phase commit in the PostgreSQL log:\n%s" % sent[-3000:])


def test_xact_pgpg_one_sqlite_bind_and_postgresql():
    """The common configuration, app.db and one PostgreSQL database: the
    SQLite bind's connections have no other SQLite bind to attach, and a
    transaction across it and PostgreSQL still works, all or nothing."""
    pg = shared()
    with pg.database() as db:
        pg.psql([ITEMS], db=db, user=USER)
        log_statements(pg, db)
        binds = [("default", "sqlite:///app.db"), ("pg", pg.url(db=db))]
        env = dict((k, None) for k in os.environ if k.startswith("PG"))
        cfg = harness.make_config(binds=binds, tables=[("items", "pg")])
        with harness.Daemon(config=cfg, env=env) as d:
            mark = len(pg.log_text())
            c = d.connect()
            expect_ok(c.request("BEGIN"))
            expect_status(c.request("INSERT INTO test1 (id, color) VALUES (1, 'one')"), "+OK changes=1 last_id=1")
            expect_status(c.request("INSERT INTO items (id, color) VALUES (1, 'uno')"), "+OK changes=1")
            expect_rows(c.request("SELECT t.color, i.color FROM test1 t JOIN items i USING (id)"),
                        [["one", "uno"]])
            expect_status(c.request("INSERT INTO items (id, color) SELECT id + 1, color FROM test1"),
                          "+OK changes=1")
            eq(items(pg, db), [], "items before COMMIT")
            expect_status(c.request("COMMIT"), "+OK changes=0")
            eq(items(pg, db), [["1", "uno"], ["2", "one"]], "items after COMMIT")
            eq("PREPARE TRANSACTION" in pg.log_since(mark, (db,)), True, "two-phase commit")
            eq(prepared(pg, db), [], "no prepared transaction left")
            expect_ok(c.request("BEGIN"))
            expect_status(c.request("INSERT INTO test1 (id, color) VALUES (5, 'five')"), "+OK changes=1 last_id=5")
            expect_status(c.request("INSERT INTO items (id, color) SELECT id, color FROM test1 WHERE id = 5"),
                          "+OK changes=1")
            expect_status(c.request("ROLLBACK"), "+OK changes=0")
            expect_rows(c.request("SELECT count(*) FROM test1"), [["1"]])
            eq(items(pg, db), [["1", "uno"], ["2", "one"]], "items after ROLLBACK")
