"""Client attributes, as the APIClient asks for them: the current values per client."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from scaleout_server.api.common import ControllerDep, client_ids_list
from scaleout_server.api.schemas import CurrentAttributes
from scaleout_server.errors import InvalidInput

router = APIRouter(tags=["attributes"])


@router.post("/api/v1/attributes/current")
def current_attributes(body: CurrentAttributes, controller: ControllerDep) -> dict[str, dict[str, Any]]:
    """`{"node_ids": [...]}` (or `client_ids`) -> `{client_id: {key: value}}`; unknown ids map to {}."""
    ids = client_ids_list(body.node_ids) or client_ids_list(body.client_ids)
    if not ids:
        raise InvalidInput('Send {"node_ids": ["<client_id>", ...]} with at least one client id')
    out: dict[str, dict[str, Any]] = {}
    for client_id in ids:
        client = controller.store.clients.get(client_id)
        out[client_id] = dict(client.attributes) if client is not None else {}
    return out
