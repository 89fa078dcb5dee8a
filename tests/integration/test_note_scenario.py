"""The note's Flask-SQLAlchemy scenario end to end: Test1 in the default bind
(app.db), Test2 in second_db (second.db), Test3 in memory_db (in memory),
tables created by schema files at start-up."""

import os
import time

from harness import (Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows,
                     expect_status)

COLS = [("id", "INTEGER"), ("color", "VARCHAR(64)")]


def test_rows_land_in_their_bind_files(d):
    c = d.connect()
    expect_status(c.request("INSERT INTO test1 (color) VALUES ('green')"), "+OK changes=1 last_id=1")
    expect_status(c.request("INSERT INTO test1 DEFAULT VALUES"), "+OK changes=1 last_id=2")
    expect_status(c.request("INSERT INTO test2 (color) VALUES ('yellow')"), "+OK changes=1 last_id=1")
    expect_status(c.request("INSERT INTO test2 DEFAULT VALUES"), "+OK changes=1 last_id=2")
    expect_status(c.request("INSERT INTO test2 (color) VALUES ('cyan')"), "+OK changes=1 last_id=3")
    expect_status(c.request("INSERT INTO test3 (color) VALUES ('purple')"), "+OK changes=1 last_id=1")
    expect_status(c.request("INSERT INTO test3 DEFAULT VALUES"), "+OK changes=1 last_id=2")

    # Through the daemon, with the declared types in the header.
    expect_rows(c.request("SELECT id, color FROM test1 ORDER BY id"),
                [["1", "green"], ["2", "red"]], COLS)
    expect_rows(c.request("SELECT id, color FROM test2 ORDER BY id"),
                [["1", "yellow"], ["2", "red"], ["3", "cyan"]], COLS)
    expect_rows(c.request("SELECT id, color FROM test3 ORDER BY id"),
                [["1", "purple"], ["2", "blue"]], COLS)
    expect_rows(c.request("SELECT * FROM test3 WHERE id = 2"), [["2", "blue"]], COLS)

    # The files, read directly: each table only in its own bind's file.
    eq(d.file_tables("app.db"), ["test1"], "tables in app.db")
    eq(d.file_tables("second.db"), ["test2"], "tables in second.db")
    eq(d.file_query("app.db", "SELECT id, color FROM test1 ORDER BY id"),
       [(1, "green"), (2, "red")], "test1 rows in app.db")
    eq(d.file_query("second.db", "SELECT id, color FROM test2 ORDER BY id"),
       [(1, "yellow"), (2, "red"), (3, "cyan")], "test2 rows in second.db")

    # test3 lives in memory: no file of its own, and its data is in no file.
    for root, _, files in os.walk(d.dir):
        for fn in files:
            if fn.startswith("stderr") or fn.endswith(".log"):
                continue
            path = os.path.join(root, fn)
            if not os.path.isfile(path):
                continue
            if root == d.data_dir:
                base = fn.split("-")[0]     # app.db-wal, second.db-shm ...
                # the coordinator's own files (README "Transactions across binds")
                if base not in ("app.db", "second.db") and fn not in ("daemon-id", "sqlmux-xact.txid"):
                    raise TestFailure("unexpected file in data_dir: %s" % fn)
            with open(path, "rb") as f:
                if b"purple" in f.read():
                    raise TestFailure("memory_db data found in file %s" % path)


def test_defaults_applied(d):
    c = d.connect()
    for t in ("test1", "test2", "test3"):
        expect_status(c.request("INSERT INTO %s DEFAULT VALUES" % t), "+OK changes=1 last_id=1")
        expect_status(c.request("INSERT INTO %s (id) VALUES (10)" % t), "+OK changes=1 last_id=10")
    expect_rows(c.request("SELECT color FROM test1 ORDER BY id"), [["red"], ["red"]])
    expect_rows(c.request("SELECT color FROM test2 ORDER BY id"), [["red"], ["red"]])
    expect_rows(c.request("SELECT color FROM test3 ORDER BY id"), [["blue"], ["blue"]])
    eq(d.file_query("app.db", "SELECT id, color FROM test1 ORDER BY id"),
       [(1, "red"), (10, "red")])
    eq(d.file_query("second.db", "SELECT id, color FROM test2 ORDER BY id"),
       [(1, "red"), (10, "red")])


def test_update_delete_counts(d):
    c = d.connect()
    for t in ("test1", "test2", "test3"):
        for i in range(1, 4):
            expect_status(c.request("INSERT INTO %s (color) VALUES ('c%d')" % (t, i)),
                          "+OK changes=1 last_id=%d" % i)
        expect_status(c.request("UPDATE %s SET color = 'x' WHERE id >= 2" % t), "+OK changes=2")
        expect_status(c.request("DELETE FROM %s WHERE id = 1" % t), "+OK changes=1")
        expect_status(c.request("DELETE FROM %s WHERE id = 99" % t), "+OK changes=0")
        expect_rows(c.request("SELECT id, color FROM %s ORDER BY id" % t),
                    [["2", "x"], ["3", "x"]])
        expect_status(c.request("SELECT id FROM %s WHERE id > 100" % t), "+OK rows=0")
    eq(d.file_query("second.db", "SELECT id, color FROM test2 ORDER BY id"),
       [(2, "x"), (3, "x")])


def test_empty_result_has_header(d):
    c = d.connect()
    r = c.request("SELECT id, color FROM test3")
    expect_rows(r, [], COLS)
    eq(r.raw, [b"*id\tINTEGER\tcolor\tVARCHAR(64)", b"+OK rows=0"], "raw lines")


def test_memory_shared_between_connections_and_survives_disconnect(d):
    c1 = d.connect()
    c2 = d.connect()
    expect_status(c1.request("INSERT INTO test3 (color) VALUES ('shared')"), "+OK changes=1 last_id=1")
    expect_rows(c2.request("SELECT id, color FROM test3"), [["1", "shared"]])
    expect_status(c2.request("INSERT INTO test3 (color) VALUES ('second')"), "+OK changes=1 last_id=2")
    expect_rows(c1.request("SELECT color FROM test3 ORDER BY id"), [["shared"], ["second"]])
    expect_status(c1.request(".quit"), "+OK")
    c1.close()
    c2.close()
    time.sleep(0.3)
    c3 = d.connect()
    expect_rows(c3.request("SELECT color FROM test3 ORDER BY id"), [["shared"], ["second"]])


def test_restart_memory_gone_schema_recreated_files_kept(d):
    c = d.connect()
    expect_ok(c.request("INSERT INTO test1 (color) VALUES ('one')"))
    expect_ok(c.request("INSERT INTO test2 (color) VALUES ('two')"))
    expect_ok(c.request("INSERT INTO test3 (color) VALUES ('three')"))
    d.restart()
    c = d.connect()
    # The memory bind is empty but its schema ran again at start-up.
    expect_rows(c.request("SELECT id, color FROM test3"), [], COLS)
    r = c.request(".tables memory_db")
    eq([row[0] for row in r.rows], ["test3"], ".tables memory_db after restart")
    expect_status(c.request("INSERT INTO test3 DEFAULT VALUES"), "+OK changes=1 last_id=1")
    expect_rows(c.request("SELECT id, color FROM test3"), [["1", "blue"]])
    # The file binds kept their rows.
    expect_rows(c.request("SELECT color FROM test1"), [["one"]])
    expect_rows(c.request("SELECT color FROM test2"), [["two"]])


SEED_DEFAULT = ("CREATE TABLE IF NOT EXISTS test1 (id INTEGER PRIMARY KEY, color VARCHAR(64) DEFAULT 'red');\n"
                "INSERT INTO test1 (color) VALUES ('seed');\n")
SEED_MEMORY = ("CREATE TABLE IF NOT EXISTS test3 (id INTEGER PRIMARY KEY, color VARCHAR(64) DEFAULT 'blue');\n"
               "INSERT INTO test3 (color) VALUES ('seed');\n")


def test_schema_file_bind_only_when_new_memory_every_start():
    with Daemon(files={"schema_default.sql": SEED_DEFAULT,
                       "schema_memory_db.sql": SEED_MEMORY}) as d:
        c = d.connect()
        expect_rows(c.request("SELECT id, color FROM test1"), [["1", "seed"]])
        expect_rows(c.request("SELECT id, color FROM test3"), [["1", "seed"]])
        expect_ok(c.request("INSERT INTO test1 (color) VALUES ('mine')"))
        expect_ok(c.request("INSERT INTO test3 (color) VALUES ('mine')"))
        for _ in range(2):
            d.restart()
            c = d.connect()
            # app.db existed: its schema did not run again (still one seed).
            expect_rows(c.request("SELECT id, color FROM test1 ORDER BY id"),
                        [["1", "seed"], ["2", "mine"]])
            # memory: schema ran again on an empty database.
            expect_rows(c.request("SELECT id, color FROM test3 ORDER BY id"), [["1", "seed"]])
        d.stop()
        eq(d.file_query("app.db", "SELECT count(*) FROM test1 WHERE color = 'seed'"), [(1,)])


def _expect_start_failure(d, needle):
    d.start(wait=False)
    try:
        rc = d.proc.wait(10)
    except Exception:
        raise TestFailure("daemon kept running despite a broken schema file")
    d.exit_status = rc
    err = d.stderr_text()
    if rc == 0:
        raise TestFailure("daemon exited 0 with a broken schema file")
    if needle not in err:
        raise TestFailure("stderr does not name %r:\n%s" % (needle, err))


def test_schema_error_memory_bind_names_file_and_line():
    bad = ("-- memory schema\n"
           "CREATE TABLE test3 (id INTEGER PRIMARY KEY, color VARCHAR(64) DEFAULT 'blue');\n"
           "CREATE TABLE oops (id INTEGER PRIMARY KEY,, x);\n")
    d = Daemon(files={"bad_memory.sql": bad}, schemas={"default": "schema_default.sql",
                                                       "second_db": "schema_second_db.sql",
                                                       "memory_db": "bad_memory.sql"},
               start=False)
    with d:
        _expect_start_failure(d, "bad_memory.sql:3")


def test_schema_error_file_bind_names_file_and_line():
    bad = ("CREATE TABLE test2 (id INTEGER PRIMARY KEY,\n"
           "    color VARCHAR(64) DEFAULT 'red');\n"
           "INSERT INTO nosuch_table VALUES (1);\n")
    d = Daemon(files={"bad_second.sql": bad}, schemas={"default": "schema_default.sql",
                                                       "second_db": "bad_second.sql",
                                                       "memory_db": "schema_memory_db.sql"},
               start=False)
    with d:
        _expect_start_failure(d, "bad_second.sql:3")


def test_schema_runs_in_its_bind_only(d):
    # Each schema created its table in its own bind only.
    c = d.connect()
    expect_err(c.request(".tables nosuch"), "NOBIND")
    for bind, table in (("default", "test1"), ("second_db", "test2"), ("memory_db", "test3")):
        r = c.request(".tables " + bind)
        eq([row[0] for row in r.rows], [table], ".tables %s" % bind)
