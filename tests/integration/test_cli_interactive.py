"""The sqlmux CLI on a terminal (tmux): the prompt's open-transaction mark
and bind, both as the daemon reports them; history written as each line is
entered; psql's \\x and \\timing; a login asked for only when the daemon
wants one."""

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time

from harness import TestFailure, eq
from test_cli import Terminal, cli_binary, interactive, login_daemon, no_sanitizer_reports, screen_lines, url_of


@contextlib.contextmanager
def scratch_dir():
    tmpdir = tempfile.mkdtemp(prefix="sqlmux-cli-")
    try:
        yield tmpdir
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


@contextlib.contextmanager
def session(d, tmpdir):
    """The CLI on a terminal (test_cli.interactive) with HOME and history in
    tmpdir; closed at the end, with no sanitizer report allowed."""
    t = interactive(d, tmpdir)
    try:
        yield t
        no_sanitizer_reports(tmpdir)
    finally:
        t.close()


def test_cli_prompt_shows_transaction_and_bind(d):
    """psql's '*' while a transaction is open: from BEGIN (held by the
    daemon until a table is named) through statements and a failed one, up
    to COMMIT or ROLLBACK; after .use the bind's name; a transaction begun
    by SAVEPOINT shows too (what the daemon says, not what the SQL looks
    like)."""
    with scratch_dir() as tmpdir, session(d, tmpdir) as t:
        t.wait_for("default> ")
        t.keys("BEGIN;")
        t.wait_for("default*> ")
        t.keys("INSERT INTO test1 (color) VALUES ('in txn');")
        t.wait_for("OK changes=1")
        t.keys("SELECT * FROM nope;")
        t.wait_for("ERROR SQL: no such table: nope")
        t.keys("COMMIT;")
        t.wait_for("default*> COMMIT;")
        t.keys(".use second_db")
        t.wait_for("second_db> ")
        t.keys("SAVEPOINT sp1;")
        t.wait_for("second_db> SAVEPOINT sp1;")
        t.keys("INSERT INTO test2 (color) VALUES ('x');")
        t.wait_for("second_db*> ")
        t.keys("ROLLBACK;")
        t.wait_for("second_db*> ROLLBACK;")
        t.keys("SELECT 1 AS done;")
        s = t.wait_for("(1 row)")
        t.keys(".quit")
        eq(t.exit_status(), 0, "exit status")
        lines = screen_lines(s)
        prompts = [line.split(" ", 1)[0] for line in lines if re.match(r"^\S+> ", line)]
        eq(prompts, ["default>", "default*>", "default*>", "default*>", "default>", "second_db>",
                     "second_db*>", "second_db*>", "second_db>"], "prompts:\n" + s)
        eq(d.file_query("app.db", "SELECT color FROM test1"), [("in txn",)], "committed row")
        eq(d.file_query("second.db", "SELECT count(*) FROM test2"), [(0,)], "rolled back row")


def test_cli_history_written_per_entry(d):
    """Each line goes to the history file as it is entered: a shell killed
    with SIGKILL loses nothing; the next session finds the lines (Up)."""
    with scratch_dir() as tmpdir:
        hist = os.path.join(tmpdir, "history")
        with session(d, tmpdir) as t:
            t.wait_for("default> ")
            t.keys("SELECT 'one' AS a;")
            t.wait_for("(1 row)")
            t.keys("SELECT 'two' AS a;")
            t.wait_for("(1 row)", count=2)
            with open(hist) as f:
                text = f.read()
            eq(text, "_HiStOrY_V2_\nSELECT\\040'one'\\040AS\\040a;\nSELECT\\040'two'\\040AS\\040a;\n",
               "history file while the shell runs")
            pane = t._tmux("list-panes", "-F", "#{pane_pid}").stdout.decode().split()[0]
            pids = subprocess.run(["pgrep", "-P", pane], stdout=subprocess.PIPE).stdout.decode().split()
            for pid in pids:
                os.kill(int(pid), 9)
            t.exit_status()
        with session(d, tmpdir) as t:
            t.wait_for("default> ")
            t.key("Up")
            t.wait_for("default> SELECT 'two' AS a;")
            t.key("C-u")
            t.keys("SELECT 'three' AS a;")
            t.wait_for("(1 row)")
            t.keys(".quit")
            eq(t.exit_status(), 0, "exit status")
            with open(hist) as f:
                eq(f.read().count("\n"), 5, "history lines (header, four entries)")


def test_cli_expanded_and_timing_on_a_terminal(d):
    """\\x and \\timing typed at the prompt."""
    with scratch_dir() as tmpdir, session(d, tmpdir) as t:
        t.wait_for("default> ")
        t.keys("\\x")
        t.wait_for("Expanded display is on.")
        t.keys("\\timing")
        t.wait_for("Timing is on.")
        t.keys("SELECT 1 AS id, 'red' AS color;")
        s = t.wait_for("Time: ")
        lines = screen_lines(s)
        i = lines.index("default> SELECT 1 AS id, 'red' AS color;")
        eq(lines[i + 1:i + 5], ["-[ RECORD 1 ]-", "id    | 1", "color | red", "(1 row)"], "expanded")
        if not re.fullmatch(r"Time: \d+\.\d{3} ms", lines[i + 5]):
            raise TestFailure("timing line: %r" % lines[i + 5])
        t.keys("\\q")
        eq(t.exit_status(), 0, "exit status")


def test_cli_password_asked_only_when_the_daemon_wants_a_login(d):
    """-u USER on a terminal: a daemon without users is used at once (no
    prompt); one with users gets the prompt (test_cli covers the rest)."""
    tmpdir = tempfile.mkdtemp(prefix="sqlmux-cli-")
    env = {"LANG": "C.UTF-8", "TERM": "xterm", "NO_COLOR": "1", "HOME": tmpdir,
           "SQLMUX_HISTORY": "", "SQLMUX_PASSWORD": "", "SQLMUX_USER": ""}
    t = Terminal([cli_binary(), url_of(d), "-u", "bob"], env)
    try:
        s = t.wait_for("default> ")
        if "Password" in s:
            raise TestFailure("asked for a password the daemon does not want:\n" + s)
        t.keys("SELECT 'in' AS w;")
        t.wait_for("(1 row)")
        t.keys(".quit")
        eq(t.exit_status(), 0, "exit status")
    finally:
        t.close()
    with login_daemon() as ld:
        t = Terminal([cli_binary(), url_of(ld), "-u", "alice"], env)
        try:
            t.wait_for("Password for alice: ")
        finally:
            t.close()
    shutil.rmtree(tmpdir, ignore_errors=True)


def test_cli_read_stops_at_ctrl_c(d):
    """Ctrl-C during a statement of a file run with .read cancels it (the
    daemon rolls back) and stops the file, as psql's \\i does; the session
    goes on."""
    with scratch_dir() as tmpdir, session(d, tmpdir) as t:
        path = os.path.join(tmpdir, "slow.sql")
        with open(path, "w") as f:
            f.write("INSERT INTO test1 (color) VALUES ('before');\n"
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2e9) "
                    "SELECT count(*) FROM c;\n"
                    "INSERT INTO test1 (color) VALUES ('after');\n")
        t.wait_for("default> ")
        t.keys(".read " + path)
        t.wait_for("OK changes=1")
        time.sleep(0.5)
        t.key("C-c")
        t.wait_for("%s: interrupted; the rest of the file did not run" % path)
        t.wait_for("default> ", count=2)
        t.keys("SELECT count(*) AS n FROM test1;")
        t.wait_for("(1 row)")
        t.keys(".quit")
        eq(t.exit_status(), 0, "exit status")
        eq(d.file_query("app.db", "SELECT color FROM test1"), [("before",)], "rows")
