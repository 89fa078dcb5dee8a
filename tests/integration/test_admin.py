"""Operation: the admin commands (.stats, .clients, .version, .reload),
connection logging (log_connections), and what the log never shows."""

import os
import re
import socket
import subprocess
import time

from harness import (REPO, SLOW_FOREVER, Daemon, TestFailure, daemon_binary, eq, expect_err, expect_ok, expect_rows,
                     expect_status, start_slow)

STATS_COLUMNS = [("bind", ""), ("statements", "INTEGER"), ("errors", "INTEGER"), ("rows", "INTEGER"),
                 ("time_ms", "REAL"), ("avg_ms", "REAL"), ("pool_size", "INTEGER"),
                 ("connections", "INTEGER"), ("in_use", "INTEGER"), ("transactions", "INTEGER"),
                 ("clients", "INTEGER"), ("on_loop", "INTEGER"), ("wal_bytes", "INTEGER"),
                 ("loop_turns", "INTEGER"), ("turns_over_1ms", "INTEGER"), ("turns_over_10ms", "INTEGER"),
                 ("longest_turn_ms", "REAL"), ("longest_turn_at", ""), ("loop_cpu_ms", "REAL"),
                 ("loop_wait_ms", "REAL"), ("in_doubt", "INTEGER"), ("idle_polls", "INTEGER"),
                 ("idle_polls_caught", "INTEGER"), ("idle_polls_busy", "INTEGER"), ("idle_poll_ms", "REAL"),
                 ("send_batches", "INTEGER"), ("sends_batched", "INTEGER"),
                 ("idle_reads", "INTEGER"), ("idle_rounds", "INTEGER")]
CLIENTS_COLUMNS = [("id", "INTEGER"), ("peer", ""), ("state", ""), ("bind", ""), ("in_txn", ""),
                   ("statements", "INTEGER"), ("connected_ms", "INTEGER"), ("statement_ms", "INTEGER"),
                   ("user", ""), ("tls", ""), ("tls_subject", "")]


def _stats(c):
    r = expect_ok(c.request(".stats"))
    eq(r.columns, STATS_COLUMNS, ".stats columns")
    eq(r.facts["rows"], str(len(r.rows)), "rows=")
    return r, dict((row[0], dict(zip(r.names, row))) for row in r.rows)


def test_stats_counts_per_bind(d):
    c = d.connect()
    _, before = _stats(c)
    eq(list(before), ["default", "second_db", "memory_db", "*federation*", "(all)"], ".stats rows")
    for b in ("default", "second_db", "memory_db"):
        eq([before[b][k] for k in ("statements", "errors", "rows")], ["0", "0", "0"], b)
        eq(before[b]["pool_size"], "4", b + " pool_size")
    for i in range(5):
        expect_ok(c.request("INSERT INTO test2 (color) VALUES ('c%d')" % i))
    expect_rows(c.request("SELECT color FROM test2 WHERE id <= 3 ORDER BY id"), [["c0"], ["c1"], ["c2"]])
    expect_err(c.request("INSERT INTO test2 (id) VALUES (1)"), "CONSTRAINT")
    expect_err(c.request("SELECT nosuch FROM test2"), "SQL")
    expect_ok(c.request("INSERT INTO test3 DEFAULT VALUES"))
    expect_rows(c.request("SELECT 1 AS a UNION ALL SELECT 2"), [["1"], ["2"]])   # default: no table
    # Refused before reaching a bind: not counted anywhere.
    expect_err(c.request("CREATE TRIGGER tr AFTER INSERT ON test1 BEGIN DELETE FROM test2; END"), "CROSSBIND")
    other = d.connect()
    expect_status(other.request("BEGIN"), "+OK changes=0")
    expect_ok(other.request("INSERT INTO test2 (color) VALUES ('txn')"))
    r, s = _stats(c)
    eq(r.facts["clients"], "2", "clients=")
    sec = s["second_db"]
    eq([sec[k] for k in ("statements", "errors", "rows")], ["9", "2", "3"], "second_db counts")
    eq([s["memory_db"][k] for k in ("statements", "errors", "rows")], ["1", "0", "0"], "memory_db")
    eq([s["default"][k] for k in ("statements", "errors", "rows")], ["1", "0", "2"], "default")
    if not float(sec["time_ms"]) > 0 or abs(float(sec["avg_ms"]) * 9 - float(sec["time_ms"])) > 0.01:
        raise TestFailure("time_ms/avg_ms: %r" % sec)
    # The open transaction holds one connection of second_db; clients are
    # counted on the bind they are on.
    eq(sec["transactions"], "1", "transactions")
    eq(sec["in_use"], "1", "in_use")
    eq(sec["clients"], "1", "second_db clients")
    eq(s["default"]["clients"], "1", "default clients")
    al = s["(all)"]
    eq([al[k] for k in ("statements", "errors", "rows", "pool_size", "transactions", "clients")],
       ["11", "2", "5", "14", "1", "2"], "(all) row")


def test_stats_time_counts_statements_under_a_microsecond(d):
    """time_ms sums every statement's time in nanoseconds: a read answered
    on the loop often takes under a microsecond, and summing whole
    microseconds per statement counted 20,000 of them as 0.14 ms, not 3.3."""
    c = d.connect()
    _, before = _stats(c)
    n = 20000
    for _ in range(n // 1000):
        c.send(b"SELECT 1\n" * 1000)
        for r in c.read_responses(1000):
            expect_rows(r, [["1"]])
    _, after = _stats(c)
    b, a = before["default"], after["default"]
    eq(int(a["statements"]) - int(b["statements"]), n, "statements")
    spent_ns = (float(a["time_ms"]) - float(b["time_ms"])) * 1e6
    cpu_ns = (float(after["(all)"]["loop_cpu_ms"]) - float(before["(all)"]["loop_cpu_ms"])) * 1e6
    # The statements' own time is most of the loop's work here (about half
    # its CPU time, the rest reading, parsing and writing); in whole
    # microseconds it came to a tenth.
    if spent_ns < 0.3 * cpu_ns:
        raise TestFailure("%d statements: time_ms %.3f, the loop's CPU time %.3f ms: time lost" %
                          (n, spent_ns / 1e6, cpu_ns / 1e6))


def test_stats_in_use_is_free_once_answered(d):
    """A connection is back in its pool before its answer goes out: a client
    that has read the answer never sees it in .stats' in_use. (A worker
    thread used to post the answer first and mark itself free after; with
    the CPUs busy, the loop's wake-up preempted it in between.)"""
    c = d.connect()
    spinners = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(3)]
    try:
        for i in range(400):
            expect_ok(c.request("INSERT INTO test2 (color) VALUES ('c%d')" % i))   # a second_db worker
            expect_ok(c.request("SELECT count(*) FROM test1 JOIN test2 ON test1.id = test2.id"))  # federation
            _, s = _stats(c)
            busy = dict((b, s[b]["in_use"]) for b in ("second_db", "*federation*") if s[b]["in_use"] != "0")
            if busy:
                raise TestFailure("statement %d answered, still in use: %r" % (i, busy))
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def test_clients_lists_every_client(d):
    a = d.connect()
    b = d.connect()
    expect_status(b.request(".use memory_db"), "+OK bind=memory_db")
    expect_status(b.request("BEGIN"), "+OK changes=0")
    expect_ok(b.request("INSERT INTO test2 (color) VALUES ('x')"))
    expect_ok(a.request("SELECT 1"))
    slow = start_slow(d, SLOW_FOREVER, probe=a)
    time.sleep(0.25)
    r = expect_ok(a.request(".clients"))
    eq(r.columns, CLIENTS_COLUMNS, ".clients columns")
    rows = r.dicts()
    eq(len(rows), 3, "clients listed")
    by_peer = dict((row["peer"], row) for row in rows)
    for conn in (a, b, slow):
        peer = "%s:%d" % conn.sock.getsockname()
        if peer not in by_peer:
            raise TestFailure("peer %s not listed: %r" % (peer, rows))
    ra = by_peer["%s:%d" % a.sock.getsockname()]
    rb = by_peer["%s:%d" % b.sock.getsockname()]
    rs = by_peer["%s:%d" % slow.sock.getsockname()]
    eq((ra["state"], ra["bind"], ra["in_txn"], ra["statements"], ra["statement_ms"]),
       ("idle", "default", "no", "1", None), "the asking client")
    eq((rb["state"], rb["bind"], rb["in_txn"], rb["statements"]), ("idle", "second_db", "yes", "1"),
       "client in a transaction")
    eq((rs["state"], rs["bind"], rs["in_txn"]), ("busy", "default", "no"), "busy client")
    if rs["statement_ms"] is None or int(rs["statement_ms"]) < 250:
        raise TestFailure("statement age of the busy client: %r" % rs["statement_ms"])
    ids = sorted(int(row["id"]) for row in rows)
    eq(len(set(ids)), 3, "distinct ids")
    if int(ra["connected_ms"]) < int(rs["statement_ms"]):
        raise TestFailure("connected_ms shorter than the statement age: %r" % rows)
    slow.abort()    # a reset: its statement is interrupted


def test_clients_unix_peer():
    with Daemon(unix=True) as d:
        c = d.connect(d.unix_socket)
        rows = expect_ok(c.request(".clients")).dicts()
        eq([row["peer"] for row in rows], ["unix"], "peer of a unix client")


def test_version(d):
    c = d.connect()
    r = expect_ok(c.request(".version"))
    eq(r.columns, [("component", ""), ("version", "")], ".version columns")
    v = dict(r.rows)
    eq(sorted(v), ["libpq", "libuv", "protocol", "sqlite", "sqlmuxd"], "components")
    eq(v["protocol"], "1", "protocol version")
    out = subprocess.run([daemon_binary(), "--version"], stdout=subprocess.PIPE, timeout=10).stdout.decode()
    m = re.match(r"sqlmuxd (\S+) \(sqlite (\S+), libuv (\S+)\)", out)
    if m is None:
        raise TestFailure("--version: %r" % out)
    eq((v["sqlmuxd"], v["sqlite"], v["libuv"]), m.groups(), ".version vs --version")
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", v["libpq"]):
        raise TestFailure("libpq version %r" % v["libpq"])


def test_help_lists_admin_commands(d):
    r = expect_ok(d.connect().request(".help"))
    names = [row[0] for row in r.rows]
    for cmd in (".stats", ".clients", ".version", ".reload"):
        if cmd not in names:
            raise TestFailure("%s not in .help: %r" % (cmd, names))


def test_reload_command(d):
    c = d.connect()
    expect_status(c.request(".reload"), "+OK binds=3")
    expect_status(c.request(".ping"), "+OK")
    if "c1: .reload" not in d.stderr_text() and not re.search(r"c\d+: \.reload", d.stderr_text()):
        raise TestFailure("who asked for the reload is not logged")


def test_cli_prints_admin_tables(d):
    cli = os.path.join(REPO, os.environ.get("BUILD", "build"), "sqlmux")
    if not os.path.exists(cli):
        raise TestFailure("the CLI %s is not built" % cli)
    p = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(d.port), "-c", ".stats"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20, cwd=REPO)
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0 or "statements" not in out or "second_db" not in out or "(all)" not in out:
        raise TestFailure("sqlmux -c .stats (status %d):\n%s" % (p.returncode, out))


# ---------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------

def test_log_connections():
    with Daemon(server={"log_connections": "on"}) as d:
        c = d.connect()
        expect_ok(c.request("SELECT 1"))
        expect_ok(c.request("INSERT INTO test1 DEFAULT VALUES"))
        peer = "127.0.0.1:%d" % c.sock.getsockname()[1]
        m = re.search(r" INFO c(\d+): connected from " + re.escape(peer) + "\n", d.stderr_text())
        if m is None:
            raise TestFailure("no connect line with the peer:\n" + d.stderr_text())
        c.close()
        want = r" INFO c%s: disconnected \(%s, 2 statements, [0-9.]+ s\)\n" % (m.group(1), re.escape(peer))
        deadline = time.time() + 5
        while not re.search(want, d.stderr_text()):
            if time.time() > deadline:
                raise TestFailure("no disconnect line with id, peer, statements:\n" + d.stderr_text())
            time.sleep(0.05)
    with Daemon() as d:
        c = d.connect()
        expect_ok(c.request("SELECT 1"))
        c.close()
        time.sleep(0.3)
        if "connected from" in d.stderr_text():
            raise TestFailure("connections logged with log_connections off (default)")


def test_log_lines_have_level():
    with Daemon(server={"log_connections": "on"}) as d:
        c = d.connect()
        expect_ok(c.request("SELECT 1"))
        d.stop()
        for line in d.stderr_text().splitlines():
            if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (ERROR|WARN|INFO|DEBUG) ", line):
                raise TestFailure("log line without time and level: %r" % line)


def test_no_secrets_in_log():
    """Parameter values, statement text values and passwords never reach
    the log at the default level, whatever happens."""
    secret = "s3cr3t-Value-42"
    port = _closed_port()
    cfg_binds = [("default", "sqlite:///app.db"), ("second_db", "sqlite:///second.db"),
                 ("memory_db", "sqlite:///:memory:"),
                 ("pg", "postgresql://app:%s@127.0.0.1:%d/db?connect_timeout=1" % (secret, port))]
    with Daemon(binds=cfg_binds, server={"log_connections": "on"},
                tables=[("test2", "second_db"), ("test3", "memory_db"), ("pgt", "pg")]) as d:
        c = d.connect()
        expect_ok(c.inline("INSERT INTO test1 (color) VALUES (?)", [secret]))
        expect_err(c.inline("INSERT INTO test1 (id, color) VALUES (1, ?)", [secret]), "CONSTRAINT")
        expect_err(c.inline("SELECT ? FROM nosuch", [secret]), "SQL")
        c.request("SELECT * FROM pgt WHERE a = '%s'" % secret)       # the server is down
        expect_ok(c.request(".binds"))
        expect_ok(c.request(".reload"))
        expect_ok(c.request(".stats"))
        time.sleep(0.5)
        text = d.stderr_text()
        if secret in text:
            lines = [l for l in text.splitlines() if secret in l]
            raise TestFailure("the secret reached the log:\n" + "\n".join(lines))
        if "pg" not in text:
            raise TestFailure("the pg bind left no trace in the log (test not effective?)")


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
