#!/usr/bin/env python3
"""SQLAlchemy's dialect compliance suite through sqlmux, against its own
pysqlite dialect as the reference.

    /usr/bin/python3 tests/python/sqla_suite.py [sqlite | postgresql | alembic]

Starts sqlmuxd (SQLMUXD, else build/sqlmuxd) on a temp config whose default
bind is a SQLite file, runs the suite (tests/python/sqla) once with
--dburi sqlmux://127.0.0.1:PORT/ and once with SQLAlchemy's pysqlite
dialect on a plain file, with the same requirements class, and prints one
TAP line per test that passes with pysqlite: "ok - sqla_suite.TEST" when it
passes through sqlmux too, else "not ok - ...". Tests that pysqlite fails
or skips are only counted. Ends with both counts; exits 1 on any "not ok".
The sqlmux package comes from PYTHONPATH (tests/run sets build/python).
With `postgresql`, the same with a private PostgreSQL cluster: a
PostgreSQL default bind against psycopg2 directly on the same server. With
`alembic`, Alembic's suite (alembic.testing.suite, tests/python/alembic_suite)
the same way as `sqlite`.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import harness  # noqa: E402

SUITE = os.path.join(HERE, "sqla")


def run_suite(dburi, xml_path, env, suite=SUITE):
    """Run the suite against dburi; {test id: outcome} from its JUnit XML
    (outcome: passed, failed, skipped). It runs in a copy of tests/python/sqla
    next to xml_path, since SQLAlchemy's plugin reads setup.cfg from, and its
    SQLite provisioning writes files into, the current folder."""
    cwd = os.path.join(os.path.dirname(xml_path), "suite-" + os.path.basename(xml_path)[:-4])
    shutil.copytree(suite, cwd)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--dburi", dburi,
            "--junitxml", xml_path]
    p = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=900)
    out = p.stdout.decode(errors="replace")
    if not os.path.exists(xml_path):
        raise SystemExit("not ok - sqla_suite: pytest wrote no report\n" + out[-4000:])
    results = {}
    details = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        # The plugin names classes after the backend (..._sqlite+sqlmux_3_40_1):
        # keep the suite's own class name so both runs compare.
        cls = re.sub(r"_(sqlite|postgresql)\+.*$", "", case.get("classname", "").rsplit(".", 1)[-1])
        name = "%s.%s" % (cls, case.get("name"))
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
                details[name] = (child.get("message") or "")[:300]
            elif child.tag == "skipped":
                outcome = "skipped"
        results[name] = outcome
    return results, details


def counts(results):
    c = {"passed": 0, "failed": 0, "skipped": 0}
    for v in results.values():
        c[v] += 1
    return "%(passed)d passed, %(failed)d failed, %(skipped)d skipped" % c


def run_sqlite(tmp, env, suite=SUITE):
    cfg = harness.make_config(binds=[("default", "sqlite:///suite.db")], tables=[], schemas=False)
    with harness.Daemon(config=cfg) as d:
        mux = run_suite("sqlmux://127.0.0.1:%d/" % d.port, os.path.join(tmp, "sqlmux.xml"), env, suite)
    ref = run_suite("sqlite:///" + os.path.join(tmp, "reference.db"), os.path.join(tmp, "pysqlite.xml"), env,
                    suite)
    return mux, ref, "pysqlite on a file", "sqlmux SQLite bind"


def run_alembic(tmp, env):
    return run_sqlite(tmp, env, os.path.join(HERE, "alembic_suite"))


def run_postgresql(tmp, env):
    """A PostgreSQL default bind against psycopg2 on the same server (one
    database each)."""
    import pgfixture
    pg = pgfixture.shared()
    try:
        with pg.database() as db_mux, pg.database() as db_ref:
            cfg = harness.make_config(binds=[("default", pg.url(db=db_mux))], tables=[], schemas=False)
            denv = dict((k, None) for k in os.environ if k.startswith("PG"))
            with harness.Daemon(config=cfg, env=denv) as d:
                mux = run_suite("sqlmux://127.0.0.1:%d/" % d.port, os.path.join(tmp, "sqlmux.xml"), env)
            ref = run_suite(pg.url(db=db_ref, scheme="postgresql+psycopg2"), os.path.join(tmp, "psycopg2.xml"),
                            env)
    finally:
        pg.destroy()
    return mux, ref, "psycopg2 direct", "sqlmux PostgreSQL bind"


def main(argv):
    tmp = tempfile.mkdtemp(prefix="sqlmux-sqla-")
    # Under SANITIZE=1, tests/run preloads ASan's runtime for the sanitized
    # extension: only the suite's pytest needs it, not initdb and postgres.
    preload = os.environ.pop("LD_PRELOAD", None)
    env = dict(os.environ)
    if preload:
        env["LD_PRELOAD"] = preload
    backend = argv[1] if len(argv) > 1 else "sqlite"
    run = {"postgresql": run_postgresql, "alembic": run_alembic}.get(backend, run_sqlite)
    suite_name = "Alembic's suite" if backend == "alembic" else "SQLAlchemy compliance suite"
    (mux, mux_details), (ref, _), ref_name, mux_name = run(tmp, env)
    bad = 0
    for name in sorted(ref):
        if ref[name] != "passed":
            continue
        if mux.get(name) == "passed":
            print("ok - sqla_suite_%s.%s" % (backend, name))
        else:
            bad += 1
            print("not ok - sqla_suite_%s.%s (through sqlmux: %s) %s"
                  % (backend, name, mux.get(name, "not run"), mux_details.get(name, "")))
    print("# %s, %s: %s" % (suite_name, ref_name, counts(ref)))
    print("# %s, %s: %s" % (suite_name, mux_name, counts(mux)))
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
