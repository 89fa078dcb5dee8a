"""PostgreSQL binds when the server goes away: a statement that arrives
while the server is down or unreachable gets a prompt -ERR UNAVAILABLE, one
in flight when it dies gets -ERR CONNLOST, never a hang; the client stays
connected and usable, and when the server is back statements succeed again
without restarting sqlmuxd.

These tests stop and start servers, so they use private clusters
(pgfixture.PgCluster), except the unreachable-server one, which puts a
TCP proxy it controls in front of the shared cluster."""

import socket
import threading
import time

from harness import TestFailure, eq, expect_ok, expect_rows, expect_status
from pgfixture import (APP_DB, PASSWORD, USER, PgCluster, binds_by_name, create_accounts,
                       pg_daemon, shared, wait_for)

RECOVER_TIMEOUT = 15.0     # reconnect backoff allowed after the server is back


def _until_ok(conn, sql, timeout=RECOVER_TIMEOUT, what="statement after the server came back"):
    """Send sql until it succeeds; every attempt must be answered."""
    deadline = time.time() + timeout
    seen = []
    while True:
        r = conn.request(sql)
        if r.ok:
            return r
        if not seen or seen[-1] != r.status:
            seen.append(r.status)
        if time.time() > deadline:
            raise TestFailure("%s: %r still failing after %.0fs; answers: %s"
                              % (what, sql, timeout, " | ".join(seen[-5:])))
        time.sleep(0.2)


def _expect_prompt_err(conn, sql, codes, limit, what):
    t0 = time.time()
    r = conn.request(sql)
    took = time.time() - t0
    if r.ok or r.err_code not in codes:
        raise TestFailure("%s: want -ERR %s, got %r" % (what, " or ".join(codes), r))
    if took > limit:
        raise TestFailure("%s: -ERR %s came after %.1fs (limit %.1fs)"
                          % (what, r.err_code, took, limit))
    return r


def _assert_no_password_in_log(d):
    log = d.stderr_text()
    if PASSWORD in log:
        line = [ln for ln in log.splitlines() if PASSWORD in ln][0]
        raise TestFailure("the password appears in the daemon's log: %r" % line)


class Proxy:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:target. blackhole()
    resets every forwarded connection and then accepts new ones without
    ever answering (an unreachable server: connects hang); forward()
    restores normal service."""

    def __init__(self, target):
        self.target = target
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.mode = "forward"
        self.pairs = []
        self.held = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                cs, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                if self.mode != "forward":
                    self.held.append(cs)
                    continue
            try:
                ss = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                ss.settimeout(None)
            except OSError:
                cs.close()
                continue
            with self.lock:
                self.pairs.append((cs, ss))
            for a, b in ((cs, ss), (ss, cs)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def _reset(s):
        # shutdown() first: close() alone does not end a recv() blocked in
        # a pump thread, so the peer would not notice anything
        for op in (lambda: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        b"\x01\x00\x00\x00\x00\x00\x00\x00"),
                   lambda: s.shutdown(socket.SHUT_RDWR), s.close):
            try:
                op()
            except OSError:
                pass

    def blackhole(self):
        with self.lock:
            self.mode = "blackhole"
            pairs, self.pairs = self.pairs, []
        for cs, ss in pairs:
            self._reset(cs)
            self._reset(ss)

    def forward(self):
        with self.lock:
            self.mode = "forward"
            held, self.held = self.held, []
        for s in held:
            self._reset(s)

    def close(self):
        self.closed = True
        self.blackhole()
        self.forward()
        try:
            self.lsock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def test_pg_unreachable_server_unavailable_within_connect_timeout():
    pg = shared()
    with pg.database() as db, Proxy(pg.port) as proxy:
        create_accounts(pg, db, ["alice"])
        url = "postgresql://%s:%s@127.0.0.1:%d/%s" % (USER, PASSWORD, proxy.port, db)
        with pg_daemon(pg, db, url=url, opts={"connect_timeout": "1000"}) as d:
            c = d.connect()
            c.sock.settimeout(30)
            expect_rows(c.request("SELECT name FROM accounts"), [["alice"]])
            proxy.blackhole()
            time.sleep(0.5)
            for i in range(2):
                _expect_prompt_err(c, "SELECT name FROM accounts", ["UNAVAILABLE"], 1.0 + 2.5,
                                   "statement %d while the server is unreachable "
                                   "(connect_timeout=1000)" % i)
            expect_status(c.request(".ping"), "+OK")
            expect_status(c.request("INSERT INTO test1 (color) VALUES ('sqlite')"),
                          "+OK changes=1 last_id=1")
            state = binds_by_name(c)["pg"].get("state")
            if state not in ("down", "connecting"):
                raise TestFailure(".binds state of an unreachable bind: %r" % state)
            proxy.forward()
            expect_rows(_until_ok(c, "SELECT name FROM accounts"), [["alice"]])
            wait_for(lambda: binds_by_name(c)["pg"].get("state") == "connected", 5,
                     ".binds state 'connected' again")
            _assert_no_password_in_log(d)
test_pg_unreachable_server_unavailable_within_connect_timeout.timeout = 60


def test_pg_server_stopped_unavailable_then_recovers():
    with PgCluster() as pg:
        create_accounts(pg, APP_DB, ["alice"])
        with pg_daemon(pg, APP_DB, opts={"connect_timeout": "2000"}) as d:
            c = d.connect()
            c.sock.settimeout(30)
            expect_rows(c.request("SELECT name FROM accounts"), [["alice"]])
            pg.stop(mode="fast")
            time.sleep(0.5)
            for i in range(2):
                _expect_prompt_err(c, "SELECT name FROM accounts", ["UNAVAILABLE"], 2.0 + 3.0,
                                   "statement %d while the server is stopped" % i)
            # the client stays connected and usable
            expect_status(c.request(".ping"), "+OK")
            expect_status(c.request("INSERT INTO test1 (color) VALUES ('sqlite')"),
                          "+OK changes=1 last_id=1")
            expect_rows(c.request("SELECT color FROM test1"), [["sqlite"]])
            state = binds_by_name(c)["pg"].get("state")
            if state not in ("down", "connecting"):
                raise TestFailure(".binds state of a stopped bind: %r" % state)
            other = d.connect()
            other.sock.settimeout(30)
            _expect_prompt_err(other, "INSERT INTO accounts (name) VALUES ('bob')",
                               ["UNAVAILABLE"], 5.0, "a new client while the server is stopped")
            pg.start()
            expect_rows(_until_ok(c, "SELECT name FROM accounts"), [["alice"]])
            expect_status(_until_ok(other, "INSERT INTO accounts (name) VALUES ('bob')"),
                          "+OK changes=1")
            eq(pg.psql("SELECT name FROM accounts ORDER BY id"), [["alice"], ["bob"]],
               "rows after recovery")
            wait_for(lambda: binds_by_name(c)["pg"].get("state") == "connected", 5,
                     ".binds state 'connected' again")
            _assert_no_password_in_log(d)
test_pg_server_stopped_unavailable_then_recovers.timeout = 60


def _wait_active(pg, db, needle):
    wait_for(lambda: [b for b in pg.backends(db) if b[1] == "active" and needle in b[2]], 5,
             "%r running on the server" % needle)


def test_pg_in_flight_statement_gets_connlost():
    with PgCluster() as pg:
        create_accounts(pg, APP_DB, ["alice"])
        with pg_daemon(pg, APP_DB, opts={"connect_timeout": "2000"}) as d:
            for rnd, how in enumerate(["kill", "immediate"]):
                a = d.connect()
                a.sock.settimeout(30)
                expect_status(a.request(".use pg"), "+OK bind=pg")
                sleep_sql = "SELECT pg_sleep(30) AS s, %d AS round" % rnd
                a.send(sleep_sql + "\n")
                _wait_active(pg, APP_DB, sleep_sql)
                b = d.connect()
                b.sock.settimeout(30)
                expect_status(b.request("BEGIN"), "+OK changes=0")
                expect_status(b.request("INSERT INTO accounts (name) VALUES ('b%d')" % rnd),
                              "+OK changes=1")
                t0 = time.time()
                if how == "kill":
                    pg.kill()
                else:
                    pg.stop(mode="immediate")
                r = a.read_response()
                took = time.time() - t0
                if r.err_code != "CONNLOST":
                    raise TestFailure("round %d (%s): statement in flight when the server "
                                      "died: want -ERR CONNLOST, got %r" % (rnd, how, r))
                if took > 5:
                    raise TestFailure("round %d: CONNLOST after %.1fs" % (rnd, took))
                # both clients stay connected and usable
                expect_status(a.request(".ping"), "+OK")
                expect_rows(a.request("SELECT count(*) FROM test1"), [["0"]])
                _expect_prompt_err(b, "INSERT INTO accounts (name) VALUES ('b%d-2')" % rnd,
                                   ["CONNLOST", "UNAVAILABLE"], 5.0,
                                   "round %d: statement of a transaction whose server died"
                                   % rnd)
                t0 = time.time()
                r = b.request("ROLLBACK")
                if time.time() - t0 > 5:
                    raise TestFailure("round %d: ROLLBACK answered after %.1fs: %r"
                                      % (rnd, time.time() - t0, r))
                expect_status(b.request(".ping"), "+OK")
                pg.start()
                expect_rows(_until_ok(a, "SELECT count(*) AS n FROM accounts"), [["1"]])
                expect_rows(_until_ok(b, "SELECT name FROM accounts"), [["alice"]])
                # a new transaction on the new connection works
                expect_status(b.request("BEGIN"), "+OK changes=0")
                expect_status(b.request("INSERT INTO accounts (name) VALUES ('t%d')" % rnd),
                              "+OK changes=1")
                expect_ok(b.request("ROLLBACK"))
                eq(pg.psql("SELECT name FROM accounts"), [["alice"]],
                   "round %d: only committed rows survive" % rnd)
                a.close()
                b.close()
            _assert_no_password_in_log(d)
test_pg_in_flight_statement_gets_connlost.timeout = 90


def test_pg_server_stopped_mid_load():
    with PgCluster() as pg:
        create_accounts(pg, APP_DB)
        with pg_daemon(pg, APP_DB, opts={"connect_timeout": "2000", "pool_size": "4"}) as d:
            stop = threading.Event()
            lock = threading.Lock()
            errors = []
            answers = []           # (time, thread, status)
            nthreads = 5

            def work(k):
                try:
                    c = d.connect()
                    c.sock.settimeout(20)    # an unanswered request fails the test
                    i = 0
                    while not stop.is_set():
                        if i % 3 == 2:
                            sql = "SELECT count(*) AS n FROM accounts"
                        elif i % 3 == 1:
                            sql = "SELECT pg_sleep(0.05) AS s FROM accounts LIMIT 1"
                        else:
                            sql = "INSERT INTO accounts (name) VALUES ('w%d-%d')" % (k, i)
                        r = c.request(sql)
                        with lock:
                            answers.append((time.time(), k, r.status))
                        if not r.ok and r.err_code not in ("CONNLOST", "UNAVAILABLE"):
                            with lock:
                                errors.append("thread %d: %r -> %r" % (k, sql, r))
                            return
                        if not r.ok:
                            time.sleep(0.05)
                        i += 1
                except Exception as e:       # timeout or closed: a hang or a crash
                    with lock:
                        errors.append("thread %d: %s: %s" % (k, type(e).__name__, e))

            threads = [threading.Thread(target=work, args=(k,), daemon=True)
                       for k in range(nthreads)]
            for t in threads:
                t.start()
            try:
                time.sleep(1.0)
                t_stop = time.time()
                pg.stop(mode="immediate")
                time.sleep(1.5)
                if not d.running():
                    raise TestFailure("the daemon died when PostgreSQL stopped")
                t_start = time.time()
                pg.start()

                def all_recovered():
                    with lock:
                        ok_after = set(k for t, k, s in answers
                                       if t > t_start and s.startswith("+OK"))
                        return len(ok_after) == nthreads or errors
                wait_for(all_recovered, RECOVER_TIMEOUT,
                         "every client succeeding again after the restart")
                time.sleep(0.3)
            finally:
                stop.set()
                for t in threads:
                    t.join(25)
            if errors:
                raise TestFailure("%d problem(s):\n  %s" % (len(errors), "\n  ".join(errors[:10])))
            if any(t.is_alive() for t in threads):
                raise TestFailure("client threads still waiting for answers")
            before = [a for a in answers if a[0] < t_stop]
            down = [a for a in answers if t_stop + 0.5 < a[0] < t_start]
            if not before or not all(s.startswith("+OK") for _, _, s in before):
                raise TestFailure("before the stop: want only +OK, got %r"
                                  % sorted(set(s for _, _, s in before)))
            if not down or any(s.startswith("+OK") for _, _, s in down):
                raise TestFailure("while the server was down: want -ERR UNAVAILABLE answers "
                                  "only, got %r" % sorted(set(s for _, _, s in down)))
            if not d.running():
                raise TestFailure("the daemon died")
            c = d.connect()
            r = expect_ok(c.request("SELECT count(*) AS n FROM accounts"))
            inserted = int(pg.value("SELECT count(*) FROM accounts"))
            eq(r.rows, [[str(inserted)]], "row count through sqlmux and in PostgreSQL")
            _assert_no_password_in_log(d)
test_pg_server_stopped_mid_load.timeout = 60
