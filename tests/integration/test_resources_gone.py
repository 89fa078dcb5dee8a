"""A client that goes away while its statement runs. The daemon reads no
more from a client that ended its input (FIN: "answer what I sent", as
nc -N does), so before, a client that then reset its connection, or
closed a unix socket, left its statement running to the end (a recursive
CTE seen busy at 80 s, holding the write lock). Now a running statement's
socket is checked four times a second; a reset (TCP) or a full close (unix
socket) cancels it. A TCP client that closes normally cannot be told from
one that half-closed and waits: its statement runs (statement_timeout
bounds it) and the session ends when the answer cannot be written."""

import socket
import time

from harness import SLOW_FOREVER, SLOW_SQL, Daemon, TestFailure, eq, expect_status, recv_until, scaled

FOREVER = SLOW_SQL % SLOW_FOREVER


def _busy(c):
    return [r for r in c.request(".clients").dicts() if r["state"] == "busy"]


def _wait_not_busy(c, timeout, what):
    deadline = time.time() + scaled(timeout)
    while _busy(c):
        if time.time() > deadline:
            raise TestFailure("%s: its statement still runs after %g s" % (what, scaled(timeout)))
        time.sleep(0.05)


def _wait_busy(c):
    deadline = time.time() + scaled(10)
    while not _busy(c):
        if time.time() > deadline:
            raise TestFailure("the statement never showed as running")
        time.sleep(0.02)


def test_reset_after_end_of_input_cancels_the_statement():
    with Daemon(bind_opts={"default": {"pool_size": "1"}}) as d:
        c = d.connect()
        s = socket.create_connection(d.addr, timeout=10)
        # An answer it will not read, then a statement that runs for ever,
        # then the end of its input: the daemon stops reading it.
        s.sendall(b"SELECT 1 AS one\n" + FOREVER.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        _wait_busy(c)
        time.sleep(0.3)
        # Closed with unread data: the kernel resets the connection.
        s.close()
        _wait_not_busy(c, 3, "a client that reset its connection")
        expect_status(c.request("INSERT INTO test1 (color) VALUES ('free')"), "+OK changes=1 last_id=1")
        if "closed its connection during a statement" not in d.stderr_text():
            raise TestFailure("the log does not say why the statement was cancelled")


def test_unix_client_closing_cancels_the_statement():
    with Daemon(unix=True, bind_opts={"default": {"pool_size": "1"}}) as d:
        c = d.connect()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(d.unix_socket)
        s.sendall(FOREVER.encode() + b"\n")
        _wait_busy(c)
        s.close()      # no reset on a unix socket, but the peer is gone
        _wait_not_busy(c, 3, "a unix socket client that closed")
        expect_status(c.request("INSERT INTO test1 (color) VALUES ('free')"), "+OK changes=1 last_id=1")


def test_half_close_still_gets_its_answer():
    # nc -N: the end of input means "answer what I sent", even when the
    # statement runs for seconds (the check must not take it as gone).
    with Daemon() as d:
        s = socket.create_connection(d.addr, timeout=30)
        s.sendall((SLOW_SQL % 3000000).encode() + b"\nSELECT 2 AS two\n")
        s.shutdown(socket.SHUT_WR)
        got = recv_until(s, b"=2\n+OK rows=1\n", "answers after a half-close")
        eq(got, b"*n\t\n=3000000\n+OK rows=1\n*two\t\n=2\n+OK rows=1\n", "answers after a half-close")
        s.close()
