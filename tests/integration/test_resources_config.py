"""--check-config tells the truth: an unknown unix_socket_group is refused
there (as the start refuses it), a value written in the file is not
marked "(default)" even when it equals the default, and a bind shows only
the keys of its kind (no PostgreSQL pool keys for a SQLite bind)."""

import grp
import os

from harness import TestFailure, make_config, run_once, standard_files


def _line_no(text, needle):
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise ValueError(needle)


def test_check_config_refuses_an_unknown_unix_socket_group():
    text = make_config(server={"unix_socket_group": "nosuchgrp_sqlmux"}, unix=True)
    for check in (True, False):
        what = "--check-config" if check else "start"
        rc, out, err, path, _ = run_once(text, files=standard_files(), check=check, timeout=5)
        if rc == 0:
            raise TestFailure("%s accepted unix_socket_group = nosuchgrp_sqlmux\nstdout:\n%s\nstderr:\n%s"
                              % (what, out, err))
        if check:
            want = "%s:%d: unix_socket_group = nosuchgrp_sqlmux: no such group" % (
                path, _line_no(text, "unix_socket_group"))
        else:
            want = "unix_socket_group = nosuchgrp_sqlmux: no such group"
        if want not in err:
            raise TestFailure("%s: stderr lacks %r:\n%s" % (what, want, err))
    # A group that exists, by name or number, passes.
    g = grp.getgrgid(os.getgid())
    for value in (g.gr_name, str(g.gr_gid)):
        rc, out, err, _, _ = run_once(make_config(server={"unix_socket_group": value}, unix=True),
                                      files=standard_files(), check=True)
        if rc != 0:
            raise TestFailure("unix_socket_group = %s refused:\n%s" % (value, err))


def test_check_config_marks_only_unwritten_keys_default():
    text = make_config(server={"max_clients": "1024", "client_idle_timeout": "0"},
                       binds=[("default", "sqlite:///app.db"), ("second_db", "sqlite:///second.db"),
                              ("memory_db", "sqlite:///:memory:")],
                       bind_opts={"default": {"pool_size": "4"}})
    rc, out, err, _, _ = run_once(text, files=standard_files(), check=True)
    if rc != 0:
        raise TestFailure("--check-config failed:\n%s" % err)
    lines = out.splitlines()
    for want in ("server max_clients = 1024", "server client_idle_timeout = 0",
                 "bind default pool_size = 4", "server route_cache = 1024 (default)",
                 "bind default foreign_keys = off (default)",
                 "bind memory_db snapshot_interval = 0 (default)"):
        if want not in lines:
            raise TestFailure("--check-config lacks the line %r:\n%s" % (want, out))
    # Keys of other kinds of binds are not shown for SQLite binds.
    for key in ("pool_min", "connect_timeout", "idle_timeout", "max_queue"):
        for bind in ("default", "second_db", "memory_db"):
            if ("bind %s %s =" % (bind, key)) in out:
                raise TestFailure("--check-config shows PostgreSQL's %s for SQLite bind %s:\n%s"
                                  % (key, bind, out))
    for key in ("snapshot =", "snapshot_interval", "snapshot_on_damage"):
        if ("bind default %s" % key) in out:
            raise TestFailure("--check-config shows the in-memory key %s for a file bind:\n%s" % (key, out))
