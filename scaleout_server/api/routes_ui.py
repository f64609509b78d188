"""The web dashboard: one HTML shell per page and the static files they load.

Pages carry no data; their JavaScript reads the REST API (and needs the same credentials as the
CLI when a token is required), so these routes stay outside the API schema and need no auth.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from scaleout_server.ui import PAGES, STATIC_DIR, render_page
from scaleout_server.ui.pages import STATIC_URL, Page

router = APIRouter(include_in_schema=False)


def _page_endpoint(page: Page) -> Any:
    def endpoint(request: Request) -> HTMLResponse:
        params = {name: str(value) for name, value in request.path_params.items()}
        return HTMLResponse(render_page(page.key, params), headers={"Cache-Control": "no-cache"})

    endpoint.__name__ = f"ui_{page.key}"
    return endpoint


for _page in PAGES:
    router.add_api_route(_page.path, _page_endpoint(_page), methods=["GET"], response_class=HTMLResponse,
                         name=f"ui_{_page.key}")


class RevalidatedStaticFiles(StaticFiles):
    """Static files the browser must revalidate (ETag) on every load: an upgraded server then
    never runs a page against an older cached module."""

    async def get_response(self, path: str, scope: Scope) -> Any:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_static(app: FastAPI) -> None:
    """Serve scaleout_server/ui/static at /ui/static."""
    app.mount(STATIC_URL, RevalidatedStaticFiles(directory=STATIC_DIR), name="ui-static")
