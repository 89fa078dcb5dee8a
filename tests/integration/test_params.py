"""Parameters: the inline ?N form and the $ bulk form, placeholder styles,
counting, and that parameters are data, never SQL."""

import time

from harness import (TestFailure, encode_bulk, encode_inline, eq, expect_err,
                     expect_ok, expect_rows, expect_status)


def _seed(c):
    for color in ("red", "red", "blue"):
        expect_ok(c.request("INSERT INTO test1 (color) VALUES ('%s')" % color))


def test_inline_protocol_example(d):
    c = d.connect()
    _seed(c)
    c.send(b"?2 SELECT id FROM test1 WHERE color = ? AND id > ?\ntred\ni0\n")
    expect_rows(c.read_response(), [["1"], ["2"]], [("id", "INTEGER")])
    expect_rows(c.inline("SELECT id FROM test1 WHERE color = ? AND id > ?", ["red", 1]), [["2"]])


def test_bulk_with_parameters(d):
    c = d.connect()
    _seed(c)
    sql = b"SELECT id\n  FROM test1\n WHERE color = ?\n   AND id > ?"
    c.send(b"$%d 2\n" % len(sql) + sql + b"\ntblue\ni0\n")
    expect_rows(c.read_response(), [["3"]])
    expect_rows(c.bulk("SELECT count(*) AS n FROM test1 WHERE color = ?", ["red"]), [["2"]])


def test_zero_parameters(d):
    c = d.connect()
    expect_rows(c.request("?0 SELECT 7 AS n"), [["7"]])
    expect_rows(c.bulk("SELECT 8 AS n", []), [["8"]])


def test_named_placeholders(d):
    c = d.connect()
    expect_rows(c.inline("SELECT :a AS a, @b AS b, $c AS c", [1, "two", None]),
                [["1", "two", None]])
    # a name used twice takes the position of its first appearance
    expect_rows(c.inline("SELECT :a AS x, :b AS y, :a AS z", ["A", "B"]), [["A", "B", "A"]])
    expect_rows(c.inline("SELECT ?1 AS x, ?2 AS y, ?1 AS z", ["p", "q"]), [["p", "q", "p"]])
    expect_rows(c.bulk("SELECT $x AS x,\n       @y AS y", [1.5, b"\x01"]), [["1.5", b"\x01"]])
    expect_status(c.inline("INSERT INTO test3 (id, color) VALUES (:id, :color)", [5, "green"]),
                  "+OK changes=1 last_id=5")
    expect_rows(c.request("SELECT id, color FROM test3"), [["5", "green"]])


def test_every_parameter_type(d):
    c = d.connect()
    r = c.inline("SELECT ?, ?, ?, ?, ?", [None, -7, 2.5, "t\tx", b"\xde\xad"])
    expect_rows(r, [[None, "-7", "2.5", "t\tx", b"\xde\xad"]])
    r = c.bulk("SELECT typeof(?), typeof(?), typeof(?), typeof(?), typeof(?)",
               [None, -7, 2.5, "t", b"\xde\xad"])
    expect_rows(r, [["null", "integer", "real", "text", "blob"]])


def test_wrong_parameter_count(d):
    c = d.connect()
    cases = [
        encode_inline("SELECT ?, ?", [1]),
        encode_inline("SELECT ?", [1, 2]),
        encode_inline("SELECT 1", [1]),
        encode_inline("SELECT :a, :b", ["x"]),
        b"SELECT ?\n",
        b"SELECT * FROM test1 WHERE id = :id\n",
        encode_bulk("SELECT ?"),
        encode_bulk("SELECT ?", []),
        encode_bulk("SELECT 1", [5]),
        encode_bulk("SELECT ?, ?, ?", [1, 2]),
    ]
    problems = []
    for req in cases:
        c.send(req)
        r = c.read_response()
        if r.err_code != "PARAMS":
            problems.append("%r: want -ERR PARAMS, got %r" % (req, r))
        r = c.request(".ping")
        if r.raw != [b"+OK"]:
            problems.append("after %r: out of step, .ping got %r" % (req, r))
    if problems:
        raise TestFailure("\n".join(problems))


def test_bad_inline_headers(d):
    c = d.connect()
    problems = []
    for req in (b"?x SELECT 1\n", b"?\n", b"?-1 SELECT 1\n", b"?1x SELECT ?\n"):
        c.send(req)
        r = c.read_response()
        if r.err_code != "PROTO":
            problems.append("%r: want -ERR PROTO, got %r" % (req, r))
        r = c.request(".ping")
        if r.raw != [b"+OK"]:
            problems.append("after %r: .ping got %r" % (req, r))
    if problems:
        raise TestFailure("\n".join(problems))


def test_bad_parameter_line_keeps_step(d):
    # A bad first parameter line: the remaining parameter lines are skipped,
    # they are not taken for requests.
    c = d.connect()
    c.send(b"?3 SELECT ?, ?, ?\nzbad\nSELECT 666\n.quit\n.ping\n")
    expect_err(c.read_response(), "PROTO")
    eq(c.read_response().raw, [b"+OK"], ".ping after the bad request")
    expect_rows(c.request("SELECT 1 AS one"), [["1"]])


def test_parameters_split_across_packets(d):
    c = d.connect()
    c.send(b"?2 SELECT ? AS a, ? AS b\n")
    time.sleep(0.2)
    c.send(b"i1\n")
    time.sleep(0.2)
    c.send(b"tt")
    time.sleep(0.2)
    if c.readable_now():
        raise TestFailure("response before the last parameter line arrived")
    c.send(b"wo\n")
    expect_rows(c.read_response(), [["1", "two"]])


def test_parameters_route_like_sql(d):
    c = d.connect()
    expect_status(c.inline("INSERT INTO test2 (color) VALUES (?)", ["viaparam"]),
                  "+OK changes=1 last_id=1")
    expect_status(c.bulk("INSERT INTO test3 (color) VALUES (?)", ["viabulk"]),
                  "+OK changes=1 last_id=1")
    eq(d.file_query("second.db", "SELECT color FROM test2"), [("viaparam",)])
    expect_rows(c.request("SELECT color FROM test3"), [["viabulk"]])
    expect_rows(c.inline("SELECT count(*) FROM test1 WHERE color = ?", ["viaparam"]), [["0"]])


def test_injection_attempt_is_data(d):
    c = d.connect()
    evil = "x'); DROP TABLE test1; --"
    expect_status(c.inline("INSERT INTO test1 (color) VALUES (?)", [evil]),
                  "+OK changes=1 last_id=1")
    expect_rows(c.inline("SELECT id FROM test1 WHERE color = ?", [evil]), [["1"]])
    expect_rows(c.request("SELECT color FROM test1"), [[evil]])
    eq(sorted(r[:4] for r in c.request(".tables default").rows), [["test1", "table", "default", "default"]])
    eq(d.file_query("app.db", "SELECT color FROM test1"), [(evil,)])
    # A parameter naming another bind's table does not change routing.
    expect_rows(c.inline("SELECT count(*) FROM test1 WHERE color = ?", ["x FROM test2"]), [["0"]])
