"""Which runner a session gets: synchronous rounds (with its server functions, if any) or the buffered
asynchronous mode. Kept apart from the facade so that `core.start_session` only asks for "a runner"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scaleout_server.controller.async_sessions import ASYNC_MODE, AsyncSessionRunner
from scaleout_server.controller.combiners import CombinerRegistry
from scaleout_server.controller.server_functions import Limits, ServerFunctionsHooks
from scaleout_server.controller.session_config import SessionConfig
from scaleout_server.controller.sessions import SessionRunner
from scaleout_server.controller.tasks import TaskDispatcher
from scaleout_server.repository.base import ModelRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.store.base import Store
from scaleout_server.tls import api_origin


def server_functions_limits(settings: ServerSettings) -> Limits:
    return Limits(timeout=float(settings.server_functions_timeout),
                  memory_bytes=max(0, int(settings.server_functions_memory_mb)) * 1024**2)


def controller_address(settings: ServerSettings) -> dict[str, object]:
    """Where server functions' `api_client` reaches this controller."""
    return {"host": api_origin(settings), "port": settings.api_port}


def make_runner(settings: ServerSettings, config: SessionConfig, store: Store, repository: ModelRepository,
                registry: CombinerRegistry, dispatcher: TaskDispatcher, session_id: str, rounds: int,
                round_timeout: float, on_exit: Callable[[SessionRunner], None] | None = None) -> SessionRunner:
    if config.mode == ASYNC_MODE:
        return AsyncSessionRunner(store, repository, registry, dispatcher, session_id, rounds, round_timeout,
                                  on_exit=on_exit, work_dir=Path(settings.data_dir) / "async" / session_id)
    hooks = None
    if config.server_functions:
        work_dir = Path(settings.data_dir) / "server-functions" / session_id
        hooks = ServerFunctionsHooks(config.server_functions, repository, work_dir,
                                     server_functions_limits(settings), controller_address(settings), session_id)
    return SessionRunner(store, repository, registry, dispatcher, session_id, rounds, round_timeout,
                         on_exit=on_exit, hooks=hooks)
