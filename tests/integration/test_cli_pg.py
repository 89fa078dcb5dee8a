"""The sqlmux CLI's .schema and .dump of a PostgreSQL bind (CREATE TABLE
built from pg_catalog), loaded back through sqlmux into another database,
and JSON typed by PostgreSQL's column types."""

import json

from harness import TestFailure, eq
from pgfixture import pg_daemon, shared
from test_cli import cli, expect

ITEMS = ("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL DEFAULT 'x', "
         "price numeric(10,2) CHECK (price > 0), flag boolean, data bytea, "
         "ident int GENERATED ALWAYS AS IDENTITY, f8 float8, note text UNIQUE, "
         "twice numeric GENERATED ALWAYS AS (price * 2) STORED, "
         "parent int REFERENCES items (id))")
ROWS = ("INSERT INTO items (name, price, flag, data, f8, note, parent) VALUES "
        "('a''b', 15.10, true, '\\x00ff', 0.1, E'cr\\r\\nlf \\\\ back', NULL), "
        "('n', NULL, NULL, NULL, 'NaN', NULL, 1), "
        "('big', 12345678.99, false, '\\x', 1e300, 'line\nbreak', 1)")

TABLES = (("items", None), ("items_view", None), ("pg_catalog.*", None))

COLUMNS = ("SELECT column_name, data_type, is_nullable, column_default, is_identity, identity_generation, "
           "is_generated, generation_expression FROM information_schema.columns "
           "WHERE table_name = 'items' ORDER BY ordinal_position")
CONSTRAINTS = ("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
               "WHERE conrelid = 'items'::regclass ORDER BY conname")
INDEXES = "SELECT indexdef FROM pg_indexes WHERE tablename = 'items' ORDER BY indexname"
DATA = "SELECT id, name, price, flag, data, ident, f8, note, twice, parent FROM items ORDER BY id"


def test_cli_pg_dump_loads_back():
    """.dump of a PostgreSQL bind: CREATE TABLE from the catalog (types,
    NOT NULL, defaults, serial and identity columns, generated columns,
    primary, unique, check and foreign keys, indexes), a view, the rows
    exactly (numeric digits, bytea, NaN, CR), the sequences' positions;
    loaded through sqlmux into an empty database it gives the same."""
    pg = shared()
    with pg.database() as db, pg.database() as db2:
        with pg_daemon(pg, db, tables=TABLES) as d:
            expect(cli(d, "-c", ITEMS, "-c", ROWS, "-c", "CREATE INDEX items_lower ON items (lower(name))",
                       "-c", "CREATE VIEW items_view AS SELECT id, name FROM items WHERE flag"), 0, "", "")
            rc, dump, err = expect(cli(d, "-c", ".dump items items_view"), 0, stderr="")
            for want in ("-- bind pg (postgresql)\nBEGIN;\nCREATE TABLE items (\n    \"id\" serial NOT NULL,",
                         "OVERRIDING SYSTEM VALUE", "'\\x00ff'::bytea", "15.10", "'NaN'",
                         "SELECT pg_catalog.setval(", "CREATE VIEW items_view AS", "FOREIGN KEY"):
                if want not in dump:
                    raise TestFailure("%r not in the dump:\n%s" % (want, dump))
            rc, schema, err = expect(cli(d, "-c", ".schema items"), 0, stderr="")
            if "CREATE TABLE items (" not in schema or "INSERT" in schema:
                raise TestFailure(".schema items:\n" + schema)
        with pg_daemon(pg, db2, tables=TABLES) as d2:
            path = d2.write_file("dump.sql", dump)
            # The setval() SELECTs print their values, as with psql.
            expect(cli(d2, path), 0, "setval\n3\nsetval\n3\n", "")
        for sql in (COLUMNS, CONSTRAINTS, INDEXES, DATA, "SELECT pg_get_viewdef('items_view')"):
            eq(pg.psql(sql, db=db2), pg.psql(sql, db=db), sql)
        # The sequences go on where they were.
        nxt = "INSERT INTO items (name, price) VALUES ('next', 1) RETURNING id, ident"
        eq(pg.psql(nxt, db=db2), pg.psql(nxt, db=db), "next ids")


def test_cli_pg_schema_of_a_non_default_bind():
    """pg_catalog.* follows the session's bind (issue 14): .schema reads the
    PostgreSQL bind's catalog with no [tables] entry for it, next to the
    SQLite binds."""
    pg = shared()
    with pg.database() as db:
        with pg_daemon(pg, db, tables=()) as d:
            expect(cli(d, "-c", ".use pg\nCREATE TABLE gadgets (id int PRIMARY KEY, name text)"), 0, "", "")
            rc, out, err = expect(cli(d, "-c", ".schema"), 0, stderr="")
            if "CREATE TABLE test1" not in out or "-- bind pg" not in out or "gadgets" not in out:
                raise TestFailure("stdout: %r" % out)


def test_cli_pg_json_types():
    """JSON from PostgreSQL's column types: numeric keeps its digits
    (15.10), bool is true/false, text stays text even when it looks like a
    number, NaN is a string."""
    pg = shared()
    with pg.database() as db:
        with pg_daemon(pg, db) as d:
            expect(cli(d, "-c", ".use pg\nCREATE TABLE accounts (n numeric, b bool, t text, i int8, f float8)"),
                   0, "", "")
            expect(cli(d, "-c", "INSERT INTO accounts VALUES (15.10, true, '1', 7, 'NaN'), "
                                "(NULL, false, '15.10', -1, 2.5)"), 0, "", "")
            rc, out, err = expect(cli(d, "--json", "-c", "SELECT * FROM accounts ORDER BY i DESC"), 0, stderr="")
            eq(out, '[{"n":15.10,"b":true,"t":"1","i":7,"f":"NaN"},\n'
                    '{"n":null,"b":false,"t":"15.10","i":-1,"f":2.5}]\n', "json")
            json.loads(out)
            expect(cli(d, "--json", "-c", ".use pg\nSELECT '1' AS t, version() LIKE 'PostgreSQL%' AS v"), 0,
                   '[{"t":"1","v":true}]\n', "")
