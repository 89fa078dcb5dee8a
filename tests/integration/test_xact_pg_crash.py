"""The daemon killed in the middle of a COMMIT with PostgreSQL parts
(SQLMUX_XACT_CRASH, daemon/session_xact.c): after every PREPARE TRANSACTION
and before the decision ("pg_prepared") nothing of the transaction remains
after the restart; after the decision and before COMMIT PREPARED
("pg_decided") all of it is there, in every bind; no prepared transaction
is left either way. With a SQLite home (the decision in its commit) and
with PostgreSQL binds only (the decision in the coordinator log)."""

import signal

from harness import TestFailure, eq, expect_ok, scaled
from pgfixture import wait_for
from test_xact_pg import items, ledger, prepared, setup, test1


def _crash(step, statements, committed):
    with setup(env={"SQLMUX_XACT_CRASH": step}) as (pg, db, db2, d):
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        for sql in statements:
            expect_ok(c.request(sql))
        c.send("COMMIT\n")
        try:
            r = c.read_response()
        except Exception:  # the connection dies with the daemon
            r = None
        d.proc.wait(timeout=scaled(20))
        if d.proc.returncode != -signal.SIGKILL:
            raise TestFailure("the daemon was not killed at %s (exit %s, answer %r)" % (step, d.proc.returncode, r))
        if step == "pg_prepared" and not prepared(pg, db, db2):
            raise TestFailure("killed at pg_prepared with no prepared transaction")
        d.env = dict((k, v) for k, v in d.env.items() if k != "SQLMUX_XACT_CRASH")
        d.start()
        wait_for(lambda: prepared(pg, db, db2) == [], 20, "the prepared parts resolved after the restart")
        touched = dict(test1=any("test1" in s for s in statements), items=any("items" in s for s in statements),
                       ledger=any("ledger" in s for s in statements))
        eq(test1(d), [(1, "one")] if committed and touched["test1"] else [], "test1 after %s" % step)
        eq(items(pg, db), [["1", "uno"]] if committed and touched["items"] else [], "items after %s" % step)
        eq(ledger(pg, db2), [["1", "1"]] if committed and touched["ledger"] else [], "ledger after %s" % step)
        # The binds take new transactions across binds.
        expect_ok(d.connect().request("SELECT count(*) FROM items"))


SQLITE_HOME = ["INSERT INTO test1 (id, color) VALUES (1, 'one')", "INSERT INTO items (id, color) VALUES (1, 'uno')",
               "INSERT INTO ledger (id, amount) VALUES (1, 1)"]
PG_ONLY = ["INSERT INTO items (id, color) VALUES (1, 'uno')", "INSERT INTO ledger (id, amount) VALUES (1, 1)"]


def test_xact_pg_crash_prepared_sqlite_home():
    _crash("pg_prepared", SQLITE_HOME, False)


def test_xact_pg_crash_decided_sqlite_home():
    _crash("pg_decided", SQLITE_HOME, True)


def test_xact_pg_crash_prepared_postgresql_only():
    _crash("pg_prepared", PG_ONLY, False)


def test_xact_pg_crash_decided_postgresql_only():
    _crash("pg_decided", PG_ONLY, True)
