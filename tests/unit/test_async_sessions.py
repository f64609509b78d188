"""Buffered asynchronous sessions (FedBuff): the controller driving a real combiner (in a thread) and
simulated clients of different speeds, with a real SQLite store and a local repository."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scaleout_server.controller import async_sessions, models
from scaleout_server.controller.fedbuff import BufferedUpdate, buffered_step
from scaleout_server.repository.local import LocalRepository
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.model import ScaleoutModel
from scaleoututil.protocol import RoundStatus, SessionStatus
from tests.unit.test_combiner_support import SimClient, wait_until
from tests.unit.test_controller_fakes import HELPER, seed_bytes
from tests.unit.test_controller_with_combiner import Deployment as BaseDeployment
from tests.unit.test_controller_with_combiner import running_deployment

pytestmark = pytest.mark.timeout(60)


@dataclass
class TimedClient(SimClient):
    """A simulated client whose training takes `seconds` (or fails at once, with `fail`)."""

    seconds: float = 0.0
    fail: bool = False

    def _run(self, task: pb.TaskRequest) -> None:
        if self.fail and task.type == "Scaleout_ModelUpdate":
            self._report(task, "FAILED", True, {"error": "deliberate failure"})
            return
        super()._run(task)

    def _train(self, task: pb.TaskRequest) -> ScaleoutModel:
        time.sleep(self.seconds)
        return super()._train(task)


class Deployment(BaseDeployment):
    def seed(self, params: list[np.ndarray] | None = None) -> str:
        params = params if params is not None else [np.zeros(3, dtype=np.float32), np.ones(2)]
        return self.controller.add_model(io.BytesIO(seed_bytes(params)), HELPER).model_id

    def start(self, rounds: int, **config: Any) -> str:
        session = self.controller.create_session("async", {"mode": "async", "rounds": rounds, "round_timeout": 10,
                                                           "validate": False, **config}, None)
        self.controller.start_session(session.session_id)
        return session.session_id

    def run(self, rounds: int, **config: Any) -> r.SessionRecord:
        session_id = self.start(rounds, **config)
        assert self.controller.wait_for_session(40), "the session did not end"
        return self.store.sessions.require(session_id)

    def rounds(self, session_id: str) -> list[r.RoundRecord]:
        return self.store.rounds.list(ListQuery(filters={"session_id": session_id}, sort_key="round_number",
                                                descending=False))[1]

    def params(self, model_id: str) -> list[np.ndarray]:
        return models.load_params(self.repository, model_id, HELPER)

    def stored_models(self) -> set[str]:
        folder = self.repository.root / "models"
        return {p.name for p in folder.iterdir() if not p.name.startswith(".")} if folder.exists() else set()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    made: list[SimClient] = []
    with running_deployment(tmp_path, Deployment, update_grace=0.3) as dep:
        dep.clients = made  # type: ignore[attr-defined]
        try:
            yield dep
        finally:
            for client in made:
                client.stop()


def client(dep: Deployment, client_id: str, **kwargs: Any) -> TimedClient:
    made = TimedClient(dep.port, client_id, **kwargs)
    dep.clients.append(made)  # type: ignore[attr-defined]
    return made.start()


def reference_step(dep: Deployment, previous: list[np.ndarray], contributions: list[dict[str, Any]],
                   exponent: float) -> list[np.ndarray]:
    """FedBuff recomputed from the stored updates and their base models, straight in NumPy."""
    total = sum(c["num_examples"] for c in contributions)
    out = [p.astype(np.float64) for p in previous]
    for c in contributions:
        update, base = dep.params(c["stored_update"]), dep.params(c["base_model_id"])
        weight = c["num_examples"] / (1 + c["staleness"]) ** exponent
        for i in range(len(out)):
            out[i] += weight * (update[i].astype(np.float64) - base[i]) / total
    return [o.astype(p.dtype) for o, p in zip(out, previous, strict=True)]


def test_fast_clients_contribute_more_and_every_version_is_the_staleness_weighted_step(
        deployment: Deployment) -> None:
    dep = deployment
    seed = dep.seed()
    client(dep, "fast", constant=1.0, num_examples=1, seconds=0.15)
    client(dep, "slow", constant=4.0, num_examples=3, seconds=0.5)
    session = dep.run(4, buffer_size=2, clients_required=2, delete_models_storage=False, staleness_exponent=0.5)

    assert session.status == SessionStatus.FINISHED, session.error
    rounds = dep.rounds(session.session_id)
    assert len(rounds) == 4 and all(x.status == RoundStatus.FINISHED for x in rounds)
    contributions = [c for x in rounds for c in x.round_data["contributions"]]
    by_client = {name: sum(1 for c in contributions if c["client_id"] == name) for name in ("fast", "slow")}
    assert by_client["fast"] > by_client["slow"] >= 1, by_client
    assert any(c["staleness"] > 0 for c in contributions)  # the slow client's updates arrive stale

    previous, parent = dep.params(seed), seed
    for x in rounds:
        assert x.round_data["mode"] == "async" and len(x.round_data["contributions"]) == 2
        assert x.model_id == parent and dep.store.models.require(x.new_model_id).parent_model == parent
        expected = reference_step(dep, previous, x.round_data["contributions"], 0.5)
        got = dep.params(x.new_model_id)
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-6)
            assert g.dtype == e.dtype
        previous, parent = got, x.new_model_id
    assert session.session_config["model_id"] == rounds[-1].new_model_id
    assert dep.store.updates.count({"session_id": session.session_id}) >= 8


def test_updates_are_removed_after_aggregation_and_leftovers_at_the_end(deployment: Deployment) -> None:
    dep = deployment
    dep.seed()
    client(dep, "a", constant=1.0, seconds=0.05)
    client(dep, "b", constant=2.0, seconds=0.4)
    session = dep.run(2, buffer_size=2, clients_required=2)

    assert session.status == SessionStatus.FINISHED, session.error
    committed = {m.model_id for m in dep.store.models.list()[1]}
    assert wait_until(lambda: dep.stored_models() == committed, 5), dep.stored_models() - committed
    assert len(committed) == 3  # the seed and two versions


def test_a_client_whose_tasks_keep_failing_is_left_out(deployment: Deployment,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(async_sessions, "RETRY_PAUSE", 0.1)
    dep = deployment
    dep.seed()
    client(dep, "good", constant=1.0, seconds=0.1)
    client(dep, "bad", fail=True)
    session = dep.run(5, buffer_size=2, clients_required=2)

    assert session.status == SessionStatus.FINISHED, session.error
    rounds = dep.rounds(session.session_id)
    assert {c["client_id"] for x in rounds for c in x.round_data["contributions"]} == {"good"}
    failures = [f for x in rounds for f in x.round_data["failures"]]
    assert "client-bad: task FAILED: deliberate failure; retrying" in failures
    assert "client-bad: task FAILED: deliberate failure; left out after 3 failed tasks in a row" in failures


def test_stopping_an_async_session_ends_it_stopped_and_leaves_no_update_behind(deployment: Deployment) -> None:
    dep = deployment
    dep.seed()
    client(dep, "a", constant=1.0, seconds=0.1)
    client(dep, "b", constant=2.0, seconds=0.1)
    session_id = dep.start(1000, buffer_size=2, clients_required=2)
    assert wait_until(lambda: len(dep.rounds(session_id)) >= 3, 20)

    stopped = dep.controller.stop_session(session_id)
    assert stopped.status == SessionStatus.STOPPED
    rounds = dep.rounds(session_id)
    assert rounds[-1].status == RoundStatus.STOPPED
    assert all(x.status == RoundStatus.FINISHED for x in rounds[:-1])
    committed = {m.model_id for m in dep.store.models.list()[1]}
    assert wait_until(lambda: dep.stored_models() == committed, 5), dep.stored_models() - committed


def test_validation_of_the_final_model_when_the_session_validates(deployment: Deployment) -> None:
    dep = deployment
    dep.seed()
    client(dep, "a", constant=1.0)
    session = dep.run(1, buffer_size=1, validate=True)

    assert session.status == SessionStatus.FINISHED, session.error
    (round_,) = dep.rounds(session.session_id)
    assert round_.status == RoundStatus.FINISHED and round_.round_data["validation"]["clients"] == 1


def test_buffered_step_matches_a_numpy_reference(tmp_path: Path) -> None:
    repository = LocalRepository(tmp_path)
    rng = np.random.default_rng(7)
    shapes = [(4, 3), (5,)]
    current = [rng.normal(size=s).astype(np.float32) for s in shapes]
    bases = [[rng.normal(size=s).astype(np.float32) for s in shapes] for _ in range(2)]
    updates = [[b + rng.normal(size=b.shape).astype(np.float32) for b in base] for base in bases]
    ids = {name: models.save_params(repository, params, HELPER).model_id
           for name, params in {"current": current, "b0": bases[0], "b1": bases[1], "u0": updates[0],
                                "u1": updates[1]}.items()}
    items = [BufferedUpdate(ids["u0"], ids["b0"], 10, 0), BufferedUpdate(ids["u1"], ids["b1"], 30, 3)]

    stored = buffered_step(repository, HELPER, ids["current"], items, staleness_exponent=0.5, work_dir=tmp_path)

    got = models.load_params(repository, stored.model_id, HELPER)
    weights = [10 / 1.0, 30 / 2.0]  # (1 + 3) ** 0.5 == 2
    for i in range(len(shapes)):
        step = sum(w * (u[i].astype(np.float64) - b[i]) for w, u, b in zip(weights, updates, bases, strict=True)) / 40
        np.testing.assert_allclose(got[i], (current[i] + step).astype(np.float32), rtol=1e-6)
        assert got[i].dtype == np.float32
