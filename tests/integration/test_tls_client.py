"""libsqlmux and the CLI over TLS: sqlmuxs:// URLs, ?tls=, tls_ca=,
tls_cert=, tls_key= and $SQLMUX_TLS_*, the server's chain and name checked
by default, tls=insecure saying so, the CLI's banner with the cipher, and
libtest's cases (values, streaming, pipelining, threads) on a TLS
connection against the real daemon."""

import os
import shutil
import tempfile

from harness import TestFailure, eq, expect_ok
from test_cli import Terminal, cli, cli_binary
from test_libsqlmux import run_cases
from test_tls import TlsDaemon


def surl(d, host="localhost", query=None):
    q = {"tls_ca": d.pki.path("ca.crt")} if query is None else query
    return "sqlmuxs://%s:%d" % (host, d.tls_port) + ("?" + "&".join("%s=%s" % kv for kv in q.items()) if q else "")


def run(d, url, *args, env=None, stdin=b""):
    """The CLI on url; env: variables to set ($SQLMUX_TLS_* are unset
    unless given)."""
    for k in ("SQLMUX_TLS_CA", "SQLMUX_TLS_CERT", "SQLMUX_TLS_KEY"):
        os.environ.pop(k, None)
    return cli(None, url, *args, env={k: v for k, v in (env or {}).items() if v is not None}, stdin=stdin)


def test_libsqlmux_cases_over_tls():
    with TlsDaemon() as d:
        run_cases(d, "types", "sql_any_bytes", "columns_and_rows", "streaming", "pipelining",
                  "pipelining_large", "threads", "commands", url=surl(d))
        # The cases above ran over TLS: the daemon saw TLS clients only.
        log = d.stderr_text()
        if "TLS:" in log and "closing" in log:
            raise TestFailure("TLS errors in the daemon's log:\n" + d.stderr_tail())


test_libsqlmux_cases_over_tls.timeout = 120


def test_cli_tls_queries_and_checks():
    with TlsDaemon(make=lambda p: p.make_ca("other", "another CA")) as d:
        st, out, err = run(d, surl(d), "-c", "SELECT 40 + 2 AS answer")
        eq((st, out), (0, "answer\n42\n"), "query over TLS: " + err)
        # The IP address of the URL is checked against the certificate too.
        st, out, err = run(d, surl(d, host="127.0.0.1"), "-c", "SELECT 1")
        eq(st, 0, "by IP address: " + err)
        # tls=require on a sqlmux:// URL is the same as sqlmuxs://.
        st, out, err = run(d, "sqlmux://localhost:%d?tls=require&tls_ca=%s" % (d.tls_port, d.pki.path("ca.crt")),
                           "-c", "SELECT 1")
        eq(st, 0, "tls=require: " + err)
        # The CA from the environment.
        st, out, err = run(d, surl(d, query={}), "-c", "SELECT 2", env={"SQLMUX_TLS_CA": d.pki.path("ca.crt")})
        eq(st, 0, "$SQLMUX_TLS_CA: " + err)
        # Without the test CA (the system's CAs only): refused.
        st, out, err = run(d, surl(d, query={}), "-c", "SELECT 1", env={"SQLMUX_TLS_CA": None})
        if st != 2 or "does not verify" not in err:
            raise TestFailure("system CAs only: %d %r" % (st, err))
        st, out, err = run(d, surl(d, query={"tls_ca": d.pki.path("other.crt")}), "-c", "SELECT 1")
        if st != 2 or "does not verify" not in err:
            raise TestFailure("another CA: %d %r" % (st, err))
        # A name the certificate does not hold.
        d.pki.make_cert("elsewhere", "elsewhere.example", server=False)
        st, out, err = run(d, "sqlmuxs://[::1]:%d?tls_ca=%s" % (d.tls_port, d.pki.path("ca.crt")), "-c", "SELECT 1")
        if st != 2 or ("does not name the host" not in err and "refused" not in err):
            raise TestFailure("a host the certificate does not name: %d %r" % (st, err))
        # tls=insecure connects and says so.
        st, out, err = run(d, surl(d, query={"tls": "insecure"}), "-c", "SELECT 3")
        if st != 0 or "tls=insecure" not in err or "not checked" not in err:
            raise TestFailure("tls=insecure: %d %r" % (st, err))
        # Plain text to the TLS port, TLS to the plain port: clear errors.
        st, out, err = run(d, "sqlmuxs://127.0.0.1:%d?tls_ca=%s" % (d.port, d.pki.path("ca.crt")), "-c", "SELECT 1")
        if st != 2 or "TLS handshake failed" not in err:
            raise TestFailure("TLS to the plain port: %d %r" % (st, err))
        # URL mistakes.
        for url, want in (("sqlmux://127.0.0.1:%d?tls_ca=/x" % d.port, "need TLS"),
                          ("sqlmuxs://127.0.0.1:1?tls=maybe", "bad tls="),
                          ("unix:///tmp/x.sock?tls=require", "unix socket is plain text"),
                          ("sqlmuxs://127.0.0.1:1?tls_ca=", "empty tls_ca")):
            st, out, err = run(d, url, "-c", "SELECT 1")
            if st != 2 or want not in err:
                raise TestFailure("%s: %d %r (want %r)" % (url, st, err, want))
        expect_ok(d.connect().request(".ping"))


def test_cli_tls_client_certificate_and_banner():
    users = "[user.app]\ncert_cn = app1\nadmin = on\ngrant.* = read-write\n"
    with TlsDaemon(client_auth="require", users=users) as d:
        st, out, err = run(d, surl(d), "-c", "SELECT 1")
        eq(st, 2, "no client certificate: " + err)
        q = {"tls_ca": d.pki.path("ca.crt"), "tls_cert": d.pki.path("app1.crt"), "tls_key": d.pki.path("app1.key")}
        st, out, err = run(d, surl(d, query=q), "--tsv", "-c", ".clients")
        eq(st, 0, "with a client certificate: " + err)
        header, row = out.splitlines()[:2]
        rec = dict(zip(header.split("\t"), row.split("\t")))
        eq(rec["user"], "app", "logged in by its certificate")
        eq(rec["tls_subject"], "CN=app1,O=sqlmux tests", "tls_subject")
        # The same from the environment.
        env = {"SQLMUX_TLS_CA": d.pki.path("ca.crt"), "SQLMUX_TLS_CERT": d.pki.path("app1.crt"),
               "SQLMUX_TLS_KEY": d.pki.path("app1.key")}
        st, out, err = run(d, surl(d, query={}), "-c", "SELECT 5", env=env)
        eq((st, out), (0, "5\n5\n"), "certificate from the environment: " + err)
        # The banner on a terminal shows the protocol and the cipher.
        tmpdir = tempfile.mkdtemp(prefix="sqlmux-cli-")
        tenv = {"LANG": "C.UTF-8", "TERM": "xterm", "NO_COLOR": "1", "HOME": tmpdir,
                "SQLMUX_HISTORY": os.path.join(tmpdir, "history")}
        tenv.update(env)
        t = Terminal([cli_binary(), surl(d, query={})], tenv)
        try:
            s = t.wait_for("default> ")
            if "(TLS: TLSv1.3 TLS_" not in s:
                raise TestFailure("banner without TLS:\n" + s)
            t.keys(".quit")
            eq(t.exit_status(), 0, "exit status")
        finally:
            t.close()
            shutil.rmtree(tmpdir, ignore_errors=True)
