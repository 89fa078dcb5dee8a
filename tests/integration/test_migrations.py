"""Per-bind migrations (the note's `flask db init --multidb`): each bind's
own version table, `sqlmuxd migrate status|up|down`, migrate_on_start, the
in-memory bind migrated at every start, failing and changed migrations,
two runs at once, and the .migrations command. Version tables are checked
by opening the database files directly."""

import hashlib
import os
import sqlite3
import subprocess
import threading

from harness import (Daemon, TestFailure, daemon_binary, eq, expect_err, expect_ok, expect_rows,
                     free_port, run_once, standard_files, make_config)

COLORS_1 = "CREATE TABLE colors (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n"
COLORS_2 = ("-- a second migration of the default bind\n"
            "ALTER TABLE colors ADD COLUMN shade TEXT;\n"
            "INSERT INTO colors (name, shade) VALUES ('red', 'dark');\n")
SHADES_1 = "CREATE TABLE shades (id INTEGER PRIMARY KEY, shade TEXT);\n"
SHADES_3 = "CREATE INDEX shades_shade ON shades (shade);\n"


def write_migrations(d, files, folder="migrations"):
    """files: {bind: {file name: text or None (remove)}} under d.dir/folder."""
    for bind, fs in files.items():
        bdir = os.path.join(d.dir, folder, bind)
        os.makedirs(bdir, exist_ok=True)
        for name, text in fs.items():
            path = os.path.join(bdir, name)
            if text is None:
                os.unlink(path)
            else:
                with open(path, "w") as f:
                    f.write(text)
    os.makedirs(os.path.join(d.dir, folder), exist_ok=True)


def mig_daemon(files, start=True, server=None, **cfg):
    """A Daemon (the note's three binds) with migrations = migrations and
    the given migration files; started unless start=False (then its config
    file is written, for the CLI)."""
    srv = {"migrations": "migrations"}
    srv.update(server or {})
    d = Daemon(start=False, server=srv, **cfg)
    write_migrations(d, files)
    if start:
        d.start()
    else:
        write_config(d)
    return d


def write_config(d):
    if d.port is None:
        d.port = free_port()
    with open(d.config_path, "w") as f:
        f.write(d.render_config())


def migrate(d, *args, check=None):
    """Run `sqlmuxd migrate CONFIG args...`; returns (status, stdout, stderr).
    check: the exit status required (None: any)."""
    p = subprocess.run([daemon_binary(), "migrate", d.config_path] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60, cwd="/")
    out, err = p.stdout.decode(), p.stderr.decode()
    if check is not None and p.returncode != check:
        raise TestFailure("sqlmuxd migrate %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s"
                          % (" ".join(args), p.returncode, check, out, err))
    return p.returncode, out, err


def versions(d, dbfile):
    """The version table of a database file: [(version, name, checksum)]."""
    return [tuple(r) for r in d.file_query(dbfile, "SELECT version, name, checksum FROM sqlmux_migrations "
                                                   "ORDER BY version")]


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _contains(text, needle, what):
    if needle not in text:
        raise TestFailure("%s lacks %r:\n%s" % (what, needle, text))


def _lacks(text, needle, what):
    if needle in text:
        raise TestFailure("%s has %r:\n%s" % (what, needle, text))


# ---------------------------------------------------------------------------


def test_two_binds_migrated_independently():
    files = {"default": {"0001_colors.sql": COLORS_1, "0002_add_shade.sql": COLORS_2},
             "second_db": {"0001_shades.sql": SHADES_1, "0003_shade_index.sql": SHADES_3,
                           "README.md": "not a migration\n"}}
    with mig_daemon(files, start=False) as d:
        rc, out, err = migrate(d, "status", check=0)
        _contains(out, "0002  add_shade", "status")
        _contains(out, "pending", "status")
        migrate(d, "up", check=0)
        eq(versions(d, "app.db"), [(1, "colors", sha(COLORS_1)), (2, "add_shade", sha(COLORS_2))],
           "default's own version table")
        eq(versions(d, "second.db"), [(1, "shades", sha(SHADES_1)), (3, "shade_index", sha(SHADES_3))],
           "second_db's own version table")
        eq(d.file_query("app.db", "SELECT name, shade FROM colors"), [("red", "dark")], "colors")
        eq(d.file_query("second.db", "SELECT name FROM sqlite_master WHERE name = 'shades_shade'"),
           [("shades_shade",)], "index of the second bind's migration 3")
        if "colors" in d.file_tables("second.db") or "shades" in d.file_tables("app.db"):
            raise TestFailure("a bind got another bind's migration")
        before = d.file_query("app.db", "SELECT applied_at FROM sqlmux_migrations ORDER BY version")
        # Re-running applies nothing.
        rc, out, err = migrate(d, "up", check=0)
        _lacks(out, "applied", "second up")
        eq(d.file_query("app.db", "SELECT applied_at FROM sqlmux_migrations ORDER BY version"), before,
           "applied_at unchanged")
        eq(d.file_query("app.db", "SELECT count(*) FROM colors"), [(1,)], "seed row inserted once")
        rc, out, err = migrate(d, "status", check=0)
        _lacks(out, "pending", "status after up")
        _contains(out, "bind second_db (%s): version 3" % d.db_path("second.db"), "status")
        # The daemon sees the same, live, in .migrations.
        d.start()
        r = d.connect().request(".migrations")
        expect_rows(r, [["default", "1", "colors", "applied", r.rows[0][4]],
                        ["default", "2", "add_shade", "applied", r.rows[1][4]],
                        ["second_db", "1", "shades", "applied", r.rows[2][4]],
                        ["second_db", "3", "shade_index", "applied", r.rows[3][4]]])
        eq(r.names, ["bind", "version", "name", "state", "applied_at"], ".migrations columns")


def test_up_to_a_version_and_one_bind():
    files = {"default": {"0001_colors.sql": COLORS_1, "0002_add_shade.sql": COLORS_2},
             "second_db": {"0001_shades.sql": SHADES_1}}
    with mig_daemon(files, start=False) as d:
        migrate(d, "up", "1", "--bind", "default", check=0)
        eq([v[0] for v in versions(d, "app.db")], [1], "default up to 1")
        if os.path.exists(d.db_path("second.db")):
            raise TestFailure("--bind default touched second_db")
        migrate(d, "up", "--bind", "default", check=0)
        eq([v[0] for v in versions(d, "app.db")], [1, 2], "default up to the end")
        rc, out, err = migrate(d, "up", "--bind", "nope")
        eq(rc, 1, "unknown bind")
        _contains(err, "nope", "stderr")
        eq(migrate(d, "sideways")[0], 2, "bad command")


def test_migrate_on_start_and_restart_applies_nothing():
    files = {"second_db": {"0001_shades.sql": SHADES_1, "0003_shade_index.sql": SHADES_3}}
    tables = [("test2", "second_db"), ("test3", "memory_db"), ("shades", "second_db")]
    with mig_daemon(files, server={"migrate_on_start": "on"}, tables=tables) as d:
        c = d.connect()
        expect_ok(c.request("INSERT INTO shades (shade) VALUES ('light')"))
        eq(versions(d, "second.db")[-1][0], 3, "migrated at start")
        _contains(d.stderr_text(), "0003_shade_index.sql applied", "log")
        d.restart()
        eq(d.stderr_text(current_only=True).count("applied ("), 0, "second start applies nothing")
        eq(len(versions(d, "second.db")), 2, "still two versions")
        # A new file is applied at the next start.
        write_migrations(d, {"second_db": {"0004_more.sql": "ALTER TABLE shades ADD COLUMN hue INTEGER;\n"}})
        d.restart()
        expect_ok(d.connect().request("UPDATE shades SET hue = 7"))
        eq([v[0] for v in versions(d, "second.db")], [1, 3, 4], "0004 applied at restart")
        # The version table answers through the session's bind, like sqlite_schema.
        c = d.connect()
        expect_ok(c.request(".use second_db"))
        expect_rows(c.request("SELECT version FROM sqlmux_migrations ORDER BY version"), [["1"], ["3"], ["4"]])


def test_failing_migration_rolls_back_and_names_file_and_line():
    bad = ("CREATE TABLE made_by_bad (x INTEGER);\n"
           "\n"
           "INSERT INTO nope VALUES (1);\n")
    files = {"second_db": {"0001_shades.sql": SHADES_1, "0002_bad.sql": bad, "0003_shade_index.sql": SHADES_3}}
    with mig_daemon(files, start=False, server={"migrate_on_start": "on"}) as d:
        rc, out, err = migrate(d, "up")
        eq(rc, 1, "exit status of a failing up")
        path = os.path.join(d.dir, "migrations", "second_db", "0002_bad.sql")
        _contains(err, "%s:3: no such table: nope" % path, "stderr")
        _contains(err, "stays at version 1", "stderr")
        eq([v[0] for v in versions(d, "second.db")], [1], "version unchanged")
        if "made_by_bad" in d.file_tables("second.db"):
            raise TestFailure("the failing migration's first statement was not rolled back")
        # A syntax error points at its own line.
        write_migrations(d, {"second_db": {"0002_bad.sql": "CREATE TABLE ok1 (x);\nSELECT (1;\n"}})
        rc, out, err = migrate(d, "up")
        _contains(err, "%s:2: " % path, "stderr of a syntax error")
        # The daemon refuses to start on it with migrate_on_start.
        try:
            d.start()
        except TestFailure:
            pass
        else:
            raise TestFailure("the daemon started although a migration fails")
        _contains(d.stderr_text(), "%s:2:" % path, "daemon stderr")
        eq([v[0] for v in versions(d, "second.db")], [1], "version unchanged after the failed start")
        # Fixed: it applies, and the later one with it.
        write_migrations(d, {"second_db": {"0002_bad.sql": "CREATE TABLE ok2 (x);\n"}})
        d.start()
        eq([v[0] for v in versions(d, "second.db")], [1, 2, 3], "applied once fixed")


def test_changed_applied_file_is_refused():
    files = {"default": {"0001_colors.sql": COLORS_1, "0002_add_shade.sql": COLORS_2}}
    with mig_daemon(files, start=False) as d:
        migrate(d, "up", "1", check=0)
        write_migrations(d, {"default": {"0001_colors.sql": COLORS_1 + "-- edited\n"}})
        rc, out, err = migrate(d, "up")
        eq(rc, 1, "up with a changed file")
        _contains(err, "0001_colors.sql: changed after it was applied", "stderr")
        eq([v[0] for v in versions(d, "app.db")], [1], "0002 not applied either")
        rc, out, err = migrate(d, "status")
        eq(rc, 1, "status with a changed file")
        _contains(out, "changed", "status")
        # A running daemon reports it.
        d.start()
        r = d.connect().request(".migrations default")
        eq([row[3] for row in r.rows], ["changed", "pending"], ".migrations states")
        d.stop()
        # A removed applied file is refused as well.
        write_migrations(d, {"default": {"0001_colors.sql": None}})
        rc, out, err = migrate(d, "up")
        eq(rc, 1, "up with an applied file gone")
        _contains(err, "no file with that version", "stderr")
        d.start()
        r = d.connect().request(".migrations default")
        eq([(row[1], row[3]) for row in r.rows], [("1", "missing"), ("2", "pending")], ".migrations states")


def test_down_to_a_version():
    files = {"second_db": {"0001_shades.sql": SHADES_1,
                           "0001_shades.down.sql": "DROP TABLE shades;\n",
                           "0003_shade_index.sql": SHADES_3,
                           "0003_shade_index.down.sql": "DROP INDEX shades_shade;\n",
                           "0004_hue.sql": "ALTER TABLE shades ADD COLUMN hue INTEGER;\n",
                           "0004_hue.down.sql": "ALTER TABLE shades DROP COLUMN hue;\n"}}
    with mig_daemon(files, start=False) as d:
        migrate(d, "up", check=0)
        eq([v[0] for v in versions(d, "second.db")], [1, 3, 4], "all applied")
        eq(migrate(d, "down", "1")[0], 2, "down without --bind")
        rc, out, err = migrate(d, "down", "1", "--bind", "second_db", check=0)
        _contains(out, "reverted 0004_hue.sql", "stdout")
        _contains(out, "reverted 0003_shade_index.sql", "stdout")
        if out.index("0004_hue") > out.index("0003_shade"):
            raise TestFailure("down did not revert the newest first:\n" + out)
        eq([v[0] for v in versions(d, "second.db")], [1], "down to 1")
        eq(d.file_query("second.db", "SELECT name FROM sqlite_master WHERE name = 'shades_shade'"), [],
           "index dropped")
        eq([r[1] for r in d.file_query("second.db", "PRAGMA table_info(shades)")], ["id", "shade"],
           "hue dropped")
        migrate(d, "up", check=0)
        eq([v[0] for v in versions(d, "second.db")], [1, 3, 4], "up again")
        migrate(d, "down", "0", "--bind", "second_db", check=0)
        eq(versions(d, "second.db"), [], "down to 0")
        if "shades" in d.file_tables("second.db"):
            raise TestFailure("shades survived down 0")
        # No down file: refused, nothing reverted.
        write_migrations(d, {"second_db": {"0004_hue.down.sql": None}})
        migrate(d, "up", check=0)
        rc, out, err = migrate(d, "down", "3", "--bind", "second_db")
        eq(rc, 1, "down without a down file")
        _contains(err, "no down file (0004_hue.down.sql)", "stderr")
        eq([v[0] for v in versions(d, "second.db")], [1, 3, 4], "nothing reverted")


def test_memory_bind_migrated_at_every_start():
    files = {"memory_db": {"0001_notes.sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\n",
                           "0002_seed.sql": "INSERT INTO notes (body) VALUES ('seed');\n"}}
    tables = [("test2", "second_db"), ("test3", "memory_db"), ("notes", "memory_db")]
    with mig_daemon(files, tables=tables) as d:
        for start in range(2):
            c = d.connect()
            expect_rows(c.request("SELECT body FROM notes"), [["seed"]])
            expect_ok(c.request("INSERT INTO notes (body) VALUES ('gone at restart')"))
            expect_ok(c.request(".use memory_db"))
            expect_rows(c.request("SELECT version, name FROM sqlmux_migrations"), [["1", "notes"], ["2", "seed"]])
            r = c.request(".migrations memory_db")
            eq([(x[1], x[3]) for x in r.rows], [("1", "applied"), ("2", "applied")], ".migrations")
            expect_rows(c.request("SELECT count(*) FROM test3"), [["0"]])
            d.restart()
        # The CLI leaves it to the daemon.
        rc, out, err = migrate(d, "up", "--bind", "memory_db")
        eq(rc, 1, "migrate up --bind memory_db")
        _contains(err, "in memory", "stderr")
        rc, out, err = migrate(d, "up", check=0)
        _contains(out, "memory_db: in memory, skipped", "stdout")


def test_two_runs_at_once_apply_each_migration_once():
    slow = ("CREATE TABLE big (x INTEGER);\n"
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000) "
            "INSERT INTO big SELECT x FROM c;\n"
            "INSERT INTO runs (what) VALUES ('2');\n")
    files = {"second_db": {"0001_runs.sql": "CREATE TABLE runs (what TEXT);\n"
                                            "INSERT INTO runs (what) VALUES ('1');\n",
                           "0002_slow.sql": slow,
                           "0003_last.sql": "INSERT INTO runs (what) VALUES ('3');\n"}}
    with mig_daemon(files, start=False) as d:
        results = []

        def run():
            results.append(migrate(d, "up", "--bind", "second_db"))
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        eq(sorted(r[0] for r in results), [0, 0, 0], "every run succeeds")
        out = "".join(r[1] for r in results)
        for name in ("0001_runs.sql", "0002_slow.sql", "0003_last.sql"):
            eq(out.count("applied " + name), 1, "runs that applied " + name)
        eq(d.file_query("second.db", "SELECT what FROM runs ORDER BY what"), [("1",), ("2",), ("3",)],
           "each migration's side effect once")
        eq([v[0] for v in versions(d, "second.db")], [1, 2, 3], "versions")


def test_migrations_command_while_the_cli_migrates():
    files = {"default": {"0001_colors.sql": COLORS_1}}
    with mig_daemon(files) as d:
        c = d.connect()
        r = c.request(".migrations")
        expect_rows(r, [["default", "1", "colors", "pending", None]])
        migrate(d, "up", check=0)
        r = c.request(".migrations")
        eq([(x[0], x[1], x[3]) for x in r.rows], [("default", "1", "applied")], "after the CLI's up")
        expect_ok(c.request("INSERT INTO colors (name) VALUES ('blue')"))
        expect_rows(c.request(".migrations second_db"), [])
        expect_err(c.request(".migrations nope"), "NOBIND")
        # Inside a transaction on the bind, .migrations still answers (on
        # another connection) and the transaction goes on.
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO colors (name) VALUES ('in txn')"))
        eq(len(c.request(".migrations").rows), 1, ".migrations in a transaction")
        expect_ok(c.request("COMMIT"))
        expect_rows(c.request("SELECT count(*) FROM colors"), [["2"]])
        # Bad files: the command says which.
        write_migrations(d, {"default": {"0001_again.sql": "SELECT 1;\n"}})
        r = c.request(".migrations")
        expect_err(r, "MIGRATION")
        _contains(r.err_msg, "0001_again.sql and 0001_colors.sql have the same version 1", ".migrations error")
    with Daemon() as d:
        r = d.connect().request(".migrations")
        expect_err(r, "ARGS")
        _contains(r.err_msg, "no migrations folder", ".migrations error")


def test_bad_migration_folders():
    files = {"default": {"0001_a.sql": "SELECT 1;\n", "0001_b.sql": "SELECT 2;\n"}}
    with mig_daemon(files, start=False) as d:
        rc, out, err = migrate(d, "up")
        eq(rc, 1, "duplicate versions")
        _contains(err, "0001_a.sql and 0001_b.sql have the same version 1", "stderr")
        write_migrations(d, {"default": {"0001_b.sql": None, "add_color.sql": "SELECT 1;\n"}})
        rc, out, err = migrate(d, "up")
        _contains(err, "add_color.sql: not a migration file name", "stderr")
        write_migrations(d, {"default": {"add_color.sql": None, "0002_x.down.sql": "SELECT 1;\n"}})
        rc, out, err = migrate(d, "up")
        _contains(err, "no migration 2 to go with this down file", "stderr")
        write_migrations(d, {"default": {"0002_x.down.sql": None, "0001_a.sql": "BEGIN;\nSELECT 1;\n"}})
        rc, out, err = migrate(d, "up")
        eq(rc, 1, "a migration with its own BEGIN")
        _contains(err, "0001_a.sql:1:", "stderr")
        write_migrations(d, {"default": {"0001_a.sql": "CREATE TABLE t1 (x);\nCOMMIT;\n"}})
        rc, out, err = migrate(d, "up")
        eq(rc, 1, "a migration with its own COMMIT")
        _contains(err, "ended its transaction itself", "stderr")
        eq(versions(d, "app.db"), [], "not recorded")


def test_config_keys():
    text = make_config(server={"migrations": "no_such_folder"})
    rc, out, err, path, _ = run_once(text, files=standard_files(), check=True)
    eq(rc, 1, "missing migrations folder")
    _contains(err, "%s:%d: migrations: cannot open" % (path, text.splitlines().index(
        "migrations = no_such_folder") + 1), "stderr")
    text = make_config(server={"migrations": "", "migrate_on_start": "sometimes"})
    rc, out, err, path, _ = run_once(text, files=standard_files(), check=True)
    eq(rc, 1, "bad migrate_on_start")
    _contains(err, "migrate_on_start: 'sometimes' is not a boolean", "stderr")
    rc, out, err, path, _ = run_once(make_config(server={"migrations": "."}), files=standard_files(),
                                     check=True)
    eq(rc, 0, "--check-config with a migrations folder")
    _contains(out, "server migrations = %s" % os.path.dirname(path), "--check-config")
    _contains(out, "server migrate_on_start = off (default)", "--check-config")
    with Daemon(start=False) as d:
        write_config(d)
        rc, out, err = migrate(d, "status")
        eq(rc, 1, "migrate without a migrations folder")
        _contains(err, "no migrations folder", "stderr")
