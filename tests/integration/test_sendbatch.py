"""Sending a turn's answers together (io_uring, issue 18): at the end of a
loop turn that answered many clients, the daemon submits their answers in
one io_uring_enter() instead of one send() each. .stats counts the batches
(send_batches) and the answers they carried (sends_batched) in the (all)
row. To have many clients answered in one turn, the tests stop the daemon
(SIGSTOP), let every client send, and let it go on (SIGCONT): one
epoll_wait() then returns them all."""

import contextlib
import os
import signal
import socket
import sys

import harness
from harness import DEFAULT_TABLES, Conn, Daemon, Skip, TestFailure, eq, expect_ok, expect_rows
from test_tls import TlsConn, TlsDaemon
from test_xbind_flow import wait_for

CLIENTS = 40


def _sends(c):
    last = c.request(".stats").dicts()[-1]
    eq(last["bind"], "(all)", "the last .stats row")
    return int(last["send_batches"]), int(last["sends_batched"])


def _uring_refused(d):
    return "io_uring: not available" in d.stderr_text()


@contextlib.contextmanager
def _stopped(d):
    """The daemon stopped (SIGSTOP) inside the block, going on after."""
    d.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        d.send_signal(signal.SIGCONT)


def _one_turn(d, conns):
    """Each client sends `SELECT <its number>` while the daemon is stopped;
    then each must get its own number back."""
    with _stopped(d):
        for i, c in enumerate(conns):
            c.send("SELECT %d AS i\n" % i)
    for i, c in enumerate(conns):
        expect_rows(c.read_response(), [[str(i)]])


def _clients(d, n):
    """n clients, every other one on the unix socket."""
    return [Conn(d.unix_socket if i % 2 else d.addr) for i in range(n)]


def test_a_busy_turn_sends_its_answers_in_one_batch():
    """40 clients answered in one turn, over TCP and the unix socket: their
    answers leave in one batch (or a few), each to its own client."""
    with Daemon(unix=True) as d:
        conns = _clients(d, CLIENTS)
        admin = d.connect()
        if _uring_refused(d):
            raise Skip("the kernel refuses io_uring here: " + d.stderr_tail(3))
        eq(_sends(admin), (0, 0), "batches before any busy turn")
        for _ in range(3):
            _one_turn(d, conns)
        batches, sent = _sends(admin)
        if batches < 1 or batches > 6:
            raise TestFailure("%d batches for 3 turns of %d answers" % (batches, CLIENTS))
        if sent < 2 * CLIENTS:
            raise TestFailure("%d answers in %d batches, for 3 turns of %d clients" % (sent, batches, CLIENTS))
        # One client alone: its answer is one send(), not a batch.
        expect_rows(conns[0].request("SELECT 7 AS i"), [["7"]])
        eq(_sends(admin), (batches, sent), "batches after a turn with one answer")


def test_io_uring_off_sends_one_by_one():
    """io_uring = off: the same turns are answered alike, without a batch."""
    with Daemon(unix=True, server={"io_uring": "off"}) as d:
        conns = _clients(d, CLIENTS)
        for _ in range(3):
            _one_turn(d, conns)
        eq(_sends(d.connect()), (0, 0), "batches with io_uring = off")
        if _uring_refused(d):
            raise TestFailure("io_uring = off still tried io_uring: " + d.stderr_tail(3))


def _statements(c):
    return int(c.request(".stats").dicts()[-1]["statements"])


def test_a_client_that_does_not_read_gets_the_rest_later():
    """In a batch, one client's answers do not fit its socket (it reads
    nothing and has a small receive buffer): the others are answered at
    once, and its answers follow whole and in order once it reads."""
    n = 1000
    pad = "%04000d"
    with Daemon(tables=DEFAULT_TABLES + [("pad", "memory_db")]) as d:
        if _uring_refused(d):
            raise Skip("the kernel refuses io_uring here: " + d.stderr_tail(3))
        admin = d.connect()
        expect_ok(admin.request("CREATE TABLE pad (id INTEGER PRIMARY KEY, v TEXT)"))
        expect_ok(admin.request("INSERT INTO pad WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c "
                                "WHERE i < %d) SELECT i, printf('%s', i) FROM c" % (n - 1, pad)))
        conns = [Conn(d.addr) for _ in range(20)]
        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(d.addr)
        slow_conn = Conn.__new__(Conn)
        slow_conn.sock, slow_conn.buf, slow_conn.pos, slow_conn.eof = slow, bytearray(), 0, False
        slow.settimeout(30)
        batches0, _ = _sends(admin)
        done = _statements(admin) + n + len(conns)
        with _stopped(d):
            slow.sendall(b"".join(b"SELECT id, v FROM pad WHERE id = %d\n" % i for i in range(n)))
            for i, c in enumerate(conns):
                c.send("SELECT %d AS i\n" % i)
        for i, c in enumerate(conns):
            expect_rows(c.read_response(), [[str(i)]])
        if _sends(admin)[0] == batches0:
            raise TestFailure("no batch for a turn of %d answers" % (len(conns) + 1))
        # Every statement answered before the slow client reads a byte.
        wait_for(lambda: _statements(admin) >= done, 30, "the slow client's statements answered")
        for i in range(n):
            expect_rows(slow_conn.read_response(), [[str(i), pad % i]])
        expect_ok(slow_conn.request(".ping"))


def test_tls_answers_are_batched_encrypted():
    """TLS clients' answers are encrypted before they join the batch."""
    with TlsDaemon() as d:
        if _uring_refused(d):
            raise Skip("the kernel refuses io_uring here: " + d.stderr_tail(3))
        conns = [TlsConn(("127.0.0.1", d.tls_port), d.pki) for _ in range(20)]
        admin = d.connect()
        for _ in range(2):
            _one_turn(d, conns)
        if _sends(admin)[1] < 20:
            raise TestFailure("TLS answers not batched: %r" % (_sends(admin),))


# Run as a program: refuse io_uring_setup() with EPERM (a seccomp filter,
# as Docker's default profile does), then exec the rest of the command.
REFUSE_IO_URING = r"""
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
ops = [(0x20, 0, 0, 0),                 # load the system call's number
       (0x15, 0, 1, 425),               # io_uring_setup?
       (0x06, 0, 0, 0x00050000 | 1),    # then fail with EPERM
       (0x06, 0, 0, 0x7fff0000)]        # else allow
prog = b"".join(struct.pack("HBBI", *op) for op in ops)
buf = ctypes.create_string_buffer(prog)
fprog = struct.pack("HxxxxxxQ", len(ops), ctypes.addressof(buf))
if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) != 0:
    sys.exit("seccomp: errno %d" % ctypes.get_errno())
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_a_kernel_that_refuses_io_uring_sends_one_by_one():
    """Where the kernel refuses io_uring (here a seccomp filter, as in a
    container), the daemon says so at start and answers alike, one by
    one."""
    real = harness.daemon_binary()
    with Daemon(unix=True, start=False) as d:
        refuse = os.path.join(d.dir, "refuse_io_uring.py")
        with open(refuse, "w") as f:
            f.write(REFUSE_IO_URING)
        wrapper = os.path.join(d.dir, "sqlmuxd")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\nexec "%s" "%s" "%s" "$@"\n' % (sys.executable, refuse, real))
        os.chmod(wrapper, 0o755)
        saved = os.environ.get("SQLMUXD")
        os.environ["SQLMUXD"] = wrapper
        try:
            d.start()
        finally:
            if saved is None:
                del os.environ["SQLMUXD"]
            else:
                os.environ["SQLMUXD"] = saved
        if not _uring_refused(d):
            raise TestFailure("no 'io_uring: not available' at start: " + d.stderr_tail(5))
        conns = _clients(d, CLIENTS)
        for _ in range(3):
            _one_turn(d, conns)
        eq(_sends(d.connect()), (0, 0), "batches where the kernel refuses io_uring")
