"""The server secret and the signing keys derived from it, plus the 0600 files secrets live in.

One random 32-byte secret per deployment, created on first secured start in
`<data_dir>/auth/secret.key`. Two keys are derived from it: the root key (admin, combiner,
refresh and enrollment tokens; only the controller holds it) and the gRPC key (short-lived
access tokens; handed to registered combiners so they can verify calls on their own).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scaleout_server.auth.tokens import GRPC_KID, ROOT_KID

log = logging.getLogger(__name__)

AUTH_DIR = "auth"
SECRET_FILE = "secret.key"
ADMIN_TOKEN_FILE = "admin.token"
SECRET_BYTES = 32


def auth_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / AUTH_DIR


@contextmanager
def _private_temp(path: Path, text: str) -> Iterator[Path]:
    """A new 0600 file next to `path` holding `text`, on disk; the caller moves or links it into place
    (so no reader sees it half-written) and it is removed afterwards if still there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file readable by this user only (0600), atomically."""
    with _private_temp(path, text) as tmp:
        os.replace(tmp, path)


def read_private(path: Path) -> str:
    """Read a secret file, tightening it to 0600 (with a warning) when others could read it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by other users (mode %o); changed it to 0600", path, mode)
        os.chmod(path, 0o600)
    return path.read_text(encoding="ascii").strip()


@dataclass(frozen=True)
class SigningKeys:
    """The two HS256 keys, by JWT `kid`."""

    root: bytes | None  # None on a combiner: it can verify access tokens only
    grpc: bytes

    @classmethod
    def from_secret(cls, secret: bytes) -> SigningKeys:
        return cls(root=_derive(secret, b"scaleout-edge root key v1"),
                   grpc=_derive(secret, b"scaleout-edge grpc key v1"))

    @classmethod
    def for_combiner(cls, grpc_key_b64: str) -> SigningKeys:
        return cls(root=None, grpc=base64.b64decode(grpc_key_b64))

    def by_kid(self) -> dict[str, bytes]:
        keys = {GRPC_KID: self.grpc}
        if self.root is not None:
            keys[ROOT_KID] = self.root
        return keys

    def grpc_key_b64(self) -> str:
        return base64.b64encode(self.grpc).decode("ascii")


def _derive(secret: bytes, label: bytes) -> bytes:
    return hmac.new(secret, label, hashlib.sha256).digest()


def load_or_create_secret(data_dir: str | os.PathLike[str]) -> bytes:
    """The deployment's secret, created (0600) on first use. A second process racing to create it
    reads the winner's file instead of writing its own."""
    path = auth_dir(data_dir) / SECRET_FILE
    if not path.exists():
        # linked into place rather than replaced: a racing process's link fails instead of
        # overwriting the winner's secret
        fresh = base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii") + "\n"
        with _private_temp(path, fresh) as tmp:
            try:
                os.link(tmp, path)
                log.info("created the server secret %s", path)
            except FileExistsError:
                pass
    text = read_private(path)
    try:
        secret = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ValueError(f"{path} is damaged (not base64); delete it to create a new secret, which "
                         "invalidates every token issued so far") from exc
    if len(secret) < 16:
        raise ValueError(f"{path} holds a secret of {len(secret)} bytes; delete it to create a new one")
    return secret
