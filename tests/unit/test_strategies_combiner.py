"""Strategies inside a real combiner: FedAdam across a combiner restart, FedProx's mu reaching the
clients, a robust strategy keeping the updates on disk only until the round's model is written, and
a result that fails while it is stored leaving nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scaleout_server.aggregation import registry
from scaleout_server.aggregation.fedavg import FedAvg
from scaleout_server.aggregation.params import ComputedParams, ParamsView
from scaleout_server.combiner.server import updates_dir_for
from scaleoututil.grpc import scaleout_pb2 as pb
from tests.unit.test_combiner_support import SEED_ID, SEED_PARAMS, SimClient, running_harness, store_seed


def round_spec(model_id: str, client_ids: list[str], aggregator: str, kwargs: dict[str, object]) -> pb.RoundSpec:
    return pb.RoundSpec(session_id="sess-adam", round_id="r", model_id=model_id, helper_type="numpyhelper",
                        client_ids=client_ids, aggregator=aggregator, aggregator_kwargs=json.dumps(kwargs),
                        round_timeout=10, buffer_size=-1, client_settings="{}", delete_models=True)


def run_one_round(tmp_path: Path, model_id: str, aggregator: str, kwargs: dict[str, object],
                  constants: list[float]) -> tuple[pb.RoundOutcome, list[np.ndarray]]:
    """Start a combiner on tmp_path's data dir, run one round with clients adding `constants`, stop it."""
    with running_harness(tmp_path) as harness:
        sims = [SimClient(harness.port, f"c{k}", constant=c).start() for k, c in enumerate(constants)]
        try:
            outcome = harness.control.RunRound(round_spec(model_id, [s.client_id for s in sims], aggregator, kwargs),
                                               timeout=30)
            assert outcome.error == "", outcome.error
            model = harness.load_model(outcome.model_id)
            assert list(updates_dir_for(harness.combiner.settings).glob("*.scm")) == []
            return outcome, model
        finally:
            for s in sims:
                s.stop()


@pytest.mark.timeout(60)
def test_fedadam_moments_survive_a_combiner_restart(tmp_path: Path) -> None:
    lr, beta1, beta2, tau = 0.1, 0.9, 0.99, 1e-3
    kwargs = {"server_lr": lr}
    first, model1 = run_one_round(tmp_path, SEED_ID, "fedadam", kwargs, [1.0])
    # a brand-new combiner process would see the same data dir: here a new combiner object on it
    _, model2 = run_one_round(tmp_path, first.model_id, "fedadam", kwargs, [1.0])
    assert (tmp_path / "data" / "combiner-t" / "strategy-state" / "sess-adam.npz").exists()
    for seed, got1, got2 in zip(SEED_PARAMS, model1, model2, strict=True):
        m, v, x = 0.0, tau * tau, seed.astype(np.float64)
        for got in (got1, got2):  # every round the client adds 1: the pseudo-gradient is 1
            m = beta1 * m + (1 - beta1) * 1.0
            v = beta2 * v + (1 - beta2) * 1.0
            x = x + lr * m / (np.sqrt(v) + tau)
            assert got.dtype == seed.dtype
            np.testing.assert_allclose(got, x, rtol=1e-5)
    # without the saved moments round 2 would repeat round 1's step (0.1 * 0.1 / (0.1 + tau))
    assert not np.allclose(model2[0] - model1[0], model1[0] - SEED_PARAMS[0], rtol=1e-3)


@pytest.mark.timeout(60)
def test_fedprox_mu_reaches_the_clients_training_settings(tmp_path: Path, clients: list[SimClient]) -> None:
    with running_harness(tmp_path) as harness:
        sim = SimClient(harness.port, "a", constant=1.0).start()
        clients.append(sim)
        outcome = harness.control.RunRound(round_spec(SEED_ID, ["a"], "fedprox", {"mu": 0.25}), timeout=30)
        assert outcome.error == "" and outcome.model_id
        assert json.loads(sim.received[0].data)["client_settings"] == {"mu": 0.25}


@pytest.mark.timeout(60)
def test_robust_round_through_the_combiner_ignores_a_huge_update(tmp_path: Path) -> None:
    outcome, model = run_one_round(tmp_path, SEED_ID, "fedmedian", {}, [1.0, 2.0, 1e9])
    assert len(outcome.updates) == 3 and outcome.num_examples == 3
    for seed, got in zip(SEED_PARAMS, model, strict=True):
        np.testing.assert_allclose(got, seed + 2.0)  # the median of +1, +2, +1e9


@pytest.mark.timeout(30)
def test_bad_keyword_fails_the_round_before_any_task_is_sent(tmp_path: Path, clients: list[SimClient]) -> None:
    with running_harness(tmp_path) as harness:
        sim = SimClient(harness.port, "a").start()
        clients.append(sim)
        outcome = harness.control.RunRound(round_spec(SEED_ID, ["a"], "fedadam", {"lr": 1}), timeout=30)
        assert "unknown keyword(s) lr" in outcome.error and "server_lr" in outcome.error
        assert sim.received == [] and outcome.model_id == ""


class BrokenResult(FedAvg):
    """FedAvg whose result fails after the first written slice (a disk error, say)."""

    name = "brokenavg"

    def result(self) -> ParamsView | None:
        good = super().result()
        assert good is not None

        def read(index: int, start: int, stop: int) -> np.ndarray:
            if start > 0:
                raise OSError("no space left on device")
            return good.read(index, start, stop)

        return ComputedParams(good.specs, read)


@pytest.mark.timeout(60)
def test_a_model_that_fails_while_stored_is_not_left_in_the_repository(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._STRATEGIES, BrokenResult.name, BrokenResult)
    big = [np.zeros(2_000_000, dtype=np.float64)]  # several written slices
    with running_harness(tmp_path) as harness:
        store_seed(harness.repository, "big-seed", big)
        sim = SimClient(harness.port, "a", constant=1.0).start()
        try:
            outcome = harness.control.RunRound(round_spec("big-seed", ["a"], "brokenavg", {}), timeout=30)
        finally:
            sim.stop()
        assert outcome.model_id == "" and "aggregation failed" in outcome.error and "no space" in outcome.error
        stored = sorted(p.name for p in (tmp_path / "repo" / "models").iterdir() if not p.name.startswith("."))
        assert stored == sorted(["big-seed", SEED_ID])
