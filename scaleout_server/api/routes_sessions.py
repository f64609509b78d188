"""Sessions: create (201), start, stop."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from scaleout_server.api.common import ControllerDep, root_route
from scaleout_server.api.listing import to_json
from scaleout_server.api.routes_control import stop_reply
from scaleout_server.api.schemas import SessionCreate, SessionPatch, SessionStart
from scaleout_server.errors import InvalidInput

router = APIRouter(tags=["sessions"])

STOP_STATUSES = ("Stopped", "Terminated")


@root_route(router, "/api/v1/sessions/", "POST", status_code=201)
def create_session(body: SessionCreate, controller: ControllerDep) -> dict[str, Any]:
    """Create a session from its config (aggregator, rounds, round_timeout, model_id, ...); 201."""
    session = controller.create_session(body.name or None, dict(body.session_config), body.seed_model_id or None)
    return to_json(session)


@router.post("/api/v1/sessions/start")
def start_session(body: SessionStart, controller: ControllerDep) -> dict[str, Any]:
    """Start (or continue) a session's rounds in the background."""
    session = controller.start_session(body.session_id, rounds=body.rounds, round_timeout=body.round_timeout)
    return {"message": "Session started", "session_id": session.session_id, "status": session.status}


@router.post("/api/v1/sessions/{session_id}/stop")
def stop_session(session_id: str, controller: ControllerDep) -> dict[str, Any]:
    """Stop a running session: its clients' tasks are aborted and it ends as Stopped."""
    return stop_reply(controller.stop_session(session_id))


@router.patch("/api/v1/sessions/{session_id}")
def patch_session(session_id: str, body: SessionPatch, controller: ControllerDep) -> dict[str, Any]:
    """Only `{"status": "Stopped"}` (or the older "Terminated") is supported: it stops the session."""
    if body.status not in STOP_STATUSES:
        raise InvalidInput(f"Only status 'Stopped' (or 'Terminated') can be set, got {body.status!r}; "
                           "start sessions with POST /api/v1/sessions/start")
    return stop_reply(controller.stop_session(session_id))
