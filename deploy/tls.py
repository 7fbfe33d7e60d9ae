"""The local stack's certificates, made with openssl: a CA, Mosquitto's server certificate
and, on request, client certificates signed by the same CA.

Everything lives in ``<data_dir>/mosquitto/tls``. Private keys are written by this module
(openssl prints them to a pipe) into files created with mode 0600, so no key is ever
readable by others, not even for a moment. The server certificate names 127.0.0.1, ::1,
localhost and ``STRIDEWATCH_MQTT_HOST``; it is made again when that host changes.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.services import StackError, _which

CA_DAYS = 3650
# 825 days: the longest validity Apple's and browsers' TLS stacks accept for a leaf
LEAF_DAYS = 825
CURVE = "prime256v1"
LOCAL_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    binary = _which("openssl")
    if binary is None:
        raise StackError("openssl is not installed (apt-get install openssl)")
    result = subprocess.run([binary, *args], input=stdin, capture_output=True, check=False)
    if result.returncode != 0:
        raise StackError(f"openssl {args[0]} failed: "
                         f"{result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only, from the first byte on."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _new_key(path: Path) -> None:
    _write_private(path, _openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
                                  f"ec_paramgen_curve:{CURVE}"))


def subject_alt_names(hosts: tuple[str, ...]) -> str:
    """``IP:…,DNS:…`` for the hosts, local names first, each once."""
    names: list[str] = []
    for host in (*LOCAL_NAMES, *hosts):
        try:
            entry = f"IP:{ipaddress.ip_address(host)}"
        except ValueError:
            entry = f"DNS:{host}"
        if entry not in names:
            names.append(entry)
    return ",".join(names)


def ensure_ca(tls_dir: Path) -> Path:
    """The CA certificate, made (with its key) if missing."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    tls_dir.chmod(0o700)
    cert, key = tls_dir / "ca.crt", tls_dir / "ca.key"
    if cert.is_file() and key.is_file():
        return cert
    _new_key(key)
    _openssl("req", "-x509", "-new", "-key", str(key), "-sha256", "-days", str(CA_DAYS),
             "-subj", "/O=StrideWatch/CN=StrideWatch local CA",
             "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", str(cert))
    return cert


def _sign(tls_dir: Path, name: str, subject: str, extensions: str) -> TlsFiles:
    """A key and a certificate ``<name>.key``/``<name>.crt`` signed by the local CA."""
    ca_cert = ensure_ca(tls_dir)
    cert, key = tls_dir / f"{name}.crt", tls_dir / f"{name}.key"
    _new_key(key)
    csr = _openssl("req", "-new", "-key", str(key), "-subj", subject)
    ext_file = tls_dir / f"{name}.ext"
    ext_file.write_text(extensions)
    try:
        _openssl("x509", "-req", "-CA", str(ca_cert), "-CAkey", str(tls_dir / "ca.key"),
                 "-set_serial", str(secrets.randbits(63)), "-sha256", "-days", str(LEAF_DAYS),
                 "-extfile", str(ext_file), "-out", str(cert), stdin=csr)
    finally:
        ext_file.unlink(missing_ok=True)
    return TlsFiles(ca_cert, cert, key)


def ensure_server_certificate(tls_dir: Path, hosts: tuple[str, ...]) -> TlsFiles:
    """The broker's certificate for ``hosts`` (and the local names), made if missing or if
    it names other hosts."""
    sans = subject_alt_names(hosts)
    files = TlsFiles(ensure_ca(tls_dir), tls_dir / "server.crt", tls_dir / "server.key")
    names_file = tls_dir / "server.names"
    current = names_file.read_text().strip() if names_file.is_file() else ""
    if files.cert.is_file() and files.key.is_file() and current == sans:
        return files
    made = _sign(tls_dir, "server", "/O=StrideWatch/CN=" + (hosts[0] if hosts else "localhost"),
                 f"basicConstraints=critical,CA:FALSE\n"
                 f"keyUsage=critical,digitalSignature,keyEncipherment\n"
                 f"extendedKeyUsage=serverAuth\n"
                 f"subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                 f"subjectAltName={sans}\n")
    names_file.write_text(sans + "\n")
    return made


def issue_client_certificate(tls_dir: Path, username: str) -> TlsFiles:
    """A client certificate whose common name is ``username`` (what Mosquitto takes as the
    user name with ``use_identity_as_username``), signed by the local CA."""
    if not username or not all(c.isalnum() or c in "-_." for c in username):
        raise StackError(f"'{username}' is not a valid account name for a certificate")
    return _sign(tls_dir, f"client-{username}", f"/O=StrideWatch/CN={username}",
                 "basicConstraints=critical,CA:FALSE\n"
                 "keyUsage=critical,digitalSignature\n"
                 "extendedKeyUsage=clientAuth\n"
                 "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
