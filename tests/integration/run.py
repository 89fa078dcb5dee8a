#!/usr/bin/env python3
"""
Run the sqlmuxd integration tests.

    python3 tests/integration/run.py [-j N] [SUBSTRING ...]

Discovers tests/integration/test_*.py and runs every function named test_*
whose "module.name" contains one of the SUBSTRINGs (all when none). A test
that takes a parameter named `d` gets a fresh, started Daemon() (the note's
three binds); others start what they need themselves. Each test runs in its
own forked process (N at a time, default 3) with a time limit (60 s, or the
function's `timeout` attribute; times SQLMUX_TIMEOUT_SCALE).

Output: one line per test, in discovery order, "ok - module.test" or
"not ok - module.test" followed by indented details (traceback, the last 30
lines of each daemon's stderr), then a final "# ..." summary line. A test
that does not apply (harness.Skip, e.g. skip_under_valgrind(), or listed
in harness.VALGRIND_SKIPS) prints "ok - module.test # SKIP reason".
Exit status 1 when any test failed.

Environment: SQLMUXD (the binary; default build/sqlmuxd from the repo root),
SQLMUX_KEEP_TMP=1 keeps the temp dirs, SQLMUX_VALGRIND=1 and
SQLMUX_TIMEOUT_SCALE (see harness.py; `make valgrind` sets both).
"""

import importlib
import inspect
import math
import multiprocessing
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402

DEFAULT_TIMEOUT = 60


class TestTimeout(Exception):
    pass


# Set in a test process that got SIGTERM (only when PG tests run): it
# exits right after cleaning up instead of waiting for more work.
_TERMINATING = []


def discover(filters):
    tests = []
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        modname = fn[:-3]
        mod = importlib.import_module(modname)
        funcs = [f for name, f in vars(mod).items()
                 if name.startswith("test_") and inspect.isfunction(f)
                 and f.__module__ == modname]
        funcs.sort(key=lambda f: f.__code__.co_firstlineno)
        for f in funcs:
            full = "%s.%s" % (modname, f.__name__)
            if not filters or any(s in full for s in filters):
                tests.append((modname, f.__name__))
    return tests


def _alarm(signum, frame):
    raise TestTimeout("test exceeded its time limit")


def run_one(item):
    """Run one test in this (forked) process. Returns (name, ok, details,
    skip reason or None)."""
    modname, fname = item
    full = "%s.%s" % (modname, fname)
    reason = harness.skip_reason(full)
    if reason:
        return full, True, "", reason
    func = getattr(importlib.import_module(modname), fname)
    limit = int(math.ceil(harness.scaled(getattr(func, "timeout", DEFAULT_TIMEOUT))))
    first = len(harness.ALL_DAEMONS)
    pgfix = sys.modules.get("pgfixture")
    first_pg = len(pgfix.ALL_CLUSTERS) if pgfix else 0
    details = ""
    ok = True
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit)
    try:
        params = inspect.signature(func).parameters
        kwargs = {}
        if "d" in params:
            kwargs["d"] = harness.Daemon()
        func(**kwargs)
    except harness.Skip as e:
        reason = e.reason
    except BaseException:  # noqa: B902 - report everything, including timeouts
        ok = False
        details = traceback.format_exc()
    finally:
        signal.alarm(0)
    daemons = harness.ALL_DAEMONS[first:]
    for dm in daemons:
        try:
            dm.cleanup()
        except Exception:
            ok = False
            details += "\ncleanup failed:\n" + traceback.format_exc()
        # Every daemon must survive its test and exit 0 on SIGTERM (this
        # also catches sanitizer reports at exit).
        if dm.cleanup_status not in (None, 0):
            ok = False
            details += "\ndaemon at the end of the test: %s\n" % (
                dm.cleanup_status if isinstance(dm.cleanup_status, str)
                else "exit status %s after SIGTERM" % dm.cleanup_status)
    clusters = []
    if pgfix:
        # PostgreSQL clusters the test started itself (pgfixture.PgCluster)
        clusters = pgfix.ALL_CLUSTERS[first_pg:]
        for cl in clusters:
            try:
                cl.destroy()
            except Exception:
                ok = False
                details += "\nPostgreSQL cleanup failed:\n" + traceback.format_exc()
    if not ok:
        for i, dm in enumerate(daemons):
            if not dm.starts:
                continue
            label = "daemon stderr (last 30 lines)"
            if len(daemons) > 1:
                label = "daemon %d stderr (last 30 lines)" % (i + 1)
            if dm.exit_status is not None:
                label += ", exit status %s" % dm.exit_status
            details += "\n%s:\n%s\n" % (label, dm.stderr_tail(30))
        if pgfix:
            for cl in clusters:
                details += "\nPostgreSQL server log (last 20 lines):\n%s\n" % cl.log_tail(20)
            for cl in pgfix.SHARED_USED:
                details += ("\nshared PostgreSQL server log, this test's databases "
                            "(last 20 lines):\n%s\n" % cl.log_tail(20, cl.databases))
    if _TERMINATING:
        os._exit(128 + _TERMINATING[0])
    return full, ok, details, reason


def main(argv):
    jobs = 3
    filters = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-j" and i + 1 < len(argv):
            jobs = max(1, int(argv[i + 1]))
            i += 2
            continue
        if a.startswith("-j") and a[2:].isdigit():
            jobs = max(1, int(a[2:]))
        elif a in ("-h", "--help"):
            print("# " + __doc__.strip().replace("\n", "\n# "))
            return 0
        else:
            filters.append(a)
        i += 1

    tests = discover(filters)
    start = time.time()
    # One PostgreSQL cluster shared by the test_pg* tests, started here so
    # the forked test processes inherit its coordinates (pgfixture.shared()).
    pgfix = None
    if any(m.startswith("test_pg") or m.endswith("_pg") for m, _ in tests):
        import pgfixture as pgfix
        # SIGTERM (e.g. from `timeout`) must still stop the shared server
        # (the finally below); forked test processes keep the default.
        parent = os.getpid()

        def _term(signum, frame):
            if os.getpid() != parent:
                # a test process: end the test like a timeout, so run_one
                # cleans up its daemons and clusters, then exits
                _TERMINATING.append(signum)
                signal.signal(signum, signal.SIG_DFL)
                raise SystemExit("terminated by signal %d" % signum)
            try:
                pgfix.stop_shared()
            finally:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
        signal.signal(signal.SIGTERM, _term)
        pgfix.start_shared(set(m for m, _ in tests))
    try:
        return _run_tests(tests, jobs, start)
    finally:
        if pgfix:
            pgfix.stop_shared()


def _run_tests(tests, jobs, start):
    failed = 0
    skipped = 0
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(min(jobs, max(1, len(tests))), maxtasksperchild=1)
    try:
        for full, ok, details, reason in pool.imap(run_one, tests, chunksize=1):
            if ok and reason:
                skipped += 1
                print("ok - %s # SKIP %s" % (full, reason), flush=True)
            elif ok:
                print("ok - %s" % full, flush=True)
            else:
                failed += 1
                print("not ok - %s" % full)
                for line in details.rstrip("\n").splitlines():
                    print("    " + line)
                sys.stdout.flush()
        pool.close()
    except KeyboardInterrupt:
        pool.terminate()
        raise
    finally:
        pool.join()
    print("# %d tests, %d failed, %d skipped, %.1f s, daemon %s%s"
          % (len(tests), failed, skipped, time.time() - start, harness.daemon_binary(),
             " (valgrind, timeouts x%g)" % harness.TIMEOUT_SCALE if harness.VALGRIND
             else " (timeouts x%g)" % harness.TIMEOUT_SCALE if harness.TIMEOUT_SCALE != 1
             else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
