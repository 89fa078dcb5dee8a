"""Transaction safety on PostgreSQL binds (issue 13): the session's
transaction state comes from PQtransactionStatus() after every statement;
a transaction whose server connection broke is never continued on another
connection (every later statement gets -ERR CONNLOST until ROLLBACK);
query_wait_timeout and idle_transaction_timeout bound waits for a pool
that open transactions hold; COPY leaves the loop and the connection
usable. The SQLite side is in test_txn_safety.py."""

import socket
import time

from harness import TestFailure, eq, expect_err, expect_ok, expect_rows, expect_status, scaled
from pgfixture import APP_DB, PgCluster, create_accounts, pg_daemon, shared, wait_for
from test_txn_safety import expect_in_txn


def names(pg, db):
    return [r[0] for r in pg.psql("SELECT name FROM accounts ORDER BY id", db=db)]


def test_pg_savepoint_transactions():
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db)
        with pg_daemon(pg, db) as d:
            a, admin = d.connect(), d.connect()
            expect_ok(a.request(".use pg"))
            # BEGIN; SAVEPOINT; COMMIT, then an autocommit INSERT
            expect_status(a.request("BEGIN"), "+OK changes=0")
            expect_ok(a.request("SAVEPOINT sp"))
            expect_in_txn(admin, a, True, "BEGIN; SAVEPOINT")
            expect_ok(a.request("COMMIT"))
            expect_in_txn(admin, a, False, "COMMIT")
            expect_ok(a.request("INSERT INTO accounts (name) VALUES ('lost?')"))
            expect_in_txn(admin, a, False, "INSERT after COMMIT")
            eq(names(pg, db), ["lost?"], "rows after BEGIN; SAVEPOINT; COMMIT; INSERT")
            # BEGIN; SAVEPOINT; INSERT; ROLLBACK TO; COMMIT
            expect_status(a.request("BEGIN"), "+OK changes=0")
            expect_ok(a.request("SAVEPOINT sp"))
            expect_ok(a.request("INSERT INTO accounts (name) VALUES ('undone')"))
            expect_ok(a.request("ROLLBACK TO sp"))
            expect_ok(a.request("INSERT INTO accounts (name) VALUES ('kept')"))
            expect_ok(a.request("RELEASE sp"))
            expect_in_txn(admin, a, True, "RELEASE inside BEGIN")
            eq(names(pg, db), ["lost?"], "uncommitted rows seen")
            expect_ok(a.request("COMMIT TRANSACTION"))
            expect_in_txn(admin, a, False, "COMMIT TRANSACTION")
            expect_ok(a.request("INSERT INTO accounts (name) VALUES ('after')"))
            eq(names(pg, db), ["lost?", "kept", "after"], "rows after ROLLBACK TO; COMMIT")
            # SAVEPOINT outside a transaction: PostgreSQL refuses it, nothing stays open
            expect_err(a.request("SAVEPOINT outside"), "SQL")
            expect_in_txn(admin, a, False, "SAVEPOINT outside a transaction")
            # BEGIN spellings (SQLite's DEFERRED/IMMEDIATE/EXCLUSIVE mean BEGIN here)
            forms = [("BEGIN IMMEDIATE", "END"), ("BEGIN EXCLUSIVE", "COMMIT"), ("BEGIN DEFERRED", "END"),
                     ("START TRANSACTION", "COMMIT TRANSACTION"), ("BEGIN TRANSACTION", "ROLLBACK")]
            for i, (begin, end) in enumerate(forms):
                expect_status(a.request(begin), "+OK changes=0")
                expect_ok(a.request("INSERT INTO accounts (name) VALUES ('f%d')" % i))
                expect_in_txn(admin, a, True, begin)
                expect_ok(a.request(end))
                expect_in_txn(admin, a, False, end)
            eq(names(pg, db)[3:], ["f0", "f1", "f2", "f3"], "rows of the BEGIN spellings")
test_pg_savepoint_transactions.timeout = 60


def _backend_in_txn(pg, db):
    """The pid of the one server backend idle in a transaction."""
    rows = wait_for(lambda: [p for p, state, _ in pg.backends(db) if state == "idle in transaction"], 5,
                    "a backend idle in transaction")
    eq(len(rows), 1, "backends idle in transaction")
    return rows[0]


def _expect_lost_until_rollback(x, admin, what):
    for sql in ("INSERT INTO accounts (name) VALUES ('x2')", "SELECT 1", "COMMIT", "COMMIT"):
        r = x.request(sql)
        expect_err(r, "CONNLOST")
        expect_in_txn(admin, x, True, "%s: after %s" % (what, sql))
    expect_status(x.request("ROLLBACK"), "+OK changes=0")
    expect_in_txn(admin, x, False, "%s: after ROLLBACK" % what)


def test_pg_commit_after_connection_reset_is_refused():
    """The pinned connection is terminated (reset) while the client is idle
    in its transaction, or while one of its statements runs: its COMMIT must
    not be run on another connection."""
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db)
        with pg_daemon(pg, db, opts={"pool_size": "4", "pool_min": "2"}) as d:
            x, admin = d.connect(), d.connect()
            # idle in the transaction
            expect_status(x.request("BEGIN"), "+OK changes=0")
            expect_ok(x.request("INSERT INTO accounts (name) VALUES ('x1')"))
            pid = _backend_in_txn(pg, db)
            pg.psql("SELECT pg_terminate_backend(%d)" % pid, db="postgres")
            time.sleep(0.5)
            _expect_lost_until_rollback(x, admin, "idle")
            expect_ok(x.request("INSERT INTO accounts (name) VALUES ('auto')"))
            eq(names(pg, db), ["auto"], "rows: the lost transaction's row must not be there")
            # a statement in flight
            expect_status(x.request("BEGIN"), "+OK changes=0")
            expect_ok(x.request("INSERT INTO accounts (name) VALUES ('x3')"))
            pid = _backend_in_txn(pg, db)
            x.send("SELECT pg_sleep(3)\n")
            time.sleep(0.5)
            pg.psql("SELECT pg_terminate_backend(%d)" % pid, db="postgres")
            expect_err(x.read_response(), "CONNLOST")
            _expect_lost_until_rollback(x, admin, "in flight")
            expect_ok(x.request("INSERT INTO accounts (name) VALUES ('auto2')"))
            eq(names(pg, db), ["auto", "auto2"], "rows after the second lost transaction")
            # another client's transaction on the same bind is not affected
            y = d.connect()
            expect_status(y.request("BEGIN"), "+OK changes=0")
            expect_ok(y.request("INSERT INTO accounts (name) VALUES ('y')"))
            expect_ok(y.request("COMMIT"))
            eq(names(pg, db), ["auto", "auto2", "y"], "rows after another client's transaction")
test_pg_commit_after_connection_reset_is_refused.timeout = 60


def test_pg_commit_after_server_restart_is_refused():
    """Issue 13 item 2's reproducer: X in a transaction, Y holds a connection
    with a large unread result, the server stops (immediate) and restarts;
    X's COMMIT gets -ERR CONNLOST, never +OK, and the row is not there."""
    with PgCluster() as pg:
        create_accounts(pg, APP_DB)
        pg.psql("CREATE TABLE big AS SELECT g AS n FROM generate_series(1, 300000) g", db=APP_DB, user="sqlmux")
        with pg_daemon(pg, APP_DB, tables=(("accounts", None), ("big", None)),
                       opts={"pool_size": "4", "connect_timeout": "2000"}) as d:
            x, admin = d.connect(), d.connect()
            expect_status(x.request("BEGIN"), "+OK changes=0")
            expect_ok(x.request("INSERT INTO accounts (name) VALUES ('x')"))
            y = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            y.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            y.connect(d.addr)
            y.sendall(b"SELECT n, repeat('y', 100) FROM big\n")
            time.sleep(0.5)
            pg.stop(mode="immediate")
            time.sleep(0.3)
            t0 = time.time()
            expect_err(x.request("COMMIT"), "CONNLOST")
            if time.time() - t0 > scaled(3):
                raise TestFailure("COMMIT's -ERR CONNLOST took %.1fs" % (time.time() - t0))
            pg.start()
            # the pool reconnects; the broken transaction stays broken
            wait_for(lambda: d.connect().request("SELECT count(*) FROM accounts").ok, 20, "bind back")
            expect_err(x.request("COMMIT"), "CONNLOST")
            expect_in_txn(admin, x, True, "after the restart")
            expect_status(x.request("ROLLBACK"), "+OK changes=0")
            expect_ok(x.request("INSERT INTO accounts (name) VALUES ('after')"))
            eq(names(pg, APP_DB), ["after"], "rows: X's lost transaction must not be there")
            y.close()
test_pg_commit_after_server_restart_is_refused.timeout = 120


def _hold_pool(d, n):
    """n clients, each with a transaction holding one server connection."""
    holders = []
    for i in range(n):
        h = d.connect()
        expect_status(h.request("BEGIN"), "+OK changes=0")
        expect_ok(h.request("INSERT INTO accounts (name) VALUES ('h%d')" % i))
        holders.append(h)
    return holders


def test_pg_query_wait_timeout():
    """Item 10: every connection of the pool is held by an idle transaction:
    a statement waiting for one gets -ERR BUSY after query_wait_timeout,
    not silence for ever; once one is free, statements run again."""
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db)
        with pg_daemon(pg, db, opts={"pool_size": "2", "pool_min": "2", "query_wait_timeout": "1000"}) as d:
            holders = _hold_pool(d, 2)
            c = d.connect()
            for sql in ("SELECT count(*) FROM accounts", "INSERT INTO accounts (name) VALUES ('c')"):
                t0 = time.time()
                c.send(sql + "\n")
                if not c.readable_now(4.0):
                    raise TestFailure("%r: no answer within 4 s while the pool is held (query_wait_timeout 1000)"
                                      % sql)
                r = c.read_response()
                took = time.time() - t0
                expect_err(r, "BUSY")
                if not 0.9 <= took <= scaled(2.5):
                    raise TestFailure("%r: -ERR BUSY after %.2fs, want about 1 s" % (sql, took))
                if "query_wait_timeout" not in r.err_msg:
                    raise TestFailure("the message should name query_wait_timeout: %r" % r.err_msg)
            expect_ok(d.connect().request(".ping"))
            expect_status(holders[0].request("ROLLBACK"), "+OK changes=0")
            expect_rows(c.request("SELECT count(*) FROM accounts"), [["0"]])
            # the holder still in its transaction is untouched
            expect_ok(holders[1].request("INSERT INTO accounts (name) VALUES ('h1b')"))
            expect_ok(holders[1].request("COMMIT"))
            eq(names(pg, db), ["h1", "h1b"], "rows")
test_pg_query_wait_timeout.timeout = 60


def test_pg_idle_transaction_timeout():
    """Item 10: clients idle inside a transaction for idle_transaction_timeout
    are told -ERR TIMEOUT and disconnected, their transactions rolled back
    and their connections free for the waiting client."""
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db)
        with pg_daemon(pg, db, server={"idle_transaction_timeout": "1500"},
                       opts={"pool_size": "2", "pool_min": "2", "query_wait_timeout": "10000"}) as d:
            busy = d.connect()
            expect_status(busy.request("BEGIN"), "+OK changes=0")
            holders = _hold_pool(d, 2)
            idle = d.connect()   # idle outside a transaction: stays
            c = d.connect()
            t0 = time.time()
            expect_rows(c.request("SELECT count(*) FROM accounts"), [["0"]])
            took = time.time() - t0
            if not 1.2 <= took <= scaled(4.0):
                raise TestFailure("the waiting SELECT was answered after %.2fs, want about 1.5 s" % took)
            for h in holders:
                r = h.read_response()
                expect_err(r, "TIMEOUT")
                if "idle_transaction_timeout" not in r.err_msg:
                    raise TestFailure("the message should name idle_transaction_timeout: %r" % r.err_msg)
                if not h.wait_closed(3):
                    raise TestFailure("a client idle in its transaction was not disconnected")
            eq(names(pg, db), [], "rows of the rolled back transactions")
            # a held BEGIN holds nothing: not cut off; nor is a client idle outside a transaction
            expect_ok(idle.request(".ping"))
            expect_ok(busy.request("INSERT INTO accounts (name) VALUES ('b')"))
            expect_ok(busy.request("COMMIT"))
            eq(names(pg, db), ["b"], "rows")
test_pg_idle_transaction_timeout.timeout = 60


def _ping_during(d, sql_conn, sql, limit):
    """Send sql on sql_conn, then check the daemon answers .ping on another
    connection while it runs (within `limit` s); return sql's response."""
    sql_conn.send(sql + "\n")
    p = d.connect()
    p.sock.settimeout(limit + 1)
    t0 = time.time()
    expect_ok(p.request(".ping"))
    if time.time() - t0 > scaled(limit):
        raise TestFailure(".ping took %.2fs while %r ran" % (time.time() - t0, sql))
    return sql_conn.read_response()


def test_pg_copy_is_refused_and_the_connection_stays_usable():
    """Item 4: COPY TO STDOUT / FROM STDIN get a clear -ERR, the loop keeps
    serving meanwhile (.ping, other binds), and the pool's one connection
    serves the next statements, inside a transaction too."""
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db, ["alice", "bob"])
        pg.psql("CREATE TABLE big AS SELECT g AS n, repeat('x', 200) AS pad FROM generate_series(1, 200000) g",
                db=db, user="sqlmux")
        with pg_daemon(pg, db, tables=(("accounts", None), ("big", None)),
                       opts={"pool_size": "1", "pool_min": "1", "statement_timeout": "20000"}) as d:
            c, admin = d.connect(), d.connect()
            c.sock.settimeout(10)
            expect_ok(c.request(".use pg"))
            pid_before = [p for p, _, _ in pg.backends(db)]
            for sql in ("COPY accounts TO STDOUT", "COPY (SELECT name FROM accounts) TO STDOUT WITH (FORMAT csv)",
                        "COPY big TO STDOUT"):
                r = _ping_during(d, c, sql, 1.0)
                expect_err(r, "SQL")
                if "COPY" not in r.err_msg or "not supported" not in r.err_msg:
                    raise TestFailure("unclear message for %r: %r" % (sql, r.err_msg))
                expect_rows(c.request("SELECT name FROM accounts ORDER BY id"), [["alice"], ["bob"]])
                expect_ok(d.connect().request("INSERT INTO test1 (color) VALUES ('sqlite')"))
            r = _ping_during(d, c, "COPY accounts (name) FROM STDIN", 1.0)
            expect_err(r, "SQL")
            if "FROM STDIN" not in r.err_msg:
                raise TestFailure("unclear message for COPY FROM STDIN: %r" % r.err_msg)
            expect_rows(c.request("SELECT count(*) FROM accounts"), [["2"]])
            # inside a transaction: COPY TO leaves it going; COPY FROM aborts it, as PostgreSQL does
            expect_status(c.request("BEGIN"), "+OK changes=0")
            expect_ok(c.request("INSERT INTO accounts (name) VALUES ('carol')"))
            expect_err(c.request("COPY accounts TO STDOUT"), "SQL")
            expect_ok(c.request("INSERT INTO accounts (name) VALUES ('dave')"))
            expect_in_txn(admin, c, True, "after COPY TO STDOUT in a transaction")
            expect_ok(c.request("COMMIT"))
            expect_status(c.request("BEGIN"), "+OK changes=0")
            expect_ok(c.request("INSERT INTO accounts (name) VALUES ('eve')"))
            expect_err(c.request("COPY accounts FROM STDIN"), "SQL")
            expect_in_txn(admin, c, True, "after COPY FROM STDIN in a transaction")
            expect_status(c.request("ROLLBACK"), "+OK changes=0")
            eq(names(pg, db), ["alice", "bob", "carol", "dave"], "rows")
            # parameters (a prepared statement) too
            r = c.inline("COPY (SELECT ?::text) TO STDOUT", ["p"])
            expect_err(r, "SQL")
            if "SQLSTATE" not in r.err_msg and "not supported" not in r.err_msg:
                raise TestFailure("COPY with a parameter did not reach PostgreSQL: %r" % r.err_msg)
            expect_rows(c.inline("SELECT ?::text AS v", ["after"]), [["after"]])
            # still the one pool connection: it was never thrown away
            eq([p for p, _, _ in pg.backends(db)], pid_before, "server backends")
            eq(d.stop(), 0, "daemon exit status after SIGTERM")
test_pg_copy_is_refused_and_the_connection_stays_usable.timeout = 90
