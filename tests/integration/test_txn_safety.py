"""Transaction safety on SQLite binds (issue 13): whether a client is inside
a transaction comes from the database after every statement
(sqlite3_get_autocommit), never from the SQL text, so SAVEPOINT, RELEASE,
ROLLBACK TO and every BEGIN/END spelling pin and unpin the connection as
SQLite does; a read-only user's BEGIN IMMEDIATE is refused on the BEGIN;
idle_transaction_timeout ends a transaction left open. The PostgreSQL side
is in test_txn_safety_pg.py."""

import time

from harness import (Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows, expect_status, make_config,
                     scaled)

# (bind, table) pairs: a file bind, the in-memory bind. `.use BIND` first, so
# statements naming no table (SAVEPOINT, RELEASE) go to the same bind.
SQLITE_BINDS = [("default", "test1", "app.db"), ("memory_db", "test3", None)]


def clients_row(admin, conn):
    """conn's row of .clients, asked on the connection admin."""
    peer = "127.0.0.1:%d" % conn.sock.getsockname()[1]
    r = expect_ok(admin.request(".clients"))
    for row in r.dicts():
        if row["peer"] == peer:
            return row
    raise TestFailure("no .clients row for %s: %r" % (peer, r))


def expect_in_txn(admin, conn, want, what):
    eq(clients_row(admin, conn)["in_txn"], "yes" if want else "no", "%s: .clients in_txn" % what)


def count(conn, table, color):
    r = expect_ok(conn.request("SELECT count(*) FROM %s WHERE color = '%s'" % (table, color)))
    return int(r.rows[0][0])


def _savepoint_then_commit(d, bind, table):
    a, b, admin = d.connect(), d.connect(), d.connect()
    expect_ok(a.request(".use %s" % bind))
    expect_status(a.request("BEGIN"), "+OK changes=0")
    expect_ok(a.request("SAVEPOINT sp"))
    expect_in_txn(admin, a, True, "%s: after BEGIN; SAVEPOINT" % bind)
    expect_ok(a.request("COMMIT"))
    expect_in_txn(admin, a, False, "%s: after COMMIT" % bind)
    # autocommit again: the row is there for others at once
    expect_status(a.request("INSERT INTO %s (color) VALUES ('lost?')" % table), "+OK changes=1 last_id=1")
    expect_in_txn(admin, a, False, "%s: after the INSERT" % bind)
    eq(count(b, table, "lost?"), 1, "%s: another client sees the INSERT after BEGIN; SAVEPOINT; COMMIT" % bind)
    # the other client can write (no lock left behind)
    t0 = time.time()
    expect_ok(b.request("INSERT INTO %s (color) VALUES ('other')" % table))
    if time.time() - t0 > scaled(1.0):
        raise TestFailure("%s: the other client's INSERT waited %.1fs for a lock" % (bind, time.time() - t0))
    # and a new transaction may begin
    expect_status(a.request("BEGIN"), "+OK changes=0")
    expect_ok(a.request("INSERT INTO %s (color) VALUES ('second')" % table))
    expect_in_txn(admin, a, True, "%s: second transaction" % bind)
    expect_ok(a.request("COMMIT"))
    a.close()
    time.sleep(0.2)
    eq(count(b, table, "lost?") + count(b, table, "second"), 2, "%s: rows after A disconnected" % bind)


def test_savepoint_then_commit_autocommits_later_writes(d):
    for bind, table, _ in SQLITE_BINDS:
        _savepoint_then_commit(d, bind, table)


def test_rollback_to_inside_begin(d):
    for bind, table, _ in SQLITE_BINDS:
        a, b, admin = d.connect(), d.connect(), d.connect()
        expect_ok(a.request(".use %s" % bind))
        expect_status(a.request("BEGIN"), "+OK changes=0")
        expect_ok(a.request("SAVEPOINT sp"))
        expect_ok(a.request("INSERT INTO %s (color) VALUES ('undone')" % table))
        expect_ok(a.request("ROLLBACK TO sp"))
        expect_in_txn(admin, a, True, "%s: ROLLBACK TO keeps the transaction" % bind)
        expect_ok(a.request("INSERT INTO %s (color) VALUES ('kept')" % table))
        eq(count(b, table, "kept"), 0, "%s: uncommitted row seen by another client" % bind)
        expect_ok(a.request("COMMIT"))
        expect_in_txn(admin, a, False, "%s: after COMMIT" % bind)
        expect_ok(a.request("INSERT INTO %s (color) VALUES ('after')" % table))
        eq((count(b, table, "undone"), count(b, table, "kept"), count(b, table, "after")), (0, 1, 1),
           "%s: rows seen by another client" % bind)
        a.close()


def test_savepoint_outside_transaction_pins(d):
    """SAVEPOINT outside a transaction starts one in SQLite: the connection
    stays the client's until RELEASE ends it."""
    for bind, table, _ in SQLITE_BINDS:
        a, b, admin = d.connect(), d.connect(), d.connect()
        expect_ok(a.request(".use %s" % bind))
        expect_ok(a.request("SAVEPOINT outer_sp"))
        expect_in_txn(admin, a, True, "%s: SAVEPOINT outside a transaction" % bind)
        expect_ok(a.request("INSERT INTO %s (color) VALUES ('sp1')" % table))
        expect_ok(a.request("SAVEPOINT inner_sp"))
        expect_ok(a.request("INSERT INTO %s (color) VALUES ('sp2')" % table))
        expect_ok(a.request("ROLLBACK TO inner_sp"))
        expect_ok(a.request("RELEASE inner_sp"))
        expect_in_txn(admin, a, True, "%s: after RELEASE of the inner savepoint" % bind)
        # the client's own reads see its rows (its connection), others do not
        eq(count(a, table, "sp1"), 1, "%s: own uncommitted row" % bind)
        eq(count(b, table, "sp1"), 0, "%s: another client sees an uncommitted row" % bind)
        # more clients than the pool: every statement of A still lands on its connection
        others = [d.connect() for _ in range(6)]
        for o in others:
            o.send("SELECT count(*) FROM %s\n" % table)
        for o in others:
            expect_ok(o.read_response())
        eq(count(a, table, "sp1"), 1, "%s: own row after other clients' reads" % bind)
        expect_ok(a.request("RELEASE outer_sp"))
        expect_in_txn(admin, a, False, "%s: RELEASE of the outer savepoint commits" % bind)
        eq((count(b, table, "sp1"), count(b, table, "sp2")), (1, 0), "%s: after RELEASE" % bind)
        a.close()


def test_savepoint_outside_transaction_rolled_back_on_disconnect(d):
    a, b = d.connect(), d.connect()
    expect_ok(a.request("SAVEPOINT sp"))
    expect_ok(a.request("INSERT INTO test1 (color) VALUES ('gone')"))
    a.abort()
    time.sleep(0.3)
    eq(count(b, "test1", "gone"), 0, "row of a disconnected client's savepoint transaction")
    expect_ok(b.request("INSERT INTO test1 (color) VALUES ('free')"))


def test_begin_and_end_spellings(d):
    admin = d.connect()
    forms = [("BEGIN IMMEDIATE", "COMMIT TRANSACTION"), ("BEGIN EXCLUSIVE", "END"),
             ("BEGIN DEFERRED", "END TRANSACTION"), ("BEGIN TRANSACTION", "commit"),
             ("begin", "ROLLBACK TRANSACTION")]
    for bind, table, _ in SQLITE_BINDS:
        for i, (begin, end) in enumerate(forms):
            a, b = d.connect(), d.connect()
            color = "%s-%d" % (bind, i)
            expect_ok(a.request(".use %s" % bind))
            expect_status(a.request(begin), "+OK changes=0")
            expect_ok(a.request("INSERT INTO %s (color) VALUES ('%s')" % (table, color)))
            expect_in_txn(admin, a, True, "%s: %s" % (bind, begin))
            expect_ok(a.request("SAVEPOINT s"))
            expect_ok(a.request("RELEASE s"))
            expect_in_txn(admin, a, True, "%s: %s; SAVEPOINT; RELEASE" % (bind, begin))
            expect_ok(a.request(end))
            expect_in_txn(admin, a, False, "%s: %s" % (bind, end))
            expect_ok(a.request("INSERT INTO %s (color) VALUES ('%s-auto')" % (table, color)))
            want = 0 if end.startswith("ROLLBACK") else 1
            eq((count(b, table, color), count(b, table, color + "-auto")), (want, 1),
               "%s: %s ... %s, then an autocommit INSERT" % (bind, begin, end))
            a.close()
            b.close()


def test_pipelined_savepoint_transaction(d):
    """The same, pipelined in one write: the session's state after each
    statement decides where the next one goes."""
    a, b = d.connect(), d.connect()
    stmts = ["BEGIN", "SAVEPOINT sp", "INSERT INTO test1 (color) VALUES ('p1')", "ROLLBACK TO sp",
             "COMMIT", "INSERT INTO test1 (color) VALUES ('p2')", "SAVEPOINT x",
             "INSERT INTO test1 (color) VALUES ('p3')", "RELEASE x", "INSERT INTO test1 (color) VALUES ('p4')"]
    a.send("".join(s + "\n" for s in stmts))
    for s, r in zip(stmts, a.read_responses(len(stmts))):
        if not r.ok:
            raise TestFailure("%s: %r" % (s, r))
    eq([count(b, "test1", c) for c in ("p1", "p2", "p3", "p4")], [0, 1, 1, 1], "rows seen by another client")


def _users_daemon(server=None):
    # imported here: test_auth hashes passwords with `sqlmuxd passwd` once per process
    from test_auth import users_text
    srv = {"auth_fail_delay": "0"}
    srv.update(server or {})
    return Daemon(config=make_config(server=srv) + users_text())


def _login(d, user):
    from test_auth import PASSWORDS
    c = d.connect()
    expect_status(c.request(".auth %s %s" % (user, PASSWORDS[user])), "+OK user=%s" % user)
    return c


def test_readonly_begin_immediate():
    """Item 8: carol may only read: BEGIN IMMEDIATE/EXCLUSIVE get -ERR NOPERM
    themselves. bob may write memory_db only: his BEGIN IMMEDIATE waits for
    its bind; on a bind he may only read, that first statement gets NOPERM
    and the BEGIN stays held (ROLLBACK +OK); on memory_db it works."""
    with _users_daemon() as d:
        alice = _login(d, "alice")
        expect_ok(alice.request("INSERT INTO test1 (color) VALUES ('x')"))
        carol = _login(d, "carol")
        for begin in ("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE TRANSACTION", "begin  immediate;"):
            expect_err(carol.request(begin), "NOPERM")
            expect_rows(carol.request("SELECT count(*) FROM test1"), [["1"]])
            expect_err(carol.request("ROLLBACK"), "SQL")   # no transaction: BEGIN failed
        for begin in ("BEGIN", "BEGIN DEFERRED"):
            expect_status(carol.request(begin), "+OK changes=0")
            expect_rows(carol.request("SELECT count(*) FROM test1"), [["1"]])
            expect_in_txn(alice, carol, True, "carol: " + begin)
            expect_status(carol.request("ROLLBACK"), "+OK changes=0")
            expect_in_txn(alice, carol, False, "carol: ROLLBACK")
        bob = _login(d, "bob")
        expect_status(bob.request("BEGIN IMMEDIATE"), "+OK changes=0")
        expect_err(bob.request("SELECT count(*) FROM test1"), "NOPERM")
        expect_in_txn(alice, bob, False, "bob: refused BEGIN IMMEDIATE on default")
        expect_status(bob.request("ROLLBACK"), "+OK changes=0")
        expect_rows(bob.request("SELECT count(*) FROM test1"), [["1"]])   # autocommit read
        expect_status(bob.request("BEGIN IMMEDIATE"), "+OK changes=0")
        expect_err(bob.request("SELECT count(*) FROM test1"), "NOPERM")
        # the BEGIN is still held: the next statement starts it on its bind
        expect_ok(bob.request("INSERT INTO test3 (color) VALUES ('bob')"))
        expect_in_txn(alice, bob, True, "bob: BEGIN IMMEDIATE on memory_db")
        expect_rows(alice.request("SELECT count(*) FROM test3"), [["0"]])
        expect_status(bob.request("COMMIT"), "+OK changes=0")
        expect_rows(alice.request("SELECT count(*) FROM test3"), [["1"]])


def test_idle_transaction_timeout_sqlite():
    """Item 10 on SQLite binds: a client idle inside a transaction for
    idle_transaction_timeout gets -ERR TIMEOUT and is disconnected, its
    transaction rolled back (the write lock is free again); a client that
    keeps working inside its transaction, one idle outside any and one
    with a BEGIN still held are left alone."""
    with Daemon(server={"idle_transaction_timeout": "1000"}) as d:
        admin = d.connect()
        a, worker, idle, held = d.connect(), d.connect(), d.connect(), d.connect()
        expect_status(a.request("BEGIN IMMEDIATE"), "+OK changes=0")
        expect_ok(a.request("INSERT INTO test1 (color) VALUES ('idle-txn')"))
        expect_ok(worker.request(".use memory_db"))
        expect_ok(worker.request("SAVEPOINT w"))
        expect_ok(worker.request("INSERT INTO test3 (color) VALUES ('w')"))
        expect_status(held.request("BEGIN"), "+OK changes=0")
        t0 = time.time()
        for _ in range(6):
            time.sleep(0.3)
            expect_ok(worker.request("INSERT INTO test3 (color) VALUES ('w')"))
        r = a.read_response()
        expect_err(r, "TIMEOUT")
        took = time.time() - t0
        if not 0.9 <= took <= scaled(3.0):
            raise TestFailure("-ERR TIMEOUT after %.2fs, want about 1 s" % took)
        if not a.wait_closed(3):
            raise TestFailure("the client idle in its transaction was not disconnected")
        expect_in_txn(admin, worker, True, "a client working inside its transaction")
        expect_ok(worker.request("RELEASE w"))
        eq(count(admin, "test1", "idle-txn"), 0, "the timed-out transaction's row")
        t0 = time.time()
        expect_ok(admin.request("INSERT INTO test1 (color) VALUES ('free')"))
        if time.time() - t0 > scaled(0.5):
            raise TestFailure("the write lock was still held")
        eq(count(admin, "test3", "w"), 7, "the working client's rows")
        time.sleep(1.5)
        expect_ok(idle.request(".ping"))
        expect_ok(held.request("INSERT INTO test1 (color) VALUES ('held')"))
        expect_ok(held.request("COMMIT"))


def test_timeout_keys_bounds():
    """The new keys: bounds checked with file:line, defaults shown by
    --check-config."""
    import harness
    from harness import run_once, standard_files
    base = make_config()
    rc, out, err, _, _ = run_once(base, files=standard_files(), check=True)
    eq(rc, 0, "--check-config: " + err)
    if "query_wait_timeout" in out:
        raise TestFailure("--check-config shows the PostgreSQL-only query_wait_timeout for SQLite binds:\n" + out)
    # A PostgreSQL bind (--check-config does not connect to it) shows it.
    pg_binds = harness.DEFAULT_BINDS + [("reports", "postgresql://sqlmux@127.0.0.1:1/app")]
    rc, out, err, _, _ = run_once(make_config(binds=pg_binds), files=standard_files(), check=True)
    eq(rc, 0, "--check-config: " + err)
    for want in ("server idle_transaction_timeout = 0", "query_wait_timeout = 30000"):
        if want not in out:
            raise TestFailure("--check-config does not show %r:\n%s" % (want, out))
    for text in (base.replace("[server]", "[server]\nidle_transaction_timeout = -1"),
                 base.replace("[server]", "[server]\nidle_transaction_timeout = 86400001"),
                 base + "[bind.default]\nquery_wait_timeout = -5\n"):
        rc, out, err, path, _ = run_once(text, files=standard_files(), check=True)
        if rc == 0 or "sqlmux.ini:" not in err or "timeout: " not in err or "out of range" not in err:
            raise TestFailure("want a file:line error for an out-of-range timeout, got %d %r" % (rc, err))
