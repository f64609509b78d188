"""Sessions and rounds end to end through real gRPC fake combiners, a real SQLite store and a local repository."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from scaleout_server.controller import models
from scaleout_server.errors import Conflict, InvalidInput, NotFoundError
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery
from scaleoututil.protocol import RoundStatus, SessionStatus
from tests.unit.test_controller_fakes import HELPER, Env, environment, no_update, wait_for_abort

TIMINGS = ("time_wait_clients", "time_training", "time_reduce", "time_commit", "time_validation", "duration")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with environment(tmp_path) as e:
        yield e


def rounds_of(env: Env, session_id: str) -> list[r.RoundRecord]:
    return env.store.rounds.list(ListQuery(filters={"session_id": session_id}, sort_key="round_number",
                                           descending=False))[1]


def run(env: Env, config: dict, rounds: int | None = None, timeout: float = 20) -> r.SessionRecord:
    session = env.controller.create_session("s", config, None)
    env.controller.start_session(session.session_id, rounds=rounds)
    assert env.controller.wait_for_session(timeout), "session did not end in time"
    return env.store.sessions.require(session.session_id)


def test_two_round_session_finishes_with_a_model_trail_and_timed_rounds(env: Env) -> None:
    fake = env.combiner("c1", "a", "b")
    seed = env.seed()
    session = run(env, {"rounds": 2, "round_timeout": 10})

    assert session.status == SessionStatus.FINISHED, session.error
    assert session.started_at is not None and session.finished_at is not None
    latest = session.session_config["model_id"]
    trail = env.store.models.ancestors(latest)
    assert [m.model_id for m in trail][-1] == seed
    assert len(trail) == 3
    assert all(m.session_id == session.session_id for m in trail[:2])
    params = models.load_params(env.repository, latest, HELPER)
    assert np.allclose(params[0], 2.0) and np.allclose(params[1], 3.0)

    rounds = rounds_of(env, session.session_id)
    assert [x.round_number for x in rounds] == [1, 2]
    assert all(x.status == RoundStatus.FINISHED for x in rounds)
    assert rounds[0].model_id == seed and rounds[1].model_id == rounds[0].new_model_id
    for x in rounds:
        assert set(TIMINGS) <= set(x.round_data), x.round_data
        assert x.round_config["round_timeout"] == 10 and x.round_config["aggregator"] == "fedavg"
        (entry,) = x.combiners
        assert entry["name"] == "c1" and entry["updates_received"] == 2 and entry["error"] is None
    assert env.store.updates.count({"round_id": rounds[0].round_id}) == 2
    update = env.store.updates.list(ListQuery(filters={"round_id": rounds[0].round_id}))[1][0]
    assert update.meta == {"training_metadata": {"num_examples": 1}} and update.model_id == seed
    # RunRound carried the session's settings; every round was validated on the new model
    spec = fake.round_specs[0]
    assert sorted(spec.client_ids) == ["a", "b"] and spec.round_timeout == 10 and spec.aggregator == "fedavg"
    assert [t.type for t in fake.task_specs] == ["Scaleout_Validation"] * 2
    assert [t.model_id for t in fake.task_specs] == [x.new_model_id for x in rounds]


def test_reduce_across_two_combiners_weights_by_num_examples(env: Env) -> None:
    env.combiner("c1", "a", delta=1.0, num_examples=10)
    env.combiner("c2", "b", delta=4.0, num_examples=30)
    env.seed()
    session = run(env, {"rounds": 1, "validate": False})

    assert session.status == SessionStatus.FINISHED, session.error
    (round_,) = rounds_of(env, session.session_id)
    params = models.load_params(env.repository, round_.new_model_id, HELPER)
    expected = (10 * 1.0 + 30 * 4.0) / 40  # seed zeros + delta, weighted
    assert np.allclose(params[0], expected) and np.allclose(params[1], 1 + expected)
    partials = [c["model_id"] for c in round_.combiners]
    assert len(partials) == 2 and round_.new_model_id not in partials
    assert not any(env.repository.exists("models", p) for p in partials)
    model = env.store.models.require(round_.new_model_id)
    assert model.parent_model == round_.model_id and model.round_id == round_.round_id
    assert model.size == env.repository.size("models", model.model_id) and model.checksum


def test_stop_session_ends_it_stopped_quickly(env: Env) -> None:
    fake = env.combiner("c1", "a", script=wait_for_abort)
    env.seed()
    session = env.controller.create_session("s", {"rounds": 3, "round_timeout": 60}, None)
    env.controller.start_session(session.session_id)
    deadline = time.monotonic() + 5
    while not fake.round_specs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.round_specs, "the round never reached the combiner"

    t = time.monotonic()
    stopped = env.controller.stop_session(session.session_id)
    assert time.monotonic() - t < 5
    assert stopped.status == SessionStatus.STOPPED
    assert fake.aborts == [session.session_id]
    (round_,) = rounds_of(env, session.session_id)
    assert round_.status == RoundStatus.STOPPED
    assert env.controller.status() == {"state": "idle", "session_id": None}
    with pytest.raises(Conflict, match="not running"):
        env.controller.stop_session(session.session_id)


def test_session_fails_when_too_few_clients_connect(env: Env) -> None:
    env.combiner("c1", "a")
    env.seed()
    session = run(env, {"rounds": 2, "round_timeout": 1, "clients_required": 2})
    assert session.status == SessionStatus.FAILED
    assert session.error.startswith("only 1 of the 2 required clients connected within round_timeout")
    (round_,) = rounds_of(env, session.session_id)
    assert round_.status == RoundStatus.FAILED and round_.error == session.error


def test_busy_clients_do_not_count_as_available(env: Env) -> None:
    fake = env.combiner("c1", "a")
    fake.add_clients("b", busy=True)
    env.seed()
    session = run(env, {"rounds": 1, "round_timeout": 0.6, "clients_required": 2})
    assert session.status == SessionStatus.FAILED and "only 1 of the 2" in session.error


def test_round_fails_when_no_combiner_returns_a_model(env: Env) -> None:
    env.combiner("c1", "a", script=no_update)
    seed = env.seed()
    session = run(env, {"rounds": 1, "round_timeout": 3})
    assert session.status == SessionStatus.FAILED
    assert session.error.startswith("no client returned a model update within round_timeout (3s)")
    assert session.session_config["model_id"] == seed
    (round_,) = rounds_of(env, session.session_id)
    assert round_.status == RoundStatus.FAILED and round_.combiners[0]["error"] == "no update arrived"
    assert round_.combiners[0]["tasks"] == [
        {"client_id": "a", "client_name": "name-a", "status": "FAILED", "response": {"error": "boom"}}]


def test_a_failing_combiner_is_recorded_and_the_round_carries_on(env: Env) -> None:
    env.combiner("bad", "a", fail_with=grpc.StatusCode.INTERNAL)
    env.combiner("good", "b", delta=2.0)
    env.seed()
    session = run(env, {"rounds": 1, "validate": False})
    assert session.status == SessionStatus.FINISHED, session.error
    (round_,) = rounds_of(env, session.session_id)
    entries = {c["name"]: c for c in round_.combiners}
    assert "bad is broken" in entries["bad"]["error"] and entries["good"]["error"] is None
    params = models.load_params(env.repository, round_.new_model_id, HELPER)
    assert np.allclose(params[0], 2.0)
    assert round_.new_model_id == entries["good"]["model_id"]  # one result: adopted as is


def test_only_one_session_runs_and_a_finished_one_continues(env: Env) -> None:
    fake = env.combiner("c1", "a", script=wait_for_abort)
    env.seed()
    first = env.controller.create_session("one", {"rounds": 1, "round_timeout": 30}, None)
    second = env.controller.create_session("two", {"rounds": 1}, None)
    env.controller.start_session(first.session_id)
    assert env.controller.status() == {"state": "running", "session_id": first.session_id}
    with pytest.raises(Conflict, match=f"session {first.session_id} is running; stop it first"):
        env.controller.start_session(second.session_id)
    env.controller.stop_session()

    from tests.unit.test_controller_fakes import train_by_adding
    fake.script = train_by_adding
    env.controller.start_session(first.session_id, rounds=2, round_timeout=5)
    assert env.controller.wait_for_session(20)
    session = env.store.sessions.require(first.session_id)
    assert session.status == SessionStatus.FINISHED, session.error
    assert [x.round_number for x in rounds_of(env, first.session_id)] == [1, 2, 3]
    assert [x.status for x in rounds_of(env, first.session_id)] == ["Stopped", "Finished", "Finished"]


def test_a_session_recorded_finished_can_be_continued_while_its_thread_winds_down(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.combiner("c1", "a")
    env.seed()
    session = env.controller.create_session("s", {"rounds": 1, "round_timeout": 5}, None)
    release = threading.Event()
    exited = env.controller._runner_exited

    def slow_exit(runner: Any) -> None:  # the thread lingers after the session is recorded Finished
        release.wait(10)
        exited(runner)

    monkeypatch.setattr(env.controller, "_runner_exited", slow_exit)
    env.controller.start_session(session.session_id)
    deadline = time.monotonic() + 10
    while env.store.sessions.require(session.session_id).status != SessionStatus.FINISHED:
        assert time.monotonic() < deadline, "first run did not finish"
        time.sleep(0.02)
    assert env.controller.status() == {"state": "idle", "session_id": None}
    try:
        env.controller.start_session(session.session_id, rounds=1)  # was a Conflict: "is running"
    finally:
        release.set()
    assert env.controller.wait_for_session(10)
    assert [x.status for x in rounds_of(env, session.session_id)] == ["Finished", "Finished"]


def test_start_and_stop_reject_bad_requests(env: Env) -> None:
    env.seed()
    session = env.controller.create_session("s", {}, None)
    with pytest.raises(NotFoundError):
        env.controller.start_session("nope")
    with pytest.raises(InvalidInput, match="rounds must be an integer >= 1"):
        env.controller.start_session(session.session_id, rounds=0)
    with pytest.raises(InvalidInput, match="round_timeout must be"):
        env.controller.start_session(session.session_id, round_timeout=-1)
    with pytest.raises(Conflict, match="no session is running"):
        env.controller.stop_session()
    with pytest.raises(NotFoundError):
        env.controller.stop_session("nope")


def test_restart_marks_a_running_session_failed(tmp_path: Path) -> None:
    with environment(tmp_path, start=False) as env:
        env.seed()
        # a session whose model is gone cannot be resumed (recovery.py resumes the others): it is failed
        session = env.store.sessions.add(r.SessionRecord(session_id="s1", name="s", status=SessionStatus.RUNNING,
                                                         session_config={"model_id": "gone"}))
        env.store.rounds.add(r.RoundRecord(round_id="r1", session_id=session.session_id, round_number=1,
                                           status=RoundStatus.RUNNING))
        env.controller.start()
        stored = env.store.sessions.require("s1")
        assert stored.status == SessionStatus.FAILED
        assert stored.error == "the controller restarted during this session"
        assert env.store.rounds.require("r1").status == RoundStatus.FAILED
        assert env.controller.status()["state"] == "idle"


def test_close_stops_a_running_session(tmp_path: Path) -> None:
    env = Env(tmp_path)
    try:
        env.controller.start()
        env.combiner("c1", "a", script=wait_for_abort)
        env.seed()
        session = env.controller.create_session("s", {"rounds": 1, "round_timeout": 30}, None)
        env.controller.start_session(session.session_id)
        time.sleep(0.3)
        t = time.monotonic()
        env.controller.close()
        assert time.monotonic() - t < 3
        stored = env.store.sessions.require(session.session_id)
        assert stored.status == SessionStatus.STOPPED and "shut down" in stored.error
    finally:
        env.close()



def test_requested_clients_are_sampled_across_combiners(env: Env) -> None:
    one = env.combiner("one", "a", "b", "c")
    two = env.combiner("two", "d", "e")
    env.seed()
    session = run(env, {"rounds": 1, "requested_clients": 3, "buffer_size": 2, "validate": False})
    assert session.status == SessionStatus.FINISHED, session.error
    specs = one.round_specs + two.round_specs
    chosen = [cid for spec in specs for cid in spec.client_ids]
    assert len(chosen) == 3 and len(set(chosen)) == 3
    assert all(spec.buffer_size == min(2, len(spec.client_ids)) for spec in specs)
    (round_,) = rounds_of(env, session.session_id)
    assert round_.round_data["clients_selected"] == 3


def test_stopping_a_session_run_by_another_process_aborts_it_on_the_combiners(env: Env) -> None:
    fake = env.combiner("c1", "a")
    seed = env.seed()
    env.store.sessions.add(r.SessionRecord(session_id="elsewhere", name="s", status=SessionStatus.RUNNING,
                                           session_config={"model_id": seed}))
    assert env.controller.status() == {"state": "running", "session_id": "elsewhere"}
    stopped = env.controller.stop_session()
    assert stopped.status == SessionStatus.STOPPED and fake.aborts == ["elsewhere"]
    assert env.controller.status()["state"] == "idle"
