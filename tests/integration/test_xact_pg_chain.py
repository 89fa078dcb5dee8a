"""COMMIT AND CHAIN and ROLLBACK AND CHAIN of a transaction across a
SQLite and a PostgreSQL bind: the transaction ends on every participant
and a new one, begun as the first was, is open at once (each bind joins it
at its first statement), as PostgreSQL does for its own transactions.
Before, the participants got a plain COMMIT and the session was left
outside any transaction: the client's next writes committed one by one and
its ROLLBACK undid nothing (daemon/session_xact.c, and_chain)."""

from harness import eq, expect_ok, expect_rows, expect_status
from test_xact_pg import items, prepared, setup, test1


def write_both(c, n):
    expect_status(c.request("INSERT INTO items (id, color) VALUES (%d, 'pg')" % n), "+OK changes=1")
    expect_status(c.request("INSERT INTO test1 (id, color) VALUES (%d, 'sq')" % n), "+OK changes=1 last_id=%d" % n)


def test_xact_pg_commit_and_chain_opens_the_next_transaction():
    with setup() as (pg, db, db2, d):
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        write_both(c, 1)
        expect_status(c.request("COMMIT AND CHAIN"), "+OK changes=0")
        eq(items(pg, db), [["1", "pg"]], "PostgreSQL after COMMIT AND CHAIN")
        eq(test1(d), [(1, "sq")], "SQLite after COMMIT AND CHAIN")
        # Inside the chained transaction: nobody else sees these.
        write_both(c, 2)
        eq(items(pg, db), [["1", "pg"]], "PostgreSQL during the chained transaction")
        eq(test1(d), [(1, "sq")], "SQLite during the chained transaction")
        expect_status(c.request("ROLLBACK"), "+OK changes=0")
        eq(items(pg, db), [["1", "pg"]], "PostgreSQL after ROLLBACK")
        eq(test1(d), [(1, "sq")], "SQLite after ROLLBACK")
        # A chain of three, the last one committed.
        expect_ok(c.request("BEGIN"))
        write_both(c, 3)
        expect_status(c.request("commit   and /* a comment */ chain ;"), "+OK changes=0")
        write_both(c, 4)
        expect_status(c.request("END AND CHAIN"), "+OK changes=0")
        write_both(c, 5)
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [[str(n), "pg"] for n in (1, 3, 4, 5)], "PostgreSQL at the end")
        eq(test1(d), [(n, "sq") for n in (1, 3, 4, 5)], "SQLite at the end")
        eq(prepared(pg, db, db2), [], "no prepared transaction left")


def test_xact_pg_rollback_and_chain():
    with setup() as (pg, db, db2, d):
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        write_both(c, 1)
        expect_status(c.request("ROLLBACK AND CHAIN"), "+OK changes=0")
        write_both(c, 2)
        eq(items(pg, db), [], "PostgreSQL inside the chained transaction")
        expect_status(c.request("COMMIT"), "+OK changes=0")
        eq(items(pg, db), [["2", "pg"]], "PostgreSQL")
        eq(test1(d), [(2, "sq")], "SQLite")


def test_xact_pg_chain_keeps_the_begin_and_no_chain_ends():
    with setup() as (pg, db, db2, d):
        c = d.connect()
        expect_ok(c.request(".use pg"))
        expect_ok(c.request("BEGIN ISOLATION LEVEL SERIALIZABLE"))
        write_both(c, 1)
        expect_status(c.request("COMMIT AND CHAIN"), "+OK changes=0")
        expect_rows(c.request("SHOW transaction_isolation"), [["serializable"]])
        write_both(c, 2)
        expect_status(c.request("COMMIT AND NO CHAIN"), "+OK changes=0")
        # No transaction now: a write is committed when answered.
        write_both(c, 3)
        eq(items(pg, db), [[str(n), "pg"] for n in (1, 2, 3)], "PostgreSQL")
        eq(test1(d), [(n, "sq") for n in (1, 2, 3)], "SQLite")
