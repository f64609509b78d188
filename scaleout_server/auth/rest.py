"""Token checks for the REST API: an ASGI middleware that decides before the request body is read.

The middleware finds the route a request is for (from the app's own route table, in routing
order), looks its roles up in `policy`, verifies the token and answers 401 (no, bad, expired or
revoked token) or 403 (wrong role) itself. The verified claims are left in `request.state.principal`
for routes that also check *which* client or combiner is calling. A route dependency then checks
that FastAPI dispatched to the route the middleware judged, failing closed otherwise.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from scaleout_server.auth.authority import Authority
from scaleout_server.auth.bearer import refusal, token_from_header
from scaleout_server.auth.jwt import InvalidToken
from scaleout_server.auth.policy import ADMIN_ONLY, rest_roles
from scaleout_server.auth.tokens import Claims, Role
from scaleout_server.errors import ServerError

log = logging.getLogger(__name__)

STATE_PRINCIPAL = "principal"
STATE_ENDPOINT = "auth_endpoint"


class Forbidden(ServerError):
    """A valid token that may not do this (403)."""

    http_status = 403


@dataclass(frozen=True)
class RouteEntry:
    """One route as the app routes it: methods (None: any), full path template, compiled pattern."""

    methods: frozenset[str] | None
    path: str
    regex: re.Pattern[str]
    endpoint: Any


def iter_routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[frozenset[str] | None, str, Any]]:
    """(methods, full path template, endpoint) of every route, in routing order.

    Routers included with `include_router` appear as wrappers holding the original router (FastAPI
    0.16x); they are opened so their routes count too. An unknown kind of route raises, so a FastAPI
    change can never make routes silently skip the token check."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from iter_routes(inner.routes, prefix + str(getattr(context, "prefix", "") or ""))
        elif isinstance(route, Mount):
            yield None, prefix + route.path.rstrip("/") + "/{path:path}", route.app
        elif hasattr(route, "path") and hasattr(route, "endpoint"):
            methods = getattr(route, "methods", None)
            yield (frozenset(m.upper() for m in methods) if methods else None), prefix + route.path, route.endpoint
        else:
            raise TypeError(f"cannot tell which path the route {route!r} serves; the auth middleware refuses to "
                            "guess (update scaleout_server.auth.rest.iter_routes)")


def route_table(app: FastAPI) -> list[RouteEntry]:
    return [RouteEntry(methods, path, compile_path(path)[0], endpoint)
            for methods, path, endpoint in iter_routes(list(app.routes))]


def match_route(table: list[RouteEntry], method: str, path: str) -> RouteEntry | None:
    """The first route whose path and method match, as Starlette picks it."""
    method = "GET" if method == "HEAD" else method
    for entry in table:
        if entry.regex.match(path) and (entry.methods is None or method in entry.methods):
            return entry
    return None


def _answer(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="scaleout"'} if status == 401 else None
    return JSONResponse(status_code=status, content={"message": message}, headers=headers)


NO_TOKEN_MESSAGE = ("this server requires a token: send 'Authorization: Bearer <token>'. The admin token is in "
                    "<data-dir>/auth/admin.token on the server; `scaleout token create` makes more")


class AuthMiddleware:
    """401/403 before routing (see module docstring); only for HTTP requests."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, authority: Authority) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.authority = authority
        self._table: list[RouteEntry] | None = None

    def table(self) -> list[RouteEntry]:
        if self._table is None:
            self._table = route_table(self.fastapi_app)
        return self._table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET")).upper()
        path = str(scope.get("path", ""))
        entry = match_route(self.table(), method, path)
        roles = rest_roles(method, entry.path) if entry is not None else ADMIN_ONLY  # unknown path: fail closed
        state = scope.setdefault("state", {})
        state[STATE_ENDPOINT] = entry.endpoint if entry is not None else None
        if roles is None:
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"), None)
        token = token_from_header(header)
        if token is None:
            await _answer(401, NO_TOKEN_MESSAGE)(scope, receive, send)
            return
        try:
            claims = self.authority.verify(token)
        except InvalidToken as exc:
            await _answer(401, refusal(exc))(scope, receive, send)
            return
        if claims.role not in roles:
            await _answer(403, f"a {claims.role.value} token may not call {method} {path}")(scope, receive, send)
            return
        state[STATE_PRINCIPAL] = claims
        await self.app(scope, receive, send)


def install(app: FastAPI, authority: Authority) -> None:
    """Require tokens on `app` (call after the routes are included)."""
    app.state.auth = authority
    app.add_middleware(AuthMiddleware, fastapi_app=app, authority=authority)


def authority_of(request: Request) -> Authority | None:
    """The app's authority; None when authentication is off (local mode)."""
    return getattr(request.app.state, "auth", None)


def principal_of(request: Request) -> Claims | None:
    """The verified claims of the caller's token; None on a public route or with auth off."""
    return getattr(request.state, STATE_PRINCIPAL, None)


def route_guard(request: Request) -> None:
    """App-wide dependency: the route FastAPI dispatched to must be the one the middleware judged."""
    if authority_of(request) is None:
        return
    judged = getattr(request.state, STATE_ENDPOINT, None)
    route = request.scope.get("route")
    actual = getattr(route, "endpoint", None)
    if judged is not actual:
        log.error("auth: %s %s was judged for %r but dispatched to %r; refusing", request.method, request.url.path,
                  judged, actual)
        raise Forbidden("refused: the route could not be matched to its access rule")


def client_subject(request: Request) -> str | None:
    """The client id a client token is bound to, or None (admin tokens, auth off)."""
    claims = principal_of(request)
    return claims.sub if claims is not None and claims.role is Role.CLIENT else None


def combiner_subject(request: Request) -> str | None:
    """The combiner name a combiner token is bound to, or None (unbound tokens, admin, auth off)."""
    claims = principal_of(request)
    return claims.sub if claims is not None and claims.role is Role.COMBINER else None
