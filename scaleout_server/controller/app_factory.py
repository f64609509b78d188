"""Wire a controller process together: settings -> store + repository -> Controller -> FastAPI app."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from scaleout_server.api.app import create_app
from scaleout_server.auth import open_authority
from scaleout_server.controller.core import Controller
from scaleout_server.repository.base import ModelRepository
from scaleout_server.repository.factory import repository_from_settings
from scaleout_server.settings import ServerSettings
from scaleout_server.store.base import Store
from scaleout_server.store.factory import make_store


def build_controller_app(settings: ServerSettings, *, secure: bool = False, store: Store | None = None,
                         repository: ModelRepository | None = None) -> tuple[FastAPI, Controller]:
    """A started controller and its REST app; the caller closes the controller. The repository
    comes from the factory, so `repository_type` is honoured (an unknown type is a ValueError).
    `store`/`repository`: already opened ones (a controller taking over, `active.py`).

    `secure`: every REST route and Control call needs a token (the authority is `app.state.auth`;
    its secret lives in the data folder)."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    # local folder or S3, with the settings' credentials
    repository = repository if repository is not None else repository_from_settings(settings)
    store = store if store is not None else make_store(settings.resolved_store_url())
    controller = Controller(settings, store, repository)
    authority = open_authority(settings.data_dir, store) if secure else None
    if authority is not None:
        controller.registry.call_token = authority.controller_token  # before the first Control call
    controller.start()
    return create_app(controller, authority), controller
