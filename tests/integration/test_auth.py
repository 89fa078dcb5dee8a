"""Authentication and grants: [user.NAME] sections with crypt(3) hashes from
`sqlmuxd passwd`, `.auth USER PASSWORD`, per-bind none/read/read-write
grants enforced by the backend (SQLite: sqlite3_stmt_readonly), admin-only
commands, reloads that change users, protected mode and the unix socket's
group. The PostgreSQL side of read-only grants is in test_pg_auth.py."""

import crypt
import grp
import os
import socket
import subprocess
import time

from harness import (Daemon, TestFailure, daemon_binary, eq, expect_err, expect_ok, expect_rows,
                     expect_status, make_config, run_once, standard_files)

PASSWORDS = {"alice": "wonder land", "bob": "b0b-secret", "carol": "c"}
DELAY_MS = 400


def passwd(password, user=None):
    """What `sqlmuxd passwd [USER]` prints for a password on stdin."""
    p = subprocess.run([daemon_binary(), "passwd"] + ([user] if user else []),
                       input=(password + "\n").encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    if p.returncode != 0:
        raise TestFailure("sqlmuxd passwd failed: %s" % p.stderr.decode())
    return p.stdout.decode()


_HASHES = {}


def hash_of(user):
    if user not in _HASHES:
        _HASHES[user] = passwd(PASSWORDS[user]).strip()
    return _HASHES[user]


def users_text(grants=None):
    """alice: admin, read-write everywhere; bob: read on default, nothing on
    second_db, read-write on memory_db; carol: read on everything."""
    grants = grants or {
        "alice": ["admin = on", "grant.* = read-write"],
        "bob": ["grant.default = read", "grant.second_db = none", "grant.memory_db = read-write"],
        "carol": ["grant.* = read"],
    }
    out = []
    for user, lines in grants.items():
        out += ["[user.%s]" % user, "password = %s" % hash_of(user)] + lines
    return "\n".join(out) + "\n"


def auth_daemon(grants=None, server=None, **kw):
    srv = {"auth_fail_delay": str(DELAY_MS)}
    srv.update(server or {})
    return Daemon(config=make_config(server=srv, **kw) + users_text(grants))


def login(d, user, password=None):
    c = d.connect()
    expect_status(c.request(".auth %s %s" % (user, password or PASSWORDS[user])), "+OK user=%s" % user)
    return c


def test_passwd_prints_a_crypt_hash():
    h = passwd("s3cret word")
    line = h.strip()
    if not line.startswith("$") or "\n" in line:
        raise TestFailure("want one $id$ hash line, got %r" % h)
    eq(crypt.crypt("s3cret word", line), line, "the hash verifies the password")
    if crypt.crypt("s3cret wore", line) == line:
        raise TestFailure("a different password verifies too")
    if passwd("s3cret word").strip() == line:
        raise TestFailure("two hashes of one password are equal: no random salt")
    section = passwd("x", user="svc_1")
    lines = section.splitlines()
    eq(lines[0], "[user.svc_1]", "section header")
    if not lines[1].startswith("password = $"):
        raise TestFailure("want 'password = HASH', got %r" % lines[1])
    p = subprocess.run([daemon_binary(), "passwd", "bad name"], input=b"x\n", capture_output=True)
    eq(p.returncode, 2, "bad user name: usage")
    p = subprocess.run([daemon_binary(), "passwd"], input=b" padded \n", capture_output=True)
    if p.returncode == 0 or b"blank" not in p.stderr:
        raise TestFailure("a password with outer blanks: want a refusal, got %r %r" % (p.returncode, p.stderr))
    p = subprocess.run([daemon_binary(), "passwd"], input=b"", capture_output=True)
    if p.returncode == 0 or b"no password" not in p.stderr:
        raise TestFailure("empty stdin: want an error, got %r %r" % (p.returncode, p.stderr))


def test_nothing_before_auth():
    with auth_daemon() as d:
        c = d.connect()
        expect_ok(c.request(".ping"))
        expect_ok(c.request(".help"))
        expect_err(c.request("SELECT 1"), "NOAUTH")
        expect_err(c.request("SELECT * FROM test1"), "NOAUTH")
        expect_err(c.request("INSERT INTO test1 (color) VALUES ('x')"), "NOAUTH")
        for cmd in (".binds", ".tables", ".map", ".route SELECT 1", ".use second_db", ".version",
                    ".stats", ".clients", ".reload", ".save"):
            expect_err(c.request(cmd), "NOAUTH")
        expect_ok(c.request(".quit"))
        eq(d.file_query("app.db", "SELECT count(*) FROM test1"), [(0,)], "nothing written")


def test_wrong_password_and_unknown_user_look_the_same():
    with auth_daemon() as d:
        c = d.connect()
        answers = []
        for user, pw in (("alice", "wrong"), ("nosuchuser", "wrong"), ("alice", PASSWORDS["bob"]),
                         ("Alice", PASSWORDS["alice"])):
            t0 = time.time()
            r = c.request(".auth %s %s" % (user, pw))
            took = time.time() - t0
            expect_err(r, "AUTH")
            answers.append(r.status)
            if took < DELAY_MS / 1000.0 * 0.9:
                raise TestFailure(".auth %s: answered after %.3f s, want the %d ms failure delay"
                                  % (user, took, DELAY_MS))
        eq(len(set(answers)), 1, "one answer whether or not the user exists: %r" % answers)
        if "nosuchuser" in answers[0] or "alice" in answers[0]:
            raise TestFailure("the answer names the user: %r" % answers[0])
        # Still unauthenticated; then the right password works at once. Its
        # hash check may itself be slow on a loaded machine (ASan, other
        # tests): a fresh connection tries again, twice at most; the delay
        # would hold every try.
        expect_err(c.request("SELECT 1"), "NOAUTH")
        for attempt in range(3):
            conn = c if attempt == 0 else d.connect()
            t0 = time.time()
            expect_status(conn.request(".auth alice %s" % PASSWORDS["alice"]), "+OK user=alice")
            took = time.time() - t0
            if took < DELAY_MS / 1000.0:
                break
        else:
            raise TestFailure("a right password waited out the failure delay (%.3f s)" % took)
        expect_rows(c.request("SELECT 1"), [["1"]])
        for bad in (".auth", ".auth alice", ".auth %s %s" % ("u" * 300, "x")):
            expect_err(c.request(bad), "ARGS")
        log = d.stderr_text()
        for secret in ("wrong", PASSWORDS["alice"], PASSWORDS["bob"]):
            if secret in log:
                raise TestFailure("the log shows a password %r:\n%s" % (secret, log))


def test_requests_pipelined_after_auth_wait_for_it():
    with auth_daemon() as d:
        c = d.connect()
        c.send((".auth bob wrong\nSELECT 1\n.auth bob %s\nSELECT 2\n.auth carol nope\nSELECT 3\n"
                % PASSWORDS["bob"]).encode())
        r = c.read_responses(6)
        expect_err(r[0], "AUTH")
        expect_err(r[1], "NOAUTH")
        expect_status(r[2], "+OK user=bob")
        expect_rows(r[3], [["2"]])
        # A failed .auth keeps the user the session had.
        expect_err(r[4], "AUTH")
        expect_rows(r[5], [["3"]])


def test_auth_is_off_without_users(d):
    c = d.connect()
    expect_err(c.request(".auth alice x"), "AUTH")
    expect_ok(c.request("INSERT INTO test1 (color) VALUES ('free')"))
    expect_ok(c.request(".stats"))


def test_grants_none_and_read_write():
    with auth_daemon() as d:
        bob = login(d, "bob")
        expect_rows(bob.request("SELECT count(*) FROM test1"), [["0"]])        # default: read
        r = expect_err(bob.request("SELECT * FROM test2"), "NOPERM")           # second_db: none
        if "second_db" not in r.err_msg:
            raise TestFailure("the message should name the bind: %r" % r.err_msg)
        expect_err(bob.request("INSERT INTO test2 (color) VALUES ('x')"), "NOPERM")
        expect_err(bob.request("SELECT count(*) FROM audit_log"), "NOPERM")    # pattern -> second_db
        expect_ok(bob.request("INSERT INTO test3 (color) VALUES ('mem')"))      # memory_db: read-write
        expect_rows(bob.request("SELECT color FROM test3"), [["mem"]])
        expect_ok(bob.request(".use second_db"))
        expect_err(bob.request("SELECT 1"), "NOPERM")
        expect_ok(bob.request(".use memory_db"))
        expect_rows(bob.request("SELECT 1"), [["1"]])
        # A transaction on a bind without access cannot begin.
        expect_status(bob.request("BEGIN"), "+OK changes=0")
        expect_err(bob.request("SELECT * FROM test2"), "NOPERM")
        expect_ok(bob.request("ROLLBACK"))
        alice = login(d, "alice")
        expect_ok(alice.request("INSERT INTO test2 (color) VALUES ('a')"))
        eq(d.file_query("second.db", "SELECT color FROM test2"), [("a",)], "alice wrote second_db")


def _expect_readonly(c, sql):
    r = c.request(sql)
    if r.ok or r.err_code != "NOPERM":
        raise TestFailure("%s: want -ERR NOPERM, got %r" % (sql, r.status))
    if "read-only" not in r.err_msg:
        raise TestFailure("%s: want a read-only message, got %r" % (sql, r.err_msg))


def test_read_only_user_cannot_write_sqlite():
    with auth_daemon() as d:
        alice = login(d, "alice")
        expect_ok(alice.request("INSERT INTO test1 (color) VALUES ('keep')"))
        expect_ok(alice.request("CREATE VIEW v1 AS SELECT id, color FROM test1"))
        expect_ok(alice.request("CREATE INDEX test1_c ON test1 (color)"))   # REINDEX has work
        expect_ok(alice.bulk("CREATE TRIGGER v1_ins INSTEAD OF INSERT ON v1 BEGIN "
                             "INSERT INTO test1 (color) VALUES (NEW.color); END"))
        carol = login(d, "carol")
        expect_rows(carol.request("SELECT color FROM test1"), [["keep"]])
        expect_rows(carol.request("WITH x AS (SELECT color FROM test1) SELECT count(*) FROM x"), [["1"]])
        writes = [
            "INSERT INTO test1 (color) VALUES ('no')",
            "INSERT INTO test1 (color) VALUES ('no') RETURNING id",
            "REPLACE INTO test1 (id, color) VALUES (1, 'no')",
            "UPDATE test1 SET color = 'no'",
            "DELETE FROM test1",
            "WITH x AS (SELECT 'no' AS c) INSERT INTO test1 (color) SELECT c FROM x",
            "WITH x AS (SELECT 1) DELETE FROM test1",
            "INSERT INTO v1 (color) VALUES ('via trigger')",
            "CREATE TABLE t_new (a)",
            "CREATE INDEX test1_color ON test1 (color)",
            "CREATE VIEW v2 AS SELECT 1",
            "CREATE TRIGGER t2 AFTER INSERT ON test1 BEGIN SELECT 1; END",
            "ALTER TABLE test1 ADD COLUMN extra",
            "DROP TABLE test1",
            "DROP VIEW v1",
            "BEGIN IMMEDIATE",
            "VACUUM",
            "ANALYZE",
            "REINDEX",
        ]
        for sql in writes:
            if sql == "BEGIN IMMEDIATE":
                # carol may write no bind: refused on the BEGIN itself
                # (test_txn_safety.test_readonly_begin_immediate).
                expect_err(carol.request(sql), "NOPERM")
                expect_err(carol.request("ROLLBACK"), "SQL")
                continue
            _expect_readonly(carol, sql)
        # Inside a transaction too, and it stays usable.
        expect_status(carol.request("BEGIN"), "+OK changes=0")
        expect_rows(carol.request("SELECT count(*) FROM test1"), [["1"]])
        _expect_readonly(carol, "UPDATE test1 SET color = 'txn'")
        expect_rows(carol.request("SELECT color FROM test1"), [["keep"]])
        expect_ok(carol.request("COMMIT"))
        # Pipelined (one batch on the worker): each write refused, reads answered.
        carol.send(b"SELECT 1 FROM test1\nDELETE FROM test1\nSELECT color FROM test1\n"
                   b"UPDATE test1 SET color = 'p'\nSELECT count(*) FROM test1\n")
        r = carol.read_responses(5)
        expect_rows(r[0], [["1"]])
        expect_err(r[1], "NOPERM")
        expect_rows(r[2], [["keep"]])
        expect_err(r[3], "NOPERM")
        expect_rows(r[4], [["1"]])
        eq(d.file_query("app.db", "SELECT id, color FROM test1"), [(1, "keep")], "test1 unchanged")
        eq(d.file_query("app.db", "SELECT type, name FROM sqlite_master ORDER BY name"),
           [("table", "test1"), ("index", "test1_c"), ("view", "v1"), ("trigger", "v1_ins")],
           "no table, view, index or trigger added or dropped")
        # The same statements still work for a read-write user (the
        # statement cache is shared by the connections' users).
        expect_ok(alice.request("UPDATE test1 SET color = 'changed'"))
        expect_ok(alice.request("INSERT INTO v1 (color) VALUES ('via trigger')"))
        eq(d.file_query("app.db", "SELECT color FROM test1 ORDER BY id"), [("changed",), ("via trigger",)],
           "alice's writes")


def test_admin_commands_need_admin():
    with auth_daemon() as d:
        bob = login(d, "bob")
        for cmd in (".stats", ".clients", ".reload", ".save", ".migrations"):
            r = expect_err(bob.request(cmd), "NOPERM")
            if "admin" not in r.err_msg:
                raise TestFailure("%s: the message should say admin is needed: %r" % (cmd, r.err_msg))
        for cmd in (".binds", ".map", ".version", ".route SELECT * FROM test2", ".tables default"):
            expect_ok(bob.request(cmd))
        alice = login(d, "alice")
        expect_ok(alice.request(".stats"))
        r = expect_ok(alice.request(".clients"))
        users = sorted(row[r.names.index("user")] for row in r.rows)
        eq(users, ["alice", "bob"], ".clients user column")
        expect_ok(alice.request(".reload"))


def test_reload_changes_grants_and_users():
    grants = {
        "alice": ["admin = on", "grant.* = read-write"],
        "bob": ["grant.default = read"],
    }
    with auth_daemon(grants=grants) as d:
        bob = login(d, "bob")
        alice = login(d, "alice")
        _expect_readonly(bob, "INSERT INTO test1 (color) VALUES ('no')")
        # bob gets read-write on default.
        grants["bob"] = ["grant.default = read-write"]
        d.rewrite_config(config=make_config(server={"auth_fail_delay": str(DELAY_MS)}) + users_text(grants))
        expect_ok(alice.request(".reload"))
        expect_ok(bob.request("INSERT INTO test1 (color) VALUES ('yes')"))
        # bob is removed: his connection must authenticate again.
        del grants["bob"]
        d.rewrite_config(config=make_config(server={"auth_fail_delay": str(DELAY_MS)}) + users_text(grants))
        expect_ok(alice.request(".reload"))
        expect_err(bob.request("SELECT 1"), "NOAUTH")
        expect_err(bob.request(".auth bob %s" % PASSWORDS["bob"]), "AUTH")
        expect_status(bob.request(".auth alice %s" % PASSWORDS["alice"]), "+OK user=alice")
        # Without any user, authentication is off for everyone.
        d.rewrite_config(config=make_config())
        expect_ok(alice.request(".reload"))
        fresh = d.connect()
        expect_ok(fresh.request("INSERT INTO test1 (color) VALUES ('open')"))
        eq(d.file_query("app.db", "SELECT color FROM test1 ORDER BY id"), [("yes",), ("open",)], "rows")


def test_client_gone_during_check_or_delay():
    with auth_daemon() as d:
        for line in (".auth alice %s\n" % PASSWORDS["alice"], ".auth alice wrong\n",
                     ".auth alice wrong\nSELECT 1\n"):
            for pause in (0, 0.05, DELAY_MS / 2000.0):
                s = socket.create_connection(d.addr)
                s.sendall(line.encode())
                time.sleep(pause)
                s.close()
        c = login(d, "alice")
        expect_rows(c.request("SELECT 1"), [["1"]])
        # The daemon stops cleanly with a check in flight.
        s = socket.create_connection(d.addr)
        s.sendall(b".auth alice wrong\n")
        time.sleep(0.05)
    eq(d.exit_status, 0, "exit status")


def test_config_users_errors():
    base = make_config()
    cases = [
        ("[user.x]\ngrant.* = read\n", "has no password"),
        ("[user.x]\npassword = plaintext\n", "not a crypt(3) hash"),
        ("[user.x]\npassword = abJnggxhB/yWI\n", "not a crypt(3) hash"),   # DES
        ("[user.x]\npassword = %s\ngrant.nosuch = read\n" % hash_of("carol"), "no bind 'nosuch'"),
        ("[user.x]\npassword = %s\ngrant.default = write\n" % hash_of("carol"), "not one of none, read, read-write"),
        ("[user.x]\npassword = %s\nadmin = maybe\n" % hash_of("carol"), "not a boolean"),
        ("[user.x]\npassword = %s\nrole = admin\n" % hash_of("carol"), "unknown key 'role'"),
        ("[user.x]\npassword = %s\npassword = %s\n" % (hash_of("carol"), hash_of("bob")), "duplicate key 'password'"),
        ("[user.bad name]\n", "bad user name"),
    ]
    for extra, want in cases:
        rc, out, err, _, _ = run_once(base + extra, check=True, files=standard_files())
        if rc == 0 or want not in err:
            raise TestFailure("%r: want an error with %r, got %d %r" % (extra, want, rc, err))
        if "sqlmux.ini:" not in err:
            raise TestFailure("want file:line in %r" % err)
    rc, out, err, _, _ = run_once(base + users_text(), check=True, files=standard_files())
    eq(rc, 0, "valid users: " + err)
    for want in ("user alice: admin", "user bob grant second_db = none", "user bob grant default = read",
                 "user carol grant memory_db = read", "user alice grant second_db = read-write"):
        if want not in out:
            raise TestFailure("--check-config output lacks %r:\n%s" % (want, out))
    if hash_of("alice") in out:
        raise TestFailure("--check-config prints a password hash")


def test_protected_mode_follows_users():
    wide = make_config(server={"listen": "0.0.0.0:{port}"})
    rc, _, err, _, _ = run_once(wide, check=True, files=standard_files())
    if rc == 0 or "protected mode" not in err or "user" not in err:
        raise TestFailure("no users, listen 0.0.0.0: want a protected-mode refusal, got %d %r" % (rc, err))
    rc, _, err, _, _ = run_once(wide + users_text(), check=True, files=standard_files())
    eq(rc, 0, "with users, 0.0.0.0 is allowed: " + err)
    with Daemon(config=wide + users_text()) as d:
        c = d.connect()
        expect_err(c.request("SELECT 1"), "NOAUTH")
        expect_status(c.request(".auth carol c"), "+OK user=carol")


def test_unix_socket_mode_and_group():
    group = grp.getgrnam("daemon")
    with Daemon(config=make_config(unix=True, server={"unix_socket_mode": "0640",
                                                      "unix_socket_group": "daemon"})) as d:
        st = os.stat(d.unix_socket)
        eq(st.st_gid, group.gr_gid, "socket group")
        eq(oct(st.st_mode & 0o777), oct(0o640), "socket mode")
        c = d.connect(d.unix_socket)
        expect_ok(c.request(".ping"))
    with Daemon(config=make_config(unix=True, server={"unix_socket_group": str(group.gr_gid)})) as d:
        eq(os.stat(d.unix_socket).st_gid, group.gr_gid, "numeric group")
    rc, _, err, _, _ = run_once(make_config(unix=True, server={"unix_socket_group": "no-such-group-x"}),
                                files=standard_files())
    if rc == 0 or "unix_socket_group = no-such-group-x: no such group" not in err:
        raise TestFailure("unknown group: want a clear refusal, got %d %r" % (rc, err))


def test_read_only_check_covers_cached_statements():
    # One connection: a write that alice prepared (and the connection
    # cached, authorized for her) must still be refused to carol.
    with auth_daemon(bind_opts={"default": {"pool_size": "1"}}) as d:
        alice = login(d, "alice")
        carol = login(d, "carol")
        for _ in range(3):
            expect_ok(alice.request("UPDATE test1 SET color = 'a'"))
            expect_ok(alice.bulk("INSERT INTO test1 (color) VALUES (?)", ["a"]))
        _expect_readonly(carol, "UPDATE test1 SET color = 'a'")
        r = carol.bulk("INSERT INTO test1 (color) VALUES (?)", ["c"])
        expect_err(r, "NOPERM")
        expect_ok(alice.request("UPDATE test1 SET color = 'a'"))
        eq(d.file_query("app.db", "SELECT DISTINCT color FROM test1"), [("a",)], "carol wrote nothing")


def test_tables_lists_only_readable_binds():
    with auth_daemon() as d:
        bob = login(d, "bob")   # second_db: none
        r = expect_ok(bob.request(".tables"))
        binds = sorted(set(row[r.names.index("bind")] for row in r.rows))
        eq(binds, ["default", "memory_db"], ".tables binds for bob")
        expect_err(bob.request(".tables second_db"), "NOPERM")
        alice = login(d, "alice")
        r = expect_ok(alice.request(".tables"))
        eq(sorted(set(row[r.names.index("bind")] for row in r.rows)), ["default", "memory_db", "second_db"],
           ".tables binds for alice")


def test_login_timeout_closes_clients_that_never_log_in():
    with auth_daemon(server={"login_timeout": "600"}) as d:
        lurker = d.connect()
        expect_ok(lurker.request(".ping"))          # commands before .auth do not count
        alice = login(d, "alice")
        t0 = time.time()
        r = lurker.read_response()
        expect_err(r, "TIMEOUT")
        if "login_timeout" not in r.err_msg:
            raise TestFailure("want a message naming login_timeout, got %r" % r.err_msg)
        if time.time() - t0 > 5:
            raise TestFailure("closed only after %.1f s" % (time.time() - t0))
        lurker.wait_closed()
        time.sleep(0.7)
        expect_rows(alice.request("SELECT 1"), [["1"]])   # a logged-in client stays
    # Without users there is nothing to log in to: no login timeout.
    with Daemon(server={"login_timeout": "300"}) as d:
        c = d.connect()
        time.sleep(0.8)
        expect_rows(c.request("SELECT 1"), [["1"]])
