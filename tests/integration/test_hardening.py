"""Hostile or broken clients: thousands of connections that never finish a
request, and a client that asks for a huge result and never reads it. The
daemon must keep serving everyone else, hold bounded memory, and give back
every descriptor and worker when those clients go away."""

import os
import resource
import signal
import socket
import time

from harness import (VALGRIND, Daemon, Skip, TestFailure, eq, expect_ok,
                     expect_rows, expect_status, recv_until, rss_kib, scaled)


def _fds(d):
    return len(os.listdir("/proc/%d/fd" % d.pid))


def _stats(c):
    """.stats as {bind: {column: value}}, (all) included."""
    return dict((row["bind"], row) for row in expect_ok(c.request(".stats")).dicts())


def _raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        raise Skip("RLIMIT_NOFILE hard limit %d < %d descriptors needed" % (hard, want))
    # The daemon, started after this, inherits the raised limit too.
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _until(cond, timeout, what):
    """Wait (timeout scaled) until cond() is true; else fail with what()."""
    deadline = time.time() + scaled(timeout)
    while not cond():
        if time.time() > deadline:
            raise TestFailure("%s (waited %gs)" % (what(), scaled(timeout)))
        time.sleep(0.05)


# ---- thousands of half-open connections ----------------------------------

def test_thousands_of_half_open_connections():
    # 2,500 clients that connect and never complete a request (2,000 send
    # nothing, 400 half a request line, 100 a bulk header and half its SQL)
    # hold a descriptor and a session each, nothing more: a normal client
    # keeps getting correct answers while they pile up, the half requests
    # are still answered once completed, and when they all close the
    # daemon is back to the descriptors it had. (Fewer under valgrind, where
    # each connection costs far more time; the paths are the same.)
    silent, half_line, half_bulk = (2000, 400, 100) if not VALGRIND else (300, 60, 40)
    n = silent + half_line + half_bulk
    _raise_nofile(n + 1024)
    # One connection per bind, so the SQLite files each worker opens (WAL,
    # shared memory) are all open before the first count.
    one = dict((name, {"pool_size": "1"}) for name in ("default", "second_db", "memory_db"))
    with Daemon(server={"max_clients": str(n + 100)}, bind_opts=one) as d:
        normal = d.connect()
        expect_status(normal.request("INSERT INTO test2 (color) VALUES ('first')"),
                      "+OK changes=1 last_id=1")
        expect_rows(normal.request("SELECT color FROM test2"), [["first"]])
        expect_rows(normal.request("SELECT count(*) FROM test3"), [["0"]])
        expect_rows(normal.request("SELECT count(*) FROM test1"), [["0"]])
        fd0 = _fds(d)
        socks = []
        halves = []          # (socket, rest of its request, the row it must get)
        try:
            k = 0
            while len(socks) < n:
                s = socket.create_connection(d.addr, timeout=10)
                i = len(socks)
                socks.append(s)
                if silent <= i < silent + half_line:
                    s.sendall(b"SELECT 'half-%d' AS h" % i)
                    halves.append((s, b"\n", b"=half-%d" % i))
                elif i >= silent + half_line:
                    sql = b"SELECT 'bulk-%d' AS h" % i
                    s.sendall(b"$%d\n" % len(sql) + sql[:len(sql) // 2])
                    halves.append((s, sql[len(sql) // 2:] + b"\n", b"=bulk-%d" % i))
                if len(socks) % 250 == 0:
                    # Every 250 connections, the normal client is served.
                    k += 1
                    expect_status(normal.request("INSERT INTO test3 (color) VALUES ('c%d')" % k),
                                  "+OK changes=1 last_id=%d" % k)
                    expect_rows(normal.request("SELECT count(*) FROM test3"), [[str(k)]])
                    expect_rows(normal.request("SELECT color FROM test2"), [["first"]])
            # The daemon accepted every one of them (a session each).
            _until(lambda: _fds(d) >= fd0 + n, 10,
                   lambda: "the daemon holds %d descriptors, want %d + %d half-open clients"
                   % (_fds(d), fd0, n))
            eq(_stats(normal)["(all)"]["clients"], str(n + 1), ".stats clients")
            # Still served with all of them open, on every bind, and new
            # clients too.
            for j in range(20):
                expect_rows(normal.request("SELECT %d + 1 AS n" % j), [[str(j + 1)]])
            expect_rows(normal.request("SELECT count(*) FROM test3"), [[str(k)]])
            expect_status(normal.request(".ping"), "+OK")
            fresh = d.connect()
            expect_rows(fresh.request("SELECT color FROM test2"), [["first"]])
            fresh.close()
            d.conns.remove(fresh)
            # Half requests were kept as sent: completed, they are answered.
            for s, rest, row in halves[::25]:
                s.sendall(rest)
            for s, rest, row in halves[::25]:
                got = recv_until(s, b"+OK rows=1\n", "a completed half request got no answer")
                eq(got.split(b"\n")[1], row, "answer to a completed half request")
        finally:
            for s in socks:
                s.close()
        # All gone: the daemon closes every session and descriptor.
        _until(lambda: _fds(d) <= fd0, 10,
               lambda: "descriptors after %d half-open clients closed: %d, before: %d"
               % (n, _fds(d), fd0))
        _until(lambda: _stats(normal)["(all)"]["clients"] == "1", 10,
               lambda: ".stats still counts %s clients" % _stats(normal)["(all)"]["clients"])
        expect_rows(normal.request("SELECT count(*) FROM test3"), [[str(k)]])
        expect_rows(d.connect().request("SELECT color FROM test2"), [["first"]])


test_thousands_of_half_open_connections.timeout = 120


# ---- a huge result nobody reads --------------------------------------------

# About 100 GB of text (1,000-byte rows), for a client that never reads: far
# more than any buffer the daemon could hold, and more than it could produce
# into the void before the checks below time out. Only the first few MB
# are ever produced when flow control works.
HUGE_ROWS = 100000000
HUGE_SQL = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
            "SELECT x, printf('%%.1000c', 'x') AS pad FROM c" % HUGE_ROWS)
RSS_BOUND_KIB = 64 * 1024


def test_unread_huge_result_holds_bounded_memory_and_is_cancelled():
    # A client sends a statement whose result is about 100 GB and never
    # reads. The daemon streams it only as fast as the client reads: its
    # RSS stays within 64 MB of what it was, other clients are served, and
    # when the client closes the statement is cancelled: the bind's only
    # worker (pool_size 1) is free for the next statement right away.
    with Daemon(bind_opts={"default": {"pool_size": "1"}}) as d:
        other = d.connect()
        # Warm the allocator and the chunk path with a 20 MB result read
        # in full, on the same bind.
        r = other.request("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                          "WHERE x < 20000) SELECT x, printf('%.1000c', 'x') AS pad FROM c")
        expect_status(r, "+OK rows=20000")
        eq(r.rows[-1], ["20000", "x" * 1000], "last row of the warm-up result")
        before = _stats(other)["default"]
        time.sleep(0.3)
        base = rss_kib(d.pid)

        slow = socket.create_connection(d.addr, timeout=10)
        slow.sendall(HUGE_SQL.encode() + b"\n")
        # It started: the first bytes of the result arrive (not read).
        _until(lambda: bool(slow.recv(1, socket.MSG_PEEK)), 10,
               lambda: "not one byte of the result arrived")

        peak = base
        served = 0
        t_end = time.time() + 5.0
        while time.time() < t_end:
            rss = rss_kib(d.pid)
            peak = max(peak, rss)
            if rss - base > 4 * RSS_BOUND_KIB:
                # It buffers the result: stop it before it eats the machine.
                d.proc.send_signal(signal.SIGKILL)
                d.proc.wait()
                raise TestFailure("RSS grew by %d KiB (and climbing) while a client did not read "
                                  "a huge result: the daemon buffers it" % (rss - base))
            # Meanwhile another client is served, on the other binds and
            # with commands.
            served += 1
            expect_status(other.request("INSERT INTO test2 (color) VALUES ('w%d')" % served),
                          "+OK changes=1 last_id=%d" % served)
            expect_rows(other.request("SELECT count(*) FROM test2"), [[str(served)]])
            expect_rows(other.request("SELECT count(*) FROM test3"), [["0"]])
            expect_status(other.request(".ping"), "+OK")
            time.sleep(0.05)
        grew = peak - base
        if grew > RSS_BOUND_KIB:
            raise TestFailure("RSS grew by %d KiB (bound %d KiB) while a client did not read "
                              "a huge result" % (grew, RSS_BOUND_KIB))
        # Still running (paused), on the bind's only connection.
        eq(_stats(other)["default"]["in_use"], "1", "default's connections in use while paused")

        slow.close()          # unread data: the daemon sees a reset
        # Cancelled: the bind's only worker answers the next statement, on
        # this client and a new one. Without cancelling it would be busy
        # producing the rest of 100 GB (or waiting for a reader) for good.
        expect_rows(other.request("SELECT count(*) FROM test1"), [["0"]])
        expect_status(other.request("INSERT INTO test1 (color) VALUES ('after')"),
                      "+OK changes=1 last_id=1")
        expect_rows(d.connect().request("SELECT color FROM test1"), [["after"]])
        _until(lambda: _stats(other)["default"]["in_use"] == "0", 10,
               lambda: "default's connections in use after the client left: %s"
               % _stats(other)["default"]["in_use"])
        after = _stats(other)["default"]
        produced = int(after["rows"]) - int(before["rows"])
        if produced >= HUGE_ROWS // 10:
            raise TestFailure("%d rows of the huge result were produced" % produced)


test_unread_huge_result_holds_bounded_memory_and_is_cancelled.timeout = 120
