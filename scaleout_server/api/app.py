"""The controller's REST API: `create_app(controller)` builds the FastAPI application.

Every error leaves as JSON `{"message": ...}` saying what to fix, with the status of its
`scaleout_server.errors` type; FastAPI's 422 validation answer becomes a 400 naming the fields.
Unexpected failures are logged and answered with a 500, and the server keeps running.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scaleout_server.api import (
    routes_attributes,
    routes_auth,
    routes_cli_auth,
    routes_clients,
    routes_combiners,
    routes_control,
    routes_helpers,
    routes_models,
    routes_packages,
    routes_records,
    routes_sessions,
    routes_system,
    routes_ui,
    routes_uploads,
)
from scaleout_server.api.limits import RequestSizeLimit, registration_limiter
from scaleout_server.api.uploads import UploadArea
from scaleout_server.auth import rest as auth_rest
from scaleout_server.auth.authority import Authority
from scaleout_server.controller.core import Controller
from scaleout_server.errors import ServerError
from scaleout_server.repository.base import BlobNotFound
from scaleout_server.store.base import AlreadyExists, InvalidQuery, NotFound

log = logging.getLogger(__name__)

DESCRIPTION = """
REST API of the Scaleout Edge controller: register clients and combiners, upload seed models and
compute packages, create and start training sessions, and read what happened (rounds, models,
validations, metrics, statuses, predictions, commands, model updates).

Lists: `GET /api/v1/<resource>/` with query-string equality filters and headers `X-Limit`
(0 = all), `X-Skip`, `X-Sort-Key`, `X-Sort-Order` (asc|desc) answer `{"count", "result"}`;
`/count` answers an integer; `/{id}` one object. Errors are `{"message": ...}`.
Authentication: a secured server (`scaleout server start --secure`, `scaleout controller start`)
requires `Authorization: Bearer <token>` on every route except `/health`, the token exchanges
(`/api/auth/refresh`, `/api/v1/clients/token`, `/api/v1/clients/enroll`), this description and
the dashboard's page shells; a missing, bad, expired or revoked token is a 401 and a token of the
wrong role a 403. In local mode (`scaleout server start`, loopback only) authentication is off.
"""

UNEXPECTED = "An unexpected error occurred"


def _message(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"message": message})


def _field_path(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
        return ".".join(parts) if parts else "request body"
    if len(parts) >= 2 and parts[0] in ("query", "header", "path", "cookie", "form", "file"):
        return f"{parts[0]} parameter {'.'.join(parts[1:])}"
    return ".".join(parts) or "request"


def validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors():
        problem = str(error.get("msg", "invalid value"))
        if error.get("type") == "json_invalid":
            problem = "is not valid JSON"
        problems.append(f"{_field_path(error.get('loc', ()))}: {problem}")
    return "; ".join(problems) or "The request is invalid"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServerError)
    async def server_error(_: Request, exc: ServerError) -> JSONResponse:
        if exc.http_status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc)
        return _message(exc.http_status, str(exc) or type(exc).__name__)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _message(404, f"{exc.kind.capitalize()} with id: {exc.key} not found")

    @app.exception_handler(BlobNotFound)
    async def blob_not_found(_: Request, exc: BlobNotFound) -> JSONResponse:
        return _message(404, f"The stored file {exc.key!r} is missing from the repository")

    @app.exception_handler(InvalidQuery)
    async def invalid_query(_: Request, exc: InvalidQuery) -> JSONResponse:
        return _message(400, str(exc))

    @app.exception_handler(AlreadyExists)
    async def already_exists(_: Request, exc: AlreadyExists) -> JSONResponse:
        return _message(409, str(exc) or "An entity with this id already exists")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _message(400, validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"No route {request.method} {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs for the API"
        else:
            message = str(exc.detail)
        return JSONResponse(status_code=exc.status_code, content={"message": message}, headers=exc.headers)


class CatchUnexpected:
    """Turn an unhandled exception into a logged 500 `{"message"}` instead of a dropped connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("Unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _message(500, UNEXPECTED)(scope, receive, send)


def create_app(controller: Controller, authority: Authority | None = None) -> FastAPI:
    """The REST API over `controller`. The caller starts and closes the controller. With an
    `authority`, every route needs a token (see scaleout_server.auth); without, auth is off."""
    app = FastAPI(title="Scaleout Edge controller", description=DESCRIPTION, version="1.0",
                  dependencies=[Depends(auth_rest.route_guard)])
    app.state.controller = controller
    app.state.auth = authority
    app.state.registration_limiter = registration_limiter(controller.settings)
    uploads = UploadArea(Path(controller.settings.data_dir) / "uploads", controller.store,
                         controller.settings.max_upload_bytes)
    try:
        uploads.sweep()
    except Exception as exc:  # a stale file is harmless; never block start-up on it
        log.warning("could not sweep stale uploads: %s", exc)
    app.state.uploads = uploads
    install_error_handlers(app)
    app.add_middleware(RequestSizeLimit, settings=controller.settings)  # 413 before a body is read
    if authority is not None:
        auth_rest.install(app, authority)  # before any body is read; inside CatchUnexpected
    app.add_middleware(CatchUnexpected)
    # Resource-specific routes first: `/clients/config` must win over `/clients/{id}`.
    for module in (routes_system, routes_auth, routes_cli_auth, routes_ui, routes_clients, routes_combiners,
                   routes_helpers, routes_uploads, routes_models, routes_packages, routes_sessions, routes_control,
                   routes_attributes, routes_records):
        app.include_router(module.router)
    routes_ui.mount_static(app)  # the dashboard's CSS and JavaScript at /ui/static
    return app

