"""Transactions: BEGIN held until the first table, pinned to that bind,
TXNBIND for other binds, isolation between clients, rollback on disconnect."""

import time

from harness import (TestFailure, eq, expect_err, expect_ok, expect_rows, expect_status)


def test_commit_lands_in_bind_file(d):
    c = d.connect()
    expect_status(c.request("BEGIN"), "+OK changes=0")
    expect_status(c.request("INSERT INTO test2 (color) VALUES ('txn1')"), "+OK changes=1 last_id=1")
    expect_status(c.request("INSERT INTO test2 (color) VALUES ('txn2')"), "+OK changes=1 last_id=2")
    # not visible in the file before COMMIT
    eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(0,)], "before COMMIT")
    expect_status(c.request("COMMIT"), "+OK changes=0")
    eq(d.file_query("second.db", "SELECT color FROM test2 ORDER BY id"),
       [("txn1",), ("txn2",)], "after COMMIT")
    eq(d.file_query("app.db", "SELECT count(*) FROM test1"), [(0,)], "app.db untouched")
    eq(d.file_tables("app.db"), ["test1"], "app.db tables")


def test_begin_forms(d):
    c = d.connect()
    forms = [("BEGIN IMMEDIATE", "COMMIT"), ("BEGIN DEFERRED TRANSACTION", "END"),
             ("begin exclusive", "END TRANSACTION"), ("BEGIN TRANSACTION;", "COMMIT;")]
    for i, (b, e) in enumerate(forms, 1):
        expect_status(c.request(b), "+OK changes=0")
        expect_status(c.request("INSERT INTO test2 (color) VALUES ('f%d')" % i),
                      "+OK changes=1 last_id=%d" % i)
        expect_status(c.request(e), "+OK changes=0")
    eq(d.file_query("second.db", "SELECT color FROM test2 ORDER BY id"),
       [("f1",), ("f2",), ("f3",), ("f4",)])
    # nothing ever ran on app.db, so no lock was left there
    other = d.connect()
    expect_status(other.request("INSERT INTO test1 DEFAULT VALUES"), "+OK changes=1 last_id=1")


def test_rollback(d):
    c = d.connect()
    expect_ok(c.request("INSERT INTO test2 (color) VALUES ('keep')"))
    expect_status(c.request("BEGIN"), "+OK changes=0")
    expect_ok(c.request("INSERT INTO test2 (color) VALUES ('undo')"))
    expect_ok(c.request("UPDATE test2 SET color = 'changed' WHERE color = 'keep'"))
    expect_rows(c.request("SELECT color FROM test2 ORDER BY id"), [["changed"], ["undo"]])
    expect_status(c.request("ROLLBACK"), "+OK changes=0")
    expect_rows(c.request("SELECT color FROM test2 ORDER BY id"), [["keep"]])
    eq(d.file_query("second.db", "SELECT color FROM test2"), [("keep",)])


def test_memory_bind_transaction(d):
    c = d.connect()
    expect_status(c.request("BEGIN"), "+OK changes=0")
    expect_ok(c.request("INSERT INTO test3 (color) VALUES ('m1')"))
    expect_status(c.request("ROLLBACK"), "+OK changes=0")
    expect_status(c.request("BEGIN"), "+OK changes=0")
    expect_ok(c.request("INSERT INTO test3 (color) VALUES ('m2')"))
    expect_status(c.request("COMMIT"), "+OK changes=0")
    expect_rows(d.connect().request("SELECT color FROM test3"), [["m2"]])


def test_empty_transaction(d):
    c = d.connect()
    expect_status(c.request("BEGIN"), "+OK changes=0")
    expect_status(c.request("COMMIT"), "+OK changes=0")
    expect_status(c.request("BEGIN"), "+OK changes=0")
    expect_status(c.request("ROLLBACK"), "+OK changes=0")
    expect_status(c.request("INSERT INTO test2 DEFAULT VALUES"), "+OK changes=1 last_id=1")
    eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(1,)])


def test_txnbind_keeps_transaction_open(d):
    # Other SQLite binds join the transaction (issue 16, test_xact.py).
    c = d.connect()
    expect_status(c.request("BEGIN"), "+OK changes=0")
    expect_status(c.request("INSERT INTO test2 (color) VALUES ('in')"), "+OK changes=1 last_id=1")
    expect_status(c.request("SELECT * FROM test1"), "+OK rows=0")
    expect_status(c.request("INSERT INTO test3 DEFAULT VALUES"), "+OK changes=1 last_id=1")
    expect_rows(c.inline("SELECT id FROM test3 WHERE id = ?", [1]), [["1"]])
    # a table that maps to the same bind is fine
    expect_rows(c.request("SELECT color FROM test2"), [["in"]])
    eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(0,)], "still uncommitted")
    expect_status(c.request("COMMIT"), "+OK changes=0")
    eq(d.file_query("second.db", "SELECT color FROM test2"), [("in",)], "committed")
    # after COMMIT other binds are fine again
    expect_rows(c.request("SELECT count(*) FROM test1"), [["0"]])
    expect_rows(c.request("SELECT count(*) FROM test3"), [["1"]])


def test_txnbind_after_held_begin_on_memory(d):
    c = d.connect()
    expect_status(c.request("BEGIN"), "+OK changes=0")
    expect_status(c.request("SELECT * FROM test3"), "+OK rows=0")
    expect_status(c.request("INSERT INTO test2 DEFAULT VALUES"), "+OK changes=1 last_id=1")
    expect_status(c.request("INSERT INTO test3 (color) VALUES ('t')"), "+OK changes=1 last_id=1")
    expect_status(c.request("ROLLBACK"), "+OK changes=0")
    expect_rows(c.request("SELECT count(*) FROM test3"), [["0"]])
    expect_rows(c.request("SELECT count(*) FROM test2"), [["0"]])
    eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(0,)])


def test_route_inside_transaction_reports_txnbind(d):
    c = d.connect()
    expect_status(c.request("BEGIN"), "+OK changes=0")
    expect_ok(c.request("INSERT INTO test2 DEFAULT VALUES"))
    expect_status(c.request(".route SELECT * FROM test2"), "+OK bind=second_db")
    # another SQLite bind joins the transaction (issue 16)
    expect_status(c.request(".route SELECT * FROM test1"), "+OK bind=default")
    expect_status(c.request("COMMIT"), "+OK changes=0")
    expect_status(c.request(".route SELECT * FROM test1"), "+OK bind=default")


def test_isolation_between_clients(d):
    a = d.connect()
    b = d.connect()
    expect_ok(a.request("INSERT INTO test2 (color) VALUES ('committed')"))
    # A's uncommitted row is invisible to B
    expect_status(a.request("BEGIN"), "+OK changes=0")
    expect_ok(a.request("INSERT INTO test2 (color) VALUES ('a-uncommitted')"))
    expect_rows(a.request("SELECT color FROM test2 ORDER BY id"),
                [["committed"], ["a-uncommitted"]])
    expect_rows(b.request("SELECT color FROM test2 ORDER BY id"), [["committed"]])
    expect_status(b.request("BEGIN"), "+OK changes=0")
    expect_rows(b.request("SELECT color FROM test2 ORDER BY id"), [["committed"]])
    expect_status(b.request("COMMIT"), "+OK changes=0")
    # A's ROLLBACK undoes only A's row
    expect_status(a.request("ROLLBACK"), "+OK changes=0")
    expect_rows(b.request("SELECT color FROM test2 ORDER BY id"), [["committed"]])
    # and the other way round
    expect_status(b.request("BEGIN"), "+OK changes=0")
    expect_ok(b.request("INSERT INTO test2 (color) VALUES ('b-uncommitted')"))
    expect_rows(a.request("SELECT color FROM test2 ORDER BY id"), [["committed"]])
    expect_status(b.request("COMMIT"), "+OK changes=0")
    expect_rows(a.request("SELECT color FROM test2 ORDER BY id"),
                [["committed"], ["b-uncommitted"]])
    eq(d.file_query("second.db", "SELECT color FROM test2 ORDER BY id"),
       [("committed",), ("b-uncommitted",)])


def test_isolation_memory_bind(d):
    a = d.connect()
    b = d.connect()
    expect_ok(a.request("INSERT INTO test3 (color) VALUES ('committed')"))
    expect_status(a.request("BEGIN"), "+OK changes=0")
    expect_ok(a.request("INSERT INTO test3 (color) VALUES ('a-uncommitted')"))
    r = b.request("SELECT color FROM test3 ORDER BY id")
    # B must not see A's row; a lock error is not acceptable either.
    expect_rows(r, [["committed"]])
    expect_status(a.request("ROLLBACK"), "+OK changes=0")
    expect_rows(b.request("SELECT color FROM test3 ORDER BY id"), [["committed"]])


def _rows_eventually(conn, sql, want, timeout=5.0):
    deadline = time.time() + timeout
    while True:
        r = conn.request(sql)
        if r.ok and r.rows == want:
            return r
        if time.time() > deadline:
            raise TestFailure("%s: want %r, got %r" % (sql, want, r))
        time.sleep(0.1)


def test_disconnect_rolls_back(d):
    a = d.connect()
    b = d.connect()
    expect_status(a.request("BEGIN"), "+OK changes=0")
    expect_status(a.request("INSERT INTO test2 (color) VALUES ('ghost')"), "+OK changes=1 last_id=1")
    a.close()
    # B can write at once (the daemon rolled A back; no BUSY) ...
    t0 = time.time()
    r = b.request("INSERT INTO test2 (color) VALUES ('after')")
    if not r.ok:
        raise TestFailure("write after a client left mid-transaction: %r (after %.1fs)"
                          % (r, time.time() - t0))
    # ... and never sees the ghost row.
    expect_rows(b.request("SELECT color FROM test2"), [["after"]])
    eq(d.file_query("second.db", "SELECT color FROM test2"), [("after",)])


def test_disconnect_rolls_back_memory(d):
    a = d.connect()
    b = d.connect()
    expect_status(a.request("BEGIN"), "+OK changes=0")
    expect_ok(a.request("INSERT INTO test3 (color) VALUES ('ghost')"))
    a.close()
    _rows_eventually(b, "SELECT color FROM test3", [])
    expect_status(b.request("INSERT INTO test3 (color) VALUES ('after')"), "+OK changes=1 last_id=1")
    expect_rows(b.request("SELECT color FROM test3"), [["after"]])


def test_quit_inside_transaction_rolls_back(d):
    a = d.connect()
    expect_status(a.request("BEGIN"), "+OK changes=0")
    expect_ok(a.request("INSERT INTO test2 (color) VALUES ('ghost')"))
    eq(a.request(".quit").raw, [b"+OK"])
    a.wait_closed()
    b = d.connect()
    expect_status(b.request("INSERT INTO test2 (color) VALUES ('after')"), "+OK changes=1 last_id=1")
    eq(d.file_query("second.db", "SELECT color FROM test2"), [("after",)])


def test_many_transactions_on_one_bind(d):
    # More sequential transactions than the pool has connections: each
    # commit releases its connection.
    conns = [d.connect() for _ in range(3)]
    for i in range(12):
        c = conns[i % 3]
        expect_status(c.request("BEGIN"), "+OK changes=0")
        expect_status(c.request("INSERT INTO test2 (color) VALUES ('x%d')" % i),
                      "+OK changes=1 last_id=%d" % (i // 2 + 1))
        expect_status(c.request("COMMIT" if i % 2 else "ROLLBACK"), "+OK changes=0")
    eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(6,)])


def test_idle_transactions_do_not_hang_other_clients():
    # second_db has one connection, pinned by A's open transaction. B's
    # statement may wait (busy_timeout 1000 ms) but must then be answered,
    # with rows or -ERR BUSY, instead of waiting for A forever.
    from harness import Daemon
    with Daemon(bind_opts={"second_db": {"pool_size": "1", "busy_timeout": "1000"}}) as d:
        a = d.connect()
        expect_status(a.request("BEGIN"), "+OK changes=0")
        expect_ok(a.request("INSERT INTO test2 (color) VALUES ('a')"))
        b = d.connect()
        b.sock.settimeout(30)
        b.send(b"SELECT count(*) FROM test2\n")
        if not b.readable_now(8):
            raise TestFailure("B got no answer within 8 s while A's transaction held the "
                              "bind's only connection (busy_timeout is 1 s)")
        r = b.read_response()
        if not (r.err_code == "BUSY" or r.rows == [["0"]]):
            raise TestFailure("B: want rows [['0']] or -ERR BUSY, got %r" % r)
        expect_status(a.request("COMMIT"), "+OK changes=0")
        expect_rows(b.request("SELECT count(*) FROM test2"), [["1"]])
