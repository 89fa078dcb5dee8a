"""What one request may hold. Before: a connection that had not logged in
could send `$8 1000` and 300 parameter lines of 1 MiB, never finished, and
the daemon held +300 MB for it (three such connections reached 935 MB).
Now a whole request is bounded by max_request_total (SQL and parameter
lines together), and before .auth, when users are configured, by 4 KiB,
with requests decoded one at a time; over a bound: -ERR TOOLONG, the
announced parameter lines are skipped, and the connection stays usable."""

import os
import threading
import time

from harness import (Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows,
                     expect_status, make_config, rss_kib)
from test_auth import PASSWORDS, users_text

MIB = 1 << 20


def test_unauthenticated_request_memory_is_bounded():
    # Under ASan, freed read buffers wait in its quarantine (tests/run sets
    # 16 MB, as here), which would look like growth.
    asan = ":".join(x for x in (os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=16") if x)
    d = Daemon(config=make_config(server={"auth_fail_delay": "0"}) + users_text(), env={"ASAN_OPTIONS": asan})
    with d:
        probe = d.connect()
        expect_status(probe.request(".auth alice %s" % PASSWORDS["alice"]), "+OK user=alice")
        base = rss_kib(d.pid)
        line = b"t" + b"x" * (MIB - 1) + b"\n"
        conns = [d.connect() for _ in range(2)]
        peak = [base]
        done = []

        def send(c):
            c.send(b"$8 1000\nSELECT ?\n")
            for _ in range(150):
                c.send(line)
                peak[0] = max(peak[0], rss_kib(d.pid))
            done.append(c)

        threads = [threading.Thread(target=send, args=(c,), daemon=True) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        eq(len(done), 2, "senders finished")
        peak[0] = max(peak[0], rss_kib(d.pid))
        grew = peak[0] - base
        if grew > 32 * 1024:
            raise TestFailure("RSS grew by %d KiB for two unauthenticated clients sending 150 MiB each "
                              "of one request" % grew)
        for c in conns:
            r = c.read_response()
            expect_err(r, "TOOLONG")
            if ".auth" not in r.err_msg:
                raise TestFailure("the message does not say the bound is before login: %r" % r.status)
            # The rest of the announced parameter lines is skipped; then
            # the connection logs in and works.
            c.send(b"n\n" * 850)
            expect_status(c.request(".auth bob %s" % PASSWORDS["bob"]), "+OK user=bob")
            expect_rows(c.request("SELECT 1 AS one"), [["1"]])
        expect_ok(probe.request(".ping"))


def test_request_total_bound_after_login_and_without_users():
    big = "x" * (900 * 1024)
    for users in (False, True):
        cfg = make_config(server={"max_request_total": "2M"}) + (users_text() if users else "")
        with Daemon(config=cfg) as d:
            c = d.connect()
            if users:
                expect_status(c.request(".auth alice %s" % PASSWORDS["alice"]), "+OK user=alice")
            # 1.8 MB with its parameters: fine.
            r = expect_ok(c.inline("SELECT length(?) + length(?) AS n", [big, big]))
            eq(r.rows, [[str(2 * len(big))]], "two 900 KiB parameters")
            # Three of them: 2.7 MB, over max_request_total.
            r = c.inline("SELECT length(?) + length(?) + length(?) AS n", [big, big, big])
            expect_err(r, "TOOLONG")
            if "2097152" not in r.err_msg:
                raise TestFailure("the message does not give the bound: %r" % r.status)
            # A bulk request whose SQL alone cannot fit, and the next request.
            c.send(b"$%d 1\n" % (2 * MIB) + b"-" * (2 * MIB) + b"\nn\n")
            expect_err(c.read_response(), "TOOLONG")
            expect_rows(c.request("SELECT 2 AS two"), [["2"]])


def test_pipelined_requests_hold_at_most_max_request_total():
    # Requests read ahead behind a running statement are decoded only
    # while the queued ones hold less than max_request_total: 100
    # pipelined requests of 1.9 MB each behind a long statement are no
    # longer read (128 x 1.9 MB held, +186 MB RSS, before). Counted as what
    # the daemon takes from the socket while the statement runs, which
    # allocators (ASan's quarantine, valgrind) do not blur. The statement
    # would count for hours: statement_timeout ends it, so it runs for the
    # whole measurement however fast the machine is.
    from harness import SLOW_FOREVER, SLOW_SQL, encode_inline
    with Daemon(server={"max_request": "2M", "max_request_total": "2M"},
                bind_opts={"default": {"pool_size": "1", "statement_timeout": "4000"}}) as d:
        c = d.connect()
        one = encode_inline("SELECT length(?) AS n", ["y" * (1900 * 1024)])
        data = (SLOW_SQL % SLOW_FOREVER).encode() + b"\n" + one * 100
        c.sock.setblocking(False)
        sent = 0
        t_end = time.time() + 1.5
        while time.time() < t_end:
            try:
                sent += c.sock.send(data[sent:sent + MIB])
            except BlockingIOError:
                time.sleep(0.01)
        if c.readable_now():
            raise TestFailure("the long statement ended too soon for this test")
        if sent > 40 * MIB:
            raise TestFailure("the daemon took %d MB of pipelined requests (1.9 MB each) behind a running "
                              "statement with max_request_total = 2M" % (sent // MIB))
        c.sock.settimeout(120)
        sender = threading.Thread(target=c.send, args=(data[sent:],), daemon=True)
        sender.start()
        r = c.read_responses(101)
        expect_err(r[0], "TIMEOUT")
        for x in r[1:]:
            eq((x.status, x.rows), ("+OK rows=1", [[str(1900 * 1024)]]), "a pipelined request")
        sender.join(10)


test_pipelined_requests_hold_at_most_max_request_total.timeout = 90
