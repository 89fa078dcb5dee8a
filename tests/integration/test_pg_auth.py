"""Read-only grants on a PostgreSQL bind: the statement runs in a
transaction PostgreSQL keeps read-only (BEGIN READ ONLY around a single
statement, and a lock that takes the snapshot inside the client's own
transactions), so no statement, function, procedure or setting a
read-only user sends can write. Users and .auth are in test_auth.py."""

import os

import harness
from harness import TestFailure, eq, expect_err, expect_ok, expect_rows, expect_status
from pgfixture import USER, create_accounts, shared
from test_auth import PASSWORDS, login, users_text


def _pg_auth_daemon(pg, db):
    binds = list(harness.DEFAULT_BINDS) + [("pg", pg.url(db=db))]
    tables = list(harness.DEFAULT_TABLES) + [("accounts", "pg"), ("audit", "pg"), ("t_new", "pg")]
    env = dict((k, None) for k in os.environ if k.startswith("PG"))
    grants = {
        "alice": ["admin = on", "grant.* = read-write"],
        "carol": ["grant.* = read"],
    }
    cfg = harness.make_config(binds=binds, tables=tables, server={"auth_fail_delay": "100"})
    return harness.Daemon(config=cfg + users_text(grants), env=env)


def _refused(c, sql):
    r = c.bulk(sql)
    if r.ok or r.err_code not in ("NOPERM", "SQL"):
        raise TestFailure("%s: want -ERR NOPERM (or SQL for what cannot run in a read-only "
                          "transaction at all), got %r" % (sql, r.status))
    return r


def test_pg_read_only_user_cannot_write():
    pg = shared()
    with pg.database() as db, _pg_auth_daemon(pg, db) as d:
        create_accounts(pg, db, rows=("ann",))
        pg.psql(["CREATE TABLE audit (what text)",
                 "CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS "
                 "'UPDATE accounts SET balance = balance + 1 RETURNING 1'",
                 "CREATE PROCEDURE sneak() LANGUAGE plpgsql AS $$ BEGIN COMMIT; "
                 "INSERT INTO audit VALUES ('procedure'); END $$"], db=db, user=USER)
        alice = login(d, "alice")
        carol = login(d, "carol")
        expect_rows(carol.request("SELECT name FROM accounts"), [["ann"]])
        expect_ok(carol.request(".use pg"))   # for statements that name no table
        plain = [
            "INSERT INTO accounts (name) VALUES ('no')",
            "UPDATE accounts SET balance = 1",
            "DELETE FROM accounts",
            "WITH x AS (INSERT INTO audit VALUES ('cte') RETURNING what) SELECT * FROM x",
            "WITH x AS (DELETE FROM accounts RETURNING id) SELECT count(*) FROM x",
            "SELECT bump()",
            "SELECT nextval('accounts_id_seq')",
            "CREATE TABLE t_new (a int)",
            "ALTER TABLE accounts ADD COLUMN extra int",
            "DROP TABLE audit",
            "TRUNCATE audit",
            "CREATE INDEX ON accounts (balance)",
            "CALL sneak()",
            "DO $$ BEGIN INSERT INTO audit VALUES ('do'); END $$",
            "DO $$ BEGIN COMMIT; INSERT INTO audit VALUES ('do commit'); END $$",
            "VACUUM accounts",
        ]
        for sql in plain:
            r = _refused(carol, sql)
            if sql.split()[0] in ("INSERT", "UPDATE", "DELETE", "WITH", "SELECT", "CREATE", "DROP"):
                eq(r.err_code, "NOPERM", sql)
                if "read-only" not in r.err_msg:
                    raise TestFailure("%s: want a read-only message, got %r" % (sql, r.err_msg))
        # Settings that would make a later statement read-write.
        escapes = [
            ["SET TRANSACTION READ WRITE", "INSERT INTO audit VALUES ('set rw')"],
            ["SET default_transaction_read_only = off", "INSERT INTO audit VALUES ('default off')"],
            ["SELECT set_config('default_transaction_read_only', 'off', false)",
             "INSERT INTO audit VALUES ('set_config')"],
            ["SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "INSERT INTO audit VALUES ('chars')"],
            ["BEGIN READ WRITE", "INSERT INTO audit VALUES ('begin rw')", "COMMIT"],
            ["START TRANSACTION READ WRITE", "INSERT INTO audit VALUES ('start rw')", "COMMIT"],
            ["BEGIN", "SET TRANSACTION READ WRITE", "INSERT INTO audit VALUES ('in txn')", "COMMIT"],
            ["BEGIN", "SELECT set_config('transaction_read_only', 'off', true)",
             "INSERT INTO audit VALUES ('in txn set_config')", "COMMIT"],
            ["BEGIN", "SELECT 1 FROM accounts", "COMMIT AND CHAIN", "SET TRANSACTION READ WRITE",
             "INSERT INTO audit VALUES ('chain')", "COMMIT"],
            ["BEGIN", "SAVEPOINT s", "SELECT 1 FROM accounts", "ROLLBACK TO SAVEPOINT s",
             "SET TRANSACTION READ WRITE", "INSERT INTO audit VALUES ('savepoint')", "COMMIT"],
        ]
        for steps in escapes:
            for sql in steps:
                carol.bulk(sql)
            # Whatever state that left: end it.
            carol.request("ROLLBACK")
        eq(pg.psql("SELECT count(*) FROM audit", db=db), [["0"]], "audit stayed empty")
        eq(pg.psql("SELECT name, balance FROM accounts", db=db), [["ann", "0.00"]], "accounts unchanged")
        eq(pg.psql("SELECT count(*) FROM pg_tables WHERE tablename = 't_new'", db=db), [["0"]], "no table")
        # Reads work, alone and in transactions, and the connections stay
        # good for a read-write user.
        expect_status(carol.request("BEGIN"), "+OK changes=0")
        expect_rows(carol.request("SELECT name FROM accounts"), [["ann"]])
        expect_rows(carol.bulk("SELECT count(*) FROM accounts WHERE name = ?", ["ann"]), [["1"]])
        expect_ok(carol.request("COMMIT"))
        expect_rows(carol.bulk("SELECT name FROM accounts WHERE balance = ?", [0]), [["ann"]])
        for _ in range(4):
            expect_status(alice.request("INSERT INTO audit VALUES ('alice')"), "+OK changes=1")
        expect_status(alice.request("BEGIN"), "+OK changes=0")
        expect_ok(alice.request("UPDATE accounts SET balance = 5"))
        expect_ok(alice.request("COMMIT"))
        eq(pg.psql("SELECT count(*) FROM audit", db=db), [["4"]], "alice's rows")
        eq(pg.psql("SELECT balance FROM accounts", db=db), [["5.00"]], "alice's update")
        # A read-only write inside a transaction aborts it, as PostgreSQL does.
        expect_status(carol.request("BEGIN"), "+OK changes=0")
        expect_rows(carol.request("SELECT balance FROM accounts"), [["5.00"]])
        expect_err(carol.request("UPDATE accounts SET balance = 0"), "NOPERM")
        expect_err(carol.request("SELECT 1 FROM accounts"), "SQL")
        expect_ok(carol.request("ROLLBACK"))
        expect_rows(carol.request("SELECT balance FROM accounts"), [["5.00"]])
