"""Requests with parameters on a PostgreSQL bind run as prepared
statements cached per server connection (stmt_cache): prepared once,
executed many times; evicted least-recently-used with DEALLOCATE; and
re-prepared transparently when a client's DEALLOCATE/DISCARD or a changed
table makes the cached one fail outside a transaction. One connection
(pool_size = 1) makes the server's pg_prepared_statements view show the
cache."""

from harness import eq, expect_err, expect_ok, expect_rows, expect_status
from pgfixture import create_accounts, pg_daemon, shared


def _prepared(c):
    """Names and statements prepared on the (only) server connection."""
    r = expect_ok(c.request("SELECT name, statement FROM pg_prepared_statements ORDER BY name"))
    return [tuple(row) for row in r.rows]


def _daemon(pg, db, cache="64"):
    return pg_daemon(pg, db, opts={"pool_size": "1", "pool_min": "1"},
                     tables=(("accounts", None), ("pg_prepared_statements", None)),
                     server={"stmt_cache": cache})


def test_pg_parameters_run_prepared():
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db, rows=("ann", "bob", "cy"))
        with _daemon(pg, db) as d:
            c = d.connect()
            expect_ok(c.request(".use pg"))   # statements naming no table
            eq(_prepared(c), [], "nothing prepared before a request with parameters")
            for name in ("ann", "bob", "cy", "ann"):
                expect_rows(c.bulk("SELECT name FROM accounts WHERE name = ?", [name]), [[name]])
            eq(_prepared(c), [("sqlmux_1", "SELECT name FROM accounts WHERE name = $1")], "one prepared statement")
            # Other parameter types are another statement; plain SQL is never prepared.
            expect_rows(c.bulk("SELECT count(*) FROM accounts WHERE id = ?", [2]), [["1"]])
            expect_rows(c.bulk("SELECT count(*) FROM accounts WHERE id = ?", ["2"]), [["1"]])
            expect_rows(c.request("SELECT count(*) FROM accounts"), [["3"]])
            eq([n for n, _ in _prepared(c)], ["sqlmux_1", "sqlmux_2", "sqlmux_3"], "per text and types")
            # A statement that cannot be prepared answers its error; nothing is cached.
            expect_err(c.bulk("SELECT nosuch FROM accounts WHERE id = ?", [1]), "SQL")
            expect_err(c.bulk("SELEC 1 WHERE 1 = ?", [1]), "SQL")
            eq(len(_prepared(c)), 3, "failed prepares not cached")
            expect_rows(c.bulk("SELECT name FROM accounts WHERE name = ?", ["bob"]), [["bob"]])


def test_pg_prepared_cache_evicts_least_recently_used():
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db, rows=("ann",))
        with _daemon(pg, db, cache="2") as d:
            c = d.connect()
            expect_ok(c.request(".use pg"))   # statements naming no table
            q = ["SELECT %d + ?::int" % i for i in range(4)]
            expect_rows(c.bulk(q[0], [1]), [["1"]])
            expect_rows(c.bulk(q[1], [1]), [["2"]])
            expect_rows(c.bulk(q[0], [1]), [["1"]])     # q0 used last: q1 goes next
            expect_rows(c.bulk(q[2], [1]), [["3"]])
            eq(sorted(s for _, s in _prepared(c)), sorted(["SELECT 0 + $1::int", "SELECT 2 + $1::int"]),
               "q1 evicted and deallocated")
            for i in (3, 1, 0, 2, 3):
                expect_rows(c.bulk(q[i], [10]), [[str(10 + i)]])
            eq(len(_prepared(c)), 2, "never more than stmt_cache on the server")


def test_pg_prepared_survives_deallocate_discard_and_alter():
    pg = shared()
    with pg.database() as db:
        create_accounts(pg, db, rows=("ann",))
        with _daemon(pg, db) as d:
            c = d.connect()
            expect_ok(c.request(".use pg"))   # statements naming no table
            q = "SELECT name FROM accounts WHERE name = ?"
            expect_rows(c.bulk(q, ["ann"]), [["ann"]])
            expect_ok(c.request("DEALLOCATE ALL"))
            expect_rows(c.bulk(q, ["ann"]), [["ann"]])
            expect_ok(c.request("DISCARD ALL"))
            expect_rows(c.bulk(q, ["ann"]), [["ann"]])
            star = "SELECT * FROM accounts WHERE name = ?"
            r = expect_ok(c.bulk(star, ["ann"]))
            n = len(r.columns)
            expect_ok(c.request("ALTER TABLE accounts ADD COLUMN extra int DEFAULT 7"))
            r = expect_ok(c.bulk(star, ["ann"]))
            eq(len(r.columns), n + 1, "the new column shows")
            eq(r.rows[0][-1], "7", "its value")
            # Inside a transaction a stale statement cannot be retried: its
            # error is answered and the transaction aborts, as in PostgreSQL.
            expect_status(c.request("BEGIN"), "+OK changes=0")
            expect_rows(c.bulk(q, ["ann"]), [["ann"]])
            expect_ok(c.request("DEALLOCATE ALL"))
            expect_err(c.bulk(q, ["ann"]), "SQL")
            expect_ok(c.request("ROLLBACK"))
            expect_rows(c.bulk(q, ["ann"]), [["ann"]])
