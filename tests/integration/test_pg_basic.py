"""PostgreSQL binds, the basics: routing next to SQLite binds, URL forms,
the result format and type names, changes counts, parameters, errors,
.binds/.route, and where the password may (not) appear.

Each test uses its own database on the run's shared cluster
(pgfixture.shared()); the data is checked with psql, not through sqlmux."""

import os
import re

from harness import (TestFailure, encode_bulk, encode_inline, eq, expect_err, expect_ok,
                     expect_rows, expect_status)
from pgfixture import (ACCOUNTS_DDL, PASSWORD, USER, binds_by_name, create_accounts,
                       pg_daemon, shared, wait_for)

SQLSTATE = re.compile(r"\(SQLSTATE ([0-9A-Z]{5})\)$")


def _expect_pg_err(resp, code, sqlstate):
    """-ERR CODE message (SQLSTATE XXXXX)."""
    expect_err(resp, code)
    m = SQLSTATE.search(resp.err_msg)
    if not m or m.group(1) != sqlstate:
        raise TestFailure("want the message to end with (SQLSTATE %s), got %r"
                          % (sqlstate, resp.status))
    return resp


def _expect_changes(resp, n):
    """+OK changes=N and nothing else (no last_id for PostgreSQL)."""
    return expect_status(resp, "+OK changes=%d" % n)


def test_pg_table_routes_to_postgres_others_stay_in_sqlite():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db) as d:
        c = d.connect()
        _expect_changes(c.request(ACCOUNTS_DDL), 0)
        eq(pg.psql("SELECT tableowner FROM pg_tables WHERE schemaname = 'public' "
                   "AND tablename = 'accounts'", db=db), [[USER]],
           "accounts created in PostgreSQL by the URL's user")
        if "accounts" in d.file_tables("app.db"):
            raise TestFailure("accounts was created in the SQLite default bind too")
        _expect_changes(c.request("INSERT INTO accounts (name, balance, active) "
                                  "VALUES ('alice', 10.5, true)"), 1)
        expect_status(c.request("INSERT INTO test1 (color) VALUES ('green')"),
                      "+OK changes=1 last_id=1")
        expect_status(c.request("INSERT INTO test2 (color) VALUES ('teal')"),
                      "+OK changes=1 last_id=1")
        eq(pg.psql("SELECT id, name, balance, active FROM accounts", db=db),
           [["1", "alice", "10.50", "t"]], "accounts rows in PostgreSQL")
        eq(pg.psql("SELECT count(*) FROM pg_tables WHERE tablename IN ('test1', 'test2')",
                   db=db), [["0"]], "no SQLite table in PostgreSQL")
        eq(d.file_query("app.db", "SELECT color FROM test1"), [("green",)], "test1 in app.db")
        eq(d.file_query("second.db", "SELECT color FROM test2"), [("teal",)], "test2")
        expect_rows(c.request("SELECT name, balance FROM accounts"), [["alice", "10.50"]])
        expect_rows(c.request("SELECT color FROM test1"), [["green"]])
        # DDL and DML keep following the map
        _expect_changes(c.request("CREATE INDEX accounts_balance ON accounts (balance)"), 0)
        eq(pg.psql("SELECT indexname FROM pg_indexes WHERE indexname = 'accounts_balance'",
                   db=db), [["accounts_balance"]], "index created in PostgreSQL")
        _expect_changes(c.request("DELETE FROM accounts"), 1)
        _expect_changes(c.request("DROP TABLE accounts"), 0)
        eq(pg.psql("SELECT to_regclass('public.accounts') IS NULL", db=db), [["t"]],
           "accounts dropped in PostgreSQL")
        expect_rows(c.request("SELECT count(*) FROM test1"), [["1"]])


def test_pg_url_forms():
    pg = shared()
    with pg.database() as db:
        binds = [
            ("pg_short", pg.url(db=db, scheme="postgres")),
            ("pg_driver", pg.url(db=db, scheme="postgresql+psycopg2")),
            ("pg_unix", pg.url(db=db, via="unix", password=None)),
            ("pg_opts", pg.url(db=db, query="sslmode=disable&connect_timeout=5"
                                             "&application_name=sqlmux_it_opts")),
        ]
        with pg_daemon(pg, db, extra_binds=binds) as d:
            c = d.connect()
            problems = []
            for name, url in [("pg", pg.url(db=db))] + binds:
                expect_status(c.request(".use %s" % name), "+OK bind=%s" % name)
                r = c.request("SELECT current_user AS u, current_database() AS db, "
                              "inet_client_addr() IS NULL AS local, "
                              "current_setting('application_name') AS app")
                if not r.ok or len(r.rows) != 1:
                    problems.append("%s (%s): %r" % (name, url, r))
                    continue
                u, got_db, local, app = r.rows[0]
                if (u, got_db) != (USER, db):
                    problems.append("%s: connected as %s to %s" % (name, u, got_db))
                if local != ("t" if name == "pg_unix" else "f"):
                    problems.append("%s: inet_client_addr() IS NULL = %s (unix socket "
                                    "wanted only for pg_unix)" % (name, local))
                if name == "pg_opts" and app != "sqlmux_it_opts":
                    problems.append("pg_opts: application_name %r" % app)
            if problems:
                raise TestFailure("\n".join(problems))
            eq(pg.psql("SELECT DISTINCT application_name FROM pg_stat_activity "
                       "WHERE application_name = 'sqlmux_it_opts'", db="postgres"),
               [["sqlmux_it_opts"]], "application_name seen by the server")
            types = dict((n, b["type"]) for n, b in binds_by_name(c).items())
            for name, _ in [("pg", None)] + binds:
                eq(types.get(name), "postgresql", ".binds type of %s" % name)


def test_pg_schema_qualified_table():
    pg = shared()
    with pg.database() as db:
        pg.psql("CREATE SCHEMA reports", db=db, user=USER)
        with pg_daemon(pg, db, tables=[("accounts", None), ("reports.daily", None)]) as d:
            c = d.connect()
            expect_status(c.request(".route SELECT * FROM reports.daily"), "+OK bind=pg")
            expect_status(c.request(".route SELECT * FROM daily"), "+OK bind=default")
            _expect_changes(c.request("CREATE TABLE reports.daily (day date primary key, "
                                      "n int4 not null)"), 0)
            _expect_changes(c.request("INSERT INTO reports.daily VALUES ('2024-02-29', 7)"), 1)
            expect_rows(c.request("SELECT day, n FROM reports.daily"), [["2024-02-29", "7"]],
                        [("day", "date"), ("n", "int4")])
            eq(pg.psql("SELECT day, n FROM reports.daily", db=db), [["2024-02-29", "7"]],
               "reports.daily in PostgreSQL")


def test_pg_result_types_and_fields():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db) as d:
        create_accounts(pg, db)
        c = d.connect()
        big = "12345678901234567890.12"
        _expect_changes(c.request(
            "INSERT INTO accounts (name, balance, active, data, created) VALUES "
            "('alice', %s, true, '\\x00ff10'::bytea, '2024-01-02 03:04:05+00')" % big), 1)
        _expect_changes(c.request(
            "INSERT INTO accounts (name, balance, active, data) VALUES "
            "(NULL, NULL, false, ''::bytea)"), 1)
        _expect_changes(c.request(
            "INSERT INTO accounts (name, balance, active, data, created) VALUES "
            "('', -0.01, NULL, NULL, NULL)"), 1)
        r = c.request("SELECT id, name, balance, active, data, created FROM accounts ORDER BY id")
        expect_status(r, "+OK rows=3")
        eq(r.columns, [("id", "int4"), ("name", "text"), ("balance", "numeric"),
                       ("active", "bool"), ("data", "bytea"), ("created", "timestamptz")],
           "column names and PostgreSQL type names")
        eq(r.rows[0][:5], ["1", "alice", big, "t", b"\x00\xff\x10"], "row 1")
        eq(r.rows[1][:5], ["2", None, None, "f", b""], "row 2 (NULLs, empty bytea)")
        eq(r.rows[2], ["3", "", "-0.01", None, None, None], "row 3 (empty text, NULLs)")
        raw = r.raw[1:4]
        eq(raw[0].split(b"\t")[4], b"\\x00ff10", "bytea as lowercase \\x hex")
        eq(raw[1].split(b"\t")[1:5], [b"\\N", b"\\N", b"f", b"\\x"], "NULL and empty bytea")
        eq(raw[2].split(b"\t")[1], b"", "empty text is an empty field")
        if not re.match(r"^2024-01-0[12] \d\d:\d\d:\d\d([+-]\d\d(:\d\d)?)?$", r.rows[0][5] or ""):
            raise TestFailure("timestamptz field %r is not PostgreSQL's text form" % r.rows[0][5])
        if not re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r.rows[1][5] or ""):
            raise TestFailure("default now() field %r" % r.rows[1][5])
        # the numeric is exact in PostgreSQL and back
        eq(pg.psql("SELECT balance FROM accounts WHERE id = 1", db=db), [[big]], "stored numeric")
        expect_rows(c.request("SELECT balance * 10 AS x FROM accounts WHERE id = 1"),
                    [["123456789012345678901.20"]])

        expect_status(c.request(".use pg"), "+OK bind=pg")
        r = c.request("SELECT 1::int8 AS i8, 2::int2 AS i2, 'v'::varchar(10) AS v, "
                      "2.5::float8 AS f8, 0.5::float4 AS f4, DATE '2024-02-29' AS d, "
                      "'{\"a\": 1}'::jsonb AS j, "
                      "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u, true AS b")
        expect_rows(r, [["1", "2", "v", "2.5", "0.5", "2024-02-29", '{"a": 1}',
                         "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "t"]],
                    [("i8", "int8"), ("i2", "int2"), ("v", "varchar"), ("f8", "float8"),
                     ("f4", "float4"), ("d", "date"), ("j", "jsonb"), ("u", "uuid"),
                     ("b", "bool")])
        # text escapes: backslash, tab, newline, CR; the texts NULL and \N
        r = c.request("SELECT E'a\\\\b\\tc\\nd\\re' AS t, 'NULL' AS n, E'\\\\N' AS bn, "
                      "NULL::text AS z, '' AS e, 'ünï ✓' AS u")
        expect_rows(r, [["a\\b\tc\nd\re", "NULL", "\\N", None, "", "ünï ✓"]])
        eq(r.raw[1], "=a\\\\b\\tc\\nd\\re\tNULL\t\\\\N\t\\N\t\tünï ✓".encode(), "raw row")
        # a header for an empty result
        expect_rows(c.request("SELECT 1 AS one WHERE false"), [], [("one", "int4")])


def test_pg_changes_counts_and_returning():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db) as d:
        create_accounts(pg, db)
        c = d.connect()
        _expect_changes(c.request("INSERT INTO accounts (name) VALUES ('a'), ('b'), ('c')"), 3)
        _expect_changes(c.request("UPDATE accounts SET balance = 1"), 3)
        _expect_changes(c.request("UPDATE accounts SET balance = 2 WHERE name = 'nobody'"), 0)
        r = c.request("INSERT INTO accounts (name) VALUES ('d') RETURNING id, name")
        expect_rows(r, [["4", "d"]], [("id", "int4"), ("name", "text")])
        r = c.request("UPDATE accounts SET balance = balance + 1 WHERE name IN ('a', 'b') "
                      "RETURNING name, balance")
        eq(sorted(r.rows), [["a", "2.00"], ["b", "2.00"]], "UPDATE ... RETURNING rows")
        expect_status(r, "+OK rows=2")
        _expect_changes(c.request("DELETE FROM accounts WHERE balance = 2"), 2)
        expect_rows(c.request("SELECT name FROM accounts ORDER BY id"), [["c"], ["d"]])
        expect_rows(c.request("SELECT name FROM accounts WHERE false"), [], [("name", "text")])
        _expect_changes(c.request("INSERT INTO accounts (name) SELECT 'x' || g FROM "
                                  "generate_series(1, 5) g"), 5)
        _expect_changes(c.request("TRUNCATE accounts"), 0)
        eq(pg.psql("SELECT count(*) FROM accounts", db=db), [["0"]], "after TRUNCATE")


def test_pg_parameters():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db) as d:
        create_accounts(pg, db)
        c = d.connect()
        # ? placeholders, text values typed by the server (numeric, bool)
        _expect_changes(c.inline("INSERT INTO accounts (name, balance, active) VALUES (?, ?, ?)",
                                 ["alice", "12345678901234567890.12", "true"]), 1)
        expect_rows(c.inline("SELECT balance, active FROM accounts WHERE name = ?", ["alice"]),
                    [["12345678901234567890.12", "t"]])
        # native $n placeholders, bulk form, a number used twice
        sql = b"SELECT name\n  FROM accounts\n WHERE balance > $1\n   AND name <> $2 OR name = $2"
        c.send(b"$%d 2\n" % len(sql) + sql + b"\ni1\ntalice\n")
        expect_rows(c.read_response(), [["alice"]])
        # every type: i int8, r float8, t text, b bytea (binary), n NULL
        expect_status(c.request(".use pg"), "+OK bind=pg")
        r = c.inline("SELECT pg_typeof(?)::text AS i, pg_typeof(?)::text AS r, "
                     "pg_typeof(?)::text AS b, pg_typeof(upper(?))::text AS t",
                     [5, 2.5, b"\x00", "x"])
        expect_rows(r, [["bigint", "double precision", "bytea", "text"]])
        r = c.inline("SELECT ? AS n, ? AS i, ? AS r, ? AS t, ? AS b",
                     [None, -7, 2.5, "t\tx\\y\nz", b"\xde\xad\x00\xbe\xef"])
        expect_rows(r, [[None, "-7", "2.5", "t\tx\\y\nz", b"\xde\xad\x00\xbe\xef"]])
        expect_rows(c.inline("SELECT ? + 1 AS n", ["41"]), [["42"]])
        expect_rows(c.inline("SELECT ?::int8 * 2 AS n", [2 ** 62 - 1]), [[str(2 ** 63 - 2)]])
        expect_rows(c.inline("SELECT ?::text IS NULL AS n, length(?) AS l",
                             [None, b"\x00\x01\xff"]),
                    [["t", "3"]])
        # binary data with every byte lands intact
        blob = bytes(range(256))
        _expect_changes(c.bulk("UPDATE accounts SET data = ? WHERE name = ?", [blob, "alice"]), 1)
        eq(pg.psql("SELECT encode(data, 'hex') FROM accounts", db=db), [[blob.hex()]],
           "bytea stored")
        expect_rows(c.inline("SELECT data FROM accounts WHERE data = ?", [blob]), [[blob]])
        # ? inside strings, quoted names and comments is not a placeholder
        expect_rows(c.inline("SELECT '?' AS q, ? AS v, \"?\" FROM (SELECT 1 AS \"?\") s "
                             "/* ? */", ["x"]), [["?", "x", "1"]])
        expect_rows(c.bulk("SELECT '?''?' AS q, -- ?\n ? AS v", [7]), [["?'?", "7"]])
        expect_rows(c.request("?0 SELECT '?' AS q"), [["?"]])


def test_pg_placeholders_next_to_postgres_only_strings():
    # PostgreSQL's own string forms: dollar quotes and E'' escapes.
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db) as d:
        c = d.connect()
        expect_status(c.request(".use pg"), "+OK bind=pg")
        expect_rows(c.inline("SELECT $$a ? b$$ AS q, ? AS v", ["x"]), [["a ? b", "x"]])
        expect_rows(c.inline("SELECT $tag$?$tag$ AS q, ? AS v", [1]), [["?", "1"]])
        expect_rows(c.inline("SELECT E'?\\'?' AS q, ? AS v", [7]), [["?'?", "7"]])


def test_pg_injection_attempt_is_data():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db) as d:
        create_accounts(pg, db)
        c = d.connect()
        evil = "x'); DROP TABLE accounts; --"
        _expect_changes(c.inline("INSERT INTO accounts (name) VALUES (?)", [evil]), 1)
        _expect_changes(c.bulk("INSERT INTO accounts (name) VALUES ($1)", ["$1; DELETE"]), 1)
        expect_rows(c.inline("SELECT name FROM accounts WHERE name = ?", [evil]), [[evil]])
        expect_rows(c.inline("SELECT count(*) FROM accounts WHERE name = ? OR ? = '1'",
                             ["' OR '1'='1", "' OR 1=1 --"]), [["0"]])
        eq(pg.psql("SELECT name FROM accounts ORDER BY id", db=db), [[evil], ["$1; DELETE"]],
           "rows in PostgreSQL")


def test_pg_wrong_parameter_count():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db) as d:
        create_accounts(pg, db, ["alice"])
        c = d.connect()
        cases = [
            encode_inline("SELECT name FROM accounts WHERE id = ? AND name = ?", [1]),
            encode_inline("SELECT name FROM accounts WHERE id = ?", [1, 2]),
            encode_inline("SELECT name FROM accounts", [1]),
            encode_bulk("SELECT name FROM accounts WHERE id = $1 AND name = $2", [1]),
            encode_bulk("SELECT name FROM accounts WHERE id = ?"),
            b"SELECT name FROM accounts WHERE id = ?\n",
        ]
        problems = []
        for req in cases:
            c.send(req)
            r = c.read_response()
            if r.err_code not in ("PARAMS", "SQL"):
                problems.append("%r: want -ERR PARAMS (or SQL from the server), got %r"
                                % (req, r))
            r = c.request(".ping")
            if r.raw != [b"+OK"]:
                problems.append("after %r: out of step, .ping got %r" % (req, r))
        if problems:
            raise TestFailure("\n".join(problems))
        expect_rows(c.inline("SELECT name FROM accounts WHERE id = ?", [1]), [["alice"]])


def test_pg_errors_with_sqlstate():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, tables=[("accounts", None),
                                                       ("nosuch", None)]) as d:
        create_accounts(pg, db, ["dup"])
        c = d.connect()
        _expect_pg_err(c.request("INSERT INTO accounts (name) VALUES ('dup')"),
                       "CONSTRAINT", "23505")
        _expect_pg_err(c.inline("INSERT INTO accounts (name) VALUES (?)", ["dup"]),
                       "CONSTRAINT", "23505")
        _expect_pg_err(c.request("INSERT INTO accounts (id) VALUES (NULL)"),
                       "CONSTRAINT", "23502")
        _expect_pg_err(c.request("SELECT * FROM accounts WHERE id = = 1"), "SQL", "42601")
        _expect_pg_err(c.request("SELECT * FROM nosuch"), "SQL", "42P01")
        _expect_pg_err(c.request("SELECT nocolumn FROM accounts"), "SQL", "42703")
        _expect_pg_err(c.request("SELECT 1 / (id - id) FROM accounts"), "SQL", "22012")
        expect_status(c.request(".ping"), "+OK")
        expect_rows(c.request("SELECT name FROM accounts"), [["dup"]])
        # an error inside a transaction: PostgreSQL refuses the rest until
        # ROLLBACK; after it the client goes on
        expect_status(c.request("BEGIN"), "+OK changes=0")
        _expect_changes(c.request("INSERT INTO accounts (name) VALUES ('in-txn')"), 1)
        _expect_pg_err(c.request("INSERT INTO accounts (name) VALUES ('dup')"),
                       "CONSTRAINT", "23505")
        _expect_pg_err(c.request("SELECT name FROM accounts"), "SQL", "25P02")
        expect_ok(c.request("ROLLBACK"))
        expect_rows(c.request("SELECT name FROM accounts"), [["dup"]])
        eq(pg.psql("SELECT name FROM accounts", db=db), [["dup"]], "after ROLLBACK")


def test_pg_binds_route_and_password_hidden():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, server={"log_level": "debug"}) as d:
        create_accounts(pg, db, ["alice"])
        c = d.connect()
        url = pg.url(db=db)
        wait_for(lambda: binds_by_name(c)["pg"].get("state") == "connected", 5,
                 ".binds state of pg 'connected'")
        b = binds_by_name(c)
        eq(b["pg"]["type"], "postgresql", ".binds type")
        eq(b["pg"]["url"], url.replace(":%s@" % PASSWORD, ":***@"), ".binds url, redacted")
        eq(b["pg"]["pool_size"], "4", ".binds pool_size")
        for col in ("connections", "in_use"):
            if col not in b["pg"]:
                raise TestFailure(".binds has no %r column: %r" % (col, b["pg"]))
        if int(b["pg"]["connections"]) < 1:
            raise TestFailure("pool_min=1 but .binds shows connections=%r" % b["pg"]["connections"])
        eq(b["pg"]["in_use"], "0", "in_use while idle")
        for name in ("default", "second_db", "memory_db"):
            eq(b[name]["state"], "open", ".binds state of SQLite bind %s" % name)
        # a transaction holds a connection: in_use 1 while it is open
        a = d.connect()
        expect_status(a.request("BEGIN"), "+OK changes=0")
        expect_rows(a.request("SELECT name FROM accounts"), [["alice"]])
        eq(binds_by_name(c)["pg"]["in_use"], "1", "in_use during a transaction")
        expect_ok(a.request("COMMIT"))
        wait_for(lambda: binds_by_name(c)["pg"]["in_use"] == "0", 3, "in_use back to 0")

        # .route
        r = c.request(".route SELECT * FROM accounts WHERE id = 1")
        expect_status(r, "+OK bind=pg")
        eq(r.rows, [["accounts", "pg", "map"]], ".route rows")
        expect_status(c.request(".route INSERT INTO accounts (name) VALUES ('x')"), "+OK bind=pg")
        expect_status(c.request(".route SELECT * FROM test1"), "+OK bind=default")
        join = "SELECT * FROM accounts a JOIN test1 t ON t.id = a.id"
        r = c.request(".route " + join)   # the federation pool runs it (test_xbind_*)
        expect_status(r, "+OK bind=*")
        eq([row[:2] for row in r.rows], [["accounts", "pg"], ["test1", "default"]], ".route rows across binds")

        # the password shows nowhere: .binds, errors, the log
        outputs = [c.request(".binds"), c.request("SELECT * FROM accounts WHERE"),
                   c.request("SELECT nocolumn FROM accounts"), c.request(".map"),
                   c.request(".route SELECT * FROM accounts")]
        for resp in outputs:
            if PASSWORD.encode() in b"\n".join(resp.raw):
                raise TestFailure("the password appears in a response: %r" % resp)
        eq(d.stop(), 0, "daemon exit status on SIGTERM")
        log = d.stderr_text()
        if PASSWORD in log:
            line = [ln for ln in log.splitlines() if PASSWORD in ln][0]
            raise TestFailure("the password appears in the daemon's log: %r" % line)


def test_pg_password_from_environment_and_passfile():
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db, ["alice"])
        url = pg.url(db=db, password=None)     # TCP: the server asks for a password
        with pg_daemon(pg, db, url=url, env={"PGPASSWORD": PASSWORD}) as d:
            c = d.connect()
            expect_rows(c.request("SELECT current_user AS u, name FROM accounts"),
                        [[USER, "alice"]])
        with pg_daemon(pg, db, url=url, start=False) as d:
            passfile = d.write_file("pgpass", "127.0.0.1:%d:%s:%s:%s\n"
                                    % (pg.port, db, USER, PASSWORD))
            os.chmod(passfile, 0o600)
            d.env["PGPASSFILE"] = passfile
            d.start()
            c = d.connect()
            expect_rows(c.request("SELECT current_user AS u, name FROM accounts"),
                        [[USER, "alice"]])
