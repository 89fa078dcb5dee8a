"""The sqlmux CLI ($BUILD/sqlmux) against the real daemon: -c, scripts from
stdin and files, every output mode, exit statuses, connection options, and
interactive sessions on a real pseudo-terminal (tmux), read back from the
screen as a person would see them."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

from harness import Daemon, TestFailure, daemon_binary, eq, make_config

IO_TIMEOUT = 30


def cli_binary():
    path = os.path.join(os.path.dirname(daemon_binary()), "sqlmux")
    if not os.path.exists(path):
        raise TestFailure("%s not found (run make)" % path)
    return path


def url_of(d):
    return "sqlmux://127.0.0.1:%d" % d.port


def cli(d, *args, stdin=b"", env=None, url=True, timeout=IO_TIMEOUT):
    """Run the CLI (with d's URL first unless url=False); returns
    (status, stdout, stderr) as text."""
    argv = [cli_binary()] + ([url_of(d)] if url and d is not None else []) + list(args)
    penv = dict(os.environ)
    for k in ("SQLMUX_URL", "SQLMUX_USER", "SQLMUX_PASSWORD"):
        penv.pop(k, None)
    penv.update(env or {})
    p = subprocess.run(argv, input=stdin if isinstance(stdin, bytes) else stdin.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=penv, timeout=timeout,
                       start_new_session=True)   # no controlling terminal to ask a password on
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def expect(result, status, stdout=None, stderr=None):
    rc, out, err = result
    if rc != status or (stdout is not None and out != stdout) or (stderr is not None and err != stderr):
        raise TestFailure("want status %r, stdout %r, stderr %r\n got status %r, stdout %r, stderr %r"
                          % (status, stdout, stderr, rc, out, err))
    return result


# ---------------------------------------------------------------------------
# Non-interactive
# ---------------------------------------------------------------------------

def test_command_option(d):
    """-c runs its SQL; -c may be repeated and holds several statements and
    dot-command lines; without a terminal the output is TSV."""
    expect(cli(d, "-c", "SELECT 1 AS one"), 0, "one\n1\n", "")
    expect(cli(d, "-c", "SELECT 'a' AS x, 2 AS y; SELECT 3 AS z;", "-c", "INSERT INTO test1 (color) VALUES ('c')"),
           0, "x\ty\na\t2\nz\n3\n", "")
    expect(cli(d, "-c", ".use memory_db\nSELECT id, color FROM test3"), 0, "id\tcolor\n", "")
    eq(d.file_query("app.db", "SELECT color FROM test1"), [("c",)], "the -c INSERT")


SCRIPT = """\
-- a script with everything in it
CREATE TABLE notes (
    id INTEGER PRIMARY KEY,
    body TEXT   -- a comment; with a semicolon
);
CREATE TABLE log (msg TEXT);
CREATE TRIGGER notes_log AFTER INSERT ON notes BEGIN
    INSERT INTO log VALUES ('added ' || NEW.body);
    INSERT INTO log VALUES ('twice; really');
END;
INSERT INTO notes (body) VALUES ('first; line'), ('multi
line');  INSERT INTO notes (body) VALUES ('third');
/* a block
   comment; */
SELECT count(*) AS n FROM log;
.use memory_db
INSERT INTO test3 (id) VALUES (5);
SELECT id, color FROM test3
"""


def test_script_from_stdin(d):
    """A script on stdin: statements over several lines, several on a line,
    comments, a trigger body with ';' inside, a dot-command, a last
    statement without ';'."""
    expect(cli(d, stdin=SCRIPT), 0, "n\n6\nid\tcolor\n5\tblue\n", "")
    eq(d.file_query("app.db", "SELECT body FROM notes ORDER BY id"),
       [("first; line",), ("multi\nline",), ("third",)], "notes")
    # The same script as a file, positional or with -f, with "-" for stdin.
    with Daemon() as d2:
        path = d2.write_file("script.sql", SCRIPT)
        expect(cli(d2, path), 0, "n\n6\nid\tcolor\n5\tblue\n", "")
    with Daemon() as d3:
        path = d3.write_file("script.sql", SCRIPT)
        expect(cli(d3, "-c", "SELECT 'before' AS w", "-f", path, "-c", "SELECT 'after' AS w"), 0,
               "w\nbefore\nn\n6\nid\tcolor\n5\tblue\nw\nafter\n", "")
    with Daemon() as d4:
        expect(cli(d4, "-", stdin=SCRIPT), 0, "n\n6\nid\tcolor\n5\tblue\n", "")


VALUES_SQL = ("SELECT 1 AS i, 2.5 AS r, NULL AS n, '' AS e, 'NULL' AS t, 'a,b\"c' AS q, "
              "'tab\there' AS tb, 'two\nlines' AS nl, x'00ff' AS b, 'h\u00e9 \u2603' AS u, '\\N' AS bs "
              "UNION ALL SELECT -3, -1e300, 'x', ' ', 'y', 'z', '', '', x'', '007', ''")


def test_output_modes(d):
    """Each mode shows NULL apart from the text 'NULL' and the empty string;
    blobs as \\x hex."""
    expect(cli(d, "--csv", "-c", VALUES_SQL), 0,
           'i,r,n,e,t,q,tb,nl,b,u,bs\n'
           '1,2.5,,"",NULL,"a,b""c",tab\there,"two\nlines",\\x00ff,h\u00e9 \u2603,\\N\n'
           '-3,-1e+300,x, ,y,z,"","",\\x,007,""\n', "")
    expect(cli(d, "--tsv", "-c", VALUES_SQL), 0,
           'i\tr\tn\te\tt\tq\ttb\tnl\tb\tu\tbs\n'
           '1\t2.5\t\\N\t\tNULL\ta,b"c\ttab\\there\ttwo\\nlines\t\\x00ff\th\u00e9 \u2603\t\\\\N\n'
           '-3\t-1e+300\tx\t \ty\tz\t\t\t\\x\t007\t\n', "")
    expect(cli(d, "--csv", "--no-header", "-c", "SELECT 1, NULL"), 0, "1,\n", "")
    rc, out, err = expect(cli(d, "--json", "-c", VALUES_SQL, "-c", "SELECT 1 AS one WHERE 0"), 0, stderr="")
    docs = out.splitlines()
    # One JSON array per result, rows one per line.
    first = json.loads("\n".join(docs[:2]))
    eq(first, [
        {"i": "1", "r": "2.5", "n": None, "e": "", "t": "NULL", "q": 'a,b"c', "tb": "tab\there",
         "nl": "two\nlines", "b": "\\x00ff", "u": "h\u00e9 \u2603", "bs": "\\N"},
        {"i": "-3", "r": "-1e+300", "n": "x", "e": " ", "t": "y", "q": "z", "tb": "", "nl": "", "b": "\\x",
         "u": "007", "bs": ""},
    ], "json")
    eq(docs[2:], ["[]"], "empty result")
    # Expression columns (no declared type) above are strings: the protocol
    # sends 1 and '1' alike. Declared text columns stay strings in JSON even
    # when they look like numbers; declared INTEGER columns are numbers.
    d.connect().request("INSERT INTO test1 (id, color) VALUES (1, '42')")
    expect(cli(d, "--json", "-c", "SELECT id, color FROM test1"), 0, '[{"id":1,"color":"42"}]\n', "")
    # Tables, forced without a terminal: NULL as NULL (table) or \u2205 (box),
    # numbers right-aligned, control characters escaped.
    expect(cli(d, "--table", "-c", "SELECT 1 AS id, NULL AS n, 'a\tb' AS t UNION ALL SELECT 10, 'x', ''"), 0,
           "+----+------+------+\n"
           "| id |  n   |  t   |\n"
           "+----+------+------+\n"
           "|  1 | NULL | a\\tb |\n"
           "| 10 | x    |      |\n"
           "+----+------+------+\n"
           "(2 rows)\n", "")
    expect(cli(d, "--box", "-c", "SELECT NULL AS n, '\u00e9t\u00e9' AS w", env={"LANG": "C.UTF-8"}), 0,
           "\u250c\u2500\u2500\u2500\u252c\u2500\u2500\u2500\u2500\u2500\u2510\n"
           "\u2502 n \u2502  w  \u2502\n"
           "\u251c\u2500\u2500\u2500\u253c\u2500\u2500\u2500\u2500\u2500\u2524\n"
           "\u2502 \u2205 \u2502 \u00e9t\u00e9 \u2502\n"
           "\u2514\u2500\u2500\u2500\u2534\u2500\u2500\u2500\u2500\u2500\u2518\n"
           "(1 row)\n", "")
    expect(cli(d, "--table", "--null", "(nil)", "-q", "-c", "SELECT NULL AS n"), 0,
           "+-------+\n|   n   |\n+-------+\n| (nil) |\n+-------+\n", "")
    # Statements without rows say what they did in table mode only.
    expect(cli(d, "--table", "-c", "INSERT INTO test2 (color) VALUES ('g')", "-c", ".use second_db"), 0,
           "OK changes=1 last_id=1\nOK bind=second_db\n", "")
    expect(cli(d, "--csv", "-c", "INSERT INTO test2 (color) VALUES ('h')"), 0, "", "")
    # .mode switches inside a script. A '.' line inside an unfinished
    # statement is part of the statement.
    expect(cli(d, "--csv", "-c", "SELECT 1 AS a;\n.mode json\nSELECT 2 AS a;\n.mode\n"), 0,
           'a\n1\n[{"a":"2"}]\njson\n', "")
    expect(cli(d, "--csv", "-c", "SELECT 1 AS a\n.mode json\n"), 1, "",
           'ERROR SQL: near ".": syntax error\n')


def test_large_result_streams(d):
    """CSV output of 300,000 rows streams through."""
    rc, out, err = expect(cli(d, "--csv", "-c",
                              "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                              "WHERE x < 300000) SELECT x FROM c"), 0, stderr="")
    lines = out.splitlines()
    eq(len(lines), 300001, "lines")
    eq(lines[-1], "300000", "last line")


def test_exit_status_and_errors(d):
    """A failed statement: its error on stderr with file:line, the script goes
    on, exit status 1. --bail and -v ON_ERROR_STOP=1 stop at it."""
    script = "SELECT 1 AS a;\nSELECT *\n  FROM nope;\nINSERT INTO test1 (color) VALUES ('ran');\n"
    expect(cli(d, stdin=script), 1, "a\n1\n", "<stdin>:2: ERROR SQL: no such table: nope\n")
    eq(d.file_query("app.db", "SELECT count(*) FROM test1"), [(1,)], "rows after the failure")
    for stop in (["--bail"], ["-v", "ON_ERROR_STOP=1"], ["--set", "on_error_stop=on"]):
        expect(cli(d, *stop, stdin=script), 1, "a\n1\n", "<stdin>:2: ERROR SQL: no such table: nope\n")
    eq(d.file_query("app.db", "SELECT count(*) FROM test1"), [(1,)], "rows after --bail")
    path = d.write_file("bad.sql", "\n\n.use nowhere\nSELECT 2 AS b;\n")
    rc, out, err = expect(cli(d, path), 1, "b\n2\n")
    if not err.startswith("%s:3: ERROR NOBIND: " % path) or err.count("\n") != 1:
        raise TestFailure("stderr: %r" % err)
    # -c strings have no location; dot-command errors count too.
    rc, out, err = cli(d, "-c", "SELECT 1; SELECT 2; CREATE TRIGGER tr AFTER INSERT ON test1 BEGIN "
                       "DELETE FROM test2; END")
    eq(rc, 1, "status")
    if not err.startswith("ERROR CROSSBIND: statement references tables of more than one bind"):
        raise TestFailure("stderr: %r" % err)
    rc, out, err = expect(cli(d, "-c", ".nosuch"), 1, "")
    if not err.startswith("ERROR UNKNOWN: ") or ".nosuch" not in err:
        raise TestFailure("stderr: %r" % err)
    expect(cli(d, "-c", ".mode bogus"), 1, "", "ERROR ARGS: unknown mode (want box, table, csv, tsv, json or expanded)\n")
    # Usage and connection problems: 2.
    rc, out, err = cli(d, "--no-such-option")
    eq(rc, 2, "status for a bad option")
    rc, out, err = cli(d, "-v", "FOO=1")
    eq((rc, "unknown variable" in err), (2, True), "status and message for -v FOO=1")
    rc, out, err = cli(d, os.path.join(d.dir, "missing.sql"))
    eq((rc, "No such file" in err), (2, True), "missing file")
    rc, out, err = cli(None, "sqlmux://127.0.0.1:1", "-c", "SELECT 1", url=False)
    eq((rc, out), (2, ""), "status without a daemon")
    if "could not connect to sqlmux://127.0.0.1:1" not in err:
        raise TestFailure("stderr: %r" % err)
    rc, out, err = cli(d, "-t", "0.3", "-c",
                       "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1e9) "
                       "SELECT count(*) FROM c")
    eq(rc, 2, "status after a reply timeout (stderr %r)" % err)
    if "ERROR NOREPLY: no reply from the daemon within 300 ms" not in err:
        raise TestFailure("stderr: %r" % err)
    expect(cli(d, "--help"), 0, stderr="")
    expect(cli(d, "-V"), 0, "sqlmux 0.1.0\n", "")


def test_connection_options():
    """URL forms, -s, -h/-p and $SQLMUX_URL reach the daemon; two ways at
    once are refused."""
    with Daemon(unix=True) as d:
        q = ["-c", "SELECT 7 AS seven"]
        want = (0, "seven\n7\n", "")
        expect(cli(d, "unix://" + d.unix_socket, *q, url=False), *want)
        expect(cli(d, "-s", d.unix_socket, *q, url=False), *want)
        expect(cli(d, "-h", "127.0.0.1", "-p", str(d.port), *q, url=False), *want)
        expect(cli(d, "--port", str(d.port), *q, url=False), *want)
        expect(cli(d, *q, url=False, env={"SQLMUX_URL": url_of(d)}), *want)
        rc, out, err = cli(d, "-s", d.unix_socket, "-p", "1", *q, url=False)
        eq((rc, "give one of" in err), (2, True), "two ways to connect")


def login_daemon():
    """A daemon with test_auth.py's users (alice "wonder land": read-write;
    bob: reads default only) and a short auth_fail_delay."""
    from test_auth import users_text
    return Daemon(config=make_config(server={"auth_fail_delay": "100"}) + users_text())


ALICE_PW = "wonder land"


def no_password_in(results, *secrets):
    """No stdout or stderr of results shows a secret (also %-encoded)."""
    for rc, out, err in results:
        for secret in secrets:
            for form in (secret, secret.replace(" ", "%20")):
                if form in out or form in err:
                    raise TestFailure("the CLI printed the password %r:\nstdout %r\nstderr %r" % (form, out, err))


def test_login_options():
    """-u/--user with $SQLMUX_PASSWORD, a login in the URL, $SQLMUX_USER:
    each logs in (bob's grants show which user it is). A refused login
    exits 2 with the daemon's AUTH message; without a login statements get
    NOAUTH; a user without a password and no terminal, or -W without one,
    exit 2. No output shows the password."""
    with login_daemon() as d:
        seen = []

        def run(*args, **kw):
            seen.append(cli(d, *args, **kw))
            return seen[-1]

        pw = {"SQLMUX_PASSWORD": ALICE_PW}
        expect(run("-u", "alice", "-c", "SELECT 1 AS one", env=pw), 0, "one\n1\n", "")
        expect(run("--user", "alice", "-c", "INSERT INTO test1 (color) VALUES ('cli')", env=pw), 0, "", "")
        rc, out, err = expect(run("-u", "bob", "-c", "INSERT INTO test1 (color) VALUES ('bob')",
                                  env={"SQLMUX_PASSWORD": "b0b-secret"}), 1, "")
        if not err.startswith("ERROR NOPERM: "):
            raise TestFailure("bob's write: %r" % err)
        url = "sqlmux://alice:wonder%%20land@127.0.0.1:%d" % d.port
        expect(run(url, "-c", "SELECT 2 AS two", url=False), 0, "two\n2\n", "")
        expect(run("-c", "SELECT 3 AS three", env={"SQLMUX_USER": "alice", "SQLMUX_PASSWORD": ALICE_PW}),
               0, "three\n3\n", "")
        # -u names the user of the URL's password.
        expect(run("sqlmux://bob:wonder%%20land@127.0.0.1:%d" % d.port, "-u", "alice", "-c", "SELECT 4 AS f",
                   url=False), 0, "f\n4\n", "")
        # .auth in a script.
        expect(run("-c", ".auth alice %s\nSELECT 5 AS five" % ALICE_PW), 0, "five\n5\n", "")
        eq(d.file_query("app.db", "SELECT color FROM test1"), [("cli",)], "rows written")

        # Refused: exit 2 as for a failed connection, the daemon's message.
        for args, env in ((["-u", "alice"], {"SQLMUX_PASSWORD": "not-" + ALICE_PW}),
                          (["-u", "nobody"], pw)):
            t0 = time.time()
            rc, out, err = expect(run(*args, "-c", "SELECT 1", env=env), 2, "")
            if "AUTH invalid user name or password" not in err or not err.startswith("sqlmux: could not connect"):
                raise TestFailure("stderr: %r" % err)
            if time.time() - t0 < 0.09:
                raise TestFailure("answered before the daemon's auth_fail_delay")
        rc, out, err = expect(run("sqlmux://alice:not-the-password@127.0.0.1:%d" % d.port, "-c", "SELECT 1",
                                  url=False), 2, "")
        if "sqlmux://alice:***@127.0.0.1:%d as alice: AUTH invalid" % d.port not in err:
            raise TestFailure("stderr: %r" % err)
        if "not-the-password" in err:
            raise TestFailure("the URL's password is shown: %r" % err)

        # No login: the daemon answers NOAUTH (exit 1, a failed statement).
        rc, out, err = expect(run("-c", "SELECT 1"), 1, "")
        if not err.startswith("ERROR NOAUTH: authentication required"):
            raise TestFailure("stderr: %r" % err)
        # A user without a password and nothing to ask on; -W without a
        # terminal; a password without a user.
        rc, out, err = expect(run("-u", "alice", "-c", "SELECT 1"), 2, "")
        if "no password for user alice" not in err:
            raise TestFailure("stderr: %r" % err)
        rc, out, err = expect(run("-u", "alice", "-W", "-c", "SELECT 1", env=pw), 2, "")
        if "cannot ask for the password of alice: no terminal" not in err:
            raise TestFailure("stderr: %r" % err)
        rc, out, err = expect(run("-c", "SELECT 1", env=pw), 2, "")
        if "no user name" not in err:
            raise TestFailure("stderr: %r" % err)
        rc, out, err = expect(run("-c", ".auth alice"), 1, "")
        if "ERROR ARGS: usage: .auth USER PASSWORD" not in err:
            raise TestFailure("stderr: %r" % err)
        rc, out, err = expect(run("-c", ".auth alice wrong\nSELECT 1"), 1, "")
        if "ERROR AUTH: invalid user name or password" not in err or "ERROR NOAUTH" not in err:
            raise TestFailure("stderr: %r" % err)
        rc, out, err = expect(run("--help"), 0, stderr="")
        for opt in ("-u, --user USER", "-W, --password", "SQLMUX_USER", "SQLMUX_PASSWORD"):
            if opt not in out:
                raise TestFailure("--help does not mention %s:\n%s" % (opt, out))
        no_password_in(seen, ALICE_PW, "b0b-secret")
        log = d.stderr_text()
        if ALICE_PW in log:
            raise TestFailure("the daemon's log shows the password")



def test_script_interrupted(d):
    """SIGINT while a script's statement runs: the statement is cancelled
    (the daemon rolls back the transaction) and the script stops with 130."""
    script = ("BEGIN;\nINSERT INTO test1 (color) VALUES ('rolled back');\n"
              "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2e9) "
              "SELECT count(*) FROM c;\nCOMMIT;\n")
    p = subprocess.Popen([cli_binary(), url_of(d)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    p.stdin.write(script.encode())
    p.stdin.close()
    p.stdin = None
    time.sleep(0.7)
    start = time.time()
    p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        raise TestFailure("the CLI did not stop after SIGINT")
    eq(p.returncode, 130, "status (stderr %r)" % err)
    if time.time() - start > 3:
        raise TestFailure("SIGINT took %.1f s" % (time.time() - start))
    if b"query cancelled" not in err:
        raise TestFailure("stderr: %r" % err)
    c = d.connect()
    r = c.request("SELECT count(*) FROM test1")
    eq(r.rows, [["0"]], "rows after the cancelled transaction")


# ---------------------------------------------------------------------------
# Interactive, on a pseudo-terminal
# ---------------------------------------------------------------------------

class Terminal:
    """A program on a tmux pseudo-terminal (its own tmux server). keys()
    types, screen() reads what is shown, wait_for() polls the screen."""

    def __init__(self, argv, env, width=110, height=45):
        if shutil.which("tmux") is None:
            raise TestFailure("tmux is not installed (make deps installs it)")
        self.dir = tempfile.mkdtemp(prefix="sqlmux-tty-")
        self.status_path = os.path.join(self.dir, "status")
        self.tmux = ["tmux", "-L", "sqlmux-test", "-f", "/dev/null"]
        self.env = dict(os.environ, TMUX_TMPDIR=self.dir)
        self.env.pop("TMUX", None)
        inner = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in env.items())
        cmd = "env %s %s; echo $? > %s" % (inner, " ".join(shlex.quote(a) for a in argv),
                                           shlex.quote(self.status_path))
        self._tmux("new-session", "-d", "-x", str(width), "-y", str(height), cmd)

    def _tmux(self, *args):
        return subprocess.run(self.tmux + list(args), env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=10)

    def keys(self, text, enter=True):
        # -l: literally; a trailing ';' would end tmux's command otherwise.
        if text:
            self._tmux("send-keys", "-l", text[:-1] + "\\;" if text.endswith(";") else text)
        if enter:
            self._tmux("send-keys", "Enter")

    def key(self, name):
        self._tmux("send-keys", name)

    def screen(self):
        r = self._tmux("capture-pane", "-p", "-J")
        return r.stdout.decode("utf-8", "replace")

    def wait_for(self, text, timeout=10, count=1):
        """Wait until text shows `count` times; returns the screen."""
        deadline = time.time() + timeout
        while True:
            s = self.screen()
            if s.count(text) >= count:
                return s
            if time.time() > deadline:
                raise TestFailure("%r not on the screen after %ss; the screen:\n%s" % (text, timeout, s))
            time.sleep(0.05)

    def exit_status(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with open(self.status_path) as f:
                    text = f.read().strip()
                if text:
                    return int(text)
            except OSError:
                pass
            time.sleep(0.05)
        raise TestFailure("the program did not exit; the screen:\n" + self.screen())

    def close(self):
        self._tmux("kill-server")
        shutil.rmtree(self.dir, ignore_errors=True)


def interactive(d, tmpdir):
    """The CLI on a terminal, connected to d, history in tmpdir."""
    env = {"LANG": "C.UTF-8", "TERM": "xterm", "NO_COLOR": "1", "HOME": tmpdir,
           "SQLMUX_HISTORY": os.path.join(tmpdir, "history"),
           "ASAN_OPTIONS": "log_path=%s/asan" % tmpdir, "UBSAN_OPTIONS": "log_path=%s/ubsan" % tmpdir}
    return Terminal([cli_binary(), url_of(d)], env)


def no_sanitizer_reports(tmpdir):
    reports = [f for f in os.listdir(tmpdir) if f.startswith(("asan", "ubsan"))]
    if reports:
        text = "".join(open(os.path.join(tmpdir, f)).read() for f in reports)
        raise TestFailure("sanitizer reports:\n" + text)


def screen_lines(screen):
    return [line.rstrip() for line in screen.splitlines()]


def test_interactive_session(d):
    """Prompt, continuation prompt, a box table, an error, .use changing the
    prompt, Ctrl-C at the prompt dropping the typed statement, history with
    the Up arrow and in the history file, .quit."""
    tmpdir = tempfile.mkdtemp(prefix="sqlmux-cli-")
    t = interactive(d, tmpdir)
    try:
        t.wait_for("default> ")
        t.keys("SELECT 1 AS a,")
        t.wait_for("    ...> ")
        t.keys("  'x' AS b, NULL AS c;")
        t.wait_for("(1 row)")
        t.keys("SELECT * FROM nope;")
        t.wait_for("ERROR SQL: no such table: nope")
        t.keys(".use second_db")
        t.wait_for("second_db> ")
        t.keys("SELECT 'never run'", enter=False)
        t.wait_for("second_db> SELECT 'never run'")   # typed, not still in the tty's queue (^C flushes it)
        t.key("C-c")
        t.wait_for("^C")
        t.keys("INSERT INTO test2 (color) VALUES ('from the terminal');")
        t.wait_for("OK changes=1 last_id=1")
        t.key("Up")
        s = t.wait_for("second_db> INSERT INTO test2 (color) VALUES ('from the terminal');", count=2)
        t.key("C-u")
        t.keys(".quit")
        eq(t.exit_status(), 0, "exit status")
        lines = screen_lines(s)
        start = lines.index("default> SELECT 1 AS a,")
        eq(lines[start:start + 15], [
            "default> SELECT 1 AS a,",
            "    ...>   'x' AS b, NULL AS c;",
            "\u250c\u2500\u2500\u2500\u252c\u2500\u2500\u2500\u252c\u2500\u2500\u2500\u2510",
            "\u2502 a \u2502 b \u2502 c \u2502",
            "\u251c\u2500\u2500\u2500\u253c\u2500\u2500\u2500\u253c\u2500\u2500\u2500\u2524",
            "\u2502 1 \u2502 x \u2502 \u2205 \u2502",
            "\u2514\u2500\u2500\u2500\u2534\u2500\u2500\u2500\u2534\u2500\u2500\u2500\u2518",
            "(1 row)",
            "default> SELECT * FROM nope;",
            "ERROR SQL: no such table: nope",
            "default> .use second_db",
            "OK bind=second_db",
            "second_db> SELECT 'never run'^C",
            "second_db> INSERT INTO test2 (color) VALUES ('from the terminal');",
            "OK changes=1 last_id=1",
        ], "the screen")
        if not lines[0].startswith("sqlmux 0.1.0, connected to " + url_of(d)):
            raise TestFailure("banner: %r" % lines[0])
        eq(d.file_query("second.db", "SELECT color FROM test2"), [("from the terminal",)], "test2")
        with open(os.path.join(tmpdir, "history")) as f:
            hist = f.read()
        for line in ("SELECT\\0401\\040AS\\040a,", ".use\\040second_db"):
            if line not in hist:
                raise TestFailure("%r not in the history file:\n%s" % (line, hist))
        if "never" in hist:
            raise TestFailure("the cancelled line is in the history")
        no_sanitizer_reports(tmpdir)
    finally:
        t.close()
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_interactive_cancel(d):
    """Ctrl-C during a long statement: the shell stops waiting, says what
    happened, reconnects to the same bind; the transaction was rolled back.
    Ctrl-D leaves."""
    tmpdir = tempfile.mkdtemp(prefix="sqlmux-cli-")
    t = interactive(d, tmpdir)
    try:
        t.wait_for("default> ")
        t.keys(".use second_db")
        t.wait_for("second_db> ")
        t.keys("BEGIN;")
        t.wait_for("OK", count=2)
        t.keys("INSERT INTO test2 (color) VALUES ('uncommitted');")
        t.wait_for("OK changes=1")
        t.keys("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2e9) "
               "SELECT count(*) FROM c;")
        time.sleep(0.5)
        start = time.time()
        t.key("C-c")
        s = t.wait_for("query cancelled; reconnected (the daemon stopped the statement and rolled back "
                       "any open transaction)")
        if time.time() - start > 3:
            raise TestFailure("Ctrl-C took %.1f s" % (time.time() - start))
        t.wait_for("second_db> ", count=2)   # the prompt had "*" while the transaction was open
        if "second_db*> INSERT INTO test2" not in t.screen():
            raise TestFailure("no open-transaction mark in the prompt:\n" + t.screen())
        # The reconnected session is on second_db again, the row is gone.
        t.keys("SELECT count(*) AS n FROM test2;")
        s = t.wait_for("(1 row)")
        lines = screen_lines(s)
        i = lines.index("second_db> SELECT count(*) AS n FROM test2;")
        eq(lines[i + 1:i + 6], ["\u250c\u2500\u2500\u2500\u2510", "\u2502 n \u2502",
                                "\u251c\u2500\u2500\u2500\u2524", "\u2502 0 \u2502",
                                "\u2514\u2500\u2500\u2500\u2518"], "count after the cancel")
        t.keys(".route SELECT 1", enter=True)
        t.wait_for("OK bind=second_db")
        t.key("C-d")
        eq(t.exit_status(), 0, "exit status after Ctrl-D")
        no_sanitizer_reports(tmpdir)
    finally:
        t.close()
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_interactive_password_prompt():
    """-u USER on a terminal without $SQLMUX_PASSWORD asks "Password for
    USER: " without echo, logs in, and keeps the login when Ctrl-C makes it
    connect again; `.auth USER` asks too; no .auth line goes to the history;
    a wrong password at the prompt exits 2."""
    with login_daemon() as d:
        tmpdir = tempfile.mkdtemp(prefix="sqlmux-cli-")
        env = {"LANG": "C.UTF-8", "TERM": "xterm", "NO_COLOR": "1", "HOME": tmpdir,
               "SQLMUX_HISTORY": os.path.join(tmpdir, "history"), "SQLMUX_PASSWORD": "",
               "SQLMUX_USER": "", "ASAN_OPTIONS": "log_path=%s/asan" % tmpdir,
               "UBSAN_OPTIONS": "log_path=%s/ubsan" % tmpdir}
        t = Terminal([cli_binary(), url_of(d), "-u", "alice"], env)
        try:
            t.wait_for("Password for alice: ")
            t.keys(ALICE_PW)
            s = t.wait_for("default> ")
            if "sqlmux 0.1.0, connected to %s as alice" % url_of(d) not in s:
                raise TestFailure("banner:\n" + s)
            t.keys("INSERT INTO test1 (color) VALUES ('typed');")
            t.wait_for("OK changes=1")
            # Ctrl-C closes the connection; the new one is logged in too.
            t.keys("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2e9) "
                   "SELECT count(*) FROM c;")
            time.sleep(0.5)
            t.key("C-c")
            t.wait_for("query cancelled; reconnected")
            t.keys("SELECT count(*) AS n FROM test1;")
            t.wait_for("(1 row)")
            t.keys(".auth bob")
            t.wait_for("Password for bob: ")
            t.keys("b0b-secret")
            t.wait_for("OK user=bob")
            t.keys("INSERT INTO test1 (color) VALUES ('bob');")
            t.wait_for("ERROR NOPERM")
            t.keys(".auth alice " + ALICE_PW)
            s = t.wait_for("OK user=alice")
            t.keys(".quit")
            eq(t.exit_status(), 0, "exit status")
            if "NOAUTH" in s:
                raise TestFailure("not logged in after reconnecting:\n" + s)
            shown = s.replace(".auth alice " + ALICE_PW, "")   # typed in full on purpose
            if ALICE_PW in shown or "b0b-secret" in shown:
                raise TestFailure("a password is on the screen:\n" + s)
            with open(os.path.join(tmpdir, "history")) as f:
                hist = f.read()
            for secret in (".auth", "wonder", "b0b-secret"):
                if secret in hist:
                    raise TestFailure("%r in the history file:\n%s" % (secret, hist))
            if "INSERT\\040INTO\\040test1" not in hist:
                raise TestFailure("the history file lacks the statements:\n" + hist)
            eq(d.file_query("app.db", "SELECT color FROM test1"), [("typed",)], "rows")
            no_sanitizer_reports(tmpdir)
        finally:
            t.close()
        # The prompt is on the terminal (not stderr, kept in a file here, as
        # the screen goes when the program exits).
        errfile = os.path.join(tmpdir, "stderr")
        t = Terminal(["sh", "-c", 'exec "$0" "$@" 2>"%s"' % errfile, cli_binary(), url_of(d), "--user", "alice"],
                     env)
        try:
            s = t.wait_for("Password for alice: ")
            t.keys("wonder lan")
            eq(t.exit_status(), 2, "exit status after a wrong password")
            with open(errfile) as f:
                err = f.read()
            if "could not connect to %s as alice: AUTH invalid user name or password" % url_of(d) not in err:
                raise TestFailure("stderr: %r" % err)
            if "wonder lan" in s + err or "Password" in err:
                raise TestFailure("stderr %r, screen:\n%s" % (err, s))
            no_sanitizer_reports(tmpdir)
        finally:
            t.close()
            shutil.rmtree(tmpdir, ignore_errors=True)
