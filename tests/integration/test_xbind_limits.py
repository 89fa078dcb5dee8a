"""Statements across binds (issue 15): grants (read on every bind read,
read-write on the bind written, else -ERR NOPERM naming the bind), the
attach limit (more SQLite binds than one connection can attach: -ERR
BINDLIMIT saying so), and binds attached again after the limit made the
executor detach them."""

from harness import Daemon, eq, expect_err, expect_ok, expect_rows, expect_status, make_config
from test_auth import login, users_text


def grants_daemon():
    grants = {
        "alice": ["admin = on", "grant.* = read-write"],
        "bob": ["grant.default = read", "grant.second_db = none", "grant.memory_db = read-write"],
        "carol": ["grant.* = read"],
    }
    return Daemon(config=make_config(server={"auth_fail_delay": "0"}) + users_text(grants))


def test_grants():
    with grants_daemon() as d:
        a = login(d, "alice")
        for t in ("test1", "test2", "test3"):
            expect_ok(a.request("INSERT INTO %s (id, color) VALUES (1, '%s')" % (t, t)))
        bob = login(d, "bob")
        # bob reads default and memory_db, writes memory_db, has no second_db.
        expect_rows(bob.request("SELECT test1.color, test3.color FROM test1 JOIN test3 USING (id)"),
                    [["test1", "test3"]])
        r = expect_err(bob.request("SELECT * FROM test1 JOIN test2 USING (id)"), "NOPERM")
        if "second_db" not in r.err_msg:
            raise AssertionError("NOPERM does not name the bind: %r" % r.status)
        expect_status(bob.request("UPDATE test3 SET color = (SELECT color FROM test1 WHERE id = 1)"),
                      "+OK changes=1")
        r = expect_err(bob.request("INSERT INTO test1 (id, color) SELECT id + 1, color FROM test3"), "NOPERM")
        if "default" not in r.err_msg or "write" not in r.err_msg:
            raise AssertionError("NOPERM does not name the bind written: %r" % r.status)
        # carol reads everything, writes nothing.
        carol = login(d, "carol")
        expect_rows(carol.request("SELECT count(*) FROM test1, test2, test3"), [["1"]])
        r = expect_err(carol.request("DELETE FROM test2 WHERE id IN (SELECT id FROM test1)"), "NOPERM")
        if "second_db" not in r.err_msg:
            raise AssertionError("NOPERM does not name second_db: %r" % r.status)
        expect_rows(a.request("SELECT color FROM test2"), [["test2"]])
        expect_rows(a.request("SELECT color FROM test1 ORDER BY id"), [["test1"]])


def many_binds(n):
    binds = [("default", "sqlite:///app.db")] + [("b%d" % i, "sqlite:///b%d.db" % i) for i in range(1, n)]
    tables = [("t%d" % i, "b%d" % i) for i in range(1, n)]
    return Daemon(binds=binds, tables=tables, schemas=False)


def test_bind_limit():
    with many_binds(12) as d:
        c = d.connect()
        expect_ok(c.request("CREATE TABLE t0 (id INTEGER PRIMARY KEY, v)"))
        expect_ok(c.request("INSERT INTO t0 VALUES (1, 0)"))
        for i in range(1, 12):
            expect_ok(c.request("CREATE TABLE t%d (id INTEGER PRIMARY KEY, v)" % i))
            expect_ok(c.request("INSERT INTO t%d VALUES (1, %d)" % (i, i)))

        def join(k):
            return "SELECT " + " + ".join("t%d.v" % i for i in range(k)) + " FROM t0" + "".join(
                " JOIN t%d USING (id)" % i for i in range(1, k))

        expect_rows(c.request(join(10)), [[str(sum(range(10)))]])
        r = expect_err(c.request(join(11)), "BINDLIMIT")
        if "11 SQLite binds" not in r.err_msg or "at most 10" not in r.err_msg:
            raise AssertionError("BINDLIMIT does not say why: %r" % r.status)
        # Binds t10 and t11 need others detached: answers stay right.
        for k in range(2, 12):
            expect_rows(c.request("SELECT t0.v + t%d.v FROM t0 JOIN t%d USING (id)" % (k - 1, k - 1)),
                        [[str(k - 1)]])
        expect_rows(c.request("SELECT t11.v, t10.v, t1.v FROM t11, t10, t1"), [["11", "10", "1"]])
        expect_rows(c.request(join(10)), [[str(sum(range(10)))]])
        eq(c.request("SELECT 1").status, "+OK rows=1", "still usable")
