"""Small pieces every route module shares: how a route reaches the controller and the upload
area, how a collection root answers with and without its trailing slash, and input helpers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from scaleout_server.api.uploads import UploadArea
from scaleout_server.controller.core import Controller
from scaleout_server.errors import InvalidInput


def controller_of(request: Request) -> Controller:
    return request.app.state.controller


def uploads_of(request: Request) -> UploadArea:
    return request.app.state.uploads


ControllerDep = Annotated[Controller, Depends(controller_of)]
UploadsDep = Annotated[UploadArea, Depends(uploads_of)]


def root_route(router: APIRouter, path: str, method: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register `path` (ending in "/") and the same path without the slash.

    The official clients use both spellings; a redirect would turn a POST into a second request
    that some HTTP clients replay without its body, so both are real routes."""
    if not path.endswith("/"):
        raise ValueError(f"root_route expects a path ending in '/', got {path!r}")

    def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        router.add_api_route(path, endpoint, methods=[method], **kwargs)
        router.add_api_route(path.rstrip("/"), endpoint, methods=[method], include_in_schema=False, **kwargs)
        return endpoint

    return register


def client_ids_list(value: list[str] | str | None) -> list[str] | None:
    """Client ids arrive as a JSON list or a comma-separated string; empty means "not given"."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [part for part in value.split(",")]
    ids = [v.strip() for v in value if v and v.strip()]
    return ids or None


_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def safe_file_name(name: str | None, default: str) -> str:
    """The last path component with unusual characters replaced: the name ends up unquoted in a
    `Content-Disposition` header and as a file name on client machines."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    base = _UNSAFE_FILE_CHARS.sub("_", base).lstrip(".")
    return base or default


def parse_bool(value: str | None, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise InvalidInput(f"{name} must be true or false, got {value!r}")
