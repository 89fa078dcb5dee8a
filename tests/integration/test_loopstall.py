"""The loop-stall detector (issue 18): .stats counts the turns of the
event loop, those that worked over 1 ms and over 10 ms, and the longest
one and when; a turn over loop_stall_warn is logged, at most one line per
10 s. The stall here is a real one: a reload of a configuration with
hundreds of thousands of [tables] entries is parsed and swapped on the
loop."""

import calendar
import re
import socket
import time

import harness
from harness import DEFAULT_TABLES, Daemon, Skip, TestFailure, eq, expect_ok, expect_rows

LOOP_COLUMNS = [("loop_turns", "INTEGER"), ("turns_over_1ms", "INTEGER"), ("turns_over_10ms", "INTEGER"),
                ("longest_turn_ms", "REAL"), ("longest_turn_at", ""), ("loop_cpu_ms", "REAL"),
                ("loop_wait_ms", "REAL")]
# Enough [tables] entries that a reload takes well over 10 ms, and over
# 100 ms (its time grows with the entries: about 80 ms for 100,000, 350 ms
# for 400,000 on the loaded test machine; about 10 times that under ASan).
BIG_TABLES = list(DEFAULT_TABLES) + [("stall_t%d" % i, "default") for i in range(100000)]
HUGE_TABLES = list(DEFAULT_TABLES) + [("stall_t%d" % i, "default") for i in range(500000)]
# A threshold that such a reload passes, and that the tiny turns of an
# otherwise idle daemon do not reach even when descheduled on a busy
# machine.
WARN_MS = "100"
WARN_RE = re.compile(r"WARN loop stall: (one turn of the event loop worked ([0-9.]+) ms \(loop_stall_warn = "
                     r"(\d+) ms\)|(\d+) turns of the event loop worked over loop_stall_warn \((\d+) ms\) in the "
                     r"last \d+ s, the longest ([0-9.]+) ms)")


def _loop(c):
    """The (all) row's loop columns as a dict; the bind rows have \\N there."""
    r = expect_ok(c.request(".stats"))
    names = [n for n, _ in r.columns]
    at = names.index(LOOP_COLUMNS[0][0])
    eq(r.columns[at:at + 7], LOOP_COLUMNS, ".stats loop columns")
    for row in r.rows[:-1]:
        eq(row[at:at + 7], [None] * 7, "loop columns of bind row %s" % row[0])
    eq(r.rows[-1][0], "(all)", "last row")
    return dict(zip([n for n, _ in LOOP_COLUMNS], r.rows[-1][at:at + 7]))


def _on_loop(c):
    """memory_db's reads answered on the loop (.stats on_loop)."""
    r = expect_ok(c.request(".stats"))
    return int([row for row in r.dicts() if row["bind"] == "memory_db"][0]["on_loop"])


def _at_ms(text):
    """longest_turn_at (2026-12-03T19:45:50.102Z) as ms since the epoch."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z$", text or "")
    if m is None:
        raise TestFailure("longest_turn_at %r is not an ISO 8601 UTC time with ms" % text)
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) * 1000 + int(m.group(2))


def _warnings(d):
    return WARN_RE.findall(d.stderr_text())


def _told(d):
    """Turns over the threshold the warnings told of."""
    return sum(1 if g[1] else int(g[3]) for g in _warnings(d))


def test_idle_daemon_has_no_stalls():
    """An idle daemon: once started (its first turns install the binds'
    catalogs), no turn over 1 ms, and the loop sleeps (the watch's prepare
    handle does not keep it turning). On a machine so busy that one of its
    tiny turns was descheduled for over 1 ms (its wait for a CPU grew), the
    2 s window is tried again, up to 3 times; a detector that counted the
    time spent waiting for events as work would fail every window (each
    idle turn waits about 250 ms). Under valgrind, which runs the daemon
    10 to 50 times slower, an idle turn's work (a catalog read's answer,
    .stats itself) may take a millisecond: there only turns over 10 ms
    are judged."""
    keys = ("turns_over_10ms",) if harness.VALGRIND else ("turns_over_1ms", "turns_over_10ms")
    with Daemon() as d:
        c = d.connect()
        time.sleep(1)
        for attempt in range(3):
            first = _loop(c)
            time.sleep(2)
            then = _loop(c)
            stalls = [int(then[k]) - int(first[k]) for k in keys]
            waited = float(then["loop_wait_ms"] or 0) - float(first["loop_wait_ms"] or 0)
            if not any(stalls) or waited < 1 or attempt == 2:
                break
        eq(stalls, [0] * len(keys), "%s in 2 s of an idle daemon: %r then %r" % (" and ".join(keys), first, then))
        # Little CPU: no busy loop.
        cpu = float(then["loop_cpu_ms"]) - float(first["loop_cpu_ms"])
        if not 0 < cpu < 200:
            raise TestFailure("the loop thread used %.1f ms of CPU in 2 s of an idle daemon" % cpu)
        turns = int(then["loop_turns"]) - int(first["loop_turns"])
        # The idle sweep (4/s), the catalog reads (0.5/s) and .stats itself.
        if not 1 <= turns < 100:
            raise TestFailure("%d loop turns in 2 s of an idle daemon" % turns)
        eq(_warnings(d), [], "stall warnings")


def test_reload_stall_counted_and_logged():
    """A reload that takes tens of ms on the loop is counted in .stats
    with its time, and logged once; more within 10 s are summed up in the
    next line."""
    with Daemon(server={"loop_stall_warn": WARN_MS}) as d:
        c = d.connect()
        before = _loop(c)
        d.rewrite_config(tables=HUGE_TABLES, server={"loop_stall_warn": WARN_MS})
        start = time.time()
        expect_ok(c.request(".reload"))
        took_ms = (time.time() - start) * 1000
        after = _loop(c)
        end = time.time()
        if int(after["turns_over_10ms"]) < int(before["turns_over_10ms"]) + 1:
            raise TestFailure("a %.0f ms reload is not counted over 10 ms: %r then %r" % (took_ms, before, after))
        if int(after["turns_over_1ms"]) < int(after["turns_over_10ms"]):
            raise TestFailure("fewer turns over 1 ms than over 10 ms: %r" % after)
        longest = float(after["longest_turn_ms"])
        if not int(WARN_MS) < longest <= took_ms + 50:
            raise TestFailure("longest turn %.3f ms for a reload answered in %.0f ms" % (longest, took_ms))
        # The loop thread was on a CPU or waiting for one all along the
        # turn (reading the file and parsing it never sleeps).
        spent = (float(after["loop_cpu_ms"]) - float(before["loop_cpu_ms"]) +
                 float(after["loop_wait_ms"]) - float(before["loop_wait_ms"]))
        if spent < 0.8 * longest:
            raise TestFailure("a %.1f ms turn, but the loop thread spent %.1f ms on a CPU or waiting for one: %r"
                              " then %r" % (longest, spent, before, after))
        at = _at_ms(after["longest_turn_at"]) / 1000.0
        if not start - 1 <= at <= end + 1:
            raise TestFailure("longest_turn_at %s is not the reload's time (%.3f..%.3f)"
                              % (after["longest_turn_at"], start, end))
        got = _warnings(d)
        eq(len(got), 1, "warning lines after one stall: %r" % d.stderr_tail(5))
        eq(got[0][2], WARN_MS, "threshold in the warning")
        if abs(float(got[0][1]) - longest) > 0.1:
            raise TestFailure("the warning says %s ms, .stats %.3f ms" % (got[0][1], longest))
        # Two more: at most one line per 10 s, and every stall is told,
        # the later ones summed up in the next line.
        for _ in range(2):
            expect_ok(c.request(".reload"))
        deadline = time.time() + 30
        while _told(d) < 3 and time.time() < deadline:
            time.sleep(0.25)
        lines = [l for l in d.stderr_text().splitlines() if "WARN loop stall" in l]
        if _told(d) < 3:
            raise TestFailure("3 stalls, told: %r" % lines)
        stamps = [time.mktime(time.strptime(l[:19], "%Y-%m-%d %H:%M:%S")) + float(l[19:23]) for l in lines]
        for a, b in zip(stamps, stamps[1:]):
            if b - a < 9.9:
                raise TestFailure("warnings %.1f s apart: %r" % (b - a, lines))
        # The lines after the first sum up the stalls since; a reload that
        # itself takes 10 s (valgrind: 7.5-10 s each) gets a line of its own.
        for g in _warnings(d)[1:]:
            eq(g[4] or g[2], WARN_MS, "threshold in the line %r" % (g,))


def test_stall_warning_off():
    """loop_stall_warn = 0: nothing logged, the turns still counted."""
    with Daemon(server={"loop_stall_warn": "0"}) as d:
        c = d.connect()
        d.rewrite_config(tables=BIG_TABLES, server={"loop_stall_warn": "0"})
        expect_ok(c.request(".reload"))
        after = _loop(c)
        if int(after["turns_over_10ms"]) < 1:
            raise TestFailure("the reload's turn is not counted: %r" % after)
        time.sleep(0.3)
        eq(_warnings(d), [], "stall warnings with loop_stall_warn = 0")


def _pipelined_reads(n):
    """A fresh daemon, a client that pipelines n reads of the memory bind
    (each answered on the loop in about 15 us), and another that asks
    .stats after. (reads answered on the loop, longest turn in ms, turns
    over 10 ms)."""
    with Daemon() as d:
        c = d.connect()
        expect_ok(c.request(".use memory_db"))
        expect_ok(c.request("INSERT INTO test3 (color) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
                            "SELECT i + 1 FROM n WHERE i < 500) SELECT 'c' || i FROM n"))
        read = "SELECT count(*) AS n FROM test3 WHERE color LIKE 'c%'"
        expect_rows(c.request(read), [["500"]])
        before = _loop(c)
        if float(before["longest_turn_ms"]) >= 100:
            raise TestFailure("a turn of %s ms before the test" % before["longest_turn_ms"])
        on_loop = _on_loop(c)
        hog = socket.create_connection(d.addr, timeout=120)
        hog.sendall(b".use memory_db\n" + (read + "\n").encode() * n)
        answer, pending, answers = b"=500\n+OK rows=1\n", b"", 0
        while answers < n:
            more = hog.recv(1 << 20)
            if not more:
                raise TestFailure("the daemon closed the connection after %d answers" % answers)
            pending += more
            answers += pending.count(answer)
            pending = pending[pending.rfind(answer) + len(answer):] if answer in pending else pending[-64:]
        hog.close()
        after = _loop(c)
        return (_on_loop(c) - on_loop, float(after["longest_turn_ms"]),
                int(after["turns_over_10ms"]) - int(before["turns_over_10ms"]))


def test_one_clients_pipeline_does_not_hold_the_loop():
    """A client that pipelines thousands of reads, each answered on the
    loop in tens of microseconds, gets a slice of each loop turn (0.5 ms),
    then the others' turn: no turn works for long. Before, one turn went
    through all it had read (up to 2 MB of requests: 20,000 of these
    reads took one turn of about 300 ms, while every other client
    waited). A read preempted past the loop's budget (200 us) sends the
    next 64 runs of its text to the workers, and on a busy machine most may
    go there: with no long turn, the test then tries again, and cannot tell
    after 3 tries."""
    n = 20000
    for attempt in range(3):
        on_loop, longest, over_10ms = _pipelined_reads(n)
        if longest >= 100:
            raise TestFailure("one turn of the loop worked %.1f ms (%d turns over 10 ms) while a client "
                              "pipelined %d reads (%d answered on the loop)" % (longest, over_10ms, n, on_loop))
        if on_loop >= n // 2:
            return
    raise Skip("too busy a machine: %d of %d reads answered on the loop" % (on_loop, n))
