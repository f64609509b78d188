"""Keeping a running client on the server's current compute package (clients without --local-package).

Activating another package on the server takes effect for the next session: before the first task of each
new session (and before every task that belongs to no session) the client asks the controller for the
current package's SHA-256 (`GET /api/v1/packages/checksum`, one small request). When it differs from the
package the client runs, the new one is downloaded, verified and unpacked (or taken from the cache), its
python_env is installed when the client manages its environment, and the project's startup runs again so
its callbacks replace the old ones, all before the task starts. Tasks of a session that is already running
never switch packages under it.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import requests

from scaleout.client.edge_client import EdgeClient
from scaleout.client.registration import (
    FetchedPackage,
    RegistrationError,
    TokenManager,
    current_package_checksum,
    fetch_package,
)
from scaleout.client.tasks import Task, TaskExecutor, TaskFailed
from scaleout.project.config import ProjectConfig, ProjectError, load_project
from scaleout.project.environment import sync_environment
from scaleoututil.grpc import scaleout_pb2 as pb

logger = logging.getLogger(__name__)


@dataclass
class PackageSource:
    """Where packages come from and how they are installed; shared by the first fetch and later switches."""

    api_url: str
    workdir: Path
    name: str | None = None
    token: TokenManager | None = None
    max_bytes: int | None = None
    managed_env: bool = False
    session: requests.Session | None = None  # verifies the controller's TLS certificate (client/tls.py)
    public_key: str | None = None  # --package-public-key: only packages signed for it are run

    def fetch(self) -> FetchedPackage:
        return fetch_package(self.api_url, self.workdir, name=self.name, token=self.token, max_bytes=self.max_bytes,
                             session=self.session, public_key=self.public_key)

    def current_checksum(self) -> str:
        return current_package_checksum(self.api_url, name=self.name, token=self.token, session=self.session)

    def prepare(self, folder: Path) -> ProjectConfig:
        """Load the project in `folder` and, with --managed-env, install its python_env (ProjectError if not)."""
        project = load_project(folder)
        if self.managed_env:
            sync_environment(project)
        return project


class PackageSync:
    """Switches the client to the server's current package before a task, when it changed (see module doc).

    `run_startup(project)` is the runtime's own start-up step (import startup(client), or the dispatcher's
    commands); it raises RegistrationError on failure.
    """

    def __init__(self, source: PackageSource, edge_client: EdgeClient, run_startup: Callable[[ProjectConfig], None],
                 *, checksum: str, project: ProjectConfig) -> None:
        self.source = source
        self.edge_client = edge_client
        self.run_startup = run_startup
        self.checksum = checksum
        self.project = project
        self._checked_session: str | None = None
        self._lock = threading.Lock()

    def before_task(self, request: pb.TaskRequest) -> None:
        """Make sure the package is current for this task; TaskFailed when the new package cannot be used."""
        session_id = request.session_id
        if session_id and session_id == self._checked_session:
            return
        with self._lock:
            if session_id and session_id == self._checked_session:
                return
            try:
                current = self.source.current_checksum()
            except RegistrationError as exc:
                # Not worth failing work over: the package in hand is right unless the server changed it.
                logger.warning("cannot check for a new compute package (%s); keeping %s", exc, self.checksum[:12])
                return
            if current != self.checksum:
                self._switch(current)
            self._checked_session = session_id or None

    def _switch(self, announced: str) -> None:
        logger.info("the server's compute package changed (%s -> %s): switching before the next task",
                    self.checksum[:12], announced[:12])
        try:
            fetched = self.source.fetch()
            project = self.source.prepare(fetched.folder)
        except (RegistrationError, ProjectError) as exc:
            raise TaskFailed(f"the server's compute package changed to {announced[:12]}, but this client cannot "
                             f"use it: {exc}") from exc
        try:
            replace_project(self.edge_client, self.project, project, self.run_startup)
        except RegistrationError as exc:
            raise TaskFailed(f"startup of the new compute package {fetched.checksum[:12]} failed (the client "
                             f"keeps the previous one): {exc}") from exc
        self.project, self.checksum = project, fetched.checksum
        logger.info("now running compute package %s from %s", fetched.checksum[:12], project.path)


def replace_project(edge_client: EdgeClient, old: ProjectConfig, new: ProjectConfig,
                    run_startup: Callable[[ProjectConfig], None]) -> None:
    """Run `new`'s startup with a clean slate: no callbacks of the old project, none of its modules importable
    (a sibling `model.py` must come from the new folder). On failure the old project is put back as it was."""
    callbacks = edge_client._callbacks
    saved = (callbacks.train, callbacks.validate, callbacks.predict, dict(callbacks.custom))
    callbacks.train = callbacks.validate = callbacks.predict = None
    callbacks.custom.clear()
    modules, path_entries = _forget_project(old.path)
    try:
        run_startup(new)
    except BaseException:
        callbacks.train, callbacks.validate, callbacks.predict = saved[:3]
        callbacks.custom.clear()
        callbacks.custom.update(saved[3])
        _forget_project(new.path)
        sys.modules.update(modules)
        sys.path[:0] = [entry for entry in path_entries if entry not in sys.path]
        raise


def _forget_project(folder: Path) -> tuple[dict[str, ModuleType], list[str]]:
    """Drop the modules imported from `folder` and its sys.path entry; return them for a rollback."""
    root = folder.resolve()
    modules: dict[str, ModuleType] = {}
    for name, module in list(sys.modules.items()):
        if _is_below(getattr(module, "__file__", None), root):
            modules[name] = sys.modules.pop(name)
    entries = [entry for entry in sys.path if _is_below(entry, root, inclusive=True)]
    for entry in entries:
        sys.path.remove(entry)
    return modules, entries


def _is_below(path: Any, root: Path, *, inclusive: bool = False) -> bool:
    if not isinstance(path, str) or not path:
        return False
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):
        return False
    return (inclusive and resolved == root) or root in resolved.parents


class SyncingTaskExecutor(TaskExecutor):
    """A TaskExecutor that brings the package up to date first; a failed switch fails the task, reported as
    usual, and the client keeps serving."""

    def __init__(self, *args: Any, sync: PackageSync, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sync = sync

    def _dispatch(self, task: Task) -> str | None:
        self.sync.before_task(task.request)
        return super()._dispatch(task)
