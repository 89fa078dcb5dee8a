"""Configuration: --check-config on a good file, and bad files refused with
"FILE:LINE: message" on stderr and a non-zero exit, both by --check-config
and by a normal start."""

import os
import subprocess

from harness import TestFailure, daemon_binary, make_config, run_once, standard_files

GOOD = make_config()


def _with(text, section, line):
    """Insert `line` right after the [section] header."""
    head = "[%s]\n" % section
    if head not in text:
        raise ValueError(section)
    return text.replace(head, head + line + "\n", 1)


def _replace(text, old, new):
    if old not in text:
        raise ValueError(old)
    return text.replace(old, new, 1)


def _line_no(text, needle):
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise ValueError(needle)


def _expect_error(text, needle, files=None, also_start=True, words=()):
    """Both --check-config and a normal start must fail with FILE:LINE:
    where LINE is the line holding `needle` (needle None: no line check)."""
    files = dict(standard_files(), **(files or {}))
    modes = (True, False) if also_start else (True,)
    for check in modes:
        what = "--check-config" if check else "start"
        rc, out, err, path, _ = run_once(text, files=files, check=check, timeout=5)
        if rc == 0:
            raise TestFailure("%s accepted a bad config (exit 0)\nstdout:\n%s\nstderr:\n%s"
                              % (what, out, err))
        if needle is not None:
            want = "%s:%d:" % (path, _line_no(text, needle))
            if want not in err:
                raise TestFailure("%s: stderr lacks %r\nstderr:\n%s" % (what, want, err))
        elif path not in err:
            raise TestFailure("%s: stderr does not name the file %s\nstderr:\n%s"
                              % (what, path, err))
        for w in words:
            if w not in err:
                raise TestFailure("%s: stderr does not mention %r\nstderr:\n%s" % (what, w, err))


def test_check_config_good():
    rc, out, err, path, d = run_once(GOOD, files=standard_files(), check=True)
    if rc != 0:
        raise TestFailure("--check-config failed on a good file (%d)\nstdout:\n%s\nstderr:\n%s"
                          % (rc, out, err))
    text = out + err
    missing = [w for w in ("default", "second_db", "memory_db", "sqlite:///app.db",
                           "sqlite:///second.db", ":memory:", "test2", "test3", "audit_*",
                           os.path.join(d, "data", "app.db"), os.path.join(d, "data", "second.db"))
               if w not in text]
    if missing:
        raise TestFailure("--check-config output lacks %r\nstdout:\n%s\nstderr:\n%s"
                          % (missing, out, err))


def test_table_names_undefined_bind():
    text = _with(GOOD, "tables", "test9 = nosuch_db")
    _expect_error(text, "test9 = nosuch_db", words=("nosuch_db",))


def test_malformed_url():
    text = _replace(GOOD, "second_db = sqlite:///second.db", "second_db = not a url")
    _expect_error(text, "second_db = not a url")


def test_unsupported_url_scheme():
    text = _replace(GOOD, "second_db = sqlite:///second.db", "second_db = mysql://localhost/db")
    _expect_error(text, "second_db = mysql://")


def test_unknown_server_key():
    text = _with(GOOD, "server", "bogus_key = 1")
    _expect_error(text, "bogus_key = 1", words=("bogus_key",))


def test_unknown_bind_option():
    text = _with(GOOD, "bind.second_db", "pool_sise = 4")
    _expect_error(text, "pool_sise = 4", words=("pool_sise",))


def test_unknown_section():
    text = GOOD + "[nonsense]\nkey = value\n"
    _expect_error(text, "[nonsense]")


def test_options_for_undefined_bind():
    text = GOOD + "[bind.nosuch_db]\npool_size = 2\n"
    _expect_error(text, "[bind.nosuch_db]")


def test_max_request_too_small():
    text = _replace(GOOD, "max_request = 1M", "max_request = 100")
    _expect_error(text, "max_request = 100")


def test_max_request_bad_suffix():
    text = _replace(GOOD, "max_request = 1M", "max_request = 12X")
    _expect_error(text, "max_request = 12X")


def test_bad_log_level():
    text = _replace(GOOD, "log_level = info", "log_level = loud")
    _expect_error(text, "log_level = loud")


def test_bad_pool_size():
    text = _replace(GOOD, "pool_size = 4", "pool_size = 0")
    _expect_error(text, "pool_size = 0")
    text = _replace(GOOD, "pool_size = 4", "pool_size = many")
    _expect_error(text, "pool_size = many")


def test_bad_listen():
    text = _replace(GOOD, "listen = 127.0.0.1:{port}", "listen = 127.0.0.1:notaport")
    _expect_error(text, "listen = 127.0.0.1:notaport")


def test_not_ini_syntax():
    text = _with(GOOD, "binds", "this line is not ini")
    _expect_error(text, "this line is not ini")


def test_missing_default_bind():
    text = make_config(binds=[("second_db", "sqlite:///second.db"),
                              ("memory_db", "sqlite:///:memory:")])
    _expect_error(text, None, words=("default",))


def test_missing_schema_file():
    text = _replace(GOOD, "schema = schema_memory_db.sql", "schema = missing_schema.sql")
    # --check-config may or may not look at the file; a start must fail.
    files = standard_files()
    rc, out, err, path, _ = run_once(text, files=files, check=False, timeout=5)
    if rc == 0:
        raise TestFailure("daemon exited 0 with a missing schema file")
    if "missing_schema.sql" not in err:
        raise TestFailure("stderr does not name the missing schema file:\n" + err)


def test_missing_config_file():
    p = subprocess.run([daemon_binary(), "/nonexistent/sqlmux-nope.ini"], capture_output=True,
                       timeout=5)
    if p.returncode == 0:
        raise TestFailure("exit 0 for a missing config file")
    if b"/nonexistent/sqlmux-nope.ini" not in p.stderr:
        raise TestFailure("stderr does not name the file: %r" % p.stderr)
    p = subprocess.run([daemon_binary(), "--check-config", "/nonexistent/sqlmux-nope.ini"],
                       capture_output=True, timeout=5)
    if p.returncode == 0:
        raise TestFailure("--check-config exit 0 for a missing config file")
