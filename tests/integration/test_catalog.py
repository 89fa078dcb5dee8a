"""Routing by the binds' catalogs (issue 14): with no [tables] entry, a table
goes to the bind that holds it, as each bind's catalog (sqlite_schema) says;
the catalog follows the daemon's own DDL before the DDL's answer goes out,
and notices DDL made by other programs (PRAGMA schema_version, every
catalog_interval). A name in several binds and in no [tables] entry is
-ERR AMBIGUOUS; a name in none goes to the session's bind."""

import os
import sqlite3
import subprocess
import threading
import time

from harness import (Daemon, TestFailure, daemon_binary, eq, expect_err, expect_ok,
                     expect_rows, expect_status)

COLOR = "CREATE TABLE {t} (id INTEGER PRIMARY KEY, color VARCHAR(64) DEFAULT '{c}')"


def _bare(**kw):
    """The note's three binds, no [tables] entry and no schema files."""
    kw.setdefault("tables", [])
    kw.setdefault("schemas", False)
    return Daemon(**kw)


def _use(c, bind):
    expect_status(c.request(".use " + bind), "+OK bind=" + bind)


def _create_note_tables(d):
    """test1/test2/test3 created through their own bind, as Flask-SQLAlchemy's
    create_all() does with one engine per bind."""
    c = d.connect()
    for bind, t, color in (("default", "test1", "red"), ("second_db", "test2", "red"),
                           ("memory_db", "test3", "blue")):
        _use(c, bind)
        expect_status(c.request(COLOR.format(t=t, c=color)), "+OK changes=0")
    c.close()


FILES = {"default": "app.db", "second_db": "second.db", "memory_db": None}


def _expect_in(d, bind, table):
    """table is in bind's database and in no other file (the in-memory
    bind has none: then in neither file)."""
    for b, fn in FILES.items():
        if fn is not None and (table in d.file_tables(fn)) != (b == bind):
            raise TestFailure("%s %s in %s: %r" % (table, "not" if b == bind else "also", fn,
                                                   d.file_tables(fn)))


def _route(c, sql):
    """(rows, status) of .route SQL."""
    r = c.request(".route " + sql)
    return r.rows, r.status


def test_note_scenario_without_a_tables_map():
    with _bare() as d:
        _create_note_tables(d)
        eq(d.file_tables("app.db"), ["test1"], "tables in app.db")
        eq(d.file_tables("second.db"), ["test2"], "tables in second.db")
        c = d.connect()   # a new client: the default bind, no .use
        for t, color in (("test1", "green"), ("test2", "yellow"), ("test3", "purple")):
            expect_status(c.request("INSERT INTO %s (color) VALUES ('%s')" % (t, color)),
                          "+OK changes=1 last_id=1")
        expect_rows(c.request("SELECT color FROM test2"), [["yellow"]])
        expect_rows(c.request("SELECT color FROM test3"), [["purple"]])
        eq(d.file_query("second.db", "SELECT color FROM test2"), [("yellow",)], "test2 rows")
        eq(d.file_query("app.db", "SELECT color FROM test1"), [("green",)], "test1 rows")
        # .route names the rule; .tables the bind and the why.
        rows, status = _route(c, "SELECT * FROM test2")
        eq(rows, [["test2", "second_db", "catalog"]], ".route rows")
        eq(status, "+OK bind=second_db", ".route status")
        eq(_route(c, "SELECT 1")[1], "+OK bind=default", ".route of no table")
        r = c.request(".tables")
        eq(r.names, ["table", "type", "bind", "routed_to", "rule", "warning"], ".tables columns")
        eq(sorted(r.rows), [["test1", "table", "default", "default", "catalog", None],
                            ["test2", "table", "second_db", "second_db", "catalog", None],
                            ["test3", "table", "memory_db", "memory_db", "catalog", None]], ".tables")
        # The view: created where test2 lives, from the default session.
        expect_status(c.request("CREATE VIEW v2 AS SELECT * FROM test2"), "+OK changes=0")
        eq(d.file_query("second.db", "SELECT name FROM sqlite_schema WHERE type = 'view'"),
           [("v2",)], "v2 in second.db")
        expect_rows(c.request("SELECT color FROM v2"), [["yellow"]])


def test_unknown_names_go_to_the_session_bind():
    with _bare() as d:
        _create_note_tables(d)
        c = d.connect()
        _use(c, "second_db")
        expect_status(c.request("CREATE TABLE foo (x)"), "+OK changes=0")
        if "foo" not in d.file_tables("second.db") or "foo" in d.file_tables("app.db"):
            raise TestFailure("CREATE TABLE after .use second_db did not land in second.db")
        # The database itself says a name no bind holds is missing.
        _use(c, "memory_db")
        expect_err(c.request("SELECT * FROM nowhere"), "SQL", "no such table: nowhere")
        eq(_route(c, "SELECT * FROM nowhere"),
           ([["nowhere", "memory_db", "session"]], "+OK bind=memory_db"), ".route")
        # Every bind has its own sqlite_schema and version tables.
        expect_rows(c.request("SELECT name FROM sqlite_schema WHERE type = 'table'"), [["test3"]])
        for bind in ("default", "second_db"):
            c2 = d.connect()
            _use(c2, bind)
            expect_status(c2.request("CREATE TABLE alembic_version (version_num VARCHAR(32))"),
                          "+OK changes=0")
            expect_status(c2.request("INSERT INTO alembic_version VALUES ('%s')" % bind),
                          "+OK changes=1 last_id=1")
            expect_rows(c2.request("SELECT version_num FROM alembic_version"), [[bind]])


def test_ddl_updates_the_route_before_its_answer():
    """CREATE, RENAME and DROP move a name between binds; a second client
    sees each move as soon as the first got its answer, even with the old
    route cached."""
    with _bare() as d:
        a, b = d.connect(), d.connect()
        _use(a, "second_db")
        expect_status(a.request("CREATE TABLE mover (v TEXT)"), "+OK changes=0")
        _expect_in(d, "second_db", "mover")
        expect_status(a.request("INSERT INTO mover VALUES ('second')"), "+OK changes=1 last_id=1")
        expect_rows(b.request("SELECT v FROM mover"), [["second"]])
        expect_status(a.request("ALTER TABLE mover RENAME TO moved"), "+OK changes=0")
        expect_rows(b.request("SELECT v FROM moved"), [["second"]])
        expect_err(b.request("SELECT v FROM mover"), "SQL", "no such table: mover")
        expect_status(a.request("DROP TABLE moved"), "+OK changes=0")
        _use(a, "memory_db")
        expect_status(a.request("CREATE TABLE mover (v TEXT)"), "+OK changes=0")
        _expect_in(d, "memory_db", "mover")
        expect_status(a.request("INSERT INTO mover VALUES ('memory')"), "+OK changes=1 last_id=1")
        expect_rows(b.request("SELECT v FROM mover"), [["memory"]])
        # DDL inside a transaction takes effect for others at COMMIT.
        expect_ok(a.request("BEGIN"))
        expect_status(a.request("DROP TABLE mover"), "+OK changes=0")
        expect_ok(a.request("COMMIT"))
        _use(a, "second_db")
        expect_status(a.request("CREATE TABLE mover (v TEXT)"), "+OK changes=0")
        expect_status(a.request("INSERT INTO mover VALUES ('second again')"),
                      "+OK changes=1 last_id=1")
        expect_rows(b.request("SELECT v FROM mover"), [["second again"]])


def _sqlite_exec(path, sql):
    db = sqlite3.connect(path, timeout=10)
    try:
        db.executescript(sql)
    finally:
        db.close()


def _wait_status(c, sql, want, timeout=10.0):
    deadline = time.time() + timeout
    while True:
        r = c.request(sql)
        if r.status.startswith(want):
            return r
        if time.time() > deadline:
            raise TestFailure("%s: want %r within %.0fs, last %r" % (sql, want, timeout, r.status))
        time.sleep(0.05)


def test_other_programs_ddl_is_noticed_and_a_name_in_two_binds_is_ambiguous():
    with _bare(server={"catalog_interval": "100"}) as d:
        _create_note_tables(d)
        c = d.connect()
        # Another program adds a table to second.db: the daemon notices.
        _sqlite_exec(d.db_path("second.db"), "CREATE TABLE outside (x); INSERT INTO outside VALUES (7);")
        r = _wait_status(c, "SELECT x FROM outside", "+OK rows=1")
        expect_rows(r, [["7"]])
        # ... and one of the same name to app.db: now no bind is right.
        _sqlite_exec(d.db_path("app.db"), "CREATE TABLE outside (x);")
        r = _wait_status(c, "SELECT x FROM outside", "-ERR AMBIGUOUS")
        eq(r.err_msg, "table outside exists in binds default, second_db and no [tables] entry "
                      "says which: pin it there, or drop all but one", "AMBIGUOUS message")
        expect_err(c.request("INSERT INTO test1 SELECT 1, x FROM outside"), "AMBIGUOUS")
        rows = dict((row[0] + "@" + row[2], row) for row in c.request(".tables").rows)
        eq(rows["outside@default"][3:], [None, "ambiguous",
                                         "also in bind second_db: statements naming it get "
                                         "-ERR AMBIGUOUS"], ".tables of an ambiguous name")
        # A [tables] entry settles it (reload), with a warning for the other copy.
        d.rewrite_config(tables=[("outside", "second_db")], schemas=False,
                         server={"catalog_interval": "100"})
        expect_ok(c.request(".reload"))
        expect_rows(c.request("SELECT x FROM outside"), [["7"]])
        eq(_route(c, "SELECT x FROM outside"),
           ([["outside", "second_db", "map"]], "+OK bind=second_db"), ".route")
        rows = dict((row[0] + "@" + row[2], row) for row in c.request(".tables").rows)
        eq(rows["outside@default"][3:],
           ["second_db", "map", "[tables] routes it to bind second_db: this one is not used"],
           ".tables warns of the unused copy")
        eq(rows["outside@second_db"][3:], ["second_db", "map", None], ".tables of the pinned one")


def test_pinned_table_found_elsewhere_warns_at_start():
    schemas = {"second_db": "s2.sql"}
    with Daemon(tables=[("test2", "default")], schemas=schemas,
                files={"s2.sql": COLOR.format(t="test2", c="red") + ";\n"}) as d:
        if "table test2 is pinned to bind default by [tables], but bind second_db has one too" \
                not in d.stderr_text():
            raise TestFailure("no start-up warning:\n" + d.stderr_tail())
        c = d.connect()
        rows = c.request(".tables second_db").rows
        eq(rows, [["test2", "table", "second_db", "default", "map",
                   "[tables] routes it to bind default: this one is not used"]], ".tables")


def test_migrate_cli_tables_route_to_their_bind():
    """`sqlmuxd migrate --bind second_db` (another process) creates a table
    in second.db while the daemon runs: its statements go there."""
    d = _bare(start=False, server={"catalog_interval": "100", "migrations": "migrations"})
    folder = os.path.join(d.dir, "migrations", "second_db")
    os.makedirs(folder)
    os.makedirs(os.path.join(d.dir, "migrations", "default"))
    os.makedirs(os.path.join(d.dir, "migrations", "memory_db"))
    with open(os.path.join(folder, "0001_items.sql"), "w") as f:
        f.write("CREATE TABLE items (name TEXT);\nINSERT INTO items VALUES ('from migration');\n")
    with d:
        d.start()
        c = d.connect()
        expect_err(c.request("SELECT name FROM items"), "SQL", "no such table: items")
        out = subprocess.run([daemon_binary(), "migrate", d.config_path, "up", "--bind", "second_db"],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, cwd="/")
        if out.returncode != 0:
            raise TestFailure("migrate: %s %s" % (out.stdout, out.stderr))
        r = _wait_status(c, "SELECT name FROM items", "+OK rows=1")
        expect_rows(r, [["from migration"]])
        eq(_route(c, "SELECT * FROM items")[0], [["items", "second_db", "catalog"]], ".route")


def test_many_clients_never_reach_a_stale_bind():
    """Readers hammer SELECTs on a table that a writer moves between binds
    (drop in one, create in another, or rename away and back), with other
    DDL in every bind in between. Each copy holds the phase number it was
    made in; a read sent and answered within one stable phase must return
    exactly that phase's row, never a row of an older copy or an error."""
    binds = ["default", "second_db", "memory_db"]
    with _bare() as d:
        w = d.connect()
        phase = [0]          # even: stable; odd: moving
        stop = threading.Event()
        errors, counts = [], [0, 0]

        def reader():
            c = d.connect()
            while not stop.is_set():
                p0 = phase[0]
                r = c.request("SELECT p, bind FROM hot")
                p1 = phase[0]
                if p0 != p1 or p0 % 2 == 1:
                    continue
                counts[0] += 1
                if r.status != "+OK rows=1" or r.rows != [[str(p0), binds[(p0 // 2) % 3]]]:
                    errors.append("phase %d: %r %r" % (p0, r.status, r.rows))
                    stop.set()

        _use(w, binds[0])
        expect_ok(w.request("CREATE TABLE hot (p INTEGER, bind TEXT)"))
        expect_ok(w.request("INSERT INTO hot VALUES (0, 'default')"))
        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            deadline = time.time() + 6
            n = 0
            while time.time() < deadline and not stop.is_set():
                n += 1
                old, new = binds[((2 * n - 2) // 2) % 3], binds[(2 * n // 2) % 3]
                phase[0] = 2 * n - 1
                # Move hot from old to new: some DDL in each bind around it.
                _use(w, old)
                expect_ok(w.request("CREATE TABLE side_%d (x)" % n))
                if n % 2:
                    expect_ok(w.request("DROP TABLE hot"))
                else:
                    expect_ok(w.request("ALTER TABLE hot RENAME TO cold_%d" % n))
                _use(w, new)
                expect_ok(w.request("CREATE TABLE hot (p INTEGER, bind TEXT)"))
                _expect_in(d, new, "hot")
                expect_ok(w.request("INSERT INTO hot VALUES (%d, '%s')" % (2 * n, new)))
                expect_ok(w.request("DROP TABLE IF EXISTS side_%d" % (n - 1)))
                phase[0] = 2 * n
                time.sleep(0.02)
                counts[1] = n
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        if errors:
            raise TestFailure("a read reached a stale bind: %s" % errors[:3])
        if counts[0] < 50 or counts[1] < 10:
            raise TestFailure("too little happened: %d checked reads, %d moves" % tuple(counts))
