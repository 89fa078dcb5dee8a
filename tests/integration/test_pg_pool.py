"""PostgreSQL binds, the connection pool: transactions pin one server
connection and are isolated, a client that leaves mid-transaction is rolled
back and its locks released, requests queue when the pool is busy (and are
refused past max_queue), idle connections above pool_min close, statement
timeouts cancel on the server, large results stream in bounded memory, and
a slow PostgreSQL query delays nobody else.

Each test uses its own database on the run's shared cluster."""

import os
import threading
import time

from harness import TestFailure, eq, expect_err, expect_ok, expect_rows, expect_status
from pgfixture import binds_by_name, create_accounts, pg_daemon, rss_kb, shared, wait_for

PID_SQL = "SELECT pg_backend_pid() AS pid FROM accounts LIMIT 1"


def _pid(conn):
    r = conn.request(PID_SQL)
    expect_status(r, "+OK rows=1")
    return r.rows[0][0]


def _names(conn):
    r = conn.request("SELECT name FROM accounts ORDER BY id")
    expect_ok(r)
    return [row[0] for row in r.rows]


def test_pg_transactions_pin_a_connection_and_are_isolated():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db) as d:
        create_accounts(pg, db, ["seed"])
        a = d.connect()
        b = d.connect()
        expect_status(a.request("BEGIN"), "+OK changes=0")
        expect_status(a.request("INSERT INTO accounts (name) VALUES ('a-uncommitted')"),
                      "+OK changes=1")
        pid_a = _pid(a)
        expect_status(b.request("BEGIN TRANSACTION"), "+OK changes=0")
        pid_b = _pid(b)
        expect_status(b.request("INSERT INTO accounts (name) VALUES ('b-uncommitted')"),
                      "+OK changes=1")
        eq(_names(a), ["seed", "a-uncommitted"], "A sees its own row, not B's")
        eq(_names(b), ["seed", "b-uncommitted"], "B sees its own row, not A's")
        c = d.connect()
        eq(_names(c), ["seed"], "a third client sees neither")
        eq(pg.psql("SELECT name FROM accounts ORDER BY id", db=db), [["seed"]],
           "PostgreSQL before COMMIT")
        # the same server connection for every statement of a transaction
        for i in range(5):
            eq(_pid(a), pid_a, "A's backend pid, statement %d" % i)
            eq(_pid(b), pid_b, "B's backend pid, statement %d" % i)
            _pid(c)
        if pid_a == pid_b:
            raise TestFailure("two open transactions share backend %s" % pid_a)
        expect_status(a.request("COMMIT"), "+OK changes=0")
        expect_status(b.request("ROLLBACK"), "+OK changes=0")
        eq(pg.psql("SELECT name FROM accounts ORDER BY id", db=db),
           [["seed"], ["a-uncommitted"]], "PostgreSQL after A's COMMIT and B's ROLLBACK")
        eq(_names(b), ["seed", "a-uncommitted"], "B after both ended")
        # the connections went back to the pool: new transactions work,
        # more of them than the pool has connections, one after the other
        for i in range(6):
            cl = (a, b, c)[i % 3]
            expect_status(cl.request("BEGIN"), "+OK changes=0")
            expect_status(cl.request("INSERT INTO accounts (name) VALUES ('t%d')" % i),
                          "+OK changes=1")
            expect_status(cl.request("COMMIT" if i % 2 else "ROLLBACK"), "+OK changes=0")
        eq(pg.value("SELECT count(*) FROM accounts WHERE name LIKE 't%'", db=db), "3",
           "committed rows of the sequential transactions")
        # BEGIN is held until a table is named: then the transaction is on
        # that bind, and another bind joins it (transactions across binds)
        expect_status(a.request("BEGIN"), "+OK changes=0")
        expect_status(a.request("INSERT INTO accounts (name) VALUES ('pg-txn')"), "+OK changes=1")
        expect_status(a.request("INSERT INTO test1 (color) VALUES ('joined')"), "+OK changes=1 last_id=1")
        expect_status(a.request(".route SELECT * FROM accounts"), "+OK bind=pg")
        expect_status(a.request("COMMIT"), "+OK changes=0")
        eq(pg.value("SELECT count(*) FROM accounts WHERE name = 'pg-txn'", db=db), "1",
           "the transaction's row after COMMIT")
        expect_status(b.request("BEGIN"), "+OK changes=0")
        expect_status(b.request("INSERT INTO test1 (color) VALUES ('sqlite-txn')"),
                      "+OK changes=1 last_id=2")
        expect_rows(b.request("SELECT count(*) FROM accounts WHERE name = 'pg-txn'"), [["1"]])
        expect_status(b.request("ROLLBACK"), "+OK changes=0")
        eq(d.file_query("app.db", "SELECT color FROM test1"), [("joined",)], "SQLite rolled back")
        expect_rows(b.request("SELECT count(*) FROM accounts WHERE name = 'pg-txn'"), [["1"]])


def _idle_in_transaction(pg, db):
    return [b for b in pg.backends(db) if b[1].startswith("idle in transaction")]


def test_pg_disconnect_mid_transaction_rolls_back_and_releases_locks():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db) as d:
        create_accounts(pg, db, ["x"])
        b = d.connect()
        b.sock.settimeout(20)
        problems = []
        for k, hold in enumerate(["UPDATE accounts SET balance = 100 WHERE name = 'x'",
                                  "SELECT name FROM accounts WHERE name = 'x' FOR UPDATE"]):
            a = d.connect()
            expect_status(a.request("BEGIN"), "+OK changes=0")
            expect_status(a.request("INSERT INTO accounts (name) VALUES ('ghost%d')" % k),
                          "+OK changes=1")
            expect_ok(a.request(hold))
            eq(len(_idle_in_transaction(pg, db)), 1, "A's transaction open on the server")
            a.close()
            t0 = time.time()
            r = b.request("UPDATE accounts SET balance = %d WHERE name = 'x'" % (k + 1))
            took = time.time() - t0
            if r.status != "+OK changes=1":
                problems.append("round %d (%s): B's UPDATE got %r" % (k, hold, r))
            elif took > 5:
                problems.append("round %d (%s): B's UPDATE waited %.1fs for A's lock"
                                % (k, hold, took))
            eq(_names(b), ["x"], "round %d: rows seen by B" % k)
            eq(pg.psql("SELECT name, balance FROM accounts ORDER BY id", db=db),
               [["x", "%d.00" % (k + 1)]], "round %d: PostgreSQL" % k)
            wait_for(lambda: not _idle_in_transaction(pg, db), 5,
                     "round %d: no backend left idle in transaction" % k)
        if problems:
            raise TestFailure("\n".join(problems))


def test_pg_pool_exhaustion_queues_in_order():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, opts={"pool_size": "2"}) as d:
        create_accounts(pg, db)
        clients = [d.connect() for _ in range(5)]
        for c in clients:
            c.sock.settimeout(30)
            expect_status(c.request(".use pg"), "+OK bind=pg")
        results = {}
        errors = []
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], len(pg.backends(db)))
                except TestFailure as e:
                    errors.append("psql: %s" % e)
                    return
                time.sleep(0.1)

        def run(k, c):
            try:
                c.send("".join("SELECT pg_sleep(0.5) AS s, 'c%d-%d' AS tag\n" % (k, i)
                               for i in range(2)))
                results[k] = [c.read_response() for _ in range(2)]
            except Exception as e:     # reported below, never a hang
                errors.append("client %d: %r" % (k, e))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.time()
        threads = [threading.Thread(target=run, args=(k, c), daemon=True)
                   for k, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        took = time.time() - t0
        done.set()
        sampler.join(5)
        if errors:
            raise TestFailure("\n".join(errors))
        problems = []
        for k in range(5):
            for i, r in enumerate(results.get(k, [])):
                if not r.ok or r.rows != [["", "c%d-%d" % (k, i)]]:
                    problems.append("client %d request %d: want tag c%d-%d, got %r"
                                    % (k, i, k, i, r))
        if problems:
            raise TestFailure("\n".join(problems))
        # 10 statements of 0.5 s on 2 connections take 2.5 s; on more
        # connections (no queueing) 1 s
        if took < 2.0:
            raise TestFailure("10 x pg_sleep(0.5) with pool_size=2 took only %.2fs: "
                              "more than 2 connections ran them" % took)
        if peak[0] > 2:
            raise TestFailure("pool_size=2 but PostgreSQL saw %d connections" % peak[0])
        b = binds_by_name(clients[0])["pg"]
        if int(b["connections"]) > 2:
            raise TestFailure(".binds shows %s connections for pool_size=2" % b["connections"])


def test_pg_max_queue_exceeded_gives_queuefull():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, opts={"pool_size": "1",
                                                      "max_queue": "2"}) as d:
        create_accounts(pg, db, ["alice"])
        holder = d.connect()
        expect_status(holder.request("BEGIN"), "+OK changes=0")
        expect_rows(holder.request("SELECT name FROM accounts"), [["alice"]])
        # the only connection is pinned: the next two requests wait
        waiting = [d.connect() for _ in range(2)]
        for w in waiting:
            w.send("SELECT count(*) AS n FROM accounts\n")
        time.sleep(0.5)
        for i, w in enumerate(waiting):
            if w.readable_now():
                raise TestFailure("waiting request %d answered while the only connection "
                                  "is pinned: %r" % (i, w.read_response()))
        extra = d.connect()
        t0 = time.time()
        r = extra.request("SELECT count(*) AS n FROM accounts")
        expect_err(r, "QUEUEFULL")
        if time.time() - t0 > 3:
            raise TestFailure("QUEUEFULL came after %.1fs, not at once" % (time.time() - t0))
        expect_status(extra.request(".ping"), "+OK")
        expect_rows(extra.request("SELECT count(*) FROM test1"), [["0"]])
        # the pinned client goes on; when it ends, the queue drains
        expect_status(holder.request("INSERT INTO accounts (name) VALUES ('bob')"),
                      "+OK changes=1")
        expect_status(holder.request("COMMIT"), "+OK changes=0")
        for w in waiting:
            r = w.read_response()
            if r.rows not in ([["1"]], [["2"]]):
                raise TestFailure("queued request: want 1 or 2 rows counted, got %r" % r)
        expect_rows(extra.request("SELECT count(*) AS n FROM accounts"), [["2"]])


def test_pg_idle_connections_above_pool_min_close():
    pg = shared()
    opts = {"pool_size": "4", "pool_min": "1", "idle_timeout": "500"}
    with pg.database() as db, pg_daemon(pg, db, opts=opts) as d:
        create_accounts(pg, db, ["alice"])
        clients = [d.connect() for _ in range(4)]
        for c in clients:
            expect_status(c.request(".use pg"), "+OK bind=pg")
        t0 = time.time()
        for c in clients:
            c.send("SELECT pg_sleep(0.8) AS s\n")
        for c in clients:
            expect_status(c.read_response(), "+OK rows=1")
        took = time.time() - t0
        if took > 2.5:
            raise TestFailure("4 x pg_sleep(0.8) with pool_size=4 took %.1fs: not run "
                              "in parallel" % took)
        wait_for(lambda: len(pg.backends(db)) == 1, 6,
                 "server connections back down to pool_min=1 after idle_timeout=500ms")
        wait_for(lambda: binds_by_name(clients[0])["pg"]["connections"] == "1", 3,
                 ".binds connections back down to 1")
        time.sleep(1.0)
        eq(len(pg.backends(db)), 1, "connections kept open (pool_min=1) after a while")
        expect_rows(clients[0].request("SELECT name FROM accounts"), [["alice"]])


def test_pg_statement_timeout_cancels_on_server():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, opts={"statement_timeout": "500"}) as d:
        create_accounts(pg, db, ["alice"])
        c = d.connect()
        expect_status(c.request(".use pg"), "+OK bind=pg")
        expect_rows(c.request("SELECT pg_sleep(0.1) AS s, 1 AS one"), [["", "1"]])
        t0 = time.time()
        r = c.request("SELECT pg_sleep(20) AS s")
        took = time.time() - t0
        expect_err(r, "TIMEOUT")
        if took > 4:
            raise TestFailure("statement_timeout=500ms but -ERR TIMEOUT came after %.1fs" % took)

        def still_running():
            return [b for b in pg.backends(db)
                    if b[1] == "active" and "pg_sleep(20)" in b[2]]
        wait_for(lambda: not still_running(), 3, "the timed-out statement gone from "
                 "pg_stat_activity (%r)" % (still_running(),))
        expect_status(c.request(".ping"), "+OK")
        expect_rows(c.request("SELECT name FROM accounts"), [["alice"]])
        # also inside a transaction, which then must be rolled back
        expect_status(c.request("BEGIN"), "+OK changes=0")
        expect_status(c.request("INSERT INTO accounts (name) VALUES ('bob')"), "+OK changes=1")
        expect_err(c.request("SELECT pg_sleep(20) FROM accounts"), "TIMEOUT")
        expect_ok(c.request("ROLLBACK"))
        expect_rows(c.request("SELECT name FROM accounts"), [["alice"]])
        eq(pg.psql("SELECT name FROM accounts", db=db), [["alice"]], "after ROLLBACK")


def test_pg_large_result_streams_in_bounded_memory():
    pg = shared()
    n = 1000000
    # an ASan build keeps up to 256 MB of freed memory in quarantine: keep
    # that small so RSS measures the daemon (other builds ignore it)
    asan = ":".join(x for x in (os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=16") if x)
    with pg.database() as db, pg_daemon(pg, db, env={"ASAN_OPTIONS": asan}) as d:
        c = d.connect()
        c.sock.settimeout(60)
        expect_status(c.request(".use pg"), "+OK bind=pg")
        expect_rows(c.request("SELECT 1 AS one"), [["1"]])
        rss0 = rss_kb(d.pid)
        peak = rss0
        c.send("SELECT g, repeat('x', 100) AS pad FROM generate_series(1, %d) g\n" % n)
        pad = b"x" * 100
        expect = 1
        header = None
        status = None
        left = b""
        got = 0
        slow_until = time.time() + 2.5
        while status is None:
            if time.time() < slow_until:
                data = c.sock.recv(16384)      # a slow reader for 2.5 s
                time.sleep(0.02)
            else:
                data = c.sock.recv(1 << 20)
            if not data:
                raise TestFailure("connection closed after %d rows" % (expect - 1))
            got += len(data)
            if got > (4 << 20) or time.time() < slow_until:
                peak = max(peak, rss_kb(d.pid))
                got = 0
            lines = (left + data).split(b"\n")
            left = lines.pop()
            for line in lines:
                if line[:1] == b"=":
                    num, _, rest = line[1:].partition(b"\t")
                    if num != str(expect).encode() or rest != pad:
                        raise TestFailure("row %d is %r" % (expect, line[:200]))
                    expect += 1
                elif header is None and line[:1] == b"*":
                    header = line
                else:
                    status = line
                    break
        eq(header, b"*g\tint4\tpad\ttext", "header")
        eq(status, b"+OK rows=%d" % n, "status line after %d rows" % (expect - 1))
        eq(expect - 1, n, "rows received")
        growth = (peak - rss0) / 1024.0
        if growth > 100:
            raise TestFailure("daemon RSS grew by %.0f MB while streaming (from %.0f MB)"
                              % (growth, rss0 / 1024.0))
        expect_rows(c.request("SELECT 2 AS two"), [["2"]])
test_pg_large_result_streams_in_bounded_memory.timeout = 90


def test_pg_slow_query_does_not_delay_others():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db) as d:
        create_accounts(pg, db, ["alice"])
        a = d.connect()
        a.sock.settimeout(30)
        expect_status(a.request(".use pg"), "+OK bind=pg")
        a.send("SELECT pg_sleep(3) AS s, 'slow' AS tag\n")
        time.sleep(0.3)
        if a.readable_now():
            raise TestFailure("pg_sleep(3) answered at once: %r" % a.read_response())
        b = d.connect()
        t0 = time.time()
        expect_status(b.request("INSERT INTO test1 (color) VALUES ('fast')"),
                      "+OK changes=1 last_id=1")
        expect_rows(b.request("SELECT color FROM test1"), [["fast"]])
        expect_status(b.request(".ping"), "+OK")
        expect_rows(b.request("SELECT name FROM accounts"), [["alice"]])   # another pg conn
        took = time.time() - t0
        if a.readable_now():
            raise TestFailure("the slow PostgreSQL query finished before the others were "
                              "answered (they took %.1fs)" % took)
        r = a.read_response()
        expect_rows(r, [["", "slow"]])


def test_pg_connect_timeout_counts_from_the_attempt():
    """Opening the binds before the loop runs takes time (here a schema
    that fills a table for about a second); the PostgreSQL bind's
    connect_timeout must count from its own connection attempt, not from
    the daemon's start."""
    slow = ("CREATE TABLE test1 (id INTEGER PRIMARY KEY, color VARCHAR(64) DEFAULT 'red');\n"
            "CREATE TABLE filler (x);\n"
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500000) "
            "INSERT INTO filler SELECT x FROM c;\n")
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db)
        with pg_daemon(pg, db, opts={"connect_timeout": "300", "pool_min": "1"},
                       bind_opts={"default": {"schema": "slow.sql"}}, files={"slow.sql": slow}) as d:
            log = d.stderr_text()
            if "applied" not in log:
                raise TestFailure("the slow schema did not run:\n" + log)
            if "cannot connect" in log or "timeout after" in log:
                raise TestFailure("the first connection attempt timed out at once:\n" + log)
            c = d.connect()
            expect_rows(c.request("SELECT count(*) FROM accounts WHERE false"), [["0"]])
