"""The operating system's CA bundle as PEM bytes, for gRPC channels: gRPC otherwise trusts only the
roots it was built with, while requests and ssl use the system store. Shared by client and server."""

from __future__ import annotations

import ssl
from pathlib import Path


def system_ca_bytes() -> bytes | None:
    """The system CA bundle's bytes, or None when there is none (gRPC then uses its own roots)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            try:
                return Path(candidate).read_bytes()
            except OSError:
                continue
    return None
