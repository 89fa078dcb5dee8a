"""Every option of a BEGIN reaches the database (README, Transactions): the
daemon holds a BEGIN until the statement that decides its bind, and then
starts the transaction with the client's own words, so an isolation level,
READ ONLY or DEFERRABLE, given on the BEGIN or by a SET TRANSACTION as the
first statement, is the transaction's (PostgreSQL); SQLite's BEGIN
DEFERRED / IMMEDIATE / EXCLUSIVE keep their locking meaning.

These came from SQLAlchemy's PostgreSQL compliance suite
(IsolationLevelTest), whose transactions ended up at read committed."""

import sqlite3

from harness import eq, expect_err, expect_ok, expect_rows, expect_status
from pgfixture import create_accounts, pg_daemon, shared


def _show(conn, name):
    return expect_ok(conn.request("SHOW " + name)).rows[0][0]


def _txn_settings(conn):
    return (_show(conn, "transaction_isolation"), _show(conn, "transaction_read_only"),
            _show(conn, "transaction_deferrable"))


# (statements that open the transaction, what SHOW says inside it)
PG_CASES = [
    (["BEGIN"], ("read committed", "off", "off")),
    (["BEGIN ISOLATION LEVEL SERIALIZABLE"], ("serializable", "off", "off")),
    (["BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ"], ("repeatable read", "off", "off")),
    (["begin work isolation level read uncommitted"], ("read uncommitted", "off", "off")),
    (["START TRANSACTION ISOLATION LEVEL SERIALIZABLE"], ("serializable", "off", "off")),
    (["BEGIN READ ONLY"], ("read committed", "on", "off")),
    (["BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"], ("serializable", "on", "on")),
    (["START TRANSACTION READ ONLY ISOLATION LEVEL REPEATABLE READ"], ("repeatable read", "on", "off")),
    (["BEGIN", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"], ("serializable", "off", "off")),
    (["BEGIN", "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"], ("repeatable read", "on", "off")),
    (["BEGIN", "SET TRANSACTION READ ONLY"], ("read committed", "on", "off")),
    (["START TRANSACTION", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"],
     ("serializable", "on", "on")),
]


def test_pg_begin_options_reach_postgresql():
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db)
        with pg_daemon(pg, db) as d:
            a = d.connect()
            expect_ok(a.request(".use pg"))
            for opening, want in PG_CASES:
                what = "; ".join(opening)
                for sql in opening:
                    r = a.request(sql)
                    if not r.ok:
                        raise AssertionError("%s: %r" % (what, r))
                eq(_txn_settings(a), want, "SHOW inside %s" % what)
                eq(a.request(".use").facts.get("txn"), "1", ".use txn inside %s" % what)
                expect_ok(a.request("ROLLBACK"))
            # The first statement decides the bind and the transaction is
            # the one the BEGIN asked for, whatever that statement is.
            expect_status(a.request("BEGIN ISOLATION LEVEL REPEATABLE READ"), "+OK changes=0")
            expect_ok(a.request("SELECT count(*) FROM accounts"))
            eq(_show(a, "transaction_isolation"), "repeatable read", "isolation after a table read")
            expect_ok(a.request("ROLLBACK"))
            # READ ONLY is enforced by PostgreSQL, and a serializable
            # transaction sees one snapshot.
            expect_status(a.request("BEGIN READ ONLY"), "+OK changes=0")
            r = a.request("INSERT INTO accounts (name) VALUES ('no')")
            expect_err(r, "READONLY")
            expect_ok(a.request("ROLLBACK"))
            b = d.connect()
            expect_ok(b.request(".use pg"))
            expect_status(a.request("BEGIN ISOLATION LEVEL REPEATABLE READ"), "+OK changes=0")
            expect_rows(a.request("SELECT count(*) FROM accounts"), [["0"]])
            expect_ok(b.request("INSERT INTO accounts (name) VALUES ('later')"))
            expect_rows(a.request("SELECT count(*) FROM accounts"), [["0"]])
            expect_ok(a.request("COMMIT"))
            expect_rows(a.request("SELECT count(*) FROM accounts"), [["1"]])
            # After COMMIT the next transaction is a default one again.
            expect_status(a.request("BEGIN"), "+OK changes=0")
            eq(_txn_settings(a), ("read committed", "off", "off"), "SHOW inside a later BEGIN")
            expect_ok(a.request("ROLLBACK"))
test_pg_begin_options_reach_postgresql.timeout = 60


def _can_take_write_lock(path):
    """Whether a connection of its own (the sqlite3 module, no wait) can
    take the file's write lock now."""
    db = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as e:
        if "locked" not in str(e):
            raise
        return False
    finally:
        db.close()


def test_sqlite_begin_kinds_keep_their_locking(d):
    a = d.connect()
    path = d.db_path("app.db")
    # (BEGIN, holds the write lock after a read inside it)
    for begin, locks in (("BEGIN", False), ("BEGIN DEFERRED", False), ("BEGIN DEFERRED TRANSACTION", False),
                         ("BEGIN IMMEDIATE", True), ("begin immediate transaction", True),
                         ("BEGIN EXCLUSIVE", True)):
        expect_status(a.request(begin), "+OK changes=0")
        expect_ok(a.request("SELECT count(*) FROM test1"))
        eq(_can_take_write_lock(path), not locks, "another writer after %s; SELECT" % begin)
        expect_ok(a.request("ROLLBACK"))
        eq(_can_take_write_lock(path), True, "another writer after %s ... ROLLBACK" % begin)
