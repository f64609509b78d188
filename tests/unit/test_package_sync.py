"""Switching a running client to a new package: the new project's code replaces the old one's completely,
and a new package whose startup fails leaves the old one working."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scaleout.client.edge_client import EdgeClient
from scaleout.client.package_sync import replace_project
from scaleout.project.config import ProjectConfig, ProjectError, load_project
from scaleout.project.loader import call_entrypoint

STARTUP = '''
import siblingmod


def startup(client):
    client.set_custom_callback("value", lambda params: {"value": siblingmod.VALUE})
    {extra}
'''


def project(folder: Path, value: int, extra: str = "") -> ProjectConfig:
    folder.mkdir(parents=True)
    (folder / "scaleout.yaml").write_text("entry_points:\n  startup: startup.py\n")
    (folder / "startup.py").write_text(STARTUP.replace("{extra}", extra))
    (folder / "siblingmod.py").write_text(f"VALUE = {value}\n")
    return load_project(folder)


def run_startup(edge_client: EdgeClient) -> Callable[[ProjectConfig], Any]:
    return lambda proj: call_entrypoint(proj, "startup", edge_client)


@pytest.fixture(autouse=True)
def clean_imports() -> Iterator[None]:
    saved_path = list(sys.path)
    yield
    sys.path[:] = saved_path
    for name in ("siblingmod", "startup"):
        sys.modules.pop(name, None)


def callback_value(client: EdgeClient) -> Any:
    return client._callbacks.custom["Custom_value"]({})


def test_new_package_gets_its_own_sibling_modules_and_only_its_callbacks(tmp_path: Path) -> None:
    client = EdgeClient()
    old = project(tmp_path / "old", 1, extra='client.set_custom_callback("old_only", lambda params: {})')
    call_entrypoint(old, "startup", client)
    assert callback_value(client) == {"value": 1}

    new = project(tmp_path / "new", 2)
    replace_project(client, old, new, run_startup(client))
    assert callback_value(client) == {"value": 2}  # siblingmod came from the new folder, not the module cache
    assert set(client._callbacks.custom) == {"Custom_value"}  # the old project's extra callback is gone
    assert str(old.path) not in sys.path


def test_failing_startup_of_the_new_package_keeps_the_old_one(tmp_path: Path) -> None:
    client = EdgeClient()
    old = project(tmp_path / "old", 1)
    call_entrypoint(old, "startup", client)
    broken = project(tmp_path / "broken", 2, extra="raise RuntimeError('no GPU here')")

    with pytest.raises(ProjectError, match="no GPU here"):
        replace_project(client, old, broken, run_startup(client))
    assert callback_value(client) == {"value": 1}
    assert sys.modules["siblingmod"].VALUE == 1
    assert str(old.path) in sys.path and str(broken.path) not in sys.path
