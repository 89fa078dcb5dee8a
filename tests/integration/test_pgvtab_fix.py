"""Two wrong answers of the PostgreSQL virtual table (daemon/pgvtab.c),
each checked against one SQLite database holding copies of the tables:

1. an outer join's ON clause with a condition on the preserved side's
   PostgreSQL table alone (`pj LEFT JOIN sa ON pj.k <> 3 AND ...`):
   SQLite 3.40 offers <> and IS NOT NULL (not =, <, IS NULL) to that
   table's xBestIndex as usable, and pushing them dropped its rows; the
   executor now tells the module which statements have an outer join
   (pgvtab_set_outer), and plain WHERE clauses still push them;
2. a PostgreSQL text column compared with a number: as text for a literal
   or a bound parameter ('5'), as numbers for an SQLite INTEGER column or a
   CAST ('05' = 5, ' 5' = 5); the module cannot tell them apart, so SQLite
   checks such a term again and a number gets a superset of rows.
"""

import re
import sqlite3
import time

from harness import TestFailure, eq, expect_ok
from pgfixture import USER, pg_daemon, shared
from test_xbind_random import text

PG_DDL = ["CREATE TABLE pj (id integer PRIMARY KEY, k integer, v text, n numeric, f float8, w varchar(8))",
          "CREATE TABLE pk (name text PRIMARY KEY, id integer)"]
REF_DDL = ["CREATE TABLE pj (id INTEGER PRIMARY KEY, k INTEGER, v TEXT, n NUMERIC, f DOUBLE PRECISION, "
           "w VARCHAR(8))", "CREATE TABLE pk (name TEXT PRIMARY KEY, id INTEGER)"]
SQ_DDL = "CREATE TABLE sa (id INTEGER PRIMARY KEY, k INTEGER, t TEXT, r REAL, u)"
TEXTS = ["5", "05", " 5", "5 ", "5.0", "+5", "1e1", "10", "abc", "", ".5", "-5", "0x5", "5abc", None]


def lit(v):
    return "NULL" if v is None else ("'%s'" % v if isinstance(v, str) else str(v))


def setup(pg, db, c, ref):
    pj = [(i, None if i % 7 == 0 else i % 6, TEXTS[i % len(TEXTS)], [None, 5, 10, 2.5][i % 4],
           [None, 5.0, 0.5, 10.0][i % 4], TEXTS[(i * 3) % len(TEXTS)]) for i in range(1, 61)]
    pk = [(t, i) for i, t in enumerate(TEXTS) if t is not None]
    pg.psql(PG_DDL + ["INSERT INTO pj VALUES (%s)" % ", ".join(lit(v) for v in row) for row in pj] +
            ["INSERT INTO pk VALUES (%s)" % ", ".join(lit(v) for v in row) for row in pk], db=db, user=USER)
    for d in REF_DDL:
        ref.execute(d)
    ref.executemany("INSERT INTO pj VALUES (?, ?, ?, ?, ?, ?)", pj)
    ref.executemany("INSERT INTO pk VALUES (?, ?)", pk)
    expect_ok(c.request(SQ_DDL))
    ref.execute(SQ_DDL)
    sa = [(i, [None, 5, 10, 3][i % 4], TEXTS[(i * 5) % len(TEXTS)], [None, 5.0, 0.5][i % 3],
           [None, 5, "05", "abc", 10.0][i % 5]) for i in range(1, 13)]
    sa.append((13, "!x", "!x", None, None))  # text in an INTEGER column
    for row in sa:
        ref.execute("INSERT INTO sa VALUES (?, ?, ?, ?, ?)", row)
        r = c.inline("INSERT INTO sa VALUES (?, ?, ?, ?, ?)", list(row))
        if not r.ok:
            raise TestFailure("insert: %r" % r)


def rows_of(r):
    return sorted((list(x) for x in r.rows), key=repr)


# A statement on PostgreSQL tables alone runs in PostgreSQL: each one here
# names an SQLite table too (a subquery in the select list where pj must
# stay alone in FROM, so that SQLite offers it LIMIT).
def check(c, ref, sql, params=None):
    want = sorted(([text(v) for v in row] for row in ref.execute(sql, params or []).fetchall()), key=repr)
    r = c.inline(sql, params) if params is not None else c.request(sql)
    if not r.ok:
        raise TestFailure("%s\n  daemon: %s" % (sql, r.status))
    got = rows_of(r)
    if got != want:
        raise TestFailure("%s %r\n  daemon:    %r\n  reference: %r" % (sql, params or "", got, want))


def sent(c, sql):
    r = c.request(".plan " + sql)
    if not r.ok:
        raise TestFailure(".plan %s: %s" % (sql, r.status))
    return " | ".join(row[2] for row in r.rows)


def with_daemon(fn):
    pg = shared()
    ref = sqlite3.connect(":memory:", isolation_level=None)
    with pg.database() as db:
        # before the executors' first PostgreSQL session: they log
        pg.psql("ALTER DATABASE %s SET log_statement = 'all'" % db, db="postgres")
        with pg_daemon(pg, db, tables=(("pj", None), ("pk", None))) as d:
            c = d.connect()
            setup(pg, db, c, ref)
            fn(pg, db, c, ref)


ON_CONDS = ["pj.k <> 3", "pj.k IS NOT NULL", "pj.k NOT NULL", "pj.k IS NULL", "pj.k > 3", "pj.k = 3",
            "pj.k IS NOT 3", "pj.k IS 3", "pj.v <> '5'", "pj.v IS NOT NULL", "pj.k <> 3 AND pj.k IS NOT NULL",
            "pj.k < 4", "NOT (pj.k = 3)", "pj.v LIKE 'a%'"]


def test_outer_join_on_clause_keeps_the_preserved_rows():
    def run(pg, db, c, ref):
        wrong = []
        for cond in ON_CONDS:
            for shape in ["SELECT pj.id, sa.id FROM pj LEFT JOIN sa ON {c} AND sa.id = 1",
                          "SELECT pj.id, sa.id FROM pj LEFT JOIN sa ON sa.k = pj.k AND {c}",
                          "SELECT pj.id, sa.id FROM pj LEFT OUTER JOIN sa ON {c}",
                          "SELECT pj.id, sa.id FROM sa RIGHT JOIN pj ON {c} AND sa.id = 2",
                          "SELECT pj.id, sa.id FROM sa FULL JOIN pj ON {c} AND sa.id = pj.k",
                          "SELECT pj.id, sa.id FROM sa LEFT JOIN pj ON {c} AND sa.id = pj.k",
                          "SELECT pj.id, sa.id FROM pj NATURAL LEFT JOIN sa WHERE {c}",
                          "SELECT pj.id, x.id FROM pj LEFT JOIN (SELECT * FROM sa WHERE id < 5) x ON {c}",
                          "SELECT count(*) FROM pj LEFT JOIN sa ON {c} AND sa.id = 1 WHERE pj.id < 40",
                          "SELECT sa.id, pj.id, x.id FROM sa LEFT JOIN pj ON pj.k = sa.k "
                          "LEFT JOIN (SELECT id FROM sa) x ON {c}",
                          "SELECT sa.id, pj.id, x.id FROM sa LEFT JOIN pj ON pj.k = sa.k "
                          "LEFT JOIN sa x ON {c} AND x.id = pj.id"]:
                try:
                    check(c, ref, shape.format(c=cond))
                except TestFailure as e:
                    wrong.append(str(e).splitlines()[0])
        if wrong:
            raise TestFailure("%d wrong answers:\n%s" % (len(wrong), "\n".join(wrong)))
        # The reproducer (31 rows instead of 60 before the fix).
        eq(rows_of(c.request("SELECT count(*) FROM pj LEFT JOIN sa ON pj.k <> 3 AND sa.id = 1")), [["60"]],
           "the LEFT JOIN keeps every row of pj")
        # The pushdown of <> and IS NOT NULL stays in plain WHERE clauses.
        c2 = c
        for sql, want in [("SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE k <> 3", '"k" <> $1'),
                          ("SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v IS NOT NULL", '"v" IS NOT NULL'),
                          ("SELECT pj.id FROM pj JOIN sa ON sa.id = pj.id WHERE pj.k <> 3", '"k" <> $1'),
                          ("SELECT sa.id, pj.v FROM sa LEFT JOIN pj ON pj.id = sa.id AND pj.k <> 3", '"k" <> $1')]:
            s = sent(c2, sql)
            if not re.search(re.escape(want).replace(r"\$1", r"\$\d"), s):
                raise TestFailure("%s: %r not sent: %s" % (sql, want, s))
            check(c2, ref, sql)
        mark = len(pg.log_text() or "")
        check(c2, ref, "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE k <> 3 AND v IS NOT NULL")
        time.sleep(0.3)
        log = (pg.log_text() or "")[mark:]
        if not re.search(r'"k" <> \$\d', log) or '"v" IS NOT NULL' not in log:
            raise TestFailure("PostgreSQL did not get the WHERE clause:\n%s" % log[-2000:])
        # In an outer join's statement, SQLite checks them.
        s = sent(c2, "SELECT count(*) FROM pj LEFT JOIN sa ON pj.k <> 3 AND sa.id = 1")
        if "<>" in s:
            raise TestFailure("<> pushed for the preserved side: %s" % s)
    with_daemon(run)


test_outer_join_on_clause_keeps_the_preserved_rows.timeout = 120

TEXT_CASES = [
    "SELECT sa.id, pj.id FROM sa JOIN pj ON sa.k = pj.v",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.v = sa.k",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.v = sa.r",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.w = sa.k",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.v = sa.u",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.v = sa.t",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.v < sa.k",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.v <= sa.k",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.v > sa.k",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.v >= sa.k",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.v <> sa.k",
    "SELECT sa.id, pj.id FROM sa LEFT JOIN pj ON pj.v = sa.k",
    "SELECT sa.id, pk.id FROM sa JOIN pk ON pk.name = sa.k",
    "SELECT sa.id, pk.id FROM sa JOIN pk ON pk.name = sa.t",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v IN (SELECT k FROM sa)",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v IN (SELECT t FROM sa)",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v IN (5, '05', 10)",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v = 5",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v = '5'",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v = CAST(5 AS INTEGER)",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v = CAST('5' AS REAL)",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v = (SELECT k FROM sa WHERE k = 5 LIMIT 1)",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v < 5",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v > 5",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v = 5 LIMIT 2",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v = 5 LIMIT 1 OFFSET 1",
    "SELECT name, (SELECT count(*) FROM sa) FROM pk WHERE name = 5",
    # text from an INTEGER column: the numeric-looking names are numbers,
    # below any text, for SQLite; LIMIT applies to what SQLite keeps
    "SELECT count(*) FROM (SELECT name FROM pk WHERE name > (SELECT k FROM sa WHERE id = 13) LIMIT 3)",
    "SELECT count(*) FROM (SELECT name FROM pk WHERE name < (SELECT k FROM sa WHERE id = 13) LIMIT 12)",
    "SELECT count(*), (SELECT count(*) FROM sa) FROM "
    "(SELECT name FROM pk WHERE name >= CAST(5 AS INTEGER) LIMIT 4)",
    # the mirror: PostgreSQL numbers against SQLite text
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.k = sa.t",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON sa.t = pj.k",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.n = sa.t",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.f = sa.t",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.k = sa.u",
    "SELECT sa.id, pj.id FROM sa JOIN pj ON pj.k < sa.t",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE k IN (SELECT t FROM sa)",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE n = '5.0'",
    "SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE f = ' 5'",
]


def test_text_column_against_numbers():
    def run(pg, db, c, ref):
        # The shape: an SQLite INTEGER column against PostgreSQL text.
        for sql in TEXT_CASES:
            check(c, ref, sql)
        for sql, params in [("SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v = ?1", [5]), ("SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v = ?1", ["5"]),
                            ("SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v = ?1", [5.0]),
                            ("SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v = CAST(?1 AS INTEGER)", ["5"]),
                            ("SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v < ?1", [5]), ("SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v <= ?1", ["5"]),
                            ("SELECT name, (SELECT count(*) FROM sa) FROM pk WHERE name = ?1 LIMIT 1", [5]),
                            ("SELECT name, (SELECT count(*) FROM sa) FROM pk WHERE name = ?1 LIMIT 1", ["05"]),
                            ("SELECT name, (SELECT count(*) FROM sa) FROM pk WHERE name = ?1", [" 5"]),
                            ("SELECT id, (SELECT count(*) FROM sa) FROM pj WHERE v = ?1 LIMIT 3 OFFSET 1", [5])]:
            check(c, ref, sql, params)
        # A text parameter on a text key stays one query with its LIMIT; a
        # number gets the superset without it (SQLite checks).
        s = sent(c, "SELECT name, (SELECT count(*) FROM sa) FROM pk WHERE name = ?1 LIMIT 1")
        if "LIMIT" not in s:
            raise TestFailure("LIMIT not pushed: %s" % s)
        for param, want in [("05", r'"name" = \$1::text LIMIT \$2::int8'),
                            (5, r'DECLARE .*\("name" = \$1::text OR "name" COLLATE "C" ~ .*\) LIMIT')]:
            mark = len(pg.log_text() or "")
            check(c, ref, "SELECT name, (SELECT count(*) FROM sa) FROM pk WHERE name = ?1 LIMIT 1", [param])
            time.sleep(0.3)
            sent_ = [ln for ln in (pg.log_text() or "")[mark:].splitlines() if '"public"."pk"' in ln]
            if len(sent_) != 1 or ("DECLARE" in sent_[0]) != (param == 5) or not re.search(want, sent_[0]):
                raise TestFailure("name = %r LIMIT 1 sent:\n%s" % (param, "\n".join(sent_)))
    with_daemon(run)


test_text_column_against_numbers.timeout = 120
