"""Combiner registration and event feed (called by combiners), plus the public-hostname setting."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from scaleout_server.api.common import ControllerDep, root_route
from scaleout_server.api.listing import to_json
from scaleout_server.api.schemas import CombinerEvents, CombinerPatch, CombinerRegister
from scaleout_server.auth.rest import Forbidden, authority_of, combiner_subject
from scaleout_server.errors import InvalidInput, NotFoundError

router = APIRouter(tags=["combiners"])


@root_route(router, "/api/v1/combiners/", "POST")
def register_combiner(body: CombinerRegister, request: Request, controller: ControllerDep) -> dict[str, Any]:
    """A combiner announces itself (same name = same combiner) and learns where models are stored
    and, on a secured server, how to check the tokens of its callers."""
    bound = combiner_subject(request)
    if bound is not None and body.name != bound:
        raise Forbidden(f"this combiner token is for the combiner named {bound!r}, not {body.name!r}")
    combiner, repository = controller.register_combiner(body.name, body.host, body.port, body.public_hostname,
                                                        body.grpc_secure)
    reply = {"combiner_id": combiner.combiner_id, "repository": repository, "combiner": to_json(combiner)}
    authority = authority_of(request)
    if authority is not None:
        reply["auth"] = authority.combiner_config()
    return reply


@router.post("/api/v1/combiners/{combiner_id}/events")
def combiner_events(combiner_id: str, body: CombinerEvents, request: Request,
                    controller: ControllerDep) -> dict[str, Any]:
    """A batch of records and liveness events from a combiner."""
    return {"stored": controller.ingest_events(combiner_id, body.events, bound_name=combiner_subject(request))}


@router.patch("/api/v1/combiners/{combiner_id}")
def set_public_hostname(combiner_id: str, body: CombinerPatch, controller: ControllerDep) -> dict[str, Any]:
    """Set the host name clients dial for this combiner (host only, no scheme or port)."""
    hostname = body.public_hostname.strip()
    if not hostname or "://" in hostname or "/" in hostname or " " in hostname:
        raise InvalidInput(f"public_hostname must be a bare host name such as combiner.example.org, got {hostname!r}")
    combiner = controller.store.combiners.require(combiner_id)
    combiner.public_hostname = hostname
    return to_json(controller.store.combiners.update(combiner))


@router.delete("/api/v1/combiners/{combiner_id}")
def delete_combiner(combiner_id: str, controller: ControllerDep) -> dict[str, Any]:
    """Forget a combiner (a running one registers again when it restarts)."""
    if not controller.store.combiners.delete(combiner_id):
        raise NotFoundError(f"Combiner {combiner_id} not found")
    return {"message": f"Combiner {combiner_id} deleted"}
