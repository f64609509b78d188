"""The controller driving a real combiner (in a thread) with simulated edge clients: the seams
between session runner, Control service, event feed and store."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from scaleout_server.combiner.controller_link import CallbackLink
from scaleout_server.combiner.server import CombinerThread
from scaleout_server.controller import models
from scaleout_server.controller.core import Controller
from scaleout_server.repository.local import LocalRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.store.base import ListQuery, Store
from scaleout_server.store.factory import make_store
from scaleoututil.protocol import RoundStatus, SessionStatus
from tests.unit.test_combiner_support import SimClient, wait_until
from tests.unit.test_controller_fakes import HELPER, seed_bytes


@dataclass
class Deployment:
    controller: Controller
    store: Store
    repository: LocalRepository
    port: int

    def client(self, client_id: str, **kwargs: Any) -> SimClient:
        return SimClient(self.port, client_id, **kwargs)


D = TypeVar("D", bound=Deployment)


@contextmanager
def running_deployment(tmp_path: Path, kind: type[D] = Deployment, update_grace: float = 0.5,  # type: ignore[assignment]
                       **settings: Any) -> Iterator[D]:
    """A started controller (SQLite, local folder) with one real combiner on 127.0.0.1 registered with
    it, both in this process; the combiner's events go straight to the controller."""
    settings = {"client_offline_after": 30.0, **settings}
    config = ServerSettings(host="127.0.0.1", combiner_port=0, data_dir=tmp_path, combiner_name="c1", **settings)
    store = make_store(f"sqlite:///{tmp_path / 'store.db'}")
    repository = LocalRepository(tmp_path / "repository")
    controller = Controller(config, store, repository)
    controller.start()
    registered: dict[str, str] = {}
    link = CallbackLink(lambda events: controller.ingest_events(registered["id"], events), batch_interval=0.05)
    combiner = CombinerThread(config, repository=repository, link=link, update_grace=update_grace)
    port = combiner.start()
    registered["id"] = controller.register_combiner("c1", "127.0.0.1", port)[0].combiner_id
    try:
        yield kind(controller, store, repository, port)
    finally:
        controller.close()
        combiner.stop()
        store.close()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with running_deployment(tmp_path) as dep:
        yield dep


def test_two_rounds_with_real_combiner_and_clients(deployment: Deployment) -> None:
    d = deployment
    seed = d.controller.add_model(io.BytesIO(seed_bytes([np.zeros(3)])), HELPER).model_id
    clients = [d.client("a", constant=1.0, num_examples=1).start(), d.client("b", constant=3.0, num_examples=3).start()]
    try:
        session = d.controller.create_session("s", {"rounds": 2, "round_timeout": 10, "clients_required": 2}, None)
        d.controller.start_session(session.session_id)
        assert d.controller.wait_for_session(30)
        stored = d.store.sessions.require(session.session_id)
        assert stored.status == SessionStatus.FINISHED, stored.error
        latest = stored.session_config["model_id"]
        assert len(d.store.models.ancestors(latest)) == 3
        params = models.load_params(d.repository, latest, HELPER)
        assert np.allclose(params[0], 2 * (1 * 1.0 + 3 * 3.0) / 4)  # two rounds of the weighted mean step
        rounds = d.store.rounds.list(ListQuery(filters={"session_id": session.session_id}))[1]
        assert sorted(x.status for x in rounds) == [RoundStatus.FINISHED] * 2
        assert d.store.updates.count({"session_id": session.session_id}) == 4
        assert seed in {x.model_id for x in rounds}
    finally:
        for c in clients:
            c.stop()


def test_stop_interrupts_training_clients_quickly(deployment: Deployment) -> None:
    d = deployment
    d.controller.add_model(io.BytesIO(seed_bytes([np.zeros(3)])), HELPER)
    client = d.client("a", behaviour="silent").start()
    try:
        session = d.controller.create_session("s", {"rounds": 1, "round_timeout": 60}, None)
        d.controller.start_session(session.session_id)
        assert wait_until(lambda: bool(client.received), 10)
        stopped = d.controller.stop_session()
        assert stopped.status == SessionStatus.STOPPED
        assert wait_until(lambda: bool(client.interrupted), 5)
    finally:
        client.stop()


def test_command_reaches_a_real_client(deployment: Deployment) -> None:
    d = deployment
    client = d.client("a", custom=lambda params: {"pong": params}).start()
    try:
        record = d.controller.run_command("ping", {"x": 1}, None, timeout=10, synchronous=True)
        (result,) = record.results
        assert result["client_id"] == "a" and result["status"] == "COMPLETED"
        assert result["response"] == {"pong": {"x": 1}}
    finally:
        client.stop()
