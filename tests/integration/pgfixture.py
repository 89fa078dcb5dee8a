"""
PostgreSQL test fixture for the sqlmuxd integration tests: throw-away
PostgreSQL 15 clusters in temp dirs, on free ports, cleaned up whatever
happens.

    pg = pgfixture.shared()              # the run's shared cluster
    with pg.database() as db, pg_daemon(pg, db) as d:
        d.connect().request("CREATE TABLE accounts (id serial primary key)")
        pg.psql("SELECT count(*) FROM accounts", db=db)   # -> [["0"]]

    with PgCluster() as pg:              # a private one (stop/start/kill)
        pg.stop(); pg.start()

Every cluster has a superuser `postgres` (trust on the unix socket and on
127.0.0.1), a login role `sqlmux` with password `s3cret` (trust on the unix
socket, scram-sha-256 over TCP, so a TCP URL really authenticates), and a
database `app` owned by `sqlmux`.

The shared cluster: run.py calls start_shared() in its parent process when
a selected module is a test_pg* (or *_pg) one; it exports SQLMUX_TEST_PG_DIR and
SQLMUX_TEST_PG_PORT (or SQLMUX_TEST_PG_ERROR when PostgreSQL cannot be set
up) before forking the test processes, and calls stop_shared() at the end.
shared() in a test process returns a handle to it (a test run outside
run.py gets a private cluster, stopped at exit). All clusters of a run live
under one run directory (SQLMUX_TEST_PG_RUNDIR); stop_shared() stops any
server still running there, so no postgres outlives the run even when a
test process was killed.

Server commands (initdb, pg_ctl) run as the `postgres` user through
`runuser` when the tests run as root; psql runs as the current user.
Missing PostgreSQL binaries make the PG tests fail, never skip.

Python 3 standard library only.
"""

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import harness
from harness import TestFailure, free_port

PG_BIN = os.environ.get("SQLMUX_PG_BIN", "/usr/lib/postgresql/15/bin")
PSQL = os.environ.get("SQLMUX_PSQL") or shutil.which("psql") or "/usr/bin/psql"

USER = "sqlmux"
PASSWORD = "s3cret"
APP_DB = "app"

ENV_DIR = "SQLMUX_TEST_PG_DIR"
ENV_PORT = "SQLMUX_TEST_PG_PORT"
ENV_ERROR = "SQLMUX_TEST_PG_ERROR"
ENV_RUNDIR = "SQLMUX_TEST_PG_RUNDIR"
ENV_TEMPLATE = "SQLMUX_TEST_PG_TEMPLATE"

# psql's unaligned output separators: control characters no test value
# holds, so values may contain tabs and newlines.
FIELD_SEP = "\x1f"
RECORD_SEP = "\x1e"

CMD_TIMEOUT = 60          # seconds for initdb / pg_ctl / psql

# Every cluster this process created (not the shared one), so the runner
# can show their logs and stop them after each test.
ALL_CLUSTERS = []

# Set by shared() in a test process; the runner shows its log on failure.
SHARED_USED = []

_SETUP_SQL = [
    "CREATE ROLE %s LOGIN PASSWORD '%s'" % (USER, PASSWORD),
    "CREATE DATABASE %s OWNER %s" % (APP_DB, USER),
]

_HBA = """\
# sqlmux integration tests
local   all   all                     trust
host    all   postgres  127.0.0.1/32  trust
host    all   postgres  ::1/128       trust
host    all   all       127.0.0.1/32  scram-sha-256
host    all   all       ::1/128       scram-sha-256
"""


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def _is_root():
    return os.geteuid() == 0


def _pg_owner():
    """(uid, gid) that owns cluster files: postgres when root, else us."""
    if _is_root():
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise TestFailure("running as root but there is no 'postgres' user to run "
                              "the PostgreSQL server as (install postgresql)")
        return pw.pw_uid, pw.pw_gid
    return os.geteuid(), os.getegid()


def _server_cmd(argv):
    if _is_root():
        return ["runuser", "-u", "postgres", "--"] + list(argv)
    return list(argv)


def _clean_env():
    """Our environment without libpq variables that could redirect psql."""
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("PG"))
    env["LC_ALL"] = "C.UTF-8"
    env["LANG"] = "C.UTF-8"
    return env


def _run(argv, what, timeout=CMD_TIMEOUT, server=True, log=None):
    """Run a command (as postgres when server=True and root), raise
    TestFailure with its output (and the tail of `log`) when it fails."""
    cmd = _server_cmd(argv) if server else list(argv)
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=_clean_env(), cwd="/",
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.output or b"").decode("utf-8", "replace")
        raise TestFailure("%s: %s did not finish within %ss\n%s%s"
                          % (what, " ".join(cmd), timeout, out, _log_tail_text(log)))
    except OSError as e:
        raise TestFailure("%s: cannot run %s: %s" % (what, cmd[0], e))
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        raise TestFailure("%s: %s exited with status %s\n%s%s"
                          % (what, " ".join(cmd), p.returncode, out, _log_tail_text(log)))
    return out


def _log_tail_text(path, n=30):
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\nserver log %s (last %d lines):\n%s\n" % (path, n, "\n".join(lines[-n:]))


def check_binaries():
    """Fail (not skip) when the PostgreSQL server or psql is missing."""
    missing = [p for p in (os.path.join(PG_BIN, "initdb"), os.path.join(PG_BIN, "pg_ctl"),
                           os.path.join(PG_BIN, "postgres"), PSQL)
               if not os.access(p, os.X_OK)]
    if missing:
        raise TestFailure("PostgreSQL binaries missing: %s (install postgresql-15 and "
                          "postgresql-client-15; `make test` installs them)" % ", ".join(missing))


def _chown_tree(path, uid, gid):
    if not _is_root():
        return
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            try:
                os.lchown(os.path.join(root, n), uid, gid)
            except OSError:
                pass


def _pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:stat.rfind(")") + 3] != "Z"


def _children(pid):
    """Direct children of pid, from /proc."""
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        rest = stat[stat.rfind(")") + 2:].split()
        if len(rest) > 1 and rest[1] == str(pid):
            kids.append(int(name))
    return kids


def _postmaster_pid(data_dir):
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def _kill_cluster_processes(data_dir, sig=signal.SIGKILL, wait=10.0):
    """Send sig to the postmaster of data_dir and to its children; wait for
    the postmaster to go. True when something was running."""
    pid = _postmaster_pid(data_dir)
    if pid is None or not _pid_alive(pid):
        return False
    # Make sure the pid is really this cluster's postmaster, not a reuse.
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read()
        if b"postgres" not in cmdline:
            return False
    except OSError:
        return False
    kids = _children(pid)
    for p in [pid] + kids:
        try:
            os.kill(p, sig)
        except OSError:
            pass
    deadline = time.time() + wait
    while time.time() < deadline and (_pid_alive(pid) or any(_pid_alive(k) for k in kids)):
        time.sleep(0.02)
    return True


def _remove_stale_locks(data_dir):
    """After a SIGKILL the dead postmaster may stay a zombie for a while
    (until init reaps it), and PostgreSQL takes a zombie's pid in
    postmaster.pid for a running server. Once it is dead: drop its shared
    memory segment and its lock files so start() works at once."""
    path = os.path.join(data_dir, "postmaster.pid")
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except OSError:
        return
    try:
        pid = int(lines[0])
    except ValueError:
        pid = None
    if pid is not None and _pid_alive(pid):
        return
    deadline = time.time() + 2.0
    while pid is not None and os.path.exists("/proc/%d" % pid) and time.time() < deadline:
        time.sleep(0.02)          # usually reaped quickly: then PostgreSQL cleans up
    if pid is None or not os.path.exists("/proc/%d" % pid):
        return
    if len(lines) > 6 and len(lines[6].split()) == 2:
        shmid = lines[6].split()[1]
        subprocess.run(["ipcrm", "-m", shmid], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    if len(lines) > 4 and len(lines) > 3 and lines[4] and lines[3].strip().isdigit():
        lock = os.path.join(lines[4], ".s.PGSQL.%s.lock" % lines[3].strip())
        with contextlib.suppress(OSError):
            os.unlink(lock)
    with contextlib.suppress(OSError):
        os.unlink(path)


# ---------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------

class PgCluster:
    """A PostgreSQL cluster in its own temp dir, on its own port.

    PgCluster()            initdb (or copy the run's template) and start
    PgCluster(start=False) create but do not start
    Attributes: dir (also the unix socket dir), data, log, port.
    """

    def __init__(self, start=True, _attach=None, extra_opts=""):
        self.extra_opts = extra_opts   # more postgres options ("-c key=value ...")
        self.owned = _attach is None
        self.running = False
        self.saved_log = None
        self.databases = []          # created by this process, for log_tail()
        self.ever_started = False
        if _attach is not None:
            self.dir, self.port = _attach
            self.data = os.path.join(self.dir, "data")
            self.log = os.path.join(self.dir, "log")
            self.running = True
            return
        check_binaries()
        uid, gid = _pg_owner()
        parent = os.environ.get(ENV_RUNDIR)
        if parent and not os.path.isdir(parent):
            parent = None
        self.dir = tempfile.mkdtemp(prefix="pg-" if parent else "sqlmux-pg-", dir=parent)
        os.chmod(self.dir, 0o755)
        if _is_root():
            os.chown(self.dir, uid, gid)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "log")
        self.port = free_port()
        ALL_CLUSTERS.append(self)
        try:
            template = os.environ.get(ENV_TEMPLATE)
            if template and os.path.isfile(os.path.join(template, "PG_VERSION")):
                # A stopped, initialized cluster with the role and database:
                # copying it is much faster than initdb.
                _run(["cp", "-a", template, self.data], "copy template cluster", server=False)
                _chown_tree(self.data, uid, gid)
                if start:
                    self.start()
            else:
                self._initdb()
                self.start()
                for sql in _SETUP_SQL:
                    self.psql(sql, db="postgres")
                if not start:
                    self.stop()
        except BaseException:
            self.destroy()
            raise

    # -- set-up
    def _initdb(self):
        _run([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
              "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"], "initdb")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write(_HBA)
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
            f.write("password_encryption = 'scram-sha-256'\n")

    # -- coordinates
    @property
    def socket_dir(self):
        return self.dir

    def url(self, user=USER, password=PASSWORD, db=APP_DB, via="tcp", scheme="postgresql",
            query=None):
        """A bind URL: tcp -> scheme://user:password@127.0.0.1:PORT/db,
        unix -> scheme://user[:password]@/db?host=DIR&port=PORT.
        password=None leaves it out; query adds "k=v&..." options."""
        cred = user or ""
        if password is not None and user:
            cred += ":" + password
        if cred:
            cred += "@"
        opts = []
        if via == "tcp":
            u = "%s://%s127.0.0.1:%d/%s" % (scheme, cred, self.port, db)
        elif via == "unix":
            u = "%s://%s/%s" % (scheme, cred, db)
            opts += ["host=%s" % self.dir, "port=%d" % self.port]
        else:
            raise ValueError("via must be 'tcp' or 'unix'")
        if query:
            opts.append(query)
        return u + ("?" + "&".join(opts) if opts else "")

    # -- queries (straight to PostgreSQL, not through sqlmux)
    def psql(self, sql, db=APP_DB, user="postgres", check=True):
        """Run one statement (or a list, each its own -c, so each commits on
        its own) with psql over the unix socket; return the rows as lists of
        str (psql's text output), NULL as None. Raises TestFailure on an error when check."""
        argv = [PSQL, "-X", "-q", "-A", "-t", "-F", FIELD_SEP, "-R", RECORD_SEP,
                "-P", "null=\\N",
                "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-p", str(self.port),
                "-U", user, "-d", db]
        for s in ([sql] if isinstance(sql, str) else sql):
            argv += ["-c", s]
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=_clean_env(), cwd="/",
                               timeout=CMD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise TestFailure("psql %r on %s did not finish within %ss" % (sql, db, CMD_TIMEOUT))
        out = p.stdout.decode("utf-8", "replace")
        if out.endswith("\n"):
            out = out[:-1]        # psql ends its output with a newline
        err = p.stderr.decode("utf-8", "replace")
        if p.returncode != 0:
            if check:
                raise TestFailure("psql %r on database %s failed (status %s): %s%s"
                                  % (sql, db, p.returncode, err.strip(), _log_tail_text(
                                      self.log, 10) if not self.ready() else ""))
            return None
        rows = []
        for line in out.split(RECORD_SEP):
            if line in ("", "\n"):
                continue
            rows.append([None if f == "\\N" else f for f in line.split(FIELD_SEP)])
        return rows

    def value(self, sql, db=APP_DB):
        """The single value of a one-row, one-column query."""
        rows = self.psql(sql, db=db)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise TestFailure("psql %r: want one value, got %r" % (sql, rows))
        return rows[0][0]

    def ready(self):
        """True when the server accepts connections."""
        try:
            p = subprocess.run([PSQL, "-X", "-A", "-t", "-h", self.dir, "-p", str(self.port),
                                "-U", "postgres", "-d", "postgres", "-c", "SELECT 1"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, env=_clean_env(), timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            return False
        return p.returncode == 0 and p.stdout.strip() == b"1"

    # -- per-test databases
    def create_database(self, prefix="t_"):
        """A new database owned by sqlmux; returns its name."""
        name = "%s%s" % (prefix, uuid.uuid4().hex[:12])
        self.databases.append(name)
        self.psql("CREATE DATABASE %s OWNER %s" % (name, USER), db="postgres")
        return name

    def drop_database(self, name):
        self.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name, db="postgres")

    @contextlib.contextmanager
    def database(self, prefix="t_"):
        """with pg.database() as name: a fresh database, dropped afterwards
        (its connections terminated) unless SQLMUX_KEEP_TMP is set."""
        name = self.create_database(prefix)
        try:
            yield name
        finally:
            if not os.environ.get("SQLMUX_KEEP_TMP") and self.running:
                try:
                    self.drop_database(name)
                except TestFailure:
                    pass

    def backends(self, db, user=USER):
        """Client backends of `user` connected to `db`: [(pid, state, query)]."""
        rows = self.psql("SELECT pid, coalesce(state, ''), query FROM pg_stat_activity "
                         "WHERE datname = '%s' AND usename = '%s' "
                         "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                         "ORDER BY pid" % (db, user), db="postgres")
        return [(int(r[0]), r[1], r[2]) for r in rows]

    # -- server control
    def _pg_ctl_start(self):
        # fsync=off only: a killed server must still recover every
        # committed row (synchronous_commit=off would lose the last ones)
        # max_prepared_transactions: binds take part in transactions across
        # binds (PREPARE TRANSACTION, daemon/pg_2pc.c); extra_opts: a test's own
        opts = ("-k %s -p %d -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=200 -c max_prepared_transactions=20 "
                "-c unix_socket_permissions=0777 "
                "-c log_checkpoints=off -c log_line_prefix='%%m [%%p] %%q%%u@%%d ' %s"
                % (self.dir, self.port, self.extra_opts))
        _run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log, "-w",
              "-t", "60", "-o", opts, "start"], "pg_ctl start (port %d)" % self.port,
             timeout=90, log=self.log)

    def start(self):
        """Start the server (same data dir and port as before)."""
        if not self.owned:
            raise TestFailure("start(): the shared cluster is run by run.py; "
                              "use a private PgCluster() to stop and start a server")
        if self.running:
            return self
        for attempt in range(3):
            try:
                self._pg_ctl_start()
                break
            except TestFailure:
                log = _log_tail_text(self.log, 20)
                if (not self.ever_started and attempt < 2 and
                        re.search(r"(?i)could not (bind|create listen)|address already in use",
                                  log)):
                    # the free port was taken meanwhile: try another one
                    self.port = free_port()
                    continue
                raise
        self.running = True
        self.ever_started = True
        return self

    def stop(self, mode="fast"):
        """pg_ctl stop -m mode (smart, fast, immediate)."""
        if not self.owned:
            raise TestFailure("stop(): the shared cluster is run by run.py; "
                              "use a private PgCluster() to stop and start a server")
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            _run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-w", "-t", "60",
                  "-m", mode, "stop"], "pg_ctl stop -m %s" % mode, timeout=90, log=self.log)
        self.running = False
        return self

    def kill(self):
        """SIGKILL the postmaster and every backend at once: the server
        vanishes as in a crash (connections reset). start() works again."""
        if not self.owned:
            raise TestFailure("kill(): not on the shared cluster")
        _kill_cluster_processes(self.data, signal.SIGKILL)
        _remove_stale_locks(self.data)
        self.running = False
        return self

    def destroy(self):
        """Stop the server (immediately) and remove the dir. Idempotent."""
        if not self.owned:
            return
        if os.path.isdir(self.data) and os.path.exists(os.path.join(self.data, "postmaster.pid")):
            try:
                _run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-w", "-t", "20",
                      "-m", "immediate", "stop"], "pg_ctl stop -m immediate", timeout=30)
            except TestFailure:
                pass
            _kill_cluster_processes(self.data, signal.SIGKILL)
        self.running = False
        if self.saved_log is None:
            self.saved_log = self.log_text()
        if os.environ.get("SQLMUX_KEEP_TMP"):
            return
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self):
        if self.saved_log is not None:
            return self.saved_log
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return None

    def log_since(self, mark, databases):
        """The server log after offset mark (len(log_text()) taken before),
        only the lines of sessions on `databases`: the shared cluster's log
        holds the lines of every test running meanwhile."""
        marks = tuple("@%s " % db for db in databases)
        return "\n".join(ln for ln in (self.log_text() or "")[mark:].splitlines() if any(m in ln for m in marks))

    def log_tail(self, n=30, databases=None):
        """The last n lines of the server log; with `databases`, only the
        lines of sessions on those databases (the shared cluster's log
        holds every test's lines)."""
        text = self.log_text()
        if text is None:
            return "(no server log)"
        lines = text.splitlines()
        if databases is not None:
            marks = tuple("@%s " % db for db in databases)
            lines = [ln for ln in lines if any(m in ln for m in marks)]
        return "\n".join(lines[-n:]) if lines else "(no server log lines)"

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.destroy()

    def __repr__(self):
        return "<PgCluster %s port %s%s>" % (self.dir, self.port,
                                             "" if self.owned else " (shared)")


@atexit.register
def _destroy_all():
    # For runs outside run.py; run.py cleans after each test itself (its
    # workers leave with os._exit, which skips atexit).
    for c in list(ALL_CLUSTERS):
        try:
            c.destroy()
        except Exception:
            pass


def cleanup_clusters(first=0):
    """Destroy the clusters created since index `first`; return them."""
    done = ALL_CLUSTERS[first:]
    for c in done:
        c.destroy()
    return done


# ---------------------------------------------------------------------------
# The shared cluster
# ---------------------------------------------------------------------------

_shared = None


def shared():
    """The run's shared cluster (run.py started it). Each test must use
    its own database on it (database()). Fails when it could not be set up."""
    global _shared
    if _shared is not None:
        return _shared
    err = os.environ.get(ENV_ERROR)
    if err:
        raise TestFailure("the shared PostgreSQL cluster could not be set up:\n" + err)
    d, port = os.environ.get(ENV_DIR), os.environ.get(ENV_PORT)
    if d and port:
        _shared = PgCluster(_attach=(d, int(port)))
        if not _shared.ready():
            raise TestFailure("the shared PostgreSQL cluster (%s, port %s) does not answer%s"
                              % (d, port, _log_tail_text(_shared.log, 20)))
    else:
        # Not under run.py: a private cluster for this process.
        _shared = PgCluster()
    SHARED_USED.append(_shared)
    return _shared


def start_shared(modules):
    """run.py, parent process: when any of `modules` is a test_pg* module,
    set up a run dir, a template cluster and the shared cluster, and export
    them in the environment. Never raises: a failure is exported in
    SQLMUX_TEST_PG_ERROR for the PG tests to report (Ctrl-C still stops
    the run). Returns the cluster."""
    if not any(m.startswith("test_pg") or m.endswith("_pg") for m in modules):
        return None
    if os.environ.get(ENV_DIR) or os.environ.get(ENV_ERROR):
        return None          # someone above us runs it
    try:
        check_binaries()
        _pg_owner()
        global _shared_owner
        _shared_owner = os.getpid()
        _sweep_stale_runs()
        rundir = tempfile.mkdtemp(prefix="sqlmux-pgrun-")
        os.chmod(rundir, 0o755)
        with open(os.path.join(rundir, "owner"), "w") as f:
            f.write("%d\n" % os.getpid())
        os.environ[ENV_RUNDIR] = rundir
        # The template: initdb, role and database, stopped.
        tmpl = PgCluster(start=False)
        template = os.path.join(rundir, "template")
        os.rename(tmpl.data, template)
        ALL_CLUSTERS.remove(tmpl)
        shutil.rmtree(tmpl.dir, ignore_errors=True)
        os.environ[ENV_TEMPLATE] = template
        cluster = PgCluster()
        ALL_CLUSTERS.remove(cluster)   # stop_shared() owns it, not a test
        os.environ[ENV_DIR] = cluster.dir
        os.environ[ENV_PORT] = str(cluster.port)
        global _shared_parent
        _shared_parent = cluster
        return cluster
    except Exception as e:       # reported by every PG test
        msg = str(e) if isinstance(e, TestFailure) else "%s: %s" % (type(e).__name__, e)
        stop_shared()
        os.environ[ENV_ERROR] = msg or type(e).__name__
        return None
    except BaseException:        # Ctrl-C, SIGTERM: clean up and go
        stop_shared()
        raise


_shared_parent = None
_shared_owner = None


def _stop_servers_under(rundir):
    for name in os.listdir(rundir):
        data = os.path.join(rundir, name, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            _kill_cluster_processes(data, signal.SIGKILL)


def _sweep_stale_runs():
    """Remove the run dirs (and stop the servers) of earlier runs whose
    runner process is gone (killed before it could clean up)."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        if not name.startswith("sqlmux-pgrun-"):
            continue
        rundir = os.path.join(tmp, name)
        try:
            with open(os.path.join(rundir, "owner")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue                # no owner file: not ours to judge
        if _pid_alive(pid):
            continue
        try:
            _stop_servers_under(rundir)
        except OSError:
            pass
        shutil.rmtree(rundir, ignore_errors=True)


def stop_shared():
    """run.py, parent process, at the end: stop the shared cluster and any
    server a test left running under the run dir, remove the run dir.
    Does nothing in any other process (a forked test process)."""
    global _shared_parent
    if _shared_owner != os.getpid():
        return
    if _shared_parent is not None:
        _shared_parent.destroy()
        _shared_parent = None
    rundir = os.environ.get(ENV_RUNDIR)
    if rundir and os.path.isdir(rundir):
        _stop_servers_under(rundir)
        if not os.environ.get("SQLMUX_KEEP_TMP"):
            shutil.rmtree(rundir, ignore_errors=True)
    for k in (ENV_DIR, ENV_PORT, ENV_RUNDIR, ENV_TEMPLATE):
        os.environ.pop(k, None)


atexit.register(stop_shared)


# ---------------------------------------------------------------------------
# sqlmuxd with a PostgreSQL bind
# ---------------------------------------------------------------------------

ACCOUNTS_DDL = ("CREATE TABLE accounts (id serial primary key, name text unique, "
                "balance numeric(30,2), active boolean, data bytea, "
                "created timestamptz default now())")


def create_accounts(pg, db, rows=()):
    """Create the accounts table directly (psql as sqlmux, so sqlmux owns
    it) and insert `rows` of names."""
    sql = [ACCOUNTS_DDL]
    sql += ["INSERT INTO accounts (name, balance, active) VALUES ('%s', 0, true)" % n
            for n in rows]
    pg.psql(sql, db=db, user=USER)


def pg_daemon(pg, db, url=None, bind="pg", opts=None, tables=(("accounts", None),),
              extra_binds=(), env=None, **cfg):
    """A started harness.Daemon with the note's three SQLite binds plus a
    PostgreSQL bind `bind` (default URL: pg.url(db=db) over TCP with the
    password), options `opts` in [bind.NAME], and `tables` mapped to it
    ((pattern, bind or None for `bind`) pairs) after the standard map.
    extra_binds: more (name, url) pairs; env: extra daemon environment
    (libpq's PG* variables of ours are removed from it unless given).
    Other keyword arguments go to make_config() (server=, bind_opts=...)."""
    binds = list(harness.DEFAULT_BINDS) + [(bind, url or pg.url(db=db))] + list(extra_binds)
    tmap = list(harness.DEFAULT_TABLES) + [(t, b or bind) for t, b in tables]
    bind_opts = dict(cfg.pop("bind_opts", {}) or {})
    if opts:
        bind_opts[bind] = dict(opts)
    denv = dict((k, None) for k in os.environ if k.startswith("PG"))
    denv.update(env or {})
    return harness.Daemon(binds=binds, tables=tmap, bind_opts=bind_opts, env=denv, **cfg)


def binds_by_name(conn):
    """.binds as {name: {column: value}} (fails on an error)."""
    r = conn.request(".binds")
    if not r.ok or r.columns is None:
        raise TestFailure(".binds failed: %r" % r)
    return dict((row[0], dict(zip(r.names, row))) for row in r.rows)


def wait_for(fn, timeout, what, interval=0.1):
    """Call fn() until it returns a true value (returned) or timeout
    seconds pass (TestFailure naming `what` and fn's last value)."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise TestFailure("%s: not within %.1fs (last: %r)" % (what, timeout, v))
        time.sleep(interval)


rss_kb = harness.rss_kib   # VmRSS of a process in KiB
