"""The HTML overview at `/`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from scaleout_server.api.common import ControllerDep
from scaleout_server.ui import render_overview

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def overview(controller: ControllerDep) -> str:
    return render_overview(controller.store)
