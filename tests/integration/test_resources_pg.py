"""Resource limits on PostgreSQL binds: max_value is checked on every field
(PQgetlength, before anything is copied or encoded); a larger value is
answered -ERR TOOBIG and the statement's later rows are dropped, the
connection and the pool stay usable."""

from harness import TestFailure, eq, expect_err, expect_ok, expect_rows
from pgfixture import pg_daemon, shared


def test_pg_max_value_is_checked_on_fields():
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, server={"max_value": "100k"}, opts={"pool_size": "1"},
                                        tables=(("big", None),)) as d:
        c = d.connect()
        expect_ok(c.request("CREATE TABLE big (id int, t text, b bytea)"))
        expect_ok(c.request("INSERT INTO big SELECT g, repeat('x', g * 1000), decode(repeat('ab', g * 1000), 'hex') "
                            "FROM generate_series(1, 200) g"))
        # Up to max_value (102,400 bytes): answered; bytea counts its bytes,
        # not its hex text.
        expect_rows(c.request("SELECT length(t) AS n FROM big WHERE id = 100"), [["100000"]])
        r = expect_ok(c.request("SELECT b FROM big WHERE id = 100"))
        eq(len(r.rows[0][0]), 100000, "a 100,000-byte bytea (200,002 bytes of hex text)")
        # Over it: TOOBIG, naming max_value, after the rows that fit.
        r = c.request("SELECT id, t FROM big ORDER BY id")
        expect_err(r, "TOOBIG")
        if "max_value" not in r.err_msg:
            raise TestFailure("the message does not name max_value: %r" % r.status)
        eq(len(r.rows), 102, "rows sent before the too big one")
        expect_err(c.request("SELECT b FROM big WHERE id = 103"), "TOOBIG")
        expect_ok(c.request(".use pg"))
        expect_err(c.request("SELECT repeat('y', 1000000) AS y"), "TOOBIG")
        # The bind's only connection serves the next statements.
        expect_rows(c.request("SELECT count(*) FROM big"), [["200"]])
        expect_rows(d.connect().request("SELECT max(id) FROM big"), [["200"]])


def test_pg_client_that_does_not_read_loses_its_connection():
    import time
    from harness import TestFailure, scaled
    from test_resources_output import answered_once_cut_off, non_reader
    pg = shared()
    with pg.database() as db, pg_daemon(pg, db, server={"client_output_timeout": "1000"},
                                        opts={"pool_size": "1", "statement_timeout": "0"},
                                        tables=(("big", None),)) as d:
        c = d.connect()
        expect_ok(c.request("CREATE TABLE big AS SELECT g AS id, repeat('x', 200) AS pad "
                            "FROM generate_series(1, 2000) g"))
        # The bind's only server connection: held by a client that asked
        # for 10 million rows and reads none; then by one in a transaction.
        hog = non_reader(d, "SELECT a.id, a.pad FROM big a, big b\n")
        time.sleep(0.3)
        expect_rows(answered_once_cut_off(lambda: c.request("SELECT count(*) FROM big"), hog, "a statement"),
                    [["2000"]])
        txn = non_reader(d, "BEGIN\nINSERT INTO big VALUES (0, 'rolled back')\n"
                         "SELECT a.id, a.pad FROM big a, big b\n")
        deadline = time.time() + scaled(10)
        while not any(r["in_txn"] == "yes" for r in c.request(".clients").dicts()):
            if time.time() > deadline:
                raise TestFailure("the transaction never started")
            time.sleep(0.02)
        t0 = time.time()
        expect_rows(c.request("SELECT count(*) FROM big"), [["2000"]])
        if time.time() - t0 > scaled(3.0):
            raise TestFailure("a statement waited for the connection of a transaction that does not read")
        txn.close()
        eq(d.stderr_text().count("client_output_timeout"), 2, "log lines of the disconnects")


def test_pg_statement_timeout_cancel_is_not_delayed_by_an_auth_storm():
    # PostgreSQL cancel requests run on libuv's thread pool, as password
    # checks do: a storm of wrong .auth must not hold every thread.
    import os
    import socket
    import time
    import harness
    from harness import TestFailure, expect_status, make_config, scaled
    from test_auth import PASSWORDS, users_text
    pg = shared()
    with pg.database() as db:
        binds = list(harness.DEFAULT_BINDS) + [("pg", pg.url(db=db))]
        cfg = make_config(binds=binds, tables=list(harness.DEFAULT_TABLES),
                          bind_opts={"pg": {"statement_timeout": "300"}}) + users_text()
        env = dict((k, None) for k in os.environ if k.startswith("PG"))
        with harness.Daemon(config=cfg, env=env) as d:
            c = d.connect()
            expect_status(c.request(".auth alice %s" % PASSWORDS["alice"]), "+OK user=alice")
            expect_ok(c.request(".use pg"))
            storm = []
            for _ in range(200):
                s = socket.create_connection(d.addr, timeout=10)
                s.sendall(b".auth alice wrong\n" * 20)
                storm.append(s)
            time.sleep(0.5)
            t0 = time.time()
            r = c.request("SELECT pg_sleep(5)")
            took = time.time() - t0
            expect_err(r, "TIMEOUT")
            if took > scaled(1.5):
                raise TestFailure("statement_timeout (300 ms) cancelled the statement after %.2f s "
                                  "during an .auth storm" % took)
            for s in storm:
                s.close()


test_pg_statement_timeout_cancel_is_not_delayed_by_an_auth_storm.timeout = 90
