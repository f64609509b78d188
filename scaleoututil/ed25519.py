"""Ed25519 signature verification for the edge client, by libsodium (PyNaCl).

Why not `cryptography`: an edge client only ever verifies one signature per downloaded compute package,
and `cryptography` (with cffi) is 17 MB of the client's install; PyNaCl is 6 MB with cffi and is the
reference bindings of libsodium, whose verification is strict (S below the group order, canonical point
encodings, small-order keys refused). Signing and key creation still use `cryptography`
(scaleoututil.signing, the `signing` and `server` extras), on the machine that builds packages. This
module only parses the PEM public key and names the failures.
"""

from __future__ import annotations

import base64
import binascii

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import VerifyKey

KEY_BYTES = 32
SIGNATURE_BYTES = 64
L = 2**252 + 27742317777372353535851937790883648493  # order of the base point (S must be below it)

# DER SubjectPublicKeyInfo of an Ed25519 key: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (32 bytes) }
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


class BadSignature(Exception):
    """The signature does not verify for this key and message."""


class BadKey(ValueError):
    """Bytes that are not an Ed25519 public key."""


class PublicKey:
    """An Ed25519 public key (the 32-byte point encoding)."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != KEY_BYTES:
            raise BadKey(f"an Ed25519 public key is {KEY_BYTES} bytes, not {len(raw)}")
        self.raw = bytes(raw)
        self._key = VerifyKey(self.raw)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Return when `signature` signs `message` with this key's private half; else BadSignature."""
        if len(signature) != SIGNATURE_BYTES:
            raise BadSignature(f"an Ed25519 signature is {SIGNATURE_BYTES} bytes, not {len(signature)}")
        if int.from_bytes(signature[32:], "little") >= L:
            raise BadSignature("S is not below the group order (a malleated signature)")
        try:
            self._key.verify(message, signature)
        except (BadSignatureError, CryptoError) as exc:
            raise BadSignature("the signature does not match this key and message") from exc


def public_key_from_pem(data: bytes) -> PublicKey:
    """The key in a PEM `PUBLIC KEY` block (what `scaleout keys create` and OpenSSL write); ValueError with
    what is wrong otherwise."""
    text = data.decode("ascii", errors="replace")
    begin, end = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
    if begin not in text or end not in text:
        raise ValueError(f"no '{begin}' block")
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the PEM block is not base64 ({exc})") from exc
    if len(der) != len(SPKI_PREFIX) + KEY_BYTES or not der.startswith(SPKI_PREFIX):
        raise BadKey("the PEM block holds another kind of key, not an Ed25519 public key")
    return PublicKey(der[len(SPKI_PREFIX):])
