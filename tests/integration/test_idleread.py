"""Serving one client from the idle poll (issue 18). When turn after turn
answers one client alone, the poller reads that client's socket itself
before each poll (idle_reads in .stats), and when its statements ran on
the loop it sends their answers and polls again at once, without a turn
of libuv's (idle_rounds; each such round still counts as a loop turn).
These tests check that the answers stay right, that other clients and
timers are not held up meanwhile, and that the end of a client's input,
a reset and TLS are handled as before."""

import socket
import struct
import subprocess
import threading

import harness
from harness import DEFAULT_TABLES, Daemon, TestFailure, eq, expect_ok, expect_rows
from test_idlepoll import _busy, _one_after_another, _unless_busy
from test_tls import TlsConn, TlsDaemon
from test_wal import loadgen_path
from test_xbind_flow import wait_for

TABLES = DEFAULT_TABLES + [("ins", "memory_db")]
POLL = {"idle_poll_us": "1000"}
DEPTH = 16


def _idle(c):
    """(idle_reads, idle_rounds, loop_turns) of the (all) row."""
    last = c.request(".stats").dicts()[-1]
    eq(last["bind"], "(all)", "the last .stats row")
    return int(last["idle_reads"]), int(last["idle_rounds"]), int(last["loop_turns"])


def _batch(c, first, n):
    """n INSERTs with a ?1 parameter sent at once, as make bench's
    scenario 3 does, then their n answers, each checked."""
    c.send(b"".join(b"?1 INSERT INTO ins (v) VALUES (?)\ntrow-%d\n" % i for i in range(first, first + n)))
    for i in range(first, first + n):
        r = c.read_response()
        if not r.ok or r.facts.get("changes") != "1":
            raise TestFailure("INSERT %d: %s" % (i, r.status))


def _transaction(c, first, n):
    """Rows first..first+n-1 in one transaction, DEPTH statements at a
    time."""
    expect_ok(c.request("BEGIN"))
    for at in range(first, first + n, DEPTH):
        _batch(c, at, min(DEPTH, first + n - at))
    expect_ok(c.request("COMMIT"))


def _check_rows(c, n):
    expect_rows(c.request("SELECT count(*), count(DISTINCT v), min(id), max(id) FROM ins"),
                [[str(n), str(n), "1", str(n)]])
    expect_rows(c.request("SELECT v FROM ins WHERE id = %d" % n), [["row-%d" % (n - 1)]])


def _daemon(**kw):
    return Daemon(tables=TABLES, server=dict(POLL, **kw.pop("server", {})), **kw)


def _create(c):
    expect_ok(c.request("CREATE TABLE ins (id INTEGER PRIMARY KEY, v TEXT)"))


def test_a_client_streaming_a_transaction_is_served_in_rounds():
    """3,000 INSERTs of one transaction, 16 at a time: the poller reads
    most batches itself and answers them in rounds of its own, each
    counted as a loop turn; every answer and row is right."""
    with _daemon() as d:
        c = d.connect()
        _create(c)
        busy0 = _busy(c)
        reads0, rounds0, turns0 = _idle(c)
        _transaction(c, 0, 3000)
        reads, rounds, turns = _idle(c)
        _check_rows(c, 3000)
        if rounds - rounds0 < 20:
            _unless_busy(c, busy0, "%d rounds" % (rounds - rounds0))
            raise TestFailure("%d reads and %d rounds for 188 batches of one client"
                              % (reads - reads0, rounds - rounds0))
        if reads - reads0 < rounds - rounds0:
            raise TestFailure("%d rounds but %d reads" % (rounds - rounds0, reads - reads0))
        if turns - turns0 < rounds - rounds0:
            raise TestFailure("%d rounds counted as %d loop turns" % (rounds - rounds0, turns - turns0))


def _caught(c):
    return int(c.request(".stats").dicts()[-1]["idle_polls_caught"])


def _read_directly(c, admin, what):
    """c's 300 statements one after the other: each poll that caught the
    next one read it itself (admin asks .stats). How many polls catch a
    statement depends on how fast the client answers; which of them read
    it does not: the only others are the few before c is expected (after
    admin's .stats), and the one of admin's next .stats."""
    busy0 = _busy(admin)
    reads0, caught0 = _idle(admin)[0], _caught(admin)
    _one_after_another(c, 300)
    reads, caught = _idle(admin)[0] - reads0, _caught(admin) - caught0
    if reads == 0:
        _unless_busy(admin, busy0, "no reads, %d polls caught a request" % caught)
    if reads == 0 or caught - reads > 6:
        raise TestFailure("%d of the %d polls that caught a request read it, for 300 statements one after the "
                          "other %s" % (reads, caught, what))


def test_a_client_one_statement_at_a_time_is_read_directly():
    """Statements one after the other, over TCP and the unix socket: the
    poller reads the next one itself."""
    with _daemon(unix=True) as d:
        admin = d.connect()
        for addr in (d.addr, d.unix_socket):
            c = harness.Conn(addr)
            _read_directly(c, admin, "on %r" % (addr,))
            c.close()


def test_idle_poll_off_reads_nothing():
    """idle_poll_us = 0: no poll, so no read of the poller's own."""
    with _daemon(server={"idle_poll_us": "0"}) as d:
        c = d.connect()
        _create(c)
        _transaction(c, 0, 500)
        _one_after_another(c, 100)
        eq(_idle(c)[:2], (0, 0), "reads and rounds with idle_poll_us = 0")
        _check_rows(c, 500)


class _Streamer(threading.Thread):
    """A client sending transactions of 320 INSERTs, 16 at a time, until
    told to stop; batches counts what it sent and had answered."""

    def __init__(self, d):
        super().__init__(daemon=True)
        self.c = d.connect()
        self.stop = threading.Event()
        self.batches = 0
        self.rows = 0
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                expect_ok(self.c.request("BEGIN"))
                for _ in range(20):
                    _batch(self.c, self.rows, DEPTH)
                    self.rows += DEPTH
                    self.batches += 1
                expect_ok(self.c.request("COMMIT"))
        except Exception as e:  # reported by finish()
            self.error = e

    def finish(self):
        self.stop.set()
        self.join(harness.scaled(30))
        if self.is_alive():
            raise TestFailure("the streaming client did not finish")
        if self.error is not None:
            raise TestFailure("the streaming client: %r" % (self.error,))


def test_others_are_answered_while_one_client_streams():
    """While one client streams its transactions (served in rounds),
    two others send 200 statements each, one after the other, over TCP
    and the unix socket: each is answered, and the streaming client goes
    on meanwhile."""
    with _daemon(unix=True) as d:
        admin = d.connect()
        _create(admin)
        busy0 = _busy(admin)
        rounds0 = _idle(admin)[1]
        s = _Streamer(d)
        s.start()
        wait_for(lambda: s.batches >= 40 or s.error is not None, 30, "the streaming client's first batches")
        at = s.batches
        try:
            for addr in (d.addr, d.unix_socket):
                c = harness.Conn(addr)
                _one_after_another(c, 200)
                c.close()
            during = s.batches - at
        finally:
            s.finish()
        if during < 10:
            raise TestFailure("the streaming client sent %d batches while the others sent 400 statements" % during)
        expect_rows(admin.request("SELECT count(*) FROM ins"), [[str(s.rows)]])
        if _idle(admin)[1] == rounds0:
            _unless_busy(admin, busy0, "no rounds")
            raise TestFailure("no rounds while one client streamed")


def test_a_timer_fires_while_one_client_streams():
    """The rounds give way to libuv's timers: an idle client is timed out
    (client_idle_timeout = 500 ms) while another streams."""
    with _daemon(server={"client_idle_timeout": "500"}) as d:
        admin = d.connect()
        _create(admin)
        idle = d.connect()
        s = _Streamer(d)
        s.start()
        try:
            r = idle.read_response()
            eq(r.err_code, "TIMEOUT", "the idle client's answer")
            if not idle.wait_closed():
                raise TestFailure("the idle client was not disconnected")
            if s.batches == 0:
                raise TestFailure("the streaming client sent nothing before the idle one was timed out")
        finally:
            s.finish()


def test_the_end_of_input_after_a_stream_is_seen():
    """A client served in rounds sends its last batch and shuts down its
    sending side at once (as `nc -N` does): it gets every answer, then
    the daemon closes; its transaction, never committed, is rolled
    back."""
    with _daemon() as d:
        admin = d.connect()
        _create(admin)
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        for at in range(0, 320, DEPTH):
            _batch(c, at, DEPTH)
        c.send(b"".join(b"?1 INSERT INTO ins (v) VALUES (?)\ntrow-%d\n" % i for i in range(320, 336)))
        c.sock.shutdown(socket.SHUT_WR)
        for i in range(320, 336):
            r = c.read_response()
            if not r.ok:
                raise TestFailure("INSERT %d after the end of input: %s" % (i, r.status))
        if not c.wait_closed():
            raise TestFailure("the daemon did not close after the end of input")
        wait_for(lambda: len(admin.request(".clients").rows) == 1, 10, "the client's session gone")
        expect_rows(admin.request("SELECT count(*) FROM ins"), [["0"]])


def test_a_client_that_resets_while_served_is_dropped():
    """A client served in rounds resets its connection mid-transaction:
    its session goes, its transaction is rolled back, and the next client
    is served in rounds in turn."""
    with _daemon() as d:
        admin = d.connect()
        _create(admin)
        busy0 = _busy(admin)
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        for at in range(0, 320, DEPTH):
            _batch(c, at, DEPTH)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()  # an RST
        wait_for(lambda: len(admin.request(".clients").rows) == 1, 10, "the reset client's session gone")
        expect_rows(admin.request("SELECT count(*) FROM ins"), [["0"]])
        rounds0 = _idle(admin)[1]
        c2 = d.connect()
        _transaction(c2, 0, 640)
        _check_rows(c2, 640)
        if _idle(admin)[1] == rounds0:
            _unless_busy(admin, busy0, "no rounds")
            raise TestFailure("no rounds for the next client")


def test_a_tls_client_is_read_directly():
    """A TLS client's statements one after the other: the poller reads
    its records itself, and they are decrypted as libuv's reads would
    be."""
    with TlsDaemon(server=POLL) as d:
        _read_directly(TlsConn(("127.0.0.1", d.tls_port), d.pki), d.connect(), "over TLS")


def test_lone_writes_read_directly_stay_on_the_loop():
    """10,000 autocommit INSERTs on the in-memory bind, one after the
    other from the load generator (a client that answers within
    microseconds), are read directly and still run on the loop thread
    (on_loop), one per turn: the answers of a turn with a quick write
    wait for its check phase, so the next write is not in the same turn
    (where it would go to a worker)."""
    n = 10000
    with _daemon(server={"log_level": "debug"}) as d:
        c = d.connect()
        _create(c)
        busy0 = _busy(c)
        on_loop0 = int(c.request(".stats").dicts()[-1]["on_loop"])
        reads0 = _idle(c)[0]
        caught0 = _caught(c)
        p = subprocess.run([loadgen_path(), "-Q", "-m", "sqlmux", "-p", str(d.port), "-c", "1", "-P", "1",
                            "-n", str(n), "-q", "?1 INSERT INTO ins (v) VALUES (?)\\ntrow-{seq}"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=harness.scaled(120))
        if p.returncode != 0 or " errors=0 " not in " %s " % p.stdout:
            raise TestFailure("loadgen: %d %s %s" % (p.returncode, p.stdout, p.stderr))
        on_loop = int(c.request(".stats").dicts()[-1]["on_loop"]) - on_loop0
        reads, caught = _idle(c)[0] - reads0, _caught(c) - caught0
        _check_rows(c, n)
        if reads == 0:
            _unless_busy(c, busy0, "no reads, %d polls caught a request" % caught)
        if reads == 0 or caught - reads > n // 200:
            raise TestFailure("%d of the %d polls that caught a request read it, for %d INSERTs one after the other"
                              % (reads, caught, n))
        # A quick write the machine held past its budget (a busy CPU)
        # goes to a worker, and so do the next QUICK_SKIP_RUNS (64) of its
        # text; each such stop is logged.
        stopped = sum("bind memory_db: a write goes to a worker" in line for line in d.stderr_text().splitlines())
        if on_loop < n - 64 * stopped - n // 200:
            raise TestFailure("%d of %d INSERTs (%d read directly, %d stopped) on the loop"
                              % (on_loop, n, reads, stopped))
