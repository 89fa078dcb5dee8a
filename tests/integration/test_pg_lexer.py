"""Issue 21, one SQL lexer (daemon/sqllex.c) in its PostgreSQL dialect as
the PostgreSQL backend's placeholder rewriting uses it: '[' is an array
subscript there, not SQLite's [quoted name], so a ? inside one is a
placeholder; E'' strings and $tag$ bodies hide a ?."""

from harness import expect_ok, expect_rows
from pgfixture import create_accounts, shared
from test_auth import login
from test_pg_safety import _daemon


def test_pg_placeholders_in_subscripts_and_literals():
    pg = shared()
    with pg.database() as db, _daemon(pg, db) as d:
        create_accounts(pg, db, rows=("ann",))
        alice = login(d, "alice")
        expect_ok(alice.request(".use pg"))
        for send in (alice.bulk, alice.inline):
            expect_rows(send("SELECT ('{10,20,30}'::int[])[?::int] AS v", [2]), [["20"]], None)
            expect_rows(send("SELECT E'it''s \\'?' AS a, $q$?$q$ AS b, ?::text AS c", ["z"]),
                        [["it's '?", "?", "z"]], None)
