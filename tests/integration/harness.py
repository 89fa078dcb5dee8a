"""
Integration-test harness for sqlmuxd: start the real daemon with a per-test
config in its own temporary folder and on its own port, and speak the wire
protocol of proto/PROTOCOL.md over real sockets.

    with Daemon() as d:                 # the note's three binds, started
        c = d.connect()
        r = c.request("SELECT 1 AS one")
        assert r.status == "+OK rows=1" and r.rows == [["1"]]

Python 3 standard library only. Everything that waits has a timeout, so a
daemon that hangs makes a test fail instead of blocking the suite.
"""

import os
import re
import select
import shutil
import signal
import socket
import struct
import sqlite3
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def _valgrind_env():
    v = os.environ.get("SQLMUX_VALGRIND")
    if v is not None:
        return v not in ("", "0")
    return "valgrind" in os.path.basename(os.environ.get("SQLMUXD", ""))


# Under valgrind (`make valgrind`: SQLMUXD is tests/tools/valgrind-sqlmuxd)
# the daemon runs 10-50 times slower. SQLMUX_VALGRIND=1 says so (default:
# when SQLMUXD's name contains "valgrind"); SQLMUX_TIMEOUT_SCALE (default 10
# under valgrind, else 1) multiplies every wait of the harness: the
# constants below, the timeouts tests pass to harness functions, and the
# runner's per-test time limits.
VALGRIND = _valgrind_env()
try:
    TIMEOUT_SCALE = max(1.0, float(os.environ.get("SQLMUX_TIMEOUT_SCALE",
                                                  "10" if VALGRIND else "1")))
except ValueError:
    TIMEOUT_SCALE = 1.0


def scaled(seconds):
    """seconds * SQLMUX_TIMEOUT_SCALE (None stays None)."""
    return None if seconds is None else seconds * TIMEOUT_SCALE


IO_TIMEOUT = scaled(10.0)      # seconds for any socket read/connect
START_TIMEOUT = scaled(10.0)   # seconds for the daemon to answer .ping
STOP_TIMEOUT = scaled(10.0)    # seconds for the daemon to exit after SIGTERM

# With a scale factor, the timeouts tests give sockets and child processes
# themselves (sock.settimeout(30), socket.create_connection(..., timeout=2),
# subprocess.run(..., timeout=45), proc.wait(5)) are scaled as well:
# socket.socket.settimeout, subprocess.Popen.wait and .communicate are
# wrapped in every test process. The harness's own calls use the _raw_*
# originals with values it has scaled already.
_raw_settimeout = socket.socket.settimeout
_raw_wait = subprocess.Popen.wait
_raw_communicate = subprocess.Popen.communicate


def _scale_library_timeouts():
    def settimeout(self, value):
        _raw_settimeout(self, scaled(value))

    def wait(self, timeout=None):
        return _raw_wait(self, scaled(timeout))

    def communicate(self, input=None, timeout=None):
        return _raw_communicate(self, input, scaled(timeout))

    socket.socket.settimeout = settimeout
    subprocess.Popen.wait = wait
    subprocess.Popen.communicate = communicate


if TIMEOUT_SCALE != 1:
    _scale_library_timeouts()


class Skip(Exception):
    """Raised by a test that does not apply here; run.py prints
    "ok - name # SKIP reason" (a pass for tests/run)."""

    def __init__(self, reason):
        Exception.__init__(self, reason)
        self.reason = reason


def skip_under_valgrind(reason):
    """Skip the calling test when the daemon runs under valgrind."""
    if VALGRIND:
        raise Skip("under valgrind: " + reason)


# Tests skipped under valgrind, "module.function" -> reason: what they
# assert is exactly what valgrind changes (floating point, wall-clock
# figures). Keep it short: the rest of the suite runs, with scaled timeouts.
_X87 = ("valgrind computes long double in 64 bits, so SQLite's text-to-real "
        "conversion is off by an ulp (-1e300 reads as -1.0000000000000005e+300)")
VALGRIND_SKIPS = {
    "test_values.test_literals_round_trip": _X87,
    "test_cli.test_output_modes": _X87,
    "test_cli_commands.test_cli_dump_loads_back_exactly": _X87,
    "test_auth.test_wrong_password_and_unknown_user_look_the_same":
        "times a right password against auth_fail_delay; crypt(3) is slower than that here",
    "test_snapshots.test_snapshot_interval":
        "fixed 0.2-2.5 s waits for a 1 s snapshot timer",
    "test_pg_failover.test_pg_unreachable_server_unavailable_within_connect_timeout":
        "times -ERR UNAVAILABLE against connect_timeout, which the harness scales here",
    "test_pg_failover.test_pg_server_stopped_mid_load": "PostgreSQL load test",
    "test_pg_pool.test_pg_idle_connections_above_pool_min_close":
        "times 4 x pg_sleep(0.8) as parallel; new connections (SCRAM) take longer here",
    "test_xbind_queries.test_quick_reads_on_the_loop":
        "counts the reads across binds answered within the loop's 200 us budget, "
        "which a join run under valgrind overruns",
    "test_loopstall.test_one_clients_pipeline_does_not_hold_the_loop":
        "needs reads answered on the loop within its 200 us budget, which they overrun here",
}


def skip_reason(full_name):
    """Why run.py skips the test "module.function" here (None: it runs)."""
    if VALGRIND:
        reason = VALGRIND_SKIPS.get(full_name)
        if reason:
            return "under valgrind: " + reason
    return None

# Every Daemon created in this process, so the runner can show their stderr
# when a test fails and kill leftovers afterwards.
ALL_DAEMONS = []


def daemon_binary():
    """The daemon under test: $SQLMUXD, else $BUILD/sqlmuxd, else build/sqlmuxd."""
    path = os.environ.get("SQLMUXD")
    if not path:
        path = os.path.join(os.environ.get("BUILD", "build"), "sqlmuxd")
    if not os.path.isabs(path):
        path = os.path.join(REPO, path)
    return path


class TestFailure(AssertionError):
    pass


# ---------------------------------------------------------------------------
# Encoding (client side)
# ---------------------------------------------------------------------------

def _b(s):
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


def escape_text(data):
    """COPY-text escaping of bytes/str (\\ \\t \\n \\r \\0), returns bytes."""
    data = _b(data)
    out = bytearray()
    for ch in data:
        if ch == 0x5C:
            out += b"\\\\"
        elif ch == 0x09:
            out += b"\\t"
        elif ch == 0x0A:
            out += b"\\n"
        elif ch == 0x0D:
            out += b"\\r"
        elif ch == 0x00:
            out += b"\\0"
        else:
            out.append(ch)
    return bytes(out)


class Raw:
    """A parameter line given verbatim (without the newline), for bad input."""

    def __init__(self, line):
        self.line = _b(line)


def encode_param(v):
    """One parameter line (without newline) for a Python value:
    None -> n, int -> i, float -> r, str -> t (escaped), bytes -> b (hex)."""
    if isinstance(v, Raw):
        return v.line
    if v is None:
        return b"n"
    if isinstance(v, bool):
        raise TypeError("bool parameter")
    if isinstance(v, int):
        return b"i%d" % v
    if isinstance(v, float):
        if v != v:
            return b"rnan"
        if v == float("inf"):
            return b"rinf"
        if v == float("-inf"):
            return b"r-inf"
        return b"r" + repr(v).encode()
    if isinstance(v, str):
        return b"t" + escape_text(v.encode("utf-8"))
    if isinstance(v, (bytes, bytearray)):
        return b"b" + bytes(v).hex().encode()
    raise TypeError("unsupported parameter type %r" % type(v))


def encode_bulk(sql, params=None):
    """A bulk request: "$len[ n]\\n<sql>\\n<param lines>"."""
    sql = _b(sql)
    if params is None:
        head = b"$%d\n" % len(sql)
        plines = b""
    else:
        head = b"$%d %d\n" % (len(sql), len(params))
        plines = b"".join(encode_param(p) + b"\n" for p in params)
    return head + sql + b"\n" + plines


def encode_inline(sql, params):
    """An inline parameterized request: "?n SQL\\n<param lines>"."""
    sql = _b(sql)
    return (b"?%d " % len(params)) + sql + b"\n" + b"".join(
        encode_param(p) + b"\n" for p in params)


# ---------------------------------------------------------------------------
# Decoding (responses)
# ---------------------------------------------------------------------------

_UNESCAPE = {ord("\\"): b"\\", ord("t"): b"\t", ord("n"): b"\n",
             ord("r"): b"\r", ord("0"): b"\x00"}


def decode_field_bytes(f):
    """Decode one COPY field (bytes) -> None | bytes (blob) | bytes (text)
    with a flag: returns (kind, value) where kind is 'null', 'blob', 'text'.
    Strict: an unknown escape or bad hex raises TestFailure."""
    if f == b"\\N":
        return "null", None
    if f.startswith(b"\\x"):
        hx = f[2:]
        if len(hx) % 2 or not re.fullmatch(rb"[0-9a-f]*", hx):
            raise TestFailure("bad blob field (want lowercase hex): %r" % f)
        return "blob", bytes.fromhex(hx.decode())
    if b"\\" not in f:
        return "text", f
    out = bytearray()
    i = 0
    n = len(f)
    while i < n:
        ch = f[i]
        if ch == 0x5C:
            if i + 1 >= n or f[i + 1] not in _UNESCAPE:
                raise TestFailure("bad escape in field %r" % f)
            out += _UNESCAPE[f[i + 1]]
            i += 2
        else:
            out.append(ch)
            i += 1
    return "text", bytes(out)


def decode_field(f):
    """None for \\N, bytes for \\x blobs, str otherwise."""
    kind, v = decode_field_bytes(f)
    if kind == "text":
        return v.decode("utf-8", "surrogateescape")
    return v


class Response:
    """One whole response: optional '*' header, '=' rows, one status line."""

    def __init__(self, raw):
        self.raw = raw                    # list of bytes lines, without '\n'
        self.columns = None               # [(name, type)] or None
        self.rows = []
        self.status = raw[-1].decode("utf-8", "replace")
        self.ok = self.status == "+OK" or self.status.startswith("+OK ")
        self.facts = {}
        self.err_code = None
        self.err_msg = None
        if self.ok:
            for kv in self.status[3:].split():
                k, sep, v = kv.partition("=")
                if not sep:
                    raise TestFailure("bad fact %r in %r" % (kv, self.status))
                self.facts[k] = v
        else:
            parts = self.status.split(" ", 2)
            if parts[0] != "-ERR" or len(parts) < 2:
                raise TestFailure("bad status line %r" % self.status)
            self.err_code = parts[1]
            self.err_msg = parts[2] if len(parts) > 2 else ""
        for i, line in enumerate(raw[:-1]):
            if line.startswith(b"*"):
                if i != 0 or self.columns is not None:
                    raise TestFailure("'*' line not first in response: %r" % raw[:5])
                fields = line[1:].split(b"\t")
                if len(fields) % 2:
                    raise TestFailure("odd number of header fields: %r" % line)
                dec = [decode_field(x) for x in fields]
                self.columns = [(dec[k], dec[k + 1]) for k in range(0, len(dec), 2)]
            elif line.startswith(b"="):
                if self.columns is None:
                    raise TestFailure("row before header: %r" % raw[:5])
                row = [decode_field(x) for x in line[1:].split(b"\t")]
                if len(row) != len(self.columns):
                    raise TestFailure("row has %d fields, header %d: %r"
                                      % (len(row), len(self.columns), line))
                self.rows.append(row)
            else:
                raise TestFailure("not a protocol line: %r" % line)

    @property
    def names(self):
        return [c[0] for c in (self.columns or [])]

    def col(self, name):
        """All values of one column by name."""
        i = self.names.index(name)
        return [r[i] for r in self.rows]

    def dicts(self):
        return [dict(zip(self.names, r)) for r in self.rows]

    def text(self):
        return "\n".join(l.decode("utf-8", "replace") for l in self.raw)

    def __repr__(self):
        lines = self.raw if len(self.raw) <= 12 else (
            self.raw[:6] + [b"... (%d lines)" % len(self.raw)] + self.raw[-4:])
        return "<Response %s>" % " | ".join(l.decode("utf-8", "replace")[:200] for l in lines)


def is_status_line(line):
    return line == b"+OK" or line.startswith(b"+OK ") or line.startswith(b"-ERR ") \
        or line == b"-ERR"


# ---------------------------------------------------------------------------
# Client connection
# ---------------------------------------------------------------------------

class Conn:
    """A protocol client over TCP or a unix socket, with its own read buffer
    (so select() on .sock plus .buffered tells whether anything arrived)."""

    def __init__(self, addr, timeout=None):
        timeout = IO_TIMEOUT if timeout is None else scaled(timeout)
        if isinstance(addr, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _raw_settimeout(self.sock, timeout)
        self.sock.connect(addr)
        if not isinstance(addr, str):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0
        self.eof = False

    # -- sending
    def send(self, data):
        self.sock.sendall(_b(data))

    # -- receiving
    def _fill(self):
        data = self.sock.recv(1 << 18)
        if not data:
            self.eof = True
            return False
        if self.pos > (1 << 20):
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data
        return True

    @property
    def buffered(self):
        return len(self.buf) - self.pos

    def readline(self):
        """One line without its '\\n' (a trailing '\\r' is kept: the daemon
        must not send one). Raises TestFailure on EOF."""
        while True:
            i = self.buf.find(b"\n", self.pos)
            if i >= 0:
                line = bytes(self.buf[self.pos:i])
                self.pos = i + 1
                return line
            if self.eof or not self._fill():
                rest = bytes(self.buf[self.pos:])
                raise TestFailure("connection closed by the daemon while reading a line"
                                  + (" (partial: %r)" % rest[:200] if rest else ""))

    def read_response(self):
        lines = []
        while True:
            line = self.readline()
            lines.append(line)
            if is_status_line(line):
                return Response(lines)
            if not (line.startswith(b"*") or line.startswith(b"=")):
                raise TestFailure("not a protocol line: %r (after %d lines)"
                                  % (line[:200], len(lines) - 1))

    def read_responses(self, n):
        return [self.read_response() for _ in range(n)]

    def request(self, line):
        """Send one request line (newline added when missing), read its response."""
        data = _b(line)
        if not data.endswith(b"\n"):
            data += b"\n"
        self.send(data)
        return self.read_response()

    def bulk(self, sql, params=None):
        self.send(encode_bulk(sql, params))
        return self.read_response()

    def inline(self, sql, params):
        self.send(encode_inline(sql, params))
        return self.read_response()

    def wait_closed(self, timeout=None):
        """True when the daemon closes the connection (no more data) in time."""
        timeout = IO_TIMEOUT if timeout is None else scaled(timeout)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.buffered:
                return False
            try:
                if not self._fill():
                    return True
            except socket.timeout:
                return False
            except ConnectionResetError:
                return True
        return False

    def readable_now(self, wait=0.0):
        """True when a response byte is buffered or readable within `wait` s
        (scaled)."""
        if self.buffered:
            return True
        r, _, _ = select.select([self.sock], [], [], scaled(wait))
        return bool(r)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Close with a reset (SO_LINGER 0), as a client that gives up does
        (the CLI's Ctrl-C): the daemon interrupts what it runs for us. A
        plain close() only ends our input: the daemon answers what was
        sent, then closes."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# ---------------------------------------------------------------------------
# Assertions with useful messages
# ---------------------------------------------------------------------------

def expect_status(resp, status):
    if resp.status != status:
        raise TestFailure("want status %r, got %r\nresponse: %r" % (status, resp.status, resp))
    return resp


def expect_ok(resp):
    if not resp.ok:
        raise TestFailure("want +OK, got %r\nresponse: %r" % (resp.status, resp))
    return resp


def expect_err(resp, code, msg=None):
    if resp.ok or resp.err_code != code:
        raise TestFailure("want -ERR %s, got %r\nresponse: %r" % (code, resp.status, resp))
    if msg is not None and resp.err_msg != msg:
        raise TestFailure("want message %r, got %r" % (msg, resp.err_msg))
    return resp


def expect_rows(resp, rows, columns=None):
    expect_status(resp, "+OK rows=%d" % len(rows))
    if resp.rows != rows:
        raise TestFailure("want rows %r\n got rows %r" % (rows, resp.rows))
    if columns is not None and resp.columns != columns:
        raise TestFailure("want columns %r\n got columns %r" % (columns, resp.columns))
    return resp


def eq(got, want, what="value"):
    if got != want:
        raise TestFailure("%s: want %r, got %r" % (what, want, got))


# ---------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------

COLOR_SCHEMA = ("CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY, "
                "color VARCHAR(64) DEFAULT '{c}');\n")

DEFAULT_SCHEMAS = {
    "default": COLOR_SCHEMA.format(t="test1", c="red"),
    "second_db": COLOR_SCHEMA.format(t="test2", c="red"),
    "memory_db": COLOR_SCHEMA.format(t="test3", c="blue"),
}

DEFAULT_BINDS = [
    ("default", "sqlite:///app.db"),
    ("second_db", "sqlite:///second.db"),
    ("memory_db", "sqlite:///:memory:"),
]

DEFAULT_TABLES = [
    ("test2", "second_db"),
    ("test3", "memory_db"),
    ("audit_*", "second_db"),
]

DEFAULT_SERVER = [
    ("listen", "127.0.0.1:{port}"),
    ("unix_socket", None),
    ("data_dir", "{data_dir}"),
    ("max_request", "1M"),
    ("max_pipeline", "128"),
    ("max_clients", "1024"),
    ("log_level", "info"),
]

DEFAULT_BIND_OPTS = {
    "default": [("pool_size", "4"), ("busy_timeout", "5000")],
    "second_db": [("pool_size", "4"), ("busy_timeout", "5000")],
    "memory_db": [("pool_size", "4"), ("busy_timeout", "5000")],
}


def standard_files():
    """The standard schema files, for run_once()."""
    return dict(("schema_%s.sql" % name, text) for name, text in DEFAULT_SCHEMAS.items())


def recv_until(sock, end, what):
    """Bytes read from a raw socket until they end with `end`; TestFailure
    (naming `what`) when the peer closes first."""
    got = b""
    while not got.endswith(end):
        chunk = sock.recv(4096)
        if not chunk:
            raise TestFailure("%s: %r" % (what, got))
        got += chunk
    return got


def rss_kib(pid):
    """VmRSS of a process in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise TestFailure("no VmRSS for pid %d" % pid)


def listener_of(pid, port):
    """Whether process pid holds a socket listening on TCP port (Linux's
    /proc); None when /proc does not say. Tests run in parallel, and the
    port free_port() gave may be another test's daemon's by the time this
    one binds it: that daemon then answers this one's .ping."""
    inodes = set()
    try:
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(":%04X" % port) and parts[3] == "0A":
                        inodes.add("socket:[%s]" % parts[9])
        fds = os.listdir("/proc/%d/fd" % pid)
    except (OSError, IndexError, StopIteration):
        return None
    for fd in fds:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) in inodes:
                return True
        except OSError:
            pass
    return False


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_config(server=None, binds=None, tables=None, bind_opts=None,
                schemas=True, unix=False):
    """The config text (with {port}, {data_dir}, {dir}, {unix_socket}
    placeholders) for the note's scenario, with overrides:
      server:    dict of [server] keys to set (None removes a key)
      binds:     list of (name, url) replacing [binds]
      tables:    list of (pattern, bind) replacing [tables]
      bind_opts: dict bind -> dict of options (None removes)
      schemas:   True = the three standard schema files (schema_<bind>.sql),
                 False = none, or a dict bind -> file name ('' = none)
      unix:      add unix_socket = {unix_socket}
    """
    srv = list(DEFAULT_SERVER)
    if unix:
        srv = [(k, "{unix_socket}" if k == "unix_socket" else v) for k, v in srv]
    if server:
        keys = [k for k, _ in srv]
        for k, v in server.items():
            if k in keys:
                srv = [(kk, v if kk == k else vv) for kk, vv in srv]
            else:
                srv.append((k, v))
    lines = ["; sqlmux integration test config", "[server]"]
    lines += ["%s = %s" % (k, v) for k, v in srv if v is not None]
    lines.append("[binds]")
    binds = binds if binds is not None else DEFAULT_BINDS
    lines += ["%s = %s" % kv for kv in binds]
    lines.append("[tables]")
    lines += ["%s = %s" % kv for kv in (tables if tables is not None else DEFAULT_TABLES)]
    for name, _ in binds:
        opts = dict(DEFAULT_BIND_OPTS.get(name, []))
        if schemas is True:
            if name in DEFAULT_SCHEMAS:
                opts["schema"] = "schema_%s.sql" % name
        elif isinstance(schemas, dict) and schemas.get(name):
            opts["schema"] = schemas[name]
        for k, v in (bind_opts or {}).get(name, {}).items():
            if v is None:
                opts.pop(k, None)
            else:
                opts[k] = v
        if opts:
            lines.append("[bind.%s]" % name)
            lines += ["%s = %s" % kv for kv in opts.items()]
    return "\n".join(lines) + "\n"


def valgrind_report(text, limit=80):
    """memcheck's error and leak reports in a daemon's stderr (the lines of
    each "==PID==" block that has a stack), at most `limit` lines; "" when
    there are none."""
    blocks, cur = [], []
    for line in text.splitlines():
        if re.match(r"==\d+==", line):
            cur.append(line)
            continue
        if cur:
            blocks.append(cur)
            cur = []
    if cur:
        blocks.append(cur)
    lines = [l for b in blocks if any(re.match(r"==\d+==\s+(at|by) 0x", l) for l in b) for l in b]
    return "\n".join(lines[:limit])


# The daemon's own waits that a slow daemon (valgrind) overruns although
# nothing is wrong, in ms, with their defaults and maxima: a SQLite bind's
# busy_timeout (a lock held by a slow neighbour, a pool connection) and a
# PostgreSQL bind's connect_timeout (libpq's SCRAM exchange under valgrind).
# Timeouts that tests exercise (statement_timeout, idle timeouts,
# shutdown_timeout, snapshot_interval) are left alone.
_SCALED_BIND_KEYS = {"busy_timeout": ("sqlite", 5000, 3600000),
                     "connect_timeout": ("postgres", 5000, 600000)}


def scale_config_timeouts(text):
    """With a scale factor, a Daemon's config with busy_timeout (SQLite
    binds) and connect_timeout (PostgreSQL binds, and libpq's
    connect_timeout=N of their URLs) scaled: keys present are multiplied,
    missing ones are added as scaled defaults in [bind.NAME] sections
    appended at the end (so every existing line keeps its number)."""
    if TIMEOUT_SCALE == 1:
        return text
    out = []
    section = None
    kinds = {}                      # bind name -> "sqlite" | "postgres"
    seen = {}                       # bind name -> keys set
    for line in text.split("\n"):
        st = line.strip()
        m = re.match(r"\[\s*([^\]]+?)\s*\]$", st)
        if m:
            section = m.group(1)
            out.append(line)
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)\s*=\s*(.*)$", st)
        if m and section == "binds":
            name, url = m.group(1), m.group(2)
            kinds[name] = "postgres" if url.startswith("postgres") else "sqlite"
            if kinds[name] == "postgres":
                line = re.sub(r"(?<=[?&])connect_timeout=(\d+)",
                              lambda t: "connect_timeout=%d" % int(int(t.group(1)) * TIMEOUT_SCALE), line)
        elif m and section and section.startswith("bind.") and m.group(1) in _SCALED_BIND_KEYS:
            key, value = m.group(1), m.group(2)
            seen.setdefault(section[5:], set()).add(key)
            if value.isdigit():
                limit = _SCALED_BIND_KEYS[key][2]
                line = "%s = %d" % (key, min(limit, int(int(value) * TIMEOUT_SCALE)))
        out.append(line)
    extra = []
    for name, kind in kinds.items():
        for key, (for_kind, default, limit) in _SCALED_BIND_KEYS.items():
            if kind == for_kind and key not in seen.get(name, ()):
                extra += ["[bind.%s]" % name, "%s = %d" % (key, min(limit, default * TIMEOUT_SCALE))]
    if extra:
        if out and out[-1] == "":
            out.pop()
        out += ["; added by the test harness: timeouts x%g" % TIMEOUT_SCALE] + extra + [""]
    return "\n".join(out)


class Daemon:
    """sqlmuxd with a config in a fresh temp dir. Context manager.

    Daemon(**make_config kwargs, files=None, config=None, start=True)
      files:  dict name -> text written into the temp dir before start
              (the standard schema_<bind>.sql files are written by default)
      config: a complete config text replacing make_config()'s
    Placeholders {port}, {data_dir}, {dir}, {unix_socket} are filled in.
      env:    dict of environment variables added to (None: removed from)
              the daemon's environment
      listen_sockets: listening sockets passed as systemd's socket
              activation does (descriptors 3.., LISTEN_FDS, LISTEN_PID,
              LISTEN_FDNAMES): sockets, or (socket, name) pairs (unnamed:
              "sock<i>"); addr is then the first one's address
    """

    def __init__(self, files=None, config=None, start=True, env=None, listen_sockets=None, **cfg):
        self.env = dict(env or {})
        self.listen_sockets = [s if isinstance(s, tuple) else (s, "sock%d" % i)
                               for i, s in enumerate(listen_sockets or [])]
        self.dir = tempfile.mkdtemp(prefix="sqlmux-it-")
        self.data_dir = os.path.join(self.dir, "data")
        self.unix_socket = os.path.join(self.dir, "sqlmux.sock")
        self.config_path = os.path.join(self.dir, "sqlmux.ini")
        self.config_template = config if config is not None else make_config(**cfg)
        self.uses_tcp = "{port}" in self.config_template
        self.uses_unix = "{unix_socket}" in self.config_template
        self.proc = None
        self.port = None
        self.starts = 0
        self.stderr_paths = []
        self.saved_stderr = None
        self.exit_status = None
        self.cleanup_status = None
        self.conns = []
        ALL_DAEMONS.append(self)
        for name, text in DEFAULT_SCHEMAS.items():
            self.write_file("schema_%s.sql" % name, text)
        for name, text in (files or {}).items():
            self.write_file(name, text)
        if start:
            self.start()

    # -- files
    def write_file(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(_b(text))
        return path

    def db_path(self, name):
        return os.path.join(self.data_dir, name)

    def sqlite(self, name):
        """A read-only Python sqlite3 connection to a file of data_dir."""
        path = self.db_path(name)
        if not os.path.exists(path):
            raise TestFailure("database file %s does not exist" % path)
        return sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)

    def file_query(self, name, sql, args=()):
        """Rows of sql run by Python's sqlite3 on a file of data_dir
        (read-only while the daemon runs)."""
        if self.running():
            db = self.sqlite(name)
        else:
            path = self.db_path(name)
            if not os.path.exists(path):
                raise TestFailure("database file %s does not exist" % path)
            db = sqlite3.connect(path, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def file_tables(self, name):
        return sorted(r[0] for r in self.file_query(
            name, "SELECT name FROM sqlite_master WHERE type='table' "
                  "AND name NOT LIKE 'sqlite_%'"))

    # -- process
    def render_config(self):
        text = self.config_template.format(port=self.port, data_dir=self.data_dir,
                                           dir=self.dir, unix_socket=self.unix_socket)
        return scale_config_timeouts(text)

    def rewrite_config(self, config=None, **cfg):
        """Replace the config file (make_config(**cfg), or the text given)
        without restarting: same port, folders and placeholders, for
        reload tests. Returns the text written."""
        self.config_template = config if config is not None else make_config(**cfg)
        text = self.render_config()
        with open(self.config_path, "w") as f:
            f.write(text)
        return text

    @property
    def addr(self):
        if self.listen_sockets:
            return self.listen_sockets[0][0].getsockname()
        if self.uses_tcp:
            return ("127.0.0.1", self.port)
        return self.unix_socket

    def start(self, wait=True):
        if self.proc is not None and self.proc.poll() is None:
            raise TestFailure("daemon already running")
        for attempt in range(3):
            self.port = free_port()
            with open(self.config_path, "w") as f:
                f.write(self.render_config())
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_ready()
                return self
            except TestFailure:
                # Another test may have taken the port between free_port()
                # and the daemon's bind(): try once more with a new one.
                if (self.proc.poll() is not None and attempt < 2 and
                        re.search(r"(?i)address (already )?in use|EADDRINUSE",
                                  self.stderr_text(current_only=True))):
                    continue
                raise
        return self

    def _spawn(self):
        binary = daemon_binary()
        if not os.path.exists(binary):
            raise TestFailure("daemon binary %s not found (run make, or set SQLMUXD)" % binary)
        path = os.path.join(self.dir, "stderr.%d.log" % self.starts)
        self.starts += 1
        self.stderr_paths.append(path)
        self.exit_status = None
        argv = [binary, self.config_path]
        pass_fds = ()
        env = dict(self.env)
        if self.listen_sockets:
            # As systemd does: the sockets become descriptors 3.. of the
            # daemon, and LISTEN_PID is its own pid (bash execs it).
            pass_fds = tuple(60 + i for i in range(len(self.listen_sockets)))
            for fd, (s, _) in zip(pass_fds, self.listen_sockets):
                os.dup2(s.fileno(), fd, inheritable=False)
            redirs = " ".join("%d<&%d %d<&-" % (3 + i, fd, fd) for i, fd in enumerate(pass_fds))
            argv = ["bash", "-c", 'exec %s; export LISTEN_PID=$$; exec "$0" "$@"' % redirs] + argv
            env["LISTEN_FDS"] = str(len(self.listen_sockets))
            env["LISTEN_FDNAMES"] = ":".join(name for _, name in self.listen_sockets)
        with open(path, "wb") as err, open(os.path.join(self.dir, "stdout.log"), "ab") as out:
            penv = None
            if env:
                penv = dict(os.environ)
                for k, v in env.items():
                    if v is None:
                        penv.pop(k, None)
                    else:
                        penv[k] = v
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                             cwd="/", env=penv, pass_fds=pass_fds)
            finally:
                for fd in pass_fds:
                    os.close(fd)

    def wait_ready(self, timeout=None):
        timeout = START_TIMEOUT if timeout is None else scaled(timeout)
        deadline = time.time() + timeout
        last = "no attempt"
        while time.time() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.exit_status = rc
                raise TestFailure("daemon exited with status %s during start-up; stderr:\n%s"
                                  % (rc, self.stderr_tail(30)))
            try:
                c = Conn(self.addr, timeout=2)      # scaled
                try:
                    c.send(b".ping\n")
                    line = c.readline()
                finally:
                    c.close()
                if line == b"+OK" and (self.listen_sockets or not self.uses_tcp or
                                       listener_of(self.proc.pid, self.port) is not False):
                    return
                last = "answered %r%s" % (line, " by another process" if line == b"+OK" else "")
            except (OSError, TestFailure) as e:
                last = str(e)
            time.sleep(0.05)
        raise TestFailure("daemon did not answer .ping within %ss (%s); stderr:\n%s"
                          % (timeout, last, self.stderr_tail(30)))

    def connect(self, addr=None):
        c = Conn(addr if addr is not None else self.addr)
        self.conns.append(c)
        return c

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        """The daemon's process id (None before the first start)."""
        return self.proc.pid if self.proc is not None else None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """Send sig (SIGTERM) and return the exit status (negative: killed
        by a signal). Fails if the daemon does not exit in time."""
        timeout = STOP_TIMEOUT if timeout is None else scaled(timeout)
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                _raw_wait(self.proc, timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise TestFailure("daemon did not exit within %ss of signal %s; stderr:\n%s"
                                  % (timeout, sig, self.stderr_tail(30)))
        self.exit_status = self.proc.returncode
        return self.exit_status

    def restart(self):
        rc = self.stop()
        if rc != 0:
            raise TestFailure("daemon exited with status %s on SIGTERM" % rc)
        for c in self.conns:
            c.close()
        self.conns = []
        return self.start()

    # -- logs
    def stderr_text(self, current_only=False):
        if self.saved_stderr is not None:
            return self.saved_stderr
        parts = []
        paths = self.stderr_paths[-1:] if current_only else self.stderr_paths
        for i, p in enumerate(paths):
            try:
                with open(p, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            if len(paths) > 1:
                parts.append("--- start %d ---\n" % i)
            parts.append(text)
        return "".join(parts)

    def stderr_tail(self, n=30):
        lines = self.stderr_text().splitlines()
        return "\n".join(lines[-n:]) if lines else "(stderr empty)"

    # -- cleanup
    def cleanup(self):
        """Close clients, stop the daemon with SIGTERM (SIGKILL after 15 s,
        scaled),
        keep its stderr, remove the temp dir. cleanup_status says how it
        ended: None (never ran or already stopped by the test), 0, or what
        went wrong (non-zero status, died by itself, had to be killed)."""
        for c in self.conns:
            c.close()
        self.conns = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                _raw_wait(self.proc, scaled(15))
                self.cleanup_status = self.proc.returncode
                self.exit_status = self.proc.returncode
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.cleanup_status = ("did not exit within %g s of SIGTERM (killed)"
                                       % scaled(15))
        elif self.proc is not None and self.exit_status is None:
            self.cleanup_status = "died during the test with status %s" % self.proc.returncode
            self.exit_status = self.proc.returncode
        if self.saved_stderr is None:
            self.saved_stderr = self.stderr_text()
        if VALGRIND and self.cleanup_status in (None, 0):
            # A daemon the test stopped or killed itself: its exit status
            # says nothing (SIGKILL) or was not checked; memcheck's reports
            # in its stderr still fail the test.
            report = valgrind_report(self.saved_stderr)
            if report:
                self.cleanup_status = "valgrind reported errors:\n" + report
        if os.environ.get("SQLMUX_KEEP_TMP"):
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.cleanup()


class NotifySocket:
    """systemd's end of sd_notify(): a unix datagram socket to pass to the
    daemon as NOTIFY_SOCKET (env={"NOTIFY_SOCKET": n.path}). A thread reads
    it at once, as systemd does (sd_notify() blocks when the socket's queue
    is full); each datagram is kept as one string in .messages, in arrival
    order. Context manager."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sqlmux-notify-")
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        _raw_settimeout(self.sock, 0.1)
        self.messages = []
        self.closed = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append(data.decode("utf-8", "replace"))

    def poll(self, wait=0.0):
        """Let `wait` seconds of messages arrive."""
        time.sleep(wait)

    def wait_for(self, line, start=0, timeout=None):
        """Index (>= start) of the first datagram having `line` as one of
        its lines; waits for it, fails after timeout."""
        timeout = IO_TIMEOUT if timeout is None else scaled(timeout)
        deadline = time.time() + timeout
        while True:
            for i in range(start, len(self.messages)):
                if line in self.messages[i].split("\n"):
                    return i
            if time.time() >= deadline:
                raise TestFailure("no %r from the daemon within %ss; got %r"
                                  % (line, timeout, self.messages[start:]))
            time.sleep(0.02)

    def lines(self, start=0):
        """Every line of the datagrams from index start on."""
        return [l for m in self.messages[start:] for l in m.split("\n")]

    def close(self):
        self.closed = True
        self.thread.join(2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


SLOW_SQL = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
            "SELECT count(*) AS n FROM c")
SLOW_FOREVER = 10 ** 12   # rows: hours of counting


def start_slow(d, rows=1000000, probe=None, timeout=120.0):
    """A new connection of daemon d running SLOW_SQL (CPU-bound, counting
    to `rows`: about 0.12 s per million on the 2-core test machine, 50
    times that under valgrind; a test that needs it running for a while
    counts to SLOW_FOREVER and ends it with Conn.abort() or with
    statement_timeout),
    returned once .clients (asked on `probe`, else on a connection of its
    own) shows it busy. Reads on it wait up to `timeout` seconds."""
    c = d.connect()
    c.sock.settimeout(timeout)
    c.send((SLOW_SQL % rows) + "\n")
    own = probe is None
    if own:
        probe = Conn(d.addr)
    try:
        deadline = time.time() + timeout
        while not any(r["state"] == "busy" for r in probe.request(".clients").dicts()):
            if time.time() > deadline:
                raise TestFailure("the slow statement never showed as running")
            time.sleep(0.01)
    finally:
        if own:
            probe.close()
    return c


def run_once(config_text, args=(), files=None, timeout=10.0, check=False):
    """Run the binary once on a config written to a fresh temp dir
    ({dir}, {data_dir}, {port} placeholders filled). With check=True runs
    --check-config. Returns (exit status, stdout, stderr, config path, dir).
    A daemon that does not exit in time (scaled) is killed and reported as
    a failure."""
    timeout = scaled(timeout)
    d = tempfile.mkdtemp(prefix="sqlmux-it-")
    try:
        for name, text in (files or {}).items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(_b(text))
        path = os.path.join(d, "sqlmux.ini")
        text = config_text.format(dir=d, data_dir=os.path.join(d, "data"),
                                  port=free_port(), unix_socket=os.path.join(d, "s.sock"))
        with open(path, "w") as f:
            f.write(text)
        binary = daemon_binary()
        if not os.path.exists(binary):
            raise TestFailure("daemon binary %s not found (run make, or set SQLMUXD)" % binary)
        argv = [binary] + (["--check-config"] if check else []) + list(args) + [path]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd="/")
        try:
            out, err = _raw_communicate(p, None, timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise TestFailure("%s did not exit within %ss (it accepted the config?)\n"
                              "stdout:\n%s\nstderr:\n%s"
                              % (" ".join(argv), timeout, out.decode(errors="replace"),
                                 err.decode(errors="replace")))
        return (p.returncode, out.decode("utf-8", "replace"),
                err.decode("utf-8", "replace"), path, d)
    finally:
        if not os.environ.get("SQLMUX_KEEP_TMP"):
            shutil.rmtree(d, ignore_errors=True)


def send_async(conn, data):
    """sendall() on a daemon thread, for pipelines bigger than the socket
    buffers (the daemon stops reading while we do not read)."""
    t = threading.Thread(target=conn.send, args=(data,), daemon=True)
    t.start()
    return t


def line_of(text, needle):
    """1-based line number of the first line of text containing needle."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise ValueError("%r not in config" % needle)
