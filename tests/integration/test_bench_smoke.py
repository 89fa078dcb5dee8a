"""The benchmark load generator ($BUILD/loadgen, tests/bench/loadgen.c) for
about a second against a real daemon: it must count answers, report a
throughput and latencies, and stop loudly on error replies. `make bench`
runs the real benchmarks; this only keeps the generator working."""

import os
import subprocess

from harness import REPO, TestFailure
from test_tls import TlsDaemon


def _loadgen():
    path = os.path.join(REPO, os.environ.get("BUILD", "build"), "loadgen")
    if not os.access(path, os.X_OK):
        raise TestFailure("%s is missing (make all builds it)" % path)
    return path


def _run(args, timeout=30):
    p = subprocess.run([_loadgen(), "-Q"] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    out = p.stdout.decode("utf-8", "replace").strip().splitlines()
    fields = dict(f.split("=", 1) for f in out[-1].split()) if out else {}
    return p.returncode, fields, p.stderr.decode("utf-8", "replace")


def test_loadgen_point_select(d):
    c = d.connect()
    for i in range(1, 101):
        c.request("INSERT INTO test3 (id, color) VALUES (%d, 'c%d')" % (i, i))
    rc, f, err = _run(["-m", "sqlmux", "-p", d.port, "-c", 4, "-P", 4, "-d", 1, "-w", 0.2, "-r", "1:100",
                       "-q", "?1 SELECT color FROM test3 WHERE id = ?\\ni{id}"])
    if rc != 0:
        raise TestFailure("loadgen exited with %d: %s" % (rc, err))
    if float(f.get("rps", 0)) <= 0 or int(f.get("requests", 0)) <= 0:
        raise TestFailure("no throughput reported: %r" % f)
    if int(f["errors"]) != 0 or not 0 < float(f["p50_us"]) <= float(f["p99_us"]) <= float(f["max_us"]):
        raise TestFailure("bad report: %r" % f)


def test_loadgen_fixed_count_in_a_transaction(d):
    rc, f, err = _run(["-m", "sqlmux", "-p", d.port, "-c", 1, "-P", 8, "-n", 500, "-i", "BEGIN", "-f", "COMMIT",
                       "-q", "INSERT INTO test3 (color) VALUES ('row-{seq}')"])
    if rc != 0 or f.get("requests") != "500":
        raise TestFailure("loadgen: status %d, %r, %s" % (rc, f, err))
    r = d.connect().request("SELECT color FROM test3")
    if len(r.rows) != 500:
        raise TestFailure("the transaction did not commit 500 rows: %r" % r)
    # {seq} renders 500 numbers in a row, each in plain decimal.
    colors = [row[0] for row in r.rows]
    first = min(int(c[4:]) for c in colors)
    if sorted(colors) != sorted("row-%d" % n for n in range(first, first + 500)):
        raise TestFailure("not the values {seq} renders: %r" % colors[:20])


def test_loadgen_counts_errors(d):
    rc, f, err = _run(["-m", "sqlmux", "-p", d.port, "-c", 2, "-d", 0.3, "-q", "SELECT * FROM no_such_table"])
    if rc != 3 or int(f.get("errors", 0)) == 0 or "no such table" not in err:
        raise TestFailure("errors not reported: status %d, %r, %s" % (rc, f, err))


def test_loadgen_over_tls():
    """-T (scenario 9): every pipelined answer over TLS is counted, with
    OpenSSL reading ahead of the record it hands over."""
    with TlsDaemon() as d:
        c = d.connect()
        for i in range(1, 101):
            c.request("INSERT INTO test3 (id, color) VALUES (%d, 'c%d')" % (i, i))
        rc, f, err = _run(["-m", "sqlmux", "-p", d.tls_port, "-T", "-c", 1, "-P", 16, "-n", 20000, "-r", "1:100",
                           "-q", "?1 SELECT color FROM test3 WHERE id = ?\\ni{id}"])
        if rc != 0 or f.get("requests") != "20000" or f.get("errors") != "0":
            raise TestFailure("loadgen -T: status %d, %r, %s" % (rc, f, err))
