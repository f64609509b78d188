"""A development certificate authority and a server certificate signed by it (`scaleout certs create`).

Why: TLS needs a certificate whose names match the addresses clients dial. For a test network, a
private CA is simpler and safer than self-signed leaf certificates: every client trusts one file
(`ca.pem`), and server certificates can be re-issued for new host names without touching the clients.
For production, use certificates from your own CA or a public one; the server only needs the PEM files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"
CA_DAYS = 3650
CERT_DAYS = 825  # the longest validity some TLS clients accept for a server certificate


def default_hosts() -> list[str]:
    """Loopback names and addresses plus this machine's host name: enough for one-machine tests."""
    hosts = ["localhost", "127.0.0.1", "::1"]
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and name not in hosts:
            hosts.append(name)
    return hosts


@dataclass(frozen=True)
class DevCerts:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    hosts: tuple[str, ...]


def _san(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        text = host.strip().strip("[]")
        if not text:
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            names.append(x509.DNSName(text))
    return names


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def create_dev_certs(out_dir: str | os.PathLike[str], hosts: Iterable[str] | None = None, *,
                     overwrite: bool = False, name: str = "Scaleout Edge dev CA") -> DevCerts:
    """Write `ca.pem`/`ca.key` and `server.pem`/`server.key` (valid for `hosts`) into `out_dir`.

    An existing CA in `out_dir` is reused, so re-running with more hosts issues a new server certificate
    that clients holding the old `ca.pem` still trust. Existing server files are replaced only with
    `overwrite` (FileExistsError otherwise).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    host_list = [h.strip() for h in (hosts if hosts is not None else default_hosts()) if h and h.strip()]
    sans = _san(host_list)
    if not sans:
        raise ValueError("give at least one host name or IP address the server certificate is valid for")
    paths = DevCerts(out / CA_FILE, out / CA_KEY_FILE, out / CERT_FILE, out / KEY_FILE, tuple(host_list))
    if not overwrite and (paths.cert.exists() or paths.key.exists()):
        raise FileExistsError(f"{paths.cert} or {paths.key} already exists; pass --overwrite to replace them")
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate clocks a little behind

    if paths.ca_cert.exists() and paths.ca_key.exists():
        ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        loaded = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{paths.ca_key} is not the EC key `scaleout certs create` writes; use another --out")
        ca_key = loaded
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        ca_cert = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(paths.ca_key, ca_key)
        paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_list[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(paths.key, key)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return paths
