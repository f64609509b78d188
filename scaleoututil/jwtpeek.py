"""The payload of a JWT read *without* verifying its signature.

Why unverified reading is enough: the client only learns when its own access token expires and which
exchange its refresh token belongs to, the CLI finds a token's id, and the server names a token in a log
line. None of them trusts the claims; the server verifies with scaleout_server.auth.jwt.decode.
Shared here because the client SDK cannot import scaleout_server.
"""

from __future__ import annotations

import base64
import json
from typing import Any


def jwt_payload(token: str) -> dict[str, Any] | None:
    """The claims of `header.payload.signature`, or None when `token` is not a JWT whose payload is a
    base64url JSON object. No length cap: callers that take tokens from strangers bound them first."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError are all ValueErrors
        return None
    return payload if isinstance(payload, dict) else None
