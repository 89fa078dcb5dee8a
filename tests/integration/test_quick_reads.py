"""Quick reads: a SELECT outside a transaction is answered on the loop
thread when it is quick (the in-memory bind, or a file bind's pages in the
page cache), and goes to the bind's worker threads otherwise: when it runs
long, its answer is large, its pages are not cached, or it fails. Either
way the answer is the same; .stats counts the loop's in `on_loop`."""

import os
import subprocess
import threading
import time

from harness import (Daemon, Skip, TestFailure, eq, expect_err, expect_ok, expect_rows,
                     expect_status, start_slow)

ONE_WORKER = {"default": {"pool_size": "1"}, "second_db": {"pool_size": "1"},
              "memory_db": {"pool_size": "1"}}


def _stats(c):
    return dict((row["bind"], row) for row in expect_ok(c.request(".stats")).dicts())


def _on_loop(c, bind):
    return int(_stats(c)[bind]["on_loop"])


def test_reads_are_answered_on_the_loop(d):
    c = d.connect()
    expect_ok(c.request("INSERT INTO test3 (color) VALUES ('green')"))
    expect_ok(c.request("INSERT INTO test1 (color) VALUES ('amber')"))
    # A read that overruns the quick budget (200 us: a preemption on a
    # loaded machine is enough) goes to a worker, by design: a round that
    # sees one is tried again with texts of its own (a space more).
    for attempt in range(3):
        pad = " " * attempt
        before = _stats(c)
        expect_rows(c.request("SELECT color FROM test3" + pad), [["green"]])
        expect_rows(c.bulk("SELECT color FROM test1 WHERE id = ?1" + pad, [1]), [["amber"]])
        after = _stats(c)
        for bind in ("memory_db", "default"):
            eq(int(after[bind]["statements"]) - int(before[bind]["statements"]), 1, "%s statements" % bind)
        inline = [int(after[b]["on_loop"]) - int(before[b]["on_loop"]) for b in ("memory_db", "default")]
        if inline == [1, 1]:
            break
    eq(inline, [1, 1], "memory_db and default reads on the loop, three rounds")
    # Inside a transaction, its BEGIN with the first statement and its
    # COMMIT go to its worker; a read runs on the loop on the
    # transaction's own connection, and sees its write
    # (test_txn_inline.py).
    expect_ok(c.request("BEGIN"))
    expect_ok(c.request("INSERT INTO test3 (color) VALUES ('blue')"))
    expect_rows(c.request("SELECT count(*) FROM test3"), [["2"]])
    expect_ok(c.request("COMMIT"))
    eq(_on_loop(c, "memory_db"), int(after["memory_db"]["on_loop"]) + 1, "memory_db reads on the loop")


def test_reads_while_every_worker_is_busy():
    """With the bind's only worker running a long statement, a point read
    on the same bind is answered at once, and a write waits its turn."""
    opts = dict(ONE_WORKER, memory_db={"pool_size": "1", "busy_timeout": "600000"})
    with Daemon(bind_opts=opts) as d:
        c = d.connect()
        expect_ok(c.request("INSERT INTO test3 (color) VALUES ('one')"))
        slow = d.connect()
        slow.sock.settimeout(120)
        slow.send("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
                  "SELECT count(*) AS n FROM c, test3\n")
        probe = d.connect()
        deadline = time.time() + 60
        while _stats(probe)["memory_db"]["in_use"] != "1":   # the worker has taken it
            if time.time() > deadline:
                raise TestFailure("the long statement never showed as running")
            time.sleep(0.01)
        expect_rows(c.request("SELECT color FROM test3 WHERE id = 1"), [["one"]])
        if slow.readable_now():
            raise TestFailure("the long statement ended first; cannot tell")
        writer = d.connect()
        writer.send("INSERT INTO test3 (color) VALUES ('two')\n")
        if writer.readable_now(0.2):
            raise TestFailure("a write was answered while the only worker was busy")
        expect_rows(slow.read_response(), [["3000000"]])
        expect_status(writer.read_response(), "+OK changes=1 last_id=2")
        expect_rows(c.request("SELECT count(*) FROM test3"), [["2"]])


def test_long_and_large_reads_go_to_a_worker(d):
    c = d.connect()
    before = _on_loop(c, "memory_db")
    # Runs far past the loop's budget: handed to a worker, .ping meanwhile.
    slow = start_slow(d, rows=2000000)
    expect_status(c.request(".ping"), "+OK")
    expect_ok(slow.read_response())
    # An answer past the size budget (16 KiB): the whole of it, from a worker.
    expect_ok(c.request("INSERT INTO test3 (color) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
                        "SELECT i + 1 FROM n WHERE i < 2000) SELECT printf('c%050d', i) FROM n"))
    r = expect_ok(c.request("SELECT id, color FROM test3 ORDER BY id"))
    eq(len(r.rows), 2000, "rows")
    eq(r.rows[-1], ["2000", "c%050d" % 2000], "last row")
    # A value longer than the loop connection allows (256 KiB), too.
    r = expect_ok(c.request("SELECT length(printf('%.*c', 1000000, 'x')) AS n FROM test3 WHERE id = 1"))
    eq(r.rows, [["1000000"]], "long value")
    eq(_on_loop(c, "memory_db"), before, "memory_db reads on the loop")
    # Errors come from a worker, as they always did.
    expect_err(c.request("SELECT nope FROM test3"), "SQL", "no such column: nope")
    expect_err(c.bulk("SELECT color FROM test3 WHERE id = ?1", []), "PARAMS")
    # Small reads still run on the loop.
    expect_rows(c.request("SELECT count(*) FROM test3"), [["2000"]])
    eq(_on_loop(c, "memory_db"), before + 1, "memory_db reads on the loop")


def test_reads_see_each_answered_write(d):
    """A read sent after a write was answered sees it, even while other
    clients keep the loop's read snapshot busy; and a session's own
    pipelined write then read."""
    stop = threading.Event()
    errors = []

    def reader():
        r = d.connect()
        try:
            while not stop.is_set():
                r.send("SELECT count(*) FROM test3\n" * 16)
                for _ in range(16):
                    expect_ok(r.read_response())
        except Exception as e:  # noqa: B902 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        a, b = d.connect(), d.connect()
        for i in range(1, 301):
            a.send("INSERT INTO test3 (color) VALUES ('c')\nSELECT count(*) FROM test3\n")
            expect_status(a.read_response(), "+OK changes=1 last_id=%d" % i)
            expect_rows(a.read_response(), [[str(i)]])
            expect_rows(b.request("SELECT max(id) FROM test3"), [[str(i)]])
    finally:
        stop.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    if _on_loop(a, "memory_db") < 600:
        raise TestFailure("the reads did not run on the loop: on_loop %d" % _on_loop(a, "memory_db"))


def _fs_type(path):
    return subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True).stdout.strip()


def _evict(path):
    """Drop a file's pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_file_read_not_in_the_page_cache_goes_to_a_worker(d):
    """The loop never waits for the disk: a file bind's read whose pages
    are not in the page cache is answered by a worker; once they are cached
    again, the read runs on the loop."""
    if _fs_type(d.data_dir) in ("tmpfs", "ramfs"):
        raise Skip("the data directory is in memory: reads never wait for a disk")
    c = d.connect()
    expect_ok(c.request("INSERT INTO test1 (color) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
                        "SELECT i + 1 FROM n WHERE i < 500) SELECT printf('c%040d', i) FROM n"))
    expect_rows(c.request("SELECT color FROM test1 WHERE id = 250"), [["c%040d" % 250]])
    before = _on_loop(c, "default")
    # A write makes the loop's connection start from a fresh page cache;
    # then the files' pages leave the kernel's.
    expect_ok(c.request("UPDATE test1 SET color = 'changed' WHERE id = 1"))
    os.sync()
    for name in ("app.db", "app.db-wal"):
        path = os.path.join(d.data_dir, name)
        if os.path.exists(path):
            _evict(path)
    expect_rows(c.request("SELECT color FROM test1 WHERE id = 400"), [["c%040d" % 400]])
    eq(_on_loop(c, "default"), before, "default reads on the loop (pages evicted)")
    for name in ("app.db", "app.db-wal"):
        path = os.path.join(d.data_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
    expect_rows(c.request("SELECT color FROM test1 WHERE id = 400"), [["c%040d" % 400]])
    eq(_on_loop(c, "default"), before + 1, "default reads on the loop (pages cached again)")
