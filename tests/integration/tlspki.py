"""A private PKI for the TLS tests, made with the openssl CLI in a folder:
a CA, server certificates (SAN localhost and 127.0.0.1), client
certificates, an expired server certificate, and a second CA the daemon
does not know. EC P-256 keys: fast to make and to sign with."""

import os
import subprocess

from harness import TestFailure


def _run(args, cwd):
    p = subprocess.run(["openssl"] + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    if p.returncode != 0:
        raise TestFailure("openssl %s failed: %s" % (" ".join(args), p.stderr.decode(errors="replace")))
    return p.stdout


CA_CNF = """[ca]
default_ca = ca_default
[ca_default]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
certificate = {dir}/{ca}.crt
private_key = {dir}/{ca}.key
default_md = sha256
policy = policy_any
copy_extensions = copy
unique_subject = no
[policy_any]
commonName = supplied
"""


class PKI:
    """Files in `folder`: NAME.crt / NAME.key. path(name) is the absolute
    path of a file."""

    def __init__(self, folder):
        self.dir = os.path.join(folder, "pki")
        os.makedirs(self.dir, exist_ok=True)
        self.make_ca("ca", "sqlmux test CA")

    def path(self, name):
        return os.path.join(self.dir, name)

    def _key_csr(self, name, cn):
        _run(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/O=sqlmux tests/CN=" + cn], self.dir)

    def make_ca(self, name, cn):
        _run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", name + ".key", "-out", name + ".crt", "-days", "30", "-subj", "/CN=" + cn], self.dir)
        return self.path(name + ".crt")

    def make_cert(self, name, cn, ca="ca", server=True, days=30):
        """A certificate signed by ca; a server one has SAN localhost and
        127.0.0.1. Returns (cert path, key path)."""
        self._key_csr(name, cn)
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            if server:
                f.write("subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n")
            else:
                f.write("extendedKeyUsage = clientAuth\n")
        _run(["x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
              "-CAcreateserial", "-out", name + ".crt", "-days", str(days), "-extfile", ext], self.dir)
        return self.path(name + ".crt"), self.path(name + ".key")

    def make_expired(self, name, cn, ca="ca"):
        """A server certificate valid in January 2020 only (openssl ca
        -startdate/-enddate: the dates are set, not faked)."""
        self._key_csr(name, cn)
        with open(self.path("index.txt"), "w"):
            pass
        with open(self.path("serial"), "w") as f:
            f.write("1000\n")
        cnf = self.path("ca.cnf")
        with open(cnf, "w") as f:
            f.write(CA_CNF.format(dir=self.dir, ca=ca))
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write("subjectAltName = DNS:localhost, IP:127.0.0.1\n")
        _run(["ca", "-batch", "-config", cnf, "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
              "-in", name + ".csr", "-out", name + ".crt", "-extfile", ext, "-notext"], self.dir)
        return self.path(name + ".crt"), self.path(name + ".key")
