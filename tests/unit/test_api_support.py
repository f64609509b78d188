"""Shared fixtures of the REST API tests (no tests here): a real SQLite store, a real local
repository and the real Controller behind FastAPI's TestClient."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from scaleout_server.api.app import create_app
from scaleout_server.controller.core import Controller
from scaleout_server.repository.local import LocalRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.store.factory import make_store
from scaleoututil.helpers.helpers import get_helper


class Api:
    """A TestClient plus direct access to the objects behind it."""

    def __init__(self, client: TestClient, controller: Controller) -> None:
        self.client = client
        self.controller = controller
        self.store = controller.store


def build_api(tmp_path: Path, **settings: object) -> Iterator[Api]:
    store = make_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    repository = LocalRepository(tmp_path / "repository")
    controller = Controller(ServerSettings(data_dir=tmp_path / "data", **settings), store, repository)  # type: ignore[arg-type]
    app = create_app(controller)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, controller)
    store.close()


def npz_bytes(*shapes: int) -> bytes:
    buf = io.BytesIO()
    get_helper("numpyhelper").save([np.arange(n, dtype=np.float32) for n in shapes or (3,)], buf)
    return buf.getvalue()


def package_bytes(with_yaml: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        files = {"client/scaleout.yaml": b"entry_points:\n  startup:\n    command: python startup.py\n",
                 "client/startup.py": b"def startup(client):\n    pass\n"}
        if not with_yaml:
            files.pop("client/scaleout.yaml")
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def chunked_upload(client: TestClient, data: bytes, file_name: str, chunk_size: int = 1024) -> str:
    """What the official CLI does: init, numbered chunks, complete -> file_token."""
    res = client.post("/api/v1/file-upload/init",
                      json={"file_name": file_name, "file_size": len(data), "chunk_size": chunk_size})
    assert res.status_code == 200, res.text
    upload_id = res.json()["upload_id"]
    for index, start in enumerate(range(0, len(data), chunk_size)):
        res = client.post(f"/api/v1/file-upload/{upload_id}/chunk", content=data[start:start + chunk_size],
                          headers={"X-Chunk-Index": str(index)})
        assert res.status_code == 200, res.text
    res = client.post(f"/api/v1/file-upload/{upload_id}/complete")
    assert res.status_code == 200, res.text
    return res.json()["file_token"]
