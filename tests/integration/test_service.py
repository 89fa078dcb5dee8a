"""Running as a service: systemd's notify protocol (READY=1 once the binds
are open, RELOADING=1/READY=1 around a reload, STOPPING=1, STATUS=,
WATCHDOG=1), socket activation (LISTEN_FDS), graceful shutdown with
shutdown_timeout, the unit files (systemd-analyze verify) and
`make install`. The tests play systemd's part themselves."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import harness
from harness import (REPO, Daemon, NotifySocket, TestFailure, daemon_binary, eq, expect_ok,
                     expect_rows, expect_status, start_slow)


def _wait_exit(d, timeout=15):
    try:
        return d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise TestFailure("daemon did not exit within %ss; stderr:\n%s" % (timeout, d.stderr_tail(30)))


def _status_clients(n, start=0):
    """Index of the last STATUS= line counting clients, and the count."""
    found = None
    for i, m in enumerate(n.messages[start:], start):
        for line in m.split("\n"):
            mm = re.match(r"STATUS=(\d+) clients?, (\d+) binds?$", line)
            if mm:
                found = (i, int(mm.group(1)), int(mm.group(2)))
    return found


# ---------------------------------------------------------------------------
# sd_notify
# ---------------------------------------------------------------------------

def test_notify_ready_only_after_binds_open():
    # A schema slow enough that READY=1 before it finished would show.
    big = ("CREATE TABLE big (n INTEGER);\n"
           "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) "
           "INSERT INTO big SELECT x FROM c;\n")
    with NotifySocket() as n:
        d = Daemon(env={"NOTIFY_SOCKET": n.path}, start=False, files={"big.sql": big},
                   schemas={"memory_db": "big.sql"}, tables=[("big", "memory_db")])
        d.start(wait=False)
        i = n.wait_for("READY=1", timeout=120)
        # At READY=1 the schema has been applied and clients are served.
        c = d.connect()
        expect_rows(c.request("SELECT count(*) FROM big"), [["200000"]])
        text = d.stderr_text()
        if text.find("ready: 3 binds") < 0 or text.find("bind memory_db: sqlite in memory") < 0:
            raise TestFailure("READY=1 before the binds were open? stderr:\n" + text)
        st = _status_clients(n, i)
        if st is None or st[2] != 3:
            raise TestFailure("no STATUS= with 3 binds after READY=1: %r" % n.messages)
        d.cleanup()


test_notify_ready_only_after_binds_open.timeout = 300


def test_notify_status_follows_clients():
    with NotifySocket() as n, Daemon(env={"NOTIFY_SOCKET": n.path}) as d:
        n.wait_for("READY=1")
        conns = [d.connect() for _ in range(3)]
        for c in conns:
            expect_status(c.request(".ping"), "+OK")
        deadline = time.time() + 5
        while time.time() < deadline:
            n.poll(0.1)
            st = _status_clients(n)
            if st and st[1] == 3:
                break
        else:
            raise TestFailure("STATUS= never said 3 clients: %r" % n.messages)
        for c in conns:
            c.close()
        deadline = time.time() + 5
        while time.time() < deadline:
            n.poll(0.1)
            st = _status_clients(n)
            if st and st[1] == 0:
                break
        else:
            raise TestFailure("STATUS= never went back to 0 clients: %r" % n.messages)
        # Updates are coalesced: a burst of connections is not a burst of
        # datagrams.
        before = len(n.messages)
        burst = [d.connect() for _ in range(20)]
        for c in burst:
            expect_status(c.request(".ping"), "+OK")
            c.close()
        n.poll(1.5)
        sent = sum(1 for m in n.messages[before:] if m.startswith("STATUS="))
        if sent > 4:
            raise TestFailure("%d STATUS= datagrams for one burst of 20 clients" % sent)


def test_notify_reload_and_stopping():
    with NotifySocket() as n, Daemon(env={"NOTIFY_SOCKET": n.path}) as d:
        n.wait_for("READY=1")
        start = len(n.messages)
        d.send_signal(signal.SIGHUP)
        i = n.wait_for("RELOADING=1", start)
        if not any(l.startswith("MONOTONIC_USEC=") for l in n.messages[i].split("\n")):
            raise TestFailure("RELOADING=1 without MONOTONIC_USEC=: %r" % n.messages[i])
        n.wait_for("READY=1", i + 1)
        # A refused reload ends with READY=1 too: the daemon still serves.
        start = len(n.messages)
        with open(d.config_path, "a") as f:
            f.write("[tables]\nbroken = nosuch_bind\n")
        d.send_signal(signal.SIGHUP)
        i = n.wait_for("RELOADING=1", start)
        n.wait_for("READY=1", i + 1)
        expect_status(d.connect().request(".ping"), "+OK")
        start = len(n.messages)
        eq(d.stop(), 0, "exit status")
        n.poll(0.2)
        n.wait_for("STOPPING=1", start, timeout=1)
        if "READY=1" in n.lines(start):
            raise TestFailure("READY=1 during shutdown: %r" % n.messages[start:])


def test_no_notify_socket_no_messages():
    # Without NOTIFY_SOCKET nothing is sent and nothing breaks.
    with Daemon(env={"NOTIFY_SOCKET": None, "WATCHDOG_USEC": "100000"}) as d:
        c = d.connect()
        expect_ok(c.request("INSERT INTO test1 DEFAULT VALUES"))
        d.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        expect_status(c.request(".ping"), "+OK")
        if "watchdog" in d.stderr_text():
            raise TestFailure("watchdog set up without NOTIFY_SOCKET")


def test_watchdog():
    with NotifySocket() as n, Daemon(env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "300000"}) as d:
        n.wait_for("READY=1")
        start = len(n.messages)
        n.poll(1.2)
        pings = sum(1 for m in n.messages[start:] if m == "WATCHDOG=1")
        # Every 150 ms: about 8 in 1.2 s.
        if pings < 4:
            raise TestFailure("%d WATCHDOG=1 in 1.2 s with WatchdogSec=300ms: %r" % (pings, n.messages))
        # It keeps coming while a statement runs.
        c = start_slow(d, 1500000)
        start = len(n.messages)
        n.poll(harness.scaled(0.4))  # valgrind: a turn of the loop may take 270 ms
        if sum(1 for m in n.messages[start:] if m == "WATCHDOG=1") < 2:
            raise TestFailure("no WATCHDOG=1 while a statement runs")
        expect_rows(c.read_response(), [["1500000"]])
    with NotifySocket() as n, Daemon(env={"NOTIFY_SOCKET": n.path}) as d:
        n.wait_for("READY=1")
        n.poll(0.5)
        if "WATCHDOG=1" in n.lines():
            raise TestFailure("WATCHDOG=1 without WATCHDOG_USEC")
    # WATCHDOG_PID names another process: not ours to feed.
    with NotifySocket() as n, Daemon(env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "200000",
                                          "WATCHDOG_PID": "1"}) as d:
        n.wait_for("READY=1")
        n.poll(0.5)
        if "WATCHDOG=1" in n.lines():
            raise TestFailure("WATCHDOG=1 although WATCHDOG_PID is another process")


test_watchdog.timeout = 300


# ---------------------------------------------------------------------------
# Socket activation
# ---------------------------------------------------------------------------

def _tcp_listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def _unix_listener(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(16)
    return s


def test_socket_activation_tcp_and_unix():
    tmp = tempfile.mkdtemp(prefix="sqlmux-act-")
    try:
        upath = os.path.join(tmp, "activated.sock")
        tcp = _tcp_listener()
        unix = _unix_listener(upath)
        with NotifySocket() as n:
            # The config names a port and a unix socket of its own: neither
            # may be bound when systemd passes sockets.
            d = Daemon(listen_sockets=[(tcp, "tcp"), (unix, "unix")], unix=True, start=False,
                       env={"NOTIFY_SOCKET": n.path})
            d.start(wait=False)
            n.wait_for("READY=1")
            c = d.connect(tcp.getsockname())
            expect_status(c.request("INSERT INTO test2 (color) VALUES ('via-tcp')"), "+OK changes=1 last_id=1")
            u = d.connect(upath)
            expect_rows(u.request("SELECT color FROM test2"), [["via-tcp"]])
            expect_status(u.request(".ping"), "+OK")
            # Connections queued before the daemon accepted are served too.
            if os.path.exists(d.unix_socket):
                raise TestFailure("the config's unix_socket was bound despite socket activation")
            cfg_port = int(re.search(r"listen = 127\.0\.0\.1:(\d+)", d.render_config()).group(1))
            try:
                socket.create_connection(("127.0.0.1", cfg_port), timeout=1).close()
                raise TestFailure("the config's listen port was bound despite socket activation")
            except OSError:
                pass
            text = d.stderr_text()
            for want in ("descriptor 3, tcp from systemd", "descriptor 4, unix from systemd"):
                if want not in text:
                    raise TestFailure("no %r in the log:\n%s" % (want, text))
            # The listeners survive a reload; shutdown leaves systemd's
            # socket file alone.
            d.send_signal(signal.SIGHUP)
            n.wait_for("RELOADING=1")
            expect_status(d.connect(upath).request(".ping"), "+OK")
            c.close()
            u.close()
            eq(d.stop(), 0, "exit status")
            if not os.path.exists(upath):
                raise TestFailure("the daemon removed systemd's unix socket file")
            d.cleanup()
        tcp.close()
        unix.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_socket_activation_waiting_clients():
    # Clients that connect before the daemon runs wait in the backlog and
    # are served once it starts (what socket activation is for).
    tcp = _tcp_listener()
    early = socket.create_connection(tcp.getsockname(), timeout=10)
    early.sendall(b"SELECT 42 AS answer\n")
    d = Daemon(listen_sockets=[tcp], start=False)
    d.start(wait=False)
    data = b""
    while not data.endswith(b"+OK rows=1\n"):
        chunk = early.recv(4096)
        if not chunk:
            break
        data += chunk
    eq(data, b"*answer\t\n=42\n+OK rows=1\n", "early client's answer")
    early.close()
    eq(d.stop(), 0, "exit status")
    tcp.close()


def test_socket_activation_rejects_other_sockets():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    d = Daemon(listen_sockets=[udp], start=False)
    d.start(wait=False)
    rc = _wait_exit(d, 10)
    d.exit_status = rc
    eq(rc, 1, "exit status with a UDP socket passed")
    if "not a listening TCP or unix stream socket" not in d.stderr_text():
        raise TestFailure("no reason logged:\n" + d.stderr_text())
    udp.close()
    # LISTEN_PID of another process: the sockets are not for us, and the
    # daemon binds its own listeners.
    with Daemon(env={"LISTEN_FDS": "1", "LISTEN_PID": "1"}) as d2:
        expect_status(d2.connect().request(".ping"), "+OK")


# ---------------------------------------------------------------------------
# Graceful shutdown
# ---------------------------------------------------------------------------

# The slow statements below take far longer under valgrind: generous
# shutdown_timeout and time limits keep these tests about behaviour.
LONG_GRACE = {"shutdown_timeout": "600000"}


def test_sigterm_drain_inflight_and_rollback():
    with NotifySocket() as n, Daemon(env={"NOTIFY_SOCKET": n.path}, server=LONG_GRACE) as d:
        n.wait_for("READY=1")
        txn = d.connect()
        expect_status(txn.request("BEGIN"), "+OK changes=0")
        expect_ok(txn.request("INSERT INTO test2 (color) VALUES ('uncommitted')"))
        committed = d.connect()
        expect_ok(committed.request("INSERT INTO test1 (color) VALUES ('kept')"))
        slow = start_slow(d)
        d.send_signal(signal.SIGTERM)
        # The running statement completes and its client gets the answer.
        expect_rows(slow.read_response(), [["1000000"]])
        if not slow.wait_closed(10):
            raise TestFailure("connection not closed after its last answer")
        rc = _wait_exit(d, 120)
        d.exit_status = rc
        eq(rc, 0, "exit status")
        n.poll(0.1)
        if "STOPPING=1" not in n.lines():
            raise TestFailure("no STOPPING=1: %r" % n.messages)
        eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(0,)], "rolled back")
        eq(d.file_query("app.db", "SELECT color FROM test1"), [("kept",)], "committed row")
        eq(d.file_query("app.db", "PRAGMA integrity_check"), [("ok",)], "app.db")
        # Checkpointed on close: no WAL left behind.
        for name in ("app.db-wal", "second.db-wal"):
            p = d.db_path(name)
            if os.path.exists(p) and os.path.getsize(p) > 0:
                raise TestFailure("%s left with %d bytes" % (name, os.path.getsize(p)))


test_sigterm_drain_inflight_and_rollback.timeout = 300


def test_sigterm_refuses_new_clients_while_draining():
    with Daemon(unix=True, server=LONG_GRACE) as d:
        slow = start_slow(d, 10000000)    # ~1.2 s: still draining while we try
        d.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        if slow.readable_now():
            raise TestFailure("the statement ended before the connection attempts: count further")
        for addr in (("127.0.0.1", d.port), d.unix_socket):
            try:
                c = socket.socket(socket.AF_INET if isinstance(addr, tuple) else socket.AF_UNIX)
                c.settimeout(2)
                c.connect(addr)
                c.close()
                raise TestFailure("%r accepts connections while shutting down" % (addr,))
            except OSError:
                pass
        expect_rows(slow.read_response(), [["10000000"]])
        eq(_wait_exit(d, 120), 0, "exit status")
        d.exit_status = 0


test_sigterm_refuses_new_clients_while_draining.timeout = 300


def test_shutdown_timeout_interrupts_statements():
    with Daemon(server={"shutdown_timeout": "300"}) as d:
        txn = d.connect()
        expect_status(txn.request("BEGIN"), "+OK changes=0")
        expect_ok(txn.request("INSERT INTO test2 (color) VALUES ('uncommitted')"))
        slow = start_slow(d, 500000000)      # minutes
        t0 = time.time()
        d.send_signal(signal.SIGTERM)
        rc = _wait_exit(d, 15)
        d.exit_status = rc
        eq(rc, 0, "exit status")
        took = time.time() - t0
        if took > 5:
            raise TestFailure("exit took %.1f s with shutdown_timeout = 300 ms" % took)
        if not slow.wait_closed(5):
            raise TestFailure("interrupted client not disconnected")
        if "shutdown_timeout (300 ms) passed: interrupting" not in d.stderr_text():
            raise TestFailure("no log line about the interruption:\n" + d.stderr_tail())
        eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(0,)], "rolled back")


def test_shutdown_timeout_client_not_reading():
    # A client that never reads its large result cannot hold the daemon up
    # past shutdown_timeout.
    with Daemon(server={"shutdown_timeout": "500", "max_output": "64k"}) as d:
        c = d.connect()
        c.send(b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
               b"SELECT x, 'padding padding padding padding' FROM c\n")
        time.sleep(0.5)
        d.send_signal(signal.SIGTERM)
        rc = _wait_exit(d, 15)
        d.exit_status = rc
        eq(rc, 0, "exit status")


def test_second_signal_exits_at_once():
    with Daemon() as d:
        start_slow(d, 500000000)
        d.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        if not d.running():
            raise TestFailure("exited before the running statement ended")
        t0 = time.time()
        d.send_signal(signal.SIGINT)
        rc = _wait_exit(d, 5)
        d.exit_status = rc
        if time.time() - t0 > 3:
            raise TestFailure("second signal did not exit at once")
        if "second signal: exiting at once" not in d.stderr_text():
            raise TestFailure("no log line for the second signal")


# ---------------------------------------------------------------------------
# Unit files and installation
# ---------------------------------------------------------------------------

def _build_args():
    build = os.environ.get("BUILD", "build")
    return ["SANITIZE=1"] if os.path.basename(build.rstrip("/")) == "build-san" else []


def _make(*args):
    p = subprocess.run(["make", "--no-print-directory", "-C", REPO] + _build_args() + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    if p.returncode != 0:
        raise TestFailure("make %s failed:\n%s" % (" ".join(args), p.stdout.decode(errors="replace")))
    return p.stdout.decode(errors="replace")


def test_systemd_analyze_verify():
    tool = shutil.which("systemd-analyze")
    if tool is None:
        raise TestFailure("systemd-analyze is not installed (make test installs the systemd package)")
    tmp = tempfile.mkdtemp(prefix="sqlmux-units-")
    try:
        # Installed with the prefix in place, so ExecStart= names a binary
        # that exists.
        _make("install-daemon", "PREFIX=%s/usr" % tmp, "SYSCONFDIR=%s/etc" % tmp)
        units = [os.path.join(tmp, "usr/lib/systemd/system", u) for u in ("sqlmux.service", "sqlmux.socket")]
        p = subprocess.run([tool, "verify"] + units, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60, cwd=tmp)
        out = p.stdout.decode(errors="replace")
        if p.returncode != 0 or out.strip():
            raise TestFailure("systemd-analyze verify (status %d):\n%s" % (p.returncode, out))
        service = open(units[0]).read()
        for want in ("Type=notify", "ExecStart=%s/usr/sbin/sqlmuxd %s/etc/sqlmux/sqlmux.ini" % (tmp, tmp),
                     "ExecReload=/bin/kill -HUP $MAINPID", "User=sqlmux", "StateDirectory=sqlmux",
                     "RuntimeDirectory=sqlmux", "WatchdogSec=", "NoNewPrivileges=yes",
                     "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes"):
            if want not in service:
                raise TestFailure("sqlmux.service lacks %r" % want)
        sock = open(units[1]).read()
        for want in ("ListenStream=127.0.0.1:7654", "ListenStream=/run/sqlmux/sqlmux.sock"):
            if want not in sock:
                raise TestFailure("sqlmux.socket lacks %r" % want)
        # The installed example config is valid and matches the unit.
        cfg = os.path.join(tmp, "etc/sqlmux/sqlmux.ini")
        p = subprocess.run([daemon_binary(), "--check-config", cfg], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        out = p.stdout.decode(errors="replace")
        eq(p.returncode, 0, "--check-config of the installed example:\n" + out)
        for want in ("server data_dir = /var/lib/sqlmux", "server unix_socket = /run/sqlmux/sqlmux.sock"):
            if want not in out:
                raise TestFailure("example config: no %r in\n%s" % (want, out))
        users = open(os.path.join(tmp, "usr/lib/sysusers.d/sqlmux.conf")).read()
        if not re.search(r"^u sqlmux ", users, re.M):
            raise TestFailure("sysusers.d file defines no sqlmux user:\n" + users)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


test_systemd_analyze_verify.timeout = 300


def _readme_install_paths():
    text = open(os.path.join(REPO, "README.md")).read()
    m = re.search(r"^### Installed files\n(.*?)(?=^#)", text, re.S | re.M)
    if m is None:
        raise TestFailure("README.md has no '### Installed files' section")
    paths = re.findall(r"^\| `(/[^`]+)` \|", m.group(1), re.M)
    if len(paths) < 10:
        raise TestFailure("README's installed files table lists only %r" % paths)
    return paths


def test_make_install_destdir_matches_readme():
    paths = _readme_install_paths()
    tmp = tempfile.mkdtemp(prefix="sqlmux-destdir-")
    try:
        _make("install", "DESTDIR=" + tmp)
        for p in paths:
            if not os.path.lexists(tmp + p):
                raise TestFailure("%s not installed (README lists it); installed:\n%s"
                                  % (p, "\n".join(sorted(_files(tmp)))))
        unlisted = sorted(set(_files(tmp)) - set(paths))
        if unlisted:
            raise TestFailure("installed but not in README: %r" % unlisted)
        if not os.access(tmp + "/usr/local/sbin/sqlmuxd", os.X_OK):
            raise TestFailure("sqlmuxd not executable")
        unit = open(tmp + "/usr/local/lib/systemd/system/sqlmux.service").read()
        if "ExecStart=/usr/local/sbin/sqlmuxd /etc/sqlmux/sqlmux.ini" not in unit:
            raise TestFailure("unit's ExecStart does not name the installed paths:\n" + unit)
        if re.search(r"@[A-Z]+@", unit):
            raise TestFailure("unfilled @VAR@ in the installed unit")
        # An edited config survives install and uninstall; everything else
        # goes.
        cfg = tmp + "/etc/sqlmux/sqlmux.ini"
        with open(cfg, "a") as f:
            f.write("; edited by the admin\n")
        _make("install", "DESTDIR=" + tmp)
        if "edited by the admin" not in open(cfg).read():
            raise TestFailure("make install overwrote an edited config")
        _make("uninstall", "DESTDIR=" + tmp)
        left = sorted(_files(tmp))
        eq(left, ["/etc/sqlmux/sqlmux.ini"], "files left after uninstall")
        os.unlink(cfg)
        _make("install", "DESTDIR=" + tmp)
        _make("uninstall", "DESTDIR=" + tmp)
        eq(sorted(_files(tmp)), [], "files left after install + uninstall")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


test_make_install_destdir_matches_readme.timeout = 300


def _files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [x for x in dirnames if os.path.islink(os.path.join(dirpath, x))]:
            out.append(os.path.join(dirpath, name)[len(root):])
    return out
