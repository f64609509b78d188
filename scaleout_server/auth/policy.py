"""Who may call what: the one table of non-admin access, for REST routes and gRPC methods.

Deny by default: a REST route missing from these tables is for admin tokens only, and a gRPC
method of a service missing here is refused. So a new route is protected the day it is added,
and opening it to clients or combiners is a visible change in this file.
"""

from __future__ import annotations

from functools import cache

from scaleout_server.auth.tokens import Role

ADMIN_ONLY = frozenset({Role.ADMIN})

# Reachable without a token: liveness, the token exchanges (they check the token in the body or
# their own header), the API description and the dashboard's HTML shells and static files (which
# carry no data: the pages' JavaScript calls the API with the token the user gives it).
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/health"),
    ("POST", "/api/auth/refresh"),
    ("POST", "/api/v1/clients/token"),
    ("POST", "/api/v1/clients/enroll"),
    # `scaleout login`: the CLI has no token yet; approving the login (/api/cli-auth/approve) is admin only
    ("POST", "/api/cli-auth/init"),
    ("GET", "/api/cli-auth/status"),
    ("GET", "/api/cli-auth/requests/{request_id}"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
})
PUBLIC_PREFIXES: tuple[str, ...] = ("/ui/static/",)

# Routes open to roles other than admin (admin may call every route).
REST_ROLES: dict[tuple[str, str], frozenset[Role]] = {
    # an edge client: register itself, fetch the compute package and its checksum
    ("POST", "/api/v1/clients/add"): frozenset({Role.ADMIN, Role.CLIENT}),
    ("GET", "/api/v1/packages/download"): frozenset({Role.ADMIN, Role.CLIENT}),
    ("GET", "/api/v1/packages/checksum"): frozenset({Role.ADMIN, Role.CLIENT}),
    # a combiner: register, deliver its event batches, fetch the revocation list
    ("POST", "/api/v1/combiners/"): frozenset({Role.ADMIN, Role.COMBINER}),
    ("POST", "/api/v1/combiners"): frozenset({Role.ADMIN, Role.COMBINER}),
    ("POST", "/api/v1/combiners/{combiner_id}/events"): frozenset({Role.ADMIN, Role.COMBINER}),
    ("GET", "/api/v1/auth/revoked"): frozenset({Role.ADMIN, Role.COMBINER}),
}


@cache
def dashboard_routes() -> frozenset[tuple[str, str]]:
    """The dashboard's page routes (HTML shells without data)."""
    from scaleout_server.ui import PAGES

    return frozenset(("GET", page.path) for page in PAGES)


def rest_roles(method: str, path_template: str) -> frozenset[Role] | None:
    """Roles allowed on a route; None means public (no token needed)."""
    method = "GET" if method == "HEAD" else method
    key = (method, path_template)
    if key in PUBLIC_ROUTES or key in dashboard_routes() or path_template.startswith(PUBLIC_PREFIXES):
        return None
    return REST_ROLES.get(key, ADMIN_ONLY)


# gRPC: by service (`/package.Service/Method`); a service not listed is refused.
GRPC_ROLES: dict[str, frozenset[Role]] = {
    "scaleout.CombinerClient": frozenset({Role.CLIENT}),
    "scaleout.ModelService": frozenset({Role.CLIENT}),
    "scaleout.Control": frozenset({Role.CONTROLLER}),
}
# services whose calls must come from the client named by the token (metadata client-id = sub)
GRPC_SUBJECT_BOUND = frozenset({"scaleout.CombinerClient", "scaleout.ModelService"})


def grpc_service(method: str) -> str:
    """`/scaleout.Control/RunRound` -> `scaleout.Control`."""
    return method.lstrip("/").split("/", 1)[0]


def grpc_roles(method: str) -> frozenset[Role]:
    """Roles allowed on a full gRPC method name; empty for unknown services (always refused)."""
    return GRPC_ROLES.get(grpc_service(method), frozenset())
