"""The names server-functions code can rely on without importing them.

Only the text of a `ServerFunctions` class may reach the server (`APIClient.start_session` sends
`inspect.getsource(ServerFunctions)`, without the file's imports), so the server runs it in a
namespace that already holds these names. A whole file may also import them from here.
This is a convenience, not a sandbox: the code may import anything installed on the server.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from typing import Any, Dict, List, Optional, Tuple  # noqa: UP035 - names the official examples use

import numpy as np

from scaleoututil.serverfunctions.serverfunctionsbase import RoundType, ServerFunctionsBase

logger = logging.getLogger("scaleout.serverfunctions")

_lock = threading.Lock()
_api: dict[str, Any] = {"host": None, "port": None, "token": None, "client": None}


def ScaleoutLogger() -> logging.Logger:  # noqa: N802 - the official name
    """The logger server functions write to (the server shows its lines in its own log)."""
    return logger


def print(*args: Any, sep: str = " ", **_: Any) -> None:  # noqa: A001 - deliberately shadows print
    """`print` in server functions goes to the server's log."""
    logger.info(sep.join(str(a) for a in args))


def configure_api_client(*, host: str, port: int, token: str | None = None) -> None:
    """Point `api_client` at the controller (the server does this before running user code)."""
    with _lock:
        _api.update(host=host, port=int(port), token=token, client=None)


def _client() -> Any:
    from scaleoututil.api.client import APIClient

    with _lock:
        if _api["client"] is None:
            host = _api["host"] or os.environ.get("SCALEOUT_API_HOST") or "127.0.0.1"
            port = _api["port"] or int(os.environ.get("SCALEOUT_API_PORT") or 8092)
            _api["client"] = APIClient(host, port, token=_api["token"])
        return _api["client"]


class _LazyAPIClient:
    """`api_client.get_current_attributes(...)` etc.: the APIClient is made on first use."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_client(), name)


api_client: Any = _LazyAPIClient()


def get_combiner_name() -> str:
    """The combiner running this code (official API). Our server runs server functions on the controller,
    for the whole session, so there is none: this always raises RuntimeError."""
    raise RuntimeError("combiner name not set: server functions run on the controller, not on a combiner")


__all__ = ["Any", "Dict", "List", "Optional", "RoundType", "ScaleoutLogger", "ServerFunctionsBase", "Tuple",
           "api_client", "configure_api_client", "get_combiner_name", "logger", "np", "os", "print", "random"]
