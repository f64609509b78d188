"""Checking a token: signature (by `kid`), expiry, shape and the revocation list.

The controller's authority and each combiner use the same checker; they differ only in the keys
they hold (a combiner has the gRPC key alone) and in where their revocation list comes from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from scaleout_server.auth import jwt
from scaleout_server.auth.jwt import InvalidToken
from scaleout_server.auth.keys import SigningKeys
from scaleout_server.auth.tokens import GRPC_KID, KID_OF, Claims


class RevokedToken(InvalidToken):
    """A genuine, unexpired token that an admin revoked (or whose refresh token was revoked)."""


class TokenVerifier:
    def __init__(self, keys: SigningKeys, revoked: Mapping[str, float | None] | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.clock = clock
        self._by_kid = keys.by_kid()
        self._revoked: frozenset[str] = frozenset(revoked or ())

    def set_revoked(self, revoked: Mapping[str, float | None] | frozenset[str] | set[str]) -> None:
        """Replace the revocation list (token ids); one assignment, so readers never see half of it."""
        self._revoked = frozenset(revoked)

    @property
    def revoked(self) -> frozenset[str]:
        return self._revoked

    def verify(self, token: str) -> Claims:
        """The claims of a valid token; InvalidToken (ExpiredToken, RevokedToken) otherwise."""
        claims = Claims.from_jwt_claims(jwt.decode(token, self._by_kid, now=self.clock()))
        if KID_OF[claims.role] == GRPC_KID and claims.exp is None:
            raise InvalidToken("access tokens must expire")
        revoked = self._revoked
        if claims.jti in revoked or (claims.rid is not None and claims.rid in revoked):
            raise RevokedToken("token has been revoked")
        return claims
