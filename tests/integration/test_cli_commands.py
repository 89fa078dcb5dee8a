"""The sqlmux CLI's own commands without a terminal (-c, scripts): .schema,
.dump (loaded back through sqlmux, values exact), .tables with patterns,
.read, .output, .headers, .timer, .help, psql's backslash aliases, --status,
JSON typed by the declared type, escaped column names, and a login user
against a daemon without users."""

import json
import os
import re
import shutil
import tempfile

from harness import Daemon, TestFailure, eq
from test_cli import cli, expect

# Values a dump must keep exactly: storage classes in an untyped column,
# reals that only read back with 17 digits, quotes, newlines, CR, NUL,
# blobs (empty too), NULL, huge numbers.
VALUES_TABLE = """\
CREATE TABLE vals (id INTEGER PRIMARY KEY, anything, t TEXT, r REAL, b BLOB);
INSERT INTO vals VALUES (1, 1, '1', 0.1, x'00ff');
INSERT INTO vals VALUES (2, '1', 'it''s', 1e300, x'');
INSERT INTO vals VALUES (3, 2.5, 'two
lines', -0.30000000000000004, NULL);
INSERT INTO vals VALUES (4, x'0a', 'cr' || char(13) || char(10) || 'lf', 9e999, x'27');
INSERT INTO vals VALUES (5, NULL, 'nul' || CAST(x'00' AS TEXT) || 'x', -9e999, x'5c');
INSERT INTO vals VALUES (6, 9223372036854775807, '', 123456789.123456789, x'ff');
CREATE INDEX vals_t ON vals (t);
CREATE VIEW vals_view AS SELECT id, t FROM vals;
CREATE TABLE log (msg TEXT);
CREATE TRIGGER vals_log AFTER INSERT ON vals BEGIN INSERT INTO log VALUES ('added'); END;
"""

EXACT = "SELECT id, typeof(anything), anything, typeof(t), t, typeof(r), r, typeof(b), b FROM vals ORDER BY id"


def test_cli_dump_loads_back_exactly(d):
    """.dump writes every bind's tables, rows, indexes, views and triggers
    as SQL; loaded through sqlmux into an empty daemon it gives the same
    values with the same storage classes (1 vs '1', blobs, reals to the
    last bit, CR and NUL in text), rows on the bind they came from."""
    expect(cli(d, stdin=VALUES_TABLE), 0, "", "")
    expect(cli(d, "-c", "INSERT INTO test2 (color) VALUES ('second''s')"), 0, "", "")
    rc, dump, err = expect(cli(d, "-c", ".dump"), 0, stderr="")
    for want in ("-- bind default (sqlite)\nBEGIN;\n", "INSERT INTO \"vals\" VALUES(1,1,'1',0.1,X'00ff');",
                 "INSERT INTO \"vals\" VALUES(2,'1','it''s',1e+300,X'');",
                 "-- bind second_db (sqlite)\nBEGIN;\nCREATE TABLE test2", "CREATE VIEW vals_view",
                 "CREATE TRIGGER vals_log", "1e999", "-1e999"):
        if want not in dump:
            raise TestFailure("%r not in the dump:\n%s" % (want, dump))
    # The trigger comes after the rows: loading does not fire it.
    if dump.index("CREATE TRIGGER") < dump.index("INSERT INTO \"vals\" VALUES(6"):
        raise TestFailure("trigger before the rows:\n" + dump)
    with Daemon(schemas=False) as d2:
        path = d2.write_file("dump.sql", dump)
        expect(cli(d2, path), 0, "", "")
        eq(d2.file_query("app.db", EXACT), d.file_query("app.db", EXACT), "vals, exactly")
        eq(d2.file_query("app.db", "SELECT count(*) FROM log"), [(0,)], "trigger not fired by the load")
        eq(d2.file_query("app.db", "SELECT name FROM sqlite_schema ORDER BY name"),
           d.file_query("app.db", "SELECT name FROM sqlite_schema ORDER BY name"), "default's objects")
        eq(d2.file_query("second.db", "SELECT color FROM test2"), [("second's",)], "test2 on second_db")
        # A dump of the loaded daemon is the same text (but for its URL).
        rc, dump2, err = expect(cli(d2, "-c", ".dump"), 0, stderr="")
        eq(dump2.split("\n", 1)[1], dump.split("\n", 1)[1], "a dump of the load")
    # .dump TABLE...: only those (patterns as in .schema).
    rc, out, err = expect(cli(d, "-c", ".dump test2 v*ls"), 0, stderr="")
    if ("CREATE TABLE test2" not in out or "CREATE TABLE vals" not in out or "test1" in out
            or "CREATE TABLE log" in out):
        raise TestFailure(".dump test2 v*ls:\n" + out)


def test_cli_schema_tables_and_describe(d):
    """.schema [PATTERN], psql's \\d NAME and \\d/\\dt, .tables with a bind or
    a pattern."""
    expect(cli(d, stdin=VALUES_TABLE), 0, "", "")
    rc, out, err = expect(cli(d, "-c", ".schema vals"), 0, stderr="")
    eq(out.splitlines(), [
        "-- bind default (sqlite)",
        "CREATE TABLE vals (id INTEGER PRIMARY KEY, anything, t TEXT, r REAL, b BLOB);",
        "CREATE INDEX vals_t ON vals (t);",
        "CREATE TRIGGER vals_log AFTER INSERT ON vals BEGIN INSERT INTO log VALUES ('added'); END;",
    ], ".schema vals")
    expect(cli(d, "-c", "\\d vals"), 0, out, "")
    rc, out, err = expect(cli(d, "-c", ".schema TEST_"), 0, stderr="")
    eq(out, "-- bind default (sqlite)\nCREATE TABLE test1 (id INTEGER PRIMARY KEY, color VARCHAR(64) "
            "DEFAULT 'red');\n-- bind second_db (sqlite)\nCREATE TABLE test2 (id INTEGER PRIMARY KEY, "
            "color VARCHAR(64) DEFAULT 'red');\n-- bind memory_db (sqlite-memory)\nCREATE TABLE test3 "
            "(id INTEGER PRIMARY KEY, color VARCHAR(64) DEFAULT 'blue');\n", ".schema TEST_")
    expect(cli(d, "-c", ".schema nothing*"), 0, "", "")
    expect(cli(d, "-c", "\\d nothing"), 1, "", "ERROR NOTFOUND: did not find any table named nothing\n")
    # .tables: all, a bind's, a pattern's; \dt and \d alike.
    all_tables = "table\ttype\tbind\trouted_to\trule\twarning\n"
    expect(cli(d, "-c", ".tables second_db"), 0,
           all_tables + "test2\ttable\tsecond_db\tsecond_db\tmap\t\\N\n", "")
    expect(cli(d, "-c", ".tables test*"), 0, all_tables + "test1\ttable\tdefault\tdefault\tcatalog\t\\N\n"
           "test2\ttable\tsecond_db\tsecond_db\tmap\t\\N\ntest3\ttable\tmemory_db\tmemory_db\tmap\t\\N\n", "")
    expect(cli(d, "-c", "\\dt %view"), 0,
           all_tables + "vals_view\tview\tdefault\tdefault\tcatalog\t\\N\n", "")
    expect(cli(d, "--table", "-c", ".tables v?ls"), 0,
           "+-------+-------+---------+-----------+---------+---------+\n"
           "| table | type  |  bind   | routed_to |  rule   | warning |\n"
           "+-------+-------+---------+-----------+---------+---------+\n"
           "| vals  | table | default | default   | catalog | NULL    |\n"
           "+-------+-------+---------+-----------+---------+---------+\n"
           "(1 row)\n", "")
    rc, out, err = expect(cli(d, "-c", "\\d"), 0, stderr="")
    eq(len(out.splitlines()), 7, "\\d lists every table and view:\n" + out)
    # Unknown backslash commands never reach the daemon as SQL.
    expect(cli(d, "-c", "\\nope x"), 1, "", "ERROR UNKNOWN: unknown command \\nope (.help lists them)\n")


def test_cli_read_output_headers_timer(d):
    """.read FILE (and \\i) runs a file where it is named, errors with
    FILE:LINE; .output FILE (and \\o) sends results to a file and back;
    .headers off drops the names line; .timer (and \\timing) prints the time
    of each statement."""
    tmp = tempfile.mkdtemp(prefix="sqlmux-cli-")
    try:
        inner = os.path.join(tmp, "inner.sql")
        with open(inner, "w") as f:
            f.write("SELECT 'inner' AS w;\n\nSELECT * FROM nope;\nSELECT 'after' AS w;\n")
        outfile = os.path.join(tmp, "out.txt")
        script = ("SELECT 'first' AS w;\n.read %s\n.output %s\nSELECT 'to the file' AS w;\n.headers off\n"
                  "SELECT 'no header' AS w;\n.output\nSELECT 'back' AS w;\n\\i %s\n" % (inner, outfile, inner))
        expect(cli(d, stdin=script), 1, "w\nfirst\nw\ninner\nw\nafter\nback\ninner\nafter\n",
               "%s:3: ERROR SQL: no such table: nope\n%s:3: ERROR SQL: no such table: nope\n" % (inner, inner))
        with open(outfile) as f:
            eq(f.read(), "w\nto the file\nno header\n", ".output file")
        expect(cli(d, "-c", "\\o %s\nSELECT 2 AS x;\n\\o" % outfile), 0, "", "")
        with open(outfile) as f:
            eq(f.read(), "x\n2\n", "\\o file")
        # Unreadable files are a failed command, not the end of the session.
        expect(cli(d, "-c", ".read /nonexistent/x.sql\nSELECT 1 AS one;"), 1, "one\n1\n",
               "ERROR IOERR: /nonexistent/x.sql: No such file or directory\n")
        expect(cli(d, "-c", ".headers maybe"), 1, "", "ERROR ARGS: usage: .headers on|off\n")
        # A file that reads itself stops at the nesting limit.
        loop = os.path.join(tmp, "loop.sql")
        with open(loop, "w") as f:
            f.write(".read %s\n" % loop)
        rc, out, err = expect(cli(d, loop), 1, "")
        if "nested too deeply" not in err:
            raise TestFailure("stderr: %r" % err)
        # Tables honour .headers too.
        expect(cli(d, "--table", "-q", "-c", ".headers off\nSELECT 1 AS a;"), 0, "+---+\n| 1 |\n+---+\n", "")
        # .timer: one "Time: N ms" line after each statement.
        rc, out, err = expect(cli(d, "-c", ".timer on\nSELECT 1 AS a;\nSELECT 2 AS a;\n.timer off\nSELECT 3 AS a;"),
                              0, stderr="")
        if not re.fullmatch(r"a\n1\nTime: \d+\.\d{3} ms\na\n2\nTime: \d+\.\d{3} ms\na\n3\n", out):
            raise TestFailure(".timer output: %r" % out)
        rc, out, err = expect(cli(d, "-c", "\\timing\nSELECT 1 AS a;\n\\timing"), 0, stderr="")
        if not re.fullmatch(r"Timing is on\.\na\n1\nTime: \d+\.\d{3} ms\nTiming is off\.\n", out):
            raise TestFailure("\\timing output: %r" % out)

    finally:
        shutil.rmtree(tmp, ignore_errors=True)

def test_cli_help_lists_shell_and_daemon_commands(d):
    """.help lists the shell's own commands (from its command table) and
    then the daemon's; \\? is the same."""
    rc, out, err = expect(cli(d, "-c", ".help"), 0, stderr="")
    for name in (".mode", ".quit", ".exit", ".schema", ".dump", ".read", ".output", ".timer", ".headers",
                 ".tables", ".auth", "\\d", "\\dt", "\\x", "\\timing", "\\i", "\\o", "\\q"):
        if not re.search(r"^  %s( |$)" % re.escape(name), out, re.M):
            raise TestFailure("%s not in .help:\n%s" % (name, out))
    for daemon_cmd in ("binds", "route", "migrations"):
        if not re.search(r"^\.%s\t" % daemon_cmd, out, re.M):
            raise TestFailure("the daemon's %s not in .help:\n%s" % (daemon_cmd, out))
    expect(cli(d, "-c", "\\?"), 0, out, "")
    expect(cli(d, "-c", "\\q\nSELECT 1;"), 0, "", "")


def test_cli_json_types_from_declared_types(d):
    """JSON never turns text into numbers: '1' and '15.10' stay strings;
    numbers come from numeric declared types and keep their digits."""
    expect(cli(d, "--json", "-c", "SELECT '1' AS t, '15.10' AS v, 'x' AS s"), 0,
           '[{"t":"1","v":"15.10","s":"x"}]\n', "")
    expect(cli(d, "-c", "CREATE TABLE typed (i INTEGER, r REAL, n NUMERIC, d DECIMAL(10,2), t TEXT, "
                  "v VARCHAR(10), u, b BLOB)",
               "-c", "INSERT INTO typed VALUES (1, 15.1, 2, 3.5, '1', '15.10', '7', '8'), "
                     "('x', 'y', 'z', NULL, 2, 3, 4, x'00')"), 0, "", "")
    rc, out, err = expect(cli(d, "--json", "-c", "SELECT * FROM typed"), 0, stderr="")
    eq(out, '[{"i":1,"r":15.1,"n":2,"d":3.5,"t":"1","v":"15.10","u":"7","b":"8"},\n'
            '{"i":"x","r":"y","n":"z","d":null,"t":"2","v":"3","u":"4","b":"\\\\x00"}]\n', "json")
    eq(json.loads(out)[0]["v"], "15.10", "text stays text")


def test_cli_column_name_with_newline(d):
    """A newline (or tab, or control byte) in a column name is escaped as in
    values, so box and table borders stay straight."""
    sql = "SELECT 1 AS \"a\nb\", 'x' AS \"c\td\""
    rc, out, err = expect(cli(d, "--box", "-c", sql, env={"LANG": "C.UTF-8"}), 0, stderr="")
    lines = out.splitlines()
    eq(lines[1], "\u2502 a\\nb \u2502 c\\td \u2502", "the header line")
    widths = set(len(line) for line in lines[:5])
    eq(len(widths), 1, "every line of the box is as wide:\n" + out)
    expect(cli(d, "--expanded", "-q", "-c", sql), 0, "-[ RECORD 1 ]-\na\\nb | 1\nc\\td | x\n", "")


def test_cli_expanded_display(d):
    """\\x toggles psql's expanded display; .mode expanded and --expanded
    set it; NULL shows as in tables."""
    expect(cli(d, "-c", "\\x\nSELECT 1 AS id, NULL AS name, 'a\nb' AS long_name;\n\\x\nSELECT 2 AS id;"), 0,
           "Expanded display is on.\n-[ RECORD 1 ]-\nid        | 1\nname      | NULL\nlong_name | a\\nb\n"
           "(1 row)\nExpanded display is off.\nid\n2\n", "")
    expect(cli(d, "--expanded", "-c", "SELECT 1 AS a UNION ALL SELECT 2"), 0,
           "-[ RECORD 1 ]-\na | 1\n-[ RECORD 2 ]-\na | 2\n(2 rows)\n", "")


def test_cli_status_flag(d):
    """Status lines follow box/table/expanded output only; --status prints
    them in every mode, for scripts."""
    expect(cli(d, "--csv", "-c", "INSERT INTO test1 (color) VALUES ('a')"), 0, "", "")
    expect(cli(d, "--csv", "--status", "-c", "INSERT INTO test1 (color) VALUES ('b')", "-c",
               "SELECT color FROM test1 ORDER BY id", "-c", ".use second_db"), 0,
           "OK changes=1 last_id=2\ncolor\na\nb\n(2 rows)\nOK bind=second_db\n", "")
    expect(cli(d, "--status", "-c", "UPDATE test1 SET color = 'c'"), 0, "OK changes=2\n", "")


def test_cli_user_ignored_by_a_daemon_without_users(d):
    """-u USER without a password against a daemon without users runs (the
    README: such a daemon ignores a login); $SQLMUX_USER likewise."""
    expect(cli(d, "-u", "bob", "-c", "SELECT 1 AS one"), 0, "one\n1\n", "")
    expect(cli(d, "-c", "SELECT 2 AS two", env={"SQLMUX_USER": "bob"}), 0, "two\n2\n", "")
