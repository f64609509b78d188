"""Size and rate limits of the REST API.

Size: a request body is refused with 413 before it is read when its declared length is over the limit of
its route (a package upload: `max_package_bytes`, a model upload: `max_model_bytes`, anything else:
`max_upload_bytes`), and as soon as a body without a declared length (chunked) passes it. The message
names the limit and the setting that raises it.

Rate: client registration (`POST /api/v1/clients/add`) is limited per client (its id, else its address)
with a token bucket (`registration_rate_limit` per second, burst `registration_burst`); a refusal is a 429
with Retry-After, which the clients retry with back-off.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scaleout_server.ratelimit import RateLimiter
from scaleout_server.settings import ServerSettings

log = logging.getLogger(__name__)

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the other form fields around the file
CHUNKED_HINT = "send large files in chunks via /api/v1/file-upload"


@dataclass(frozen=True)
class BodyRule:
    limit: int  # bytes of body allowed (0: no limit)
    setting: str  # the setting that raises it
    value: int  # that setting's value
    what: str


def body_rule(settings: ServerSettings, method: str, path: str) -> BodyRule:
    """The size limit for one request: its route's own limit (plus room for the form), never above
    max_upload_bytes."""
    upload = BodyRule(settings.max_upload_bytes, "max_upload_bytes", settings.max_upload_bytes, "The request body")
    route = None
    if method == "POST" and path.rstrip("/") == "/api/v1/packages":
        route = BodyRule(settings.max_package_bytes + FORM_OVERHEAD, "max_package_bytes", settings.max_package_bytes,
                         "The package upload")
    elif method == "POST" and path.rstrip("/") == "/api/v1/models":
        route = BodyRule(settings.max_model_bytes + FORM_OVERHEAD, "max_model_bytes", settings.max_model_bytes,
                         "The model upload")
    if route is None or route.value <= 0 or 0 < upload.limit < route.limit:
        return upload
    return route


def too_large_message(rule: BodyRule, size: int | None) -> str:
    amount = f" ({size} bytes)" if size is not None else ""
    text = f"{rule.what}{amount} is over this server's limit of {rule.value} bytes (setting {rule.setting})"
    return f"{text}; {CHUNKED_HINT}" if rule.setting == "max_upload_bytes" else text


class RequestSizeLimit:
    """ASGI middleware enforcing `body_rule` (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = body_rule(self.settings, scope.get("method", ""), scope.get("path", ""))
        if rule.limit <= 0:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > rule.limit:
            await JSONResponse(status_code=413, content={"message": too_large_message(rule, declared)})(
                scope, receive, send)
            return
        if declared is not None:
            await self.app(scope, receive, send)  # the server enforces the declared length
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > rule.limit:
                    # an HTTPException passes FastAPI's body parsing unchanged and becomes a 413 answer
                    raise HTTPException(status_code=413, detail=too_large_message(rule, None))
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def registration_limiter(settings: ServerSettings) -> RateLimiter:
    """The app's one registration limiter (create_app keeps it in `app.state.registration_limiter`)."""
    return RateLimiter(settings.registration_rate_limit, settings.registration_burst)


def check_registration_rate(request: Request, client_id: str | None) -> None:
    """429 with Retry-After when this client registers more often than the settings allow."""
    limiter: RateLimiter = request.app.state.registration_limiter
    if not limiter.enabled:
        return
    key = client_id or (f"address:{request.client.host}" if request.client else "unknown")
    if limiter.allow(key):
        return
    wait = max(1, math.ceil(limiter.retry_after(key)))
    message = (f"Too many registrations from client {key}: more than {limiter.rate:g} per second (burst "
               f"{limiter.burst}); retry in {wait}s, or raise the settings registration_rate_limit / "
               "registration_burst")
    if limiter.should_warn(key):
        log.warning("%s", message)
    raise HTTPException(status_code=429, detail=message, headers={"Retry-After": str(wait)})
