"""Configuration reload (SIGHUP and .reload): validate-then-swap, clients
stay connected, binds added/removed/changed, table moves, transactions
finishing on the bind they began on, restart-only settings, bad files
refused with the running configuration kept."""

import re
import signal
import threading
import time

from harness import (DEFAULT_BINDS, DEFAULT_TABLES, Daemon, TestFailure, eq, expect_err, expect_ok,
                     expect_rows, expect_status, start_slow)

EXTRA_SCHEMA = "CREATE TABLE IF NOT EXISTS moved (id INTEGER PRIMARY KEY, v TEXT);\n"
BINDS_EXTRA = DEFAULT_BINDS + [("extra", "sqlite:///extra.db")]


def _cfg(tables=(), binds=BINDS_EXTRA, base_tables=DEFAULT_TABLES, **kw):
    """make_config() arguments: the standard binds plus extra (whose schema
    makes table `moved`, as default's does), the standard table map plus
    `tables`. Both default and extra hold `moved`: unless `tables` says
    otherwise it is pinned to default (else it would be AMBIGUOUS)."""
    if any(n == "extra" for n, _ in binds) and not any(t == "moved" for t, _ in tables):
        tables = list(tables) + [("moved", "default")]
    schemas = {"default": "schema_default.sql", "second_db": "schema_second_db.sql",
               "memory_db": "schema_memory_db.sql", "extra": "moved.sql"}
    kw.setdefault("schemas", dict((n, schemas[n]) for n, _ in binds if n in schemas))
    return dict(binds=binds, tables=list(base_tables) + list(tables), **kw)


def _daemon(**kw):
    files = {"moved.sql": EXTRA_SCHEMA,
             "schema_default.sql": ("CREATE TABLE IF NOT EXISTS test1 (id INTEGER PRIMARY KEY, "
                                    "color VARCHAR(64) DEFAULT 'red');\n" + EXTRA_SCHEMA)}
    return Daemon(files=files, **_cfg(**kw))


def _reload(d, via="signal", **kw):
    """Rewrite the config and reload it; returns the .reload response (or
    None for SIGHUP, after waiting for the log line)."""
    d.rewrite_config(**_cfg(**kw))
    return _trigger(d, via)


def _trigger(d, via="signal", want="configuration reloaded"):
    before = d.stderr_text().count(want)
    if via == "command":
        return d.connect().request(".reload")
    d.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while d.stderr_text().count(want) <= before:
        if time.time() > deadline:
            raise TestFailure("no %r after SIGHUP:\n%s" % (want, d.stderr_tail()))
        time.sleep(0.02)
    return None


def test_reload_moves_table():
    with _daemon() as d:
        c = d.connect()
        expect_ok(c.request("INSERT INTO moved (v) VALUES ('before')"))
        expect_status(c.request(".route SELECT * FROM moved"), "+OK bind=default")
        expect_ok(_reload(d, "command", tables=[("moved", "extra")]))
        # The same connection, the next statement: the new map.
        expect_status(c.request(".route SELECT * FROM moved"), "+OK bind=extra")
        expect_ok(c.request("INSERT INTO moved (v) VALUES ('after')"))
        expect_rows(c.request("SELECT v FROM moved"), [["after"]])
        eq(d.file_query("app.db", "SELECT v FROM moved"), [("before",)], "app.db")
        eq(d.file_query("extra.db", "SELECT v FROM moved"), [("after",)], "extra.db")
        maps = dict(c.request(".map").rows)
        eq(maps.get("moved"), "extra", ".map after reload")
        # And back, by SIGHUP.
        _reload(d)
        expect_rows(c.request("SELECT v FROM moved"), [["before"]])


def test_reload_under_load():
    """A client keeps issuing statements through several reloads,
    including bad configs; none of them fails."""
    with _daemon() as d:
        stop = threading.Event()
        errors = []
        counts = {"n": 0}

        def load():
            try:
                c = d.connect()
                i = 0
                while not stop.is_set():
                    i += 1
                    for sql in ("INSERT INTO test1 (color) VALUES ('c%d')" % i,
                                "SELECT count(*) FROM test2",
                                "INSERT INTO test3 DEFAULT VALUES",
                                "SELECT %d AS n" % i,
                                "INSERT INTO moved (v) VALUES ('m%d')" % i):
                        r = c.request(sql)
                        if not r.ok:
                            errors.append((sql, r.status))
                        counts["n"] += 1
                    # a transaction across the reloads, too
                    for sql in ("BEGIN", "INSERT INTO test2 (color) VALUES ('t%d')" % i,
                                "SELECT count(*) FROM test2", "COMMIT"):
                        r = c.request(sql)
                        if not r.ok:
                            errors.append((sql, r.status))
                        counts["n"] += 1
            except Exception as e:  # noqa: B902
                errors.append(("exception", repr(e)))

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            steps = [
                dict(tables=[("moved", "extra")]),
                dict(tables=[("moved", "extra")], bind_opts={"second_db": {"pool_size": "2"}}),
                "bad-syntax",
                dict(tables=[("moved", "default")], binds=BINDS_EXTRA + [("more", "sqlite:///more.db")]),
                "bad-bind",
                dict(tables=[("moved", "extra")], server={"max_pipeline": "64"}),
                "bad-schema",
                dict(tables=[("moved", "extra")], bind_opts={"default": {"busy_timeout": "4000"}}),
            ]
            refused = reloaded = 0
            for k, step in enumerate(steps):
                time.sleep(0.25)
                via = "command" if k % 2 else "signal"
                if step == "bad-syntax":
                    d.rewrite_config(config=d.config_template + "this is not ini\n")
                elif step == "bad-bind":
                    d.rewrite_config(config=d.config_template + "[tables]\nbroken = nosuch\n")
                elif step == "bad-schema":
                    d.rewrite_config(**_cfg(tables=[("moved", "extra")],
                                            binds=BINDS_EXTRA + [("new", "sqlite:///new.db")],
                                            schemas={"new": "missing.sql"}))
                else:
                    d.rewrite_config(**_cfg(**step))
                if isinstance(step, str):
                    r = _trigger(d, via, "reload refused")
                    if r is not None:
                        expect_err(r, "CONFIG")
                    refused += 1
                else:
                    r = _trigger(d, via)
                    if r is not None:
                        expect_ok(r)
                    reloaded += 1
            time.sleep(0.25)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        if errors:
            raise TestFailure("%d of %d statements failed during reloads: %r"
                              % (len(errors), counts["n"], errors[:10]))
        if counts["n"] < 100:
            raise TestFailure("only %d statements ran" % counts["n"])
        text = d.stderr_text()
        eq(text.count("configuration reloaded"), reloaded, "reloads logged")
        eq(text.count("reload refused"), refused, "refusals logged")
        # The last good config routes moved to extra.
        c = d.connect()
        expect_status(c.request(".route SELECT * FROM moved"), "+OK bind=extra")


test_reload_under_load.timeout = 120


def test_bad_config_refused_with_reason():
    with _daemon() as d:
        c = d.connect()
        good = d.config_template
        cases = [
            (good + "[tables]\nbroken = nosuch_bind\n", "not defined in [binds]"),
            (good.replace("[server]", "[server]\nmax_clients = 0"), "max_clients: 0 is out of range"),
            (good.replace("[binds]", "[binds]\nbad = mysql://x"), "bad"),
            # a new bind whose file cannot be created: it fails to open
            (good.replace("[binds]", "[binds]\nnope = sqlite:////proc/nope/x.db"), "nope"),
        ]
        for text, reason in cases:
            d.rewrite_config(config=text)
            r = d.connect().request(".reload")
            expect_err(r, "CONFIG")
            if reason not in r.err_msg:
                raise TestFailure("reason %r not in %r" % (reason, r.err_msg))
            if "reload refused: " not in d.stderr_text():
                raise TestFailure("refusal not logged")
            # The running configuration stays.
            expect_status(c.request(".route SELECT * FROM test2"), "+OK bind=second_db")
            eq(len(c.request(".binds").rows), 4, "binds after a refused reload")
        # A missing file too.
        import os
        os.rename(d.config_path, d.config_path + ".away")
        expect_err(d.connect().request(".reload"), "CONFIG")
        os.rename(d.config_path + ".away", d.config_path)
        d.rewrite_config(config=good)
        expect_ok(d.connect().request(".reload"))
        expect_status(c.request(".ping"), "+OK")


def test_reload_adds_and_removes_binds():
    with _daemon(tables=[("moved", "extra")]) as d:
        c = d.connect()
        expect_ok(c.request("INSERT INTO moved (v) VALUES ('x')"))
        expect_status(c.request(".use extra"), "+OK bind=extra")
        # Remove extra; add fresh (with a schema) and a second memory bind.
        binds = DEFAULT_BINDS + [("fresh", "sqlite:///fresh.db"), ("mem2", "sqlite:///:memory:")]
        d.write_file("fresh.sql", "CREATE TABLE f (a);\n")
        d.write_file("mem2.sql", "CREATE TABLE m2 (a);\n")
        r = _reload(d, "command", binds=binds, tables=[("f", "fresh"), ("m2", "mem2")],
                    schemas={"default": "schema_default.sql", "second_db": "schema_second_db.sql",
                             "memory_db": "schema_memory_db.sql", "fresh": "fresh.sql", "mem2": "mem2.sql"})
        expect_status(r, "+OK binds=5")
        names = [row[0] for row in c.request(".binds").rows]
        eq(names, ["default", "second_db", "memory_db", "fresh", "mem2"], ".binds after reload")
        # The removed bind this client had chosen: back to default.
        expect_status(c.request(".use"), "+OK bind=default txn=0")
        expect_ok(c.request("INSERT INTO f VALUES (1)"))
        expect_ok(c.request("INSERT INTO m2 VALUES (2)"))
        eq(d.file_query("fresh.db", "SELECT a FROM f"), [(1,)], "fresh.db")
        expect_rows(c.request("SELECT a FROM m2"), [["2"]])
        expect_err(c.request(".use extra"), "NOBIND")
        log = d.stderr_text()
        for want in ("added: fresh, mem2", "removed: extra", "bind fresh: schema"):
            if want not in log:
                raise TestFailure("no %r in the log:\n%s" % (want, d.stderr_tail()))
        # The removed bind was closed (nothing held it).
        if "bind extra: the instance retired by a reload is no longer used; closed" not in log:
            raise TestFailure("removed bind not closed:\n" + d.stderr_tail())


def test_transaction_finishes_on_its_bind():
    with _daemon() as d:
        a = d.connect()
        b = d.connect()
        # A transaction on second_db, and one on default (table moved).
        expect_status(a.request("BEGIN"), "+OK changes=0")
        expect_ok(a.request("INSERT INTO test2 (color) VALUES ('a-txn')"))
        expect_status(b.request("BEGIN"), "+OK changes=0")
        expect_ok(b.request("INSERT INTO moved (v) VALUES ('b-txn')"))
        # Reload: second_db removed (test2 now default's), moved -> extra.
        binds = [bd for bd in BINDS_EXTRA if bd[0] != "second_db"]
        r = _reload(d, "command", binds=binds, base_tables=[("test3", "memory_db")], tables=[("moved", "extra")])
        expect_ok(r)
        # a: still in its transaction on the retired second_db.
        rows = c_stats(d)
        if "second_db (retired)" not in rows:
            raise TestFailure(".stats lacks the retired bind: %r" % rows)
        eq(rows["second_db (retired)"]["transactions"], "1", "transactions on the retired bind")
        # A statement for another bind is refused; the transaction stays.
        expect_err(a.request("INSERT INTO moved (v) VALUES ('no')"), "TXNBIND")
        expect_status(a.request("COMMIT"), "+OK changes=0")
        eq(d.file_query("second.db", "SELECT color FROM test2"), [("a-txn",)], "a's commit")
        # b: moved belongs to extra now; b's transaction is on default.
        expect_err(b.request("INSERT INTO moved (v) VALUES ('no')"), "TXNBIND")
        expect_ok(b.request("INSERT INTO test1 (color) VALUES ('b-too')"))
        expect_status(b.request("COMMIT"), "+OK changes=0")
        eq(d.file_query("app.db", "SELECT v FROM moved"), [("b-txn",)], "b's commit")
        # After the commit the retired bind closes.
        deadline = time.time() + 5
        while "bind second_db: the instance retired by a reload is no longer used; closed" not in d.stderr_text():
            if time.time() > deadline:
                raise TestFailure("retired bind not closed after its transaction:\n" + d.stderr_tail())
            time.sleep(0.05)
        if "second_db (retired)" in c_stats(d):
            raise TestFailure("retired bind still listed after closing")
        # New statements follow the new map.
        expect_ok(a.request("INSERT INTO moved (v) VALUES ('new')"))
        eq(d.file_query("extra.db", "SELECT v FROM moved"), [("new",)], "extra.db")


def test_changed_bind_keeps_transaction():
    with _daemon() as d:
        a = d.connect()
        expect_status(a.request("BEGIN"), "+OK changes=0")
        expect_ok(a.request("INSERT INTO test2 (color) VALUES ('one')"))
        # second_db's options change: a new instance opens, the open
        # transaction goes on on the old one; same name, so no TXNBIND.
        r = _reload(d, "command", bind_opts={"second_db": {"pool_size": "2", "busy_timeout": "3000"}})
        expect_ok(r)
        expect_ok(a.request("INSERT INTO test2 (color) VALUES ('two')"))
        expect_rows(a.request("SELECT count(*) FROM test2"), [["2"]])
        # Another client sees the new instance (and not the uncommitted rows).
        b = d.connect()
        expect_rows(b.request("SELECT count(*) FROM test2"), [["0"]])
        pool = dict((row[0], row[5]) for row in b.request(".binds").rows)
        eq(pool["second_db"], "2", "pool_size after reload")
        expect_status(a.request("COMMIT"), "+OK changes=0")
        expect_rows(b.request("SELECT color FROM test2 ORDER BY id"), [["one"], ["two"]])
        if "reopened: second_db" not in d.stderr_text():
            raise TestFailure("no 'reopened: second_db' in the log")


def test_memory_bind_keeps_data():
    with _daemon() as d:
        c = d.connect()
        expect_ok(c.request("INSERT INTO test3 (color) VALUES ('kept')"))
        _reload(d, tables=[("moved", "extra")])
        expect_rows(c.request("SELECT color FROM test3"), [["kept"]])
        # Changed options of the in-memory bind need a restart: the data
        # stays and the old options with it.
        _reload(d, bind_opts={"memory_db": {"pool_size": "1"}})
        expect_rows(d.connect().request("SELECT color FROM test3"), [["kept"]])
        if "bind memory_db: options of an in-memory bind change at restart only" not in d.stderr_text():
            raise TestFailure("no warning about the in-memory bind's options")
        pool = dict((row[0], row[5]) for row in c.request(".binds").rows)
        eq(pool["memory_db"], "4", "running pool_size of the in-memory bind")


def test_restart_only_settings():
    with _daemon(unix=True, server={"stmt_cache": "64"}) as d:
        c = d.connect()
        old_port = d.port
        import harness
        new_port = harness.free_port()
        tmpl = d.config_template
        text = (tmpl.replace("listen = 127.0.0.1:{port}", "listen = 127.0.0.1:%d" % new_port)
                .replace("stmt_cache = 64", "stmt_cache = 8")
                .replace("unix_socket = {unix_socket}", "unix_socket = {dir}/other.sock")
                .replace("max_clients = 1024", "max_clients = 3")
                .replace("log_level = info", "log_level = debug"))
        d.rewrite_config(config=text)
        expect_ok(c.request(".reload"))
        log = d.stderr_text()
        m = re.search(r"WARN (.*) changed: restart to apply", log)
        if m is None:
            raise TestFailure("no restart warning:\n" + d.stderr_tail())
        eq(m.group(1), "listen, unix_socket, stmt_cache", "settings reported")
        # Still on the old port and socket; not on the new ones.
        for addr in (("127.0.0.1", old_port), d.unix_socket):
            with harness.Conn(addr) as p:
                expect_status(p.request(".ping"), "+OK")
        deadline = time.time() + 5
        while len(c.request(".clients").rows) != 1:
            if time.time() > deadline:
                raise TestFailure("closed clients still listed")
            time.sleep(0.05)
        try:
            harness.Conn(("127.0.0.1", new_port), timeout=1)
            raise TestFailure("the new listen port is served before a restart")
        except OSError:
            pass
        # Live settings apply: max_clients (c and two more) and log_level.
        x = d.connect()
        expect_status(x.request(".ping"), "+OK")
        y = d.connect()
        expect_status(y.request(".ping"), "+OK")
        z = d.connect()
        expect_err(z.read_response(), "MAXCLIENTS")
        expect_ok(c.request("SELECT 1"))
        if " DEBUG " not in d.stderr_text():
            raise TestFailure("log_level = debug did not apply")
        # Shutdown removes the socket it made, not the one named since.
        eq(d.stop(), 0, "exit status")
        import os
        eq(os.path.exists(d.unix_socket), False, "the running unix socket removed at exit")


def test_sighup_during_shutdown_is_ignored():
    with _daemon(server={"shutdown_timeout": "600000"}) as d:
        slow = start_slow(d, 10000000)    # ~1.2 s: SIGHUP comes while it runs
        d.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        if slow.readable_now():
            raise TestFailure("the statement ended before SIGHUP: count further")
        d.send_signal(signal.SIGHUP)
        expect_rows(slow.read_response(), [["10000000"]])
        eq(d.proc.wait(120), 0, "exit status")
        d.exit_status = 0
        if "configuration reloaded" in d.stderr_text():
            raise TestFailure("reloaded while shutting down")


def c_stats(d):
    r = d.connect().request(".stats")
    return dict((row[0], dict(zip(r.names, row))) for row in r.rows)


test_sighup_during_shutdown_is_ignored.timeout = 300
