"""The header line of an answer (each column's name and declared type) is
kept with a cached prepared statement from its first run. It follows the
schema: after ALTER TABLE ... RENAME COLUMN or ADD COLUMN, or a table made
again with other types, the same text answers with the new header, on the
in-memory bind and on a file bind, whether the loop (a quick read) or a
worker (inside a transaction) runs it."""

from harness import DEFAULT_TABLES, Daemon, eq, expect_ok

SELECT = "SELECT * FROM {t}"
STEPS = [
    # (DDL to run first, the header SELECT * answers with after it)
    (None, [("a", "INTEGER"), ("b", "TEXT")]),
    ("ALTER TABLE {t} RENAME COLUMN b TO c", [("a", "INTEGER"), ("c", "TEXT")]),
    ("ALTER TABLE {t} ADD COLUMN d REAL", [("a", "INTEGER"), ("c", "TEXT"), ("d", "REAL")]),
    ("DROP TABLE {t}; CREATE TABLE {t} (a VARCHAR(9), c BLOB, d INT); INSERT INTO {t} VALUES ('1', x'00', 2)",
     [("a", "VARCHAR(9)"), ("c", "BLOB"), ("d", "INT")]),
]


def _header(c, sql, in_txn):
    if in_txn:
        expect_ok(c.request("BEGIN"))
    r = expect_ok(c.request(sql))
    if in_txn:
        expect_ok(c.request("COMMIT"))
    return r.columns


def _follows_the_schema(table, in_txn):
    with Daemon(tables=DEFAULT_TABLES + [("hdr_mem", "memory_db")]) as d:
        c = d.connect()
        expect_ok(c.request("CREATE TABLE %s (a INTEGER, b TEXT)" % table))
        expect_ok(c.request("INSERT INTO %s VALUES (1, 'x')" % table))
        sql = SELECT.format(t=table)
        for ddl, header in STEPS:
            if ddl is not None:
                for stmt in ddl.format(t=table).split("; "):
                    expect_ok(c.request(stmt))
            # Three runs: the first prepares it uncached, the second
            # caches it and its header, the third answers from the cache.
            for run in range(3):
                eq(_header(c, sql, in_txn), header, "%s run %d after %s" % (table, run + 1, ddl))


def test_quick_reads_of_the_memory_bind():
    _follows_the_schema("hdr_mem", False)


def test_quick_reads_of_a_file_bind():
    _follows_the_schema("hdr_file", False)


def test_worker_reads_in_a_transaction():
    _follows_the_schema("hdr_mem", True)
    _follows_the_schema("hdr_file", True)
