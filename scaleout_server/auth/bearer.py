"""The bearer token of a request and the words for refusing one, shared by the REST middleware and
the combiner's gRPC gate. No web framework here: the combiner imports this without FastAPI.
"""

from __future__ import annotations

from scaleout_server.auth.jwt import ExpiredToken, InvalidToken
from scaleout_server.auth.verifier import RevokedToken

NO_TOKEN_VALUES = frozenset({"", "none", "null", "undefined"})


def token_from_header(value: str | None) -> str | None:
    """`Bearer <t>` (any scheme word, e.g. SCALEOUT_AUTH_SCHEME) or a bare token (the official 1.0
    CLI's package upload sends one); `Bearer None` is the official clients' "no token"."""
    if not value:
        return None
    text = value.strip()
    parts = text.split(None, 1)
    token = parts[1].strip() if len(parts) == 2 else text
    return None if token.lower() in NO_TOKEN_VALUES else token


def refusal(exc: InvalidToken) -> str:
    if isinstance(exc, ExpiredToken):
        return "the token has expired; get a new one"
    if isinstance(exc, RevokedToken):
        return "the token has been revoked"
    return f"the token is not valid here ({exc})"
