"""Issue 21's SQLite split (R-A): the authorizer now takes the schemas a
connection may use as a parameter instead of refusing every ATTACH. With
none (every bind today) statements behave as before: a statement naming
main in any spelling, VACUUM's scratch database and ALTER TABLE ... DROP
COLUMN (whose authorizer call carries the column where the schema usually
is) still run, and a client's ATTACH is still refused."""

from harness import eq, expect_err, expect_ok, expect_rows


def test_schema_qualified_statements_still_run(d):
    c = d.connect()
    expect_ok(c.request("INSERT INTO main.test1 (color) VALUES ('schema-main')"))
    for sql in ("SELECT color FROM main.test1 WHERE color = 'schema-main'",
                "SELECT color FROM MAIN.test1 WHERE color = 'schema-main'",
                "SELECT color FROM \"main\".test1 WHERE color = 'schema-main'"):
        expect_rows(c.request(sql), [["schema-main"]])
    expect_ok(c.request("PRAGMA main.table_info(test1)"))
    expect_ok(c.request("UPDATE main.test1 SET color = 'schema-main2' WHERE color = 'schema-main'"))
    expect_rows(c.request("SELECT count(*) FROM test1 WHERE color = 'schema-main2'"), [["1"]])


def test_vacuum_and_drop_column_pass_the_authorizer(d):
    c = d.connect()
    expect_ok(c.request("ALTER TABLE test1 ADD COLUMN r_extra TEXT"))
    expect_ok(c.request("ALTER TABLE main.test1 DROP COLUMN r_extra"))
    expect_ok(c.request("VACUUM"))
    eq(c.request(".ping").raw, [b"+OK"], ".ping after VACUUM")


def test_client_attach_still_refused(d):
    c = d.connect()
    expect_err(c.request("ATTACH DATABASE ':memory:' AS other"), "DENIED")
    expect_err(c.request("DETACH DATABASE main"), "DENIED")
    eq(c.request(".ping").raw, [b"+OK"], ".ping after ATTACH")
