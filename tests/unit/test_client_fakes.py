"""Shared pieces for the client tests: a small real gRPC combiner (the CombinerClient/ModelService RPCs a
client uses, with scriptable behaviour) and a tiny real HTTP controller built on http.server.

(Named test_client_* so that it sits with the tests it serves; it holds no tests itself.)
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.model import ScaleoutModel

HELPER = get_helper("numpyhelper")


def seed_model(model_id: str = "seed-model", values: float = 1.0) -> ScaleoutModel:
    return ScaleoutModel.from_model_params([np.full(4, values, dtype=np.float32)], helper=HELPER, model_id=model_id)


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@dataclass
class Poll:
    at: float
    report: pb.ClientReport
    metadata: dict[str, str]


@dataclass
class FakeCombiner(pb_grpc.CombinerClientServicer, pb_grpc.ModelServiceServicer):
    """Records everything clients send; hands out queued tasks on (long-)polls."""

    models: dict[str, bytes] = field(default_factory=dict)
    pending: list[pb.TaskRequest] = field(default_factory=list)
    polls: list[Poll] = field(default_factory=list)
    uploads: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    updates: list[pb.ModelUpdate] = field(default_factory=list)
    validations: list[pb.ModelValidation] = field(default_factory=list)
    metrics: list[pb.ModelMetric] = field(default_factory=list)
    statuses: list[pb.Status] = field(default_factory=list)
    announces: list[pb.ClientAnnounceRequest] = field(default_factory=list)
    heartbeats: list[pb.Heartbeat] = field(default_factory=list)
    attributes: list[pb.AttributeMessage] = field(default_factory=list)
    telemetry: list[pb.TelemetryMessage] = field(default_factory=list)
    downloads: list[str] = field(default_factory=list)
    checksum_override: str | None = None  # sent instead of the real checksum trailer
    version_ok: bool = True
    max_hold: float = 30.0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add_model(self, model: ScaleoutModel) -> None:
        self.models[model.model_id] = model.get_stream().read()

    def enqueue(self, task: pb.TaskRequest) -> None:
        with self.cond:
            self.pending.append(task)
            self.cond.notify_all()

    def reports_for(self, correlation_id: str) -> list[pb.ActivityReport]:
        with self.cond:
            return [r for p in self.polls for r in p.report.reports if r.correlation_id == correlation_id]

    def done_report(self, correlation_id: str) -> pb.ActivityReport | None:
        done = [r for r in self.reports_for(correlation_id) if r.done]
        return done[0] if done else None

    # -- CombinerClient ---------------------------------------------------------------------
    def PollAndReportAsync(self, request: pb.ClientReport, context: grpc.ServicerContext) -> pb.CombinerDirective:
        with self.cond:
            self.polls.append(Poll(time.monotonic(), request, dict(context.invocation_metadata())))
            self.cond.notify_all()
            remaining = context.time_remaining()
            hold = min(self.max_hold, (remaining - 0.3) if remaining is not None else self.max_hold)
            deadline = time.monotonic() + max(0.0, hold)
            while not self.pending and not request.skip_polling_tasks and context.is_active():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.05))
            if not context.is_active() or request.skip_polling_tasks:
                return pb.CombinerDirective()
            tasks, self.pending = self.pending, []
        return pb.CombinerDirective(tasks=tasks)

    def Announce(self, request: pb.ClientAnnounceRequest, context: grpc.ServicerContext) -> pb.Response:
        with self.cond:
            self.announces.append(request)
            self.cond.notify_all()
        if request.type == "VersionCheck":
            answer = {"success": self.version_ok, "version": "test"}
            return pb.Response(response="" if self.version_ok else "client too old", parameters=json.dumps(answer))
        return pb.Response()

    def _record(self, bucket: list[Any], request: Any) -> pb.Response:
        with self.cond:
            bucket.append(request)
            self.cond.notify_all()
        return pb.Response()

    def SendModelUpdate(self, request: pb.ModelUpdate, context: grpc.ServicerContext) -> pb.Response:
        return self._record(self.updates, request)

    def SendModelValidation(self, request: pb.ModelValidation, context: grpc.ServicerContext) -> pb.Response:
        return self._record(self.validations, request)

    def SendModelMetric(self, request: pb.ModelMetric, context: grpc.ServicerContext) -> pb.Response:
        return self._record(self.metrics, request)

    def SendStatus(self, request: pb.Status, context: grpc.ServicerContext) -> pb.Response:
        return self._record(self.statuses, request)

    def SendHeartbeat(self, request: pb.Heartbeat, context: grpc.ServicerContext) -> pb.Response:
        return self._record(self.heartbeats, request)

    def SendAttributeMessage(self, request: pb.AttributeMessage, context: grpc.ServicerContext) -> pb.Response:
        return self._record(self.attributes, request)

    def SendTelemetryMessage(self, request: pb.TelemetryMessage, context: grpc.ServicerContext) -> pb.Response:
        return self._record(self.telemetry, request)

    # -- ModelService -----------------------------------------------------------------------
    def Download(self, request: pb.ModelRequest, context: grpc.ServicerContext) -> Iterator[pb.FileChunk]:
        self.downloads.append(request.model_id)
        data = self.models.get(request.model_id)
        if data is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_id}")
        checksum = self.checksum_override or hashlib.sha256(data).hexdigest()
        context.set_trailing_metadata((("checksum", checksum),))
        for start in range(0, len(data), 1024):
            yield pb.FileChunk(data=data[start:start + 1024])

    def Upload(self, request_iterator: Iterator[pb.FileChunk], context: grpc.ServicerContext) -> pb.ModelResponse:
        metadata = dict(context.invocation_metadata())
        data = b"".join(chunk.data for chunk in request_iterator)
        if hashlib.sha256(data).hexdigest() != metadata.get("checksum"):
            context.abort(grpc.StatusCode.DATA_LOSS, "checksum mismatch")
        with self.cond:
            self.uploads[metadata["model-id"]] = (data, metadata)
            self.cond.notify_all()
        return pb.ModelResponse(status=pb.OK)


@contextmanager
def running_combiner(fake: FakeCombiner | None = None, port: int = 0) -> Iterator[tuple[FakeCombiner, int]]:
    fake = fake or FakeCombiner()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    pb_grpc.add_CombinerClientServicer_to_server(fake, server)
    pb_grpc.add_ModelServiceServicer_to_server(fake, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield fake, bound
    finally:
        with fake.cond:
            fake.cond.notify_all()
        server.stop(0).wait(5)


# -- HTTP controller ---------------------------------------------------------------------------------
@dataclass
class HttpReply:
    status: int
    body: Any = None  # dict -> JSON; bytes -> raw
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeController:
    """Routes `METHOD path` to a list of scripted replies (the last one repeats) and records requests."""

    routes: dict[str, list[HttpReply]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    def calls(self, route: str) -> list[tuple[str, str, dict[str, str], bytes]]:
        return [r for r in self.requests if f"{r[0]} {r[1].split('?')[0]}" == route]

    def reply(self, method: str, path: str) -> HttpReply:
        replies = self.routes.get(f"{method} {path.split('?')[0]}")
        if not replies:
            return HttpReply(404, {"message": f"no route {method} {path}"})
        return replies.pop(0) if len(replies) > 1 else replies[0]


@contextmanager
def running_controller(fake: FakeController, port: int = 0) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fake.requests.append((self.command, self.path, dict(self.headers), body))
            reply = fake.reply(self.command, self.path)
            payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            headers = {"Content-Type": "application/json", **reply.headers}
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def assignment(port: int, client_id: str = "assigned-id") -> HttpReply:
    return HttpReply(200, {"client_id": client_id, "public_hostname": "127.0.0.1", "port": port,
                           "grpc_secure": False, "helper_type": "numpyhelper"})


STARTUP_PY = '''
def startup(client):
    client.set_custom_callback("echo", lambda params: {"echo": params, "client": client.name})
'''


def write_project(folder: Path, startup: str = STARTUP_PY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scaleout.yaml").write_text("entry_points:\n  startup: startup.py\n")
    (folder / "startup.py").write_text(startup)
    return folder


def package_bytes(project: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for file in sorted(project.iterdir()):
            tar.add(file, arcname=file.name)
    return buffer.getvalue()
