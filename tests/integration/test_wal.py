"""The write-ahead log stays bounded (issue 13, item b): after a phase of
reads, the loop's quick-read connection kept a read transaction open (its
BEGIN was interrupted by the read budget after it had begun), so no
checkpoint could restart the WAL, which then grew by a page per write for as
long as the daemon ran: RAM on the in-memory bind, disk on file binds."""

import glob
import os
import sqlite3
import subprocess
import threading
import time

from harness import REPO, Daemon, Skip, TestFailure, daemon_binary, eq, expect_ok, expect_rows, scaled

PAGE = 4096
# SQLite's automatic checkpoint restarts the WAL past 1000 pages.
WAL_BOUND = 1500 * PAGE
# Past this the daemon's own checkpoint restarts the log (WAL_LIMIT_BYTES).
WAL_LIMIT = 16 * 1024 * 1024


def wal_path(d, bind):
    if bind == "memory_db":
        found = glob.glob("/dev/shm/sqlmux-%d-*/memory_db.db-wal" % d.pid)
        if not found:
            raise TestFailure("no WAL file of the in-memory bind in /dev/shm")
        return found[0]
    return os.path.join(d.data_dir, "app.db-wal")


def wal_size(d, bind):
    try:
        return os.path.getsize(wal_path(d, bind))
    except FileNotFoundError:
        return 0


def stats_row(c, bind):
    r = c.request(".stats")
    for row in r.dicts():
        if row["bind"] == bind:
            return row
    raise TestFailure("no .stats row for %s: %r" % (bind, r))


def loadgen_path():
    """The benchmark's load generator, built beside the daemon by `make`."""
    for path in (os.path.join(os.path.dirname(daemon_binary()), "loadgen"),
                 os.path.join(REPO, "build", "loadgen")):
        if os.access(path, os.X_OK):
            return path
    raise Skip("no loadgen binary (make builds build/loadgen)")


def read_phase(d, table, conns=6, rounds=20, depth=32):
    """Point reads: pipelined batches from the test's own sockets, reads
    one at a time (each in a loop turn of its own), then a second of the
    benchmark's load (16 connections pipelining 16 deep: many thousand
    loop turns)."""
    socks = [d.connect() for _ in range(conns)]
    batch = ("SELECT color FROM %s WHERE id = 1\n" % table).encode() * depth
    for _ in range(rounds):
        for s in socks:
            s.send(batch)
        for s in socks:
            for r in s.read_responses(depth):
                expect_rows(r, [["seed"]])
    # A write, so that the snapshots taken from now on hold WAL frames no
    # checkpoint has copied yet.
    expect_ok(socks[0].request("UPDATE %s SET color = 'seed' WHERE id = 1" % table))
    for i in range(200):
        expect_rows(socks[i % conns].request("SELECT color FROM %s WHERE id = 1" % table), [["seed"]])
    p = subprocess.run([loadgen_path(), "-m", "sqlmux", "-p", str(d.port), "-c", "16", "-P", "16",
                        "-d", "1", "-q", "SELECT color FROM %s WHERE id = 1" % table],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=scaled(60))
    if p.returncode != 0:
        raise TestFailure("loadgen failed: %s" % p.stderr.decode(errors="replace"))


def write_phase(c, table, n):
    """Autocommit inserts, one at a time: a commit (and a WAL page) each."""
    for i in range(n):
        expect_ok(c.inline("INSERT INTO %s (color) VALUES (?)" % table, ["c%d" % i]))


def _bounded_after_reads_then_writes(bind, table):
    with Daemon() as d:
        c = d.connect()
        expect_ok(c.request("INSERT INTO %s (color) VALUES ('seed')" % table))
        read_phase(d, table)
        on_loop = int(stats_row(c, bind)["on_loop"])
        if on_loop < 1000:
            raise TestFailure("the reads were not answered on the loop (on_loop=%d)" % on_loop)
        write_phase(c, table, 3000)
        size = wal_size(d, bind)
        if size > WAL_BOUND:
            raise TestFailure("%s: the WAL is %d bytes after 3000 inserts (bound %d): checkpoints "
                              "did not restart it" % (bind, size, WAL_BOUND))
        expect_rows(c.request("SELECT count(*) FROM %s" % table), [["3001"]])


def test_wal_bounded_after_reads_then_writes_file_bind():
    _bounded_after_reads_then_writes("default", "test1")


def test_wal_bounded_after_reads_then_writes_memory_bind():
    _bounded_after_reads_then_writes("memory_db", "test3")


def _emptied_when_idle(bind, table):
    with Daemon() as d:
        c = d.connect()
        write_phase(c, table, 500)
        if wal_size(d, bind) < 500 * PAGE:
            raise TestFailure("%s: 500 commits left only %d bytes of WAL" % (bind, wal_size(d, bind)))
        # The checkpoint thread empties the log about a second after the
        # last write, and .stats says so.
        deadline = time.time() + scaled(5)
        while wal_size(d, bind) > 0 or int(stats_row(c, bind)["wal_bytes"]) != 0:
            if time.time() > deadline:
                raise TestFailure("%s: the WAL is still %d bytes (.stats: %s) after 5 s without writes"
                                  % (bind, wal_size(d, bind), stats_row(c, bind)["wal_bytes"]))
            time.sleep(0.1)
        expect_rows(c.request("SELECT count(*) FROM %s" % table), [["500"]])
        # Writes go on after a truncation.
        write_phase(c, table, 10)
        expect_rows(d.connect().request("SELECT count(*) FROM %s" % table), [["510"]])


def test_wal_emptied_when_idle_file_bind():
    _emptied_when_idle("default", "test1")


def test_wal_emptied_when_idle_memory_bind():
    _emptied_when_idle("memory_db", "test3")


def _restarted_under_overlapping_readers(bind, table, depth=1, inserts=6000):
    """Two clients take turns holding a read transaction, so at every
    moment one of them has a snapshot that still needs frames of the log:
    SQLite's own checkpoint never gets to restart the log. The daemon's
    does, past 16 MiB: it holds writers back until the older reader is
    done."""
    with Daemon() as d:
        c = d.connect()
        expect_ok(c.request("INSERT INTO %s (color) VALUES ('seed')" % table))
        readers = [d.connect(), d.connect()]
        stop = threading.Event()
        failures = []
        biggest = [0]

        def read_in_turns():
            try:
                held = None
                i = 0
                while not stop.is_set():
                    r = readers[i % 2]
                    expect_ok(r.request("BEGIN"))
                    expect_rows(r.request("SELECT color FROM %s WHERE id = 1" % table), [["seed"]])
                    if held is not None:
                        expect_ok(held.request("COMMIT"))
                    held = r
                    i += 1
                    biggest[0] = max(biggest[0], wal_size(d, bind))
                    time.sleep(0.005)
                expect_ok(held.request("COMMIT"))
            except Exception as e:   # reported by the main thread
                failures.append(e)

        t = threading.Thread(target=read_in_turns)
        t.start()
        try:
            for i in range(0, inserts, depth):
                if depth == 1:
                    expect_ok(c.inline("INSERT INTO %s (color) VALUES (?)" % table, ["c%d" % i]))
                else:
                    c.send("".join("INSERT INTO %s (color) VALUES ('c%d')\n" % (table, i + k)
                                   for k in range(depth)))
                    for r in c.read_responses(depth):
                        expect_ok(r)
                if i % 100 < depth:
                    biggest[0] = max(biggest[0], wal_size(d, bind))
        finally:
            stop.set()
            t.join()
        if failures:
            raise failures[0]
        if biggest[0] > WAL_LIMIT + 4 * 1024 * 1024:
            raise TestFailure("%s: the WAL reached %d bytes with readers taking turns (the daemon "
                              "restarts it past %d)" % (bind, biggest[0], WAL_LIMIT))
        expect_rows(c.request("SELECT count(*) FROM %s" % table), [[str(inserts + 1)]])


def test_wal_restarted_under_overlapping_readers_file_bind():
    _restarted_under_overlapping_readers("default", "test1")


def test_wal_restarted_under_overlapping_readers_memory_bind():
    _restarted_under_overlapping_readers("memory_db", "test3")


# A client that pipelines its writes keeps the writer's lock nearly all the
# time: the checkpoint thread's RESTART, napping between tries for that
# lock, missed the gaps between commits, and the log took all 6,000
# commits (25 MB) in 6 of 8 runs. The writer restarts the log itself.
def test_wal_restarted_under_pipelined_writes_file_bind():
    _restarted_under_overlapping_readers("default", "test1", depth=20)


def test_wal_restarted_under_pipelined_writes_memory_bind():
    _restarted_under_overlapping_readers("memory_db", "test3", depth=20)


def test_memory_bind_file_is_the_daemons_alone():
    """The in-memory bind's connections all live in the daemon, so they
    coordinate in memory (SQLite's unix-excl VFS): no wal-index file beside
    the database, no fcntl() per transaction, and another process finds
    the file locked instead of reading or changing the bind behind the
    daemon's back. Readers, writers and a join across binds still see each
    other's commits, and the file binds the in-memory bind's connections
    attach keep their own locking."""
    with Daemon() as d:
        c, other = d.connect(), d.connect()
        write_phase(c, "test3", 20)
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (3, 'file')"))
        folder = os.path.dirname(wal_path(d, "memory_db"))
        eq(sorted(os.listdir(folder)), ["memory_db.db", "memory_db.db-wal"])
        try:
            con = sqlite3.connect(os.path.join(folder, "memory_db.db"), timeout=0)
            got = con.execute("SELECT count(*) FROM test3").fetchall()
            con.close()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise TestFailure("another process opening the bind's file: %s" % e)
        else:
            raise TestFailure("another process read the in-memory bind's file: %r" % got)
        # A transaction's writes are its own until COMMIT; then every
        # connection sees them: the loop's, the workers' and the join's.
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test3 (id, color) VALUES (1000, 'txn')"))
        expect_rows(other.request("SELECT count(*) FROM test3"), [["20"]])
        expect_ok(c.request("COMMIT"))
        expect_rows(other.request("SELECT color FROM test3 WHERE id = 1000"), [["txn"]])
        expect_rows(other.request("SELECT test1.color, test3.color FROM test1 JOIN test3 ON test3.id = test1.id"),
                    [["file", "c2"]])
        expect_rows(d.connect().request("SELECT count(*) FROM test3"), [["21"]])
        # A transaction across binds from the in-memory bind attaches the
        # file binds to its connections; they keep the file binds' own
        # locking, so another process still reads them.
        expect_ok(c.request("BEGIN"))
        expect_ok(c.request("INSERT INTO test3 (id, color) VALUES (1001, 'both')"))
        expect_ok(c.request("INSERT INTO test1 (id, color) VALUES (1001, 'both')"))
        expect_ok(c.request("INSERT INTO test2 (id, color) VALUES (1001, 'both')"))
        expect_ok(c.request("COMMIT"))
        # ANALYZE runs with the other binds detached: closing them must not
        # take their locks for the process either.
        expect_ok(c.request(".use memory_db"))
        expect_ok(c.request("ANALYZE"))
        for name, table in (("app.db", "test1"), ("second.db", "test2")):
            con = sqlite3.connect("file:%s?mode=ro" % os.path.join(d.data_dir, name), uri=True, timeout=0)
            try:
                eq(con.execute("SELECT color FROM %s WHERE id = 1001" % table).fetchall(), [("both",)])
            finally:
                con.close()
