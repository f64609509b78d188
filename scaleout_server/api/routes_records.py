"""The list/count/get triple of every resource; included after the resource-specific routes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from scaleout_server.api.listing import RESOURCES, add_list_routes, list_query, to_json

router = APIRouter()


@router.get("/api/v1/commands/roots", tags=["commands"])
def command_roots(request: Request) -> dict[str, Any]:
    """Commands are not nested here, so every command is a root (kept for the official CLI)."""
    resource = RESOURCES["commands"]
    total, page = resource.collection(request.app.state.controller.store).list(list_query(request, resource))
    return {"count": total, "result": [to_json(c) for c in page]}


for _resource in RESOURCES.values():
    add_list_routes(router, _resource)
