"""A write that committed is answered as committed even when it passed its
bind's statement_timeout while committing: SQLite calls the progress
handler once more after a statement's last instruction (an autocommit
statement has committed then, one inside a transaction has kept its
changes) and answers SQLITE_INTERRUPT if the handler says stop, so the
daemon used to answer -ERR TIMEOUT for a write that was there (a client
retrying it made a duplicate). Checked on the worker path (a file bind's
writes, RETURNING, writes too long for the loop's quick writer), in
transactions and with writes of several clients queued together: every
statement answered +OK is in its table with the rows its answer counts,
every one answered -ERR left nothing. Likewise a write with RETURNING
stopped by the daemon (its client went away): it is undone, as it counts."""

import socket
import threading
import time

import harness
from harness import DEFAULT_TABLES, Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows

TABLES = DEFAULT_TABLES + [("tmo_m*", "memory_db"), ("tmo_f*", "default")]
# Table -> bind, for .stats.
BINDS = {"tmo_file": "default", "tmo_mem": "memory_db"}


def _daemon(timeout_ms):
    opts = {"statement_timeout": str(timeout_ms)}
    d = Daemon(tables=TABLES, bind_opts={"default": opts, "memory_db": opts})
    c = d.connect()
    c.sock.settimeout(120)
    for t in BINDS:
        expect_ok(c.request("CREATE TABLE %s (sid INTEGER NOT NULL, x INTEGER)" % t))
        expect_ok(c.request("CREATE INDEX %s_sid ON %s (sid)" % (t, t)))
    return d, c


def _on_loop(c, bind):
    stats = dict((row["bind"], row) for row in expect_ok(c.request(".stats")).dicts())
    return int(stats[bind]["on_loop"])


def _linear_insert(table, sid):
    """One row whose value takes a few milliseconds to compute in code
    without a loop: SQLite calls the progress handler only on a jump, so
    the statement gets past its deadline and to its commit unstopped, and
    the handler's first call is the one after the commit. Longer than the
    loop's quick writer takes (QUICK_MAX_SQL): it runs on a worker."""
    value = "0" + "".join(" + length(randomblob(4000))" for _ in range(400))
    return "INSERT INTO %s (sid, x) VALUES (%d, %s)" % (table, sid, value)


def _cte_insert(table, sid, n, returning):
    sql = ("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < %d) "
           "INSERT INTO %s (sid, x) SELECT %d, i FROM c" % (n, table, sid))
    return sql + " RETURNING sid" if returning else sql


def _applied(c, table, sid):
    """The rows of statement sid in table. The count is under the same
    statement_timeout: on a loaded machine it may run out too, and is
    read again (a read that timed out changed nothing)."""
    for _ in range(50):
        r = c.request("SELECT count(*) FROM %s WHERE sid = %d" % (table, sid))
        if not r.status.startswith("-ERR TIMEOUT"):
            return int(expect_ok(r).rows[0][0])
    raise TestFailure("%s: counting statement %d's rows timed out 50 times" % (table, sid))


def _check_answer(what, resp, rows_in_table, expected_rows):
    """+OK: all of the statement's rows are there, as many as its answer
    says; -ERR: none is."""
    if resp.status.startswith("+OK"):
        said = resp.status.split(" ")[1]
        if said.startswith("rows="):
            eq(len(resp.rows), int(said[5:]), what + ": rows returned")
            said = "changes=%d" % len(resp.rows)
        eq(said, "changes=%d" % expected_rows, what + ": " + resp.status)
        if rows_in_table != expected_rows:
            raise TestFailure("%s: answered %s, but %d of its %d rows are in the table"
                              % (what, resp.status, rows_in_table, expected_rows))
        return True
    if rows_in_table != 0:
        raise TestFailure("%s: answered %s, but its %d rows are in the table (a retry would add them again)"
                          % (what, resp.status, rows_in_table))
    return False


def test_writes_past_the_timeout_while_committing_are_answered_committed():
    """Writes whose time runs out during their last instructions and commit:
    before the fix most were answered -ERR TIMEOUT although committed."""
    d, c = _daemon(1)
    with d:
        for table, bind in BINDS.items():
            before = _on_loop(c, bind)
            answers = [c.request(_linear_insert(table, sid)) for sid in range(30)]
            eq(_on_loop(c, bind), before, "%s: writes answered on the loop (they are meant for a worker)" % table)
            answered_ok = 0
            for sid, r in enumerate(answers):
                answered_ok += _check_answer("%s statement %d" % (table, sid), r, _applied(c, table, sid), 1)
            if answered_ok == 0:
                raise TestFailure("%s: no write was answered +OK" % table)


def test_writes_straddling_the_timeout_apply_as_answered():
    """Writes from far shorter to far longer than statement_timeout, with
    and without RETURNING (always on a worker): those answered -ERR
    TIMEOUT left nothing, the others are there whole."""
    # Under valgrind a statement runs 10-50 times slower: at 3 ms even the
    # 40 rows with RETURNING timed out.
    d, c = _daemon(30 if harness.VALGRIND else 3)
    with d:
        sizes = [int(40 * 1.3 ** k) for k in range(25)]     # 40 .. about 20000 rows
        sid = 0
        for table in BINDS:
            for returning in (False, True):
                outcomes = {"ok": 0, "timeout": 0}
                for rnd in range(2):
                    for n in sizes:
                        sid += 1
                        what = "%s statement %d (%d rows%s)" % (table, sid, n, ", RETURNING" if returning else "")
                        r = c.request(_cte_insert(table, sid, n, returning))
                        if _check_answer(what, r, _applied(c, table, sid), n):
                            outcomes["ok"] += 1
                        else:
                            expect_err(r, "TIMEOUT")
                            outcomes["timeout"] += 1
                if outcomes["ok"] == 0 or outcomes["timeout"] == 0:
                    raise TestFailure("%s%s: the writes did not straddle the timeout: %r"
                                      % (table, " RETURNING" if returning else "", outcomes))


def test_writes_in_a_transaction_answer_what_it_keeps():
    """Inside a transaction a statement that ended past its deadline keeps
    its changes in the transaction and is answered +OK; one stopped by
    statement_timeout is answered -ERR TIMEOUT and left nothing (SQLite
    rolls back the whole transaction of an interrupted write)."""
    d, c = _daemon(1)
    with d:
        for table in BINDS:
            expect_ok(c.request("BEGIN"))
            expect_ok(c.request("INSERT INTO %s (sid, x) VALUES (0, 0)" % table))
            kept = 1
            for sid in range(1, 11):
                r = c.request(_linear_insert(table, sid))
                kept += _check_answer("%s statement %d in a transaction" % (table, sid), r,
                                      _applied(c, table, sid), 1)
            expect_ok(c.request("COMMIT"))
            expect_rows(c.request("SELECT count(*) FROM %s" % table), [[str(kept)]])
            expect_ok(c.request("BEGIN"))
            expect_ok(c.request("INSERT INTO %s (sid, x) VALUES (98, 0)" % table))
            r = expect_err(c.request(_cte_insert(table, 99, 3000000, False)), "TIMEOUT")
            # SQLite rolled the whole transaction back: the answer says so,
            # and the session is outside a transaction.
            if not r.status.endswith("(the transaction was rolled back)"):
                raise TestFailure("%s: the TIMEOUT does not say the transaction ended: %r" % (table, r.status))
            expect_err(c.request("COMMIT"), "SQL", "cannot commit - no transaction is active")
            expect_rows(c.request("SELECT count(*) FROM %s WHERE sid >= 98" % table), [["0"]])
            expect_rows(c.request("SELECT count(*) FROM %s" % table), [[str(kept)]])


def test_writes_of_several_clients_apply_as_answered():
    """Writes of several clients at once (a file bind's writer runs those
    queued together in one transaction, and each alone again when one of
    them fails the transaction): each is answered as it was applied."""
    d, c = _daemon(2)
    with d:
        conns = [d.connect() for _ in range(6)]
        for x in conns:
            x.sock.settimeout(120)
        failures = []

        def client(k, conn):
            try:
                for j in range(15):
                    sid = 1000 * (k + 1) + j
                    for table in BINDS:
                        sql = (_linear_insert(table, sid) if (j + k) % 3 else
                               _cte_insert(table, sid, 40 * (j + 1) ** 3, j % 2 == 1))
                        conn.send(sql + "\n")
                        r = conn.read_response()
                        if r.status.startswith("-ERR"):
                            eq(r.status.split(" ")[1], "TIMEOUT", "error of %s statement %d" % (table, sid))
                        want = 1 if (j + k) % 3 else 40 * (j + 1) ** 3
                        results.append((table, sid, r, want))
            except Exception as e:   # noqa: BLE001 (reported below)
                failures.append("client %d: %r" % (k, e))

        results = []
        threads = [threading.Thread(target=client, args=(k, conn)) for k, conn in enumerate(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        if failures:
            raise TestFailure("; ".join(failures))
        eq(len(results), 6 * 15 * len(BINDS), "answers")
        for table, sid, r, want in results:
            _check_answer("%s statement %d" % (table, sid), r, _applied(c, table, sid), want)


def _stats(c, bind):
    return dict((row["bind"], row) for row in expect_ok(c.request(".stats")).dicts())[bind]


def test_write_of_a_client_that_went_away_counts_as_it_ended():
    """A client sends a write with RETURNING whose rows it does not read,
    and goes away while the statement waits for it to read: SQLite has made
    the changes by the statement's first step, and a reset would commit
    them. The statement is interrupted instead (SQLite undoes it): it left
    nothing and counts as an error in .stats (before, it counted as an
    error and its rows were committed)."""
    d = Daemon(unix=True, tables=TABLES, server={"max_output": "65536"},
               bind_opts={"default": {"pool_size": "2"}, "memory_db": {"pool_size": "2"}})
    with d:
        c = d.connect()
        c.sock.settimeout(60)
        for table, bind in BINDS.items():
            expect_ok(c.request("CREATE TABLE %s (sid INTEGER NOT NULL, x INTEGER)" % table))
            before = _stats(c, bind)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(d.unix_socket)
            s.sendall((_cte_insert(table, 1, 20000, False) + " RETURNING sid, hex(randomblob(200))\n").encode())
            deadline = time.time() + 10
            while not [r for r in c.request(".clients").dicts() if r["state"] == "busy"]:
                if time.time() > deadline:
                    raise TestFailure("the write never showed as running")
                time.sleep(0.02)
            time.sleep(0.2)
            s.close()
            deadline = time.time() + 10
            while int(_stats(c, bind)["statements"]) == int(before["statements"]):
                if time.time() > deadline:
                    raise TestFailure("the write of the client that went away never ended")
                time.sleep(0.02)
            after = _stats(c, bind)
            errors = int(after["errors"]) - int(before["errors"])
            rows = _applied(c, table, 1)
            if (errors, rows) not in ((1, 0), (0, 20000)):
                raise TestFailure("%s: the write counts %d errors and left %d of its 20000 rows"
                                  % (table, errors, rows))
