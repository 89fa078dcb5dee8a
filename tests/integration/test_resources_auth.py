""".auth storms. Before: 250 connections pipelining 50 wrong .auth each
kept every thread of libuv's pool hashing (their password checks queued
in arrival order), and a legitimate login took seconds. Now at most two
checks run at once (below the pool's four threads, which PostgreSQL
cancel requests share), checks of peers with recent failures wait behind
everyone else's, and a connection is closed after 5 failed .auth, so a
storm costs the storming peer, not everyone; a closed connection's
queued check is dropped, not run."""

import socket
import struct
import time

from harness import (IO_TIMEOUT, TestFailure, eq, expect_err, expect_rows, expect_status, make_config,
                     scaled, Daemon)
from test_auth import PASSWORDS, users_text

STORM_CONNS = 250
STORM_AUTHS = 50


def _connect_from(source, addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.settimeout(IO_TIMEOUT)
    s.connect(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def test_auth_storm_does_not_delay_other_logins():
    with Daemon(config=make_config() + users_text()) as d:
        storm = []
        for _ in range(STORM_CONNS):
            s = _connect_from("127.0.0.1", d.addr)
            s.sendall(b".auth alice wrong\n" * STORM_AUTHS)
            storm.append(s)
        time.sleep(1.0)   # the storm's checks fill the queue
        # A login from another address is answered promptly, twice.
        for _ in range(2):
            t0 = time.time()
            s = _connect_from("127.0.0.2", d.addr)
            s.sendall((".auth bob %s\nSELECT 7 AS n\n" % PASSWORDS["bob"]).encode())
            got = b""
            while got.count(b"\n") < 4:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            took = time.time() - t0
            eq(got, b"+OK user=bob\n*n\t\n=7\n+OK rows=1\n", "the legitimate login's answers")
            if took > scaled(1.5):
                raise TestFailure("a legitimate login during an .auth storm took %.2f s" % took)
            s.close()
        # The storm goes away: its queued checks are dropped, not run, so
        # a login even from the storm's own address is answered at once.
        for s in storm:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        time.sleep(0.5)
        c = d.connect()
        t0 = time.time()
        expect_status(c.request(".auth bob %s" % PASSWORDS["bob"]), "+OK user=bob")
        took = time.time() - t0
        if took > scaled(1.5):
            raise TestFailure("a login after the storm left took %.2f s" % took)
        if d.stderr_text().count("authentication as alice failed") > 200:
            raise TestFailure("the checks of the storm's closed connections still ran")


test_auth_storm_does_not_delay_other_logins.timeout = 120


def test_connection_closed_after_five_failed_auth():
    with Daemon(config=make_config(server={"auth_fail_delay": "0"}) + users_text()) as d:
        c = d.connect()
        for i in range(4):
            r = expect_err(c.request(".auth alice wrong%d" % i), "AUTH")
            eq(r.status, "-ERR AUTH invalid user name or password", "failure %d" % (i + 1))
        r = expect_err(c.request(".auth carol nope"), "AUTH")
        eq(r.status, "-ERR AUTH invalid user name or password; too many failed .auth (5): closing",
           "the fifth failure")
        if not c.wait_closed(5):
            raise TestFailure("the connection stayed open after 5 failed .auth")
        if "5 failed .auth: closing" not in d.stderr_text():
            raise TestFailure("the log does not say why the connection was closed")
        # Another connection logs in at once: a connection's failures are its own.
        c2 = d.connect()
        expect_status(c2.request(".auth alice %s" % PASSWORDS["alice"]), "+OK user=alice")
        expect_rows(c2.request("SELECT 1 AS one"), [["1"]])
