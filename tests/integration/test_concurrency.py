"""Concurrency: a slow statement on one bind does not stall other binds or
other clients, concurrent writers do not get BUSY, large results stream."""

import threading
import time

from harness import Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows, expect_status, start_slow

SLOW_N = 8000000      # ~1.6 s in the daemon on the 2-core test machine (0.2 s per million; more under ASan)
SLOW = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
        "SELECT count(*) AS n FROM c, test2" % SLOW_N)


def _start_slow(d):
    setup = d.connect()
    expect_status(setup.request("INSERT INTO test2 (color) VALUES ('one')"), "+OK changes=1 last_id=1")
    expect_ok(setup.request("INSERT INTO test3 (color) VALUES ('fast')"))
    a = d.connect()
    a.sock.settimeout(90)         # the slow statement may take long on a loaded machine
    a.send(SLOW + "\n")
    time.sleep(0.3)
    if a.readable_now():
        raise TestFailure("the slow statement answered too soon; raise SLOW_N")
    return a


def test_slow_bind_does_not_stall_other_binds(d):
    a = _start_slow(d)
    b = d.connect()
    expect_rows(b.request("SELECT color FROM test3"), [["fast"]])
    expect_rows(b.request("SELECT count(*) FROM test1"), [["0"]])
    expect_status(b.request(".ping"), "+OK")
    if a.readable_now():
        raise TestFailure("the slow statement finished before the fast ones were answered; "
                          "cannot tell (raise SLOW_N)")
    expect_rows(a.read_response(), [[str(SLOW_N)]])


def _read_beside_slow(d, sql, what):
    """Run `sql` (a read of test2: one row, 'one') on a second connection
    while the slow statement runs on second_db; it must be answered first.
    Returns second_db's .stats counters (on_loop, statements) it added."""
    a = _start_slow(d)
    b = d.connect()

    def counters():
        rows = expect_ok(b.request(".stats")).dicts()
        row = [r for r in rows if r["bind"] == "second_db"][0]
        return int(row["on_loop"]), int(row["statements"])

    before = counters()
    expect_rows(b.request(sql), [["one"]])
    if a.readable_now():
        raise TestFailure(what)
    after = counters()
    expect_rows(a.read_response(), [[str(SLOW_N)]])
    return after[0] - before[0], after[1] - before[1]


def test_slow_statement_does_not_block_same_bind_reader(d):
    # The reader must run on a second worker of the bind: printf() keeps a
    # statement off the loop's quick reads (README, Design notes), which
    # would answer it without any worker. With pool_size = 1 it waits.
    eq(_read_beside_slow(d, "SELECT printf('%s', color) AS color FROM test2",
                         "the reader was answered only after the slow statement (one worker?)"),
       (0, 1), "second_db statements (on the loop, run)")


def test_slow_statement_does_not_block_same_bind_quick_read():
    """The bind's only worker runs the slow statement: a plain read of the
    same bind is answered by a quick read on the loop meanwhile."""
    with Daemon(bind_opts={"second_db": {"pool_size": "1"}}) as d:
        eq(_read_beside_slow(d, "SELECT color FROM test2",
                             "the slow statement finished first; cannot tell (raise SLOW_N)"),
           (1, 1), "second_db statements (on the loop, run)")


def test_pipeline_order_across_binds(d):
    # One client: a slow statement, then fast ones on other binds. The
    # answers still come in request order.
    a = _start_slow(d)
    a.send(b"SELECT color FROM test3\n.ping\nSELECT 42 AS n\n")
    expect_rows(a.read_response(), [[str(SLOW_N)]])
    expect_rows(a.read_response(), [["fast"]])
    eq(a.read_response().raw, [b"+OK"])
    expect_rows(a.read_response(), [["42"]])


def _writers(d, table, nthreads, per_thread):
    errors = []
    ids = []
    lock = threading.Lock()

    def work(k):
        try:
            c = d.connect()
            for i in range(per_thread):
                r = c.request("INSERT INTO %s (color) VALUES ('t%d-%d')" % (table, k, i))
                if not r.ok or not r.status.startswith("+OK changes=1 last_id="):
                    with lock:
                        errors.append("thread %d insert %d: %r" % (k, i, r))
                    return
                with lock:
                    ids.append(int(r.facts["last_id"]))
        except Exception as e:  # report, do not hang
            with lock:
                errors.append("thread %d: %r" % (k, e))

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if any(t.is_alive() for t in threads):
        errors.append("writer threads still running after 60 s")
    if errors:
        raise TestFailure("%d error(s), first ones:\n  %s" % (len(errors), "\n  ".join(errors[:10])))
    total = nthreads * per_thread
    eq(sorted(ids), list(range(1, total + 1)), "last_id values")
    return total


def test_concurrent_writers_file_bind(d):
    total = _writers(d, "test2", 4, 200)
    expect_rows(d.connect().request("SELECT count(*) FROM test2"), [[str(total)]])
    eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(total,)])


def test_concurrent_writers_memory_bind(d):
    total = _writers(d, "test3", 4, 100)
    expect_rows(d.connect().request("SELECT count(*) FROM test3"), [[str(total)]])


def test_concurrent_writers_and_readers(d):
    stop = threading.Event()
    errors = []

    def reader():
        try:
            c = d.connect()
            while not stop.is_set():
                r = c.request("SELECT count(*) FROM test2")
                if r.status != "+OK rows=1":
                    errors.append(r)
                    return
        except Exception as e:
            errors.append(e)

    readers = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        _writers(d, "test2", 3, 100)
    finally:
        stop.set()
        for t in readers:
            t.join(10)
    if errors:
        raise TestFailure("reader errors: %r" % errors[:5])


def test_large_result_streams(d):
    c = d.connect()
    n = 200000
    r = c.request("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
                  "SELECT x FROM c" % n)
    expect_status(r, "+OK rows=%d" % n)
    eq(len(r.rows), n, "rows received")
    for i, row in enumerate(r.rows):
        if row != [str(i + 1)]:
            raise TestFailure("row %d is %r" % (i, row))


def test_large_result_while_others_work(d):
    # A client that does not read its big result must not hold up others.
    big = d.connect()
    big.send("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) "
             "SELECT x, 'some padding text to make rows longer' AS p FROM c\n")
    time.sleep(0.5)
    other = d.connect()
    for i in range(20):
        expect_status(other.request("INSERT INTO test1 DEFAULT VALUES"), "+OK changes=1 last_id=%d" % (i + 1))
    expect_rows(other.request("SELECT count(*) FROM test1"), [["20"]])
    r = big.read_response()
    expect_status(r, "+OK rows=300000")
    eq(r.rows[-1], ["300000", "some padding text to make rows longer"], "last row")


def _writer_waits(d, table):
    a = d.connect()
    b = d.connect()
    expect_status(a.request("BEGIN"), "+OK changes=0")
    expect_status(a.request("INSERT INTO %s (color) VALUES ('a')" % table), "+OK changes=1 last_id=1")
    b.send("INSERT INTO %s (color) VALUES ('b')\n" % table)
    time.sleep(0.5)
    if b.readable_now():
        raise TestFailure("B's write during A's transaction answered at once: %r" % b.read_response())
    expect_status(a.request("COMMIT"), "+OK changes=0")
    # B waited (busy_timeout 5000) and then wrote.
    expect_status(b.read_response(), "+OK changes=1 last_id=2")
    expect_rows(b.request("SELECT color FROM %s ORDER BY id" % table), [["a"], ["b"]])


def test_writer_waits_for_other_transaction_file_bind(d):
    _writer_waits(d, "test2")


def test_writer_waits_for_other_transaction_memory_bind(d):
    _writer_waits(d, "test3")


def test_disconnect_frees_worker_of_slow_statement():
    # With one connection in the pool, a client that sends a very slow
    # statement and leaves must not hold the bind for the statement's
    # whole run (backend.h: the running job is interrupted).
    from harness import Daemon
    with Daemon(bind_opts={"second_db": {"pool_size": "1"}}) as d:
        setup = d.connect()
        expect_ok(setup.request("INSERT INTO test2 (color) VALUES ('one')"))
        a = d.connect()
        a.send("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000000) "
               "SELECT count(*) FROM c, test2\n")
        time.sleep(0.5)
        a.abort()      # a reset: the client is gone (a FIN would only end its input)
        b = d.connect()
        t0 = time.time()
        b.sock.settimeout(60)
        expect_rows(b.request("SELECT color FROM test2"), [["one"]])
        if time.time() - t0 > 5:
            raise TestFailure("the bind stayed busy %.1fs after the client left" % (time.time() - t0))


def test_sqlite_statement_timeout():
    # statement_timeout applies to SQLite binds too: a runaway statement is
    # interrupted (progress handler) and answered -ERR TIMEOUT; the client
    # and the bind go on.
    from harness import Daemon
    with Daemon(bind_opts={"second_db": {"statement_timeout": "300", "pool_size": "1"}}) as d:
        c = d.connect()
        c.sock.settimeout(30)
        expect_ok(c.request("INSERT INTO test2 (color) VALUES ('x')"))
        t0 = time.time()
        r = c.request("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
                      "SELECT count(*) FROM n, test2")
        expect_err(r, "TIMEOUT")
        if time.time() - t0 > 10:
            raise TestFailure("the timeout took %.1fs" % (time.time() - t0))
        expect_rows(c.request("SELECT color FROM test2"), [["x"]])
        # other binds have no timeout
        expect_rows(c.request("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
                              "WHERE x < 300000) SELECT count(*) FROM n, test1 UNION ALL SELECT 1"),
                    [["0"], ["1"]])


def _thread_nices(pid):
    """{thread id: nice value} of a process (field 19 of /proc/.../stat)."""
    import os
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = int(fields[16])
    return out


def test_long_statement_yields_the_cpu(d):
    """A statement running past 50 ms drops its worker thread to nice 19
    (short statements of others run first on a busy machine) and the
    thread is back at nice 0 once it ends. Tests run as root, so the
    daemon may raise the priority back."""
    before = _thread_nices(d.pid)
    eq(set(before.values()), {0}, "every thread at nice 0 at first")
    slow = start_slow(d, rows=6000000)
    deadline = time.time() + 30
    while 19 not in _thread_nices(d.pid).values():
        if time.time() > deadline:
            raise TestFailure("no thread lowered to nice 19 while the long statement ran: %r"
                              % _thread_nices(d.pid))
        time.sleep(0.02)
    lowered = [t for t, n in _thread_nices(d.pid).items() if n == 19]
    eq(len(lowered), 1, "one thread lowered")
    if lowered[0] == d.pid:
        raise TestFailure("the loop thread was lowered")
    c = d.connect()
    expect_rows(c.request("SELECT count(*) FROM test1"), [["0"]])   # others are served meanwhile
    expect_ok(slow.read_response())
    # Restored right after the statement, before its answer is sent.
    eq(set(_thread_nices(d.pid).values()), {0}, "every thread back at nice 0")
    expect_rows(c.request("SELECT 1"), [["1"]])
