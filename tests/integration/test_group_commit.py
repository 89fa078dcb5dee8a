"""Group commit: writes of different clients outside transactions that are
queued together for a SQLite bind's writer commit in one transaction, yet
each keeps the answer and the effect it has alone: a failed statement
undoes only itself, a statement that rolls the whole transaction back
(ON CONFLICT ROLLBACK) makes the others run alone, and nothing is applied
twice or lost."""

import time

from harness import DEFAULT_TABLES, Daemon, TestFailure, eq, expect_ok, expect_rows, scaled

CONNS = 24
ROUNDS = 20


def _round(conns, stmts):
    """Send one statement on each connection at once, then read the answers."""
    for c, sql in zip(conns, stmts):
        c.send(sql + "\n")
    return [c.read_response() for c in conns]


def _check(bind_table):
    with Daemon(tables=DEFAULT_TABLES + [("g_*", bind_table)]) as d:
        c = d.connect()
        expect_ok(c.request("CREATE TABLE g_keys (id INTEGER PRIMARY KEY, k TEXT UNIQUE, n INTEGER)"))
        expect_ok(c.request("INSERT INTO g_keys (k, n) VALUES ('taken', 0), ('counter', 0)"))
        conns = [d.connect() for _ in range(CONNS)]
        inserted = bumped = 0
        for r in range(ROUNDS):
            kinds = [(r * CONNS + i) % 6 for i in range(CONNS)]
            stmts = []
            for i, kind in enumerate(kinds):
                if kind == 0:      # fails alone
                    stmts.append("INSERT INTO g_keys (k, n) VALUES ('taken', %d)" % r)
                elif kind == 1:    # fails and rolls back the transaction it runs in
                    stmts.append("INSERT OR ROLLBACK INTO g_keys (k, n) VALUES ('taken', %d)" % r)
                elif kind == 2:
                    stmts.append("UPDATE g_keys SET n = n + 1 WHERE k = 'counter'")
                else:
                    stmts.append("INSERT INTO g_keys (k, n) VALUES ('k-%d-%d', %d)" % (r, i, r))
            for i, (kind, resp) in enumerate(zip(kinds, _round(conns, stmts))):
                what = "round %d, statement %d (%s)" % (r, i, stmts[i])
                if kind in (0, 1):
                    eq(resp.status.split(" ")[:2], ["-ERR", "CONSTRAINT"], what)
                elif kind == 2:
                    eq(resp.status, "+OK changes=1", what)
                    bumped += 1
                else:
                    eq(resp.status.startswith("+OK changes=1 last_id="), True, what + ": " + resp.status)
                    inserted += 1
        expect_rows(c.request("SELECT count(*) FROM g_keys WHERE k LIKE 'k-%'"), [[str(inserted)]])
        expect_rows(c.request("SELECT n FROM g_keys WHERE k = 'counter'"), [[str(bumped)]])
        expect_rows(c.request("SELECT n FROM g_keys WHERE k = 'taken'"), [["0"]])
        # Every answered insert is there, once.
        rows = expect_ok(c.request("SELECT k FROM g_keys WHERE k LIKE 'k-%' ORDER BY k")).rows
        eq(len(set(r[0] for r in rows)), inserted, "distinct keys")


def test_group_commit_memory_bind():
    _check("memory_db")


def test_group_commit_file_bind():
    _check("second_db")


def test_writes_behind_a_held_write_lock_fail_after_busy_timeout():
    """While another client's transaction holds the write lock, queued
    writes get -ERR BUSY after about busy_timeout, each, not one after
    another; once it commits, writes go through again."""
    opts = {"memory_db": {"busy_timeout": "1000"}}
    with Daemon(tables=DEFAULT_TABLES + [("g_*", "memory_db")], bind_opts=opts) as d:
        a = d.connect()
        expect_ok(a.request("CREATE TABLE g_rows (id INTEGER PRIMARY KEY, v TEXT)"))
        expect_ok(a.request("BEGIN"))
        expect_ok(a.request("INSERT INTO g_rows (v) VALUES ('held')"))
        conns = [d.connect() for _ in range(12)]
        for c in conns:
            c.sock.settimeout(scaled(30))
        t0 = time.time()
        answers = _round(conns, ["INSERT INTO g_rows (v) VALUES ('w%d')" % i for i in range(len(conns))])
        took = time.time() - t0
        for r in answers:
            eq(r.status.split(" ")[:2], ["-ERR", "BUSY"], "a write behind the held lock")
        if took > scaled(4.0):
            raise TestFailure("12 writes behind the lock took %.1f s; busy_timeout is 1 s" % took)
        expect_ok(a.request("COMMIT"))
        answers = _round(conns, ["INSERT INTO g_rows (v) VALUES ('w%d')" % i for i in range(len(conns))])
        for r in answers:
            eq(r.status.startswith("+OK changes=1"), True, "a write after the commit: " + r.status)
        expect_rows(a.request("SELECT count(*) FROM g_rows"), [[str(len(conns) + 1)]])
