"""client_output_timeout: a client that reads none of its answers while it
holds a backend connection is disconnected, its statement cancelled and
its transaction rolled back. Before: clients that sent a big query with a
4 KiB receive buffer and never read held every connection of the bind for
ever (statement_timeout does not count a statement paused for a client
that does not read), and other clients waited or got BUSY."""

import socket
import time

from harness import (Daemon, TestFailure, eq, expect_ok, expect_rows, expect_status, scaled)

BIG_SQL = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) "
           "SELECT x, printf('%.200c', 'x') AS pad FROM c")


def non_reader(d, requests):
    """A connection with a 4 KiB receive buffer that sends requests and
    never reads."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(d.addr)
    s.sendall(requests.encode())
    return s


def closed_by_daemon(s, timeout):
    """True when the daemon closed s within timeout (its unread data is
    drained here: a reset or an end of stream)."""
    deadline = time.time() + scaled(timeout)
    s.settimeout(0.2)
    while time.time() < deadline:
        try:
            if not s.recv(1 << 20):
                return True
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True
    return False


def answered_once_cut_off(ask, hog, what):
    """ask() (a request that needs the connection hog holds) is answered
    within 3 s (scaled), and hog is disconnected. Returns the answer."""
    t0 = time.time()
    r = ask()
    took = time.time() - t0
    if took > scaled(3.0):
        raise TestFailure("%s waited %.2f s for the connection of a client that does not read" % (what, took))
    if not closed_by_daemon(hog, 5):
        raise TestFailure("the client that does not read is still connected")
    hog.close()
    return r


def test_client_that_does_not_read_loses_its_connection():
    with Daemon(server={"client_output_timeout": "1000"}, bind_opts={"default": {"pool_size": "1"}}) as d:
        c = d.connect()
        # One client holds the bind's only connection with a result it
        # does not read; another, in a transaction, also stops reading.
        hog = non_reader(d, BIG_SQL + "\n")
        time.sleep(0.3)
        # The write needs that connection: it is answered once the hog is
        # cut off (busy_timeout 5 s would answer BUSY otherwise).
        r = answered_once_cut_off(lambda: c.request("INSERT INTO test1 (color) VALUES ('after')"), hog,
                                  "the insert")
        expect_status(r, "+OK changes=1 last_id=1")
        # In a transaction: cut off and rolled back.
        txn = non_reader(d, "BEGIN\nINSERT INTO test1 (color) VALUES ('rolled back')\n" + BIG_SQL + "\n")
        deadline = time.time() + scaled(5)
        while d.stderr_text().count("client_output_timeout") < 2 and time.time() < deadline:
            time.sleep(0.05)   # not reading meanwhile
        if not closed_by_daemon(txn, 1):
            raise TestFailure("the client that does not read, in a transaction, is still connected")
        txn.close()
        expect_rows(c.request("SELECT color FROM test1 ORDER BY id"), [["after"]])
        eq(d.stderr_text().count("client_output_timeout"), 2, "log lines of the disconnects")
        # A client that reads slowly (4 KiB every 0.1 s) but reads is not
        # cut off, though its answer waits for it all the time.
        slow = non_reader(d, BIG_SQL + "\n")
        t_end = time.time() + 3.0
        while time.time() < t_end:
            if not slow.recv(4096):
                raise TestFailure("a client reading slowly was disconnected")
            time.sleep(0.1)
        eq(d.stderr_text().count("client_output_timeout"), 2, "log lines of the disconnects")
        slow.close()
        expect_ok(c.request(".ping"))


test_client_that_does_not_read_loses_its_connection.timeout = 60


def test_client_output_timeout_zero_is_off():
    with Daemon(server={"client_output_timeout": "0"}, bind_opts={"default": {"pool_size": "1"}}) as d:
        hog = non_reader(d, BIG_SQL + "\n")
        time.sleep(2.5)
        c = d.connect()
        clients = c.request(".clients").dicts()
        if len(clients) != 2:
            raise TestFailure("with client_output_timeout = 0 the client that does not read was cut: %r"
                              % clients)
        hog.close()
