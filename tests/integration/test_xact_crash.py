"""Transactions across binds under kill -9 (issue 16; daemon/xact.c): the
daemon killed at every step of a COMMIT's path (SQLMUX_XACT_CRASH) has,
after the next start, all of the transaction in every file bind or none of
it; a damaged coordinator log stops the start with an error naming the
file; 200 random kill -9 under 8 writers moving money between two binds
never lose or create any."""

import os
import random
import signal
import threading
import time

from harness import DEFAULT_TABLES, VALGRIND, Daemon, TestFailure, eq, expect_ok, scaled

LOG = "sqlmux-xact.log"

# step -> whether the transaction is there after the restart
STEPS = [
    ("markers", False),          # marker rows written, nothing logged
    ("log_torn", False),         # the decision record half written
    ("logged", False),           # the decision durable, no bind committed
    ("first_committed", True),   # the home bind committed, second_db not
    ("committed", True),         # every bind committed
]


def _crash_commit(d, home_first=True, home_memory=False):
    c = d.connect()
    expect_ok(c.request("BEGIN"))
    if home_memory:
        # The in-memory bind as home: no durable anchor, the decision goes
        # to the coordinator log (else it is in the home bind's marker).
        expect_ok(c.request("SELECT count(*) FROM test3"))
    for t in (("test1", "test2") if home_first else ("test2", "test1")):
        expect_ok(c.request("INSERT INTO %s (id, color) VALUES (7, 'crash')" % t))
    expect_ok(c.request("UPDATE test2 SET color = 'changed' WHERE id = 1"))
    expect_ok(c.request("DELETE FROM test1 WHERE id = 1"))
    c.send("COMMIT\n")
    try:
        r = c.read_response()
    except Exception:  # the connection dies with the daemon
        r = None
    d.proc.wait(timeout=scaled(10))
    if d.proc.returncode != -signal.SIGKILL:
        raise TestFailure("the daemon was not killed at the crash point (exit %s, answer %r)"
                          % (d.proc.returncode, r))


def _state(d):
    return (d.file_query("app.db", "SELECT id, color FROM test1 ORDER BY id"),
            d.file_query("second.db", "SELECT id, color FROM test2 ORDER BY id"))


BEFORE = ([(1, "a")], [(1, "b")])
AFTER = ([(7, "crash")], [(1, "changed"), (7, "crash")])


def _check_step(step, committed, home_first=True, home_memory=False):
    with Daemon(env={"SQLMUX_XACT_CRASH": step}) as d:
        c = d.connect()
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'a')"))
        expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (1, 'b')"))
        _crash_commit(d, home_first, home_memory)
        d.env = {}
        d.start()
        got = _state(d)
        want = AFTER if committed else BEFORE
        eq(got, want, "after a kill at %s and a restart" % step)
        # A second restart changes nothing (recovery is idempotent) and the
        # binds take new transactions across binds.
        d.restart()
        eq(_state(d), want, "after a second restart (%s)" % step)
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (9, 'next')"))
        expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (9, 'next')"))
        expect_ok(c.request("COMMIT"))
        eq(d.file_query("second.db", "SELECT color FROM test2 WHERE id = 9"), [("next",)])
        return d.stderr_text()


def test_xact_crash_markers():
    _check_step("markers", False)


def test_xact_crash_log_torn():
    err = _check_step("log_torn", False, home_memory=True)
    if "cut short by a crash during its append" not in err:
        raise TestFailure("the torn last record was not reported:\n" + err[-2000:])


def test_xact_crash_logged():
    _check_step("logged", False)


def test_xact_crash_logged_home_memory():
    # The log record is the decision when the home is the in-memory bind.
    _check_step("logged", True, home_memory=True)


def test_xact_crash_first_committed():
    err = _check_step("first_committed", True)
    if "bind second_db lacked it: its changes applied" not in err:
        raise TestFailure("recovery did not redo second_db:\n" + err[-2000:])


def test_xact_crash_committed():
    _check_step("committed", True)


def test_xact_crash_during_recovery():
    # Killed after the home bind committed, then killed again in the middle
    # of recovery (after it redid second_db): the third start finds every
    # marker and does nothing more.
    with Daemon(env={"SQLMUX_XACT_CRASH": "first_committed"}) as d:
        c = d.connect()
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'a')"))
        expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (1, 'b')"))
        _crash_commit(d)
        d.env = {"SQLMUX_XACT_CRASH": "recovery"}
        d.start(wait=False)
        d.proc.wait(timeout=scaled(10))
        eq(d.proc.returncode, -signal.SIGKILL, "killed during recovery")
        d.env = {}
        d.start()
        eq(_state(d), AFTER, "after recovery was killed and ran again")


def test_xact_crash_home_not_written():
    # The transaction began on second_db by a read, then wrote default and
    # the memory bind: no anchor, the log record decides.
    with Daemon(env={"SQLMUX_XACT_CRASH": "logged"}) as d:
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("SELECT count(*) FROM test2"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (3, 'x')"))
        expect_ok(c.request("INSERT INTO test3 (id, color) VALUES (3, 'x')"))
        c.send("COMMIT\n")
        d.proc.wait(timeout=scaled(10))
        d.env = {}
        d.start()
        eq(d.file_query("app.db", "SELECT id, color FROM test1"), [(3, "x")], "redone from the log")


def _damaged_log_refused(damage):
    # Two decisions in the log (the first commit lands, the second is
    # killed after its record): a damaged first one is not a torn tail.
    with Daemon(env={"SQLMUX_XACT_CRASH": "logged:2"}) as d:
        c = d.connect()
        for i in (1, 2):
            expect_ok(c.request("BEGIN"))
            expect_ok(c.request("SELECT count(*) FROM test3"))  # home: memory, decisions in the log
            expect_ok(c.request("INSERT INTO test1 (color) VALUES ('a')"))
            expect_ok(c.request("INSERT INTO test2 (color) VALUES ('b')"))
            if i == 1:
                expect_ok(c.request("COMMIT"))
            else:
                c.send("COMMIT\n")
                d.proc.wait(timeout=scaled(10))
        d.env = {}
        path = os.path.join(d.data_dir, LOG)
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            damage(data)
            f.seek(0)
            f.truncate()
            f.write(bytes(data))
        d.start(wait=False)
        try:
            d.proc.wait(timeout=scaled(10))
        except Exception:
            raise TestFailure("the daemon started with a damaged coordinator log")
        d.exit_status = d.proc.returncode
        if d.proc.returncode == 0:
            raise TestFailure("exit status 0 with a damaged log")
        err = d.stderr_text(current_only=True)
        if path not in err or "damaged" not in err and "not a coordinator log" not in err:
            raise TestFailure("the error does not name the log and the damage:\n" + err[-2000:])


def test_xact_damaged_log_refused():
    def flip_first_record(data):
        data[16 + 12 + 3] ^= 0xFF  # a payload byte of the first record
    _damaged_log_refused(flip_first_record)


def test_xact_truncated_header_refused():
    def cut(data):
        del data[10:]
    _damaged_log_refused(cut)


# ---- 200 random kill -9 under 8 writers -------------------------------------

ACCOUNTS = 8
START = 1000


def _transfer_loop(d, stop, seed, counts, tables=("acct_a", "moves_a", "acct_b", "moves_b"),
                   begin="BEGIN IMMEDIATE", accounts=ACCOUNTS):
    """Transfers between the accounts of two binds (tables: the first
    bind's accounts and moves, the second's) until stop is set; counts[0]:
    the ones that answered +OK."""
    acct_1, moves_1, acct_2, moves_2 = tables
    rnd = random.Random(seed)
    try:
        c = d.connect()
        c.sock.settimeout(5)
    except Exception:
        return
    while not stop.is_set():
        a, b, amount = rnd.randrange(accounts), rnd.randrange(accounts), rnd.randrange(1, 50)
        tid = "%d-%d" % (seed, rnd.randrange(1 << 40))
        # Always the first bind first: one lock order, no deadlock between writers.
        stmts = [begin,
                 "UPDATE %s SET bal = bal - %d WHERE id = %d" % (acct_1, amount, a),
                 "INSERT INTO %s (tid, amount) VALUES ('%s', %d)" % (moves_1, tid, -amount),
                 "UPDATE %s SET bal = bal + %d WHERE id = %d" % (acct_2, amount, b),
                 "INSERT INTO %s (tid, amount) VALUES ('%s', %d)" % (moves_2, tid, amount),
                 "COMMIT"]
        try:
            for s in stmts:
                r = c.request(s)
                if not r.ok:
                    c.request("ROLLBACK")
                    break
            else:
                counts[0] += 1
        except Exception:
            return


def kill_round(d, loop, it, writers, pause):
    """One round of kill -9 under load: `writers` threads run loop(d, stop,
    seed, counts) for `pause` seconds, the daemon is killed, the writers
    stopped, the daemon started again. Returns the transfers answered +OK."""
    stop = threading.Event()
    counts = [0]
    threads = [threading.Thread(target=loop, args=(d, stop, it * 100 + k, counts)) for k in range(writers)]
    for t in threads:
        t.start()
    time.sleep(pause)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    stop.set()
    for t in threads:
        t.join(10)
    for cc in d.conns:
        cc.close()
    d.conns = []
    d.start()
    return counts[0]


def test_xact_random_kill_under_load():
    tables = DEFAULT_TABLES + [("acct_b", "second_db"), ("moves_b", "second_db")]
    # Under valgrind each restart takes seconds: 20 kills (each killed
    # daemon's memcheck report is still checked) instead of 200.
    iterations = int(os.environ.get("SQLMUX_XACT_KILLS", "20" if VALGRIND else "200"))
    with Daemon(tables=tables, bind_opts={"default": {"busy_timeout": "2000"},
                                          "second_db": {"busy_timeout": "2000"}}) as d:
        c = d.connect()
        for t in ("a", "b"):
            expect_ok(c.request("CREATE TABLE acct_%s (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL)" % t))
            expect_ok(c.request("CREATE TABLE moves_%s (tid TEXT PRIMARY KEY, amount INTEGER NOT NULL)" % t))
            expect_ok(c.request("INSERT INTO acct_%s (id, bal) VALUES %s"
                                % (t, ", ".join("(%d, %d)" % (i, START) for i in range(ACCOUNTS)))))
        total = 2 * ACCOUNTS * START
        rnd = random.Random(16)
        committed = 0
        recovered = 0
        for it in range(iterations):
            # 3-40 ms of load before each kill, scaled: under valgrind the
            # writers' first transfer takes longer than 40 ms.
            committed += kill_round(d, _transfer_loop, it, 8, scaled(rnd.uniform(0.003, 0.04)))
            c = d.connect()
            r = c.request("SELECT (SELECT sum(bal) FROM acct_a), (SELECT count(*) FROM moves_a), "
                          "(SELECT sum(amount) FROM moves_a)")
            sum_a, n_a, moved_a = (int(x) if x is not None else 0 for x in r.rows[0])
            r = c.request("SELECT (SELECT sum(bal) FROM acct_b), (SELECT count(*) FROM moves_b), "
                          "(SELECT sum(amount) FROM moves_b)")
            sum_b, n_b, moved_b = (int(x) if x is not None else 0 for x in r.rows[0])
            if sum_a + sum_b != total or n_a != n_b or moved_a != -moved_b:
                raise TestFailure("after kill %d: sums %d + %d (want %d), moves %d / %d, amounts %d / %d"
                                  % (it, sum_a, sum_b, total, n_a, n_b, moved_a, moved_b))
            if "lacked it: its changes applied" in d.stderr_text(current_only=True):
                recovered += 1
        # Every transfer is whole: the same set of ids on both sides.
        ids_a = set(r[0] for r in d.file_query("app.db", "SELECT tid FROM moves_a"))
        ids_b = set(r[0] for r in d.file_query("second.db", "SELECT tid FROM moves_b"))
        eq(ids_a == ids_b, True, "transfer ids on both sides")
        if committed == 0 or len(ids_a) < committed:
            raise TestFailure("%d transfers answered +OK, %d found" % (committed, len(ids_a)))
        print("# %d kills, %d transfers committed, %d restarts redid a bind" % (iterations, committed, recovered))


# About 45 s on an idle machine (each kill costs a restart); the runner's
# limit, times SQLMUX_TIMEOUT_SCALE, stops a hung one.
test_xact_random_kill_under_load.timeout = 180
