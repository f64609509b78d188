"""Health, controller status and the token endpoints (auth is off in this version)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from scaleout_server.api.common import ControllerDep
from scaleout_server.api.schemas import TokenRequest

router = APIRouter()
log = logging.getLogger(__name__)

TOKEN_LIFETIME_SECONDS = 3600


@router.get("/health", response_class=PlainTextResponse, tags=["system"])
def health() -> str:
    """Liveness probe: "OK" while the API answers."""
    return "OK"


@router.get("/get_controller_status", tags=["system"])
def controller_status(controller: ControllerDep) -> dict[str, Any]:
    """Whether a session is running, and which."""
    return controller.status()


def _echo_token(body: TokenRequest | None, request: Request) -> dict[str, Any]:
    # Without auth every token is valid: hand the refresh token back as the access token so
    # official clients configured with a token keep working against this server.
    token = body.refresh_token if body and body.refresh_token else None
    if token is None:
        header = request.headers.get("Authorization", "")
        token = header.split(" ", 1)[-1] if header else "anonymous"
    # operators see which exchange a client used (never the token itself)
    log.info("token exchange at %s answered (auth is off: the token is handed back)", request.url.path)
    return {"access_token": token, "expires_in": TOKEN_LIFETIME_SECONDS}


@router.post("/api/auth/refresh", tags=["auth"])
def refresh_token(request: Request, body: TokenRequest | None = None) -> dict[str, Any]:
    """Exchange a refresh token for an access token (auth is off: the token is echoed)."""
    return _echo_token(body, request)


@router.post("/api/v1/clients/token", tags=["auth"])
def client_token(request: Request, body: TokenRequest | None = None) -> dict[str, Any]:
    """The client_refresh flavour of the token exchange (auth is off: the token is echoed)."""
    return _echo_token(body, request)
