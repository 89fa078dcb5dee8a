"""Snapshots of the in-memory bind (`snapshot = FILE`): written at SIGTERM,
by .save and every snapshot_interval seconds, loaded at start-up before
migrations; a crash (kill -9) keeps the last save; a truncated or corrupted
file stops the start with an error naming it (or is moved aside with
snapshot_on_damage = move); a save while another client writes completes
and blocks none of its writes; .binds shows the last snapshot."""

import os
import signal
import sqlite3
import threading
import time

from harness import (Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows, make_config, run_once,
                     standard_files)

SNAP = "memory.snapshot"


def snap_daemon(start=True, opts=None, **cfg):
    bind_opts = {"memory_db": dict({"snapshot": SNAP}, **(opts or {}))}
    bind_opts.update(cfg.pop("bind_opts", {}))
    return Daemon(start=start, bind_opts=bind_opts, **cfg)


def snap_path(d):
    return d.db_path(SNAP)


def count3(c):
    r = c.request("SELECT count(*) FROM test3")
    expect_status_rows(r)
    return int(r.rows[0][0])


def expect_status_rows(r):
    if not r.ok or len(r.rows) != 1:
        raise TestFailure("want one row, got %r" % r)


def insert3(c, n, start=0):
    c.send(b"".join(b"INSERT INTO test3 (color) VALUES ('c%d')\n" % i for i in range(start, start + n)))
    for _ in range(n):
        expect_ok(c.read_response())


def check_file(path):
    """The snapshot is a standalone SQLite file: integrity ok, not WAL."""
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        eq(db.execute("PRAGMA integrity_check").fetchall(), [("ok",)], "snapshot integrity")
        eq(db.execute("PRAGMA journal_mode").fetchall(), [("delete",)], "snapshot journal mode")
        return db.execute("SELECT count(*) FROM test3").fetchone()[0]
    finally:
        db.close()


def _contains(text, needle, what):
    if needle not in text:
        raise TestFailure("%s lacks %r:\n%s" % (what, needle, text))


def _start_fails(d):
    try:
        d.start()
    except TestFailure:
        return d.stderr_text(current_only=True)
    raise TestFailure("the daemon started with a damaged snapshot")


# ---------------------------------------------------------------------------


def test_sigterm_then_restart_brings_rows_back():
    with snap_daemon() as d:
        c = d.connect()
        eq(count3(c), 0, "empty at the first start")
        b = {row[0]: row for row in c.request(".binds").rows}
        eq(b["memory_db"][8:10], [None, None], "no snapshot written yet")
        insert3(c, 25)
        eq(d.stop(), 0, "exit status")
        _contains(d.stderr_text(), "snapshot %s written at shutdown" % snap_path(d), "log")
        eq(check_file(snap_path(d)), 25, "rows in the snapshot file")
        d.start()
        c = d.connect()
        eq(count3(c), 25, "rows after the restart")
        expect_rows(c.request("SELECT color FROM test3 WHERE id = 25"), [["c24"]])
        expect_ok(c.request("INSERT INTO test3 (color) VALUES ('more')"))
        r = c.request(".binds")
        row = {x[0]: dict(zip(r.names, x)) for x in r.rows}["memory_db"]
        eq(row["snapshot_bytes"], str(os.path.getsize(snap_path(d))), "snapshot_bytes of the loaded file")
        if not row["snapshot_at"] or not row["snapshot_at"].endswith("Z"):
            raise TestFailure("snapshot_at: %r" % row["snapshot_at"])
        for other in ("default", "second_db"):
            eq({x[0]: x for x in r.rows}[other][8:10], [None, None], other + " has no snapshot")
        d.restart()
        eq(count3(d.connect()), 26, "rows after the second restart")


def test_save_then_kill9_keeps_rows_up_to_the_save():
    with snap_daemon() as d:
        c = d.connect()
        insert3(c, 10)
        r = c.request(".save")
        expect_rows(r, [["memory_db", snap_path(d), str(os.path.getsize(snap_path(d))), r.rows[0][3]]])
        eq([n for n, _ in r.columns], ["bind", "file", "bytes", "ms"], ".save columns")
        before = {x[0]: x for x in c.request(".binds").rows}["memory_db"]
        insert3(c, 5, 10)
        eq(d.stop(signal.SIGKILL), -signal.SIGKILL, "killed")
        eq(check_file(snap_path(d)), 10, "rows in the snapshot")
        # A save interrupted by a crash leaves its temporary file: removed
        # at the next start, the snapshot itself untouched.
        stale = snap_path(d) + ".tmp-999999999"
        with open(stale, "wb") as f:
            f.write(b"half a file")
        d.start()
        c = d.connect()
        eq(count3(c), 10, "rows up to the save")
        if os.path.exists(stale):
            raise TestFailure("the stale temporary file was not removed")
        after = {x[0]: x for x in c.request(".binds").rows}["memory_db"]
        eq(after[9], before[9], "snapshot_bytes after the restart")
        r = c.request(".save memory_db")
        eq(r.rows[0][0], "memory_db", ".save BIND")
        expect_err(c.request(".save second_db"), "ARGS")
        expect_err(c.request(".save nope"), "NOBIND")


def test_truncated_snapshot_stops_the_start():
    with snap_daemon() as d:
        insert3(d.connect(), 200)
        eq(d.stop(), 0, "exit status")
        size = os.path.getsize(snap_path(d))
        with open(snap_path(d), "r+b") as f:
            f.truncate(size // 2)
        err = _start_fails(d)
        _contains(err, "snapshot %s is damaged" % snap_path(d), "stderr")
        _contains(err, "truncated", "stderr")
        eq(os.path.getsize(snap_path(d)), size // 2, "the damaged file is left alone")
        # An empty file is not an empty database.
        open(snap_path(d), "wb").close()
        err = _start_fails(d)
        _contains(err, "snapshot %s is damaged" % snap_path(d), "stderr")


def test_corrupted_snapshot_stops_the_start():
    with snap_daemon() as d:
        c = d.connect()
        c.send(b"".join(b"INSERT INTO test3 (color) VALUES ('%s')\n" % (b"x" * 200) for _ in range(300)))
        for _ in range(300):
            expect_ok(c.read_response())
        eq(d.stop(), 0, "exit status")
        with open(snap_path(d), "r+b") as f:
            data = bytearray(f.read())
            page = 4096
            # Scribble over the middle of the table's pages, keeping the size.
            for off in range(2 * page + 100, len(data) - page, page):
                data[off:off + 64] = b"\xa5" * 64
            f.seek(0)
            f.write(data)
        err = _start_fails(d)
        _contains(err, "snapshot %s is damaged" % snap_path(d), "stderr")
        _contains(err, "integrity check", "stderr")


def test_damaged_snapshot_moved_aside_on_request():
    with snap_daemon(opts={"snapshot_on_damage": "move"}) as d:
        insert3(d.connect(), 3)
        eq(d.stop(), 0, "exit status")
        with open(snap_path(d), "r+b") as f:
            f.write(b"this is not a database at all")
        d.start()
        c = d.connect()
        eq(count3(c), 0, "started empty")
        aside = [n for n in os.listdir(d.data_dir) if n.startswith(SNAP + ".damaged-")]
        eq(len(aside), 1, "one file moved aside")
        _contains(d.stderr_text(), "moved to %s" % os.path.join(d.data_dir, aside[0]), "log")
        insert3(c, 2)
        d.restart()
        eq(count3(d.connect()), 2, "the new snapshot works")


def test_snapshot_while_another_client_writes():
    with snap_daemon() as d:
        c = d.connect()
        # About 20 MB, so a save takes many backup steps.
        expect_ok(c.request("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
                            "INSERT INTO test3 (color) SELECT hex(randomblob(500)) FROM n"))
        w = d.connect()
        stop = threading.Event()
        results = {"ok": 0, "bad": []}

        def writer():
            i = 0
            while not stop.is_set():
                r = w.request("INSERT INTO test3 (color) VALUES ('w%d')" % i)
                if r.ok:
                    results["ok"] += 1
                else:
                    results["bad"].append(r.status)
                i += 1
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        saves = []
        for _ in range(3):
            before = results["ok"]
            r = c.request(".save")
            if not r.ok:
                raise TestFailure(".save failed: %r" % r)
            saves.append((before, results["ok"], int(r.rows[0][2])))
        time.sleep(0.2)
        stop.set()
        t.join(10)
        eq(results["bad"], [], "the writer's failed statements")
        if not any(after > before for before, after, _ in saves):
            raise TestFailure("no write completed while a save ran: %r" % saves)
        written = results["ok"]
        n = check_file(snap_path(d))
        if not 20000 <= n <= 20000 + written:
            raise TestFailure("snapshot rows %d, want 20000..%d" % (n, 20000 + written))
        eq(d.stop(signal.SIGKILL), -signal.SIGKILL, "killed")
        d.start()
        eq(count3(d.connect()), n, "rows of the last save after kill -9")
test_snapshot_while_another_client_writes.timeout = 120


def test_snapshot_interval():
    with snap_daemon(opts={"snapshot_interval": "1"}) as d:
        c = d.connect()
        insert3(c, 7)
        deadline = time.time() + 10
        while time.time() < deadline:
            at = {x[0]: x for x in c.request(".binds").rows}["memory_db"][8]
            if at is not None:
                break
            time.sleep(0.1)
        else:
            raise TestFailure("no snapshot within 10 s of snapshot_interval = 1")
        time.sleep(0.2)
        eq(check_file(snap_path(d)), 7, "rows in the timed snapshot")
        # Nothing changed: no more timed saves.
        n = d.stderr_text().count("snapshot %s written" % snap_path(d))
        time.sleep(2.5)
        eq(d.stderr_text().count("snapshot %s written" % snap_path(d)), n, "saves while idle")
        insert3(c, 1, 7)
        time.sleep(2.5)
        eq(d.stop(signal.SIGKILL), -signal.SIGKILL, "killed")
        d.start()
        eq(count3(d.connect()), 8, "rows after kill -9")


def test_snapshot_then_migrations_at_start():
    tables = [("test2", "second_db"), ("test3", "memory_db"), ("notes", "memory_db")]
    with snap_daemon(start=False, server={"migrations": "migrations"}, tables=tables) as d:
        mdir = os.path.join(d.dir, "migrations", "memory_db")
        os.makedirs(mdir)
        with open(os.path.join(mdir, "0001_notes.sql"), "w") as f:
            f.write("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\n")
        d.start()
        c = d.connect()
        expect_ok(c.request("INSERT INTO notes (body) VALUES ('kept')"))
        insert3(c, 1)
        d.stop()
        with open(os.path.join(mdir, "0002_tag.sql"), "w") as f:
            f.write("ALTER TABLE notes ADD COLUMN tag TEXT DEFAULT 'new';\n")
        d.start()
        c = d.connect()
        expect_rows(c.request("SELECT body, tag FROM notes"), [["kept", "new"]])
        eq(count3(c), 1, "test3 from the snapshot (its schema file did not run again)")
        r = c.request(".migrations memory_db")
        eq([(x[1], x[3]) for x in r.rows], [("1", "applied"), ("2", "applied")], ".migrations")
        log = d.stderr_text(current_only=True)
        if log.index("snapshot %s loaded" % snap_path(d)) > log.index("0002_tag.sql applied"):
            raise TestFailure("migrations ran before the snapshot was loaded:\n" + log)
        if "schema_memory_db.sql applied" in log:
            raise TestFailure("the schema ran on top of the snapshot:\n" + log)


def test_without_snapshot_memory_starts_empty(d):
    c = d.connect()
    insert3(c, 3)
    expect_err(c.request(".save"), "ARGS")
    d.restart()
    eq(count3(d.connect()), 0, "no snapshot: empty again")
    eq([n for n in os.listdir(d.data_dir) if "snapshot" in n], [], "no snapshot files")


def test_snapshot_config_keys():
    text = make_config(bind_opts={"second_db": {"snapshot": "x.snap"}})
    rc, out, err, path, _ = run_once(text, files=standard_files(), check=True)
    eq(rc, 1, "snapshot on a file bind")
    line = text.splitlines().index("snapshot = x.snap") + 1
    _contains(err, "%s:%d: snapshot: bind 'second_db' is not an in-memory bind" % (path, line), "stderr")
    text = make_config(bind_opts={"memory_db": {"snapshot": "m.snap", "snapshot_on_damage": "ignore"}})
    rc, out, err, path, _ = run_once(text, files=standard_files(), check=True)
    eq(rc, 1, "bad snapshot_on_damage")
    _contains(err, "snapshot_on_damage: 'ignore' is not one of fail, move", "stderr")
    text = make_config(bind_opts={"memory_db": {"snapshot": "snaps/m.snap", "snapshot_interval": "60"}})
    rc, out, err, path, d = run_once(text, files=standard_files(), check=True)
    eq(rc, 0, "good snapshot keys")
    _contains(out, "bind memory_db snapshot = %s/data/snaps/m.snap" % os.path.dirname(path), "--check-config")
    _contains(out, "bind memory_db snapshot_interval = 60", "--check-config")
    _contains(out, "bind memory_db snapshot_on_damage = fail (default)", "--check-config")
    text = make_config(bind_opts={"memory_db": {"snapshot_interval": "60"}})
    rc, out, err, path, _ = run_once(text, files=standard_files(), check=True)
    eq(rc, 0, "interval without a snapshot: a warning")
    _contains(err, "snapshot_interval has no effect without snapshot", "stderr")
