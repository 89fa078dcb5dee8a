"""
The PostgreSQL virtual table module (daemon/pgvtab.c) and the two-phase
commit primitives (daemon/pg_2pc.c), tested by the C program
tests/unit/test_pgvtab.c against real PostgreSQL servers started here: a
private cluster whose log holds every statement (log_statement = all), so
the program checks what PostgreSQL received, and whose backends it may kill
(a SIGKILLed backend restarts the whole server: never the shared cluster);
and a second one with max_prepared_transactions = 0.
"""

import os
import shutil
import subprocess
import tempfile

import harness
import pgfixture
from harness import TestFailure

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _binary():
    sqlmuxd = harness.daemon_binary()
    build = os.path.dirname(os.path.realpath(os.environ.get("SQLMUXD_REAL") or sqlmuxd))
    path = os.path.join(build, "tests", "test_pgvtab")
    if not os.access(path, os.X_OK):
        raise TestFailure("%s is missing: run `make unit` (or make %s)" % (path, os.path.relpath(path, REPO)))
    return path


def test_pgvtab_module():
    binary = _binary()
    with pgfixture.PgCluster() as pg, \
            pgfixture.PgCluster(extra_opts="-c max_prepared_transactions=0") as noprep:
        db = pg.create_database("pgv_")
        pg.psql("ALTER DATABASE %s SET log_statement = 'all'" % db, db="postgres")
        tmp = tempfile.mkdtemp(prefix="sqlmux-pgv-")
        try:
            env = dict((k, v) for k, v in os.environ.items() if not k.startswith("PG"))
            env.update({
                "SQLMUX_PGVTAB_CONNINFO": "host=%s port=%d dbname=%s user=%s" % (
                    pg.dir, pg.port, db, pgfixture.USER),
                "SQLMUX_PGVTAB_LOG": pg.log,
                "SQLMUX_PGVTAB_NOPREP": "host=%s port=%d dbname=%s user=%s" % (
                    noprep.dir, noprep.port, pgfixture.APP_DB, pgfixture.USER),
                "SQLMUX_PGVTAB_DATADIR": tmp,
                # test_stream_flat: an ASan build keeps up to 256 MB freed
                "ASAN_OPTIONS": ":".join(x for x in (os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=16") if x),
            })
            p = subprocess.run([binary], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                               timeout=harness.scaled(240))
            out = p.stdout.decode("utf-8", "replace")
            failed = [ln for ln in out.splitlines() if ln.startswith("not ok")]
            passed = [ln for ln in out.splitlines() if ln.startswith("ok - ")]
            if p.returncode != 0 or failed or len(passed) < 11:
                raise TestFailure("test_pgvtab: status %d, %d passed, failed: %s\n%s"
                                  % (p.returncode, len(passed), failed, out[-6000:]))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


test_pgvtab_module.timeout = 300
