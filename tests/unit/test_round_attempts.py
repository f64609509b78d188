"""A round whose combiner is lost and comes back is run again while its deadline allows, and every attempt
is recorded with its cause (real gRPC fake combiners, a real SQLite store and local repository)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from scaleout_server.controller import models, sessions
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.protocol import RoundStatus, SessionStatus
from tests.unit.test_controller_fakes import HELPER, Env, FakeCombiner, environment, serve

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with environment(tmp_path) as e:
        yield e


class Flapping(FakeCombiner):
    """Loses its RunRound call `losses` times (as a SIGKILLed combiner does) and registers again shortly
    after each loss (as its restart does); `losses=-1`: every time. `comes_back=False`: never registers again."""

    def __init__(self, env: Env, losses: int, comes_back: bool = True) -> None:
        super().__init__("flappy", env.repository, delta=2.0)
        self.env = env
        self.losses = losses
        self.comes_back = comes_back

    def RunRound(self, request: pb.RoundSpec, context: grpc.ServicerContext) -> pb.RoundOutcome:  # noqa: N802
        self.round_specs.append(request)
        if self.losses == 0:
            return self.script(self, request)
        self.losses -= 1
        if self.comes_back:
            threading.Timer(0.3, self.env.controller.register_combiner, ("flappy", "127.0.0.1", self.port)).start()
        context.abort(grpc.StatusCode.UNAVAILABLE, "Socket closed")


def run(env: Env, combiner: Flapping, config: dict, timeout: float = 30) -> tuple[r.SessionRecord, list[r.RoundRecord]]:
    combiner.add_clients("a")
    with serve(combiner):
        env.controller.register_combiner("flappy", "127.0.0.1", combiner.port)
        env.seed()
        session = env.controller.create_session("s", {"validate": False, "clients_required": 1, **config}, None)
        env.controller.start_session(session.session_id)
        assert env.controller.wait_for_session(timeout), "session did not end in time"
    rounds = env.store.rounds.list(ListQuery(filters={"session_id": session.session_id}, sort_key="round_number",
                                             descending=False))[1]
    return env.store.sessions.require(session.session_id), rounds


def test_a_combiner_lost_twice_in_a_round_costs_the_round_two_attempts_not_the_session(env: Env) -> None:
    session, rounds = run(env, Flapping(env, losses=2), {"rounds": 2, "round_timeout": 10})
    assert session.status == SessionStatus.FINISHED, session.error
    first, second = rounds
    assert first.status == RoundStatus.FINISHED
    attempts = first.round_data["attempt_log"]
    assert [a["cause"] for a in attempts] == [sessions.CAUSE_LOST, sessions.CAUSE_LOST, sessions.CAUSE_MODEL]
    assert all("UNAVAILABLE" in a["detail"] and a["lost_combiners"] == ["flappy"] for a in attempts[:2])
    assert first.round_data["attempts"] == 3 and first.round_data["lost_combiners"] == ["flappy", "flappy"]
    assert np.allclose(models.load_params(env.repository, first.new_model_id, HELPER)[0], 2.0)
    assert second.round_data["attempts"] == 1 and second.round_data["attempt_log"][0]["cause"] == "model"


def test_a_combiner_that_keeps_dying_fails_the_round_at_its_deadline_saying_so(env: Env) -> None:
    session, (round_,) = run(env, Flapping(env, losses=-1), {"rounds": 1, "round_timeout": 2})
    assert session.status == SessionStatus.FAILED
    assert round_.status == RoundStatus.FAILED and round_.error == session.error
    assert session.error.startswith("the round's deadline (2 x round_timeout = 4s after it started) left no time "
                                    "for another attempt: attempt 1 (")
    assert "lost combiner: RunRound on combiner flappy failed: UNAVAILABLE" in session.error
    assert "no client returned" not in session.error
    causes = [a["cause"] for a in round_.round_data["attempt_log"]]
    assert len(causes) >= 2 and set(causes) == {sessions.CAUSE_LOST}


def test_a_lost_combiner_that_does_not_come_back_fails_the_round_with_no_clients(env: Env) -> None:
    session, (round_,) = run(env, Flapping(env, losses=-1, comes_back=False), {"rounds": 1, "round_timeout": 2})
    assert session.status == SessionStatus.FAILED
    assert re.fullmatch(
        r"the round lost its combiner\(s\) and could not be run again: attempt 1 \([0-9.]+ s\): lost combiner: "
        + re.escape(round_.round_data["attempt_log"][0]["detail"]) + r"; attempt 2 \([0-9.]+ s\): no clients: only 0 "
        r"of the 1 required clients connected by the round's deadline; no combiner answered", session.error or "")
    assert [a["cause"] for a in round_.round_data["attempt_log"]] == [sessions.CAUSE_LOST, sessions.CAUSE_NO_CLIENTS]
