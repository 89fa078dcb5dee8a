#!/usr/bin/python3
"""The cost of a large [tables] map (issue 18): for each size N, the time
a daemon takes from its start to its first answer with N entries, then
the time of a `.reload` onto another map of N entries and the longest
turn of the event loop that `.stats` saw afterwards (the reload's parse).
Not a test: figures for tests/bench/RESULTS.md.

Usage: SQLMUXD=path/to/sqlmuxd tests/bench/cfg_rules_map.py [N ...]
(default 20000 100000). Prints one line per size.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import harness  # noqa: E402
from harness import DEFAULT_TABLES, Conn, Daemon, expect_ok, expect_status  # noqa: E402

harness.START_TIMEOUT = 600  # main's parse of 100,000 entries takes tens of seconds


def tables(n, prefix):
    return list(DEFAULT_TABLES) + [("%s%d" % (prefix, i), ("default", "second_db")[i % 2]) for i in range(n)]


def longest_turn(c):
    r = expect_ok(c.request(".stats"))
    at = [name for name, _ in r.columns].index("longest_turn_ms")
    return float(r.rows[-1][at])


def measure(n):
    start = time.time()
    with Daemon(tables=tables(n, "a"), server={"loop_stall_warn": "0"}) as d:
        started = time.time() - start
        c = Conn(d.addr, timeout=600)
        expect_status(c.request(".route SELECT * FROM a%d" % (n - 1)),
                      "+OK bind=%s" % ("default", "second_db")[(n - 1) % 2])
        d.rewrite_config(tables=tables(n, "b"), server={"loop_stall_warn": "0"})
        t0 = time.time()
        expect_ok(c.request(".reload"))
        reload_s = time.time() - t0
        longest = longest_turn(c)
        expect_status(c.request(".route SELECT * FROM b%d" % (n - 2)),
                      "+OK bind=%s" % ("default", "second_db")[(n - 2) % 2])
    print("N=%d start_to_ping=%.3f s reload=%.3f s longest_turn_ms=%.1f" % (n, started, reload_s, longest),
          flush=True)


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["20000", "100000"]:
        measure(int(arg))
