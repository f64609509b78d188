"""What our tokens say: kinds, roles and the claims each kind carries.

The JWT claims follow what the official 1.1 client reads without verifying (`role`, `token_type`,
`sub`, `exp`), so it picks the right exchange for each kind:

| kind            | `role`           | `token_type` | signed with | who uses it                                   |
|-----------------|------------------|--------------|-------------|-----------------------------------------------|
| admin           | admin            | api_key      | root key    | CLI, dashboard, scripts (sent as is)          |
| combiner        | combiner         | api_key      | root key    | combiner -> controller REST                   |
| client refresh  | client_refresh   | refresh      | root key    | exchanged for client access tokens            |
| enrollment      | enrollment       | enrollment   | root key    | POST /api/v1/clients/enroll (client identity) |
| client access   | client           | access       | gRPC key    | client -> controller REST and combiner gRPC   |
| controller      | controller       | access       | gRPC key    | controller -> combiner Control RPCs           |

Combiners receive only the gRPC key, so a combiner can check client and controller tokens but
cannot mint admin, combiner or refresh tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from scaleout_server.auth.jwt import InvalidToken

ISSUER = "scaleout-edge"
ROOT_KID = "root"
GRPC_KID = "grpc"

ACCESS_TOKEN_SECONDS = 15 * 60  # client access tokens: short, the client refreshes 30 s before exp
CONTROLLER_TOKEN_SECONDS = 10 * 60


class Role(StrEnum):
    ADMIN = "admin"
    COMBINER = "combiner"
    CLIENT = "client"  # a client access token
    CLIENT_REFRESH = "client_refresh"
    ENROLLMENT = "enrollment"
    CONTROLLER = "controller"


class TokenType(StrEnum):
    API_KEY = "api_key"
    REFRESH = "refresh"
    ENROLLMENT = "enrollment"
    ACCESS = "access"


TOKEN_TYPE_OF: dict[Role, TokenType] = {
    Role.ADMIN: TokenType.API_KEY,
    Role.COMBINER: TokenType.API_KEY,
    Role.CLIENT_REFRESH: TokenType.REFRESH,
    Role.ENROLLMENT: TokenType.ENROLLMENT,
    Role.CLIENT: TokenType.ACCESS,
    Role.CONTROLLER: TokenType.ACCESS,
}
KID_OF: dict[Role, str] = {role: GRPC_KID if kind is TokenType.ACCESS else ROOT_KID
                           for role, kind in TOKEN_TYPE_OF.items()}

# what `scaleout token create --role` offers, and the role each name issues
CREATABLE: dict[str, Role] = {"admin": Role.ADMIN, "client": Role.CLIENT_REFRESH, "combiner": Role.COMBINER,
                              "enrollment": Role.ENROLLMENT}
# stored tokens (issued by an admin or by enrollment); access tokens are not stored
RECORDED = frozenset({Role.ADMIN, Role.COMBINER, Role.CLIENT_REFRESH, Role.ENROLLMENT})

_SUBJECT = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


@dataclass(frozen=True)
class Claims:
    """The verified content of one token."""

    jti: str  # token id: what `scaleout token revoke` takes
    role: Role
    token_type: TokenType
    sub: str | None = None  # client id (client tokens), combiner name (combiner tokens) or None
    name: str | None = None  # a label for people
    iat: float | None = None
    exp: float | None = None  # None: does not expire
    rid: str | None = None  # id of the refresh token an access token was exchanged from

    def as_jwt_claims(self) -> dict[str, Any]:
        out: dict[str, Any] = {"iss": ISSUER, "jti": self.jti, "role": self.role.value,
                               "token_type": self.token_type.value}
        for key in ("sub", "name", "iat", "exp", "rid"):
            value = getattr(self, key)
            if value is not None:
                out[key] = int(value) if key in ("iat", "exp") else value
        return out

    @classmethod
    def from_jwt_claims(cls, claims: dict[str, Any]) -> Claims:
        """Claims of a token whose signature was verified; InvalidToken for a foreign shape."""
        if claims.get("iss") != ISSUER:
            raise InvalidToken("token was not issued by a Scaleout Edge server")
        try:
            role = Role(claims.get("role"))
            token_type = TokenType(claims.get("token_type"))
        except ValueError as exc:
            raise InvalidToken("token has an unknown role or type") from exc
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or TOKEN_TYPE_OF[role] is not token_type:
            raise InvalidToken("token has no id or a role/type mismatch")

        def text(key: str) -> str | None:
            value = claims.get(key)
            return value if isinstance(value, str) and value else None

        def number(key: str) -> float | None:
            value = claims.get(key)
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

        return cls(jti=jti, role=role, token_type=token_type, sub=text("sub"), name=text("name"), iat=number("iat"),
                   exp=number("exp"), rid=text("rid"))


def check_subject(value: str, what: str) -> str:
    """Client ids and combiner names end up in tokens and metadata: keep them plain."""
    if not _SUBJECT.match(value):
        raise ValueError(f"{what} {value!r} must be 1-128 letters, digits or . _ : @ -")
    return value


MAX_EXPIRY_S = 100 * 365 * 86400  # longer lifetimes: use "never"


def parse_duration(text: str | None) -> float | None:
    """`90s`, `15m`, `24h`, `30d`, `1w` -> seconds; `never`/`none`/`0` -> None (no expiry)."""
    if text is None:
        return None
    value = text.strip().lower()
    if value in ("never", "none", "0", ""):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw]?)", value)
    if not match:
        raise ValueError(f"invalid duration {text!r}: use e.g. 30m, 24h, 30d or never")
    unit = {"": 3600, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[match.group(2)]
    seconds = float(match.group(1)) * unit
    if seconds <= 0:
        return None
    if seconds > MAX_EXPIRY_S:  # an expiry past year 9999 cannot be stored or shown as a date
        raise ValueError(f"invalid duration {text!r}: at most {MAX_EXPIRY_S // (365 * 86400)} years; "
                         "use never for a token that does not expire")
    return seconds
