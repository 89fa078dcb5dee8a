"""Statements across binds against one SQLite database (issue 15): a few
hundred generated statements (joins of two and three binds, subqueries,
IN, EXISTS, CTEs, UNION, aggregates, ORDER BY/LIMIT, and writes with one
target reading the others) over tables spread across a file bind, a second
file bind and the in-memory bind give the same answers, and leave the same
data, as on one SQLite database holding copies of all tables."""

import random
import sqlite3

from harness import Daemon, TestFailure, eq, expect_ok

TABLES = {"ta": "default", "tb": "second_db", "tc": "memory_db"}
COLS = ["id", "k", "s", "r"]
WORDS = ["ant", "bee", "cat", "dog", "eel", None]


def setup(c, ref, rnd):
    for t in TABLES:
        ddl = "CREATE TABLE %s (id INTEGER PRIMARY KEY, k INTEGER, s TEXT, r REAL)" % t
        expect_ok(c.request(ddl))
        ref.execute(ddl)
        for i in range(1, rnd.randint(15, 30)):
            row = (i, rnd.choice([None, rnd.randint(0, 9)]), rnd.choice(WORDS),
                   rnd.choice([None, rnd.randint(0, 40) / 4.0]))
            sql = "INSERT INTO %s VALUES (?, ?, ?, ?)" % t
            ref.execute(sql, row)
            r = c.inline(sql, list(row))
            if not r.ok:
                raise TestFailure("insert: %r" % r)


def text(v):
    if v is None:
        return None
    if isinstance(v, float):
        return repr(v)
    return str(v)


def pick2(rnd):
    a, b = rnd.sample(sorted(TABLES), 2)
    return a, b


def cond(rnd, x, y):
    return rnd.choice([
        "%s.k = %s.k" % (x, y), "%s.s = %s.s" % (x, y), "%s.id = %s.k" % (x, y),
        "%s.k < %s.k + 2" % (x, y), "%s.r >= %s.r" % (x, y), "%s.s IS %s.s" % (x, y),
    ])


def gen_select(rnd):
    a, b = pick2(rnd)
    third = [t for t in TABLES if t not in (a, b)][0]
    shape = rnd.randrange(10)
    if shape == 0:
        return "SELECT %s.id, %s.id FROM %s JOIN %s ON %s" % (a, b, a, b, cond(rnd, a, b))
    if shape == 1:
        return ("SELECT %s.s, %s.k, %s.r FROM %s JOIN %s ON %s LEFT JOIN %s ON %s"
                % (a, b, third, a, b, cond(rnd, a, b), third, cond(rnd, b, third)))
    if shape == 2:
        return "SELECT id, s FROM %s WHERE k IN (SELECT k FROM %s WHERE r > %d)" % (a, b, rnd.randint(0, 8))
    if shape == 3:
        return ("SELECT id FROM %s WHERE %sEXISTS (SELECT 1 FROM %s WHERE %s)"
                % (a, rnd.choice(["", "NOT "]), b, cond(rnd, b, a)))
    if shape == 4:
        return ("SELECT %s.s, count(*), sum(%s.k), max(%s.r) FROM %s JOIN %s ON %s GROUP BY %s.s"
                % (a, b, b, a, b, cond(rnd, a, b), a))
    if shape == 5:
        return "SELECT s, k FROM %s %s SELECT s, k FROM %s" % (
            a, rnd.choice(["UNION", "UNION ALL", "INTERSECT", "EXCEPT"]), b)
    if shape == 6:
        return ("WITH x AS (SELECT k, s FROM %s WHERE k IS NOT NULL) SELECT x.s, %s.id FROM x JOIN %s "
                "ON x.k = %s.k" % (a, b, b, b))
    if shape == 7:
        n = rnd.randint(1, 5)
        return ("SELECT %s.id, %s.id FROM %s, %s WHERE %s ORDER BY 1, 2 LIMIT %d OFFSET %d"
                % (a, b, a, b, cond(rnd, a, b), n, rnd.randint(0, 3)))
    if shape == 8:
        return ("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 9) "
                "SELECT i, (SELECT count(*) FROM %s WHERE k = i), (SELECT min(id) FROM %s WHERE k = i) FROM n"
                % (a, b))
    return ("SELECT (SELECT count(*) FROM %s), (SELECT total(r) FROM %s), (SELECT group_concat(s) FROM "
            "(SELECT s FROM %s ORDER BY id))" % (a, b, third))


def gen_write(rnd):
    a, b = pick2(rnd)
    shape = rnd.randrange(4)
    if shape == 0:
        return ("INSERT INTO %s (k, s, r) SELECT %s.k, %s.s, %s.r FROM %s JOIN %s ON %s "
                "ORDER BY %s.id, %s.id LIMIT 4" % (a, b, b, b, b, a, cond(rnd, a, b), b, a))
    if shape == 1:
        return ("UPDATE %s SET k = coalesce(k, 0) + 1, s = (SELECT max(s) FROM %s) WHERE id IN "
                "(SELECT k FROM %s)" % (a, b, b))
    if shape == 2:
        return "DELETE FROM %s WHERE EXISTS (SELECT 1 FROM %s WHERE %s.id = %s.k AND %s.k > %d)" % (
            a, b, b, a, b, rnd.randint(3, 9))
    return ("INSERT INTO %s (id, k, s) SELECT id, k, s FROM %s WHERE true ON CONFLICT (id) DO UPDATE SET "
            "k = excluded.k, s = excluded.s" % (a, b))


def compare(c, ref, sql, ordered):
    want = [[text(v) for v in row] for row in ref.execute(sql).fetchall()]
    r = c.request(sql)
    if not r.ok:
        raise TestFailure("%s\n  daemon: %s" % (sql, r.status))
    got = [list(row) for row in r.rows]
    if not ordered:
        want.sort(key=repr)
        got.sort(key=repr)
    if got != want:
        raise TestFailure("%s\n  daemon:    %r\n  reference: %r" % (sql, got, want))


def test_random_statements_match_one_database():
    rnd = random.Random(1515)
    ref = sqlite3.connect(":memory:", isolation_level=None)
    tables = [(t, b) for t, b in TABLES.items() if b != "default"] + [("test2", "second_db"),
                                                                       ("test3", "memory_db")]
    with Daemon(tables=tables) as d:
        c = d.connect()
        setup(c, ref, rnd)
        writes = 0
        for _ in range(300):
            if rnd.randrange(6) == 0:
                writes += 1
                sql = gen_write(rnd)
                try:
                    ref.execute(sql)
                    want = "changes=%d" % ref.execute("SELECT changes()").fetchone()[0]
                except sqlite3.Error as e:
                    want = "error: %s" % e
                r = c.request(sql)
                got = "changes=%s" % r.facts.get("changes") if r.ok else "error: %s" % r.status
                if got.split(":")[0] != want.split(":")[0] or (r.ok and got != want):
                    raise TestFailure("%s\n  daemon: %s\n  reference: %s" % (sql, got, want))
                for t in TABLES:
                    compare(c, ref, "SELECT * FROM %s" % t, False)
            else:
                sql = gen_select(rnd)
                compare(c, ref, sql, "ORDER BY 1, 2 LIMIT" in sql)
        fed = [row for row in c.request(".stats").rows if row[0] == "*federation*"][0]
        if int(fed[1]) < 250 or writes < 20:
            raise TestFailure("the federation pool ran %s statements, %d writes" % (fed[1], writes))


test_random_statements_match_one_database.timeout = 180
