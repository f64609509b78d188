"""Shared fixture of the APIClient and CLI tests (no tests here): a tiny real HTTP server on 127.0.0.1
that answers canned replies per route and records every request it receives."""

from __future__ import annotations

import fnmatch
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


Reply = tuple[int, Any] | tuple[int, Any, dict[str, str]]
Handler = Callable[[Recorded], Reply]


@dataclass
class FakeController:
    """Routes are `(METHOD, glob pattern of the path)`; the first match answers. Unknown routes get 404."""

    routes: list[tuple[str, str, Handler]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    def on(self, method: str, pattern: str, status: int = 200, body: Any = None,
           handler: Handler | None = None) -> None:
        """Add a route answering `body` (JSON, or raw bytes) with `status`, or whatever `handler` returns."""
        self.routes.insert(0, (method.upper(), pattern, handler or (lambda _req: (status, body))))

    def find(self, method: str, pattern: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and fnmatch.fnmatchcase(r.path, pattern)]

    def answer(self, request: Recorded) -> Reply:
        self.requests.append(request)
        for method, pattern, handler in self.routes:
            if method == request.method and fnmatch.fnmatchcase(request.path, pattern):
                return handler(request)
        return 404, {"message": f"no route for {request.method} {request.path}"}


def _handler_class(fake: FakeController) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            recorded = Recorded(self.command, parts.path, query, dict(self.headers.items()), body)
            reply = fake.answer(recorded)
            status, payload = reply[0], reply[1]
            headers = reply[2] if len(reply) > 2 else {}  # type: ignore[misc]
            if isinstance(payload, bytes):
                data, content_type = payload, "application/octet-stream"
            else:
                data, content_type = json.dumps(payload).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

    return Handler


@contextmanager
def running_fake_controller() -> Iterator[FakeController]:
    """Start the fake on a free port; each test file wraps this in its own `fake` fixture."""
    fake = FakeController()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-controller",
                              daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def upload_routes(fake: FakeController, token: str = "tok-1") -> dict[str, Any]:
    """Routes of a working chunked upload; the returned dict collects the chunks' bytes per index."""
    state: dict[str, Any] = {"chunks": {}}

    def chunk(req: Recorded) -> Reply:
        state["chunks"][int(req.header("X-Chunk-Index") or -1)] = req.body
        return 200, {"received_bytes": sum(len(b) for b in state["chunks"].values())}

    fake.on("POST", "/api/v1/file-upload/init", body={"upload_id": "up-1"})
    fake.on("POST", "/api/v1/file-upload/up-1/chunk", handler=chunk)
    fake.on("POST", "/api/v1/file-upload/up-1/complete", body={"file_token": token})
    fake.on("POST", "/api/v1/file-upload/up-1/abort", body={"message": "aborted"})
    return state
