"""A held BEGIN (README, Routing) is used up by the first statement after it,
whether or not that statement names a table: one that names none
(SELECT now(), a transaction-scoped lock) starts the transaction on the
session's bind instead of running outside it."""

import time

from harness import eq, expect_err, expect_ok, expect_rows, expect_status
from pgfixture import create_accounts, pg_daemon, shared
from test_txn_safety import count, expect_in_txn


def test_statement_naming_no_table_starts_held_transaction(d):
    a, admin = d.connect(), d.connect()
    expect_status(a.request("BEGIN"), "+OK changes=0")
    expect_in_txn(admin, a, False, "a held BEGIN")
    expect_rows(a.request("SELECT 1 AS one"), [["1"]])
    expect_in_txn(admin, a, True, "BEGIN; SELECT 1")
    eq(a.request(".use").facts, {"bind": "default", "txn": "1"}, ".use after BEGIN; SELECT 1")
    expect_ok(a.request("INSERT INTO test1 (color) VALUES ('undone')"))
    expect_ok(a.request("ROLLBACK"))
    expect_in_txn(admin, a, False, "ROLLBACK")
    eq(count(admin, "test1", "undone"), 0, "rows of the rolled-back transaction")
    # The transaction is on the session's bind now: another SQLite bind's
    # table joins it (issue 16), and it stays open.
    expect_status(a.request("BEGIN"), "+OK changes=0")
    expect_rows(a.request("SELECT 2 AS two"), [["2"]])
    expect_ok(a.request("INSERT INTO test2 (color) VALUES ('elsewhere')"))
    expect_in_txn(admin, a, True, "after a statement for another bind")
    expect_ok(a.request("COMMIT"))
    # On the bind chosen with .use.
    expect_ok(a.request(".use memory_db"))
    expect_status(a.request("BEGIN"), "+OK changes=0")
    expect_rows(a.request("SELECT 3 AS three"), [["3"]])
    expect_ok(a.request("INSERT INTO test3 (color) VALUES ('kept')"))
    expect_ok(a.request("COMMIT"))
    eq(count(admin, "test3", "kept"), 1, "rows committed on memory_db")


def test_pg_now_and_xact_lock_inside_held_transaction():
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db)
        with pg_daemon(pg, db) as d:
            a, b, admin = d.connect(), d.connect(), d.connect()
            expect_ok(a.request(".use pg"))
            expect_ok(b.request(".use pg"))
            # now() is the transaction's start time: the same for every
            # statement inside it, whatever came before.
            expect_status(a.request("BEGIN"), "+OK changes=0")
            first = expect_ok(a.request("SELECT now()::text AS t")).rows[0][0]
            time.sleep(0.05)
            expect_ok(a.request("SELECT count(*) FROM accounts"))
            second = expect_ok(a.request("SELECT now()::text AS t")).rows[0][0]
            eq(second, first, "now() inside BEGIN; SELECT now(); ...")
            expect_in_txn(admin, a, True, "BEGIN; SELECT now()")
            expect_ok(a.request("COMMIT"))
            # A transaction-scoped advisory lock lasts until COMMIT.
            expect_status(a.request("BEGIN"), "+OK changes=0")
            expect_ok(a.request("SELECT pg_advisory_xact_lock(4221)"))
            expect_rows(b.request("SELECT pg_try_advisory_xact_lock(4221) AS got"), [["f"]])
            expect_ok(a.request("COMMIT"))
            expect_rows(b.request("SELECT pg_try_advisory_xact_lock(4221) AS got"), [["t"]])
