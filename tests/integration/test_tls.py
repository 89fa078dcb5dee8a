"""TLS for clients (tls_listen, daemon/tls.c): handshakes and queries with
Python's ssl module as the client, a private CA made with the openssl CLI
(tlspki.py), wrong CAs, an expired certificate, client certificates
(required, missing, cert_cn logins), reloads with a new or a bad
certificate, stalled handshakes, garbage before and after the handshake,
1,000 TLS clients at once, require_tls and the plain-text warning."""

import os
import select
import socket
import ssl
import time

from harness import (Conn, Daemon, TestFailure, eq, expect_err, expect_ok, expect_rows, free_port,
                     make_config, run_once, scaled)
from test_auth import hash_of, users_text
import tlspki


def tls_server_keys(port, cert="server", client_auth=None, extra=None):
    keys = {"tls_listen": "127.0.0.1:%d" % port, "tls_cert_file": "pki/%s.crt" % cert,
            "tls_key_file": "pki/%s.key" % cert, "tls_ca_file": "pki/ca.crt"}
    if client_auth:
        keys["tls_client_auth"] = client_auth
    keys.update(extra or {})
    return keys


class TlsDaemon(Daemon):
    """A Daemon with a private PKI in its folder (self.pki: ca, server,
    client app1) and a TLS port (self.tls_port)."""

    def __init__(self, server=None, users="", cert="server", client_auth=None, make=None, **kw):
        self.tls_port = free_port()
        srv = tls_server_keys(self.tls_port, cert, client_auth)
        srv.update(server or {})
        super().__init__(config=make_config(server=srv, **kw) + users, start=False)
        self.pki = tlspki.PKI(self.dir)
        self.pki.make_cert("server", "localhost")
        self.pki.make_cert("app1", "app1", server=False)
        if make:
            make(self.pki)
        self.start()

    def tls(self, **kw):
        c = TlsConn(("127.0.0.1", self.tls_port), self.pki, **kw)
        self.conns.append(c)
        return c


class TlsConn(Conn):
    """harness.Conn over TLS (Python's ssl module). ca: the CA file to
    trust (default the test CA); cert: a client certificate name of the
    PKI; host: the name to verify (None: check the chain only)."""

    def __init__(self, addr, pki, ca=None, cert=None, host="localhost", context=None, timeout=None):
        ctx = context or ssl.create_default_context(cafile=ca or pki.path("ca.crt"))
        if host is None:
            ctx.check_hostname = False
        if cert:
            ctx.load_cert_chain(pki.path(cert + ".crt"), pki.path(cert + ".key"))
        raw = socket.create_connection(addr, timeout=scaled(timeout or 10))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=host or "localhost")
        except BaseException:
            raw.close()
            raise
        self.buf = bytearray()
        self.pos = 0
        self.eof = False

    def abort(self):
        self.close()


def expect_refused(fn, what, *errors):
    """fn() must fail with one of errors (default: any ssl/socket error)."""
    try:
        c = fn()
    except (errors or (ssl.SSLError, OSError)) as e:
        return e
    # TLS 1.3: the server's verdict on the client certificate arrives after
    # the client's handshake is done: the first read fails.
    try:
        c.send(b".ping\n")
        line = c.readline()
    except (ssl.SSLError, OSError, TestFailure) as e:
        return e
    raise TestFailure("%s: the connection was not refused (got %r)" % (what, line))


def daemon_fine(d):
    """The daemon still serves plain and TLS clients."""
    expect_rows(d.connect().request("SELECT 1"), [["1"]])
    expect_rows(d.tls().request("SELECT 2"), [["2"]])


# ---- handshakes and queries ------------------------------------------------

def test_tls_queries_and_clients():
    with TlsDaemon(server={"max_output": "64k"}) as d:
        c = d.tls()
        eq(c.sock.version(), "TLSv1.3", "protocol by default")
        expect_rows(c.request("SELECT 1 AS one"), [["1"]])
        expect_ok(c.request("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"))
        # Pipelined statements and a result far larger than max_output:
        # the encrypted path keeps the order and the flow control.
        c.send("".join("INSERT INTO t(v) VALUES ('row %d')\n" % i for i in range(500)))
        for r in c.read_responses(500):
            expect_ok(r)
        r = c.request("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) "
                      "SELECT i, printf('%050d', i) FROM n")
        eq(len(r.rows), 100000, "rows of the large result")
        eq(r.rows[-1][0], "100000", "last row")
        plain = d.connect()
        expect_rows(plain.request("SELECT count(*) FROM t"), [["500"]])
        rows = {r["id"]: r for r in expect_ok(plain.request(".clients")).dicts()}
        tls_rows = [r for r in rows.values() if r["tls"] is not None]
        eq(len(tls_rows), 1, "one TLS client in .clients")
        eq(tls_rows[0]["tls"].split(" ")[0], "TLSv1.3", ".clients tls column")
        eq(tls_rows[0]["tls_subject"], None, "no client certificate")
        eq([r["tls"] for r in rows.values() if r["tls"] is None].__len__(), 1, "the plain client's tls is \\N")
        # A client that reads late: the daemon's writes wait in libuv, and
        # each is counted against the statement's output when written
        # (max_output), so the statement goes on once the client reads.
        slow = d.tls()
        slow.send("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) "
                  "SELECT i, printf('%060d', i) FROM n\n")
        time.sleep(1.0)
        r = slow.read_response()
        eq(len(r.rows), 200000, "rows read late")
        # .quit over TLS: answered, then close_notify and the close.
        c.send(b".quit\n")
        eq(c.readline(), b"+OK", ".quit answer")
        if not c.wait_closed():
            raise TestFailure("not closed after .quit")
        daemon_fine(d)


def test_tls_versions_and_ciphers():
    # TLS 1.2 only, with one cipher: the client gets exactly that.
    with TlsDaemon(server={"tls_protocols": "TLSv1.2", "tls_ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256"}) as d:
        c = d.tls()
        eq(c.sock.version(), "TLSv1.2", "protocol")
        eq(c.sock.cipher()[0], "ECDHE-ECDSA-AES128-GCM-SHA256", "cipher")
        expect_rows(c.request("SELECT 3"), [["3"]])
        r = expect_ok(c.request(".clients")).dicts()
        eq(r[0]["tls"], "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256", ".clients tls")
    # TLS 1.3 only: a TLS 1.2 client is refused.
    with TlsDaemon(server={"tls_protocols": "TLSv1.3"}) as d:
        ctx = ssl.create_default_context(cafile=d.pki.path("ca.crt"))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        expect_refused(lambda: d.tls(context=ctx), "TLS 1.2 client on a TLS 1.3 port")
        daemon_fine(d)
    # Older versions than 1.2 are not offered.
    with TlsDaemon() as d:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(d.pki.path("ca.crt"))
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        try:
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except ssl.SSLError:
            pass
        expect_refused(lambda: d.tls(context=ctx), "TLS 1.1 client")
        daemon_fine(d)


def test_tls_wrong_ca_and_wrong_name():
    with TlsDaemon(make=lambda p: p.make_ca("other", "another CA")) as d:
        e = expect_refused(lambda: d.tls(ca=d.pki.path("other.crt")), "a client trusting another CA",
                           ssl.SSLCertVerificationError)
        if "certificate verify failed" not in str(e):
            raise TestFailure("unexpected error: %s" % e)
        # The right CA but a name not in the certificate.
        e = expect_refused(lambda: d.tls(host="db.example.com"), "a wrong host name",
                           ssl.SSLCertVerificationError)
        if "match" not in str(e) and "mismatch" not in str(e):
            raise TestFailure("unexpected error: %s" % e)
        daemon_fine(d)


def test_tls_expired_certificate():
    with TlsDaemon(cert="expired", make=lambda p: p.make_expired("expired", "localhost")) as d:
        e = expect_refused(lambda: d.tls(), "an expired server certificate", ssl.SSLCertVerificationError)
        if "expired" not in str(e):
            raise TestFailure("unexpected error: %s" % e)
        if "EXPIRED" not in d.stderr_text():
            raise TestFailure("the daemon did not warn that its certificate expired:\n" + d.stderr_tail())
        expect_rows(d.connect().request("SELECT 1"), [["1"]])


# ---- client certificates ---------------------------------------------------

def _other_ca_client(p):
    p.make_ca("other", "another CA")
    p.make_cert("stranger", "app1", ca="other", server=False)


def test_tls_client_certificate_required():
    with TlsDaemon(client_auth="require", make=_other_ca_client) as d:
        expect_refused(lambda: d.tls(), "no client certificate")
        expect_refused(lambda: d.tls(cert="stranger"), "a client certificate of another CA")
        c = d.tls(cert="app1")
        expect_rows(c.request("SELECT 4"), [["4"]])
        r = expect_ok(c.request(".clients")).dicts()
        eq([x["tls_subject"] for x in r if x["tls"]], ["CN=app1,O=sqlmux tests"], ".clients tls_subject")
        log = d.stderr_text()
        if "certificate" not in log:
            raise TestFailure("the refusals are not logged:\n" + d.stderr_tail())
        daemon_fine_cert(d)


def daemon_fine_cert(d):
    expect_rows(d.connect().request("SELECT 1"), [["1"]])
    expect_rows(d.tls(cert="app1").request("SELECT 2"), [["2"]])


def test_tls_client_certificate_optional():
    with TlsDaemon(client_auth="optional", make=_other_ca_client) as d:
        expect_rows(d.tls().request("SELECT 5"), [["5"]])
        expect_rows(d.tls(cert="app1").request("SELECT 6"), [["6"]])
        # One that is shown must verify.
        expect_refused(lambda: d.tls(cert="stranger"), "a client certificate of another CA")
        daemon_fine(d)


def test_tls_cert_cn_login():
    users = users_text() + "[user.app]\ncert_cn = app1\ngrant.* = read-write\n"
    with TlsDaemon(client_auth="optional", users=users,
                   make=lambda p: (p.make_cert("nobody", "nobody", server=False), _other_ca_client(p))) as d:
        c = d.tls(cert="app1")
        expect_rows(c.request("SELECT 7"), [["7"]])      # no .auth
        log = d.stderr_text()
        if "logged in as app by its certificate" not in log:
            raise TestFailure("the certificate login is not logged:\n" + d.stderr_tail())
        # Without a certificate, with one naming no user, or one of another
        # CA with the same name: .auth as usual.
        expect_err(d.tls().request("SELECT 8"), "NOAUTH")
        expect_err(d.tls(cert="nobody").request("SELECT 8"), "NOAUTH")
        a = d.tls()
        expect_ok(a.request(".auth alice wonder land"))
        rows = {r["user"]: r for r in expect_ok(a.request(".clients")).dicts() if r["user"]}
        eq(rows["app"]["tls_subject"], "CN=app1,O=sqlmux tests", "the certificate user's row")
        # A user with cert_cn and no password cannot log in with .auth.
        expect_err(d.tls().request(".auth app anything"), "AUTH")


# ---- reload ----------------------------------------------------------------

def test_tls_reload_new_certificate():
    with TlsDaemon() as d:
        old = d.tls()
        expect_rows(old.request("SELECT 1"), [["1"]])
        old_serial = old.sock.getpeercert()["serialNumber"]
        d.pki.make_cert("server", "localhost")   # overwrites server.crt/.key
        expect_ok(d.connect().request(".reload"))
        expect_rows(old.request("SELECT 2"), [["2"]])   # keeps its session
        new = d.tls()
        new_serial = new.sock.getpeercert()["serialNumber"]
        if new_serial == old_serial:
            raise TestFailure("a new client still gets the old certificate")
        expect_rows(new.request("SELECT 3"), [["3"]])
        expect_rows(old.request("SELECT 4"), [["4"]])


def test_tls_reload_bad_certificate_keeps_old():
    with TlsDaemon() as d:
        old = d.tls()
        serial = old.sock.getpeercert()["serialNumber"]
        with open(d.pki.path("server.crt"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        r = d.connect().request(".reload")
        expect_err(r, "CONFIG")
        if "tls_cert_file" not in r.status:
            raise TestFailure("the refusal does not name tls_cert_file: %r" % r.status)
        if "reload refused" not in d.stderr_text():
            raise TestFailure("the refusal is not logged")
        expect_rows(old.request("SELECT 1"), [["1"]])
        new = d.tls()
        eq(new.sock.getpeercert()["serialNumber"], serial, "new clients keep the old certificate")
        # A key that does not match the certificate is refused too.
        d.pki.make_cert("server2", "localhost")
        os.replace(d.pki.path("server2.crt"), d.pki.path("server.crt"))
        r = d.connect().request(".reload")
        expect_err(r, "CONFIG")
        if "tls_key_file" not in r.status or "mismatch" not in r.status:
            raise TestFailure("unexpected refusal: %r" % r.status)
        expect_rows(d.tls().request("SELECT 2"), [["2"]])
        # Dropping every TLS key: tls_listen needs a restart, so the port
        # stays, and without a certificate the reload is refused.
        text = d.config_template
        d.rewrite_config(config="\n".join(l for l in text.split("\n") if not l.startswith("tls_")) + "\n")
        r = d.connect().request(".reload")
        expect_err(r, "CONFIG")
        if "tls_cert_file and tls_key_file are needed" not in r.status:
            raise TestFailure("unexpected refusal: %r" % r.status)
        expect_rows(d.tls().request("SELECT 3"), [["3"]])


# ---- bad clients -----------------------------------------------------------

def test_tls_stalled_handshake_dropped():
    # No users: login_timeout still bounds the handshake.
    with TlsDaemon(server={"login_timeout": "1000"}) as d:
        silent = socket.create_connection(("127.0.0.1", d.tls_port), timeout=scaled(10))
        half = socket.create_connection(("127.0.0.1", d.tls_port), timeout=scaled(10))
        # Half a ClientHello: a record header promising 512 bytes, then 5.
        half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03")
        start = time.time()
        good = d.tls()
        for i in range(5):
            expect_rows(good.request("SELECT %d" % i), [[str(i)]])
        for s, what in ((silent, "a silent client"), (half, "a half-done handshake")):
            s.settimeout(scaled(5))
            try:
                data = s.recv(100)
            except ConnectionResetError:
                data = b""
            eq(data, b"", "%s is closed" % what)
        took = time.time() - start
        if took < 0.9 or took > scaled(3.0):
            raise TestFailure("stalled handshakes closed after %.2f s (login_timeout 1 s)" % took)
        if d.stderr_text().count("TLS handshake not done within login_timeout") != 2:
            raise TestFailure("the timeouts are not logged:\n" + d.stderr_tail())
        # A TLS client that finished its handshake is not cut by it.
        time.sleep(0.3)
        expect_rows(good.request("SELECT 9"), [["9"]])
        expect_rows(d.connect().request("SELECT 1"), [["1"]])


def test_tls_garbage_before_handshake():
    with TlsDaemon() as d:
        for garbage in (b"SELECT 1\n", b".ping\n", b"\x16\x03\x01\x00\x05hello" + b"\x00" * 100,
                        os.urandom(4096)):
            s = socket.create_connection(("127.0.0.1", d.tls_port), timeout=scaled(10))
            s.sendall(garbage)
            got = b""
            try:
                while True:
                    part = s.recv(4096)
                    if not part:
                        break
                    got += part
            except ConnectionResetError:
                pass
            s.close()
            # Nothing of the protocol: at most a TLS alert record (type 21).
            if got and got[0] != 0x15:
                raise TestFailure("answer to garbage %r: %r" % (garbage[:20], got[:40]))
        if "TLS:" not in d.stderr_text():
            raise TestFailure("the failed handshakes are not logged:\n" + d.stderr_tail())
        daemon_fine(d)


def _tls_object(d):
    """A handshake done with ssl.SSLObject over memory BIOs on our own
    socket, so raw bytes can follow it. Returns (socket, sslobject)."""
    ctx = ssl.create_default_context(cafile=d.pki.path("ca.crt"))
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    s = socket.create_connection(("127.0.0.1", d.tls_port), timeout=scaled(10))
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pass
        if out.pending:
            s.sendall(out.read())
        data = s.recv(65536)
        if not data:
            raise TestFailure("closed during the handshake")
        inc.write(data)
    if out.pending:
        s.sendall(out.read())
    return s, obj, inc, out


def test_tls_garbage_after_handshake():
    with TlsDaemon() as d:
        s, obj, inc, out = _tls_object(d)
        obj.write(b"SELECT 41\n")
        s.sendall(out.read())
        got = b""
        while b"+OK" not in got:
            data = s.recv(65536)
            if not data:
                raise TestFailure("closed before the answer")
            inc.write(data)
            try:
                got += obj.read(65536)
            except ssl.SSLWantReadError:
                pass
        if b"=41" not in got:
            raise TestFailure("answer: %r" % got)
        # Now bytes that are not a TLS record, as if someone injected them.
        s.sendall(b"SELECT 42\n" + os.urandom(300))
        s.settimeout(scaled(5))
        rest = b""
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                rest += data
        except ConnectionResetError:
            pass
        inc.write(rest)
        try:
            plain = obj.read(65536)
        except ssl.SSLError:
            plain = b""
        if b"42" in plain:
            raise TestFailure("the injected plain text was run: %r" % plain)
        daemon_fine(d)


def test_tls_thousand_clients():
    """1,000 TLS clients handshake at once (non-blocking sockets, one
    select loop), each runs a statement; all are served within a bound and
    the daemon's descriptors come back once they leave."""
    n = 1000
    with TlsDaemon(server={"max_clients": "2000"}) as d:
        # One TLS client first: what OpenSSL opens once (its random
        # source) is not counted against the 1,000.
        expect_rows(d.tls().request("SELECT 0"), [["0"]])
        d.conns[-1].close()
        time.sleep(0.3)
        fd_dir = "/proc/%d/fd" % d.pid
        before = dict((f, os.readlink(os.path.join(fd_dir, f))) for f in os.listdir(fd_dir))
        fds_before = len(before)
        ctx = ssl.create_default_context(cafile=d.pki.path("ca.crt"))
        start = time.time()
        conns = {}
        for i in range(n):
            raw = socket.create_connection(("127.0.0.1", d.tls_port), timeout=scaled(30))
            raw.setblocking(False)
            conns[i] = [ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False),
                        "hs", b""]
        deadline = time.time() + scaled(60)
        pending = set(conns)
        while pending and time.time() < deadline:
            want_r, want_w = [], []
            for i in list(pending):
                s, st, got = conns[i]
                try:
                    if st == "hs":
                        s.do_handshake()
                        s.send(b"SELECT %d\n" % i)
                        conns[i][1] = "q"
                    data = s.recv(4096)
                    if not data:
                        raise TestFailure("client %d closed by the daemon" % i)
                    conns[i][2] += data
                    if b"+OK" in conns[i][2]:
                        if b"=%d\n" % i not in conns[i][2]:
                            raise TestFailure("client %d got %r" % (i, conns[i][2]))
                        pending.discard(i)
                except ssl.SSLWantReadError:
                    want_r.append(s)
                except ssl.SSLWantWriteError:
                    want_w.append(s)
            if pending:
                select.select(want_r[:500] or [conns[next(iter(pending))][0]], want_w[:500], [], 0.2)
        took = time.time() - start
        if pending:
            raise TestFailure("%d of %d TLS clients were not served within %.0f s" % (len(pending), n, took))
        admin = d.connect()
        r = expect_ok(admin.request(".clients"))
        admin.close()
        eq(sum(1 for x in r.dicts() if x["tls"]), n, "TLS clients in .clients")
        for s, _, _ in conns.values():
            s.close()
        deadline = time.time() + scaled(20)
        while time.time() < deadline:
            fds = len(os.listdir("/proc/%d/fd" % d.pid))
            if fds <= fds_before:
                break
            time.sleep(0.1)
        if fds > fds_before:
            extra = []
            for f in os.listdir(fd_dir):
                try:
                    if f not in before:
                        extra.append(os.readlink(os.path.join(fd_dir, f)))
                except OSError:
                    pass
            raise TestFailure("descriptors: %d before, %d after the clients left; new: %r"
                              % (fds_before, fds, extra))
        print("# %d TLS clients: handshakes and a statement each in %.2f s" % (n, took))
        daemon_fine(d)


test_tls_thousand_clients.timeout = 120


# ---- require_tls and protected mode ---------------------------------------

def _non_loopback_address():
    """An address of this machine that is not loopback, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.250", 9))
        addr = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if addr.startswith("127.") else addr


def _remote_address():
    """A non-loopback address of this machine (a client connecting to it
    is "remote" to the daemon), or Skip."""
    addr = _non_loopback_address()
    if addr is None:
        from harness import Skip
        raise Skip("this machine has no non-loopback address")
    return addr


def test_require_tls_refuses_remote_plain_text():
    addr = _remote_address()
    with TlsDaemon(server={"listen": "0.0.0.0:{port}", "require_tls": "on", "auth_fail_delay": "0"},
                   users=users_text()) as d:
        remote = Conn((addr, d.port))
        expect_ok(remote.request(".ping"))
        expect_err(remote.request(".auth alice wonder land"), "TLSREQUIRED")
        expect_err(remote.request("SELECT 1"), "TLSREQUIRED")
        expect_err(remote.request("SELECT 1"), "TLSREQUIRED")
        # Plain text over loopback is fine.
        local = d.connect()
        expect_ok(local.request(".auth alice wonder land"))
        expect_rows(local.request("SELECT 1"), [["1"]])
    # The same daemon without require_tls serves the remote client.
    with TlsDaemon(server={"listen": "0.0.0.0:{port}", "auth_fail_delay": "0"}, users=users_text()) as d:
        remote = Conn((addr, d.port))
        expect_ok(remote.request(".auth alice wonder land"))
        expect_rows(remote.request("SELECT 1"), [["1"]])
        if "cross the network in the clear" not in d.stderr_text():
            raise TestFailure("no plain-text warning:\n" + d.stderr_tail())


def test_require_tls_over_tls_from_remote():
    addr = _remote_address()
    with TlsDaemon(server={"listen": "0.0.0.0:{port}", "require_tls": "on", "auth_fail_delay": "0"},
                   users=users_text()) as d:
        d.rewrite_config(config=d.config_template.replace("tls_listen = 127.0.0.1:", "tls_listen = 0.0.0.0:"))
        d.restart()
        c = TlsConn((addr, d.tls_port), d.pki, host=None)
        expect_ok(c.request(".auth alice wonder land"))
        expect_rows(c.request("SELECT 1"), [["1"]])
        if "cross the network in the clear" in d.stderr_text():
            raise TestFailure("plain-text warning although require_tls is on")


# ---- configuration ---------------------------------------------------------

def test_tls_config_errors():
    base = make_config(schemas=False)

    def check(server, want, files=None):
        text = base.replace("[server]\n", "[server]\n" + "".join("%s = %s\n" % kv for kv in server.items()))
        rc, out, err, _, _ = run_once(text, check=True, files=files)
        if rc == 0 or want not in err:
            raise TestFailure("config %r: status %d, stderr %r (want %r)" % (server, rc, err, want))

    check({"tls_listen": "127.0.0.1:1"}, "needs tls_cert_file and tls_key_file")
    check({"tls_listen": "127.0.0.1:1", "tls_cert_file": "nope.crt", "tls_key_file": "nope.key"},
          "tls_cert_file: cannot read")
    check({"tls_protocols": "TLSv1.1"}, "is not TLSv1.2 or TLSv1.3")
    check({"tls_client_auth": "maybe"}, "is not one of off, optional, require")
    check({"tls_listen": "127.0.0.1:1", "tls_cert_file": "c.pem", "tls_key_file": "c.pem",
           "tls_client_auth": "require"}, "needs tls_ca_file", files={"c.pem": "x"})
    check({"require_tls": "on"}, "require_tls = on needs tls_listen")
    check({"tls_listen": "127.0.0.1"}, "tls_listen: expected host:port")
    # Files that exist but do not hold a certificate: --check-config loads them.
    check({"tls_listen": "127.0.0.1:1", "tls_cert_file": "c.pem", "tls_key_file": "c.pem"},
          "tls_cert_file", files={"c.pem": "not a certificate\n"})
    check({"tls_listen": "127.0.0.1:1", "tls_cert_file": "c.pem", "tls_key_file": "c.pem",
           "tls_ciphers": "NO-SUCH-CIPHER"}, "tls_cert_file", files={"c.pem": "x"})


def test_tls_check_config_loads_files():
    with TlsDaemon() as d:
        text = open(d.config_path).read()
        import subprocess
        from harness import daemon_binary
        p = subprocess.run([daemon_binary(), "--check-config", d.config_path], capture_output=True, text=True,
                           timeout=30)
        eq(p.returncode, 0, "--check-config status: " + p.stderr)
        if "tls: certificate" not in p.stdout or "tls_client_auth = off" not in p.stdout:
            raise TestFailure("--check-config output:\n" + p.stdout)
        with open(d.config_path, "w") as f:
            f.write(text.replace("[server]\n", "[server]\ntls_ciphers = NO-SUCH-CIPHER\n"))
        p = subprocess.run([daemon_binary(), "--check-config", d.config_path], capture_output=True, text=True,
                           timeout=30)
        if p.returncode == 0 or "tls_ciphers = NO-SUCH-CIPHER" not in p.stderr:
            raise TestFailure("bad tls_ciphers: status %d, %s" % (p.returncode, p.stderr))


def test_tls_refused_at_accept():
    """Over max_clients a TLS client's handshake fails (no -ERR can be sent
    before it); the plain client gets -ERR MAXCLIENTS as before."""
    with TlsDaemon(server={"max_clients": "1"}) as d:
        first = d.tls()
        expect_rows(first.request("SELECT 1"), [["1"]])
        expect_refused(lambda: d.tls(), "a TLS client over max_clients")
        plain = d.connect()
        eq(plain.readline()[:15], b"-ERR MAXCLIENTS", "plain client over max_clients")
        expect_rows(first.request("SELECT 2"), [["2"]])
        first.close()
        time.sleep(0.3)
        expect_rows(d.tls().request("SELECT 3"), [["3"]])
