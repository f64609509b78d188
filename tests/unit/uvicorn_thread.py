"""The real controller app served by uvicorn in a background thread (HTTP or HTTPS), for unit tests that
need real sockets: TLS verification, the client's package download, rate limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def serving(app: Any, port: int, **ssl_options: str) -> Iterator[uvicorn.Server]:
    """Serve `app` on 127.0.0.1:`port` until the block ends (`ssl_certfile`/`ssl_keyfile` for HTTPS)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **ssl_options))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.05)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(15)
