"""Every dot-command of PROTOCOL.md: .ping .help .binds .tables .map .route
.use .quit, and unknown commands."""

import os
import socket

from harness import (Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows,
                     expect_status)

ALL_COMMANDS = {"ping", "help", "binds", "tables", "map", "route", "use", "quit"}


def _cmd_name(v):
    return v[1:] if v.startswith(".") else v


def _expect_table(r, names):
    """A command result: header with these column names and '+OK rows=N'
    matching the rows sent. (PROTOCOL.md fixes no types for command
    columns, so they are not checked.)"""
    expect_status(r, "+OK rows=%d" % len(r.rows))
    eq(r.names, names, "column names")


def test_ping(d):
    c = d.connect()
    r = c.request(".ping")
    eq(r.raw, [b"+OK"], ".ping raw response")
    eq(c.request(".ping\r\n").raw, [b"+OK"], ".ping with CRLF")


def test_help_lists_every_command(d):
    c = d.connect()
    r = c.request(".help")
    _expect_table(r, ["command", "arguments", "help"])
    listed = [_cmd_name(x) for x in r.col("command")]
    missing = ALL_COMMANDS - set(listed)
    if missing:
        raise TestFailure(".help does not list %s; got %r" % (sorted(missing), listed))
    eq(len(listed), len(set(listed)), "each command once")
    for row in r.rows:
        if not row[2]:
            raise TestFailure("command %r has no help text" % row[0])
    args = dict((_cmd_name(row[0]), row[1]) for row in r.rows)
    for cmd in ("route", "use"):
        if not args[cmd]:
            raise TestFailure(".help: %s takes arguments but lists none" % cmd)
    eq(args["ping"], "", ".ping arguments")


def test_binds(d):
    c = d.connect()
    r = c.request(".binds")
    _expect_table(r, ["name", "type", "url", "location", "state", "pool_size", "connections",
                      "in_use", "snapshot_at", "snapshot_bytes", "in_doubt"])
    eq(r.col("state"), ["open", "open", "open"], "SQLite binds are open")
    eq(r.col("name"), ["default", "second_db", "memory_db"], "bind names in config order")
    eq(r.col("url"), ["sqlite:///app.db", "sqlite:///second.db", "sqlite:///:memory:"], "urls")
    b = {row[0]: dict(zip(r.names, row)) for row in r.rows}
    eq(os.path.realpath(b["default"]["location"]), os.path.realpath(d.db_path("app.db")),
       "default location")
    eq(os.path.realpath(b["second_db"]["location"]), os.path.realpath(d.db_path("second.db")),
       "second_db location")
    eq(b["second_db"]["pool_size"], "4", "second_db pool_size")
    eq(b["memory_db"]["pool_size"], "4", "memory_db pool_size")
    eq(b["default"]["type"], b["second_db"]["type"], "both file binds have one type")
    if b["memory_db"]["type"] == b["default"]["type"]:
        raise TestFailure("memory bind has the same type as a file bind: %r" % b["memory_db"])
    if os.path.isabs(b["memory_db"]["location"]) and "memory" not in b["memory_db"]["location"]:
        raise TestFailure("memory bind location looks like a file: %r" % b["memory_db"])


def test_tables_all_and_per_bind(d):
    c = d.connect()
    r = c.request(".tables")
    _expect_table(r, ["table", "type", "bind", "routed_to", "rule", "warning"])
    eq(sorted(r.rows), [["test1", "table", "default", "default", "catalog", None],
                        ["test2", "table", "second_db", "second_db", "map", None],
                        ["test3", "table", "memory_db", "memory_db", "map", None]], ".tables rows")
    r = c.request(".tables second_db")
    _expect_table(r, ["table", "type", "bind", "routed_to", "rule", "warning"])
    eq(r.rows, [["test2", "table", "second_db", "second_db", "map", None]], ".tables second_db")
    r = c.request(".tables memory_db")
    eq(r.rows, [["test3", "table", "memory_db", "memory_db", "map", None]], ".tables memory_db")
    expect_err(c.request(".tables nosuch"), "NOBIND")
    expect_status(c.request(".ping"), "+OK")


def test_tables_views_and_routed_to():
    # A table no entry maps routes to the bind whose catalog holds it.
    schema = ("CREATE TABLE test3 (id INTEGER PRIMARY KEY, color VARCHAR(64) DEFAULT 'blue');\n"
              "CREATE TABLE stray (x);\n")
    with Daemon(files={"schema_memory_db.sql": schema}) as d:
        c = d.connect()
        expect_status(c.request("CREATE VIEW audit_view AS SELECT color FROM test2"), "+OK changes=0")
        rows = sorted(c.request(".tables").rows)
        eq(rows, [["audit_view", "view", "second_db", "second_db", "pattern", None],
                  ["stray", "table", "memory_db", "memory_db", "catalog", None],
                  ["test1", "table", "default", "default", "catalog", None],
                  ["test2", "table", "second_db", "second_db", "map", None],
                  ["test3", "table", "memory_db", "memory_db", "map", None]], ".tables")
        expect_rows(c.request("SELECT * FROM audit_view"), [])


def test_tables_new_table_appears(d):
    c = d.connect()
    expect_status(c.request("CREATE TABLE audit_log (id INTEGER PRIMARY KEY, msg TEXT)"),
                  "+OK changes=0")
    expect_status(c.request("CREATE TABLE plain (x)"), "+OK changes=0")
    eq(sorted(r[:4] for r in c.request(".tables second_db").rows),
       [["audit_log", "table", "second_db", "second_db"],
        ["test2", "table", "second_db", "second_db"]], ".tables second_db")
    eq(sorted(r[:5] for r in c.request(".tables default").rows),
       [["plain", "table", "default", "default", "catalog"],
        ["test1", "table", "default", "default", "catalog"]], ".tables default")


def test_map(d):
    c = d.connect()
    r = c.request(".map")
    _expect_table(r, ["pattern", "bind"])
    rows = r.rows
    if rows and rows[-1] == ["*", "default"]:   # an explicit fallback row is fine
        rows = rows[:-1]
    eq(rows, [["test2", "second_db"], ["test3", "memory_db"], ["audit_*", "second_db"]],
       ".map rows in file order")


def test_use_routes_tableless_statements(d):
    c = d.connect()
    expect_status(c.request(".route SELECT 1"), "+OK bind=default")
    expect_status(c.request(".use memory_db"), "+OK bind=memory_db")
    expect_status(c.request(".route SELECT 1"), "+OK bind=memory_db")
    # A table-valued function is not a table: this runs on the session bind.
    expect_rows(c.request("SELECT name FROM pragma_table_info('test3') ORDER BY cid"),
                [["id"], ["color"]])
    # Statements naming tables still go to their own bind.
    expect_ok(c.request("INSERT INTO test2 (color) VALUES ('g')"))
    expect_rows(c.request("SELECT color FROM test2"), [["g"]])
    expect_status(c.request(".use second_db"), "+OK bind=second_db")
    expect_rows(c.request("SELECT name FROM pragma_table_info('test2') ORDER BY cid"),
                [["id"], ["color"]])
    expect_status(c.request(".use default"), "+OK bind=default")
    expect_rows(c.request("SELECT name FROM pragma_table_info('test1') ORDER BY cid"),
                [["id"], ["color"]])
    expect_status(c.request("SELECT name FROM pragma_table_info('test3')"), "+OK rows=0")


def test_use_then_sqlite_master_goes_to_session_bind(d):
    # sqlite_master names no user table: it goes to the session's bind.
    c = d.connect()
    q = "SELECT name FROM sqlite_master WHERE type='table'"
    expect_rows(c.request(q), [["test1"]])
    expect_status(c.request(".use memory_db"), "+OK bind=memory_db")
    expect_rows(c.request(q), [["test3"]])
    expect_status(c.request(".use second_db"), "+OK bind=second_db")
    expect_rows(c.request(q), [["test2"]])


def test_use_is_per_connection(d):
    c1 = d.connect()
    c2 = d.connect()
    expect_status(c1.request(".use memory_db"), "+OK bind=memory_db")
    expect_status(c1.request(".route SELECT 1"), "+OK bind=memory_db")
    expect_status(c2.request(".route SELECT 1"), "+OK bind=default")


def test_use_errors(d):
    c = d.connect()
    expect_err(c.request(".use nosuch"), "NOBIND")
    expect_status(c.request(".route SELECT 1"), "+OK bind=default")
    # A bare .use shows the current bind and whether a transaction is open.
    expect_status(c.request(".use"), "+OK bind=default txn=0")
    r = c.request(".use second_db memory_db")
    if r.err_code not in ("ARGS", "NOBIND"):
        raise TestFailure(".use with two names: want -ERR ARGS (or NOBIND), got %r" % r)
    expect_status(c.request(".route SELECT 1"), "+OK bind=default")
    # bind names are case-sensitive
    expect_err(c.request(".use Memory_DB"), "NOBIND")
    expect_status(c.request(".use memory_db\r\n"), "+OK bind=memory_db")


def test_quit_closes(d):
    c = d.connect()
    eq(c.request(".quit").raw, [b"+OK"], ".quit response")
    if not c.wait_closed():
        raise TestFailure("connection still open after .quit")
    expect_status(d.connect().request(".ping"), "+OK")


def test_quit_ignores_pipelined_requests(d):
    c = d.connect()
    c.send(b".ping\n.quit\n.ping\nSELECT 1\n")
    eq(c.read_response().raw, [b"+OK"], "first .ping")
    eq(c.read_response().raw, [b"+OK"], ".quit")
    if not c.wait_closed():
        raise TestFailure("the daemon answered requests sent after .quit: %r"
                          % bytes(c.buf[c.pos:]))


def test_unknown_command(d):
    c = d.connect()
    expect_err(c.request(".nosuch"), "UNKNOWN")
    expect_err(c.request(".nosuch with args"), "UNKNOWN")
    expect_err(c.request(".pingx"), "UNKNOWN")
    expect_status(c.request(".ping"), "+OK")


def test_command_args_errors(d):
    c = d.connect()
    r = c.request(".tables second_db memory_db")
    if r.err_code not in ("ARGS", "NOBIND"):
        raise TestFailure(".tables with two names: want -ERR ARGS (or NOBIND), got %r" % r)
    r = c.request(".route")
    if r.err_code not in ("ARGS", "SYNTAX"):
        raise TestFailure(".route without SQL: want -ERR ARGS or SYNTAX, got %r" % r)
    expect_status(c.request(".ping"), "+OK")


def test_commands_over_unix_socket():
    with Daemon(unix=True) as d:
        c = d.connect(d.unix_socket)
        expect_status(c.request(".ping"), "+OK")
        eq(c.request(".binds").col("name"), ["default", "second_db", "memory_db"])
        expect_status(c.request(".use memory_db"), "+OK bind=memory_db")
        expect_status(c.request("INSERT INTO test3 (color) VALUES ('u')"), "+OK changes=1 last_id=1")
        # the same daemon over TCP sees it
        t = d.connect(("127.0.0.1", d.port))
        expect_rows(t.request("SELECT color FROM test3"), [["u"]])
        eq(c.request(".quit").raw, [b"+OK"])
        if not c.wait_closed():
            raise TestFailure("unix connection still open after .quit")
        eq(c.sock.family, socket.AF_UNIX, "socket family")
