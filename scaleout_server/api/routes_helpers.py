"""The active helper: which serialisation new seed models and the dispatcher use."""

from __future__ import annotations

from fastapi import APIRouter

from scaleout_server.api.common import ControllerDep
from scaleout_server.api.schemas import ActiveHelper
from scaleout_server.errors import InvalidInput
from scaleout_server.store.base import Store
from scaleoututil.helpers.helpers import available_helpers

router = APIRouter(tags=["helpers"])

DEFAULT_HELPER = "numpyhelper"
SETTING = "active_helper"


def active_helper(store: Store) -> str:
    """The stored choice, or numpyhelper (what the official CLI assumes when none is set)."""
    return store.get_setting(SETTING) or DEFAULT_HELPER


@router.get("/api/v1/helpers/active")
def get_active_helper(controller: ControllerDep) -> str:
    """The active helper's name as a JSON string ("numpyhelper" until one is set)."""
    return active_helper(controller.store)


@router.put("/api/v1/helpers/active")
def set_active_helper(body: ActiveHelper, controller: ControllerDep) -> dict[str, str]:
    """Choose the active helper: one of the shipped helper plugins (numpyhelper, binaryhelper)."""
    helper = body.helper.strip()
    known = available_helpers()
    if helper not in known:
        raise InvalidInput(f"Unknown helper {body.helper!r}; use one of: {', '.join(known)}")
    controller.store.set_setting(SETTING, helper)
    return {"message": f"Active helper set to {helper}", "helper": helper}
