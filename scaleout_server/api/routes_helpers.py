"""The active helper: which serialisation new seed models and the dispatcher use."""

from __future__ import annotations

from fastapi import APIRouter

from scaleout_server.api.common import ControllerDep
from scaleout_server.api.schemas import ActiveHelper
from scaleout_server.controller.session_config import ACTIVE_HELPER_SETTING, active_helper, check_helper

router = APIRouter(tags=["helpers"])


@router.get("/api/v1/helpers/active")
def get_active_helper(controller: ControllerDep) -> str:
    """The active helper's name as a JSON string ("numpyhelper" until one is set)."""
    return active_helper(controller.store)


@router.put("/api/v1/helpers/active")
def set_active_helper(body: ActiveHelper, controller: ControllerDep) -> dict[str, str]:
    """Choose the active helper: one of the shipped helper plugins (numpyhelper, binaryhelper)."""
    helper = check_helper(body.helper.strip())
    controller.store.set_setting(ACTIVE_HELPER_SETTING, helper)
    return {"message": f"Active helper set to {helper}", "helper": helper}
