"""Wire a controller process together: settings -> store + repository -> Controller -> FastAPI app."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from scaleout_server.api.app import create_app
from scaleout_server.controller.core import Controller
from scaleout_server.repository.local import LocalRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.store.factory import make_store


def build_controller_app(settings: ServerSettings) -> tuple[FastAPI, Controller]:
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    store = make_store(settings.resolved_store_url())
    repository = LocalRepository(settings.resolved_repository_path())
    controller = Controller(settings, store, repository)
    controller.start()
    return create_app(controller), controller
