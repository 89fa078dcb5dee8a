"""max_value: the largest string or blob one statement may make or return.
Before it, two clients asking SELECT zeroblob(500000000) took the daemon's
memory to about 2.9 GB (the value, then its hex form in the answer); now
SQLite refuses such a value before allocating it (SQLITE_LIMIT_LENGTH on
every connection, the quick-read connection's own smaller limit kept) and
the client gets -ERR TOOBIG."""

import threading
import time

from harness import (Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows, rss_kib)


def test_huge_value_is_toobig_and_memory_stays_bounded():
    with Daemon() as d:
        c = d.connect()
        expect_rows(c.request("SELECT length(zeroblob(1000000)) AS n"), [["1000000"]])
        base = rss_kib(d.pid)
        peak = [base]
        answers = []
        stop = []

        def watch():
            while not stop:
                peak[0] = max(peak[0], rss_kib(d.pid))
                time.sleep(0.005)

        def ask(sql):
            k = d.connect()
            k.sock.settimeout(60)
            answers.append(k.request(sql))

        w = threading.Thread(target=watch, daemon=True)
        w.start()
        askers = [threading.Thread(target=ask, args=("SELECT zeroblob(500000000) AS z",)),
                  threading.Thread(target=ask, args=("SELECT hex(zeroblob(500000000)) AS z",))]
        for t in askers:
            t.start()
        for t in askers:
            t.join(90)
        stop.append(1)
        w.join(5)
        eq(len(answers), 2, "answers")
        for r in answers:
            expect_err(r, "TOOBIG")
            if "max_value" not in r.err_msg:
                raise TestFailure("the TOOBIG message does not name max_value: %r" % r.status)
        grew = peak[0] - base
        if grew > 100 * 1024:
            raise TestFailure("RSS grew by %d KiB for two refused 500 MB values" % grew)
        # The connection goes on.
        expect_rows(c.request("SELECT 1 AS one"), [["1"]])


def test_max_value_setting_bounds_values_on_workers_and_quick_reads():
    with Daemon(server={"max_value": "100k"}) as d:
        c = d.connect()
        expect_rows(c.request("SELECT length(zeroblob(100000)) AS n"), [["100000"]])
        expect_err(c.request("SELECT zeroblob(102401) AS z"), "TOOBIG")
        # Also values built along the way, and rows written.
        expect_err(c.request("SELECT length(zeroblob(200000)) AS n"), "TOOBIG")
        expect_err(c.request("INSERT INTO test1 (color) VALUES (hex(zeroblob(60000)))"), "TOOBIG")
        expect_err(c.inline("INSERT INTO test1 (color) VALUES (?)", ["x" * 150000]), "TOOBIG")
        expect_rows(c.request("SELECT count(*) FROM test1"), [["0"]])
        # A read on the in-memory bind (answered on the loop thread when
        # small) gets the same limit: one value under it, one over it.
        expect_ok(c.request("INSERT INTO test3 (color) VALUES ('x')"))
        r = expect_ok(c.request("SELECT length(hex(zeroblob(50000))) AS n FROM test3"))
        eq(r.rows, [["100000"]], "a 100,000-byte value under max_value = 100k")
        expect_err(c.request("SELECT hex(zeroblob(60000)) AS h FROM test3"), "TOOBIG")
        expect_err(c.request("SELECT zeroblob(150000) AS z FROM test3"), "TOOBIG")
        # Reloaded: the new limit applies to the next statement.
        d.rewrite_config(server={"max_value": "1M"})
        expect_ok(c.request(".reload"))
        expect_rows(c.request("SELECT length(zeroblob(500000)) AS n"), [["500000"]])
        expect_err(c.request("SELECT zeroblob(2000000) AS z"), "TOOBIG")
