"""A controller that starts on the store of one that died mid-session resumes the session at the
interrupted round (recovery.py), with a real combiner in a thread and simulated clients."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scaleout_server.combiner.controller_link import CallbackLink
from scaleout_server.combiner.server import CombinerThread
from scaleout_server.controller import models, recovery
from scaleout_server.controller.core import RESTARTED, Controller
from scaleout_server.repository.local import LocalRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery, Store
from scaleout_server.store.factory import make_store
from scaleoututil.protocol import RoundStatus, SessionStatus
from tests.unit.test_combiner_support import SimClient
from tests.unit.test_controller_fakes import HELPER, seed_bytes


@dataclass
class Site:
    settings: ServerSettings
    store: Store
    repository: LocalRepository
    port: int
    holder: dict[str, Any]
    controllers: list[Controller] = field(default_factory=list)

    def controller(self) -> Controller:
        """A new controller process on the same store and repository (the combiner feeds the newest)."""
        controller = Controller(self.settings, self.store, self.repository)
        self.holder["controller"] = controller
        controller.start()
        self.holder["id"] = controller.register_combiner("c1", "127.0.0.1", self.port)[0].combiner_id
        self.controllers.append(controller)
        return controller


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    settings = ServerSettings(host="127.0.0.1", combiner_port=0, data_dir=tmp_path, combiner_name="c1",
                              client_offline_after=30.0)
    store = make_store(f"sqlite:///{tmp_path / 'store.db'}")
    repository = LocalRepository(tmp_path / "repository")
    holder: dict[str, Any] = {}
    link = CallbackLink(lambda events: holder["controller"].ingest_events(holder["id"], events), batch_interval=0.05)
    combiner = CombinerThread(settings, repository=repository, link=link, update_grace=0.5)
    port = combiner.start()
    s = Site(settings, store, repository, port, holder)
    try:
        yield s
    finally:
        for c in s.controllers:
            c.close()
        combiner.stop()
        store.close()


def rounds_of(store: Store, session_id: str) -> list[r.RoundRecord]:
    return store.rounds.list(ListQuery(filters={"session_id": session_id}, sort_key="round_number",
                                       descending=False))[1]


def test_killed_controller_resumes_the_session_at_the_interrupted_round(site: Site) -> None:
    first = site.controller()
    seed = first.add_model(io.BytesIO(seed_bytes([np.zeros(3)])), HELPER).model_id
    clients = [SimClient(site.port, "a", constant=1.0, num_examples=1).start(),
               SimClient(site.port, "b", constant=3.0, num_examples=3).start()]
    try:
        session = first.create_session("s", {"rounds": 1, "round_timeout": 10, "clients_required": 2,
                                             "validate": False}, None)
        first.start_session(session.session_id)
        assert first.wait_for_session(30)
        # what a controller killed during round 2 of a 3-round session leaves in the store
        stored = site.store.sessions.require(session.session_id)
        stored.status = SessionStatus.RUNNING
        stored.finished_at = None
        stored.session_config = {**stored.session_config, "rounds": 3}
        site.store.sessions.update(stored)
        after_one = stored.session_config["model_id"]
        site.store.rounds.add(r.RoundRecord(round_id=r.new_id(), session_id=session.session_id, round_number=2,
                                            status=RoundStatus.RUNNING, model_id=after_one, started_at=r.utcnow()))

        second = site.controller()
        assert recovery_waits(second)
        ended = site.store.sessions.require(session.session_id)
        assert ended.status == SessionStatus.FINISHED, ended.error
        rounds = rounds_of(site.store, session.session_id)
        assert [(x.round_number, x.status) for x in rounds if x.status == RoundStatus.FINISHED] == [
            (1, RoundStatus.FINISHED), (2, RoundStatus.FINISHED), (3, RoundStatus.FINISHED)]
        assert len(rounds) == 3  # the interrupted record was replaced by its rerun
        # the model trail continues from round 1's model: seed -> 1 -> 2 -> 3, each a weighted-mean step
        latest = ended.session_config["model_id"]
        assert [m.model_id for m in site.store.models.ancestors(latest)][-1] == seed
        assert len(site.store.models.ancestors(latest)) == 4
        np.testing.assert_allclose(models.load_params(site.repository, latest, HELPER)[0], 3 * 2.5)
        rerun = [x for x in rounds if x.round_number == 2 and x.status == RoundStatus.FINISHED][0]
        assert rerun.model_id == after_one
        assert sorted(len(c["update_ids"]) for c in rerun.combiners) == [2]
    finally:
        for c in clients:
            c.stop()


def recovery_waits(controller: Controller, timeout: float = 30.0) -> bool:
    """The resumed runner is started from a background thread: wait for it to appear, then to end."""
    from tests.unit.test_combiner_support import wait_until

    assert wait_until(lambda: controller._runner is not None or controller.status()["state"] == "idle", timeout)
    return controller.wait_for_session(timeout)


def test_a_round_left_validating_is_finished_and_not_run_again(tmp_path: Path) -> None:
    store = make_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        started = r.utcnow()
        session = store.sessions.add(r.SessionRecord(
            session_id=r.new_id(), name="s", status=SessionStatus.RUNNING, started_at=started,
            session_config={"rounds": 2, "model_id": "m1", "helper_type": HELPER}))
        store.models.add(r.ModelRecord(model_id="m1", helper_type=HELPER))
        store.rounds.add(r.RoundRecord(round_id="r1", session_id=session.session_id, round_number=1,
                                       status=RoundStatus.FINISHED, started_at=started, new_model_id="m0"))
        store.rounds.add(r.RoundRecord(round_id="r2", session_id=session.session_id, round_number=2,
                                       status=RoundStatus.VALIDATING, started_at=started, new_model_id="m1"))

        plan = recovery.plan_resume(store)

        assert plan is not None and plan.rounds == 0 and plan.rerun == []
        validated = store.rounds.require("r2")
        assert validated.status == RoundStatus.FINISHED
        assert validated.round_data["validation_error"] == recovery.VALIDATION_INTERRUPTED
    finally:
        store.close()


def test_an_asynchronous_session_left_running_is_failed_as_before(site: Site) -> None:
    session = site.store.sessions.add(r.SessionRecord(
        session_id=r.new_id(), name="s", status=SessionStatus.RUNNING, started_at=r.utcnow(),
        session_config={"rounds": 2, "model_id": "m1", "helper_type": HELPER, "mode": "async"}))
    site.controller()
    failed = site.store.sessions.require(session.session_id)
    assert failed.status == SessionStatus.FAILED and failed.error == RESTARTED
