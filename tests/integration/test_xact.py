"""Transactions across SQLite binds (issue 16; daemon/xact.c): a transaction
reads and writes every SQLite bind, sees its own writes everywhere, and
commits or rolls back as one; only a commit that wrote an attached bind
goes through the coordinator log."""

import os
import socket
import threading
import time

from harness import (DEFAULT_TABLES, Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows,
                     expect_status)

LOG = "sqlmux-xact.log"
LOG_HEADER = 16


def log_records(d):
    """Whether the coordinator log holds a record (its first record head
    after the 16-byte header is not all zero: the rest is zeroed room)."""
    with open(os.path.join(d.data_dir, LOG), "rb") as f:
        f.seek(LOG_HEADER)
        return f.read(12) != bytes(12)


def counts(d):
    return (d.file_query("app.db", "SELECT count(*) FROM test1")[0][0],
            d.file_query("second.db", "SELECT count(*) FROM test2")[0][0])


def test_xact_commit_two_file_binds(d):
    c = d.connect()
    expect_status(c.request("BEGIN"), "+OK changes=0")
    expect_status(c.request("INSERT INTO test1 (color) VALUES ('one')"), "+OK changes=1 last_id=1")
    expect_status(c.request("INSERT INTO test2 (color) VALUES ('two')"), "+OK changes=1 last_id=1")
    # Its own writes, in every bind, from one statement.
    expect_rows(c.request("SELECT (SELECT color FROM test1), (SELECT color FROM test2)"), [["one", "two"]])
    # Nobody else sees them yet.
    eq(counts(d), (0, 0), "before COMMIT")
    other = d.connect()
    expect_rows(other.request("SELECT count(*) FROM test2"), [["0"]])
    expect_status(c.request("COMMIT"), "+OK changes=0")
    eq(counts(d), (1, 1), "after COMMIT")
    expect_rows(other.request("SELECT color FROM test2"), [["two"]])
    # The decision is in the home bind's marker row (its commit, one sync,
    # decides: the log is not written); each bind has the marker row,
    # which .tables does not list.
    if log_records(d):
        raise TestFailure("the coordinator log was written: the home bind's marker holds the decision")
    eq(d.file_query("app.db", "SELECT count(*) FROM sqlmux_xact WHERE parts IS NOT NULL"), [(1,)],
       "the decision in default's marker")
    eq(d.file_query("app.db", "SELECT count(*) FROM sqlmux_xact"), [(1,)], "marker in default")
    eq(d.file_query("second.db", "SELECT count(*) FROM sqlmux_xact"), [(1,)], "marker in second_db")
    names = [r[0] for r in expect_ok(c.request(".tables")).rows]
    if "sqlmux_xact" in names:
        raise TestFailure(".tables lists sqlmux_xact: %r" % names)


def test_xact_statement_spanning_binds(d):
    c = d.connect()
    expect_ok(c.request("BEGIN"))
    expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'a'), (2, 'b')"))
    expect_status(c.request("INSERT INTO test2 SELECT id + 10, color FROM test1"), "+OK changes=2 last_id=12")
    expect_rows(c.request("SELECT t1.color, t2.id FROM test1 t1 JOIN test2 t2 ON t2.id = t1.id + 10 ORDER BY 1"),
                [["a", "11"], ["b", "12"]])
    expect_status(c.request("UPDATE test2 SET color = 'x' WHERE id IN (SELECT id + 10 FROM test1 WHERE id = 1)"),
                  "+OK changes=1")
    expect_ok(c.request("COMMIT"))
    eq(d.file_query("second.db", "SELECT id, color FROM test2 ORDER BY id"), [(11, "x"), (12, "b")])


def test_xact_rollback_disconnect_stop(d):
    c = d.connect()
    expect_ok(c.request("BEGIN"))
    expect_ok(c.request("INSERT INTO test1 (color) VALUES ('r')"))
    expect_ok(c.request("INSERT INTO test2 (color) VALUES ('r')"))
    expect_ok(c.request("INSERT INTO test3 (color) VALUES ('r')"))
    expect_status(c.request("ROLLBACK"), "+OK changes=0")
    eq(counts(d), (0, 0), "after ROLLBACK")
    expect_rows(c.request("SELECT count(*) FROM test3"), [["0"]])
    # A client that goes away.
    g = d.connect()
    expect_ok(g.request("BEGIN"))
    expect_ok(g.request("INSERT INTO test2 (color) VALUES ('gone')"))
    expect_ok(g.request("INSERT INTO test1 (color) VALUES ('gone')"))
    g.close()
    deadline = time.time() + 5
    while True:
        # Both write locks are free again: a write to each bind succeeds.
        r1 = c.request("INSERT INTO test1 (color) VALUES ('after')")
        r2 = c.request("INSERT INTO test2 (color) VALUES ('after')")
        if r1.status.startswith("+OK") and r2.status.startswith("+OK"):
            break
        if time.time() > deadline:
            raise TestFailure("locks still held after the client left: %s / %s" % (r1.status, r2.status))
        time.sleep(0.05)
    eq(d.file_query("second.db", "SELECT color FROM test2"), [("after",)], "nothing of the gone client")
    # A daemon stop in the middle of one.
    s = d.connect()
    expect_ok(s.request("BEGIN"))
    expect_ok(s.request("INSERT INTO test1 (color) VALUES ('stopped')"))
    expect_ok(s.request("INSERT INTO test2 (color) VALUES ('stopped')"))
    d.restart()
    eq(d.file_query("app.db", "SELECT count(*) FROM test1 WHERE color = 'stopped'"), [(0,)])
    eq(d.file_query("second.db", "SELECT count(*) FROM test2 WHERE color = 'stopped'"), [(0,)])


def test_xact_file_and_memory(d):
    c = d.connect()
    expect_ok(c.request("BEGIN"))
    expect_ok(c.request("INSERT INTO test3 (color) VALUES ('m')"))
    expect_ok(c.request("INSERT INTO test2 (color) VALUES ('f')"))
    expect_rows(c.request("SELECT (SELECT count(*) FROM test3), (SELECT count(*) FROM test2)"), [["1", "1"]])
    expect_ok(c.request("COMMIT"))
    expect_rows(c.request("SELECT color FROM test3"), [["m"]])
    eq(d.file_query("second.db", "SELECT color FROM test2"), [("f",)])
    # Begun on the file bind, the memory bind joins.
    expect_ok(c.request("BEGIN"))
    expect_ok(c.request("INSERT INTO test2 (color) VALUES ('f2')"))
    expect_ok(c.request("INSERT INTO test3 (color) VALUES ('m2')"))
    expect_ok(c.request("ROLLBACK"))
    expect_rows(c.request("SELECT count(*) FROM test3"), [["1"]])
    eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(1,)])


def test_xact_savepoints(d):
    c = d.connect()
    expect_ok(c.request("BEGIN"))
    expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1, 'kept')"))
    expect_ok(c.request("SAVEPOINT a"))
    expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (1, 'undone')"))
    expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (2, 'undone')"))
    expect_ok(c.request("ROLLBACK TO a"))
    expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (2, 'kept')"))
    expect_ok(c.request("RELEASE a"))
    expect_rows(c.request("SELECT (SELECT group_concat(id) FROM test1), (SELECT group_concat(id) FROM test2)"),
                [["1", "2"]])
    expect_ok(c.request("COMMIT"))
    eq(d.file_query("app.db", "SELECT id, color FROM test1"), [(1, "kept")])
    eq(d.file_query("second.db", "SELECT id, color FROM test2"), [(2, "kept")])
    # A transaction begun by SAVEPOINT that wrote two binds ends with
    # COMMIT; its RELEASE would commit without the coordinator: refused,
    # rolled back.
    expect_ok(c.request("SAVEPOINT outer_sp"))
    expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (5, 'x')"))
    expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (5, 'x')"))
    expect_err(c.request("RELEASE outer_sp"), "XACT")
    expect_ok(c.request("ROLLBACK"))
    eq(counts(d), (1, 1), "after the refused RELEASE")


def test_xact_single_bind_costs_nothing(d):
    c = d.connect()
    expect_ok(c.request("BEGIN"))
    expect_ok(c.request("INSERT INTO test1 (color) VALUES ('a')"))
    expect_ok(c.request("SELECT count(*) FROM test2"))  # reads another bind
    expect_ok(c.request("COMMIT"))
    eq(log_records(d), False, "a record in the coordinator log after a transaction that wrote one bind")
    eq(counts(d), (1, 0))


def test_xact_deadlock_is_busy():
    opts = {"default": {"busy_timeout": "300"}, "second_db": {"busy_timeout": "300"}}
    with Daemon(bind_opts=opts) as d:
        a, b = d.connect(), d.connect()
        expect_ok(a.request("BEGIN"))
        expect_ok(a.request("INSERT INTO test1 (color) VALUES ('a')"))
        expect_ok(b.request("BEGIN"))
        expect_ok(b.request("INSERT INTO test2 (color) VALUES ('b')"))
        t0 = time.time()
        a.send("INSERT INTO test2 (color) VALUES ('a')\n")
        b.send("INSERT INTO test1 (color) VALUES ('b')\n")
        ra, rb = a.read_response(), b.read_response()
        took = time.time() - t0
        busy = [r for r in (ra, rb) if r.status.startswith("-ERR BUSY")]
        if not busy:
            raise TestFailure("no -ERR BUSY in a deadlock: %s / %s" % (ra.status, rb.status))
        if took > 5:
            raise TestFailure("the deadlock took %.1f s to break" % took)
        expect_ok(a.request("ROLLBACK"))
        expect_ok(b.request("ROLLBACK"))
        eq(counts(d), (0, 0))


def test_xact_name_in_wrong_bind_refused():
    tables = DEFAULT_TABLES + [("dup", "second_db")]
    with Daemon(tables=tables) as d:
        c = d.connect()
        expect_ok(c.request("CREATE TABLE dup (id INTEGER PRIMARY KEY, v TEXT)"))  # in second_db
        db = d.sqlite("app.db")
        db.close()
        import sqlite3
        raw = sqlite3.connect(d.db_path("app.db"), timeout=10)
        raw.execute("CREATE TABLE dup (id INTEGER PRIMARY KEY, v TEXT)")  # a stray one in default
        raw.commit()
        raw.close()
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test1 (color) VALUES ('a')"))
        # SQLite would find default's dup first: refused, not guessed.
        expect_err(c.request("INSERT INTO dup (v) VALUES ('x')"), "TXNBIND")
        expect_ok(c.request("ROLLBACK"))


def test_xact_table_without_primary_key():
    tables = DEFAULT_TABLES + [("nokey", "second_db")]
    with Daemon(tables=tables) as d:
        c = d.connect()
        expect_ok(c.request("CREATE TABLE nokey (v TEXT)"))
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test1 (color) VALUES ('a')"))
        expect_ok(c.request("INSERT INTO nokey (v) VALUES ('x')"))
        r = expect_err(c.request("COMMIT"), "XACT")
        if "second_db.nokey has no PRIMARY KEY" not in r.err_msg:
            raise TestFailure("the error does not name the table: %r" % r.err_msg)
        eq(counts(d), (0, 0))
        eq(d.file_query("second.db", "SELECT count(*) FROM nokey"), [(0,)])
        # The session is out of its transaction.
        expect_status(c.request("INSERT INTO test2 (color) VALUES ('y')"), "+OK changes=1 last_id=1")


def test_xact_grants():
    from test_auth import auth_daemon, login
    grants = {"bob": ["grant.default = read-write", "grant.second_db = read", "grant.memory_db = read-write"]}
    with auth_daemon(grants) as d:
        c = login(d, "bob")
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test1 (color) VALUES ('a')"))
        expect_rows(c.request("SELECT count(*) FROM test2"), [["0"]])
        expect_err(c.request("INSERT INTO test2 (color) VALUES ('no')"), "NOPERM")
        expect_err(c.request("INSERT INTO test2 SELECT id, color FROM test1"), "NOPERM")
        expect_ok(c.request("INSERT INTO test3 SELECT id + 5, color FROM test2"))
        expect_ok(c.request("COMMIT"))
        eq(counts(d), (1, 0))


def test_xact_begin_immediate_locks_its_bind_only(d):
    # Every other SQLite bind is attached to the workers' connections; a
    # BEGIN IMMEDIATE (and the group commit's) must still lock one bind.
    c, other = d.connect(), d.connect()
    expect_ok(c.request("BEGIN IMMEDIATE"))
    expect_ok(c.request("INSERT INTO test1 (color) VALUES ('held')"))
    t0 = time.time()
    expect_status(other.request("INSERT INTO test2 (color) VALUES ('free')"), "+OK changes=1 last_id=1")
    expect_status(other.request("INSERT INTO test3 (color) VALUES ('free')"), "+OK changes=1 last_id=1")
    if time.time() - t0 > 1:
        raise TestFailure("writes to other binds waited %.1f s behind a BEGIN IMMEDIATE" % (time.time() - t0))
    expect_ok(c.request("COMMIT"))
    eq(counts(d), (1, 1))


def test_xact_bind_replaced_by_reload():
    # The workers attached second_db's file at start; a reload that points
    # second_db at another file replaces the bind: a transaction on default
    # must not write the old file.
    from harness import DEFAULT_BINDS
    with Daemon() as d:
        c = d.connect()
        binds = [(n, "sqlite:///second2.db" if n == "second_db" else u) for n, u in DEFAULT_BINDS]
        d.rewrite_config(binds=binds)
        expect_ok(c.request(".reload"))
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test1 (color) VALUES ('a')"))
        expect_err(c.request("INSERT INTO test2 (color) VALUES ('b')"), "TXNBIND")
        expect_ok(c.request("ROLLBACK"))
        # Outside a transaction it goes to the new file.
        expect_ok(c.request("INSERT INTO test2 (color) VALUES ('new')"))
        eq(d.file_query("second2.db", "SELECT color FROM test2"), [("new",)])
        eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(0,)])


def test_xact_whole_database_statements_stay_in_their_bind(d):
    # ANALYZE, REINDEX and PRAGMA integrity_check without a schema run over
    # every database of a connection: the attached binds are detached for
    # them (test_auth's read-only user checks ANALYZE and REINDEX too).
    c = d.connect()
    expect_ok(c.request("CREATE INDEX test1_color ON test1 (color)"))
    expect_ok(c.request("INSERT INTO test1 (color) VALUES ('a'), ('b')"))
    expect_ok(c.request("ANALYZE"))
    expect_ok(c.request("REINDEX"))
    expect_rows(c.request("PRAGMA integrity_check"), [["ok"]])
    expect_rows(c.request("PRAGMA quick_check"), [["ok"]])
    tables = [r[0] for r in d.file_query("second.db", "SELECT name FROM sqlite_master WHERE type = 'table'")]
    if "sqlite_stat1" in tables:
        raise TestFailure("ANALYZE on default wrote second_db's statistics: %r" % tables)
    if "sqlite_stat1" not in [r[0] for r in d.file_query("app.db", "SELECT name FROM sqlite_master")]:
        raise TestFailure("ANALYZE did not analyze default")
    # ... and the binds are attached again: a transaction across binds works.
    expect_ok(c.request("BEGIN"))
    expect_ok(c.request("INSERT INTO test1 (color) VALUES ('x')"))
    expect_ok(c.request("INSERT INTO test2 (color) VALUES ('x')"))
    expect_ok(c.request("COMMIT"))
    eq(d.file_query("second.db", "SELECT color FROM test2"), [("x",)])
