"""PostgreSQL binds: what one client can change for others through a pooled
server connection (issue 13 items 5, 6, 7), and the wrong answers of items
16, 19 and 20.

Session state (settings, roles, advisory locks, prepared statements,
listeners, temporary objects, cursors) never outlives a client's use of a
connection: a read-only user's statement runs in a transaction that is
rolled back, and a connection whose session state may have changed is
reset before it serves another client (README, Safety)."""

import os
import re

import harness
from harness import TestFailure, eq, expect_err, expect_ok, expect_rows, expect_status
from pgfixture import USER, create_accounts, shared
from test_auth import PASSWORDS, login, users_text


def _daemon(pg, db, opts=None, server=None):
    binds = list(harness.DEFAULT_BINDS) + [("pg", pg.url(db=db))]
    tables = list(harness.DEFAULT_TABLES) + [("accounts", "pg"), ("audit", "pg"), ("pg_*", "pg")]
    env = dict((k, None) for k in os.environ if k.startswith("PG"))
    grants = {
        "alice": ["admin = on", "grant.* = read-write"],
        "bob": ["grant.* = read-write"],
        "carol": ["grant.* = read"],
    }
    srv = {"auth_fail_delay": "100"}
    srv.update(server or {})
    cfg = harness.make_config(binds=binds, tables=tables, server=srv,
                              bind_opts={"pg": dict(opts or {"pool_size": "1"})})
    return harness.Daemon(config=cfg + users_text(grants), env=env)


def _users(d):
    alice, bob, carol = login(d, "alice"), login(d, "bob"), login(d, "carol")
    for c in (alice, bob, carol):
        expect_ok(c.request(".use pg"))   # for statements that name no table
    return alice, bob, carol


def _advisory_locks(pg, db):
    """Advisory locks held in this test's database (the cluster is shared)."""
    return int(pg.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                       "(SELECT oid FROM pg_database WHERE datname = current_database())", db=db)[0][0])


def _expect_clean_session(pg, db, c, what):
    """The next client of the one pooled connection sees the server's
    defaults: search path, read-write default, no role switch, no listener,
    no prepared statement, no temporary table, and its statements work."""
    expect_rows(c.request("SHOW search_path"), [['"$user", public']], None)
    expect_rows(c.request("SHOW default_transaction_read_only"), [["off"]], None)
    expect_rows(c.request("SELECT current_user = session_user"), [["t"]], None)
    expect_rows(c.request("SELECT count(*) FROM pg_listening_channels()"), [["0"]], None)
    expect_rows(c.request("SELECT count(*) FROM pg_prepared_statements WHERE from_sql"), [["0"]], None)
    expect_rows(c.request("SELECT count(*) FROM pg_cursors WHERE name <> ''"), [["0"]], None)
    expect_rows(c.request("SELECT count(*) FROM accounts WHERE name = 'ann'"), [["1"]], None)
    r = c.bulk("INSERT INTO accounts (name) VALUES (?)", [what])
    if not r.ok:
        raise TestFailure("%s: the next client's INSERT: %r" % (what, r))
    eq(_advisory_locks(pg, db), 0, "%s: advisory locks left on the connection" % what)


def test_pg_session_state_never_reaches_the_next_client():
    """Item 7: on a pool of one connection, what a read-only or read-write
    client changes in the session (outside or inside its transaction) is
    gone before the next client's statement runs."""
    pg = shared()
    with pg.database() as db, _daemon(pg, db) as d:
        create_accounts(pg, db, rows=("ann",))
        pg.psql(["CREATE SCHEMA other", "CREATE TABLE other.accounts (x int)"], db=db, user=USER)
        alice, bob, carol = _users(d)
        # (A held BEGIN starts on the bind of the first statement that names
        # a table: each transaction below reads accounts first.)
        changes = [
            ["SET search_path = pg_temp"],
            ["SET search_path = other"],
            ["SELECT set_config('search_path', 'other', false)"],
            ["SET default_transaction_read_only = on"],
            ["SELECT set_config('default_transaction_read_only', 'on', false)"],
            ["SET ROLE NONE"],
            ["SELECT pg_advisory_lock(7)"],
            ["SELECT pg_advisory_lock_shared(8)"],
            ["SELECT pg_try_advisory_lock(9)"],
            ["LISTEN sneaky"],
            ["PREPARE sqlmux_1 AS SELECT 1"],
            ["PREPARE mine AS SELECT 1"],
            ["BEGIN", "SELECT count(*) FROM accounts", "SET search_path = other", "COMMIT"],
            ["BEGIN", "SELECT count(*) FROM accounts", "SELECT set_config('search_path', 'other', false)", "COMMIT"],
            ["BEGIN", "SELECT count(*) FROM accounts", "SELECT pg_advisory_lock(10)", "ROLLBACK"],
            ["BEGIN", "SELECT count(*) FROM accounts", "DECLARE held CURSOR WITH HOLD FOR SELECT 1", "COMMIT"],
        ]
        rw_only = [["CREATE TEMP TABLE accounts (x int)"],
                   ["SELECT 1 AS x INTO TEMP accounts"],
                   ["DO $$ BEGIN PERFORM set_config('search_path', 'other', false); END $$"]]
        for who, name in ((carol, "carol"), (alice, "alice")):
            for steps in changes + (rw_only if who is alice else []):
                for sql in steps:
                    who.request(sql)
                who.request("ROLLBACK")
                _expect_clean_session(pg, db, bob, "%s: %s" % (name, " / ".join(steps)))
        # The prepared-statement cache knows DISCARD ALL dropped its
        # statements: a request with parameters still works after each.
        for _ in range(3):
            expect_rows(bob.bulk("SELECT count(*) FROM accounts WHERE name = ?", ["ann"]), [["1"]])
            expect_ok(alice.request("SET search_path = other"))
        expect_rows(bob.bulk("SELECT count(*) FROM accounts WHERE name = ?", ["ann"]), [["1"]])


def test_pg_read_only_user_cannot_write_large_objects():
    """Item 5: large objects are written although a transaction is
    read-only; a read-only user's statement that wrote gets -ERR NOPERM and
    is rolled back, alone or inside its transaction."""
    pg = shared()
    with pg.database() as db, _daemon(pg, db) as d:
        create_accounts(pg, db, rows=("ann",))
        oid = pg.psql("SELECT lo_from_bytea(0, 'kept')", db=db, user=USER)[0][0]
        alice, bob, carol = _users(d)
        writes = ["SELECT lo_from_bytea(0, '\\x41')", "SELECT lo_create(0)", "SELECT lo_creat(-1)",
                  "SELECT lo_put(%s, 0, '\\x58')" % oid, "SELECT lo_unlink(%s)" % oid,
                  "SELECT lo_truncate(lo_open(%s, 131072), 0)" % oid]
        for sql in writes:
            r = expect_err(carol.request(sql), "NOPERM")
            if "read-only" not in r.err_msg:
                raise TestFailure("%s: want a read-only message, got %r" % (sql, r.err_msg))
            expect_ok(carol.request("BEGIN"))
            expect_rows(carol.request("SELECT count(*) FROM accounts"), [["1"]], None)
            expect_err(carol.request(sql), "NOPERM")
            expect_err(carol.request("SELECT 1"), "SQL")   # the transaction is aborted
            expect_ok(carol.request("ROLLBACK"))
        eq(pg.psql("SELECT count(*) FROM pg_largeobject_metadata", db=db), [["1"]], "large objects")
        eq(pg.psql("SELECT encode(lo_get(%s), 'escape')" % oid, db=db), [["kept"]], "the kept one")
        # Reading them stays allowed; a read-write user may write them.
        expect_rows(carol.request("SELECT encode(lo_get(%s), 'escape')" % oid), [["kept"]], None)
        expect_ok(carol.request("BEGIN"))
        expect_rows(carol.request("SELECT encode(lo_get(%s), 'escape')" % oid), [["kept"]], None)
        expect_ok(carol.request("COMMIT"))
        r = alice.request("SELECT lo_from_bytea(0, 'new') IS NOT NULL")
        expect_rows(r, [["t"]], None)
        eq(pg.psql("SELECT count(*) FROM pg_largeobject_metadata", db=db), [["2"]], "alice's large object")


def test_pg_read_only_user_cannot_lock_out_writers():
    """Item 6: a read-only user's LOCK TABLE (any mode but ACCESS SHARE)
    or advisory lock inside its transaction gets -ERR NOPERM and aborts
    that transaction, which releases the lock: writers are not blocked."""
    pg = shared()
    with pg.database() as db, _daemon(pg, db, opts={"pool_size": "4"}) as d:
        create_accounts(pg, db, rows=("ann",))
        alice, bob, carol = _users(d)
        for mode in ("ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE ROW EXCLUSIVE", "SHARE",
                     "SHARE UPDATE EXCLUSIVE", "ROW EXCLUSIVE", "ROW SHARE"):
            expect_ok(carol.request("BEGIN"))
            expect_rows(carol.request("SELECT count(*) FROM accounts"), [["1"]], None)
            r = expect_err(carol.request("LOCK TABLE accounts IN %s MODE" % mode), "NOPERM")
            if "lock" not in r.err_msg:
                raise TestFailure("LOCK %s: want a message about locks, got %r" % (mode, r.err_msg))
            # Carol has not ended her transaction: a writer still gets through.
            expect_status(alice.request("UPDATE accounts SET balance = balance + 1"), "+OK changes=1")
            expect_ok(carol.request("ROLLBACK"))
        for sql in ("DO $$ BEGIN LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE; END $$",
                    "SELECT pg_advisory_xact_lock(3)", "SELECT pg_advisory_lock(4)"):
            expect_ok(carol.request("BEGIN"))
            expect_rows(carol.request("SELECT count(*) FROM accounts"), [["1"]], None)
            expect_err(carol.request(sql), "NOPERM")
            expect_status(alice.request("UPDATE accounts SET balance = balance + 1"), "+OK changes=1")
            expect_ok(carol.request("ROLLBACK"))
        eq(_advisory_locks(pg, db), 0, "advisory locks")
        # ACCESS SHARE is what reading takes: allowed.
        expect_ok(carol.request("BEGIN"))
        expect_ok(carol.request("LOCK TABLE accounts IN ACCESS SHARE MODE"))
        expect_rows(carol.request("SELECT balance FROM accounts"), [["10.00"]], None)
        expect_ok(carol.request("COMMIT"))



def test_pg_text_parameter_with_nul_is_refused():
    """Item 16: PostgreSQL text cannot hold a NUL byte; libpq would cut the
    value there and store the rest silently. The request gets -ERR
    MISMATCH and nothing is stored; a blob parameter keeps its NULs."""
    pg = shared()
    with pg.database() as db, _daemon(pg, db) as d:
        create_accounts(pg, db)
        alice = login(d, "alice")
        expect_ok(alice.request(".use pg"))
        for send in (alice.bulk, alice.inline):
            r = expect_err(send("INSERT INTO accounts (name) VALUES (?)", ["abc\0SECRET"]), "MISMATCH")
            if "NUL" not in r.err_msg or "parameter 1" not in r.err_msg:
                raise TestFailure("want a message naming parameter 1 and NUL, got %r" % r.err_msg)
            r = expect_err(send("SELECT ?::int AS a, ?::text AS b", [1, "\0"]), "MISMATCH")
            if "parameter 2" not in r.err_msg:
                raise TestFailure("want a message naming parameter 2, got %r" % r.err_msg)
        eq(pg.psql("SELECT count(*) FROM accounts", db=db), [["0"]], "rows stored")
        # The connection and its transaction go on; blobs keep their NULs.
        expect_ok(alice.request("BEGIN"))
        expect_status(alice.bulk("INSERT INTO accounts (name, data) VALUES (?, ?)", ["blob", b"a\0b"]),
                      "+OK changes=1")
        expect_err(alice.bulk("UPDATE accounts SET name = ?", ["x\0y"]), "MISMATCH")
        expect_ok(alice.request("COMMIT"))
        eq(pg.psql("SELECT name, length(data) FROM accounts", db=db), [["blob", "3"]], "the blob row")


def test_pg_nested_comments_hide_placeholders():
    """Item 19: PostgreSQL block comments nest, so a ? inside an inner or
    outer comment is no placeholder, and the statement is sent as is."""
    pg = shared()
    with pg.database() as db, _daemon(pg, db) as d:
        create_accounts(pg, db, rows=("ann",))
        alice = login(d, "alice")
        expect_ok(alice.request(".use pg"))
        for send in (alice.bulk, alice.inline):
            expect_rows(send("SELECT ?::text AS b /* /* ? */ ? */", ["x"]), [["x"]], None)
            expect_rows(send("SELECT /* a /* b /* ? */ ? */ ? */ ?::text AS b, ?::int AS c", ["y", 2]),
                        [["y", "2"]], None)
            expect_rows(send("SELECT name FROM accounts /* /* */ WHERE name = ? */ WHERE name = ?",
                             ["ann"]), [["ann"]], None)
            # The comment ends where PostgreSQL ends it, not at the first */.
            r = expect_err(send("SELECT ?::text /* /* */ ? */, ?::text", ["a"]), "PARAMS")
            if "2 parameters" not in r.err_msg:
                raise TestFailure("want 2 parameters counted, got %r" % r.err_msg)


def _log_lines(d, text):
    return [l for l in d.stderr_text().splitlines() if text in l]


def test_pg_notices_go_through_the_log():
    """Item 20: PostgreSQL's notices and warnings reach the daemon's log as
    log lines naming the bind and the client (WARNING at warn, the rest at
    debug), never as libpq's raw stderr text."""
    pg = shared()
    for level in ("info", "debug"):
        with pg.database() as db, _daemon(pg, db, server={"log_level": level}) as d:
            alice = login(d, "alice")
            expect_ok(alice.request(".use pg"))
            expect_ok(alice.request("DO $$ BEGIN RAISE WARNING 'careful now'; END $$"))
            expect_ok(alice.request("DO $$ BEGIN RAISE NOTICE 'just saying'; END $$"))
            expect_ok(alice.request("ROLLBACK"))   # WARNING: there is no transaction in progress
            expect_ok(alice.request(".ping"))
            cid = "c" + alice.request(".clients").rows[-1][0]
            warn = _log_lines(d, "careful now")
            if len(warn) != 1 or not re.search(r"^\S+ \S+ WARN bind pg: %s: WARNING: careful now "
                                               r"\(SQLSTATE 01000\)$" % cid, warn[0]):
                raise TestFailure("want one WARN log line for the warning, got %r" % warn)
            if len(_log_lines(d, "there is no transaction in progress")) != 1:
                raise TestFailure("want the ROLLBACK warning logged once:\n%s" % d.stderr_text())
            notice = _log_lines(d, "just saying")
            if level == "info" and notice:
                raise TestFailure("a NOTICE logged at info level: %r" % notice)
            if level == "debug" and (len(notice) != 1 or " DEBUG bind pg: " not in notice[0]):
                raise TestFailure("want one DEBUG line for the notice, got %r" % notice)
            raw = [l for l in d.stderr_text().splitlines() if l.startswith(("WARNING:", "NOTICE:"))]
            if raw:
                raise TestFailure("libpq's raw notice text on stderr: %r" % raw)
