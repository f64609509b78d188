"""Per-client settings from server functions (`client_settings_for`): computed by the controller's
server-functions process, carried in `RoundSpec.client_settings_by_client`, merged over the shared
settings by the combiner into each client's own training task. Real controller, real combiner (in
threads), simulated clients, SQLite store."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scaleout_server.controller.server_functions import Limits, ServerFunctionsHooks
from scaleout_server.store import records as r
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.protocol import RoundStatus, SessionStatus
from scaleoututil.serverfunctions import ServerFunctionsBase
from scaleoututil.serverfunctions.serverfunctionsbase import provided_functions
from tests.unit.test_combiner_support import SEED_ID, Harness, SimClient
from tests.unit.test_controller_fakes import HELPER
from tests.unit.test_controller_with_combiner import running_deployment
from tests.unit.test_server_functions import (
    MEMORY_MB,
    TIMEOUT,
    Deployment,
    count_exports,
    notes,
    training_settings,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with running_deployment(tmp_path, Deployment, server_functions_timeout=TIMEOUT,
                            server_functions_memory_mb=MEMORY_MB) as dep:
        yield dep


@pytest.fixture
def sims(deployment: Deployment) -> Iterator[dict[str, SimClient]]:
    """Three connected clients: a adds 1, b adds 3 (3 examples), c adds 10."""
    made = {"a": SimClient(deployment.port, "a", constant=1.0, num_examples=1),
            "b": SimClient(deployment.port, "b", constant=3.0, num_examples=3),
            "c": SimClient(deployment.port, "c", constant=10.0, num_examples=1)}
    for client in made.values():
        client.start()
    yield made
    for client in made.values():
        client.stop()


PER_CLIENT = """
class ServerFunctions(ServerFunctionsBase):
    def __init__(self):
        self.round = 0

    def client_settings(self, global_model):
        self.round += 1
        return {"round": self.round, "learning_rate": 0.1, "epochs": 1}

    def client_settings_for(self, client_id, global_model):
        if client_id == "c":
            return {}  # c trains with the shared settings
        return {"epochs": EPOCHS[client_id], "client": client_id, "first": float(global_model[0][0])}
"""


def test_each_client_gets_its_own_settings_merged_over_the_shared_ones(
        deployment: Deployment, sims: dict[str, SimClient], monkeypatch: pytest.MonkeyPatch) -> None:
    exported = count_exports(monkeypatch)
    deployment.seed()
    session = deployment.run(PER_CLIENT.replace("EPOCHS[", "{'a': 2, 'b': 5}["), rounds=2, clients_required=3)

    assert session.status == SessionStatus.FINISHED, session.error
    assert training_settings(sims["a"]) == [
        {"round": 1, "learning_rate": 0.1, "epochs": 2, "client": "a", "first": 0.0},
        # round 2 trains from round 1's FedAvg model: (1*1 + 3*3 + 10*1) / 5 = 4
        {"round": 2, "learning_rate": 0.1, "epochs": 2, "client": "a", "first": 4.0}]
    assert [s["epochs"] for s in training_settings(sims["b"])] == [5, 5]
    assert training_settings(sims["c"]) == [{"round": 1, "learning_rate": 0.1, "epochs": 1},
                                            {"round": 2, "learning_rate": 0.1, "epochs": 1}]
    rounds = deployment.rounds(session.session_id)
    for round_ in rounds:
        assert round_.status == RoundStatus.FINISHED
        assert "errors" not in notes(round_), notes(round_)
        assert notes(round_)["client_settings_for"]["clients"] == 2
        assert notes(round_)["client_settings_for"]["keys"] == ["client", "epochs", "first"]
        assert len(round_.combiners) == 1  # still one RunRound per combiner: the default aggregation is unchanged
    assert exported == [rounds[0].model_id, rounds[1].model_id]  # one export a round serves both functions
    assert np.allclose(deployment.params(rounds[-1].new_model_id)[0], 8.0)


OWN_MU_AND_AGGREGATE = """
class ServerFunctions(ServerFunctionsBase):
    def client_settings_for(self, client_id, global_model):
        return {"mu": 99.0, "epochs": len(client_id) + ord(client_id) - ord("a")}

    def aggregate(self, previous_global, client_updates):
        return [np.array(p) + len(client_updates) for p in previous_global]
"""


def test_own_settings_reach_clients_of_a_custom_aggregate_and_the_aggregator_keeps_its_own_keys(
        deployment: Deployment, sims: dict[str, SimClient]) -> None:
    deployment.seed()
    session = deployment.run(OWN_MU_AND_AGGREGATE, clients_required=3, aggregator="fedprox",
                             aggregator_kwargs={"mu": 0.5})

    assert session.status == SessionStatus.FINISHED, session.error
    # one RunRound per client (the class aggregates): each spec carries only its own client's settings
    for epochs, name in enumerate("abc", start=1):
        assert training_settings(sims[name]) == [{"mu": 0.5, "epochs": epochs}]
    (round_,) = deployment.rounds(session.session_id)
    assert len(round_.combiners) == 3 and "errors" not in notes(round_)
    assert np.allclose(deployment.params(round_.new_model_id)[0], 3.0)


RAISES_FOR_B = """
class ServerFunctions(ServerFunctionsBase):
    def client_settings(self, global_model):
        return {"learning_rate": 0.1}

    def client_settings_for(self, client_id, global_model):
        if client_id == "b":
            raise KeyError(client_id)
        return {"learning_rate": 0.5}
"""

NOT_A_DICT = """
class ServerFunctions(ServerFunctionsBase):
    def client_settings_for(self, client_id, global_model):
        return [client_id] if client_id == "b" else {"fine": True}
"""


@pytest.mark.parametrize(("source", "error"), [
    (RAISES_FOR_B, "client_settings_for: KeyError: 'b' (line 8 of the server functions, in client_settings_for: "
                   "raise KeyError(client_id)); the clients got no settings of their own"),
    (NOT_A_DICT, "client_settings_for: client_settings_for('b') must return a dict, got list; "
                 "the clients got no settings of their own"),
])
def test_when_client_settings_for_fails_every_client_trains_with_the_shared_settings_only(
        deployment: Deployment, sims: dict[str, SimClient], source: str, error: str) -> None:
    deployment.seed()
    session = deployment.run(source, clients_required=3)

    assert session.status == SessionStatus.FINISHED, session.error
    shared = [{"learning_rate": 0.1}] if source == RAISES_FOR_B else [{}]
    assert {name: training_settings(sim) for name, sim in sims.items()} == {name: shared for name in sims}
    (round_,) = deployment.rounds(session.session_id)
    assert round_.status == RoundStatus.FINISHED
    assert notes(round_)["errors"] == [error]


COUNTS_CALLS = """
class ServerFunctions(ServerFunctionsBase):
    def __init__(self):
        self.shared_calls = 0
        self.asked = []

    def client_settings(self, global_model):
        self.shared_calls += 1
        return {"shared_calls": self.shared_calls}

    def client_settings_for(self, client_id, global_model):
        self.asked.append(client_id)
        return {"asked": list(self.asked)}
"""


def test_a_retried_round_asks_only_for_clients_not_asked_yet(deployment: Deployment, tmp_path: Path) -> None:
    model_id = deployment.seed()
    hooks = ServerFunctionsHooks(textwrap.dedent(COUNTS_CALLS), deployment.repository, tmp_path / "sf",
                                 Limits(timeout=10.0, memory_bytes=MEMORY_MB * 2**20))
    record = r.RoundRecord(round_id="r1", session_id="s1", round_number=1, status=RoundStatus.RUNNING,
                           model_id=model_id)
    try:
        assert hooks.client_settings(record, HELPER, ["a"]) == {"shared_calls": 1}
        assert hooks.settings_by_client(record, HELPER, ["a"]) == {"a": {"asked": ["a"]}}
        # the round runs again with b connected too: a keeps its settings, only b is asked
        assert hooks.client_settings(record, HELPER, ["a", "b"]) == {"shared_calls": 1}
        assert hooks.settings_by_client(record, HELPER, ["b", "a"]) == {"b": {"asked": ["a", "b"]},
                                                                         "a": {"asked": ["a"]}}
        assert notes(record)["client_settings_for"]["clients"] == 2
        # the next round asks again
        nxt = r.RoundRecord(round_id="r2", session_id="s1", round_number=2, status=RoundStatus.RUNNING,
                            model_id=model_id)
        assert hooks.settings_by_client(nxt, HELPER, ["a"]) == {"a": {"asked": ["a", "b", "a"]}}
        assert hooks.client_settings(nxt, HELPER) == {"shared_calls": 2}
    finally:
        hooks.close()


def test_the_base_class_gives_no_own_settings_and_counts_an_override_as_provided() -> None:
    assert ServerFunctionsBase().client_settings_for("a", [np.zeros(1)]) == {}

    class OnlyPerClient(ServerFunctionsBase):
        def client_settings_for(self, client_id: str, global_model: list[np.ndarray]) -> dict[str, Any]:
            return {"client": client_id}

    assert provided_functions(OnlyPerClient) == ["client_settings_for"]
    assert provided_functions(ServerFunctionsBase) == []


# -- the combiner's side, driven directly over Control/RunRound ----------------------------------
def round_spec(client_ids: list[str], by_client: str, aggregator: str = "fedavg",
               kwargs: str = "") -> pb.RoundSpec:
    return pb.RoundSpec(session_id="s1", round_id="r1", model_id=SEED_ID, helper_type="numpyhelper",
                        client_ids=client_ids, aggregator=aggregator, aggregator_kwargs=kwargs, round_timeout=10,
                        buffer_size=-1, client_settings=json.dumps({"epochs": 1, "lr": 0.1}), delete_models=True,
                        client_settings_by_client=by_client)


def test_run_round_merges_each_clients_own_settings_over_the_shared_ones(harness: Harness,
                                                                        clients: list[SimClient]) -> None:
    a = SimClient(harness.port, "a", constant=1.0).start()
    b = SimClient(harness.port, "b", constant=3.0).start()
    clients.extend([a, b])
    outcome = harness.control.RunRound(round_spec(["a", "b"], json.dumps({"a": {"epochs": 4}, "zz": {"x": 1}}),
                                                  "fedprox", json.dumps({"mu": 0.2})), timeout=30)

    assert outcome.error == "" and len(outcome.updates) == 2
    assert training_settings(a) == [{"epochs": 4, "lr": 0.1, "mu": 0.2}]
    assert training_settings(b) == [{"epochs": 1, "lr": 0.1, "mu": 0.2}]  # no entry: the shared settings


@pytest.mark.parametrize(("by_client", "error"), [
    ("[1]", "client_settings_by_client must be a JSON object, got list"),
    ('{"a": 3}', "client_settings_by_client must map client ids to JSON objects; 'a' maps to int"),
    ("{", "client_settings_by_client is not valid JSON"),
])
def test_run_round_refuses_per_client_settings_that_are_not_objects(harness: Harness, clients: list[SimClient],
                                                                   by_client: str, error: str) -> None:
    a = SimClient(harness.port, "a", constant=1.0).start()
    clients.append(a)
    outcome = harness.control.RunRound(round_spec(["a"], by_client), timeout=30)

    assert outcome.error.startswith(error) and not outcome.model_id
    assert training_settings(a) == []  # no task was queued
