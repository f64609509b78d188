"""Client registration (`/clients/add`, the first call of every official client) and client admin."""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from scaleout_server.api.common import ControllerDep, parse_bool
from scaleout_server.api.limits import check_registration_rate
from scaleout_server.api.routes_packages import NO_ACTIVE
from scaleout_server.api.schemas import ClientAdd
from scaleout_server.auth.rest import client_subject
from scaleout_server.controller.core import Controller
from scaleout_server.controller.session_config import active_helper
from scaleout_server.errors import InvalidInput, NotFoundError
from scaleout_server.store import records as r

router = APIRouter(tags=["clients"])



def host_only(address: str) -> str:
    """`host[:port]` -> host as a gRPC target needs it (IPv6 in brackets, no port).

    The official client dials `<public_hostname>:<port>` literally, so a stray port breaks it."""
    text = address.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0]
    if text.startswith("["):
        return text[: text.index("]") + 1] if "]" in text else text
    try:
        if ipaddress.ip_address(text).version == 6:
            return f"[{text}]"
    except ValueError:
        pass
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def connection_info(controller: Controller, client: r.ClientRecord, combiner: r.CombinerRecord) -> dict[str, Any]:
    public = combiner.public_hostname or controller.settings.public_hostname or combiner.host
    return {
        "client_id": client.client_id,
        "name": client.name,
        "public_hostname": host_only(public),
        "internal_hostname": host_only(combiner.host),
        "port": int(combiner.port),
        "grpc_secure": bool(combiner.grpc_secure),  # absent would mean TLS to the official clients
        "helper_type": active_helper(controller.store),
        "package": client.package,
        "combiner_id": combiner.combiner_id,
        "status": client.status,
    }


@router.post("/api/v1/clients/add")
def add_client(body: ClientAdd, request: Request, controller: ControllerDep) -> Any:
    """Register a client and tell it which combiner to dial (200), or 203 while it waits for a package
    (429 when one client registers more often than registration_rate_limit allows)."""
    check_registration_rate(request, client_subject(request) or body.client_id)
    package = (body.package or "remote").lower()
    if package not in ("local", "remote"):
        raise InvalidInput(f"package must be 'local' or 'remote', got {body.package!r}")
    if package == "remote" and controller.store.packages.get_active() is None:
        return JSONResponse(status_code=203, content={"message": NO_ACTIVE})
    # a client token names its client: that id wins over the one asked for (the client adopts it)
    client, combiner = controller.add_client(
        client_id=client_subject(request) or body.client_id or None,
        name=body.name or None,
        preferred_combiner=body.preferred_combiner or body.combiner_preferred or None,
        package=package,
        client_version=body.client_version,
        ip=request.client.host if request.client else None,
    )
    return connection_info(controller, client, combiner)


@router.get("/api/v1/clients/config")
def client_config(request: Request, controller: ControllerDep, checksum: str | None = None) -> dict[str, Any]:
    """What a client config file needs: this API's address and, optionally, the active package checksum."""
    base = str(request.base_url).rstrip("/")
    out: dict[str, Any] = {
        "api_url": base,
        "discover_host": base,
        "discover_port": request.url.port or (443 if request.url.scheme == "https" else 80),
        "helper_type": active_helper(controller.store),
    }
    if parse_bool(checksum, "checksum", default=True):
        active = controller.store.packages.get_active()
        out["checksum"] = active.checksum if active else None
    return out


@router.delete("/api/v1/clients/{client_id}")
def delete_client(client_id: str, controller: ControllerDep) -> dict[str, Any]:
    """Forget a client (it registers again on its next start)."""
    if not controller.store.clients.delete(client_id):
        raise NotFoundError(f"Client {client_id} not found")
    return {"message": f"Client {client_id} deleted"}

