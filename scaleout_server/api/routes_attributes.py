"""Client attributes and statuses written or read outside the record feeds, as the APIClient asks:
the current values per client, an attribute's history, and attributes or statuses added by hand
(`add_attributes`, `add_status`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from scaleout_server.api.common import ControllerDep, client_ids_list, root_route
from scaleout_server.api.listing import to_json
from scaleout_server.api.schemas import AttributeIn, AttributeTrail, CurrentAttributes, StatusIn
from scaleout_server.errors import InvalidInput
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery

router = APIRouter(tags=["attributes"])

LOG_LEVELS = ("INFO", "DEBUG", "WARNING", "ERROR", "AUDIT")
SENDER_ROLES = ("client", "combiner", "controller", "admin")


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


@root_route(router, "/api/v1/attributes/", "POST")
def add_attribute(body: AttributeIn, controller: ControllerDep) -> dict[str, Any]:
    """Add an attribute to a client (`{key, value, entity_id}`): stored like one the client logged, and
    its current value for `attributes/current` and server functions' client selection."""
    entity = body.entity()
    if entity is None:
        raise InvalidInput('Name the client the attribute belongs to: {"key": ..., "value": ..., '
                           '"entity_id": "<client_id>"}')
    record = r.AttributeRecord(attribute_id=r.new_id(), client_id=entity, key=body.key.strip(), value=body.value)
    controller.add_records([record])
    return {"success": True, "message": f"Attribute {record.key} added to {entity}", **to_json(record)}


@router.post("/api/v1/attributes/list")
def attribute_trail(body: AttributeTrail, controller: ControllerDep) -> dict[str, Any]:
    """Every attribute recorded for one client (`{"entity_id": ...}`), oldest first:
    `{"count", "result"}`."""
    entity = (body.entity_id or body.node_id or "").strip()
    if not entity:
        raise InvalidInput('Send {"entity_id": "<client_id>"}')
    total, page = controller.store.attributes.list(ListQuery(filters={"client_id": entity}, sort_key="timestamp",
                                                             descending=False))
    return {"count": total, "result": [to_json(a) for a in page]}


@root_route(router, "/api/v1/statuses/", "POST")
def add_status(body: StatusIn, controller: ControllerDep) -> dict[str, Any]:
    """Add a status entry (`{status, type, log_level, sender: {client_id, name, role}}`), shown with the
    ones clients send."""
    level = body.log_level.strip().upper()
    if level not in LOG_LEVELS:
        raise InvalidInput(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {body.log_level!r}")
    sender = body.sender
    role = ((sender.role if sender else None) or "client").strip().lower()
    if role not in SENDER_ROLES:
        raise InvalidInput(f"sender.role must be one of {', '.join(SENDER_ROLES)}, got {role!r}")
    record = r.StatusRecord(
        status_id=r.new_id(), status=body.status,
        sender=r.Sender(client_id=sender.client_id if sender else None, name=sender.name if sender else None,
                        role=role),
        log_level=level, type=body.type or None, correlation_id=body.correlation_id or None,
        session_id=body.session_id or None, round_id=body.round_id or None, data=body.data)
    controller.add_records([record])
    return {"success": True, "message": "Status added", **to_json(record)}
