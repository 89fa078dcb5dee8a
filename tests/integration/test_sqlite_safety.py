"""What SQLite's own functions and virtual tables let a client do to the
daemon or to other clients (issue 13, items 3, 9, 17, 18): fts3_tokenizer()
(a crash and an address leak), sqlite_stmt (other clients' SQL), the r-tree
debugging functions, FTS4's optimize() writing for a read-only user; the
table-valued functions a read-only user may read; ALTER TABLE on the
shared connections, and renames the table map would strand."""

from harness import Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows
from test_auth import auth_daemon, login


def _denied(c, sql, params=None, words=None):
    r = c.inline(sql, params) if params is not None else c.request(sql)
    expect_err(r, "DENIED")
    if words and words not in r.err_msg:
        raise TestFailure("%s: want %r in the message, got %r" % (sql, words, r.err_msg))
    eq(c.request(".ping").raw, [b"+OK"], "after %s: .ping" % sql)


def _fts(c):
    expect_ok(c.request("CREATE VIRTUAL TABLE ft USING fts4(body)"))
    for body in ("hello world", "hello there", "goodbye"):
        expect_ok(c.inline("INSERT INTO ft (body) VALUES (?)", [body]))


def test_fts3_tokenizer_is_denied_and_the_daemon_survives():
    with auth_daemon() as d:
        alice = login(d, "alice")
        carol = login(d, "carol")
        _fts(alice)
        for c in (carol, alice):   # read-only and admin alike
            # One argument: the tokenizer's address in the daemon's memory.
            _denied(c, "SELECT fts3_tokenizer('simple')", words="fts3_tokenizer")
            _denied(c, "SELECT hex(fts3_tokenizer('porter'))")
            # Two: installs a tokenizer at any address; the next MATCH jumps there.
            _denied(c, "SELECT fts3_tokenizer('simple', x'4141414141414141')")
            _denied(c, "SELECT FTS3_TOKENIZER('simple', ?)", [b"AAAAAAAA"])
            _denied(c, "SELECT * FROM test1 WHERE fts3_tokenizer(?) IS NULL", ["simple"])
            expect_rows(c.request("SELECT body FROM ft WHERE ft MATCH 'hello' ORDER BY body"),
                        [["hello there"], ["hello world"]])
        # A new connection still tokenizes with the real 'simple'.
        expect_rows(login(d, "carol").request("SELECT count(*) FROM ft WHERE ft MATCH 'goodbye'"), [["1"]])
        if d.proc.poll() is not None:
            raise TestFailure("the daemon died")


def test_sqlite_stmt_does_not_show_other_clients_sql(d):
    a = d.connect()
    b = d.connect()
    # Run twice, so the workers' statement caches keep it.
    for _ in range(2):
        expect_ok(a.inline("SELECT * FROM test1 WHERE color = 'secret-literal' AND id > ?", [0]))
        expect_ok(a.request("SELECT count(*) FROM test3 WHERE color = 'secret-3'"))
    for sql in ("SELECT sql FROM sqlite_stmt",
                "SELECT * FROM test1, sqlite_stmt",
                "SELECT * FROM main.sqlite_stmt",
                "SELECT count(*) FROM test3 WHERE EXISTS (SELECT 1 FROM sqlite_stmt)",
                "CREATE VIRTUAL TABLE peek USING sqlite_stmt"):
        _denied(b, sql, words="sqlite_stmt")
    expect_err(b.request("SELECT * FROM peek"), "SQL")   # not created


def test_debugging_functions_are_denied(d):
    c = d.connect()
    for sql in ("SELECT rtreenode(2, x'000100000000000000010000000000000000')",
                "SELECT rtreedepth(x'0001')", "SELECT RTREENODE(?, x'00')"):
        if "?" in sql:
            _denied(c, sql, [2])
        else:
            _denied(c, sql, words="debugging")
    # The r-tree itself works.
    expect_ok(c.request("CREATE VIRTUAL TABLE rt USING rtree(id, x0, x1)"))
    expect_ok(c.request("INSERT INTO rt VALUES (1, 0, 10)"))
    expect_rows(c.request("SELECT id FROM rt WHERE x0 < 5"), [["1"]])


def test_what_the_review_leaves_allowed(d):
    c = d.connect()
    _fts(c)
    for sql, rows in (
            ("SELECT count(*) > 0 FROM dbstat", [["1"]]),
            ("SELECT count(*) FROM json_tree('{\"a\":[1,2]}')", [["4"]]),
            ("SELECT DISTINCT term FROM ft_terms WHERE term = 'hello'", [["hello"]]),
            ("SELECT sqlite_compileoption_used('ENABLE_FTS4')", [["1"]]),
            ("SELECT snippet(ft) FROM ft WHERE ft MATCH 'goodbye'", [["<b>goodbye</b>"]])):
        if "ft_terms" in sql:
            expect_ok(c.request("CREATE VIRTUAL TABLE ft_terms USING fts4aux(ft)"))
        expect_rows(c.request(sql), rows)


def test_read_only_user_reads_table_valued_functions():
    with auth_daemon() as d:
        alice = login(d, "alice")
        carol = login(d, "carol")
        expect_ok(alice.request("INSERT INTO test1 (color) VALUES ('keep')"))
        for c in (carol, carol):   # twice: prepared, then from the caches
            expect_rows(c.request("SELECT name FROM pragma_table_info('test1') ORDER BY cid"),
                        [["id"], ["color"]])
            expect_rows(c.request("SELECT * FROM pragma_integrity_check"), [["ok"]])
            expect_rows(c.request("SELECT value FROM json_each('[1,2]')"), [["1"], ["2"]])
            expect_rows(c.request("SELECT count(*) FROM pragma_index_list('test1')"), [["0"]])
            expect_rows(c.request("SELECT t.color FROM test1 t JOIN json_each('[1]') j ON t.id = j.value"),
                        [["keep"]])
            expect_rows(c.request("SELECT count(*) FROM test3, pragma_table_info('test3')"), [["0"]])
        # Inside a read-only transaction too.
        expect_ok(carol.request("BEGIN"))
        expect_rows(carol.request("SELECT count(*) FROM json_each('[1,2,3]')"), [["3"]])
        expect_ok(carol.request("COMMIT"))
        # Writes around them stay refused.
        for sql in ("DELETE FROM test1 WHERE id IN (SELECT value FROM json_each('[1]'))",
                    "INSERT INTO test1 (color) SELECT name FROM pragma_table_info('test1')",
                    "UPDATE test1 SET color = (SELECT name FROM pragma_table_info('test1') LIMIT 1)",
                    "CREATE TABLE t AS SELECT * FROM json_each('[1]')",
                    "CREATE VIRTUAL TABLE x USING fts4(a)"):
            r = carol.request(sql)
            if r.err_code != "NOPERM":
                raise TestFailure("%s: want -ERR NOPERM, got %r" % (sql, r))
        r = carol.request("UPDATE sqlite_master SET sql = 'x'")
        if r.ok:
            raise TestFailure("a read-only user updated sqlite_master")
        eq(d.file_query("app.db", "SELECT id, color FROM test1"), [(1, "keep")], "test1 unchanged")


def test_read_only_user_cannot_write_through_fts_optimize():
    """optimize() is a SELECT that merges an FTS4 index: once a read-write
    user ran it, the table's own write statements are prepared and cached on
    that connection, and the authorizer never sees them again."""
    with auth_daemon() as d:
        alice = login(d, "alice")
        carol = login(d, "carol")
        expect_ok(alice.request("CREATE VIRTUAL TABLE ft USING fts4(body)"))
        for rnd in range(3):
            for i in range(3):
                expect_ok(alice.inline("INSERT INTO ft (body) VALUES (?)", ["word %d %d" % (rnd, i)]))
            expect_rows(alice.request("SELECT optimize(ft) FROM ft LIMIT 1"), [["Index optimized"]])
        for i in range(3):
            expect_ok(alice.inline("INSERT INTO ft (body) VALUES (?)", ["more %d" % i]))
        before = d.file_query("app.db", "SELECT count(*) FROM ft_segdir")
        for _ in range(8):
            r = carol.request("SELECT optimize(ft) FROM ft LIMIT 1")
            if r.err_code != "NOPERM":
                raise TestFailure("read-only optimize(): want -ERR NOPERM, got %r" % r)
        eq(d.file_query("app.db", "SELECT count(*) FROM ft_segdir"), before, "FTS segments")
        expect_rows(carol.request("SELECT count(*) FROM ft WHERE ft MATCH 'more'"), [["3"]])
        # The same connections still write for alice.
        expect_ok(alice.inline("INSERT INTO ft (body) VALUES (?)", ["after"]))
        expect_rows(alice.request("SELECT optimize(ft) FROM ft LIMIT 1"), [["Index optimized"]])


def test_alter_table_rename_and_drop_column(d):
    c = d.connect()
    other = d.connect()
    expect_ok(c.request("INSERT INTO test1 (color) VALUES ('green')"))
    expect_ok(c.request("CREATE INDEX test1_color ON test1 (color)"))
    expect_ok(c.request("CREATE VIEW v1 AS SELECT id, color FROM test1"))
    expect_ok(c.bulk("CREATE TRIGGER test1_ins AFTER INSERT ON test1 BEGIN "
                     "UPDATE test1 SET color = upper(NEW.color) WHERE id = NEW.id; END"))
    # Cached on every worker and on the loop's connection before the change.
    other.send(b"SELECT color FROM test1\n" * 16)
    for r in other.read_responses(16):
        expect_rows(r, [["green"]])
    expect_ok(c.request("ALTER TABLE test1 RENAME COLUMN color TO colour"))
    expect_ok(c.request("ALTER TABLE test1 ADD COLUMN extra INTEGER"))
    expect_ok(c.request("ALTER TABLE test1 DROP COLUMN extra"))
    expect_ok(c.request("ALTER TABLE test1 RENAME TO paint"))
    expect_ok(c.request("ALTER TABLE paint RENAME colour TO shade"))
    expect_ok(c.request("INSERT INTO paint (shade) VALUES ('blue')"))    # the trigger followed
    expect_rows(c.request("SELECT id, shade FROM paint ORDER BY id"), [["1", "green"], ["2", "BLUE"]])
    expect_rows(c.request("SELECT shade FROM v1 ORDER BY id"), [["green"], ["BLUE"]])
    # No connection keeps the old names.
    other.send(b"SELECT color FROM test1\n" * 16 + b"SELECT count(*) FROM paint\n" * 16)
    rs = other.read_responses(32)
    for r in rs[:16]:
        expect_err(r, "SQL")
    for r in rs[16:]:
        expect_rows(r, [["2"]])
    eq(d.file_query("app.db", "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"),
       [("paint",)], "tables")
    # Temporary objects stay refused.
    expect_err(c.request("CREATE TEMP TABLE t (x)"), "DENIED")
    expect_err(c.request("CREATE TABLE temp.t (x)"), "DENIED")
    expect_err(c.request("CREATE TEMP VIEW tv AS SELECT 1"), "DENIED")
    # On the in-memory bind too, inside a transaction.
    expect_ok(c.request("BEGIN"))
    expect_ok(c.request("ALTER TABLE test3 RENAME COLUMN color TO hue"))
    expect_ok(c.request("COMMIT"))
    expect_rows(c.request("SELECT count(hue) FROM test3"), [["0"]])


def test_rename_to_a_name_of_another_bind_is_refused(d):
    c = d.connect()
    expect_ok(c.request("INSERT INTO test1 (color) VALUES ('kept')"))
    for sql, old, new, where in (("ALTER TABLE test1 RENAME TO test2", "test1", "test2", "second_db"),
                                 ("ALTER TABLE test1 RENAME TO audit_log", "test1", "audit_log", "second_db")):
        r = c.request(sql)
        expect_err(r, "CROSSBIND")
        for word in (old, new, where, "rename"):
            if word not in r.err_msg:
                raise TestFailure("%s: want %r in the message, got %r" % (sql, word, r.err_msg))
    # A new name that no entry maps and no bind holds stays in the renamed
    # table's bind (issue 14: the catalog then routes it there).
    expect_ok(c.request("alter table \"test3\" rename to elsewhere"))
    eq(c.request(".route SELECT * FROM elsewhere").rows, [["elsewhere", "memory_db", "catalog"]], ".route")
    expect_ok(c.request("ALTER TABLE elsewhere RENAME TO test3"))
    r = c.request(".route ALTER TABLE test1 RENAME TO test2")
    expect_err(r, "CROSSBIND")
    eq([row[:2] for row in r.rows], [["test1", "default"], ["test2", "second_db"]], ".route rows")
    # Nothing moved; a rename within a bind works and routes from then on.
    expect_rows(c.request("SELECT color FROM test1"), [["kept"]])
    expect_ok(c.request("ALTER TABLE test2 RENAME TO audit_old"))
    expect_rows(c.request("SELECT count(*) FROM audit_old"), [["0"]])
    expect_ok(c.request("ALTER TABLE test1 RENAME TO renamed"))
    expect_rows(c.request("SELECT color FROM renamed"), [["kept"]])
    # RENAME COLUMN x TO <a mapped table name> is a column, not a table.
    expect_ok(c.request("ALTER TABLE renamed RENAME COLUMN color TO test2"))
    expect_ok(c.request("ALTER TABLE renamed RENAME test2 TO test3"))
    expect_rows(c.request("SELECT test3 FROM renamed"), [["kept"]])


def test_read_only_user_cannot_alter():
    with auth_daemon() as d:
        carol = login(d, "carol")
        for sql in ("ALTER TABLE test1 RENAME TO t9", "ALTER TABLE test1 RENAME COLUMN color TO c",
                    "ALTER TABLE test1 DROP COLUMN color"):
            r = carol.request(sql)
            if r.err_code != "NOPERM":
                raise TestFailure("%s: want -ERR NOPERM, got %r" % (sql, r))
        eq(d.file_query("app.db", "SELECT sql FROM sqlite_master WHERE name = 'test1'"),
           [("CREATE TABLE test1 (id INTEGER PRIMARY KEY, color VARCHAR(64) DEFAULT 'red')",)], "test1")
