"""JSON Web Tokens signed with HMAC-SHA256 (HS256), written with the standard library.

Only what the server needs: `encode` and `decode` with a key chosen by the header's `kid`.
`decode` accepts nothing but HS256 (no "none", no algorithm confusion), compares signatures in
constant time and checks `exp`/`nbf`, so a caller gets either verified claims or an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from scaleoututil.jwtpeek import jwt_payload

ALGORITHM = "HS256"
LEEWAY_SECONDS = 30.0  # clock skew tolerated on exp / nbf / iat
MAX_TOKEN_CHARS = 8192  # longer strings are not ours; refusing early bounds the work


class InvalidToken(Exception):
    """Not a token we issued: malformed, unknown key, wrong algorithm or a bad signature."""


class ExpiredToken(InvalidToken):
    """A genuine token whose `exp` has passed."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("token is not base64url") from exc


def _json_part(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64decode(text))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidToken(f"token {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise InvalidToken(f"token {what} is not a JSON object")
    return value


def _sign(signing_input: bytes, key: bytes) -> bytes:
    return hmac.new(key, signing_input, hashlib.sha256).digest()


def encode(claims: Mapping[str, Any], key: bytes, kid: str) -> str:
    """A compact JWS `header.payload.signature` over `claims` (which must be JSON-serialisable)."""
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": kid}
    signing_input = (_b64encode(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + _b64encode(json.dumps(dict(claims), separators=(",", ":"), sort_keys=True).encode()))
    return signing_input + "." + _b64encode(_sign(signing_input.encode("ascii"), key))


def decode(token: str, keys: Mapping[str, bytes], *, now: float | None = None,
           leeway: float = LEEWAY_SECONDS) -> dict[str, Any]:
    """Verified claims of `token`, signed with `keys[header.kid]`.

    Raises ExpiredToken past `exp` (plus `leeway`), InvalidToken for anything else wrong."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("no token, or an overlong one")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("token is not a JWT (expected header.payload.signature)")
    header = _json_part(parts[0], "header")
    if header.get("alg") != ALGORITHM:
        raise InvalidToken(f"token algorithm must be {ALGORITHM}")
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidToken("token was not signed by this server (unknown key)")
    expected = _sign(f"{parts[0]}.{parts[1]}".encode("ascii", "replace"), key)
    if not hmac.compare_digest(expected, _b64decode(parts[2])):
        raise InvalidToken("token signature does not match")
    claims = _json_part(parts[1], "payload")
    moment = time.time() if now is None else now
    exp = claims.get("exp")
    if exp is not None:
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise InvalidToken("token exp is not a number")
        if moment > exp + leeway:
            raise ExpiredToken("token has expired")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and not isinstance(nbf, bool) and moment + leeway < nbf:
        raise InvalidToken("token is not valid yet")
    return claims


def peek(token: str) -> dict[str, Any] | None:
    """The claims of a JWT *without* verifying it (to name a token in a message or revoke it by id);
    None when `token` is not a JWT."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    return jwt_payload(token)
