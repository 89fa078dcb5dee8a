"""Found by the note's app with ONE SQLAlchemy URL (examples/flask/
single_uri.py, tests/python/test_flask_single_uri.py): Flask-SQLAlchemy's
db.create_all() runs in one transaction (SQLAlchemy's engine.begin()):
PRAGMA main.table_info("t") for each table, then CREATE TABLE and CREATE
INDEX for the missing ones. With the tables mapped to several binds by
[tables], the transaction's home is the bind of its first statement, and
every statement for a table of another bind that does not name that bind
runs against the home bind's `main`:

- CREATE TABLE t, t mapped to another bind: -ERR TXNBIND (SQLite creates
  it in main, the authorizer refuses), where outside a transaction it is
  created in its bind;
- CREATE INDEX ix ON t, t in another bind: -ERR SQL no such table: main.t;
- PRAGMA main.table_info("t"), t in another bind: no rows, so SQLAlchemy
  thinks the table is missing (outside a transaction: its columns).

Expected inside a transaction what the same statement does outside one:
the statement for another SQLite bind's table runs on that bind (its
attached schema) and joins the transaction. These tests fail until the
daemon does so (not fixed in branch flask1)."""

from harness import Daemon, eq, expect_ok, expect_rows, expect_status

def tables(d, name):
    """The file's tables but the daemon's marker table sqlmux_xact."""
    return [t for t in d.file_tables(name) if t != "sqlmux_xact"]


TABLES = [("test1", "default"), ("test2", "second_db"), ("nuts", "memory_db"), ("tree", "default"),
          ("shells", "default"), ("nuts2", "memory_db")]


def test_create_table_of_another_bind_in_transaction():
    with Daemon(tables=TABLES, schemas=False) as d:
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("CREATE TABLE test1 (id INTEGER PRIMARY KEY)"))
        expect_status(c.request("CREATE TABLE test2 (id INTEGER PRIMARY KEY)"), "+OK changes=0")
        expect_ok(c.request("INSERT INTO test2 (id) VALUES (1)"))
        expect_ok(c.request("COMMIT"))
        eq(tables(d, "app.db"), ["test1"], "app.db tables")
        eq(tables(d, "second.db"), ["test2"], "second.db tables")
        expect_rows(c.request("SELECT id FROM test2"), [["1"]])


def test_create_index_on_another_bind_in_transaction():
    with Daemon(tables=TABLES, schemas=False) as d:
        c = d.connect()
        expect_ok(c.request("CREATE TABLE nuts (id INTEGER PRIMARY KEY, type TEXT)"))
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("CREATE TABLE tree (id INTEGER PRIMARY KEY, name TEXT)"))
        expect_status(c.request("CREATE INDEX ix_nuts_type ON nuts (type)"), "+OK changes=0")
        expect_ok(c.request("COMMIT"))
        c.request(".use memory_db")
        expect_rows(c.request("SELECT name FROM sqlite_master WHERE type = 'index'"), [["ix_nuts_type"]])


def test_pragma_main_table_info_of_another_bind_in_transaction():
    with Daemon(tables=TABLES, schemas=False) as d:
        c = d.connect()
        expect_ok(c.request("CREATE TABLE nuts (id INTEGER PRIMARY KEY, type TEXT)"))
        want = [["0", "id", "INTEGER", "0", None, "1"], ["1", "type", "TEXT", "0", None, "0"]]
        expect_rows(c.request('PRAGMA main.table_info("nuts")'), want)
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("CREATE TABLE tree (id INTEGER PRIMARY KEY)"))
        expect_rows(c.request('PRAGMA main.table_info("nuts")'), want)
        expect_ok(c.request("ROLLBACK"))


def test_foreign_key_across_binds_in_transaction():
    """The note's CREATE TABLE nuts ... REFERENCES tree(name) inside the
    transaction db.create_all() runs: nuts joins it in memory_db, with the
    warnings=1 it gets outside; tree (the home bind) in the same one."""
    with Daemon(tables=TABLES, schemas=False) as d:
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request('PRAGMA main.table_info("tree")'))
        expect_ok(c.request("CREATE TABLE tree (id INTEGER PRIMARY KEY, name VARCHAR(16) UNIQUE)"))
        expect_status(c.request("CREATE TABLE nuts (id INTEGER PRIMARY KEY, type VARCHAR(16), "
                                "tree_name VARCHAR(32) REFERENCES tree(name))"), "+OK changes=0 warnings=1")
        expect_status(c.request("CREATE TABLE shells (id INTEGER PRIMARY KEY, nut TEXT REFERENCES nuts(type), "
                                "tree TEXT REFERENCES tree(name))"), "+OK changes=0 warnings=1")
        expect_ok(c.request("INSERT INTO tree (name) VALUES ('oak')"))
        expect_ok(c.request("INSERT INTO nuts (type, tree_name) VALUES ('acorn', 'oak')"))
        expect_rows(c.request("SELECT nuts.type, tree.id FROM nuts JOIN tree ON tree.name = nuts.tree_name"),
                    [["acorn", "1"]])
        expect_ok(c.request("COMMIT"))
        eq(tables(d, "app.db"), ["shells", "tree"], "app.db tables")
        c.request(".use memory_db")
        expect_rows(c.request("SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'sqlmux_xact'"), [["nuts"]])
        expect_rows(c.request("SELECT type FROM nuts"), [["acorn"]])
        # rolled back: nothing of it stays in either bind
        c.request(".use default")
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO tree (name) VALUES ('elm')"))
        expect_status(c.request("CREATE TABLE nuts2 (id INTEGER PRIMARY KEY, t TEXT REFERENCES tree(name))"),
                      "+OK changes=0 warnings=1")
        expect_ok(c.request("ROLLBACK"))
        eq(tables(d, "app.db"), ["shells", "tree"], "app.db tables after the rollback")
        c.request(".use memory_db")
        expect_rows(c.request("SELECT name FROM sqlite_master WHERE name = 'nuts2'"), [])
        expect_rows(c.request("SELECT count(*) FROM tree"), [["1"]])


def test_pragma_after_ddl_of_another_connection():
    """A table created inside a transaction on another bind's connection
    (where this bind is attached): its bind's own connections answer
    PRAGMA foreign_key_list from an up-to-date schema (SQLAlchemy reflects
    foreign keys so), not from the copy they had before (no rows)."""
    with Daemon(tables=TABLES, schemas=False) as d:
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("CREATE TABLE tree (id INTEGER PRIMARY KEY, name TEXT)"))
        expect_ok(c.request("CREATE TABLE nuts (id INTEGER PRIMARY KEY, tree_name TEXT, "
                            "FOREIGN KEY(tree_name) REFERENCES tree (name))"))
        expect_ok(c.request("COMMIT"))
        for _ in range(3):
            eq([r[2:5] for r in c.request("PRAGMA foreign_key_list(nuts)").rows], [["tree", "tree_name", "name"]],
               "foreign keys of nuts")


def test_pragma_in_transaction_after_ddl_of_another_connection():
    """The same inside a transaction: the transaction's connection read
    memory_db's schema before another client created nuts there; its
    PRAGMA main.foreign_key_list("nuts") and index_list (memory_db's, as
    SQLAlchemy reflects them) see the new table."""
    with Daemon(tables=TABLES, schemas=False, bind_opts={"default": {"pool_size": "1"}}) as d:
        c, other = d.connect(), d.connect()
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("CREATE TABLE tree (id INTEGER PRIMARY KEY, name TEXT)"))
        expect_rows(c.request('PRAGMA main.foreign_key_list("nuts")'), [])
        expect_ok(c.request("COMMIT"))
        expect_ok(other.request("CREATE TABLE nuts (id INTEGER PRIMARY KEY, type TEXT, "
                                "tree_name TEXT REFERENCES tree(name))"))
        expect_ok(other.request("CREATE INDEX ix_nuts_type ON nuts (type)"))
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request('PRAGMA main.table_info("tree")'))
        eq([r[2:5] for r in c.request('PRAGMA main.foreign_key_list("nuts")').rows], [["tree", "tree_name", "name"]],
           "foreign keys of nuts")
        eq([r[1] for r in c.request('PRAGMA main.index_list("nuts")').rows], ["ix_nuts_type"], "indexes of nuts")
        expect_ok(c.request("ROLLBACK"))
