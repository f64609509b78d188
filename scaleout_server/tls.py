"""TLS for the server's two listeners and its two outbound links, from the settings `tls_cert`, `tls_key`
and `tls_ca_file`.

Listeners: the controller serves HTTPS (uvicorn) and the combiner serves gRPC over TLS, both with the
same PEM certificate chain and key. Outbound: a combiner registers with its controller over HTTPS and the
controller calls combiners over gRPC; both verify the peer against `tls_ca_file` (empty: the system store).
Files are checked once at start-up, so a wrong path or a key that does not belong to the certificate is
reported by name instead of as a handshake failure on the first connection.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from scaleout_server.settings import ServerSettings
from scaleoututil.tlsroots import system_ca_bytes

log = logging.getLogger(__name__)

class TlsConfigError(ValueError):
    """The TLS settings cannot be used; the message names the setting and the file."""


@dataclass(frozen=True)
class ServerTls:
    """A checked certificate chain and private key (PEM bytes, and where they came from)."""

    cert_file: Path
    key_file: Path
    cert_chain: bytes
    private_key: bytes


def tls_enabled(settings: ServerSettings) -> bool:
    return bool(settings.tls_cert or settings.tls_key)


def server_tls(settings: ServerSettings) -> ServerTls | None:
    """The server's certificate and key, or None when TLS is off; TlsConfigError when they cannot be used."""
    if not tls_enabled(settings):
        return None
    if not settings.tls_cert or not settings.tls_key:
        missing = "tls_key (--tls-key)" if settings.tls_cert else "tls_cert (--tls-cert)"
        raise TlsConfigError(f"TLS needs both a certificate and its key: {missing} is not set. Create a "
                             "development pair with `scaleout certs create`")
    cert_file, key_file = Path(settings.tls_cert), Path(settings.tls_key)
    chain = _read(cert_file, "tls_cert")
    key = _read(key_file, "tls_key")
    _check_pair(cert_file, chain, key_file, key)
    if settings.tls_ca_file:
        _read(Path(settings.tls_ca_file), "tls_ca_file")
    return ServerTls(cert_file, key_file, chain, key)


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read {path} (setting {setting}): {exc.strerror or exc}") from exc


def _check_pair(cert_file: Path, chain: bytes, key_file: Path, key_pem: bytes) -> None:
    """The first certificate of the chain must belong to the key (else every handshake fails later)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(chain)
    except ValueError as exc:
        raise TlsConfigError(f"{cert_file} (setting tls_cert) is not a PEM certificate: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsConfigError(f"{key_file} (setting tls_key) is not an unencrypted PEM private key: {exc}") from exc
    fmt = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if certificate.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        raise TlsConfigError(f"the key {key_file} (tls_key) does not belong to the certificate {cert_file} "
                             "(tls_cert); pass the key the certificate was issued for")


def grpc_server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(tls.private_key, tls.cert_chain)])


def uvicorn_ssl_options(tls: ServerTls | None) -> dict[str, str]:
    """`uvicorn.run(..., **options)`: HTTPS with the checked certificate (`server_tls`), or {} for plain HTTP."""
    if tls is None:
        return {}
    return {"ssl_certfile": str(tls.cert_file), "ssl_keyfile": str(tls.key_file)}


def api_url(settings: ServerSettings, host: str | None = None) -> str:
    """The controller's base URL as this machine reaches it: https when it serves TLS."""
    return f"{api_origin(settings, host)}:{settings.api_port}"


def api_origin(settings: ServerSettings, host: str | None = None) -> str:
    """`scheme://host` of the controller as this machine reaches it (a wildcard becomes loopback, an IPv6
    address is bracketed); `api_url` adds the port."""
    scheme = "https" if tls_enabled(settings) else "http"
    name = host or settings.host
    if name in ("", "0.0.0.0"):
        name = "127.0.0.1"
    elif name in ("::", "[::]"):
        name = "[::1]"
    elif ":" in name and not name.startswith("["):
        name = f"[{name}]"
    return f"{scheme}://{name}"


def peer_ca_bytes(ca_file: str) -> bytes | None:
    """PEM roots for gRPC channels to peers: the given CA file, else the system store (None: gRPC's own)."""
    if ca_file:
        return _read(Path(ca_file), "tls_ca_file")
    return system_ca_bytes()


def control_channel(address: str, *, secure: bool, ca_file: str = "",
                    options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """The controller's channel to a combiner: TLS verified against `ca_file` (else the system store) when
    the combiner registered as serving TLS (`CombinerRecord.grpc_secure`), plaintext otherwise."""
    if not secure:
        return grpc.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(root_certificates=peer_ca_bytes(ca_file))
    return grpc.secure_channel(address, credentials, options=options)


def http_verify(settings: ServerSettings) -> ssl.SSLContext | bool:
    """`verify=` for the combiner's HTTPS client to the controller: the CA file, else the default store."""
    if not settings.tls_ca_file:
        return True
    _read(Path(settings.tls_ca_file), "tls_ca_file")
    return ssl.create_default_context(cafile=settings.tls_ca_file)
