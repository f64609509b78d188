"""Shared pieces for the controller tests: a real gRPC `Control` server with scripted behaviour
standing in for a combiner, and a controller wired to a real SQLite store and local repository.

(Named test_controller_* so that it sits with the tests it serves; it holds no tests itself.)
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from scaleout_server.controller import models
from scaleout_server.controller.core import Controller
from scaleout_server.repository.local import LocalRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.store.factory import make_store
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
from scaleoututil.helpers.helpers import get_helper

HELPER = "numpyhelper"
RoundScript = Callable[["FakeCombiner", pb.RoundSpec], pb.RoundOutcome]


def seed_bytes(params: list[np.ndarray] | None = None) -> bytes:
    params = params if params is not None else [np.zeros(3), np.ones((2, 2))]
    buf = io.BytesIO()
    get_helper(HELPER).save(params, buf)
    return buf.getvalue()


def train_by_adding(combiner: FakeCombiner, spec: pb.RoundSpec) -> pb.RoundOutcome:
    """Default round: the 'trained' model is the input plus `combiner.delta`, stored in the repository."""
    params = models.load_params(combiner.repository, spec.model_id, spec.helper_type)
    trained = [p + combiner.delta for p in params]
    stored = models.save_params(combiner.repository, trained, spec.helper_type)
    updates = [pb.UpdateInfo(client_id=cid, model_update_id=f"{spec.round_id}-{cid}", correlation_id=f"corr-{cid}",
                             num_examples=combiner.num_examples / len(spec.client_ids),
                             meta=json.dumps({"training_metadata": {"num_examples": 1}}))
               for cid in spec.client_ids]
    return pb.RoundOutcome(model_id=stored.model_id, num_examples=combiner.num_examples, updates=updates,
                           updates_expected=len(spec.client_ids), time_wait=0.01, time_aggregation=0.02)


def wait_for_abort(combiner: FakeCombiner, spec: pb.RoundSpec) -> pb.RoundOutcome:
    """A round whose clients never finish: returns only when the session is aborted."""
    combiner.aborted.wait(spec.round_timeout)
    return pb.RoundOutcome(updates_expected=len(spec.client_ids), aborted=combiner.aborted.is_set())


def no_update(combiner: FakeCombiner, spec: pb.RoundSpec) -> pb.RoundOutcome:
    """Every client's training failed."""
    tasks = [pb.TaskResult(client_id=cid, client_name=f"name-{cid}", status="FAILED",
                           response=json.dumps({"error": "boom"})) for cid in spec.client_ids]
    return pb.RoundOutcome(updates_expected=len(spec.client_ids), error="no update arrived", tasks=tasks)


@dataclass
class FakeCombiner(pb_grpc.ControlServicer):
    name: str
    repository: LocalRepository
    clients: list[pb.ActiveClient] = field(default_factory=list)
    delta: float = 1.0
    num_examples: float = 10.0
    script: RoundScript = train_by_adding
    fail_with: grpc.StatusCode | None = None  # RunRound fails with this status
    round_specs: list[pb.RoundSpec] = field(default_factory=list)
    task_specs: list[pb.TaskBatchSpec] = field(default_factory=list)
    aborts: list[str] = field(default_factory=list)
    aborted: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def add_clients(self, *client_ids: str, busy: bool = False) -> None:
        for cid in client_ids:
            self.clients.append(pb.ActiveClient(client_id=cid, name=f"name-{cid}", busy=busy))

    def RunRound(self, request: pb.RoundSpec, context: grpc.ServicerContext) -> pb.RoundOutcome:  # noqa: N802
        self.round_specs.append(request)
        if self.fail_with is not None:
            context.abort(self.fail_with, f"{self.name} is broken")
        return self.script(self, request)

    def RunTasks(self, request: pb.TaskBatchSpec, context: grpc.ServicerContext) -> pb.TaskBatchOutcome:  # noqa: N802
        self.task_specs.append(request)
        data = json.loads(request.data or "{}")
        return pb.TaskBatchOutcome(results=[
            pb.TaskResult(client_id=cid, client_name=f"name-{cid}", correlation_id=f"c-{cid}", status="COMPLETED",
                          response=json.dumps({"echo": data.get("parameters"), "combiner": self.name}))
            for cid in request.client_ids])

    def AbortSession(self, request: pb.AbortRequest, context: grpc.ServicerContext) -> pb.Response:  # noqa: N802
        self.aborts.append(request.session_id)
        self.aborted.set()
        return pb.Response(response="aborted")

    def ListActiveClients(self, request: pb.ClientListRequest, context: grpc.ServicerContext) -> pb.ClientList:  # noqa: N802
        return pb.ClientList(clients=list(self.clients))


@contextmanager
def serve(combiner: FakeCombiner) -> Iterator[FakeCombiner]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_ControlServicer_to_server(combiner, server)
    combiner.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield combiner
    finally:
        server.stop(grace=0).wait()


class Env:
    """A started controller on a fresh store and repository, plus fake combiners to register."""

    def __init__(self, tmp_path: Path) -> None:
        self.settings = ServerSettings(data_dir=tmp_path)
        self.store = make_store(f"sqlite:///{tmp_path / 'store.db'}")
        self.repository = LocalRepository(tmp_path / "repository")
        self.controller = Controller(self.settings, self.store, self.repository)
        self._servers: list[Any] = []

    def combiner(self, name: str, *client_ids: str, **kwargs: Any) -> FakeCombiner:
        """Serve a fake combiner with these idle clients and register it with the controller."""
        fake = FakeCombiner(name, self.repository, **kwargs)
        fake.add_clients(*client_ids)
        ctx = serve(fake)
        ctx.__enter__()
        self._servers.append(ctx)
        self.controller.register_combiner(name, "127.0.0.1", fake.port)
        return fake

    def seed(self) -> str:
        return self.controller.add_model(io.BytesIO(seed_bytes()), HELPER).model_id

    def close(self) -> None:
        self.controller.close()
        for ctx in reversed(self._servers):
            ctx.__exit__(None, None, None)
        self.store.close()


@contextmanager
def environment(tmp_path: Path, start: bool = True) -> Iterator[Env]:
    env = Env(tmp_path)
    if start:
        env.controller.start()
    try:
        yield env
    finally:
        env.close()
