"""Which servers the client trusts, and what it says when it does not trust one.

The client verifies the controller (HTTPS) and the combiner (gRPC over TLS). It trusts, in this order:
`--ca-file` / `SCALEOUT_CA_FILE` for both; then, as the published clients do, `SCALEOUT_GRPC_ROOT_CERT_PATH`
for gRPC and `REQUESTS_CA_BUNDLE` for HTTPS; else the operating system's CA store.
`SCALEOUT_CONNECT_API_SECURE=false` switches HTTPS verification off (the published clients' switch).

A certificate the client does not trust is not a network hiccup: retrying cannot fix it. Both transports
therefore turn it into an immediate error that says which file would fix it.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from scaleout.client.registration import EXIT_UNTRUSTED_SERVER, RegistrationError
from scaleoututil.tlsroots import system_ca_bytes

CA_FILE_ENV = "SCALEOUT_CA_FILE"
GRPC_ROOT_ENV = "SCALEOUT_GRPC_ROOT_CERT_PATH"
GRPC_DEFAULT_ROOTS_ENV = "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"
API_VERIFY_ENV = "SCALEOUT_CONNECT_API_SECURE"
_FALSE = {"0", "false", "no", "off"}

# substrings of gRPC's handshake failures, and what each means for the user
_GRPC_TLS_FAILURES = (
    ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate is not signed by a CA this client trusts"),
    ("Hostname Verification Check failed", "its TLS certificate is not valid for the address the client dials"),
    ("WRONG_VERSION_NUMBER", "it does not speak TLS (the client was told to use TLS)"),
    ("handshake failed", "the TLS handshake failed"),
)


class UntrustedServer(RegistrationError):
    """The server's TLS certificate cannot be verified; the message says what to pass. A RegistrationError,
    so start-up ends with the message instead of retrying."""

    exit_code = EXIT_UNTRUSTED_SERVER


@dataclass(frozen=True)
class ClientTrust:
    """The client's TLS trust settings, resolved once at start."""

    ca_file: str | None = None  # --ca-file / SCALEOUT_CA_FILE: trusted for HTTPS and gRPC
    verify_api: bool = True  # SCALEOUT_CONNECT_API_SECURE

    @classmethod
    def resolve(cls, ca_file: str | None = None, env: Mapping[str, str] = os.environ) -> ClientTrust:
        ca = ca_file or env.get(CA_FILE_ENV) or None
        if ca and not Path(ca).is_file():
            raise UntrustedServer(f"the CA file {ca} (--ca-file / {CA_FILE_ENV}) does not exist")
        verify = (env.get(API_VERIFY_ENV) or "").strip().lower() not in _FALSE
        return cls(ca_file=ca, verify_api=verify)

    def grpc_root_cert_path(self, env: Mapping[str, str] = os.environ) -> str | None:
        return self.ca_file or env.get(GRPC_ROOT_ENV) or None

    def requests_verify(self) -> str | bool:
        if not self.verify_api:
            return False
        return self.ca_file or True

    def session(self) -> TrustingSession:
        return TrustingSession(self)

    def hint(self) -> str:
        if self.ca_file:
            return (f"the client trusts only {self.ca_file} (--ca-file); pass the CA file that signed the "
                    "server's certificate")
        return (f"pass the CA file that signed the server's certificate with --ca-file (or {CA_FILE_ENV}); "
                "`scaleout certs create` wrote it as ca.pem")


class TrustingSession(requests.Session):
    """A requests session that verifies with the client's trust settings and fails at once, with a hint,
    on a certificate it does not trust (instead of the retry loop a network error gets)."""

    def __init__(self, trust: ClientTrust) -> None:
        super().__init__()
        self.trust = trust
        self.verify = trust.requests_verify()

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and self.verify is not True:
            merged["verify"] = self.verify  # --ca-file wins over REQUESTS_CA_BUNDLE (requests does the opposite)
        return merged

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            return super().request(method, url, *args, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise UntrustedServer(f"cannot verify the TLS certificate of {_origin(url)}: {_ssl_reason(exc)}; "
                                  f"{self.trust.hint()}") from exc


def _origin(url: str | bytes) -> str:
    text = url.decode() if isinstance(url, bytes) else url
    parts = text.split("/")
    return "/".join(parts[:3]) if len(parts) >= 3 else text


def _ssl_reason(exc: BaseException) -> str:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current.verify_message or str(current)
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException):
                inner = _ssl_reason(arg) if arg is not current else ""
                if inner:
                    return inner
        current = current.__cause__ or current.__context__
    text = str(exc)
    return "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in text else text[:300]


def grpc_tls_problem(details: str | None) -> str | None:
    """What a gRPC connection error means when it is a TLS handshake failure, else None."""
    text = details or ""
    for needle, meaning in _GRPC_TLS_FAILURES:
        if needle.lower() in text.lower():
            return meaning
    return None


def grpc_root_certificates(path: str | None) -> bytes | None:
    """PEM roots for the gRPC channel: the given file; else GRPC_DEFAULT_SSL_ROOTS_FILE_PATH (gRPC reads it
    itself); else the operating system's CA store; else None (gRPC's built-in roots). OSError if `path`
    cannot be read."""
    if path:
        return Path(path).read_bytes()
    if os.environ.get(GRPC_DEFAULT_ROOTS_ENV):
        return None
    return system_ca_bytes()
