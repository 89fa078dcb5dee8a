"""Quick writes: a lone INSERT, UPDATE or DELETE outside a transaction on
the in-memory bind is run and committed on the loop thread, with no trip
to a worker, when the bind's writer has nothing to do. Anything that does
not finish there (too long, busy, any error, RETURNING) is rolled back by
SQLite and run by a worker as before, so the answer and the effect are
the same, once; writes of a file bind stay on the workers. .stats counts
the loop's in `on_loop`."""

import time

from harness import (DEFAULT_TABLES, Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows,
                     expect_status, scaled)
from test_auth import auth_daemon, login

TABLES = DEFAULT_TABLES + [("h_*", "memory_db"), ("hf_*", "default")]


def _stats(c):
    return dict((row["bind"], row) for row in expect_ok(c.request(".stats")).dicts())


def _on_loop(c, bind="memory_db"):
    return int(_stats(c)[bind]["on_loop"])


def _daemon(**kw):
    d = Daemon(tables=TABLES, **kw)
    c = d.connect()
    for t in ("h_rows", "hf_rows"):
        expect_ok(c.request("CREATE TABLE %s (id INTEGER PRIMARY KEY, k TEXT UNIQUE NOT NULL, "
                            "n INTEGER CHECK (n >= 0))" % t))
    return d, c


def test_lone_writes_are_answered_on_the_loop():
    d, c = _daemon()
    with d:
        expect_ok(c.request("CREATE TABLE h_log (what TEXT)"))
        expect_ok(c.request("CREATE TRIGGER h_rows_log AFTER INSERT ON h_rows "
                            "BEGIN INSERT INTO h_log VALUES ('added ' || new.k); END"))
        before = _stats(c)["memory_db"]
        for i in range(20):
            # Distinct texts: one that overran the budget on a busy machine
            # would send its next runs straight to a worker.
            expect_status(c.request("INSERT INTO h_rows (k, n) VALUES ('k%d', %d)" % (i, i)),
                          "+OK changes=1 last_id=%d" % (i + 1))
        expect_status(c.bulk("INSERT INTO h_rows (k, n) VALUES (?1, ?2)", ["p", 7]), "+OK changes=1 last_id=21")
        expect_status(c.request("UPDATE h_rows SET n = n + 1 WHERE n < 10"), "+OK changes=11")
        expect_status(c.request("DELETE FROM h_rows WHERE k = 'k19'"), "+OK changes=1")
        expect_status(c.request("DELETE FROM h_rows WHERE k = 'none'"), "+OK changes=0")
        after = _stats(c)["memory_db"]
        on_loop = int(after["on_loop"]) - int(before["on_loop"])
        if on_loop < 12:
            raise TestFailure("only %d of 24 lone writes were answered on the loop" % on_loop)
        eq(int(after["statements"]) - int(before["statements"]), 24, "statements counted")
        eq(int(after["errors"]), int(before["errors"]), "errors counted")
        # The trigger ran with each insert; every effect is there once.
        expect_rows(c.request("SELECT count(*), sum(n) FROM h_rows"), [["20", str(sum(range(19)) + 11 + 7)]])
        expect_rows(c.request("SELECT count(*) FROM h_log"), [["21"]])
        # A write and a read pipelined: the read sees the write.
        c.send("INSERT INTO h_rows (k, n) VALUES ('seen', 1)\nSELECT n FROM h_rows WHERE k = 'seen'\n")
        expect_status(c.read_response(), "+OK changes=1 last_id=22")
        expect_rows(c.read_response(), [["1"]])
        # Another client sees it at once too.
        expect_rows(d.connect().request("SELECT count(*) FROM h_rows WHERE k = 'seen'"), [["1"]])
        # A file bind's writes stay on its workers (a commit syncs).
        file_before = _on_loop(c, "default")
        expect_status(c.request("INSERT INTO hf_rows (k, n) VALUES ('f', 1)"), "+OK changes=1 last_id=1")
        eq(_on_loop(c, "default"), file_before, "file bind writes on the loop")


def test_failing_writes_answer_as_before():
    """Every error is the worker's answer: nothing applied, nothing twice."""
    d, c = _daemon()
    with d:
        expect_ok(c.request("INSERT INTO h_rows (k, n) VALUES ('taken', 1)"))
        expect_ok(c.request("INSERT INTO hf_rows (k, n) VALUES ('taken', 1)"))
        before = _on_loop(c)
        for t in ("h_rows", "hf_rows"):
            what = "%s: " % t
            expect_err(c.request("INSERT INTO %s (k, n) VALUES ('taken', 2)" % t), "CONSTRAINT",
                       "UNIQUE constraint failed: %s.k" % t)
            expect_err(c.request("INSERT INTO %s (k, n) VALUES (NULL, 2)" % t), "CONSTRAINT",
                       "NOT NULL constraint failed: %s.k" % t)
            expect_err(c.request("UPDATE %s SET n = -1" % t), "CONSTRAINT", "CHECK constraint failed: n >= 0")
            expect_err(c.request("INSERT OR ROLLBACK INTO %s (k, n) VALUES ('taken', 3)" % t), "CONSTRAINT")
            expect_err(c.request("INSERT INTO %s (nope) VALUES (1)" % t), "SQL", "table %s has no column named nope" % t)
            expect_err(c.bulk("INSERT INTO %s (k, n) VALUES (?1, ?2)" % t, ["x"]), "PARAMS")
            expect_rows(c.request("SELECT k, n FROM %s" % t), [["taken", "1"]])
        eq(_on_loop(c), before + 1, "memory_db statements on the loop (only the SELECT)")


def test_long_write_runs_once_on_a_worker():
    """A write past the loop's budget is interrupted there, rolled back,
    and run by a worker: each row changed exactly once."""
    d, c = _daemon()
    with d:
        expect_ok(c.request("CREATE TABLE h_big (id INTEGER PRIMARY KEY, n INTEGER)"))
        before = _on_loop(c)
        expect_status(c.request("INSERT INTO h_big (n) WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL "
                                "SELECT i + 1 FROM c WHERE i < 300000) SELECT 0 FROM c"),
                      "+OK changes=300000 last_id=300000")
        for i in range(3):
            expect_status(c.request("UPDATE h_big SET n = n + 1"), "+OK changes=300000")
        expect_status(c.request("DELETE FROM h_big WHERE id > 100000"), "+OK changes=200000")
        eq(_on_loop(c), before, "long writes on the loop")
        expect_rows(c.request("SELECT count(*), sum(n), min(n), max(n) FROM h_big"),
                    [["100000", "300000", "3", "3"]])


def test_writes_near_the_budget_apply_once():
    """Writes that end after the loop's budget: SQLite calls the progress
    handler once more after a statement has committed (every 100 virtual
    machine steps, counted across the runs of a cached statement) and then
    answers SQLITE_INTERRUPT; such a write is answered as committed, never
    run again by a worker (nor lost)."""
    d, c = _daemon()
    with d:
        expect_ok(c.request("CREATE TABLE h_many (g INTEGER, pad BLOB)"))
        for g in range(400):
            r = c.bulk("INSERT INTO h_many (g, pad) VALUES (?1, randomblob(250000))", [g])
            eq(r.status, "+OK changes=1 last_id=%d" % (g + 1), "statement %d" % g)
        expect_rows(c.request("SELECT count(*), count(DISTINCT g) FROM h_many"), [["400", "400"]])


def test_returning_goes_to_a_worker():
    d, c = _daemon()
    with d:
        before = _on_loop(c)
        r = expect_ok(c.request("INSERT INTO h_rows (k, n) VALUES ('r', 5) RETURNING id, n * 2 AS twice"))
        eq(r.rows, [["1", "10"]], "RETURNING rows")
        eq(r.status, "+OK rows=1", "status")
        eq(_on_loop(c), before, "statements on the loop")


def test_write_behind_a_held_write_lock_waits_its_turn():
    """A client's transaction holds the write lock: a lone write is not
    answered meanwhile (the loop does not wait; a worker does, up to
    busy_timeout) and goes through once the transaction commits."""
    d, a = _daemon()
    with d:
        expect_ok(a.request("BEGIN IMMEDIATE"))
        expect_ok(a.request("INSERT INTO h_rows (k, n) VALUES ('held', 1)"))
        b = d.connect()
        b.sock.settimeout(scaled(30))
        b.send("INSERT INTO h_rows (k, n) VALUES ('behind', 1)\n")
        if b.readable_now(0.3):
            raise TestFailure("a write was answered while a transaction held the write lock: %s"
                              % b.read_response().status)
        # The loop is free meanwhile.
        expect_rows(d.connect().request("SELECT count(*) FROM h_rows"), [["0"]])
        expect_ok(a.request("COMMIT"))
        expect_status(b.read_response(), "+OK changes=1 last_id=2")
        expect_rows(a.request("SELECT k FROM h_rows ORDER BY id"), [["held"], ["behind"]])


def test_read_only_user_cannot_write_on_the_loop():
    grants = {"alice": ["admin = on", "grant.* = read-write"], "carol": ["grant.* = read"]}
    with auth_daemon(grants, tables=TABLES) as d:
        a = login(d, "alice")
        expect_ok(a.request("CREATE TABLE h_rows (id INTEGER PRIMARY KEY, k TEXT)"))
        c = login(d, "carol")
        expect_err(c.request("INSERT INTO h_rows (k) VALUES ('no')"), "NOPERM")
        expect_err(c.request("DELETE FROM h_rows"), "NOPERM")
        expect_status(a.request("INSERT INTO h_rows (k) VALUES ('yes')"), "+OK changes=1 last_id=1")
        expect_rows(a.request("SELECT k FROM h_rows"), [["yes"]])


def test_write_ahead_log_stays_bounded():
    """The loop's writer never checkpoints (that could copy megabytes on
    the loop); past 1000 pages of log a write goes to a worker, whose
    commit does. Thousands of lone writes leave the log near SQLite's own
    bound, not growing with them."""
    d, c = _daemon()
    with d:
        pad = "x" * 3000   # about one page a row
        for i in range(3000):
            expect_ok(c.request("INSERT INTO h_rows (k, n) VALUES ('w%d-%s', 0)" % (i, pad)))
        if _on_loop(c) < 1000:
            raise TestFailure("most of the writes should have run on the loop: %d" % _on_loop(c))
        deadline = time.time() + scaled(5)
        while True:
            wal = int(_stats(c)["memory_db"]["wal_bytes"])
            if 0 <= wal < 8 << 20:
                break
            if time.time() > deadline:
                raise TestFailure("the write-ahead log is %d bytes after 3,000 one-page writes" % wal)
            time.sleep(0.1)
        expect_rows(c.request("SELECT count(*) FROM h_rows"), [["3000"]])
