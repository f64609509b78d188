"""Health and controller status (the token routes are in routes_auth)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from scaleout_server.api.common import ControllerDep

router = APIRouter()


@router.get("/health", response_class=PlainTextResponse, tags=["system"])
def health() -> str:
    """Liveness probe: "OK" while the API answers."""
    return "OK"


@router.get("/get_controller_status", tags=["system"])
def controller_status(controller: ControllerDep) -> dict[str, Any]:
    """Whether a session is running, and which."""
    return controller.status()
