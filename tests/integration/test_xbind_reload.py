"""Statements across binds and configuration reloads (issue 15): after a
reload that replaces a bind (second_db moved to another file: a new
database), reads across binds, on the loop thread and on the federation
pool, use the new bind, never the replaced one; a reload that moves a
table changes where the statement reads it."""

from harness import DEFAULT_BINDS, Daemon, eq, expect_ok, expect_rows, expect_status, make_config

MOVED = [(n, "sqlite:///second2.db" if n == "second_db" else u) for n, u in DEFAULT_BINDS]


def test_reload_replaces_an_attached_bind():
    with Daemon() as d:
        c = d.connect()
        for t in ("test1", "test2", "test3"):
            expect_ok(c.request("INSERT INTO %s (id, color) VALUES (1, 'old')" % t))
        expect_rows(c.request("SELECT count(*) FROM test1 JOIN test2 USING (id)"), [["1"]])
        expect_rows(c.request("SELECT count(*) FROM test1, test2, test3, test1 a, test2 b, test3 x"), [["1"]])
        d.rewrite_config(config=make_config(binds=MOVED))
        expect_ok(c.request(".reload"))
        expect_rows(c.request("SELECT count(*) FROM test2"), [["0"]])
        for _ in range(3):
            expect_rows(c.request("SELECT count(*) FROM test1 JOIN test2 USING (id)"), [["0"]])
            expect_rows(c.request("SELECT count(*) FROM test1, test2, test3, test1 a, test2 b, test3 x"), [["0"]])
        expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (1, 'new')"))
        expect_rows(c.request("SELECT test2.color FROM test1 JOIN test2 USING (id)"), [["new"]])
        expect_status(c.request("INSERT INTO test2 (id, color) SELECT id + 1, color FROM test3"),
                      "+OK changes=1 last_id=2")
        expect_rows(c.request("SELECT count(*) FROM test3 JOIN test2 USING (color)"), [["1"]])
        eq(d.file_query("second.db", "SELECT color FROM test2"), [("old",)], "the old file untouched")
        # A moved table: pinned to default, where it does not exist yet (the
        # catalog alone would keep it in second_db, which holds it).
        d.rewrite_config(config=make_config(binds=MOVED, tables=[("test2", "default"), ("test3", "memory_db")]))
        expect_ok(c.request(".reload"))
        expect_ok(c.request("CREATE TABLE test2 (id INTEGER PRIMARY KEY, color TEXT)"))
        eq(c.request("SELECT count(*) FROM test3 JOIN test2 USING (color)").rows, [["0"]], "test2 moved")
