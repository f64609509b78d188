"""The controller's token authority: issues, verifies, exchanges and revokes tokens.

Everything about a token's validity lives here, so the REST middleware, the exchange routes and
the CLI-facing routes apply one rule: signature (by `kid`), expiry, shape, then the revocation
list (the token's own id and, for access tokens, the refresh token it came from).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scaleout_server.auth import jwt
from scaleout_server.auth.book import TokenBook, TokenRecord
from scaleout_server.auth.jwt import ExpiredToken, InvalidToken
from scaleout_server.auth.keys import (
    ADMIN_TOKEN_FILE,
    SigningKeys,
    auth_dir,
    load_or_create_secret,
    read_private,
    write_private,
)
from scaleout_server.auth.tokens import (
    ACCESS_TOKEN_SECONDS,
    CONTROLLER_TOKEN_SECONDS,
    KID_OF,
    RECORDED,
    TOKEN_TYPE_OF,
    Claims,
    Role,
    check_subject,
)
from scaleout_server.auth.verifier import RevokedToken, TokenVerifier
from scaleout_server.store.base import Store

log = logging.getLogger(__name__)

# a token is re-minted when less than this remains (controller -> combiner calls)
CONTROLLER_TOKEN_MARGIN = CONTROLLER_TOKEN_SECONDS / 2


class TokenRefused(Exception):
    """A valid token used where it does not belong (e.g. an admin token at the client exchange)."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: Claims


def new_token_id() -> str:
    return secrets.token_hex(8)


def sign(keys: SigningKeys, role: Role, *, now: float, subject: str | None = None, name: str | None = None,
         expires_in: float | None = None, rid: str | None = None, not_after: float | None = None) -> IssuedToken:
    """A signed token of `role` (not recorded anywhere: `Authority.issue` records the ones people get)."""
    exp = now + expires_in if expires_in is not None else None
    if not_after is not None:
        exp = min(exp, not_after) if exp is not None else not_after
    claims = Claims(jti=new_token_id(), role=role, token_type=TOKEN_TYPE_OF[role], sub=subject,
                    name=name or None, iat=int(now), exp=int(exp) if exp is not None else None, rid=rid)
    return IssuedToken(jwt.encode(claims.as_jwt_claims(), keys.by_kid()[KID_OF[role]], KID_OF[role]), claims)


def local_combiner_token(data_dir: str | Path, combiner_name: str) -> str:
    """A combiner token for the combiner `scaleout server start --secure` runs as its child process.
    It is handed over in the child's environment and never written to disk or recorded."""
    keys = SigningKeys.from_secret(load_or_create_secret(data_dir))
    return sign(keys, Role.COMBINER, now=time.time(), subject=combiner_name, name="local combiner").token


class Authority:
    """Issue and check tokens for one deployment (see module docstring)."""

    def __init__(self, store: Store, keys: SigningKeys, *, clock: Callable[[], float] = time.time) -> None:
        if keys.root is None:
            raise ValueError("the controller's authority needs the root key")
        self.keys = keys
        self.book = TokenBook(store)
        self.clock = clock
        self.verifier = TokenVerifier(keys, self.book.revoked(), clock=clock)
        self._lock = threading.Lock()
        self._controller: IssuedToken | None = None

    # -- issuing ---------------------------------------------------------------------------
    def issue(self, role: Role, *, name: str | None = None, subject: str | None = None,
              expires_in: float | None = None, rid: str | None = None, parent: str | None = None,
              not_after: float | None = None) -> IssuedToken:
        """Sign a new token. Admin, combiner, refresh and enrollment tokens are recorded (so they can
        be listed and revoked); access tokens are not. `not_after` caps the expiry."""
        if subject is not None:
            check_subject(subject, "client id" if role in (Role.CLIENT, Role.CLIENT_REFRESH) else "subject")
        now = self.clock()
        issued = sign(self.keys, role, now=now, subject=subject, name=name, expires_in=expires_in, rid=rid,
                      not_after=not_after)
        claims = issued.claims
        if role in RECORDED:
            self.book.add(TokenRecord(token_id=claims.jti, role=role.value, name=claims.name, subject=subject,
                                      created_at=now, expires_at=claims.exp, parent=parent))
            if role is Role.CLIENT_REFRESH and subject:
                self.book.bind_client(subject, claims.jti)
        return issued

    def issue_client(self, *, name: str | None = None, client_id: str | None = None,
                     expires_in: float | None = None) -> IssuedToken:
        """A client refresh token bound to `client_id` (a new id when not given): the client with
        this token is that client, whatever id it asks for."""
        return self.issue(Role.CLIENT_REFRESH, name=name, subject=client_id or str(uuid.uuid4()), expires_in=expires_in)

    # -- checking --------------------------------------------------------------------------
    def verify(self, token: str) -> Claims:
        """The claims of a valid token; InvalidToken (ExpiredToken, RevokedToken) otherwise."""
        return self.verifier.verify(token)

    # -- exchange and enrollment -----------------------------------------------------------
    def exchange(self, refresh_token: str) -> dict[str, object]:
        """A client refresh token -> a short-lived access token (the official clients' exchange).

        The refresh token is not rotated: the official client exchanges the same one twice while it
        starts, and a rotation would refuse the second exchange."""
        claims = self.verify(refresh_token)
        if claims.role is not Role.CLIENT_REFRESH:
            raise TokenRefused(f"{claims.role.value} tokens cannot be exchanged for a client access token; "
                               "give clients a client token (scaleout token create --role client)")
        access = self.issue(Role.CLIENT, subject=claims.sub, name=claims.name, expires_in=ACCESS_TOKEN_SECONDS,
                            rid=claims.jti, not_after=claims.exp)
        return {"access_token": access.token, "token_type": "Bearer",
                "expires_in": max(1, int((access.claims.exp or 0) - self.clock()))}

    def enroll(self, enrollment_token: str, *, client_id: str | None, name: str | None) -> dict[str, object]:
        """A client proves it holds an enrollment token and gets its own identity: a client id and a
        refresh token bound to it. A requested id is kept unless another token already owns it
        (then the client gets a new id, which it adopts from the answer)."""
        claims = self.verify(enrollment_token)
        if claims.role is not Role.ENROLLMENT:
            raise TokenRefused(f"this is a {claims.role.value} token, not an enrollment token; "
                               "create one with scaleout token create --role enrollment")
        chosen = None
        if client_id:
            try:
                check_subject(client_id, "client id")
                owner = self.book.owner_of_client(client_id)
                owner_record = self.book.get(owner) if owner else None
                if owner is None or (owner_record is not None and owner_record.parent == claims.jti):
                    chosen = client_id
                else:
                    log.warning("enrollment asked for client id %s, which another token owns; assigning a new id",
                                client_id)
            except ValueError:
                log.warning("enrollment asked for an invalid client id; assigning a new id")
        chosen = chosen or str(uuid.uuid4())
        label = name or claims.name
        refresh = self.issue(Role.CLIENT_REFRESH, subject=chosen, name=label, parent=claims.jti)
        access = self.issue(Role.CLIENT, subject=chosen, name=label, expires_in=ACCESS_TOKEN_SECONDS,
                            rid=refresh.claims.jti)
        log.info("client %s enrolled with enrollment token %s", chosen, claims.jti)
        return {"client_id": chosen, "access_token": access.token, "refresh_token": refresh.token,
                "token_type": "Bearer", "expires_in": ACCESS_TOKEN_SECONDS}

    # -- revocation ------------------------------------------------------------------------
    def revoke(self, token_id: str) -> TokenRecord:
        """Revoke an issued token by id; KeyError when this server never issued it."""
        record = self.book.get(token_id)
        if record is None:
            raise KeyError(token_id)
        record = self.book.revoke(record)
        self.verifier.set_revoked(self.book.revoked())
        log.info("token %s (%s%s) revoked", token_id, record.role, f", {record.name}" if record.name else "")
        return record

    def revoked_ids(self) -> dict[str, float | None]:
        """Revoked, unexpired token ids with their expiry: what combiners fetch."""
        return self.book.revoked()

    def list(self) -> list[TokenRecord]:
        return self.book.all()

    # -- controller -> combiner ------------------------------------------------------------
    def controller_token(self) -> str:
        """A short-lived token for the controller's Control calls, re-minted before it runs out."""
        with self._lock:
            current = self._controller
            if current is None or (current.claims.exp or 0) - self.clock() < CONTROLLER_TOKEN_MARGIN:
                current = self.issue(Role.CONTROLLER, subject="controller", expires_in=CONTROLLER_TOKEN_SECONDS)
                self._controller = current
            return current.token

    def combiner_config(self) -> dict[str, object]:
        """What a registered combiner needs to check tokens itself (sent in the registration reply)."""
        return {"mode": "token", "grpc_key": self.keys.grpc_key_b64()}

    # -- files -----------------------------------------------------------------------------
    def ensure_token_file(self, path: Path, role: Role, *, name: str, subject: str | None = None) -> bool:
        """Keep a valid token of `role` in `path` (0600); write a new one when the file is missing or
        its token no longer works. True when a new token was written."""
        if path.exists():
            try:
                claims = self.verify(read_private(path))
                if claims.role is role and claims.sub == subject:
                    return False
            except (InvalidToken, OSError, UnicodeDecodeError):
                pass
        issued = self.issue(role, name=name, subject=subject)
        write_private(path, issued.token + "\n")
        return True

    def ensure_admin_token(self, data_dir: str | Path) -> tuple[Path, bool]:
        """The admin token file of a secured server: (path, whether it was (re)written now)."""
        path = auth_dir(data_dir) / ADMIN_TOKEN_FILE
        return path, self.ensure_token_file(path, Role.ADMIN, name="admin (written at start)")


__all__ = ["Authority", "ExpiredToken", "InvalidToken", "IssuedToken", "RevokedToken", "TokenRefused"]
