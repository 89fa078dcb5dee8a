"""Per-bind migrations on a PostgreSQL bind: `sqlmuxd migrate` with a
blocking libpq connection, the version table in PostgreSQL (checked with
psql), errors named by file and line (with and without a server-reported
position), rollback of a failing migration, changed files refused, down
files, migrate_on_start, .migrations through the non-blocking pool, and
two runs at once serialized by pg_advisory_xact_lock."""

import os
import subprocess
import threading

from harness import TestFailure, daemon_binary, eq, expect_ok, expect_rows, free_port
from pgfixture import USER, pg_daemon, shared

ACCOUNTS = ("CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL);\n"
            "CREATE FUNCTION shout(t text) RETURNS text LANGUAGE sql AS $$ SELECT upper(t) || '; !' $$;\n")
SEED = "INSERT INTO accounts (name) VALUES ('alice'), ('bob');\n"


def _write(d, files):
    for name, text in files.items():
        path = os.path.join(d.dir, "migrations", "pg", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if text is None:
            os.unlink(path)
        else:
            with open(path, "w") as f:
                f.write(text)


def _daemon(pg, db, files, start=False, **server):
    srv = {"migrations": "migrations"}
    srv.update(server)
    d = pg_daemon(pg, db, server=srv, start=False)
    _write(d, files)
    os.makedirs(os.path.join(d.dir, "migrations"), exist_ok=True)
    if start:
        d.start()
    else:
        d.port = free_port()
        with open(d.config_path, "w") as f:
            f.write(d.render_config())
    return d


def _migrate(d, *args):
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("PG"))
    p = subprocess.run([daemon_binary(), "migrate", d.config_path] + list(args), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60, cwd="/", env=env)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def _ok(d, *args):
    rc, out, err = _migrate(d, *args)
    if rc != 0:
        raise TestFailure("sqlmuxd migrate %s: exit %d\nstdout:\n%s\nstderr:\n%s" % (" ".join(args), rc, out, err))
    return out


def _versions(pg, db):
    if pg.psql("SELECT to_regclass('sqlmux_migrations') IS NULL", db=db) == [["t"]]:
        return []
    return [(int(v), n) for v, n in pg.psql("SELECT version, name FROM sqlmux_migrations ORDER BY version", db=db)]


def _contains(text, needle, what):
    if needle not in text:
        raise TestFailure("%s lacks %r:\n%s" % (what, needle, text))


def test_pg_migrate_up_status_down():
    pg = shared()
    files = {"0001_accounts.sql": ACCOUNTS,
             "0001_accounts.down.sql": "DROP FUNCTION shout(text);\nDROP TABLE accounts;\n",
             "0002_seed.sql": SEED,
             "0002_seed.down.sql": "DELETE FROM accounts;\n"}
    with pg.database() as db, _daemon(pg, db, files) as d:
        out = _ok(d, "status", "--bind", "pg")
        _contains(out, "0001  accounts", "status")
        out = _ok(d, "up")
        _contains(out, "bind pg: applied 0001_accounts.sql", "up")
        _contains(out, "bind pg: at version 2", "up")
        eq(_versions(pg, db), [(1, "accounts"), (2, "seed")], "version table in PostgreSQL")
        eq(pg.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'sqlmux_migrations'", db=db), [[USER]],
           "owned by the URL's user")
        eq(pg.psql("SELECT shout(name) FROM accounts ORDER BY id", db=db), [["ALICE; !"], ["BOB; !"]],
           "the $$ function body with a ';' inside")
        out = _ok(d, "up")
        if "applied" in out:
            raise TestFailure("a second up applied something:\n" + out)
        eq(pg.psql("SELECT count(*) FROM accounts", db=db), [["2"]], "seed once")
        # The SQLite binds keep their own (empty) state.
        if os.path.exists(d.db_path("app.db")) and "sqlmux_migrations" in d.file_tables("app.db"):
            raise TestFailure("the default bind got a version table")
        _ok(d, "down", "1", "--bind", "pg")
        eq(_versions(pg, db), [(1, "accounts")], "down to 1")
        eq(pg.psql("SELECT count(*) FROM accounts", db=db), [["0"]], "seed reverted")
        _ok(d, "down", "0", "--bind", "pg")
        eq(_versions(pg, db), [], "down to 0")
        eq(pg.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'accounts'", db=db), [["0"]], "dropped")


def test_pg_failing_migration_names_line_and_rolls_back():
    pg = shared()
    files = {"0001_accounts.sql": ACCOUNTS,
             "0002_bad.sql": "CREATE TABLE made_by_bad (x int);\nSELECT 1;\n\nSELECT 1 / 0;\n",
             "0003_later.sql": SEED}
    with pg.database() as db, _daemon(pg, db, files, migrate_on_start="on") as d:
        rc, out, err = _migrate(d, "up")
        eq(rc, 1, "exit status")
        path = os.path.join(d.dir, "migrations", "pg", "0002_bad.sql")
        _contains(err, "%s:4: division by zero (SQLSTATE 22012)" % path, "stderr (no server position)")
        _contains(err, "stays at version 1", "stderr")
        eq(_versions(pg, db), [(1, "accounts")], "version unchanged")
        eq(pg.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'made_by_bad'", db=db), [["0"]],
           "rolled back")
        # An error with a position: the line of that position.
        _write(d, {"0002_bad.sql": "CREATE TABLE made_by_bad (x int);\n-- a comment; with a ';'\n"
                                   "SELECT 'a;b',\n  x FROM nope;\n"})
        rc, out, err = _migrate(d, "up")
        _contains(err, "%s:4: relation \"nope\" does not exist (SQLSTATE 42P01)" % path, "stderr (position)")
        # The daemon does not start on it with migrate_on_start.
        try:
            d.start()
        except TestFailure:
            pass
        else:
            raise TestFailure("the daemon started although a migration fails")
        _contains(d.stderr_text(), "%s:4:" % path, "daemon stderr")
        # A changed applied file is refused.
        _write(d, {"0002_bad.sql": "SELECT 1;\n", "0001_accounts.sql": ACCOUNTS + "-- edited\n"})
        rc, out, err = _migrate(d, "up")
        eq(rc, 1, "changed file")
        _contains(err, "0001_accounts.sql: changed after it was applied", "stderr")
        eq(_versions(pg, db), [(1, "accounts")], "nothing applied")


def test_pg_migrate_on_start_and_migrations_command():
    pg = shared()
    files = {"0001_accounts.sql": ACCOUNTS}
    with pg.database() as db, _daemon(pg, db, files, start=True) as d:
        c = d.connect()
        # No version table yet: everything pending (the pool's query fails
        # with 42P01, which means "none applied").
        expect_rows(c.request(".migrations pg"), [["pg", "1", "accounts", "pending", None]])
        expect_ok(c.request("SELECT 1"))
        _ok(d, "up")
        r = c.request(".migrations pg")
        eq([(x[1], x[3]) for x in r.rows], [("1", "applied")], ".migrations after the CLI's up")
        expect_ok(c.request("INSERT INTO accounts (name) VALUES ('carol')"))
        # The version table answers through the session's bind.
        expect_ok(c.request(".use pg"))
        expect_rows(c.request("SELECT version, name FROM sqlmux_migrations"), [["1", "accounts"]])
        d.stop()
        _write(d, {"0002_seed.sql": SEED})
        d.config_template = d.config_template.replace("[server]\n", "[server]\nmigrate_on_start = on\n", 1)
        d.start()
        eq(_versions(pg, db), [(1, "accounts"), (2, "seed")], "migrated at start")
        _contains(d.stderr_text(current_only=True), "bind pg: migration 0002_seed.sql applied", "log")
        r = d.connect().request(".migrations")
        eq([(x[0], x[1], x[3]) for x in r.rows], [("pg", "1", "applied"), ("pg", "2", "applied")], ".migrations")


def test_pg_two_runs_at_once_apply_each_migration_once():
    pg = shared()
    files = {"0001_runs.sql": "CREATE TABLE runs (what text);\nINSERT INTO runs VALUES ('1');\n",
             "0002_slow.sql": "SELECT pg_sleep(0.7);\nINSERT INTO runs VALUES ('2');\n",
             "0003_last.sql": "INSERT INTO runs VALUES ('3');\n"}
    with pg.database() as db, _daemon(pg, db, files) as d:
        results = []

        def run():
            results.append(_migrate(d, "up", "--bind", "pg"))
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        eq(sorted(r[0] for r in results), [0, 0, 0], "every run succeeds: %r" % results)
        out = "".join(r[1] for r in results)
        for name in ("0001_runs.sql", "0002_slow.sql", "0003_last.sql"):
            eq(out.count("applied " + name), 1, "runs that applied " + name)
        eq(pg.psql("SELECT what FROM runs ORDER BY what", db=db), [["1"], ["2"], ["3"]], "side effects once")
        eq(_versions(pg, db), [(1, "runs"), (2, "slow"), (3, "last")], "versions")
