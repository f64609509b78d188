"""Importing a project's entry-point function (`startup`, `build`) into the running process.

The project folder stays at the front of sys.path afterwards: callbacks often import sibling modules
lazily (e.g. `import model` inside train), which must keep working long after startup returned.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from scaleout.project.config import ProjectConfig, ProjectError

_SIGNATURES = {"startup": "startup(client)", "build": "build()"}


class UserCodeError(ProjectError):
    """The project's own code raised (on import or when called); the cause is chained for its traceback."""


def load_entrypoint(project: ProjectConfig, name: str) -> Callable[..., Any]:
    """Import the file of entry point `name` under its file stem and return its function named `name`."""
    file = project.entry_point_file(name)
    if not file.is_file():
        raise ProjectError(f"entry point {name}: {file} does not exist")
    _put_first_on_sys_path(project.path)
    module = _import_fresh(file, name)
    signature = _SIGNATURES.get(name, f"{name}(...)")
    function = getattr(module, name, None)
    if function is None:
        raise ProjectError(f"{file.name} defines no function {signature}: add it, or fix entry_points.{name}")
    if not callable(function):
        raise ProjectError(
            f"{file.name}: {name} is a {type(function).__name__}, not a function; define {signature} there"
        )
    return function


def call_entrypoint(project: ProjectConfig, name: str, *args: Any) -> Any:
    """Load entry point `name` and call it; exceptions from the user's function become UserCodeError."""
    function = load_entrypoint(project, name)
    file_name = Path(project.entry_points[name]).name
    try:
        return function(*args)
    except (Exception, SystemExit) as exc:
        raise UserCodeError(f"{name}() in {file_name} failed: {type(exc).__name__}: {exc}") from exc


def _put_first_on_sys_path(folder: Path) -> None:
    entry = str(folder.resolve())
    while entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)
    importlib.invalidate_caches()  # files created after start-up (fresh packages) must be importable


def _import_fresh(file: Path, entry_name: str) -> ModuleType:
    """Execute `file` as a new module named after its stem, replacing any module of that name, so a second
    project (or a changed file) never gets a stale module from an earlier load."""
    module_name = file.stem
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ProjectError(f"entry point {entry_name}: cannot import {file} as a Python module")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        if previous is not None:
            sys.modules[module_name] = previous
        else:
            sys.modules.pop(module_name, None)
        raise UserCodeError(
            f"importing {file.name} (entry point {entry_name}) failed: {type(exc).__name__}: {exc}"
        ) from exc
    return module
