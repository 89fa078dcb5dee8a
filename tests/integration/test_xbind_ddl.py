"""DDL across binds (issue 15): the note's foreign key from nuts (memory_db)
to tree (default) is accepted, created in nuts's bind and answered
warnings=1 with a log line; the REFERENCES clause is taken out when the
target bind cannot keep it (foreign_keys on, PostgreSQL); a view over
several binds is refused saying why; .route answers bind=* for a
statement the federation pool runs."""

from harness import Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows, expect_status
from pgfixture import pg_daemon, shared

TABLES = [("test2", "second_db"), ("test3", "memory_db"), ("nuts", "memory_db"), ("shells", "memory_db"), ("audit_*", "second_db")]

TREE = "CREATE TABLE tree (id INTEGER PRIMARY KEY, name VARCHAR(16) UNIQUE)"
NUTS = ("CREATE TABLE nuts (id INTEGER PRIMARY KEY, type VARCHAR(16), "
        "tree_name VARCHAR(32) REFERENCES tree(name))")


def test_note_foreign_key_across_binds():
    with Daemon(tables=TABLES) as d:
        c = d.connect()
        expect_status(c.request(TREE), "+OK changes=0")
        expect_status(c.request(NUTS), "+OK changes=0 warnings=1")
        eq([r[0] for r in c.request(".tables memory_db").rows], ["nuts", "test3"], "nuts in memory_db")
        eq(d.file_tables("app.db"), ["test1", "tree"], "app.db tables")
        # SQLite keeps the clause (not enforced: foreign_keys is off), so
        # the schema still documents the reference.
        eq([r[2:5] for r in c.request("PRAGMA foreign_key_list(nuts)").rows],
                    [["tree", "tree_name", "name"]])
        err = d.stderr_text()
        if "nuts (bind memory_db) references tree (bind default)" not in err:
            raise TestFailure("no log line for the reference across binds:\n" + err)
        # The relationship is usable: a join across the two binds.
        expect_ok(c.request("INSERT INTO tree (name) VALUES ('oak'), ('elm')"))
        expect_ok(c.request("INSERT INTO nuts (type, tree_name) VALUES ('acorn', 'oak'), ('samara', 'elm'), "
                            "('orphan', 'ash')"))
        expect_rows(c.request("SELECT nuts.type, tree.id FROM nuts JOIN tree ON tree.name = nuts.tree_name "
                              "ORDER BY nuts.type"), [["acorn", "1"], ["samara", "2"]])
        # A reference inside one bind is no warning.
        expect_status(c.request("CREATE TABLE shells (id INTEGER PRIMARY KEY, nut INTEGER REFERENCES nuts(id))"),
                      "+OK changes=0")


def test_foreign_keys_on_strips_clause():
    opts = {"memory_db": {"foreign_keys": "on"}}
    with Daemon(tables=TABLES, bind_opts=opts) as d:
        c = d.connect()
        expect_status(c.request(TREE), "+OK changes=0")
        expect_status(c.request("CREATE TABLE nuts (id INTEGER PRIMARY KEY, "
                                "tree_name TEXT CONSTRAINT fk_tree REFERENCES tree(name) ON DELETE CASCADE, "
                                "type TEXT, kin INTEGER REFERENCES nuts(id), "
                                "FOREIGN KEY (type) REFERENCES tree(name) DEFERRABLE INITIALLY DEFERRED)"),
                      "+OK changes=0 warnings=2")
        # The references to tree are gone; the one inside the bind stays.
        eq([r[2:4] for r in c.request("PRAGMA foreign_key_list(nuts)").rows], [["nuts", "kin"]],
           "foreign keys of nuts")
        expect_status(c.request("INSERT INTO nuts (tree_name, type) VALUES ('ash', 'x')"),
                      "+OK changes=1 last_id=1")
        expect_err(c.request("INSERT INTO nuts (kin) VALUES (99)"), "CONSTRAINT")


def test_view_across_binds_refused(d):
    c = d.connect()
    r = expect_err(c.request("CREATE VIEW v AS SELECT * FROM test1 JOIN test2 USING (id)"), "CROSSBIND")
    if "view" not in r.err_msg:
        raise TestFailure("the refusal does not say why: %r" % r.status)
    expect_status(c.request("CREATE VIEW v1 AS SELECT * FROM test1"), "+OK changes=0")
    # Other DDL over two binds keeps the route's answer.
    expect_err(c.request("CREATE TRIGGER tr AFTER INSERT ON test1 BEGIN INSERT INTO test2 VALUES (1, 'x'); "
                         "END"), "CROSSBIND")


def test_route_across_binds(d):
    c = d.connect()
    r = c.request(".route SELECT * FROM test1 JOIN test2 USING (id) JOIN test3 USING (id)")
    expect_status(r, "+OK bind=*")
    eq([row[:2] for row in r.rows], [["test1", "default"], ["test2", "second_db"], ["test3", "memory_db"]],
       ".route rows")
    expect_status(c.request(".route INSERT INTO test2 SELECT * FROM test1"), "+OK bind=*")
    expect_status(c.request(".route SELECT * FROM test1"), "+OK bind=default")
    # A new table no [tables] entry maps goes with the table it references
    # (README, Routing: "session" rule), so the reference stays in one bind.
    expect_status(c.request(".route CREATE TABLE notes (id INTEGER PRIMARY KEY, t2 INTEGER REFERENCES test2(id))"),
                  "+OK bind=second_db")
    expect_err(c.request(".route CREATE TRIGGER tr AFTER INSERT ON test1 BEGIN DELETE FROM test2; END"),
               "CROSSBIND")
    expect_ok(c.request("BEGIN"))
    expect_status(c.request(".route SELECT * FROM test1 JOIN test2 USING (id)"), "+OK bind=*")
    expect_ok(c.request("ROLLBACK"))


def test_plan_sqlite_only(d):
    """.plan says when nothing goes to PostgreSQL."""
    c = d.connect()
    r = c.request(".plan SELECT * FROM test1 JOIN test2 USING (id) WHERE test2.color = ?")
    expect_status(r, "+OK bind=* postgresql=0")
    eq((r.names, r.rows), (["bind", "table", "sent"], []), ".plan across SQLite binds")
    expect_status(c.request(".plan SELECT * FROM test3"), "+OK bind=memory_db postgresql=0")
    expect_err(c.request(".plan SELECT nope FROM test1 JOIN test2 USING (id)"), "SQL")
    expect_err(c.request(".plan"), "ARGS")


def test_pg_target_gets_no_references():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, tables=(("nuts", None),)) as d:
        c = d.connect()
        expect_status(c.request(TREE), "+OK changes=0")
        expect_status(c.request(NUTS.replace("INTEGER PRIMARY KEY", "SERIAL PRIMARY KEY")),
                      "+OK changes=0 warnings=1")
        eq(pg.psql("SELECT count(*) FROM information_schema.table_constraints WHERE table_name = 'nuts' "
                   "AND constraint_type = 'FOREIGN KEY'", db=db), [["0"]], "no foreign key in PostgreSQL")
        eq(pg.psql("SELECT column_name FROM information_schema.columns WHERE table_name = 'nuts' "
                   "ORDER BY ordinal_position", db=db), [["id"], ["type"], ["tree_name"]], "nuts columns")
        if "nuts" in d.file_tables("app.db"):
            raise TestFailure("nuts created in SQLite")
