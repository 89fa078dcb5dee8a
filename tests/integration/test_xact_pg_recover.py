"""PostgreSQL parts of transactions across binds after a crash (issue 16;
daemon/xact_pg.c): at start the daemon resolves its own prepared
transactions on every PostgreSQL bind (COMMIT PREPARED when the transaction
has a decision, ROLLBACK PREPARED otherwise), leaves other daemons' alone,
keeps the in-doubt ones of a bind that is down (log, .binds, .stats) and
resolves them when it is back; transaction ids are never reused across
restarts.

The in-doubt state is made by hand, as a crash between PREPARE TRANSACTION
and COMMIT PREPARED leaves it: PREPARE TRANSACTION with psql under a gid of
the daemon's id, and (or not) a decision record written into the
coordinator log with tests/tools/xact_log_tool (the daemon's own log code)."""

import os
import signal
import sqlite3
import subprocess

import harness
import pgfixture
import test_xact_crash
from harness import TestFailure, daemon_binary, eq, expect_ok, scaled
from pgfixture import PgCluster, binds_by_name, pg_daemon, wait_for

LOG = "sqlmux-xact.log"
OTHER_ID = "0123456789abcdef"


def _tool(*args, check=True):
    path = os.path.join(os.path.dirname(daemon_binary()), "tests", "xact_log_tool")
    if not os.access(path, os.X_OK):
        path = os.path.join(harness.REPO, "build", "tests", "xact_log_tool")
    p = subprocess.run([path] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    if check and p.returncode != 0:
        raise TestFailure("xact_log_tool %s: %s" % (" ".join(args), p.stderr.decode()))
    return p.stdout.decode()


def _log_entries(d):
    return [ln for ln in _tool("list", os.path.join(d.data_dir, LOG)).split("\n") if ln]


def _decide(d, txid, *parts):
    _tool("append", os.path.join(d.data_dir, LOG), str(txid), *parts)


def _daemon_id(d):
    with open(os.path.join(d.data_dir, "daemon-id")) as f:
        return f.read().strip()


def _prepare(pg, gid, row_id):
    pg.psql("BEGIN; INSERT INTO t (id, v) VALUES (%d, '%s'); PREPARE TRANSACTION '%s'"
            % (row_id, gid, gid), user=pgfixture.USER)


def _prepared(pg):
    return sorted(r[0] for r in pg.psql("SELECT gid FROM pg_prepared_xacts WHERE database = 'app'"))


def _rows(pg):
    return [int(r[0]) for r in pg.psql("SELECT id FROM t ORDER BY id")]


def _setup(pg):
    """A daemon with a PostgreSQL bind `pg` (table t), started once so that
    it has its daemon id, then stopped."""
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text)", user=pgfixture.USER)
    d = pg_daemon(pg, "app", tables=(("t", None),))
    d.stop()
    return d


def _gid(d, txid):
    return "sqlmux_%s_%d_pg" % (_daemon_id(d), txid)


def test_start_resolves_by_the_decision():
    with PgCluster() as pg:
        d = _setup(pg)
        try:
            # 100: decision with no SQLite home -> commits; 101: no decision
            # -> rolls back; 104: home default has its marker -> commits;
            # 105: home default lacks its marker -> rolls back; another
            # daemon's gid is left alone.
            for txid, row in ((100, 1), (101, 2), (104, 4), (105, 5)):
                _prepare(pg, _gid(d, txid), row)
            other = "sqlmux_%s_102_pg" % OTHER_ID
            _prepare(pg, other, 3)
            _decide(d, 100, "pg:pg")
            _decide(d, 104, "anchor:default", "pg:pg")
            _decide(d, 105, "anchor:default", "pg:pg")
            db = sqlite3.connect(d.db_path("app.db"))
            db.execute("CREATE TABLE sqlmux_xact (txid INTEGER PRIMARY KEY, at INTEGER NOT NULL)")
            db.execute("INSERT INTO sqlmux_xact VALUES (104, 0)")
            db.commit()
            db.close()
            d.start()
            eq(_prepared(pg), [other], "only the other daemon's gid is left")
            eq(_rows(pg), [1, 4], "the decided transactions committed, the others rolled back")
            err = d.stderr_text(current_only=True)
            for txid, what in ((100, "committed"), (101, "rolled back"), (104, "committed"),
                               (105, "rolled back")):
                if "prepared transaction %s %s" % (_gid(d, txid), what) not in err:
                    raise TestFailure("no log line for %s %s:\n%s" % (txid, what, err[-3000:]))
            eq(_log_entries(d), [], "the log is cut back: nothing is left in doubt")
            eq(binds_by_name(d.connect())["pg"]["in_doubt"], "0", ".binds in_doubt")
            # A second start changes nothing.
            d.restart()
            eq(_prepared(pg), [other], "after a second start")
            eq(_rows(pg), [1, 4], "rows after a second start")
            if "prepared transaction" in d.stderr_text(current_only=True):
                raise TestFailure("the second start resolved something again")
        finally:
            d.cleanup()


def test_bind_down_at_start_then_back():
    with PgCluster() as pg:
        d = _setup(pg)
        try:
            _prepare(pg, _gid(d, 200), 1)        # decided: commits
            _prepare(pg, _gid(d, 201), 2)        # undecided: rolls back
            _decide(d, 200, "pg:pg")
            pg.stop()
            d.start()
            c = d.connect()
            # The daemon serves its other binds.
            expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'up')"))
            eq(binds_by_name(c)["pg"]["in_doubt"], "1", ".binds in_doubt while the bind is down")
            eq(binds_by_name(c)["default"]["in_doubt"], None, ".binds in_doubt of an SQLite bind")
            st = c.request(".stats")
            eq(st.dicts()[-1]["bind"], "(all)", "the last .stats row")
            eq(st.dicts()[-1]["in_doubt"], "1", ".stats in_doubt of (all)")
            eq([r["in_doubt"] for r in st.dicts() if r["bind"] == "pg"], ["1"], ".stats in_doubt of pg")
            err = d.stderr_text(current_only=True)
            if ("bind pg: cannot resolve the prepared transactions of this daemon now" not in err or
                    _gid(d, 200) not in err):
                raise TestFailure("the log does not name the bind and its gid in doubt:\n" + err[-3000:])
            eq(_log_entries(d), ["200 pg:pg"], "the decision is kept in the log")
            # A restart while the bind is still down keeps it (the log is cut
            # back at every start, carrying the decision over).
            d.restart()
            eq(_log_entries(d), ["200 pg:pg"], "the decision is kept across a restart")
            eq(binds_by_name(d.connect())["pg"]["in_doubt"], "1", ".binds after the restart")
            # The bind comes back: resolved within the retry interval.
            pg.start()
            wait_for(lambda: _prepared(pg) == [], scaled(15), "the in-doubt gids resolved")
            eq(_rows(pg), [1], "the decided transaction committed, the undecided one rolled back")
            wait_for(lambda: binds_by_name(d.connect())["pg"]["in_doubt"] == "0", scaled(5),
                     ".binds in_doubt back to 0")
            err = d.stderr_text(current_only=True)
            if "bind pg: resolved" not in err:
                raise TestFailure("the resolution was not logged:\n" + err[-3000:])
            d.restart()
            eq(_log_entries(d), [], "the decision is dropped once resolved")
            eq(_rows(pg), [1], "rows after a restart")
        finally:
            d.cleanup()


def test_sync_point_keeps_unresolved_decisions():
    # A decision whose PostgreSQL part waits for its bind survives the log
    # being cut back at run time (a sync point after 4 MiB of decisions)
    # and a restart; the part commits once the bind is back.
    with PgCluster() as pg:
        d = _setup(pg)
        try:
            _prepare(pg, _gid(d, 500), 1)
            _decide(d, 500, "pg:pg")
            pg.stop()
            d.start()
            eq(_log_entries(d), ["500 pg:pg"], "the decision kept at start")
            with open(os.path.join(d.data_dir, "sqlmux-xact.txid")) as f:
                floor = f.read().split()[1]
            c = d.connect()
            big = "x" * 60000
            for n in range(120):
                expect_ok(c.request("BEGIN"))
                expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (%d, 'a')" % n))
                expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (%d, '%s')" % (n, big)))
                expect_ok(c.request("COMMIT"))
                with open(os.path.join(d.data_dir, "sqlmux-xact.txid")) as f:
                    if f.read().split()[1] != floor:
                        break
            else:
                raise TestFailure("no sync point after 7 MiB of decisions")
            eq(_log_entries(d), ["500 pg:pg"], "the decision carried over the cut")
            d.restart()
            eq(binds_by_name(d.connect())["pg"]["in_doubt"], "1", "still in doubt after a restart")
            pg.start()
            wait_for(lambda: _prepared(pg) == [], scaled(15), "the part resolved")
            eq(_rows(pg), [1], "the decided part committed")
        finally:
            d.cleanup()


def test_crash_between_resolutions_at_start():
    with PgCluster() as pg:
        d = _setup(pg)
        try:
            for txid, row in ((300, 1), (301, 2), (302, 3)):
                _prepare(pg, _gid(d, txid), row)
            _decide(d, 300, "pg:pg")
            _decide(d, 302, "pg:pg")
            d.env = {"SQLMUX_XACT_CRASH": "pg_resolve"}
            d.start(wait=False)
            d.proc.wait(timeout=scaled(20))
            eq(d.proc.returncode, -signal.SIGKILL, "killed after the first resolution")
            eq(len(_prepared(pg)), 2, "one gid resolved before the kill")
            d.env = {}
            d.start()
            eq(_prepared(pg), [], "every gid resolved after the restart")
            eq(_rows(pg), [1, 3], "decided ones committed, the other rolled back")
        finally:
            d.cleanup()


def test_txid_never_reused():
    # A reservation far above the clock (as after a clock set back): the
    # next transaction ids stay above it.
    with harness.Daemon() as d:
        d.stop()
        floor = 9 * 10**15
        with open(os.path.join(d.data_dir, "sqlmux-xact.txid"), "w") as f:
            f.write("%d\n" % floor)
        d.start()
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'a')"))
        expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (1, 'b')"))
        expect_ok(c.request("COMMIT"))
        txid = d.file_query("app.db", "SELECT max(txid) FROM sqlmux_xact")[0][0]
        if txid <= floor:
            raise TestFailure("transaction id %d is not above the reservation %d" % (txid, floor))
        with open(os.path.join(d.data_dir, "sqlmux-xact.txid")) as f:
            reserved = int(f.read().split()[0])
        if reserved <= txid:
            raise TestFailure("the reservation %d does not cover the id handed out %d" % (reserved, txid))


def test_damaged_txid_file_is_a_start_error():
    with harness.Daemon() as d:
        d.stop()
        with open(os.path.join(d.data_dir, "sqlmux-xact.txid"), "w") as f:
            f.write("garbage")
        d.start(wait=False)
        d.proc.wait(timeout=scaled(10))
        d.exit_status = d.proc.returncode
        if d.proc.returncode == 0:
            raise TestFailure("the daemon started with a damaged sqlmux-xact.txid")
        err = d.stderr_text(current_only=True)
        if "sqlmux-xact.txid: damaged" not in err:
            raise TestFailure("the start error does not name the file:\n" + err[-2000:])


def test_damaged_log_with_pg_parts_is_a_start_error():
    with PgCluster() as pg:
        d = _setup(pg)
        try:
            _decide(d, 400, "pg:pg")
            _decide(d, 401, "pg:pg")
            path = os.path.join(d.data_dir, LOG)
            with open(path, "r+b") as f:
                f.seek(16 + 12 + 3)          # inside the first record's payload
                b = f.read(1)
                f.seek(16 + 12 + 3)
                f.write(bytes([b[0] ^ 0xFF]))
            d.start(wait=False)
            d.proc.wait(timeout=scaled(10))
            d.exit_status = d.proc.returncode
            if d.proc.returncode == 0:
                raise TestFailure("the daemon started with a damaged coordinator log")
            err = d.stderr_text(current_only=True)
            if LOG + ": offset 16:" not in err:
                raise TestFailure("the start error does not name the file and offset:\n" + err[-2000:])
        finally:
            d.cleanup()


# ---- End to end: the daemon's own commits (helper pgx's runtime) ---------------

def _setup_e2e(pg):
    """A daemon over the three SQLite binds, PostgreSQL bind pg (table t in
    database app) and pg2 (table t2 in database app2)."""
    pg.psql("CREATE DATABASE app2 OWNER %s" % pgfixture.USER, db="postgres")
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text)", user=pgfixture.USER)
    pg.psql("CREATE TABLE t2 (id int PRIMARY KEY, v text)", db="app2", user=pgfixture.USER)
    return pg_daemon(pg, "app", tables=(("t", None), ("t2", "pg2")),
                     extra_binds=(("pg2", pg.url(db="app2")),))


def _all_prepared(pg):
    return sorted(r[0] for r in pg.psql("SELECT gid FROM pg_prepared_xacts", db="postgres"))


def _state(d, pg):
    """Every bind: test1 (default), t (pg), t2 (pg2)."""
    return ([r[0] for r in d.file_query("app.db", "SELECT id FROM test1 ORDER BY id")],
            _rows(pg),
            [int(r[0]) for r in pg.psql("SELECT id FROM t2 ORDER BY id", db="app2")])


def _crash_commit(d, step, stmts):
    d.stop()
    d.env = {"SQLMUX_XACT_CRASH": step}
    d.start()
    c = d.connect()
    expect_ok(c.request("BEGIN"))
    for s in stmts:
        expect_ok(c.request(s))
    c.send("COMMIT\n")
    try:
        c.read_response()
    except Exception:
        pass
    d.proc.wait(timeout=scaled(20))
    if d.proc.returncode != -signal.SIGKILL:
        raise TestFailure("the daemon was not killed at %s (exit %s)" % (step, d.proc.returncode))
    d.env = {}


SQLITE_AND_PG = ["INSERT INTO test1 (id, color) VALUES (7, 'x')", "INSERT INTO t (id, v) VALUES (7, 'x')"]
PG_AND_PG = ["INSERT INTO t (id, v) VALUES (8, 'x')", "INSERT INTO t2 (id, v) VALUES (8, 'x')"]


def _check_crash(step, stmts, committed, want):
    with PgCluster() as pg:
        d = _setup_e2e(pg)
        try:
            _crash_commit(d, step, stmts)
            d.start()
            if harness.VALGRIND and "kept in doubt" in d.stderr_text(current_only=True):
                # Under valgrind on a busy machine the start may give up on
                # PostgreSQL (connect_timeout, capped at 5 s): the resolver
                # then does what the start would have done.
                wait_for(lambda: _all_prepared(pg) == [], scaled(10), "the resolver (%s)" % step)
            eq(_all_prepared(pg), [], "no prepared transaction left after the start (%s)" % step)
            eq(_state(d, pg), want if committed else ([], [], []), "every bind after a kill at %s" % step)
            d.restart()
            eq(_state(d, pg), want if committed else ([], [], []), "after a second start (%s)" % step)
            eq(_log_entries(d), [], "nothing left in the log")
            # The binds take new transactions across binds.
            c = d.connect()
            expect_ok(c.request("BEGIN"))
            expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (9, 'next')"))
            expect_ok(c.request("INSERT INTO t (id, v) VALUES (9, 'next')"))
            expect_ok(c.request("COMMIT"))
            eq(_rows(pg)[-1], 9, "a new transaction after recovery")
        finally:
            d.cleanup()


def test_e2e_crash_pg_prepared_sqlite_home():
    _check_crash("pg_prepared", SQLITE_AND_PG, False, None)


def test_e2e_crash_logged_sqlite_home():
    # The decision in the home bind's marker is written, not committed.
    _check_crash("logged", SQLITE_AND_PG, False, None)


def test_e2e_crash_committed_sqlite_home():
    # The home bind committed (the decision), COMMIT PREPARED not sent.
    _check_crash("committed", SQLITE_AND_PG, True, ([7], [7], []))


def test_e2e_crash_pg_prepared_pg_only():
    _check_crash("pg_prepared", PG_AND_PG, False, None)


def test_e2e_crash_pg_decided_pg_only():
    _check_crash("pg_decided", PG_AND_PG, True, ([], [8], [8]))


def test_e2e_crash_pg_resolve_after_pg_decided():
    # Killed after the decision, then killed again at start between the two
    # COMMIT PREPAREDs: the third start finishes.
    with PgCluster() as pg:
        d = _setup_e2e(pg)
        try:
            _crash_commit(d, "pg_decided", PG_AND_PG)
            eq(len(_all_prepared(pg)), 2, "two prepared parts after the kill")
            d.env = {"SQLMUX_XACT_CRASH": "pg_resolve"}
            d.start(wait=False)
            d.proc.wait(timeout=scaled(20))
            eq(d.proc.returncode, -signal.SIGKILL, "killed between two resolutions")
            eq(len(_all_prepared(pg)), 1, "one part resolved before the kill")
            d.env = {}
            d.start()
            eq(_all_prepared(pg), [], "both parts resolved")
            eq(_state(d, pg), ([], [8], [8]), "every bind")
        finally:
            d.cleanup()


def test_e2e_pg_down_between_prepare_and_commit_prepared():
    # The home bind committed (the decision), then the daemon died before
    # COMMIT PREPARED; PostgreSQL is down at the next start: the daemon
    # starts, serves, shows the part in doubt; PostgreSQL comes back: the
    # resolver commits it.
    with PgCluster() as pg:
        d = _setup_e2e(pg)
        try:
            _crash_commit(d, "committed", SQLITE_AND_PG)
            pg.stop()
            d.start()
            c = d.connect()
            eq([r[0] for r in d.file_query("app.db", "SELECT id FROM test1")], [7], "the SQLite part")
            expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (1, 'served')"))
            eq(binds_by_name(c)["pg"]["in_doubt"], "1", "the PostgreSQL part in doubt")
            eq(binds_by_name(c)["pg2"]["in_doubt"], "0", "nothing in doubt on pg2")
            pg.start()
            wait_for(lambda: _all_prepared(pg) == [], scaled(15), "the part committed by the resolver")
            eq(_state(d, pg), ([7], [7], []), "every bind once PostgreSQL is back")
            wait_for(lambda: binds_by_name(d.connect())["pg"]["in_doubt"] == "0", scaled(5), "in_doubt 0")
            d.restart()
            eq(_log_entries(d), [], "the decision is dropped once resolved")
        finally:
            d.cleanup()


# ---- Random kill -9 under writers: SQLite + PostgreSQL -------------------------

ACCOUNTS = 6
START = 1000


def _transfer_loop(d, stop, seed, counts):
    test_xact_crash._transfer_loop(d, stop, seed, counts, ("acct_s", "moves_s", "acct_p", "moves_p"), "BEGIN",
                                   ACCOUNTS)


def test_e2e_random_kill_sqlite_and_pg():
    import random
    iterations = int(os.environ.get("SQLMUX_XACT_PG_KILLS", "25"))
    with PgCluster() as pg:
        pg.psql(["CREATE TABLE acct_p (id int PRIMARY KEY, bal int NOT NULL)",
                 "CREATE TABLE moves_p (tid text PRIMARY KEY, amount int NOT NULL)",
                 "INSERT INTO acct_p SELECT i, %d FROM generate_series(0, %d) i" % (START, ACCOUNTS - 1)],
                user=pgfixture.USER)
        d = pg_daemon(pg, "app", tables=(("acct_p", None), ("moves_p", None)),
                      bind_opts={"default": {"busy_timeout": "2000"}})
        try:
            c = d.connect()
            expect_ok(c.request("CREATE TABLE acct_s (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL)"))
            expect_ok(c.request("CREATE TABLE moves_s (tid TEXT PRIMARY KEY, amount INTEGER NOT NULL)"))
            expect_ok(c.request("INSERT INTO acct_s (id, bal) VALUES %s"
                                % ", ".join("(%d, %d)" % (i, START) for i in range(ACCOUNTS))))
            total = 2 * ACCOUNTS * START
            rnd = random.Random(61)
            committed = 0
            for it in range(iterations):
                committed += test_xact_crash.kill_round(d, _transfer_loop, it, 6, rnd.uniform(0.05, 0.4))
                eq(_all_prepared(pg), [], "after kill %d: no prepared transaction left" % it)
                sum_s, n_s, moved_s = d.file_query(
                    "app.db", "SELECT (SELECT sum(bal) FROM acct_s), (SELECT count(*) FROM moves_s), "
                              "(SELECT coalesce(sum(amount), 0) FROM moves_s)")[0]
                sum_p, n_p, moved_p = (int(x) for x in pg.psql(
                    "SELECT (SELECT sum(bal) FROM acct_p), (SELECT count(*) FROM moves_p), "
                    "(SELECT coalesce(sum(amount), 0) FROM moves_p)")[0])
                if sum_s + sum_p != total or n_s != n_p or moved_s != -moved_p:
                    raise TestFailure("after kill %d: sums %d + %d (want %d), moves %d / %d, amounts %d / %d"
                                      % (it, sum_s, sum_p, total, n_s, n_p, moved_s, moved_p))
            ids_s = set(r[0] for r in d.file_query("app.db", "SELECT tid FROM moves_s"))
            ids_p = set(r[0] for r in pg.psql("SELECT tid FROM moves_p"))
            eq(ids_s == ids_p, True, "transfer ids on both sides")
            if committed == 0 or len(ids_s) < committed:
                raise TestFailure("%d transfers answered +OK, %d found" % (committed, len(ids_s)))
            print("# %d kills, %d transfers committed" % (iterations, committed))
        finally:
            d.cleanup()


test_e2e_random_kill_sqlite_and_pg.timeout = 180
