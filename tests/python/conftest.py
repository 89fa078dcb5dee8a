"""pytest setup of the Python driver's tests (tests/python/test_*.py), run
by tests/run with Debian's /usr/bin/python3 and PYTHONPATH=$BUILD/python.

Fixtures start the real daemon through the integration harness
(tests/integration/harness.py: SQLMUXD, per-test temp folder and port) and,
for PostgreSQL, a private cluster (pgfixture). Every test prints a TAP line
"ok - python.NAME" / "not ok - python.NAME" for tests/run to count.
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import harness  # noqa: E402

# Under SANITIZE=1, tests/run preloads ASan's runtime for the sanitized
# extension. Only the Python processes that import sqlmux need it (tests
# pass child_env() to them); other programs, initdb among them, must not
# get it.
_PRELOAD = os.environ.pop("LD_PRELOAD", None)
if _PRELOAD:
    os.environ["SQLMUX_TEST_PRELOAD"] = _PRELOAD


def child_env(env):
    """env for a child /usr/bin/python3 that imports sqlmux."""
    if os.environ.get("SQLMUX_TEST_PRELOAD"):
        env["LD_PRELOAD"] = os.environ["SQLMUX_TEST_PRELOAD"]
    return env


def pytest_runtest_logreport(report):
    name = "python.%s" % report.nodeid.split("/")[-1].replace(".py::", ".")
    if report.when == "call" or (report.when == "setup" and not report.passed):
        status = "ok" if not report.failed else "not ok"
        skip = " # SKIP" if report.skipped else ""
        sys.__stdout__.write("\n%s - %s%s\n" % (status, name, skip))
        sys.__stdout__.flush()


@pytest.fixture
def daemon():
    """The note's three binds (default and second_db files, memory_db in
    memory), TCP and a unix socket."""
    d = harness.Daemon(unix=True)
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def url(daemon):
    return "sqlmux://127.0.0.1:%d" % daemon.port
