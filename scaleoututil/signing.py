"""Ed25519 signatures of compute packages.

Why a signature on top of the SHA-256: the checksum proves the client received what the server holds, not
that the package comes from whoever owns the project. A client configured with the project's public key
runs only packages signed with the matching private key, so a compromised or misconfigured server cannot
make it run other code.

What is signed is the statement `scaleout-package-sha256:<hex digest of the archive>`, so a package of any
size is verified from the digest the client computes anyway while downloading. Keys are PEM files (PKCS#8
private key, SubjectPublicKeyInfo public key); a signature travels as base64 text, next to the archive in
`<archive>.sig` and with the package record on the server.

Verifying (the edge client) uses libsodium through PyNaCl (scaleoututil.ed25519, 6 MB); creating keys and
signing use `cryptography` (17 MB), which the `signing` and `server` extras install.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import TYPE_CHECKING

from scaleoututil import ed25519
from scaleoututil.checksum import sha256_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

STATEMENT_PREFIX = b"scaleout-package-sha256:"
SIGNATURE_SUFFIX = ".sig"
SIGNATURE_BYTES = 64


class SigningError(Exception):
    """A key or signature cannot be used; the message says which file and what to do."""


class SignatureMismatch(SigningError):
    """The signature is well-formed but does not match the package and key."""


def _cryptography() -> None:
    """Fail with what to install when signing is asked for on an edge install."""
    try:
        import cryptography  # noqa: F401
    except ImportError as exc:
        raise SigningError("creating keys and signing packages needs the 'cryptography' package: "
                           "pip install 'scaleout-edge-open[signing]'") from exc


def create_keypair(private_path: str | os.PathLike[str], public_path: str | os.PathLike[str], *,
                   overwrite: bool = False) -> None:
    """Write a new Ed25519 key pair: the private key readable by the owner only."""
    _cryptography()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_file, public_file = Path(private_path), Path(public_path)
    for path in (private_file, public_file):
        if path.exists() and not overwrite:
            raise SigningError(f"{path} already exists; remove it or choose another name (keys are never overwritten)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_file.parent.mkdir(parents=True, exist_ok=True)
    public_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_file.write_bytes(public_pem)


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    data = _read(path, "private key")
    _cryptography()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path} is not an unencrypted PEM private key ({exc}); create one with "
                           "`scaleout keys create`") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path} holds a {type(key).__name__}, not an Ed25519 key; create one with "
                           "`scaleout keys create`")
    return key


def load_public_key(path: str | os.PathLike[str]) -> ed25519.PublicKey:
    data = _read(path, "public key")
    try:
        return ed25519.public_key_from_pem(data)
    except ed25519.BadKey as exc:
        raise SigningError(f"{path}: {exc}") from exc
    except ValueError as exc:
        raise SigningError(f"{path} is not a PEM public key ({exc}); use the .pub file written by "
                           "`scaleout keys create`") from exc


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def statement(sha256_hex: str) -> bytes:
    return STATEMENT_PREFIX + sha256_hex.strip().lower().encode("ascii")


def sign_checksum(sha256_hex: str, key: Ed25519PrivateKey) -> str:
    """The base64 signature of a package whose archive has this SHA-256."""
    return base64.b64encode(key.sign(statement(sha256_hex))).decode("ascii")


def decode_signature(signature: str) -> bytes:
    """The raw 64 bytes of a base64 signature; SigningError when it is not one."""
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningError(f"the signature is not base64 ({exc})") from exc
    if len(raw) != SIGNATURE_BYTES:
        raise SigningError(f"the signature has {len(raw)} bytes; an Ed25519 signature has {SIGNATURE_BYTES}")
    return raw


def verify_checksum(sha256_hex: str, signature: str, key: ed25519.PublicKey) -> None:
    """Raise SignatureMismatch unless `signature` signs this SHA-256 with the private half of `key`."""
    raw = decode_signature(signature)
    try:
        key.verify(raw, statement(sha256_hex))
    except ed25519.BadSignature as exc:
        raise SignatureMismatch("the signature does not match: the package was altered after it was signed, "
                                "or it was signed with another key") from exc


def signature_path(archive: str | os.PathLike[str]) -> Path:
    """Where the signature of `archive` is kept: `<archive>.sig`."""
    return Path(f"{archive}{SIGNATURE_SUFFIX}")


def sign_file(archive: str | os.PathLike[str], private_key_path: str | os.PathLike[str]) -> Path:
    """Sign `archive` with the key in `private_key_path`; writes and returns `<archive>.sig`."""
    key = load_private_key(private_key_path)
    signature = sign_checksum(sha256_file(archive), key)
    out = signature_path(archive)
    out.write_text(signature + "\n", encoding="ascii")
    return out


def read_signature_file(path: str | os.PathLike[str]) -> str:
    text = _read(path, "signature").decode("ascii", errors="replace").strip()
    decode_signature(text)
    return text
