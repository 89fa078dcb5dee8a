"""A transaction across a SQLite and a PostgreSQL bind leaves its
PostgreSQL connection clean without a DISCARD ALL: what the daemon sends
itself (the BEGIN with its SET LOCAL lock_timeout, PREPARE TRANSACTION,
COMMIT PREPARED) changes nothing past the transaction. A client's own
session change inside such a transaction still gets its DISCARD ALL, so
nobody else inherits it (daemon/pg_exec.c, pg_conn_result)."""

import re

from harness import TestFailure, eq, expect_ok, expect_rows, expect_status
from pgfixture import USER
from test_xact_pg import items, log_statements, prepared, setup, test1


def sent_to(pg, db, mark):
    """The statements of database db in the server log since mark."""
    return [line for line in pg.log_text()[mark:].splitlines() if "@%s " % db in line and "statement:" in line
            or "@%s " % db in line and "execute" in line]


def two_phase_commit(c, n):
    expect_ok(c.request("BEGIN"))
    expect_status(c.request("INSERT INTO test1 (id, color) VALUES (%d, 'sq')" % n),
                  "+OK changes=1 last_id=%d" % n)
    expect_status(c.request("INSERT INTO items (id, color) VALUES (%d, 'pg')" % n), "+OK changes=1")
    expect_status(c.request("COMMIT"), "+OK changes=0")


def test_xact_pg_commit_sends_no_discard_all():
    with setup() as (pg, db, db2, d):
        c = d.connect()
        two_phase_commit(c, 1)  # the pool's connection is open and known
        mark = len(pg.log_text())
        for n in range(2, 5):
            two_phase_commit(c, n)
        lines = sent_to(pg, db, mark)
        if sum("PREPARE TRANSACTION 'sqlmux_" in line for line in lines) != 3:
            raise TestFailure("expected 3 two-phase commits in the log:\n%s" % "\n".join(lines))
        discards = [line for line in lines if "DISCARD ALL" in line]
        if discards:
            raise TestFailure("the daemon's own statements made it reset the connection:\n%s"
                              % "\n".join(discards))
        eq(items(pg, db), [[str(n), "pg"] for n in range(1, 5)], "PostgreSQL rows")
        eq(test1(d), [(n, "sq") for n in range(1, 5)], "SQLite rows")
        eq(prepared(pg, db, db2), [], "no prepared transaction left")


def test_xact_pg_client_session_change_is_reset():
    with setup() as (pg, db, db2, d):
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_status(c.request("INSERT INTO test1 (id, color) VALUES (1, 'sq')"), "+OK changes=1 last_id=1")
        expect_status(c.request("INSERT INTO items (id, color) VALUES (1, 'pg')"), "+OK changes=1")
        # A session-level setting, made inside the transaction on the
        # PostgreSQL participant: it outlives the transaction.
        mark = len(pg.log_text())
        expect_rows(c.request("SELECT set_config('application_name', 'leaked', false) FROM items"), [["leaked"]])
        expect_status(c.request("COMMIT"), "+OK changes=0")
        lines = sent_to(pg, db, mark)
        if not any("DISCARD ALL" in line for line in lines):
            raise TestFailure("a client's SET was not reset:\n%s" % "\n".join(lines))
        # Every connection of the pool says the default now.
        others = [d.connect() for _ in range(3)]
        for o in others:
            expect_ok(o.request(".use pg"))
            expect_ok(o.request("BEGIN"))
        for o in others:
            r = o.request("SHOW application_name")
            if r.rows and r.rows[0][0] == "leaked":
                raise TestFailure("another client got the leaked setting")
        for o in others:
            expect_ok(o.request("ROLLBACK"))
        expect_rows(c.request("SELECT color FROM items"), [["pg"]])
        eq(test1(d), [(1, "sq")], "SQLite rows")


