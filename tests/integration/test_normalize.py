"""Literal normalisation (issue 18): SQLite statements that differ only in
their literal values share one prepared statement, the literals bound as
parameters, and that changes no answer: a few hundred generated
statements (literals of every kind, in WHERE, VALUES, SET, expressions,
CASE, IN lists, subqueries, result columns, ORDER BY, LIKE, LIMIT, with
and without the request's own parameters, inside and outside
transactions, on the in-memory and a file bind) answer byte for byte the
same with `normalize_literals = on` as with `off`: headers, rows, types,
status lines and errors."""

import random
import time

from harness import DEFAULT_SCHEMAS, DEFAULT_TABLES, Daemon, TestFailure, eq, expect_ok, expect_rows

TABLES = [("n_*", "memory_db"), ("f_*", "default"), ("test2", "second_db"), ("test3", "memory_db")]

SCHEMA = [
    "CREATE TABLE {p}t (id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, a, flag INTEGER, "
    "tx TEXT COLLATE NOCASE, num NUMERIC)",
    "CREATE INDEX {p}t_s ON {p}t (s)",
    "CREATE INDEX {p}t_tx ON {p}t (tx)",
    "CREATE INDEX {p}t_part ON {p}t (i) WHERE flag = 1",
    "CREATE TABLE {p}u (id INTEGER PRIMARY KEY, k TEXT UNIQUE, n INTEGER CHECK (n >= 0), t TEXT)",
]

INTS = ["0", "1", "5", "-5", "42", "007", "9223372036854775807", "-9223372036854775808",
        "9223372036854775808", "18446744073709551616", "2147483648", "3"]
REALS = ["1.5", ".5", "1.", "1e3", "1e-3", "2.0", "-0.0", "1E+2"]
HEX = ["0x10", "0X7FFFFFFFFFFFFFFF", "0xFFFFFFFFFFFFFFFF"]
STRS = ["''", "'a'", "'A'", "'it''s'", "'5'", "' 5'", "'5.0'", "'1e3'", "'x%'", "'%'", "'ab_'",
        "'-- not a comment'", "'/* nor this */'", "'\u00e9t\u00e9'", "'a\tb'", "'?1'", "'NULL'",
        "'abc'", "'ABC'", "'0x10'"]
BLOBS = ["x''", "X'00'", "x'0aff'", "X'414243'", "x'35'"]
OTHER = ["NULL", "TRUE", "FALSE", "CURRENT_DATE IS NOT NULL"]


def _lit(rng):
    pool = rng.choice([INTS, INTS, STRS, STRS, BLOBS, REALS, HEX, OTHER])
    return rng.choice(pool)


def _col(rng):
    return rng.choice(["i", "r", "s", "b", "a", "flag", "tx", "num", "id"])


def _pred(rng, p, depth=0):
    c, lit = _col(rng), _lit(rng)
    kinds = [
        lambda: "%s = %s" % (c, lit),
        lambda: "%s <> %s" % (c, lit),
        lambda: "%s > %s" % (c, lit),
        lambda: "%s IN (%s, %s, %s)" % (c, lit, _lit(rng), _lit(rng)),
        lambda: "%s BETWEEN %s AND %s" % (c, _lit(rng), _lit(rng)),
        lambda: "%s IS %s" % (c, lit),
        lambda: "typeof(%s) = %s" % (lit, rng.choice(["'integer'", "'text'", "'real'", "'blob'"])),
        lambda: "%s + %s > %s" % (c, _lit(rng), _lit(rng)),
        lambda: "coalesce(%s, %s) = %s" % (c, _lit(rng), _lit(rng)),
        lambda: "CASE WHEN %s > %s THEN %s ELSE %s END = %s" % (c, _lit(rng), _lit(rng), _lit(rng), _lit(rng)),
        lambda: "s LIKE %s" % rng.choice(STRS),
        lambda: "tx GLOB %s" % rng.choice(STRS),
        lambda: "s = %s COLLATE NOCASE" % rng.choice(STRS),
        lambda: "i = %s AND flag = 1" % rng.choice(INTS),
        lambda: "id IN (SELECT id FROM %su WHERE n > %s)" % (p, rng.choice(INTS)),
        lambda: "EXISTS (SELECT 1 FROM %su WHERE k = %s)" % (p, rng.choice(STRS)),
        lambda: "length(%s) = %s" % (lit, rng.choice(INTS)),
        lambda: "%s = %s" % (lit, _lit(rng)),
        lambda: "abs(%s) >= 0" % lit,
        lambda: "substr(s, %s, %s) = %s" % (rng.choice(INTS), rng.choice(INTS), rng.choice(STRS)),
        lambda: "json_extract('{\"a\": 5}', '$.a') = %s" % rng.choice(INTS),
    ]
    out = rng.choice(kinds)()
    if depth < 2 and rng.random() < 0.3:
        out = "(%s) %s (%s)" % (out, rng.choice(["AND", "OR"]), _pred(rng, p, depth + 1))
    if rng.random() < 0.1:
        out = "NOT (%s)" % out
    return out


def _select(rng, p):
    t = p + "t"
    kinds = [
        lambda: "SELECT id, i, s FROM %s WHERE %s" % (t, _pred(rng, p)),
        lambda: "SELECT * FROM %s WHERE %s ORDER BY id" % (t, _pred(rng, p)),
        lambda: "SELECT %s, %s AS named, %s + i FROM %s WHERE %s" % (_lit(rng), _lit(rng), _lit(rng), t,
                                                                   _pred(rng, p)),
        lambda: "SELECT id, (SELECT count(*) FROM %su WHERE n > %s) FROM %s WHERE id = %s" % (
            p, rng.choice(INTS), t, rng.choice(INTS)),
        lambda: "SELECT i, count(*) FROM %s WHERE %s GROUP BY 1 ORDER BY 2, 1" % (t, _pred(rng, p)),
        lambda: "SELECT s FROM %s WHERE %s ORDER BY %s LIMIT %s OFFSET %s" % (
            t, _pred(rng, p), rng.choice(["1", "id", "2", "'x'"]), rng.choice(INTS + ["'2'", "1.5"]),
            rng.choice(["0", "1", "-1"])),
        lambda: "SELECT * FROM (SELECT id, i FROM %s WHERE %s) WHERE i > %s" % (t, _pred(rng, p),
                                                                             rng.choice(INTS)),
        lambda: "WITH c(x) AS (VALUES (%s), (%s)) SELECT x, typeof(x) FROM c WHERE x = %s" % (
            _lit(rng), _lit(rng), _lit(rng)),
        lambda: "SELECT id FROM %s WHERE %s UNION SELECT id FROM %su WHERE k = %s ORDER BY 1" % (
            t, _pred(rng, p), p, rng.choice(STRS)),
        lambda: "SELECT id, i FROM %s INDEXED BY %st_part WHERE i = %s AND flag = 1" % (t, p, rng.choice(INTS)),
        lambda: "SELECT id FROM %s WHERE flag = 1 AND i > %s" % (t, rng.choice(INTS)),
        lambda: "SELECT max(id) FROM %s WHERE tx = %s" % (t, rng.choice(STRS)),
        lambda: "SELECT * FROM %s WHERE s LIKE %s ESCAPE '!'" % (t, rng.choice(STRS)),
        lambda: "SELECT id FROM %s WHERE i = %s %s" % (t, rng.choice(STRS), rng.choice(STRS)),  # syntax error
        lambda: "SELECT id FROM 'n_t' WHERE id = %s" % rng.choice(INTS),  # a string as the table name
        lambda: "SELECT id FROM %s AS 'x' WHERE x.id = %s" % (t, rng.choice(INTS)),
        lambda: "SELECT id FROM %s WHERE likelihood(i = %s, 0.5)" % (t, rng.choice(INTS)),
        lambda: "SELECT id FROM %s WHERE i = %s +" % (t, rng.choice(INTS)),  # incomplete
        lambda: "SELECT id FROM %s WHERE nosuch = %s" % (t, _lit(rng)),
        lambda: "SELECT id FROM %s WHERE i = %s; SELECT %s" % (t, rng.choice(INTS), rng.choice(INTS)),
        lambda: "SELECT 9223372036854775807 + %s FROM %s WHERE id = 1" % (rng.choice(INTS), t),
        lambda: "SELECT id FROM %s WHERE i = abs(%s)" % (t, rng.choice(["-9223372036854775808", "-5", "5"])),
        lambda: "SELECT printf('%%d-%%s', %s, %s) FROM %s WHERE id = %s" % (
            rng.choice(INTS), rng.choice(STRS), t, rng.choice(INTS)),
        lambda: "SELECT id FROM %s WHERE printf('%%s', s) = %s" % (t, rng.choice(STRS)),
        lambda: "SELECT value FROM json_each(%s) WHERE value > %s" % (
            rng.choice(["'[1, 2, 3]'", "'{\"a\": 1}'", "'bad'"]), rng.choice(INTS)),
        lambda: "SELECT name FROM pragma_table_info(%s) WHERE cid > %s" % (
            rng.choice(["'%st'" % p, "'%su'" % p, "'nosuch'"]), rng.choice(["0", "1"])),
        lambda: "VALUES (%s, %s)" % (_lit(rng), _lit(rng)),
    ]
    return rng.choice(kinds)()


def _write(rng, p, seq):
    t, u = p + "t", p + "u"
    kinds = [
        lambda: "INSERT INTO %s (i, r, s, b, a, flag, tx, num) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)" % (
            t, rng.choice(INTS), rng.choice(REALS + INTS), rng.choice(STRS + INTS), rng.choice(BLOBS + STRS),
            _lit(rng), rng.choice(["0", "1", "NULL"]), rng.choice(STRS), _lit(rng)),
        lambda: "INSERT INTO %s (k, n, t) VALUES ('k%d', %s, %s)" % (u, seq, rng.choice(INTS),
                                                                     _lit(rng)),
        lambda: "INSERT INTO %s (k, n) VALUES (%s, %s)" % (u, rng.choice(STRS), rng.choice(INTS)),
        lambda: "INSERT OR REPLACE INTO %s (k, n) VALUES (%s, %s)" % (u, rng.choice(STRS), rng.choice(INTS)),
        lambda: "INSERT INTO %s (k, n) VALUES ('u%d', 1) ON CONFLICT (k) DO UPDATE SET n = n + %s" % (
            u, seq % 7, rng.choice(INTS)),
        lambda: "UPDATE %s SET s = %s, num = %s WHERE id = %s" % (t, rng.choice(STRS), _lit(rng),
                                                                 rng.choice(INTS)),
        lambda: "UPDATE %s SET n = n + %s WHERE k = %s" % (u, rng.choice(INTS), rng.choice(STRS)),
        lambda: "DELETE FROM %s WHERE id = %s AND i = %s" % (t, rng.choice(INTS), rng.choice(INTS)),
        lambda: "INSERT INTO %s (i, s) VALUES (%s, %s) RETURNING id, i, s, %s" % (
            t, rng.choice(INTS), rng.choice(STRS), _lit(rng)),
        lambda: "INSERT INTO %s ('i') VALUES (%s)" % (t, rng.choice(INTS)),
        lambda: "INSERT INTO %s (i) SELECT %s UNION ALL SELECT %s" % (t, rng.choice(INTS), rng.choice(INTS)),
        lambda: "INSERT INTO %s (i, s) VALUES (%s, %s), (%s, %s)" % (
            t, rng.choice(INTS), rng.choice(STRS), rng.choice(INTS), rng.choice(STRS)),
    ]
    return rng.choice(kinds)()


def _with_params(rng, p):
    """A request with the client's own parameters mixed with literals."""
    t = p + "t"
    kinds = [
        ("SELECT id, s FROM %s WHERE i = ? AND s <> %s" % (t, rng.choice(STRS)), [rng.choice([1, 5, 42])]),
        ("SELECT id FROM %s WHERE i > ?2 AND s = %s AND id > ?1" % (t, rng.choice(STRS)), [0, 3]),
        ("SELECT ?, id FROM %s WHERE i = %s" % (t, rng.choice(INTS)), ["x"]),
        ("SELECT id FROM %s WHERE i = %s AND s = ?" % (t, rng.choice(INTS)), ["abc"]),
        ("SELECT id FROM %s WHERE i = %s AND s = ?" % (t, rng.choice(INTS)), []),  # PARAMS error
        ("SELECT id FROM %s WHERE i = :x AND s = %s" % (t, rng.choice(STRS)), [5]),
        ("SELECT id FROM %s WHERE i = #x AND s = %s" % (t, rng.choice(STRS)), rng.choice([[], [5]])),
        ("SELECT id FROM %s WHERE i = %s AND s = $a$b$a$" % (t, rng.choice(INTS)), rng.choice([[], ["b"]])),
        ("UPDATE %s SET s = ? WHERE id = %s" % (t, rng.choice(INTS)), ["from-param"]),
    ]
    return rng.choice(kinds)


def _run_all(conns, send):
    return [send(c) for c in conns]


def _compare(seed, count):
    rng = random.Random(seed)
    on = Daemon(tables=TABLES, server={"normalize_literals": "on"})
    off = Daemon(tables=TABLES, server={"normalize_literals": "off"})
    try:
        conns = [on.connect(), off.connect()]
        for p in ("n_", "f_"):
            for sql in SCHEMA:
                for c in conns:
                    expect_ok(c.request(sql.format(p=p)))
        in_txn = False
        seen = 0
        for n in range(count):
            p = rng.choice(["n_", "f_"])
            r = rng.random()
            if r < 0.05 and not in_txn:
                reqs = [("BEGIN", None)]
                in_txn = True
            elif r < 0.10 and in_txn:
                reqs = [(rng.choice(["COMMIT", "ROLLBACK"]), None)]
                in_txn = False
            elif r < 0.40:
                reqs = [(_write(rng, p, n), None)]
            elif r < 0.50:
                reqs = [_with_params(rng, p)]
            else:
                reqs = [(_select(rng, p), None)]
            for sql, params in reqs:
                if params is None:
                    answers = [c.request(sql) for c in conns]
                else:
                    answers = [c.bulk(sql, params) for c in conns]
                if answers[0].raw != answers[1].raw:
                    raise TestFailure("seed %d, statement %d: %s%s\n  on:  %r\n  off: %r" % (
                        seed, n, sql, "" if params is None else " with %r" % (params,), answers[0], answers[1]))
                seen += 1
        # The final contents are the same too.
        for p in ("n_", "f_"):
            for sql in ("SELECT * FROM %st ORDER BY id" % p, "SELECT * FROM %su ORDER BY id" % p):
                a, b = [expect_ok(c.request(sql)) for c in conns]
                eq(a.raw, b.raw, sql)
        return seen
    finally:
        on.stop()
        off.stop()


def test_normalized_answers_equal_plain_ones():
    for seed in (1, 2, 3):
        _compare(seed, 250)


def test_result_column_names_and_types_kept(d):
    c = d.connect()
    expect_ok(c.request("CREATE TABLE n_names (id INTEGER PRIMARY KEY, v TEXT)"))
    expect_ok(c.request("INSERT INTO n_names (v) VALUES ('a')"))
    r = expect_ok(c.request("SELECT 1, 'a', x'00', 1 + id, v || 'b' FROM n_names WHERE id = 1"))
    eq(r.names, ["1", "'a'", "x'00'", "1 + id", "v || 'b'"], "column names")
    r = expect_ok(c.request("SELECT * FROM (SELECT 7, 'q' FROM n_names WHERE id = 1)"))
    eq(r.names, ["7", "'q'"], "names through a subquery")
    r = expect_ok(c.request("INSERT INTO n_names (v) VALUES ('c') RETURNING id, 5, v"))
    eq(r.names, ["id", "5", "v"], "RETURNING names")
    expect_rows(c.request("SELECT typeof(5), typeof('5'), typeof(x'05'), 5 = '5' FROM n_names WHERE id = 1"),
                [["integer", "text", "blob", "0"]])
    expect_rows(c.request("SELECT count(*) FROM n_names WHERE id = 1 AND 5 = '5'"), [["0"]])


def _prepares(setting, n):
    """How many statements SQLite prepared (the daemon's debug log says
    each) for n statements that differ only in their literals, read on
    the loop and written by the workers."""
    with Daemon(tables=TABLES, server={"normalize_literals": setting, "log_level": "debug"}) as d:
        c = d.connect()
        expect_ok(c.request("CREATE TABLE n_keys (id INTEGER PRIMARY KEY, v TEXT)"))
        before = d.stderr_text().count("statement prepared")
        for k in range(1, n + 1):
            expect_ok(c.request("INSERT INTO n_keys (id, v) VALUES (%d, 'v%d')" % (k, k)))
            expect_rows(c.request("SELECT v FROM n_keys WHERE id = %d" % k), [["v%d" % k]])
            expect_rows(c.request("SELECT v FROM n_keys WHERE v = 'v%d' AND id >= %d" % (k, k)), [["v%d" % k]])
        return d.stderr_text().count("statement prepared") - before


def test_literal_variants_share_one_prepared_statement():
    # Normalised, each of the three shapes is prepared at most twice per
    # connection (once uncached, once for the cache: the bind's 4 workers
    # and the loop's quick-read connection); plain, every variant is.
    n = 60
    shared, plain = _prepares("on", n), _prepares("off", n)
    eq(plain >= 3 * n, True, "prepares without normalisation: %d" % plain)
    eq(shared <= 3 * 2 * 5, True, "prepares with normalisation: %d" % shared)


def test_string_table_names_route_by_their_value():
    # The route cache shares a decision between statements that differ only
    # in literals, but a table name written as a string routes by its value.
    # second_db holds a table of lit_b's name too, with other rows: a
    # statement routed there by mistake would read those.
    schema = DEFAULT_SCHEMAS["second_db"] + "\nCREATE TABLE lit_b (v TEXT);\nINSERT INTO lit_b VALUES ('wrong bind');\n"
    with Daemon(tables=DEFAULT_TABLES + [("lit_a", "second_db"), ("lit_b", "memory_db")],
                files={"schema_second_db.sql": schema}) as d:
        c = d.connect()
        expect_ok(c.request("CREATE TABLE lit_a (v TEXT)"))
        expect_ok(c.request("CREATE TABLE lit_b (v TEXT)"))
        expect_ok(c.request("INSERT INTO lit_a (v) VALUES ('a')"))
        expect_ok(c.request("INSERT INTO lit_b (v) VALUES ('b')"))
        for _ in range(2):
            expect_rows(c.request("SELECT v FROM 'lit_a' WHERE 1 = 1"), [["a"]])
            expect_rows(c.request("SELECT v FROM 'lit_b' WHERE 1 = 1"), [["b"]])
            expect_rows(c.request("SELECT v FROM \"lit_b\" WHERE 2 = 2"), [["b"]])
