"""Ed25519 signature verification (RFC 8032, section 5.1.7) in plain Python.

Why not `cryptography`: an edge client only ever verifies one signature per downloaded compute package,
and `cryptography` (with cffi) is 17 MB of the client's 160 MB install. Signing and key creation still
use `cryptography` (scaleoututil.signing, the `signing` and `server` extras), on the machine that builds
packages. Verification handles only public data, so it need not be constant-time; it takes a few
milliseconds.

The check is the strict, cofactorless one OpenSSL makes: S must be below the group order L, the public
key must decode to a curve point, and the encoding of [S]B - [k]A must equal the R half of the signature
byte for byte, where k = SHA-512(R || A || message) mod L.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # order of the base point
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)  # a square root of -1 mod P

KEY_BYTES = 32
SIGNATURE_BYTES = 64

# points in extended coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z
Point = tuple[int, int, int, int]
IDENTITY: Point = (0, 1, 1, 0)


class BadSignature(Exception):
    """The signature does not verify for this key and message."""


class BadKey(ValueError):
    """32 bytes that are not the encoding of a point on the curve."""


def _add(p: Point, q: Point) -> Point:
    """Point addition on -x^2 + y^2 = 1 + d x^2 y^2; complete, so it doubles too."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * D * t1 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % P, g * h % P, f * g % P, e * h % P


def _negate(p: Point) -> Point:
    x, y, z, t = p
    return (P - x) % P, y, z, (P - t) % P


def _recover_x(y: int, sign: int) -> int:
    """The x of the point with this y and low bit of x (RFC 8032, 5.1.3); BadKey when there is none."""
    if y >= P:
        raise BadKey("the y coordinate is not below 2^255 - 19")
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    check = v * x * x % P
    if check == (P - u) % P:
        x = x * SQRT_M1 % P
    elif check != u:
        raise BadKey("no curve point has this y coordinate")
    if x == 0 and sign:
        raise BadKey("x = 0 cannot carry the sign bit")
    return P - x if x & 1 != sign else x


def decode_point(data: bytes) -> Point:
    if len(data) != KEY_BYTES:
        raise BadKey(f"a point is {KEY_BYTES} bytes, not {len(data)}")
    n = int.from_bytes(data, "little")
    y = n & ((1 << 255) - 1)
    x = _recover_x(y, n >> 255)
    return x, y, 1, x * y % P


def encode_point(p: Point) -> bytes:
    x, y, z, _ = p
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(KEY_BYTES, "little")


_BASE_Y = 4 * pow(5, P - 2, P) % P
BASE: Point = (_recover_x(_BASE_Y, 0), _BASE_Y, 1, _recover_x(_BASE_Y, 0) * _BASE_Y % P)


def _double_scalar_mult(a: int, p: Point, b: int, q: Point) -> Point:
    """[a]p + [b]q with one shared run of doublings (Shamir's trick)."""
    both = _add(p, q)
    result = IDENTITY
    for i in range(max(a.bit_length(), b.bit_length()) - 1, -1, -1):
        result = _add(result, result)
        bits = ((a >> i) & 1, (b >> i) & 1)
        if bits == (1, 1):
            result = _add(result, both)
        elif bits == (1, 0):
            result = _add(result, p)
        elif bits == (0, 1):
            result = _add(result, q)
    return result


class PublicKey:
    """An Ed25519 public key (the 32-byte point encoding), decoded once."""

    def __init__(self, raw: bytes) -> None:
        self.raw = bytes(raw)
        self._point = decode_point(self.raw)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Return when `signature` signs `message` with this key's private half; else BadSignature."""
        if len(signature) != SIGNATURE_BYTES:
            raise BadSignature(f"an Ed25519 signature is {SIGNATURE_BYTES} bytes, not {len(signature)}")
        r_bytes, s = signature[:32], int.from_bytes(signature[32:], "little")
        if s >= L:
            raise BadSignature("S is not below the group order (a malleated signature)")
        k = int.from_bytes(hashlib.sha512(r_bytes + self.raw + message).digest(), "little") % L
        if encode_point(_double_scalar_mult(s, BASE, k, _negate(self._point))) != r_bytes:
            raise BadSignature("the signature does not match this key and message")


# DER SubjectPublicKeyInfo of an Ed25519 key: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (32 bytes) }
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


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
