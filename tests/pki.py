"""A throwaway certificate authority for TLS tests, made with the openssl command line: ca.crt; server.crt
and server.key for 127.0.0.1; client.crt and client.key (encrypted with KEY_PASS) for mutual TLS."""

from __future__ import annotations

import subprocess
from pathlib import Path

KEY_PASS = "tls-test-key-passphrase"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> Path:
    """Write the files into `d` (EC P-256 keys: fast to make); returns `d`."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    _openssl("req", "-x509", *ec, "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=reelstream test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    _openssl("req", *ec, "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    _openssl("req", *ec, "-keyout", "client.key", "-passout", f"pass:{KEY_PASS}", "-out", "client.csr",
             "-subj", "/CN=reelstream-client", cwd=d)  # fmt: skip
    for name in ("server", "client"):
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    assert b"ENCRYPTED" in (d / "client.key").read_bytes()
    return d
