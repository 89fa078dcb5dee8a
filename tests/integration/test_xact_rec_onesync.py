"""The one-sync commit of transactions across SQLite binds (issue 16, bench
scenario 15; daemon/xact.c): the decision goes into the home bind's marker
row, so the home bind's own commit (one fsync) is the commit point and the
coordinator log is not written; recovery reads the decisions from the
markers of every bind. Once the binds are synced (every 4 MiB of
decisions) older decisions are done: their markers may go, and recovery
never replays them (it would find the other binds' markers gone)."""

import os
import signal

from harness import Daemon, TestFailure, eq, expect_ok

LOG = "sqlmux-xact.log"


def _synced(d):
    with open(os.path.join(d.data_dir, "sqlmux-xact.txid")) as f:
        return int(f.read().split()[1])


def _log_has_records(d):
    with open(os.path.join(d.data_dir, LOG), "rb") as f:
        f.seek(16)
        return f.read(12) != bytes(12)


def test_decision_in_the_home_marker_and_the_sync_floor():
    with Daemon() as d:
        c = d.connect()
        start_floor = _synced(d)
        big = "x" * 60000
        # About 5 MiB of decisions (the changes of second_db) in default's
        # markers: past 4 MiB the binds are synced and the floor moves on.
        # Stop at the commit after which the floor moved: its decision stays
        # in default's marker, below the floor.
        n = 0
        while _synced(d) == start_floor:
            if n == 120:
                raise TestFailure("the sync floor did not move after 7 MiB of decisions")
            expect_ok(c.request("BEGIN"))
            expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (%d, 'a')" % n))
            expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (%d, '%s')" % (n, big)))
            expect_ok(c.request("COMMIT"))
            n += 1
        if _log_has_records(d):
            raise TestFailure("the coordinator log was written by commits whose home is a file bind")
        # A transaction whose home is second_db and that does not write
        # default: its marker deletes second_db's old markers, while
        # default keeps old decisions (below the floor) that name them.
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (1000, 'b')"))
        expect_ok(c.request("INSERT INTO test3 (id, color) VALUES (1000, 'b')"))
        expect_ok(c.request("COMMIT"))
        old = d.file_query("app.db", "SELECT count(*) FROM sqlmux_xact WHERE parts IS NOT NULL AND txid < ?",
                           (_synced(d),))[0][0]
        if old == 0:
            raise TestFailure("default kept no decision: the test does not test the floor")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        d.start()
        err = d.stderr_text(current_only=True)
        if "lacked it" in err:
            raise TestFailure("recovery replayed a decision below the sync floor:\n" + err[-3000:])
        eq(d.file_query("app.db", "SELECT count(*) FROM test1"), [(n,)], "default's rows")
        eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(n + 1,)], "second_db's rows")


def test_home_marker_redoes_the_other_bind():
    # Killed after the home bind committed (the decision in its marker) and
    # before second_db did: the start applies second_db's changes from
    # default's marker, and a second start does nothing more.
    with Daemon(env={"SQLMUX_XACT_CRASH": "first_committed"}) as d:
        c = d.connect()
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (5, 'home')"))
        expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (5, 'other')"))
        c.send("COMMIT\n")
        d.proc.wait(timeout=10)
        eq(d.proc.returncode, -signal.SIGKILL, "killed at first_committed")
        if _log_has_records(d):
            raise TestFailure("the coordinator log was written")
        d.env = {}
        d.start()
        err = d.stderr_text(current_only=True)
        if "bind second_db lacked it: its changes applied" not in err:
            raise TestFailure("second_db was not redone from default's marker:\n" + err[-3000:])
        eq(d.file_query("second.db", "SELECT color FROM test2 WHERE id = 5"), [("other",)], "redone")
        d.restart()
        if "lacked it" in d.stderr_text(current_only=True):
            raise TestFailure("the second start redid it again")
