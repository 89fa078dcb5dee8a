"""Sequential latency on an idle daemon: a client that sends one request,
waits for its answer and sends the next must get each answer as soon as it
is ready, never when some unrelated timer next wakes the loop (issue 13 a:
PostgreSQL answers came 100-250 ms late, at the next idle sweep or wait
check, because the end-of-turn flush was armed after the loop had decided
how long to sleep).

Every backend and path: SQLite file and memory binds (quick reads on the
loop thread, worker statements), a PostgreSQL bind, dot-commands and
.auth answers; with and without users configured."""

import crypt
import time

import harness
from harness import TestFailure, expect_err, expect_ok, expect_status
from pgfixture import create_accounts, shared

PASSWORD = "quick word"
# A cheap hash (SHA-512, 1000 rounds: about a millisecond), so that what
# is measured is the answer's path, not the password check's cost.
USERS = ("[user.alice]\npassword = %s\nadmin = on\ngrant.* = read-write\n"
         % crypt.crypt(PASSWORD, "$6$rounds=1000$latency0$"))

ROUNDS = 20
# Generous for ASan on a loaded 2-core machine; the bug gives 100-250 ms
# to most requests. The second worst of the 20 is held to WORST_MS: one
# request that a burst of load on the machine delays is not the bug.
MEDIAN_MS = 15.0
WORST_MS = 50.0


def _latencies(c, send, check):
    """Milliseconds of ROUNDS sequential round trips of send(c) (sorted);
    check(resp) validates each answer."""
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        resp = send(c)
        times.append((time.perf_counter() - t0) * 1000.0)
        check(resp)
        # Let the loop go idle: the bug hides while the loop is busy.
        time.sleep(0.005)
    return sorted(times)


def _expect_quick(what, measure):
    """measure() -> sorted latencies; their median and second worst must be
    within MEDIAN_MS / WORST_MS. A failing run is measured once more
    before it counts: the bug fails every run, a burst of load on a shared
    machine seldom hits two in a row."""
    for attempt in (1, 2):
        times = measure()
        median, worst = times[len(times) // 2], times[-2]
        if median <= harness.scaled(1) * MEDIAN_MS and worst <= harness.scaled(1) * WORST_MS:
            return
    raise TestFailure("%s: %d sequential requests took median %.1f ms, second worst %.1f ms "
                      "(want < %.0f / %.0f ms), twice; the second run: %s"
                      % (what, ROUNDS, median, worst, MEDIAN_MS, WORST_MS,
                         " ".join("%.1f" % t for t in times)))


def _rows(resp):
    if not resp.ok or resp.columns is None:
        raise TestFailure("want rows, got %r" % resp)


def _changed(resp):
    if not resp.ok or not resp.status.startswith("+OK changes=1"):
        raise TestFailure("want +OK changes=1, got %r" % resp)


def _on_loop(c, bind):
    """The bind's .stats on_loop counter (statements answered inline)."""
    r = c.request(".stats")
    for row in r.rows:
        if row[0] == bind:
            return int(dict(zip(r.names, row))["on_loop"])
    raise TestFailure("no .stats row for %s: %r" % (bind, r))


def _check_paths(d, c, pg_bind=None):
    """Every path a one-at-a-time client can take, each measured alone."""
    ping = lambda c: c.request(".ping")
    _expect_quick(".ping", lambda: _latencies(c, ping, expect_ok))
    _expect_quick(".binds", lambda: _latencies(c, lambda c: c.request(".binds"), _rows))
    for bind, table in (("default", "test1"), ("memory_db", "test3")):
        if bind == pg_bind:
            continue
        _expect_quick("%s quick read" % bind,
                      lambda: _latencies(c, lambda c: c.request("SELECT count(*) FROM %s" % table), _rows))
        _expect_on_loop(c, bind, table)
        before = _on_loop(c, bind)
        # With RETURNING a write always runs on a worker (a lone plain one
        # on the in-memory bind may run on the loop: below).
        _expect_quick("%s worker write" % bind,
                      lambda: _latencies(c, lambda c: c.bulk("INSERT INTO %s (color) VALUES (?) RETURNING id"
                                                     % table, ["x"]), _rows))
        if _on_loop(c, bind) != before:
            raise TestFailure("%s: worker statements were answered on the loop" % bind)
        # A transaction's BEGIN with its first read, and its COMMIT, are
        # its worker's; its other reads too on a file bind. On the in-memory
        # bind they run on the loop, on the transaction's connection, when
        # within the quick-read budget (test_txn_inline.py checks that).
        before = _on_loop(c, bind)
        _expect_quick("%s read in a transaction" % bind, lambda: _txn_reads(c, table))
        on_loop = _on_loop(c, bind) - before
        if on_loop > 0 and bind != "memory_db":
            raise TestFailure("%s: %d reads in a transaction answered on the loop" % (bind, on_loop))
        if bind != "memory_db":
            continue
        before = _on_loop(c, bind)
        _expect_quick("%s quick write" % bind,
                      lambda: _latencies(c, lambda c: c.bulk("INSERT INTO %s (color) VALUES (?)" % table,
                                                     ["x"]), _changed))
        if _on_loop(c, bind) - before < ROUNDS // 2:
            raise TestFailure("%s: the lone writes were not answered on the loop (quick writes)" % bind)
    if pg_bind is not None:
        _expect_quick("PostgreSQL SELECT 1", lambda: _latencies(c, lambda c: c.request("SELECT 1"), _rows))
        _expect_quick("PostgreSQL write",
                      lambda: _latencies(c, lambda c: c.bulk("INSERT INTO accounts (name) VALUES (?)",
                                                     [None]), _changed))
        _expect_quick("PostgreSQL read in a transaction", lambda: _txn_reads(c, "accounts"))


def _expect_on_loop(c, bind, table):
    """ROUNDS reads of table all answered on the loop. A quick read that
    overruns its 200 us budget (a preemption on a loaded machine is
    enough) sends the same text to a worker for its next 64 runs, by
    design: a round that sees one is tried again with a text of its own
    (a space more), up to three rounds. Without quick reads none is."""
    for attempt in range(3):
        sql = "SELECT count(*) FROM %s%s" % (table, " " * (attempt + 1))
        before = _on_loop(c, bind)
        for _ in range(ROUNDS):
            _rows(c.request(sql))
        inline = _on_loop(c, bind) - before
        if inline >= ROUNDS:
            return
    raise TestFailure("%s: the reads were not answered on the loop (quick reads): %d of %d, three times"
                      % (bind, inline, ROUNDS))


def _txn_reads(c, table):
    expect_ok(c.request("BEGIN"))
    times = _latencies(c, lambda c: c.request("SELECT count(*) FROM %s" % table), _rows)
    expect_ok(c.request("COMMIT"))
    return times


def _pg_binds(pg, db):
    binds = [b for b in harness.DEFAULT_BINDS if b[0] != "default"]
    return [("default", pg.url(db=db))] + binds


def test_sqlite_binds_answer_sequential_requests_at_once():
    with harness.Daemon() as d, d.connect() as c:
        _check_paths(d, c)


def test_sqlite_binds_with_users_answer_sequential_requests_at_once():
    cfg = harness.make_config(server={"auth_fail_delay": "20"}) + USERS
    with harness.Daemon(config=cfg) as d:
        c = d.connect()
        auth = lambda c: c.request(".auth alice %s" % PASSWORD)
        _expect_quick(".auth", lambda: _latencies(c, auth, lambda r: expect_status(r, "+OK user=alice")))
        _check_paths(d, c)
        # A refused password answers after auth_fail_delay (20 ms), not at
        # some later timer.
        # A connection is closed after its fifth failed .auth: each one
        # fails four times, on connections opened before the measurement.
        bad = [d.connect() for _ in range(2 * ROUNDS // 4)]
        sent = []

        def refuse(_):
            conn = bad[len(sent) // 4]
            sent.append(conn)
            return conn.request(".auth alice wrong")

        refused = lambda: [t - 20.0 for t in _latencies(None, refuse, lambda r: expect_err(r, "AUTH"))]
        _expect_quick(".auth refused (less its 20 ms delay)", refused)
        c.close()
        for conn in bad:
            conn.close()


def _pg_default_daemon(pg, db, users=""):
    """A daemon whose `default` bind is PostgreSQL database db (accounts
    lives there), next to the memory bind."""
    env = dict((k, None) for k in harness.os.environ if k.startswith("PG"))
    cfg = harness.make_config(binds=_pg_binds(pg, db),
                              tables=[("test3", "memory_db"), ("accounts", "default")],
                              schemas={"memory_db": "schema_memory_db.sql"})
    return harness.Daemon(config=cfg + users, env=env)


def test_pg_default_bind_answers_sequential_requests_at_once():
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db)
        with _pg_default_daemon(pg, db) as d, d.connect() as c:
            _check_paths(d, c, pg_bind="default")


def test_pg_default_bind_with_users_answers_sequential_requests_at_once():
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db)
        with _pg_default_daemon(pg, db, USERS) as d, d.connect() as c:
            expect_status(c.request(".auth alice %s" % PASSWORD), "+OK user=alice")
            _check_paths(d, c, pg_bind="default")
