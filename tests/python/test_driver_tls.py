"""The driver and the dialect over TLS (issue 17 after issue 20): sqlmuxs://
URLs and the tls=, tls_ca=, tls_cert=, tls_key= options reach libsqlmux,
$SQLMUX_TLS_* too, a wrong CA is refused with libsqlmux's clear error, and
Connection.tls says what the connection runs on. Against the real daemon
with a TLS listener and a private CA (tests/integration/tlspki.py)."""
import subprocess
import urllib.parse

import pytest
import sqlalchemy as sa

import harness
import sqlmux
import tlspki


@pytest.fixture
def tlsd():
    """The daemon with a TLS port (tls_port) and a private PKI (pki: ca,
    server, client app1, another CA); users alice (password "wonder land",
    admin) and app (its certificate's CN app1). Not test_tls's TlsDaemon:
    its module imports crypt, which crashes under ASan's preload."""
    pw = subprocess.run([harness.daemon_binary(), "passwd"], input=b"wonder land\n", stdout=subprocess.PIPE,
                        check=True, timeout=30).stdout.decode().strip()
    users = ("[user.alice]\npassword = %s\nadmin = on\ngrant.* = read-write\n"
             "[user.app]\ncert_cn = app1\ngrant.* = read-write\n" % pw)
    port = harness.free_port()
    srv = {"tls_listen": "127.0.0.1:%d" % port, "tls_cert_file": "pki/server.crt", "tls_key_file": "pki/server.key",
           "tls_ca_file": "pki/ca.crt", "tls_client_auth": "optional"}
    d = harness.Daemon(config=harness.make_config(server=srv) + users, start=False)
    try:
        d.tls_port = port
        d.pki = tlspki.PKI(d.dir)
        d.pki.make_cert("server", "localhost")
        d.pki.make_cert("app1", "app1", server=False)
        d.pki.make_ca("other", "another CA")
        d.start()
        yield d
    finally:
        d.cleanup()


@pytest.fixture(autouse=True)
def no_tls_env(monkeypatch):
    for k in ("SQLMUX_TLS_CA", "SQLMUX_TLS_CERT", "SQLMUX_TLS_KEY", "SQLMUX_USER", "SQLMUX_PASSWORD"):
        monkeypatch.delenv(k, raising=False)


def q(path):
    return urllib.parse.quote(path, safe="")


def test_driver_query_over_tls(tlsd):
    ca = tlsd.pki.path("ca.crt")
    con = sqlmux.connect("sqlmuxs://alice:wonder%%20land@localhost:%d/second_db?tls_ca=%s" % (tlsd.tls_port, q(ca)))
    assert con.tls is not None and con.tls.startswith("TLS"), con.tls
    con.execute("CREATE TABLE IF NOT EXISTS tls_t (id INTEGER PRIMARY KEY, s TEXT)")
    con.execute("INSERT INTO tls_t (s) VALUES (?)", ("over TLS \U0001F512",))
    con.commit()
    assert con.execute("SELECT s FROM tls_t").fetchall() == [("over TLS \U0001F512",)]
    assert con.bind == "second_db"
    # The daemon saw this client on TLS.
    rows = [r for r in con.command(".clients") if "alice" in r]
    assert rows, con.command(".clients")
    con.close()
    # Plain text: no TLS state.
    plain = sqlmux.connect("sqlmux://alice:wonder%%20land@127.0.0.1:%d" % tlsd.port)
    assert plain.tls is None
    plain.close()


def test_driver_tls_options_and_env(tlsd, monkeypatch):
    ca = tlsd.pki.path("ca.crt")
    auth = "alice:wonder%20land@"
    # tls=require on sqlmux:// is sqlmuxs://.
    con = sqlmux.connect("sqlmux://%slocalhost:%d?tls=require&tls_ca=%s" % (auth, tlsd.tls_port, q(ca)))
    assert con.tls and con.execute("SELECT 1").fetchone() == (1,)
    con.close()
    # A client certificate logs in as its cert_cn user: no password.
    con = sqlmux.connect("sqlmuxs://127.0.0.1:%d?tls_ca=%s&tls_cert=%s&tls_key=%s"
                         % (tlsd.tls_port, q(ca), q(tlsd.pki.path("app1.crt")), q(tlsd.pki.path("app1.key"))))
    assert con.execute("SELECT 2").fetchone() == (2,)
    con.close()
    assert "logged in as app by its certificate" in tlsd.stderr_text()
    # tls=insecure does not check the chain.
    con = sqlmux.connect("sqlmuxs://%slocalhost:%d?tls=insecure" % (auth, tlsd.tls_port))
    assert con.tls and con.execute("SELECT 3").fetchone() == (3,)
    con.close()
    # $SQLMUX_TLS_CA (libsqlmux reads it) when the URL names no CA.
    monkeypatch.setenv("SQLMUX_TLS_CA", ca)
    con = sqlmux.connect("sqlmuxs://%slocalhost:%d" % (auth, tlsd.tls_port))
    assert con.tls and con.execute("SELECT 4").fetchone() == (4,)
    con.close()


def test_driver_tls_refusals(tlsd):
    auth = "alice:wonder%20land@"
    other = tlsd.pki.path("other.crt")
    with pytest.raises(sqlmux.OperationalError) as e:
        sqlmux.connect("sqlmuxs://%slocalhost:%d?tls_ca=%s" % (auth, tlsd.tls_port, q(other)), timeout=10)
    assert "does not verify" in str(e.value) and e.value.code == "CONNECTION", str(e.value)
    # Without any CA but the system's: refused too.
    with pytest.raises(sqlmux.OperationalError) as e:
        sqlmux.connect("sqlmuxs://%slocalhost:%d" % (auth, tlsd.tls_port), timeout=10)
    assert "does not verify" in str(e.value), str(e.value)
    # TLS to the plain port.
    with pytest.raises(sqlmux.OperationalError) as e:
        sqlmux.connect("sqlmuxs://%s127.0.0.1:%d?tls_ca=%s" % (auth, tlsd.port, q(tlsd.pki.path("ca.crt"))),
                       timeout=10)
    assert "TLS handshake failed" in str(e.value), str(e.value)
    # URL mistakes get libsqlmux's words.
    for url, want in (("sqlmux://127.0.0.1:%d?tls_ca=/x" % tlsd.port, "need TLS"),
                      ("sqlmuxs://127.0.0.1:1?tls=maybe", "bad tls="),
                      ("sqlmuxs:///?socket=/tmp/x.sock", "unix socket is plain text")):
        with pytest.raises(sqlmux.Error) as e:
            sqlmux.connect(url, timeout=5)
        assert want in str(e.value), (url, str(e.value))
    with pytest.raises(sqlmux.InterfaceError):
        sqlmux.connect("sqlmuxs://localhost:1?tls_ca=a%26b")


def test_dialect_sqlmuxs(tlsd):
    ca = tlsd.pki.path("ca.crt")
    eng = sa.create_engine("sqlmuxs://alice:wonder%%20land@localhost:%d/memory_db?tls_ca=%s"
                           % (tlsd.tls_port, q(ca)))
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE IF NOT EXISTS tls_e (id INTEGER PRIMARY KEY, s TEXT)"))
        c.execute(sa.text("INSERT INTO tls_e (s) VALUES (:s)"), {"s": "via the dialect"})
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT s FROM tls_e")).scalar() == "via the dialect"
        assert c.connection.dbapi_connection.tls.startswith("TLS")
    eng.dispose()
    bad = sa.create_engine("sqlmuxs://alice:wonder%%20land@localhost:%d/memory_db?tls_ca=%s&backend=sqlite"
                           % (tlsd.tls_port, q(tlsd.pki.path("other.crt"))))
    with pytest.raises(sa.exc.OperationalError) as e:
        bad.connect()
    assert "does not verify" in str(e.value)


def _reads():
    """read() calls this process has made (/proc/self/io's syscr)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("syscr:"))


def test_driver_reads_what_the_socket_holds(tlsd):
    """A large answer over TLS takes about one read() per 16 KiB record
    (305 for 246 records when measured), not one for each record's 5-byte
    header and another for its body: at least 2 per record (610)."""
    con = sqlmux.connect("sqlmuxs://alice:wonder%%20land@localhost:%d/memory_db?tls_ca=%s"
                         % (tlsd.tls_port, q(tlsd.pki.path("ca.crt"))))
    sql = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 4000) "
           "SELECT x, printf('%.1000c', 'r') FROM c")
    before = _reads()
    rows = con.execute(sql).fetchall()
    reads = _reads() - before
    con.close()
    assert len(rows) == 4000 and rows[-1][1] == "r" * 1000
    records = 4000 * 1006 // 16384 + 1     # each row: its value, a tab and the number
    assert reads < 1.75 * records, "%d reads for about %d TLS records" % (reads, records)
