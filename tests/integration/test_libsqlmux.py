"""libsqlmux, the C client library, against the real daemon.

Each test starts a daemon with the harness and runs cases of the C program
tests/client/libtest.c ($BUILD/tests/client/libtest, built by `make unit`)
against it; a case prints "ok - name" or "not ok - name" with its failed
checks. Some tests then look at the daemon's files from Python. The
example program of README.md runs here too, and the installed pkg-config
file is checked by compiling against it.
"""

import os
import time
import shutil
import signal
import subprocess
import tempfile

from harness import REPO, Daemon, TestFailure, daemon_binary, eq, make_config


def build_dir():
    return os.path.dirname(daemon_binary())


def libtest_binary():
    path = os.path.join(build_dir(), "tests", "client", "libtest")
    if not os.path.exists(path):
        raise TestFailure("%s not found (run make unit)" % path)
    return path


def tcp_url(d):
    return "sqlmux://127.0.0.1:%d" % d.port


def run_cases(d, *cases, url=None, env=None, timeout=45):
    """Run libtest CASES against d; fail with its output unless every case
    printed "ok - CASE" and it exited 0. env: variables to set (None:
    remove); $SQLMUX_USER and $SQLMUX_PASSWORD are always removed first."""
    penv = dict(os.environ)
    penv.pop("SQLMUX_USER", None)
    penv.pop("SQLMUX_PASSWORD", None)
    for k, v in (env or {}).items():
        if v is None:
            penv.pop(k, None)
        else:
            penv[k] = v
    if d.uses_unix:
        penv["LIBTEST_UNIX_URL"] = "unix://" + d.unix_socket
    argv = [libtest_binary(), url or tcp_url(d)] + list(cases)
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=penv, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise TestFailure("%s did not finish within %ss\nstdout:\n%s\nstderr:\n%s"
                          % (" ".join(argv), timeout, (e.stdout or b"").decode(errors="replace"),
                             (e.stderr or b"").decode(errors="replace")))
    out = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    passed = {line[5:] for line in out.splitlines() if line.startswith("ok - ")}
    if p.returncode != 0 or any(c not in passed for c in cases):
        raise TestFailure("libtest %s: exit status %s\nstdout:\n%s\nstderr:\n%s"
                          % (" ".join(cases), p.returncode, out, err))
    return err


def test_value_roundtrips(d):
    """Every type through parameters and back, through a table, and any
    bytes in the SQL text itself."""
    run_cases(d, "types", "sql_any_bytes")


def test_results(d):
    """Columns, declared types, rows, seeking, changes and last_id."""
    run_cases(d, "columns_and_rows", "changes_and_last_id")


def test_errors_and_misuse(d):
    """Daemon errors come back with their code and message and leave the
    connection usable; API misuse is refused without harm."""
    run_cases(d, "server_errors", "misuse")


def test_commands(d):
    run_cases(d, "commands")


def test_streaming(d):
    """200,000 rows read one at a time; streams freed early; a stream whose
    connection is closed under it."""
    run_cases(d, "streaming")


def test_pipelining_10000():
    """10,000 requests sent before any result is read, on a daemon that reads
    only 16 ahead; then 600 requests of 64 KiB each way."""
    with Daemon(server={"max_pipeline": "16"}) as d:
        err = run_cases(d, "pipelining", "pipelining_large")
        if "pipelined requests in" not in err:
            raise TestFailure("no timing line:\n" + err)


def test_connect_errors_and_forms():
    """Refused, bad URLs, unreachable socket path; the unix socket URL and
    the $SQLMUX_URL default."""
    with Daemon(unix=True) as d:
        run_cases(d, "connect_refused", "connect_forms")


def test_timeouts(d):
    """A peer that never answers (connect, then a statement) and a statement
    slower than the timeout: NOREPLY, the connection broken for good, the
    daemon fine afterwards."""
    run_cases(d, "timeouts")


def test_closed_mid_result(d):
    """Fake daemons that close in the middle of a result or send garbage."""
    run_cases(d, "closed_mid_result")


def test_daemon_quits(d):
    """.quit in a pipeline: the answers before it arrive, the later requests
    fail with CONNECTION."""
    run_cases(d, "daemon_quits")


def test_daemon_killed_mid_stream():
    """The daemon dies (SIGKILL) while a result streams: the stream ends with
    CONNECTION."""
    d = Daemon()
    try:
        run_cases(d, "daemon_killed", env={"LIBTEST_DAEMON_PID": str(d.pid)})
        eq(d.stop(), -signal.SIGKILL, "daemon exit status")
    finally:
        d.cleanup()


def test_cancel_rolls_back(d):
    """The cancel fd ends a long statement at once; the daemon rolls back the
    client's open transaction."""
    run_cases(d, "interrupt")
    eq(d.file_query("app.db", "SELECT v FROM lt_cancel ORDER BY id"), [("committed",)], "lt_cancel rows")


def test_max_clients():
    with Daemon(server={"max_clients": "1"}) as d:
        # The harness's start-up .ping connection is freed by the daemon
        # asynchronously after it closes; wait until the one slot is free.
        deadline = time.time() + 10
        while True:
            c = d.connect()
            r = c.request(".ping")
            c.close()
            if r.ok or time.time() > deadline:
                break
            time.sleep(0.05)
        time.sleep(0.2)   # this probe's own slot, freed the same way
        run_cases(d, "max_clients")


def test_note_scenario(d):
    """The note's three binds through the library; each row lands in its
    bind's database."""
    run_cases(d, "note_scenario")
    eq(d.file_query("app.db", "SELECT id, color FROM test1"), [(1, "green"), (2, "other bind")], "test1 in app.db")
    eq(d.file_query("second.db", "SELECT id, color FROM test2"), [(1, "red")], "test2 in second.db")
    # sqlmux_xact: the marker rows of the transaction across binds (xact.h)
    eq(d.file_tables("app.db"), ["sqlmux_xact", "test1"], "tables of app.db")


def test_threads(d):
    """Four threads, one connection each, at once."""
    run_cases(d, "threads")


def test_example_program(d):
    """The README's example, linked against libsqlmux.so."""
    exe = os.path.join(build_dir(), "sqlmux-example")
    p = subprocess.run([exe, tcp_url(d)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    eq(p.returncode, 0, "exit status (stderr: %s)" % p.stderr.decode(errors="replace"))
    eq(p.stdout.decode(), "inserted id 1\ninserted id 2\ninserted id 3\n"
                          "2 banana 101.0 (photo)\n3 cherry 102.0 (no photo)\n", "example output")


def test_pkg_config_install(d):
    """`make install-client` into a temporary DESTDIR installs the header,
    both libraries and sqlmux.pc; a program built with the .pc file's flags
    (statically, and against the .so) runs."""
    if shutil.which("pkg-config") is None:
        raise TestFailure("pkg-config is not installed")
    build = os.path.basename(build_dir())
    dest = tempfile.mkdtemp(prefix="sqlmux-install-")
    try:
        prefix = "/opt/sqlmux"
        env = dict(os.environ, MAKEFLAGS="")
        args = ["make", "-s", "-C", REPO, "install-client", "DESTDIR=" + dest, "PREFIX=" + prefix]
        if build == "build-san":
            args.append("SANITIZE=1")
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=120)
        if p.returncode != 0:
            raise TestFailure("make install-client failed:\n" + p.stdout.decode(errors="replace"))
        root = dest + prefix
        for f in ("include/sqlmux.h", "lib/libsqlmux.a", "lib/libsqlmux.so.0", "lib/libsqlmux.so",
                  "lib/pkgconfig/sqlmux.pc", "bin/sqlmux"):
            if not os.path.exists(os.path.join(root, f)):
                raise TestFailure("not installed: " + f)
        # The .pc file names the install prefix; point pkg-config at the
        # DESTDIR copy.
        penv = dict(os.environ, PKG_CONFIG_PATH=os.path.join(root, "lib", "pkgconfig"),
                    PKG_CONFIG_SYSROOT_DIR=dest)
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "sqlmux"], stdout=subprocess.PIPE,
                               env=penv, check=True).stdout.decode().split()
        eq(subprocess.run(["pkg-config", "--modversion", "sqlmux"], stdout=subprocess.PIPE,
                          env=penv, check=True).stdout.decode().strip(), "0.1.0", "version")
        san = ["-fsanitize=address,undefined"] if build == "build-san" else []
        src = os.path.join(REPO, "client", "example.c")
        outputs = []
        for kind in ("static", "shared"):
            exe = os.path.join(dest, "example-" + kind)
            link = (["-Wl,-Bstatic", "-lsqlmux", "-Wl,-Bdynamic"] if kind == "static" else
                    ["-lsqlmux", "-Wl,-rpath," + os.path.join(root, "lib")])
            # A static link takes the private libraries too (OpenSSL).
            private = [] if kind == "shared" else subprocess.run(
                ["pkg-config", "--static", "--libs-only-l", "sqlmux"], stdout=subprocess.PIPE, env=penv,
                check=True).stdout.decode().split()
            cmd = ["cc", "-std=c11", "-Wall", "-Werror"] + san + ["-o", exe, src] + \
                [f for f in flags if f != "-lsqlmux"] + link + [f for f in private if f != "-lsqlmux"] + ["-lpthread"]
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            if p.returncode != 0:
                raise TestFailure("%s\n%s" % (" ".join(cmd), p.stdout.decode(errors="replace")))
            r = subprocess.run([exe, tcp_url(d)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            eq(r.returncode, 0, "%s exit status (stderr: %s)" % (kind, r.stderr.decode(errors="replace")))
            outputs.append(r.stdout.decode())
        # The second run inserts three more fruits.
        eq(outputs[1].splitlines()[:3], ["inserted id 4", "inserted id 5", "inserted id 6"], "second run")
        # Only the sqlmux_* API is exported.
        for lib in ("libsqlmux.a", "libsqlmux.so.0"):
            nm = ["nm", "-g", "--defined-only"] + (["-D"] if lib.endswith(".0") else [])
            syms = subprocess.run(nm + [os.path.join(root, "lib", lib)], stdout=subprocess.PIPE,
                                  check=True).stdout.decode().split("\n")
            names = [s.split()[-1] for s in syms if len(s.split()) == 3]
            leaked = [n for n in names if not n.startswith("sqlmux_")]
            if leaked or not names:
                raise TestFailure("%s exports %r" % (lib, leaked or "nothing"))
    finally:
        shutil.rmtree(dest, ignore_errors=True)


test_pkg_config_install.timeout = 180


# ---------------------------------------------------------------------------
# Logging in (daemon users, .auth)
# ---------------------------------------------------------------------------

# dave's password holds every character a URL must escape; libtest.c has it
# too (DAVE_PASSWORD, percent-encoded in DAVE_ENCODED).
DAVE_PASSWORD = "p:w@ x/?&%#1"


def login_daemon(**kw):
    """A daemon with test_auth.py's users (alice, bob, carol) and dave, a
    short auth_fail_delay, and a unix socket too."""
    from test_auth import users_text, passwd
    dave = passwd(DAVE_PASSWORD, user="dave") + "grant.* = read-write\n"
    config = make_config(server={"auth_fail_delay": "100"}, unix=True, **kw) + users_text() + dave
    return Daemon(config=config)


def test_login_in_the_url():
    """USER:PASSWORD@ and ?user=&password= (TCP and unix socket) log in as
    the connection is made; sqlmux_conn_url() hides the password; a password
    with ':', '@', ' ' and more works percent-encoded, and given as it is
    to sqlmux_connect_auth()."""
    with login_daemon() as d:
        run_cases(d, "auth_url", "auth_special_password")
        eq(d.file_query("app.db", "SELECT count(*) FROM test1 WHERE color = 'by alice'"), [(3,)],
           "rows alice wrote")


def test_login_refused():
    """A wrong password or an unknown user fails sqlmux_connect() with the
    daemon's "AUTH invalid user name or password"; logins that cannot be
    sent (no password, no user, bad escapes, blanks at the ends) fail
    before; no message shows the password, nor does the daemon's log."""
    with login_daemon() as d:
        run_cases(d, "auth_refused")
        log = d.stderr_text()
        for secret in ("not-the-password", "wonder land", DAVE_PASSWORD):
            if secret in log:
                raise TestFailure("the daemon's log shows %r" % secret)


def test_login_from_the_environment():
    """$SQLMUX_USER and $SQLMUX_PASSWORD, and the URL's login winning over
    them; sqlmux_url_user()."""
    with login_daemon() as d:
        run_cases(d, "auth_env")


def test_login_explicit_and_noauth():
    """Without a login every statement answers NOAUTH; sqlmux_auth() logs
    in on the open connection, a refused one keeps the previous login, and
    arguments that cannot be sent are MISUSE."""
    with login_daemon() as d:
        run_cases(d, "auth_explicit")


def test_login_to_a_daemon_without_users(d):
    """A login in the URL does not stop the connection to a daemon without
    users; sqlmux_auth() answers AUTH there."""
    run_cases(d, "auth_off")
