"""The sqlmux DB-API driver (python/sqlmux) against the real daemon: PEP 249
surface, URLs, types, errors, transactions and streaming. Data written
through the driver is checked with the sqlite3 module on the bind's file
where it matters."""
import datetime
import decimal
import math
import os
import resource
import subprocess
import sys

import pytest

import harness
import sqlmux
from conftest import child_env


def test_module_globals():
    assert sqlmux.apilevel == "2.0"
    assert sqlmux.paramstyle == "qmark"
    assert sqlmux.threadsafety == 1
    for name in ("Warning", "Error", "InterfaceError", "DatabaseError", "DataError", "OperationalError",
                 "IntegrityError", "InternalError", "ProgrammingError", "NotSupportedError"):
        assert issubclass(getattr(sqlmux, name), Exception)
    assert issubclass(sqlmux.IntegrityError, sqlmux.DatabaseError)
    assert issubclass(sqlmux.NotPermittedError, sqlmux.DatabaseError)
    assert issubclass(sqlmux.DatabaseError, sqlmux.Error)
    assert sqlmux.STRING == "VARCHAR(64)" and sqlmux.NUMBER == "INTEGER" and sqlmux.BINARY == "bytea"


def test_url_forms_and_bind(daemon, url):
    # The URL's path is the bind: statements naming no table go there.
    for u in (url + "/second_db", "sqlmux:///second_db?socket=" + daemon.unix_socket):
        con = sqlmux.connect(u)
        assert con.bind == "second_db"
        assert con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == [("test2",)]
        con.close()
    con = sqlmux.connect("unix://" + daemon.unix_socket)
    assert con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == [("test1",)]
    with pytest.raises(sqlmux.ProgrammingError) as e:
        sqlmux.connect(url + "/nosuchbind")
    assert e.value.code == "NOBIND"
    with pytest.raises(sqlmux.OperationalError) as e:
        sqlmux.connect("sqlmux://127.0.0.1:1", timeout=2)
    assert e.value.code == "CONNECTION"
    with pytest.raises(sqlmux.InterfaceError):
        sqlmux.connect("postgresql://x/y")


def test_cursor_surface(daemon, url):
    con = sqlmux.connect(url)
    cur = con.cursor()
    assert cur.arraysize == 1 and cur.description is None and cur.rowcount == -1
    cur.executemany("INSERT INTO test1 (color) VALUES (?)", [("a",), ("b",), ("c",)])
    assert cur.rowcount == 3
    cur.execute("INSERT INTO test1 (color) VALUES (?)", ("d",))
    assert cur.rowcount == 1 and cur.lastrowid == 4
    cur.execute("UPDATE test1 SET color = 'x' WHERE id > ?", (1,))
    assert cur.rowcount == 3
    cur.execute("SELECT id, color, id * 2 AS twice FROM test1 ORDER BY id")
    assert [d[:2] for d in cur.description] == [("id", "INTEGER"), ("color", "VARCHAR(64)"), ("twice", "")]
    assert all(len(d) == 7 for d in cur.description)
    assert cur.fetchone() == (1, "a", 2)
    assert cur.fetchmany() == [(2, "x", 4)]
    cur.arraysize = 5
    assert cur.fetchmany() == [(3, "x", 6), (4, "x", 8)]
    assert cur.fetchone() is None and cur.fetchall() == []
    assert [r[0] for r in cur.execute("SELECT id FROM test1 ORDER BY id")] == [1, 2, 3, 4]
    cur.close()
    with pytest.raises(sqlmux.ProgrammingError):
        cur.execute("SELECT 1")
    with pytest.raises(sqlmux.ProgrammingError):
        con.cursor().fetchone()  # nothing executed
    con.commit()
    with con:  # commits, stays open
        con.execute("INSERT INTO test1 (color) VALUES ('ctx')")
    assert daemon.file_query("app.db", "SELECT count(*) FROM test1 WHERE color = 'ctx'") == [(1,)]
    con.close()
    assert con.closed
    with pytest.raises(sqlmux.ProgrammingError):
        con.cursor().execute("SELECT 1")


def test_types_round_trip(daemon, url):
    # (unmapped tables live in the default bind until issue 14)
    con = sqlmux.connect(url, autocommit=True)
    con.execute("CREATE TABLE types (i INTEGER, r REAL, t TEXT, b BLOB)")
    ints = [0, 1, -1, 2**63 - 1, -2**63, 42]
    floats = [0.1, -2.5, 1e300, float("inf"), float("-inf"), float("nan")]
    texts = ["", "NULL", "\\N", "a\tb\nc\rd", "nul\0byte", "\U0001F600 non-BMP", "é"]
    blobs = [b"", bytes(range(256)), bytearray(b"\x00\xff"), memoryview(b"mv\x00")]
    for i, r, t, b in zip(ints, floats, texts, blobs + [None, None]):
        con.execute("INSERT INTO types VALUES (?, ?, ?, ?)", (i, r, t, b))
    rows = con.execute("SELECT i, r, t, b FROM types ORDER BY rowid").fetchall()
    assert [r[0] for r in rows] == ints
    got = [r[1] for r in rows]
    assert got[:5] == floats[:5] and math.isnan(got[5])
    assert [r[2] for r in rows] == texts[:6]
    assert [r[3] for r in rows] == [bytes(b) for b in blobs] + [None, None]
    assert all(type(r[3]) is bytes for r in rows[:4])
    # Stored with their SQLite types, as the sqlite3 module sees the file.
    assert daemon.file_query("app.db", "SELECT typeof(i), typeof(t), typeof(b) FROM types LIMIT 1") == \
        [("integer", "text", "blob")]
    assert con.execute("SELECT ?, ?, ?", (True, False, None)).fetchone() == (1, 0, None)
    for big in (2**63, -2**63 - 1):
        with pytest.raises(sqlmux.DataError) as e:
            con.execute("SELECT ?", (big,))
        assert e.value.code == "RANGE"
    with pytest.raises(sqlmux.ProgrammingError) as e:
        con.execute("SELECT ?", (object(),))
    assert e.value.code == "TYPE"
    # dates and Decimals travel as text (SQLAlchemy's SQLite dialect
    # formats them itself)
    d = datetime.datetime(2024, 2, 29, 13, 45, 1, 123456)
    assert con.execute("SELECT ?, ?", (d, decimal.Decimal("1.10"))).fetchone() == \
        ("2024-02-29 13:45:01.123456", "1.10")
    # text of a TEXT column stays text even when it looks like a number
    con.execute("INSERT INTO types (t) VALUES ('12'), ('1.5')")
    assert con.execute("SELECT t FROM types WHERE t IN ('12', '1.5') ORDER BY t").fetchall() == \
        [("1.5",), ("12",)]


def test_errors_carry_codes(daemon, url):
    con = sqlmux.connect(url)
    con.execute("CREATE UNIQUE INDEX IF NOT EXISTS u1 ON test1 (color)")
    con.execute("INSERT INTO test1 (color) VALUES ('u')")
    with pytest.raises(sqlmux.IntegrityError) as e:
        con.execute("INSERT INTO test1 (color) VALUES ('u')")
    assert e.value.code == "CONSTRAINT" and e.value.sqlstate is None
    con.rollback()
    cases = [("SELECT * FROM nosuch", sqlmux.OperationalError, "SQL"),
             ("CREATE TRIGGER tr AFTER INSERT ON test1 BEGIN DELETE FROM test2; END", sqlmux.ProgrammingError,
              "CROSSBIND"),
             ("SELECT 1; SELECT 2", sqlmux.ProgrammingError, "MULTI"),
             ("ATTACH 'x.db' AS x", sqlmux.NotPermittedError, "DENIED"),
             ("SELECT 'unterminated", sqlmux.ProgrammingError, "SYNTAX")]
    for sql, cls, code in cases:
        with pytest.raises(cls) as e:
            con.cursor().execute(sql)
        assert e.value.code == code, sql
        con.rollback()
    with pytest.raises(sqlmux.ProgrammingError) as e:
        con.execute("SELECT ?", (1, 2))
    assert e.value.code == "PARAMS"
    # after errors the connection still works
    assert con.execute("SELECT 1").fetchone() == (1,)


def test_implicit_transactions(daemon, url):
    a = sqlmux.connect(url)
    b = sqlmux.connect(url, autocommit=True)
    assert not a.in_transaction
    a.execute("INSERT INTO test1 (color) VALUES ('txn')")
    assert a.in_transaction
    assert b.execute("SELECT count(*) FROM test1").fetchone() == (0,)
    a.rollback()
    assert not a.in_transaction
    assert b.execute("SELECT count(*) FROM test1").fetchone() == (0,)
    a.execute("INSERT INTO test1 (color) VALUES ('kept')")
    a.commit()
    assert b.execute("SELECT color FROM test1").fetchall() == [("kept",)]
    assert daemon.file_query("app.db", "SELECT color FROM test1") == [("kept",)]
    # autocommit: each statement on its own; turning it on commits
    b.execute("INSERT INTO test1 (color) VALUES ('auto')")
    assert not b.in_transaction
    assert a.execute("SELECT count(*) FROM test1").fetchone() == (2,)
    a.execute("INSERT INTO test1 (color) VALUES ('switch')")
    a.autocommit = True
    assert not a.in_transaction
    assert b.execute("SELECT count(*) FROM test1").fetchone() == (3,)
    # explicit transaction SQL is followed
    a.autocommit = False
    a.rollback()
    a.execute("BEGIN")
    assert a.in_transaction
    a.execute("INSERT INTO test1 (color) VALUES ('explicit')")
    a.execute("COMMIT")
    assert not a.in_transaction
    assert b.execute("SELECT count(*) FROM test1").fetchone() == (4,)
    # a closed connection's transaction is rolled back by the daemon
    a.execute("INSERT INTO test1 (color) VALUES ('dropped')")
    a.close()
    assert b.execute("SELECT count(*) FROM test1").fetchone() == (4,)


def test_savepoints_inside_a_transaction(daemon, url):
    a = sqlmux.connect(url)
    a.execute("INSERT INTO test1 (color) VALUES ('outer')")
    a.execute("SAVEPOINT sp")
    a.execute("INSERT INTO test1 (color) VALUES ('inner')")
    a.execute("ROLLBACK TO sp")
    assert a.in_transaction
    a.execute("RELEASE sp")
    a.commit()
    assert daemon.file_query("app.db", "SELECT color FROM test1") == [("outer",)]


def test_interleaved_cursors(daemon, url):
    con = sqlmux.connect(url)
    con.executemany("INSERT INTO test1 (color) VALUES (?)", [("c%d" % i,) for i in range(100)])
    c1 = con.execute("SELECT id FROM test1 ORDER BY id")
    assert c1.fetchone() == (1,)
    c2 = con.execute("SELECT count(*) FROM test1")  # c1 still has 99 rows
    assert c2.fetchone() == (100,)
    assert len(c1.fetchall()) == 99
    c3 = con.execute("SELECT id FROM test1")
    c3.fetchone()
    c3.close()  # the rest is skipped
    assert con.execute("SELECT 7").fetchone() == (7,)
    con.commit()


ROWS = 3_000_000


def test_streaming_keeps_memory_flat(daemon, url):
    """Iterating over a 3M-row result: the process's peak RSS after the first
    100,000 rows does not grow by more than 8 MiB by the end."""
    con = sqlmux.connect(url, autocommit=True)
    cur = con.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                      "SELECT i, 'row ' || i FROM n", (ROWS,))
    count = 0
    total = 0
    for i, text in cur:
        count += 1
        total += i
        if count == 100_000:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert count == ROWS and total == ROWS * (ROWS + 1) // 2
    assert peak - base < 8 * 1024, "peak RSS grew by %d KiB while streaming" % (peak - base)


def test_login_from_url_and_environment(tmp_path):
    hashed = subprocess.run([harness.daemon_binary(), "passwd"], input=b"s3cret\n",
                            capture_output=True, check=True).stdout.decode().strip()
    users = "[user.app]\npassword = %s\ngrant.* = read-write\n" \
            "[user.ro]\npassword = %s\ngrant.default = read\n" % (hashed, hashed)
    d = harness.Daemon(config=harness.make_config() + users)
    try:
        base = "sqlmux://%%s127.0.0.1:%d" % d.port
        con = sqlmux.connect(base % "app:s3cret@")
        con.execute("INSERT INTO test1 (color) VALUES ('auth')")
        con.commit()
        env = child_env(dict(os.environ, SQLMUX_USER="ro", SQLMUX_PASSWORD="s3cret",
                             PYTHONPATH=os.environ.get("PYTHONPATH", "")))
        script = ("import sqlmux, sys\n"
                  "c = sqlmux.connect(sys.argv[1])\n"
                  "print(c.execute('SELECT count(*) FROM test1').fetchone()[0])\n"
                  "try:\n    c.execute('DELETE FROM test1')\n"
                  "except sqlmux.NotPermittedError as e:\n    print(e.code)\n")
        out = subprocess.run([sys.executable, "-c", script, base % ""], env=env, capture_output=True,
                             timeout=30)
        assert out.stdout.decode().split() == ["1", "NOPERM"], out.stderr.decode()
        with pytest.raises(sqlmux.OperationalError) as e:
            sqlmux.connect(base % "app:wrong@", timeout=10)
        assert "AUTH" in str(e.value)
    finally:
        d.cleanup()


def test_a_busy_connection_refuses_a_second_thread(daemon, url):
    """The GIL is released while a statement runs, so another thread runs
    meanwhile; using the same connection from it is refused (INUSE), not a
    corrupted connection."""
    import threading
    import time
    con = sqlmux.connect(url, autocommit=True)
    out = []
    t = threading.Thread(target=lambda: out.append(con.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000000) "
        "SELECT count(*) FROM n").fetchone()))
    t.start()
    time.sleep(0.3)
    assert t.is_alive()  # the main thread runs while the statement does
    with pytest.raises(sqlmux.ProgrammingError) as e:
        con.execute("SELECT 1")
    assert e.value.code == "INUSE"
    t.join(60)
    assert out == [(5000000,)]
    assert con.execute("SELECT 1").fetchone() == (1,)


def test_savepoint_as_first_statement_then_commits_land(daemon, url):
    """SQLAlchemy's session.begin_nested() on a fresh session: SAVEPOINT is
    the transaction's first statement. Every later commit must land (the
    daemon's SAVEPOINT tracking, issue 13 item 1)."""
    a = sqlmux.connect(url)
    b = sqlmux.connect(url, autocommit=True)
    a.execute("SAVEPOINT sp")
    a.execute("INSERT INTO test1 (color) VALUES ('in-sp')")
    a.execute("ROLLBACK TO sp")
    a.execute("RELEASE sp")
    a.execute("INSERT INTO test1 (color) VALUES ('kept')")
    a.commit()
    assert b.execute("SELECT color FROM test1").fetchall() == [("kept",)]
    a.execute("INSERT INTO test1 (color) VALUES ('second')")
    a.commit()
    assert b.execute("SELECT color FROM test1 ORDER BY id").fetchall() == [("kept",), ("second",)]
    a.close()
    assert daemon.file_query("app.db", "SELECT color FROM test1 ORDER BY id") == [("kept",), ("second",)]
