"""Wire a controller process together: settings -> store + repository -> Controller -> FastAPI app."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from scaleout_server.api.app import create_app
from scaleout_server.controller.core import Controller
from scaleout_server.repository.factory import make_repository
from scaleout_server.settings import ServerSettings
from scaleout_server.store.factory import make_store


def build_controller_app(settings: ServerSettings) -> tuple[FastAPI, Controller]:
    """A started controller and its REST app; the caller closes the controller. The repository
    comes from the factory, so `repository_type` is honoured (an unknown type is a ValueError)."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    repository = make_repository({"type": settings.repository_type, "path": str(settings.resolved_repository_path())})
    store = make_store(settings.resolved_store_url())
    controller = Controller(settings, store, repository)
    controller.start()
    return create_app(controller), controller
