"""Server functions: a user's ServerFunctions class run by the controller in a child process, against a
real combiner (in a thread) and simulated clients, a real SQLite store and a local repository."""

from __future__ import annotations

import io
import json
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scaleout_server.controller import models, server_functions
from scaleout_server.controller.server_functions import CallFailed, Limits, WorkerProcess
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery
from scaleoututil.protocol import RoundStatus, SessionStatus
from scaleoututil.serverfunctions import RoundType, ServerFunctionsBase
from tests.unit.test_combiner_support import SimClient
from tests.unit.test_controller_fakes import HELPER, seed_bytes
from tests.unit.test_controller_with_combiner import Deployment as BaseDeployment
from tests.unit.test_controller_with_combiner import running_deployment

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 1.0  # seconds per server-function call in these tests
MEMORY_MB = 300


class Deployment(BaseDeployment):

    def seed(self) -> str:
        return self.controller.add_model(io.BytesIO(seed_bytes([np.zeros(3)])), HELPER).model_id

    def run(self, source: str, rounds: int = 1, **config: Any) -> r.SessionRecord:
        session = self.controller.create_session("sf", {"rounds": rounds, "round_timeout": 10, "validate": False,
                                                        "server_functions": textwrap.dedent(source), **config}, None)
        self.controller.start_session(session.session_id)
        assert self.controller.wait_for_session(40), "the session did not end"
        return self.store.sessions.require(session.session_id)

    def rounds(self, session_id: str) -> list[r.RoundRecord]:
        return self.store.rounds.list(ListQuery(filters={"session_id": session_id}, sort_key="round_number",
                                                descending=False))[1]

    def params(self, model_id: str) -> list[np.ndarray]:
        return models.load_params(self.repository, model_id, HELPER)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with running_deployment(tmp_path, Deployment, server_functions_timeout=TIMEOUT,
                            server_functions_memory_mb=MEMORY_MB) as dep:
        yield dep


@pytest.fixture
def clients(deployment: Deployment) -> Iterator[dict[str, SimClient]]:
    """Three connected clients: a adds 1 (1 example), b adds 3 (3 examples), c adds 10 (1 example)."""
    made = {"a": SimClient(deployment.port, "a", constant=1.0, num_examples=1),
            "b": SimClient(deployment.port, "b", constant=3.0, num_examples=3),
            "c": SimClient(deployment.port, "c", constant=10.0, num_examples=1)}
    for client in made.values():
        client.start()
    yield made
    for client in made.values():
        client.stop()


def training_settings(client: SimClient) -> list[dict[str, Any]]:
    """The client_settings of every training task the client received, in order."""
    return [json.loads(t.data)["client_settings"] for t in client.received if t.type == "Scaleout_ModelUpdate"]


def notes(round_: r.RoundRecord) -> dict[str, Any]:
    return round_.round_data["server_functions"]


SELECT_AND_SET = """
class ServerFunctions(ServerFunctionsBase):
    def __init__(self):
        self.round = 0

    def client_selection(self, client_ids, round_type):
        assert round_type == RoundType.TRAINING
        return sorted(cid for cid in client_ids if cid != "c")

    def client_settings(self, global_model):
        self.round += 1
        return {"round": self.round, "learning_rate": 0.1 / self.round, "first": float(global_model[0][0])}
"""


def test_selection_and_settings_reach_the_chosen_clients_and_state_lasts_across_rounds(
        deployment: Deployment, clients: dict[str, SimClient]) -> None:
    deployment.seed()
    session = deployment.run(SELECT_AND_SET, rounds=2, clients_required=3)

    assert session.status == SessionStatus.FINISHED, session.error
    assert training_settings(clients["c"]) == []  # never selected
    for name in ("a", "b"):  # one process for the session: its counter went on from round 1 to round 2
        settings = training_settings(clients[name])
        assert [s["round"] for s in settings] == [1, 2]
        assert settings[1]["learning_rate"] == pytest.approx(0.05)
    # round 2 trained from round 1's FedAvg model (default aggregation): (1*1 + 3*3) / 4 = 2.5
    assert training_settings(clients["a"])[1]["first"] == pytest.approx(2.5)
    rounds = deployment.rounds(session.session_id)
    for round_ in rounds:
        assert round_.status == RoundStatus.FINISHED
        assert notes(round_)["client_selection"]["selected"] == 2 and notes(round_)["client_selection"]["offered"] == 3
        assert "errors" not in notes(round_)
        assert round_.round_config["server_functions"]["chars"] > 0  # a digest, not the code
    assert np.allclose(deployment.params(rounds[-1].new_model_id)[0], 5.0)


CUSTOM_AGGREGATE = """
class ServerFunctions(ServerFunctionsBase):
    def aggregate(self, previous_global, client_updates):
        for params, metadata in client_updates.values():
            assert isinstance(params[0], np.memmap) and not params[0].flags.writeable
        # previous + the sum of the changes, each scaled by its num_examples (FedAvg would average them)
        out = [np.array(p, dtype=np.float64) for p in previous_global]
        for params, metadata in client_updates.values():
            for i, p in enumerate(params):
                out[i] += (p - previous_global[i]) * metadata["num_examples"]
        return out
"""


def test_custom_aggregate_gets_every_update_with_its_metadata(deployment: Deployment,
                                                              clients: dict[str, SimClient]) -> None:
    deployment.seed()
    session = deployment.run(CUSTOM_AGGREGATE, rounds=1, clients_required=3)

    assert session.status == SessionStatus.FINISHED, session.error
    (round_,) = deployment.rounds(session.session_id)
    assert notes(round_)["aggregate"] == {"seconds": pytest.approx(notes(round_)["aggregate"]["seconds"]),
                                          "error": None, "updates": 3}
    model = deployment.params(round_.new_model_id)
    assert np.allclose(model[0], 1 * 1 + 3 * 3 + 10 * 1) and model[0].dtype == np.float64  # the seed's dtype
    # each client's update was asked for on its own; the copies are gone after the round
    assert len(round_.combiners) == 3
    assert not any(deployment.repository.exists("models", c["model_id"]) for c in round_.combiners)
    assert deployment.store.updates.count({"round_id": round_.round_id}) == 3


SETTINGS_AND_AGGREGATE = """
class ServerFunctions(ServerFunctionsBase):
    def client_settings(self, global_model):
        self.seen = [np.array(p) for p in global_model]
        return {"first": float(global_model[0][0])}

    def aggregate(self, previous_global, client_updates):
        assert all(np.array_equal(p, s) for p, s in zip(previous_global, self.seen, strict=True))
        return [np.array(p) + 1.0 for p in previous_global]
"""


def count_exports(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The model ids server functions export from now on (one entry per export)."""
    exported: list[str] = []
    real_export = server_functions.export_arrays

    def counting_export(repository: Any, model_id: str, helper_type: str, dest: Path) -> Any:
        exported.append(model_id)
        return real_export(repository, model_id, helper_type, dest)

    monkeypatch.setattr(server_functions, "export_arrays", counting_export)
    return exported


def test_the_global_model_is_exported_once_a_round_for_both_settings_and_aggregate(
        deployment: Deployment, clients: dict[str, SimClient], monkeypatch: pytest.MonkeyPatch) -> None:
    exported = count_exports(monkeypatch)
    deployment.seed()
    session = deployment.run(SETTINGS_AND_AGGREGATE, rounds=2, clients_required=3)

    assert session.status == SessionStatus.FINISHED, session.error
    rounds = deployment.rounds(session.session_id)
    assert all("errors" not in notes(round_) for round_ in rounds)
    assert [exported.count(round_.model_id) for round_ in rounds] == [1, 1]  # plus one export per update
    assert len(exported) == 2 * (1 + 3)
    assert [s["first"] for s in training_settings(clients["a"])] == [0.0, 1.0]
    assert np.allclose(deployment.params(rounds[-1].new_model_id)[0], 2.0)


INCREMENTAL = """
class ServerFunctions(ServerFunctionsBase):
    def __init__(self):
        self.total = None

    def incremental_aggregate(self, client_id, model, client_metadata, previous_global):
        self.total = [np.array(m) for m in model] if self.total is None else [t + m for t, m in zip(self.total, model)]

    def get_incremental_aggregate_model(self):
        out, self.total = self.total, None
        return out
"""


def test_incremental_aggregate_folds_one_update_at_a_time(deployment: Deployment,
                                                          clients: dict[str, SimClient]) -> None:
    deployment.seed()
    session = deployment.run(INCREMENTAL, rounds=1, clients_required=3)

    assert session.status == SessionStatus.FINISHED, session.error
    (round_,) = deployment.rounds(session.session_id)
    assert np.allclose(deployment.params(round_.new_model_id)[0], 1 + 3 + 10)


RAISES = """
class ServerFunctions(ServerFunctionsBase):
    def client_settings(self, global_model):
        return {"ratio": 1 / 0}

    def aggregate(self, previous_global, client_updates):
        raise ValueError("no aggregation today")
"""


def test_functions_that_raise_fall_back_to_the_defaults_and_the_errors_are_on_the_round(
        deployment: Deployment, clients: dict[str, SimClient]) -> None:
    deployment.seed()
    session = deployment.run(RAISES, rounds=1, clients_required=2, requested_clients=2)

    assert session.status == SessionStatus.FINISHED, session.error
    (round_,) = deployment.rounds(session.session_id)
    errors = notes(round_)["errors"]
    assert len(errors) == 2
    assert errors[0].startswith("client_settings: ZeroDivisionError: division by zero (line 4 of the server "
                                "functions, in client_settings: return {\"ratio\": 1 / 0})")
    assert "ValueError: no aggregation today" in errors[1] and "used FedAvg instead" in errors[1]
    received = [c for c in clients.values() if training_settings(c)]
    assert len(received) == 2  # the default selection: requested_clients at random
    assert all(training_settings(c) == [{}] for c in received)  # no extra settings
    constants = {"a": (1.0, 1), "b": (3.0, 3), "c": (10.0, 1)}
    chosen = [constants[c.client_id] for c in received]
    expected = sum(k * n for k, n in chosen) / sum(n for _, n in chosen)
    assert np.allclose(deployment.params(round_.new_model_id)[0], expected)  # FedAvg of the chosen clients


LOOPS = """
class ServerFunctions(ServerFunctionsBase):
    def __init__(self):
        self.calls = 0

    def client_selection(self, client_ids):
        self.calls += 1
        while True:
            pass

    def client_settings(self, global_model):
        return {"calls": self.calls}
"""


def test_a_function_that_never_returns_is_stopped_and_the_round_uses_the_default(
        deployment: Deployment, clients: dict[str, SimClient]) -> None:
    deployment.seed()
    t = time.monotonic()
    session = deployment.run(LOOPS, rounds=2, clients_required=3)

    assert session.status == SessionStatus.FINISHED, session.error
    assert time.monotonic() - t < 20
    rounds = deployment.rounds(session.session_id)
    for round_ in rounds:
        (error,) = notes(round_)["errors"]
        assert error.startswith(f"client_selection: client_selection did not return within {TIMEOUT:g} s")
        assert "state starts over" in error
        assert round_.round_data["clients_selected"] == 3  # the default: every idle client
    # the killed process was replaced: the new one starts from a fresh instance (calls back to 0, then 1)
    assert notes(rounds[1]).get("restarted") is True
    assert [s["calls"] for s in training_settings(clients["a"])] == [0, 0]


ALLOCATES = """
class ServerFunctions(ServerFunctionsBase):
    def __init__(self):
        self.rounds = 0

    def client_settings(self, global_model):
        self.rounds += 1
        if self.rounds == 1:
            hog = np.ones(2 * 1024**3 // 8)
            return {"size": hog.nbytes}
        return {"rounds": self.rounds}
"""


def test_a_function_that_allocates_too_much_memory_falls_back_and_the_process_lives_on(
        deployment: Deployment, clients: dict[str, SimClient]) -> None:
    deployment.seed()
    session = deployment.run(ALLOCATES, rounds=2, clients_required=3)

    assert session.status == SessionStatus.FINISHED, session.error
    first, second = deployment.rounds(session.session_id)
    (error,) = notes(first)["errors"]
    assert f"exceeded the memory limit of {MEMORY_MB} MiB" in error and "MemoryError" in error
    assert "errors" not in notes(second)
    assert [s for s in training_settings(clients["a"])] == [{}, {"rounds": 2}]  # same process, state kept


def test_a_class_that_cannot_be_loaded_leaves_every_round_at_the_defaults(
        deployment: Deployment, clients: dict[str, SimClient]) -> None:
    deployment.seed()
    source = """
    class ServerFunctions(ServerFunctionsBase):
        def __init__(self):
            import a_module_that_is_not_installed
    """
    session = deployment.run(source, rounds=2, clients_required=3)

    assert session.status == SessionStatus.FINISHED, session.error
    for round_ in deployment.rounds(session.session_id):
        (error,) = notes(round_)["errors"]
        assert error.startswith("load: loading the ServerFunctions class failed: ModuleNotFoundError")


def test_a_killed_worker_is_replaced_on_the_next_call(tmp_path: Path) -> None:
    source = textwrap.dedent("""
    class ServerFunctions(ServerFunctionsBase):
        def client_selection(self, client_ids):
            if client_ids == ["hang"]:
                while True:
                    pass
            return client_ids[:1]
    """)
    worker = WorkerProcess(source, Limits(timeout=1.0, memory_bytes=MEMORY_MB * 2**20), tmp_path)
    try:
        assert worker.ensure_loaded() == ["client_selection"]
        first = worker.pid
        with pytest.raises(CallFailed, match="did not return within 1 s"):
            worker.call({"op": "client_selection", "client_ids": ["hang"]})
        assert first is not None and not pid_alive(first)
        assert worker.call({"op": "client_selection", "client_ids": ["x", "y"]})["result"] == ["x"]
        assert worker.pid != first and worker.starts == 2
    finally:
        worker.close()
    assert not worker.running


def test_the_base_class_defaults_are_harmless() -> None:
    base = ServerFunctionsBase()
    assert base.client_selection(["a", "b"], RoundType.TRAINING) == ["a", "b"]
    assert base.client_settings([np.zeros(1)]) == {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
