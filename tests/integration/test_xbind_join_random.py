"""Joins of SQLite tables with a PostgreSQL table and the semi-join filter
the executor adds to them (issue 15, daemon/federate_semi.c): a few hundred
generated joins (inner, LEFT both ways, comma and CROSS joins with WHERE,
three tables, subqueries, aliases or none, OR, NULL keys, text keys against
NOCASE columns, a TEXT column holding '5' or '05' against integer keys,
PostgreSQL text against SQLite integers, conditions on the PostgreSQL
table alone in a LEFT JOIN's ON clause, an untyped column) give the same
rows as one SQLite database holding copies of the tables, with the filter
applied to many of them (.plan's semijoins=N); the filter sends the keys
to PostgreSQL in one query (= ANY), and is not added when the SQLite table
is too big or a view."""

import random
import sqlite3

from harness import TestFailure, eq, expect_ok
from pgfixture import USER, pg_daemon, shared
from test_xbind_random import text

PG_DDL = "CREATE TABLE pj (id integer PRIMARY KEY, k integer, t text, v varchar(10))"
REF_PG_DDL = "CREATE TABLE pj (id INTEGER PRIMARY KEY, k INTEGER, t TEXT, v VARCHAR(10))"
SQLITE_DDL = {
    "sa": "CREATE TABLE sa (id INTEGER PRIMARY KEY, k INTEGER, t TEXT COLLATE NOCASE, u TEXT, ks TEXT, n)",
    "sb": "CREATE TABLE sb (id INTEGER PRIMARY KEY, k INTEGER, t TEXT, u TEXT COLLATE RTRIM, ks TEXT, n)",
}
WORDS = ["abc", "ABC", "Abc", "abc ", "x", "5", "05", " 5", "7", "12", None]


def pick(rnd, vals):
    return rnd.choice(vals)


def setup(rnd, pg, db, c, ref):
    pg_rows = []
    for i in range(1, 61):
        pg_rows.append((i, pick(rnd, [None, rnd.randint(0, 15)]), pick(rnd, WORDS), pick(rnd, WORDS)))
    ref.execute(REF_PG_DDL)
    ref.executemany("INSERT INTO pj VALUES (?, ?, ?, ?)", pg_rows)

    def lit(v):
        return "NULL" if v is None else ("'%s'" % v if isinstance(v, str) else str(v))
    pg.psql([PG_DDL] + ["INSERT INTO pj VALUES (%s)" % ", ".join(lit(v) for v in row) for row in pg_rows],
            db=db, user=USER)
    for t, ddl in SQLITE_DDL.items():
        expect_ok(c.request(ddl))
        ref.execute(ddl)
        for i in range(1, rnd.randint(20, 40)):
            row = (i, pick(rnd, [None, rnd.randint(0, 70)]), pick(rnd, WORDS), pick(rnd, WORDS),
                   pick(rnd, WORDS + ["3", "3.0", "12"]),
                   pick(rnd, [None, rnd.randint(0, 70), "5", "abc", str(rnd.randint(0, 70))]))
            sql = "INSERT INTO %s VALUES (?, ?, ?, ?, ?, ?)" % t
            ref.execute(sql, row)
            r = c.inline(sql, list(row))
            if not r.ok:
                raise TestFailure("insert: %r" % r)
    expect_ok(c.request("ANALYZE sa"))
    ref.execute("ANALYZE sa")


# Equalities between the PostgreSQL table (P) and an SQLite one (S): keys,
# text under NOCASE / RTRIM / BINARY, text holding numbers, untyped.
EQS = ["{p}.id = {s}.k", "{s}.k = {p}.id", "{p}.t = {s}.t", "{s}.t = {p}.t", "{p}.k = {s}.ks",
       "{s}.ks = {p}.id", "{p}.t = {s}.u", "{s}.u = {p}.v", "{s}.n = {p}.id", "{p}.t = {s}.n",
       "{p}.v == {s}.t", "{p}.id = {s}.id", "{s}.ks = {p}.t", "{p}.k = {s}.n", "{s}.n = {p}.k",
       # a PostgreSQL text column against an SQLite INTEGER column: SQLite
       # compares as numbers ('05' = 5); pgvtab sends a superset and checks
       "{p}.t = {s}.k", "{s}.k = {p}.v", "{p}.v < {s}.k"]
EXTRA = ["{p}.k > 3", "{s}.id < 20", "{p}.t IS NOT NULL", "{s}.k BETWEEN 2 AND 40", "{p}.id <> {s}.id",
         "{p}.t = 5", "{p}.k <> 3"]
# In the ON clause of a LEFT JOIN whose preserved side is the PostgreSQL
# table, a condition on that table alone (IS NOT NULL, <>): SQLite 3.40
# offers it to the virtual table as usable; it must not filter its rows.
EXTRA_LEFT = ["{p}.k > 3", "{s}.id < 20", "{s}.k BETWEEN 2 AND 40", "{p}.id <> {s}.id", "{p}.t IS NOT NULL",
              "{p}.k <> 3", "{p}.v IS NULL"]


def gen(rnd):
    s = rnd.choice(["sa", "sb"])
    other = "sb" if s == "sa" else "sa"
    aliased = rnd.randrange(3) != 0
    sa_, pa_ = ("s", "p") if aliased else (s, "pj")
    fs = "%s %s" % (s, sa_) if aliased else s
    fp = "pj %s" % pa_ if aliased else "pj"
    eq_ = rnd.choice(EQS).format(p=pa_, s=sa_)
    extra = rnd.choice(EXTRA).format(p=pa_, s=sa_)
    cols = "%s.id, %s.id, %s.t, %s.k" % (sa_, pa_, pa_, sa_)
    shape = rnd.randrange(12)
    if shape == 0:
        return "SELECT %s FROM %s JOIN %s ON %s" % (cols, fs, fp, eq_)
    if shape == 1:
        return "SELECT %s FROM %s INNER JOIN %s ON %s AND %s" % (cols, fp, fs, extra, eq_)
    if shape == 2:
        return "SELECT %s FROM %s LEFT JOIN %s ON %s" % (cols, fs, fp, eq_)
    if shape == 3:
        extra = rnd.choice(EXTRA_LEFT).format(p=pa_, s=sa_)
        return "SELECT %s FROM %s LEFT OUTER JOIN %s ON %s AND %s" % (cols, fp, fs, eq_, extra)
    if shape == 4:
        return "SELECT %s FROM %s, %s WHERE %s AND %s" % (cols, fs, fp, eq_, extra)
    if shape == 5:
        return "SELECT %s FROM %s CROSS JOIN %s WHERE %s" % (cols, fp, fs, eq_)
    if shape == 6:
        return ("SELECT %s, o.id FROM %s JOIN %s ON %s JOIN %s o ON o.id = %s.k" % (cols, fs, fp, eq_, other, pa_))
    if shape == 7:
        return ("SELECT id FROM %s WHERE EXISTS (SELECT 1 FROM %s JOIN %s ON %s WHERE %s.id = %s.id)"
                % (other, fs, fp, eq_, sa_, other))
    if shape == 8:
        return "SELECT %s FROM %s JOIN %s ON %s OR %s" % (cols, fs, fp, eq_, extra)
    if shape == 9:
        return ("SELECT %s.t, count(*), sum(%s.k) FROM %s JOIN %s ON %s GROUP BY %s.t"
                % (pa_, sa_, fs, fp, eq_, pa_))
    if shape == 10:
        return ("SELECT %s FROM %s LEFT JOIN %s ON %s WHERE %s IS NOT NULL" % (cols, fp, fs, eq_,
                                                                                 "%s.id" % sa_))
    return ("SELECT x.* FROM (SELECT %s FROM %s JOIN %s ON %s) AS x UNION ALL SELECT 0, 0, 'u', 0"
            % (cols, fs, fp, eq_))


def test_generated_joins_match_one_database():
    rnd = random.Random(1522)
    pg = shared()
    ref = sqlite3.connect(":memory:", isolation_level=None)
    with pg.database() as db, pg_daemon(pg, db, tables=(("pj", None), ("sb", "memory_db"))) as d:
        c = d.connect()
        setup(rnd, pg, db, c, ref)
        filtered = 0
        n = 300
        for _ in range(n):
            sql = gen(rnd)
            want = sorted(([text(v) for v in row] for row in ref.execute(sql).fetchall()), key=repr)
            r = c.request(sql)
            if not r.ok:
                raise TestFailure("%s\n  daemon: %s" % (sql, r.status))
            got = sorted((list(row) for row in r.rows), key=repr)
            if got != want:
                raise TestFailure("%s\n  daemon:    %r\n  reference: %r" % (sql, got, want))
            p = c.request(".plan " + sql)
            if not p.ok:
                raise TestFailure(".plan %s: %s" % (sql, p.status))
            filtered += "semijoins" in p.facts
        # The path under test was taken for a good share of them.
        print("# %d of %d joins got a semi-join filter" % (filtered, n))
        if filtered < n // 4:
            raise TestFailure("only %d of %d joins got a semi-join filter" % (filtered, n))


test_generated_joins_match_one_database.timeout = 240


def plan(c, sql):
    r = c.request(".plan " + sql)
    if not r.ok:
        raise TestFailure(".plan: %s" % r.status)
    return r


def test_semijoin_one_query_and_limits():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, tables=(("pj", None),)) as d:
        c = d.connect()
        pg.psql([PG_DDL, "INSERT INTO pj SELECT g, g % 7, 'w' || g, NULL FROM generate_series(1, 2000) g"],
                db=db, user=USER)
        expect_ok(c.request("CREATE TABLE keys (id INTEGER PRIMARY KEY, pk INTEGER)"))
        expect_ok(c.request("INSERT INTO keys (pk) WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                            "FROM g WHERE i < 300) SELECT i * 5 FROM g"))
        expect_ok(c.request("ANALYZE keys"))
        # Before the executors' first PostgreSQL session: they log.
        pg.psql("ALTER DATABASE %s SET log_statement = 'all'" % db, db="postgres")
        join = "SELECT count(*), sum(p.k) FROM keys s JOIN pj p ON p.id = s.pk"
        r = plan(c, join)
        eq(r.facts.get("semijoins"), "1", ".plan facts: %s" % r.status)
        if "= ANY($" not in r.rows[0][2]:
            raise TestFailure("the keys are not sent as one array: %r" % r.rows)
        mark = len(pg.log_text())
        r = c.request(join)
        eq([list(x) for x in r.rows], [["300", str(sum((i * 5) % 7 for i in range(1, 301)))]], "the join's answer")
        sent = [ln for ln in pg.log_text()[mark:].splitlines() if "pj" in ln and
                ("statement:" in ln or "execute" in ln)]
        # One query, no cursor (300 rows at most: one round trip).
        if len(sent) != 1 or "ANY" not in sent[0] or "DECLARE" in sent[0]:
            raise TestFailure("%d queries for the join's 300 keys:\n%s" % (len(sent), "\n".join(sent[:10])))
        # The statement filters the key with IN itself: no second array.
        r = plan(c, join + " WHERE p.id IN (SELECT pk FROM keys)")
        eq(r.facts.get("semijoins"), None, "a statement with its own IN gets no filter")
        eq(r.rows[0][2].count("ANY"), 1, "one array: %r" % r.rows)
        # A view on the SQLite side: read twice it might differ; no filter.
        expect_ok(c.request("CREATE VIEW keyview AS SELECT pk FROM keys"))
        eq(plan(c, "SELECT count(*) FROM keyview v JOIN pj p ON p.id = v.pk").facts.get("semijoins"), None,
           "a view gets no filter")
        # An SQLite table past the limit: no filter (its keys would be one huge array).
        expect_ok(c.request("CREATE TABLE many (id INTEGER PRIMARY KEY)"))
        expect_ok(c.request("INSERT INTO many WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g "
                            "WHERE i < 10001) SELECT i FROM g"))
        eq(plan(c, "SELECT count(*) FROM many s JOIN pj p ON p.id = s.id").facts.get("semijoins"), None,
           "10,001 rows get no filter")
        expect_ok(c.request("DELETE FROM many WHERE id > 10000"))
        r = plan(c, "SELECT count(*) FROM many s JOIN pj p ON p.id = s.id")
        eq(r.facts.get("semijoins"), "1", "10,000 rows get the filter")
        eq([list(x) for x in c.request("SELECT count(*) FROM many s JOIN pj p ON p.id = s.id").rows], [["2000"]],
           "10,000 keys in one array")
