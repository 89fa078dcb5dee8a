"""Statements across binds under the client's flow control (issue 15): a
client that never reads a huge result of a join across binds holds one
federation thread, paused, and the daemon's memory does not grow; the
others go on; a client that goes away frees the thread."""

import socket
import time

from harness import Daemon, TestFailure, eq, expect_rows, expect_status, rss_kib, scaled

FILL = ("INSERT INTO {t} (id, color) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
        "WHERE x < 2000) SELECT x, printf('%.100c', 'c') FROM c")
# 2000 x 2000 rows of ~220 bytes: about 900 MB of answer.
HUGE = "SELECT test1.id, test3.id, test1.color, test3.color FROM test1, test3"


def federation(c):
    r = c.request(".stats")
    for row in r.rows:
        if row[0] == "*federation*":
            return dict(zip(r.names, row))
    raise TestFailure("no *federation* row")


def wait_for(fn, timeout, what):
    deadline = time.time() + scaled(timeout)
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.05)
    raise TestFailure("timed out waiting for " + what)


def test_non_reader_does_not_grow_memory():
    with Daemon(server={"client_output_timeout": "0", "federation_pool": "2"}) as d:
        c = d.connect()
        expect_status(c.request(FILL.format(t="test1")), "+OK changes=2000 last_id=2000")
        expect_status(c.request(FILL.format(t="test3")), "+OK changes=2000 last_id=2000")
        hog = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect(d.addr)
        hog.sendall((HUGE + "\n").encode())
        wait_for(lambda: federation(c)["in_use"] == "1", 5, "the join to start")
        time.sleep(0.5)
        before = rss_kib(d.proc.pid)
        time.sleep(2.0)
        after = rss_kib(d.proc.pid)
        # Paused: the client's socket and max_output (1 MiB) hold what was
        # made; the rest waits in SQLite, not in the daemon's memory.
        if after - before > 20 * 1024:
            raise TestFailure("the daemon grew %d KiB in 2 s for a client that does not read" % (after - before))
        eq(federation(c)["in_use"], "1", "the join holds its thread, paused")
        # Others are served meanwhile, on the other thread and on the binds.
        expect_rows(c.request("SELECT count(*) FROM test1 JOIN test3 USING (id)"), [["2000"]])
        expect_rows(c.request("SELECT count(*) FROM test1"), [["2000"]])
        # The client goes away: its statement stops and the thread is free.
        hog.close()
        wait_for(lambda: federation(c)["in_use"] == "0", 5, "the thread to be freed")
        # The thread is marked free before its answer reaches the loop, which
        # counts it: the error may show a moment after in_use does.
        try:
            wait_for(lambda: int(federation(c)["errors"]) >= 1, 5, "the interrupted join's error")
        except TestFailure:
            raise TestFailure("the interrupted join is not counted as an error: %r" % federation(c))
