"""A large [tables] map (issue 18): a `.reload` onto 50,000 entries routes
the names it maps (exact entries in any case, qualified ones, an exact
entry over a pattern), and a reloaded file with a duplicate entry among
them is refused with both line numbers while the running map stays.
The map is indexed by hash (conf/config.c, config_rule_find): loading it
costs time linear in its size (tests/bench/RESULTS.md has the figures)."""

import re

from harness import DEFAULT_TABLES, TestFailure, Daemon, eq, expect_err, expect_ok, expect_status

BINDS = ("default", "second_db", "memory_db")
N = 50000


def _big_map(prefix):
    """DEFAULT_TABLES, then N entries: every seventh a qualified
    MAIN.<PREFIX>n in capitals, the others <prefix>n; bind n % 3."""
    entries = []
    for i in range(N):
        name = ("MAIN.%s%d" % (prefix.upper(), i)) if i % 7 == 0 else "%s%d" % (prefix, i)
        entries.append((name, BINDS[i % 3]))
    return list(DEFAULT_TABLES) + entries + [("audit_log", "memory_db")]


def _route(c, table, bind, rule):
    """.route of a SELECT from `table`: one row (its name as parsed, the
    bind, the rule) and +OK bind=BIND."""
    r = c.request(".route SELECT * FROM %s" % table)
    expect_status(r, "+OK bind=%s" % bind)
    eq(len(r.rows), 1, ".route rows of %s" % table)
    eq(r.rows[0][1:], [bind, rule], ".route of %s" % table)


def _line_of(d, entry):
    """The line number of `entry` ("name = bind") in the daemon's file."""
    with open(d.config_path) as f:
        for n, line in enumerate(f, 1):
            if line.rstrip("\n") == entry:
                return n
    raise TestFailure("%r is not in %s" % (entry, d.config_path))


def test_reload_onto_big_map():
    with Daemon() as d:
        c = d.connect()
        _route(c, "big1", "default", "session")
        d.rewrite_config(tables=_big_map("big"))
        expect_ok(c.request(".reload"))
        _route(c, "big1", "second_db", "map")
        _route(c, "big%d" % (N - 1), BINDS[(N - 1) % 3], "map")
        _route(c, "big25001", BINDS[25001 % 3], "map")
        _route(c, "BIG25001", BINDS[25001 % 3], "map")       # names compare without case
        _route(c, "main.big700", BINDS[700 % 3], "map")      # written MAIN.BIG700
        _route(c, "Main.Big700", BINDS[700 % 3], "map")
        _route(c, "big700", "default", "session")            # mapped qualified only
        _route(c, "main.big701", BINDS[701 % 3], "map")      # the bare entry, through main
        _route(c, "big%d" % N, "default", "session")         # one past the map
        _route(c, "audit_log", "memory_db", "map")           # exact, after the pattern
        _route(c, "audit_x", "second_db", "pattern")
        _route(c, "test2", "second_db", "map")
        eq(len(expect_ok(c.request(".map")).rows), len(DEFAULT_TABLES) + N + 1, ".map rows")
        # A statement over the map's tables runs where the map sends it.
        expect_ok(c.request("SELECT count(*) FROM test2"))


def test_reload_duplicate_in_big_map_refused():
    with Daemon() as d:
        c = d.connect()
        d.rewrite_config(tables=_big_map("big"))
        expect_ok(c.request(".reload"))
        # The next file: another map, with entry 30,000 again near its end
        # in other case.
        tables = _big_map("new")
        tables.insert(len(tables) - 1, ("NEW30000", "memory_db"))
        d.rewrite_config(tables=tables)
        first = _line_of(d, "new30000 = %s" % BINDS[30000 % 3])
        second = _line_of(d, "NEW30000 = memory_db")
        r = c.request(".reload")
        expect_err(r, "CONFIG")
        want = "%s:%d: duplicate table rule 'new30000' (first on line %d)" % (d.config_path, second, first)
        if want not in r.err_msg:
            raise TestFailure("want %r in the refusal, got %r" % (want, r.err_msg))
        if not re.search(r"reload refused: .*duplicate table rule 'new30000' \(first on line %d\)" % first,
                         d.stderr_text()):
            raise TestFailure("refusal not logged:\n%s" % d.stderr_tail())
        # The running map stays.
        _route(c, "big1", "second_db", "map")
        _route(c, "main.big700", BINDS[700 % 3], "map")
        _route(c, "new1", "default", "session")
        eq(len(expect_ok(c.request(".map")).rows), len(DEFAULT_TABLES) + N + 1, ".map rows")
