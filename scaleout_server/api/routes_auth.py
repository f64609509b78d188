"""Token routes: the client exchanges and enrollment (official client contract) and token admin.

With authentication off (`scaleout server start`, local mode) the exchanges hand the given token
back, so clients configured with a token keep working; token admin answers 409 then. With it on,
tokens are checked by `scaleout_server.auth` and the exchanges return short-lived access JWTs.
Tokens never appear in logs: log lines name a token by its id.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from scaleout_server.api.schemas import TokenRequest
from scaleout_server.auth import jwt
from scaleout_server.auth.authority import Authority, TokenRefused
from scaleout_server.auth.bearer import refusal, token_from_header
from scaleout_server.auth.jwt import InvalidToken
from scaleout_server.auth.rest import Forbidden, authority_of
from scaleout_server.auth.tokens import CREATABLE, MAX_EXPIRY_S, Role, parse_duration
from scaleout_server.errors import Conflict, InvalidInput, NotFoundError, ServerError

router = APIRouter(tags=["auth"])
log = logging.getLogger(__name__)

ECHO_LIFETIME_SECONDS = 3600
AUTH_OFF = ("authentication is off on this server (local mode, `scaleout server start`); tokens exist only "
            "on a secured server: `scaleout server start --secure` or `scaleout controller start`")


class Unauthorized(ServerError):
    """No valid token (401); the official clients stop on it instead of retrying."""

    http_status = 401


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str | None = None
    client_id: str | None = None


class EnrollmentTokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str | None = None
    expires_in_hours: float | None = Field(default=24.0, gt=0, le=MAX_EXPIRY_S / 3600)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(description="admin | client | combiner | enrollment")
    name: str | None = Field(default=None, description="A label; for combiner tokens the combiner name it binds to")
    expires: str | None = Field(default=None, description="e.g. 30m, 24h, 30d, never; default depends on the role")
    client_id: str | None = Field(default=None, description="client tokens: the client id it binds to (default: new)")


ROLE_NAMES = {role.value: name for name, role in CREATABLE.items()}
DEFAULT_EXPIRY = {"admin": "30d", "client": "never", "combiner": "never", "enrollment": "24h"}


def _iso(seconds: float | None) -> str | None:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds is not None else None


def _require(request: Request) -> Authority:
    authority = authority_of(request)
    if authority is None:
        raise Conflict(AUTH_OFF)
    return authority


# -- the official clients' exchanges ------------------------------------------------------
def _exchange(request: Request, body: TokenRequest | None) -> dict[str, Any]:
    authority = authority_of(request)
    token = body.refresh_token if body and body.refresh_token else None
    if authority is None:
        # auth off: every token is valid; hand it back as the access token
        if token is None:
            token = token_from_header(request.headers.get("Authorization")) or "anonymous"
        log.info("token exchange at %s answered (auth is off: the token is handed back)", request.url.path)
        return {"access_token": token, "expires_in": ECHO_LIFETIME_SECONDS}
    if body is not None and body.role not in (None, "", "client"):
        raise InvalidInput(f"role must be 'client' (this exchange issues client access tokens), got {body.role!r}")
    if token is None:
        raise Unauthorized("send the refresh token as JSON {\"refresh_token\": \"...\", \"role\": \"client\"}")
    try:
        answer = authority.exchange(token)
    except InvalidToken as exc:
        raise Unauthorized(f"refresh token refused: {refusal(exc)}") from None
    except TokenRefused as exc:
        raise Forbidden(str(exc)) from None
    log.info("token exchange at %s: access token issued for client %s", request.url.path,
             (jwt.peek(token) or {}).get("sub", "?"))
    return answer


@router.post("/api/auth/refresh")
def refresh_token(request: Request, body: TokenRequest | None = None) -> dict[str, Any]:
    """Exchange a client refresh token for a short-lived access token
    (`{refresh_token, role: "client"}` -> `{access_token, token_type, expires_in}`)."""
    return _exchange(request, body)


@router.post("/api/v1/clients/token")
def client_token(request: Request, body: TokenRequest | None = None) -> dict[str, Any]:
    """The same exchange, where the 1.1 client sends `client_refresh` tokens."""
    return _exchange(request, body)


@router.post("/api/v1/clients/enroll")
def enroll_client(request: Request, body: EnrollRequest | None = None) -> dict[str, Any]:
    """A client presents an enrollment token (`Authorization: Bearer <enrollment token>`) and gets its
    identity: `{client_id, access_token, refresh_token}`. The refresh token is bound to that client id."""
    body = body or EnrollRequest()
    token = token_from_header(request.headers.get("Authorization"))
    authority = authority_of(request)
    if authority is None:
        import uuid

        log.info("enrollment answered (auth is off: the token is handed back)")
        echoed = token or "anonymous"
        return {"client_id": body.client_id or str(uuid.uuid4()), "access_token": echoed, "refresh_token": echoed,
                "expires_in": ECHO_LIFETIME_SECONDS}
    if token is None:
        raise Unauthorized("send the enrollment token as 'Authorization: Bearer <token>'")
    try:
        return authority.enroll(token, client_id=body.client_id or None, name=body.name or None)
    except InvalidToken as exc:
        raise Unauthorized(f"enrollment token refused: {refusal(exc)}") from None
    except TokenRefused as exc:
        raise Forbidden(str(exc)) from None


# -- token admin (admin tokens; see auth/policy.py) ----------------------------------------
@router.post("/api/v1/auth/enrollment-tokens")
def create_enrollment_token(request: Request, body: EnrollmentTokenRequest) -> dict[str, Any]:
    """An enrollment token, as the official `scaleout client create-enrollment-token` asks for one."""
    authority = _require(request)
    hours = body.expires_in_hours if body.expires_in_hours is not None else 24.0
    issued = authority.issue(Role.ENROLLMENT, name=body.name, expires_in=hours * 3600)
    return {"token": issued.token, "token_id": issued.claims.jti, "expires_at": _iso(issued.claims.exp)}


@router.post("/api/v1/auth/tokens", status_code=201)
def create_token(request: Request, body: TokenCreate) -> dict[str, Any]:
    """Create a token: admin, client (a refresh token bound to a client id), combiner (bound to the
    combiner name given as `name`, when given) or enrollment. The token is shown only in this answer."""
    authority = _require(request)
    kind = body.role.strip().lower()
    role = CREATABLE.get(kind)
    if role is None:
        raise InvalidInput(f"role must be one of {', '.join(CREATABLE)}, got {body.role!r}")
    try:
        expires_in = parse_duration(body.expires if body.expires is not None else DEFAULT_EXPIRY[kind])
        if role is Role.CLIENT_REFRESH:
            issued = authority.issue_client(name=body.name, client_id=body.client_id, expires_in=expires_in)
        else:
            if body.client_id:
                raise ValueError("client_id applies to client tokens only")
            subject = body.name if role is Role.COMBINER and body.name else None
            issued = authority.issue(role, name=body.name, subject=subject, expires_in=expires_in)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    claims = issued.claims
    log.info("token %s created (%s%s)", claims.jti, kind, f", {claims.name}" if claims.name else "")
    return {"token": issued.token, "token_id": claims.jti, "role": kind, "name": claims.name,
            "subject": claims.sub, "expires_at": _iso(claims.exp)}


def _record_json(record: Any) -> dict[str, Any]:
    data = record.to_json()
    data["role"] = ROLE_NAMES.get(data["role"], data["role"])  # the names `scaleout token create` takes
    for key in ("created_at", "expires_at", "revoked_at"):
        data[key] = _iso(data[key])
    return data


@router.get("/api/v1/auth/tokens")
def list_tokens(request: Request) -> dict[str, Any]:
    """Every token this server issued to people and machines (not the short-lived access tokens),
    with its status: active, expired or revoked. Token strings are never stored or shown again."""
    records = [_record_json(r) for r in reversed(_require(request).list())]
    return {"count": len(records), "result": records}


@router.post("/api/v1/auth/tokens/{token_id}/revoke")
def revoke_token(token_id: str, request: Request) -> dict[str, Any]:
    """Revoke a token by id: it stops working at once on the controller and within seconds on the
    combiners. Revoking a client token also ends the access tokens exchanged from it."""
    try:
        record = _require(request).revoke(token_id)
    except KeyError:
        raise NotFoundError(f"no token with id {token_id!r}; see `scaleout token list`") from None
    return _record_json(record)


@router.get("/api/v1/auth/revoked")
def revoked_tokens(request: Request) -> dict[str, Any]:
    """Ids of revoked tokens that have not expired yet (combiners poll this)."""
    return {"revoked": sorted(_require(request).revoked_ids())}
