"""Shared pieces of the combiner tests: a real combiner in a thread and a simulated edge client.

The simulated client speaks the wire like the official one (metadata, ClientReport with every
held task, Download with checksum trailer, Upload with model-id/checksum, SendModelUpdate) but
runs each task inline, so tests stay deterministic.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from scaleout_server.combiner.client_manager import Task
from scaleout_server.combiner.controller_link import CallbackLink
from scaleout_server.combiner.server import CombinerThread
from scaleout_server.repository.local import LocalRepository
from scaleout_server.settings import ServerSettings
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.model import ScaleoutModel, write_container

SEED_ID = "seed-model"
SEED_PARAMS = [np.arange(4, dtype=np.float32), np.ones((2, 3), dtype=np.float64)]


@dataclass
class Harness:
    combiner: CombinerThread
    repository: LocalRepository
    events: list[dict[str, Any]]
    port: int
    channel: grpc.Channel

    @property
    def control(self) -> pb_grpc.ControlStub:
        return pb_grpc.ControlStub(self.channel)

    def submit(self, client_id: str, task_type: str = "Custom_ping", session_id: str = "s1",
               data: str = "{}") -> str:
        """Queue a task directly on the combiner's loop (precise timing for poll tests)."""
        cid = str(uuid.uuid4())

        async def go() -> None:
            self.combiner.server.clients.submit(Task(client_id=client_id, correlation_id=cid, type=task_type,
                                                     session_id=session_id, data=data))

        self.combiner.call(go(), timeout=5)
        return cid

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in list(self.events) if e.get("kind") == kind]

    def load_model(self, model_id: str) -> list[np.ndarray]:
        with self.repository.open("models", model_id) as fh:
            return ScaleoutModel.from_bytes(fh.read(), model_id).get_model_params(get_helper("numpyhelper"))


def store_seed(repository: LocalRepository, model_id: str = SEED_ID, params: list[np.ndarray] | None = None) -> None:
    helper = get_helper("numpyhelper")
    raw = io.BytesIO()
    helper.save(params if params is not None else SEED_PARAMS, raw)
    raw.seek(0)
    out = io.BytesIO()
    write_container(out, model_id, raw, helper_type="numpyhelper")
    out.seek(0)
    repository.put("models", model_id, out)


@contextmanager
def running_harness(tmp_path: Path, **settings_overrides: Any) -> Iterator[Harness]:
    """A combiner on 127.0.0.1 (port 0) with a seeded LocalRepository and an in-memory event feed."""
    settings = ServerSettings(host="127.0.0.1", combiner_port=0, data_dir=tmp_path / "data", combiner_name="t",
                              client_offline_after=30.0, **settings_overrides)
    repository = LocalRepository(tmp_path / "repo")
    store_seed(repository)
    events: list[dict[str, Any]] = []
    link = CallbackLink(events.extend, batch_interval=0.05)
    combiner = CombinerThread(settings, repository=repository, link=link, update_grace=1.5)
    port = combiner.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Harness(combiner, repository, events, port, channel)
    finally:
        channel.close()
        combiner.stop()


@dataclass
class SimClient:
    """A scripted edge client. `behaviour` decides what a training task does:
    "train" (update = global + constant), "silent" (never answers), "done-first" (reports COMPLETED,
    then sends the update `update_delay` seconds later), "no-update" (COMPLETED without an update)."""

    port: int
    client_id: str
    name: str = ""
    constant: float = 0.0
    num_examples: float = 1.0
    behaviour: str = "train"
    update_delay: float = 0.0
    custom: Callable[[dict[str, Any]], Any] | None = None
    held: dict[str, pb.ActivityReport] = field(default_factory=dict)
    interrupted: list[tuple[str, str]] = field(default_factory=list)
    received: list[pb.TaskRequest] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.name or f"client-{self.client_id}"
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.CombinerClientStub(self.channel)
        self.models = pb_grpc.ModelServiceStub(self.channel)
        self.metadata = (("client", self.client_id), ("client-id", self.client_id), ("name", self.name))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._deferred: list[threading.Thread] = []

    # -- wire ------------------------------------------------------------------------------
    def poll(self, timeout: float | None = 2.0, reports: list[pb.ActivityReport] | None = None,
             interval_ms: int = 100) -> list[pb.TaskRequest]:
        sent = list(self.held.values()) if reports is None else reports
        reply = self.stub.PollAndReportAsync(pb.ClientReport(client_id=self.client_id, reports=sent,
                                                             poll_interval_ms=interval_ms),
                                             metadata=self.metadata, timeout=timeout)
        for report in sent:
            if report.done:
                self.held.pop(report.correlation_id, None)
        return list(reply.tasks)

    def download(self, model_id: str) -> tuple[bytes, str | None]:
        call = self.models.Download(pb.ModelRequest(model_id=model_id), metadata=self.metadata)
        data = b"".join(chunk.data for chunk in call)
        trailer = dict(call.trailing_metadata() or ()).get("checksum")
        return data, trailer

    def upload(self, model: ScaleoutModel, checksum: str | None = None) -> pb.ModelResponse:
        md = self.metadata + (("model-id", model.model_id), ("checksum", checksum or model.checksum))
        return self.models.Upload(model.get_filechunk_stream(), metadata=md)

    # -- behaviour -------------------------------------------------------------------------
    def start(self) -> SimClient:
        self.poll(timeout=None)  # make contact before the test queues anything
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._deferred:
            t.join(10)
        self.channel.close()  # ends a poll in progress at once
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                tasks = self.poll(timeout=1.5)
            except (grpc.RpcError, ValueError) as exc:  # ValueError: channel closed
                if self._stop.is_set():
                    return
                self.errors.append(exc)
                time.sleep(0.1)
                continue
            for task in tasks:
                held = self.held.get(task.correlation_id)
                if held is not None:
                    if task.status in ("INTERRUPTED", "TIMEOUT") and not held.done:
                        self.interrupted.append((task.correlation_id, task.status))
                        # like the real client: the task stops and is reported once more, as done
                        self.held[task.correlation_id] = pb.ActivityReport(
                            node_id=self.client_id, correlation_id=task.correlation_id, status="INTERRUPTED",
                            done=True, response=json.dumps({"msg": "Aborted by server"}))
                    continue
                self.received.append(task)
                try:
                    self._run(task)
                except Exception as exc:  # surfaced by the tests through `errors`
                    self.errors.append(exc)

    def _report(self, task: pb.TaskRequest, status: str, done: bool, response: Any = None) -> None:
        self.held[task.correlation_id] = pb.ActivityReport(
            node_id=self.client_id, correlation_id=task.correlation_id, status=status, done=done,
            response=json.dumps(response) if response else "")

    def _run(self, task: pb.TaskRequest) -> None:
        if task.type == "Scaleout_ModelUpdate":
            if self.behaviour == "silent":
                self._report(task, "RUNNING", False)
                return
            if self.behaviour == "no-update":
                self._report(task, "COMPLETED", True)
                return
            update = self._train(task)
            if self.behaviour == "done-first":
                self._report(task, "COMPLETED", True)
                t = threading.Thread(target=self._send_later, args=(task, update), daemon=True)
                self._deferred.append(t)
                t.start()
                return
            self._send_update(task, update)
            self._report(task, "COMPLETED", True)
        elif task.type.startswith("Custom_"):
            params = json.loads(task.data or "{}").get("parameters", {})
            result = self.custom(params) if self.custom else {}
            self._report(task, "COMPLETED", True, result)
        else:
            self._report(task, "FAILED", True, {"error": f"Invalid task type: {task.type}"})

    def _train(self, task: pb.TaskRequest) -> ScaleoutModel:
        data, trailer = self.download(task.model_id)
        assert trailer == hashlib.sha256(data).hexdigest()
        json.loads(task.data)  # must be valid JSON
        helper = get_helper("numpyhelper")
        params = ScaleoutModel.from_bytes(data, task.model_id).get_model_params(helper)
        new = [p + np.asarray(self.constant, dtype=p.dtype) for p in params]
        model = ScaleoutModel.from_model_params(new, helper, model_id=str(uuid.uuid4()))
        self.upload(model)
        return model

    def _send_update(self, task: pb.TaskRequest, model: ScaleoutModel) -> None:
        meta = {"training_metadata": {"num_examples": self.num_examples}, "config": task.data}
        self.stub.SendModelUpdate(pb.ModelUpdate(
            client_id=self.client_id, model_id=task.model_id, model_update_id=model.model_id,
            correlation_id=task.correlation_id, round_id=task.round_id, session_id=task.session_id,
            meta=json.dumps(meta)), metadata=self.metadata)

    def _send_later(self, task: pb.TaskRequest, model: ScaleoutModel) -> None:
        time.sleep(self.update_delay)
        try:
            self._send_update(task, model)
        except grpc.RpcError as exc:  # e.g. NOT_FOUND for a round that ended meanwhile: the tests read `errors`
            self.errors.append(exc)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
