"""A transaction's reads and writes on the loop thread (issue 18): inside
a transaction of the in-memory bind, a read within the quick-read budget
(test_txn_reads_run_on_the_loop_and_see_the_transaction), and a write
whose program is one row of
main with no loop, trigger or subquery (EXPLAIN, checked again for every
schema version) runs on the transaction's own connection right on the
loop thread, with no trip to its worker; everything else goes to the
worker as before. The answers are the worker's, errors included, and so
are the effects: ROLLBACK, ROLLBACK TO, a disconnect and a conflict clause
ROLLBACK undo them; others never see them before COMMIT. A file bind's
transaction stays on its worker (daemon/sqlite_quick.c,
sqlite_txn_inline). .stats counts the loop's in `on_loop`."""

import random
import threading
import time

from harness import (DEFAULT_TABLES, VALGRIND, Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows,
                     expect_status, scaled)
from test_auth import auth_daemon, login

TABLES = DEFAULT_TABLES + [("ti_*", "memory_db"), ("tf_*", "default")]
SCHEMA = ("CREATE TABLE %s (id INTEGER PRIMARY KEY, k TEXT UNIQUE NOT NULL, n INTEGER NOT NULL DEFAULT 0 "
          "CHECK (n >= 0), at TEXT DEFAULT 'now')")


def _stats(c, bind="memory_db"):
    return dict((row["bind"], row) for row in expect_ok(c.request(".stats")).dicts())[bind]


def _on_loop(c, bind="memory_db"):
    return int(_stats(c, bind)["on_loop"])


def _daemon(**kw):
    d = Daemon(tables=TABLES, **kw)
    c = d.connect()
    for t in ("ti_rows", "tf_rows"):
        expect_ok(c.request(SCHEMA % t))
    return d, c


def _statuses(c, stmts):
    """Each statement's status line, pipelined."""
    c.send("".join(s + "\n" for s in stmts).encode())
    return [r.status for r in c.read_responses(len(stmts))]


def test_txn_writes_run_on_the_loop_with_the_workers_answers():
    """The same script in a memory-bind transaction and in a file-bind one
    (always on its worker): the same answers, line for line, and the same
    rows; most of the memory bind's writes were answered on the loop."""
    d, c = _daemon(bind_opts={"memory_db": {"pool_size": "1"}})
    with d:
        rnd = random.Random(18)
        script = ["BEGIN"]
        for i in range(300):
            k = "k%d" % rnd.randrange(120)
            pick = rnd.random()
            if pick < 0.5:
                script.append("INSERT INTO {t} (k, n) VALUES ('%s', %d)" % (k, rnd.randrange(-3, 50)))
            elif pick < 0.65:
                script.append("INSERT OR REPLACE INTO {t} (k, n) VALUES ('%s', %d)" % (k, rnd.randrange(50)))
            elif pick < 0.8:
                script.append("UPDATE {t} SET n = n + %d WHERE k = '%s'" % (rnd.randrange(-5, 5), k))
            elif pick < 0.9:
                script.append("DELETE FROM {t} WHERE id = %d" % rnd.randrange(1, 200))
            else:
                script.append("INSERT INTO {t} (k, n) VALUES ('%s', %d) ON CONFLICT (k) DO UPDATE SET n = n + 1"
                              % (k, rnd.randrange(50)))
        script.append("COMMIT")
        # Each shape's first run is the worker's (its statement is cached
        # from the second run on), and a statement sent to the worker takes
        # those queued behind it along: the script runs once first,
        # statement by statement, and is rolled back.
        for stmt in script[:-1]:
            c.request(stmt.replace("{t}", "ti_rows"))
        expect_ok(c.request("ROLLBACK"))
        before = _on_loop(c)
        got_mem = _statuses(c, [s.replace("{t}", "ti_rows") for s in script])
        on_loop = _on_loop(c) - before
        got_file = _statuses(c, [s.replace("{t}", "tf_rows") for s in script])
        eq([a.replace("ti_rows", "T") for a in got_mem], [a.replace("tf_rows", "T") for a in got_file],
           "answers of the memory bind (loop) and of the file bind (worker)")
        if not any(s.startswith("-ERR CONSTRAINT") for s in got_mem):
            raise TestFailure("the script hit no constraint: it tests too little")
        if on_loop < 250:
            raise TestFailure("only %d of 300 writes of the transaction were answered on the loop" % on_loop)
        eq(_on_loop(c, "default"), 0, "file bind statements on the loop")
        rows = "SELECT id, k, n, at FROM %s ORDER BY id"
        eq(expect_ok(c.request(rows % "ti_rows")).rows, expect_ok(c.request(rows % "tf_rows")).rows,
           "rows after COMMIT")


def test_rollback_savepoint_and_disconnect_undo_loop_writes():
    d, c = _daemon()
    with d:
        expect_ok(c.request("INSERT INTO ti_rows (k) VALUES ('kept')"))
        before = _on_loop(c)
        eq(_statuses(c, ["BEGIN", "INSERT INTO ti_rows (k) VALUES ('a')", "INSERT INTO ti_rows (k) VALUES ('b')",
                         "INSERT INTO ti_rows (k) VALUES ('c')"]),
           ["+OK changes=0", "+OK changes=1 last_id=2", "+OK changes=1 last_id=3", "+OK changes=1 last_id=4"],
           "inserts")
        # Nobody else sees them: not a quick read, not a worker.
        other = d.connect()
        expect_rows(other.request("SELECT count(*) FROM ti_rows"), [["1"]])
        expect_ok(c.request("SAVEPOINT s"))
        eq(_statuses(c, ["UPDATE ti_rows SET n = 5 WHERE k = 'a'", "DELETE FROM ti_rows WHERE id = 3"]),
           ["+OK changes=1", "+OK changes=1"], "writes after the savepoint")
        expect_ok(c.request("ROLLBACK TO s"))
        expect_rows(c.request("SELECT k, n FROM ti_rows ORDER BY id"), [["kept", "0"], ["a", "0"], ["b", "0"],
                                                                        ["c", "0"]])
        expect_status(c.request("INSERT INTO ti_rows (k) VALUES ('d')"), "+OK changes=1 last_id=5")
        expect_ok(c.request("ROLLBACK"))
        expect_rows(c.request("SELECT k FROM ti_rows"), [["kept"]])
        if _on_loop(c) - before < 4:
            raise TestFailure("the transaction's writes were not answered on the loop")
        # A client that goes away: its transaction is rolled back.
        gone = d.connect()
        eq(_statuses(gone, ["BEGIN", "INSERT INTO ti_rows (k) VALUES ('x')", "INSERT INTO ti_rows (k) VALUES ('y')",
                            "INSERT INTO ti_rows (k) VALUES ('z')"])[-1], "+OK changes=1 last_id=4", "last insert")
        gone.close()
        deadline = time.time() + scaled(10)
        while time.time() < deadline:
            r = c.request("INSERT INTO ti_rows (k) VALUES ('after')")
            if r.ok:
                break
            time.sleep(0.05)
        expect_rows(c.request("SELECT k FROM ti_rows ORDER BY id"), [["kept"], ["after"]])


def test_writes_that_may_loop_go_to_the_worker():
    """INSERT ... SELECT, a multi-row VALUES, an UPDATE by a non-unique
    column, RETURNING, a table with a trigger, a recursive CTE in VALUES:
    none runs on the loop; a trigger created inside the transaction (a new
    schema version) sends the statements it touches back to the worker."""
    d, c = _daemon()
    with d:
        expect_ok(c.request("CREATE TABLE ti_log (what TEXT)"))
        expect_ok(c.request("BEGIN"))
        for i in range(3):
            expect_status(c.request("INSERT INTO ti_rows (k, n) VALUES (?1, ?2)".replace("?1", "'w%d'" % i)
                                    .replace("?2", "1")), "+OK changes=1 last_id=%d" % (i + 1))
        base = _on_loop(c)
        slow = ["INSERT INTO ti_rows (k) SELECT 's' || id FROM ti_rows",
                "INSERT INTO ti_rows (k) VALUES ('m1'), ('m2')",
                "UPDATE ti_rows SET n = n + 1 WHERE n >= 0",
                "INSERT INTO ti_rows (k) VALUES ('r1') RETURNING id",
                "INSERT INTO ti_rows (k, n) VALUES ('cte', (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
                "SELECT x + 1 FROM c WHERE x < 1000) SELECT count(*) FROM c))",
                "DELETE FROM ti_rows WHERE id IN (SELECT id FROM ti_rows WHERE k = 'm2')"]
        for _ in range(3):
            for s in slow:
                r = c.request(s)
                if not r.ok and "UNIQUE" not in r.status:
                    raise TestFailure("%s: %s" % (s, r.status))
        eq(_on_loop(c) - base, 0, "statements that may loop answered on the loop")
        # A plain insert runs there; then a trigger appears (DDL inside the
        # transaction, on the worker) and the same insert must run it.
        insert = "INSERT INTO ti_rows (k) VALUES ('t%d')"
        for i in range(3):
            expect_ok(c.request(insert % i))
        if _on_loop(c) - base < 1:
            raise TestFailure("the plain insert did not run on the loop")
        expect_ok(c.request("CREATE TRIGGER ti_rows_log AFTER INSERT ON ti_rows "
                            "BEGIN INSERT INTO ti_log VALUES (new.k); END"))
        base = _on_loop(c)
        for i in range(3, 8):
            expect_ok(c.request(insert % i))
        eq(_on_loop(c) - base, 0, "inserts into a table with a trigger answered on the loop")
        expect_rows(c.request("SELECT what FROM ti_log ORDER BY rowid"), [["t%d" % i] for i in range(3, 8)])
        expect_ok(c.request("COMMIT"))
        # A trigger made by another client between two transactions.
        expect_ok(c.request(SCHEMA % "ti_more"))
        more = "INSERT INTO ti_more (k) VALUES ('m%d')"
        expect_ok(c.request("BEGIN"))
        base = _on_loop(c)
        for i in range(4):
            expect_ok(c.request(more % i))
        expect_ok(c.request("COMMIT"))
        if _on_loop(c) - base < 2:
            raise TestFailure("the inserts into ti_more did not run on the loop")
        other = d.connect()
        expect_ok(other.request("CREATE TRIGGER ti_more_log AFTER INSERT ON ti_more "
                                "BEGIN INSERT INTO ti_log VALUES ('more ' || new.k); END"))
        expect_ok(c.request("BEGIN"))
        base = _on_loop(c)
        for i in range(4, 8):
            expect_ok(c.request(more % i))
        expect_ok(c.request("COMMIT"))
        eq(_on_loop(c) - base, 0, "inserts into a table with a new trigger answered on the loop")
        expect_rows(c.request("SELECT count(*) FROM ti_log WHERE what LIKE 'more %'"), [["4"]])


def test_conflict_clause_rollback_ends_the_transaction():
    """INSERT OR ROLLBACK that conflicts, on the loop: the answer says the
    transaction was rolled back, the client is out of it, and the worker it
    was pinned to serves others again (one worker: a stuck pin would stop
    every later write)."""
    d, c = _daemon(bind_opts={"memory_db": {"pool_size": "1"}})
    with d:
        expect_ok(c.request("INSERT INTO ti_rows (k) VALUES ('dup')"))
        # The same shape three times: the first run is the worker's.
        eq(_statuses(c, ["BEGIN", "INSERT OR ROLLBACK INTO ti_rows (k) VALUES ('a')",
                         "INSERT OR ROLLBACK INTO ti_rows (k) VALUES ('b')"]),
           ["+OK changes=0", "+OK changes=1 last_id=2", "+OK changes=1 last_id=3"], "inserts")
        before = _on_loop(c)
        r = c.request("INSERT OR ROLLBACK INTO ti_rows (k) VALUES ('dup')")
        expect_err(r, "CONSTRAINT")
        if "the transaction was rolled back" not in r.status:
            raise TestFailure("the -ERR does not say the transaction was rolled back: %r" % r.status)
        eq(_on_loop(c) - before, 1, "the conflicting insert ran on the loop")
        # Out of the transaction: this insert commits by itself.
        expect_status(c.request("INSERT INTO ti_rows (k) VALUES ('c')"), "+OK changes=1 last_id=2")
        expect_err(c.request("ROLLBACK"), "SQL")
        other = d.connect()
        eq(_statuses(other, ["BEGIN", "INSERT INTO ti_rows (k) VALUES ('o1')", "INSERT INTO ti_rows (k) VALUES ('o2')",
                             "COMMIT"]),
           ["+OK changes=0", "+OK changes=1 last_id=3", "+OK changes=1 last_id=4", "+OK changes=0"],
           "another client's transaction on the one worker")
        expect_rows(c.request("SELECT k FROM ti_rows ORDER BY id"), [["dup"], ["c"], ["o1"], ["o2"]])


def test_read_only_user_and_file_bind_stay_on_workers():
    with auth_daemon(tables=TABLES) as d:
        admin = login(d, "alice")
        expect_ok(admin.request(SCHEMA % "ti_rows"))
        ro = login(d, "carol")
        expect_ok(ro.request("BEGIN"))
        expect_rows(ro.request("SELECT count(*) FROM ti_rows"), [["0"]])
        before = _on_loop(admin)
        for _ in range(3):
            expect_err(ro.request("INSERT INTO ti_rows (k) VALUES ('no')"), "NOPERM")
        eq(_on_loop(admin) - before, 0, "a read-only user's writes on the loop")
        expect_ok(ro.request("ROLLBACK"))


def test_concurrent_transactions_keep_every_committed_write():
    """Six clients run transactions of 1 to 30 inserts on the in-memory
    bind (two workers), some with a conflicting insert, some ended by
    INSERT OR ROLLBACK, ROLLBACK or a disconnect, while two others count the
    rows: every write of a committed transaction is there, nothing else,
    and most inserts were answered on the loop."""
    d = Daemon(tables=TABLES, bind_opts={"memory_db": {"pool_size": "2"}})
    with d:
        c0 = d.connect()
        expect_ok(c0.request("CREATE TABLE ti_st (id INTEGER PRIMARY KEY, k TEXT UNIQUE, n INT)"))
        expect_ok(c0.request("INSERT INTO ti_st (k, n) VALUES ('dup', 0)"))
        committed, errors, lock = [], [], threading.Lock()
        sent = [0]
        end = time.time() + scaled(4)

        def writer(wid):
            rnd = random.Random(wid)
            c = d.connect()
            while time.time() < end:
                stmts = ["BEGIN"] + ["INSERT INTO ti_st (k, n) VALUES ('%d-%d', %d)" % (wid, rnd.randrange(10**9), i)
                                     for i in range(rnd.randrange(1, 30))]
                if rnd.random() < 0.2:
                    stmts.insert(rnd.randrange(1, len(stmts)), "INSERT INTO ti_st (k, n) VALUES ('dup', 1)")
                if rnd.random() < 0.1:
                    stmts.append("INSERT OR ROLLBACK INTO ti_st (k, n) VALUES ('dup', 1)")
                with lock:
                    sent[0] += len(stmts) - 1
                c.send("".join(s + "\n" for s in stmts).encode())
                answers = c.read_responses(len(stmts))
                done = [s for s, r in zip(stmts[1:], answers[1:]) if r.ok]
                rolled_back = any("rolled back" in r.status for r in answers)
                how = rnd.random()
                if how < 0.1:
                    c.close()
                    c = d.connect()
                    continue
                r = c.request("ROLLBACK" if how < 0.4 or rolled_back else "COMMIT")
                if how >= 0.4 and not rolled_back:
                    if not r.ok:
                        errors.append(r.status)
                    with lock:
                        committed.extend(done)

        def reader():
            c = d.connect()
            # Over 4 KiB of text: never a quick read, so on_loop counts the
            # writers' statements alone.
            count = "SELECT count(*) FROM ti_st /* %s */" % ("x" * 5000)
            while time.time() < end:
                r = c.request(count)
                if not r.ok:
                    errors.append(r.status)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
        threads += [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        eq(errors, [], "errors")
        eq(int(expect_ok(c0.request("SELECT count(*) FROM ti_st WHERE k <> 'dup'")).rows[0][0]), len(committed),
           "rows of committed transactions")
        # Each transaction's first insert goes with its BEGIN to the worker.
        on_loop = int(_stats(c0)["on_loop"])
        if on_loop * 2 < sent[0]:
            raise TestFailure("only %d statements answered on the loop for %d inserts" % (on_loop, sent[0]))


def test_txn_reads_run_on_the_loop_and_see_the_transaction():
    """A read inside a memory-bind transaction runs on the transaction's
    connection on the loop: it sees the transaction's own writes, and
    nobody else does. One that runs past the loop's budget, answers more
    than 16 KiB or fails goes to the worker, which answers it in full,
    and the transaction goes on; a file bind's stays on its worker."""
    d, c = _daemon(bind_opts={"memory_db": {"pool_size": "1"}})
    with d:
        expect_ok(c.request("INSERT INTO ti_rows (k) VALUES ('kept')"))
        expect_ok(c.request("BEGIN"))
        expect_status(c.request("INSERT INTO ti_rows (k, n) VALUES ('mine', 7)"), "+OK changes=1 last_id=2")
        read = "SELECT k, n FROM ti_rows ORDER BY id"
        expect_rows(c.request(read), [["kept", "0"], ["mine", "7"]])
        before = _on_loop(c)
        for _ in range(5):
            expect_rows(c.request(read), [["kept", "0"], ["mine", "7"]])
        r = expect_ok(c.request("?1 SELECT n FROM ti_rows WHERE k = ?\ntmine"))
        eq(r.rows, [["7"]], "a read with a parameter")
        # Under valgrind they overrun the loop's 200 us budget: the worker
        # answers them, and the rest of the test still holds.
        if _on_loop(c) - before < 5 and not VALGRIND:
            raise TestFailure("%d of the transaction's 6 reads answered on the loop" % (_on_loop(c) - before))
        other = d.connect()
        expect_rows(other.request(read), [["kept", "0"]])
        # Past the budget (about 12 ms of counting), past 16 KiB, an error.
        before = _on_loop(c)
        expect_rows(c.request("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) "
                              "SELECT count(*) FROM c, ti_rows WHERE ti_rows.k = 'mine'"), [["100000"]])
        r = expect_ok(c.request("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) "
                                "SELECT printf('%050d', x) AS v FROM c"))
        eq((len(r.rows), r.rows[-1]), (2000, ["%050d" % 2000]), "a large answer in full")
        expect_err(c.request("SELECT nosuch FROM ti_rows"), "SQL")
        eq(_on_loop(c) - before, 0, "reads the worker answered")
        expect_status(c.request("UPDATE ti_rows SET n = n + 1 WHERE k = 'mine'"), "+OK changes=1")
        expect_rows(c.request(read), [["kept", "0"], ["mine", "8"]])
        expect_ok(c.request("ROLLBACK"))
        expect_rows(c.request(read), [["kept", "0"]])
        # A file bind's transaction: its reads stay on the worker.
        before = _on_loop(c, "default")
        eq(_statuses(c, ["BEGIN", "INSERT INTO tf_rows (k) VALUES ('f')"] + ["SELECT k FROM tf_rows"] * 3 +
                     ["COMMIT"]),
           ["+OK changes=0", "+OK changes=1 last_id=1"] + ["+OK rows=1"] * 3 + ["+OK changes=0"], "file bind")
        eq(_on_loop(c, "default") - before, 0, "a file bind's transaction reads on the loop")
