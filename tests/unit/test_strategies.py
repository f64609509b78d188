"""Every strategy against a plain NumPy reference, through the combiner's real aggregation path.

Updates are written as model containers (what the upload leaves on disk) and aggregated by
`AggregationJob` reading them a slice at a time; the block sizes are shrunk so every array spans
several slices. The references below are the textbook formulas, one line each where possible.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scaleout_server.aggregation import params as params_module
from scaleout_server.aggregation import robust
from scaleout_server.aggregation.job import AggregationJob
from scaleout_server.aggregation.registry import available_strategies, check_strategy_config, make_strategy
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.model import write_container

HELPER = get_helper("numpyhelper")
SHAPES = [(3, 1500), (2500,), (4,)]  # > 1024 elements: several slices per array with the shrunk budgets


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of 1024 elements, so slicing bugs (offsets, the last short slice) show up in small tests."""
    monkeypatch.setattr(params_module, "BLOCK_BYTES", 1)
    monkeypatch.setattr(robust, "STACK_BUDGET", 1)


def container_bytes(arrays: list[np.ndarray], model_id: str) -> bytes:
    raw = io.BytesIO()
    HELPER.save(arrays, raw)
    raw.seek(0)
    out = io.BytesIO()
    write_container(out, model_id, raw, helper_type="numpyhelper")
    return out.getvalue()


def make_model(rng: np.random.Generator, scale: float = 1.0, offset: float = 0.0) -> list[np.ndarray]:
    return [(offset + scale * rng.standard_normal(shape)).astype(np.float32) for shape in SHAPES]


def aggregate(tmp_path: Path, name: str, global_model: list[np.ndarray], updates: list[list[np.ndarray]],
              weights: list[float], kwargs: dict[str, Any] | None = None,
              state: dict[str, Any] | None = None) -> tuple[list[np.ndarray], dict[str, Any], Any]:
    """One round of `name` the way the combiner runs it; returns (model, state to carry, strategy)."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    strategy = make_strategy(name, HELPER, kwargs or {})
    job = AggregationJob(strategy, HELPER, work)
    try:
        job.begin(io.BytesIO(container_bytes(global_model, "global")), state)
        for k, (update, weight) in enumerate(zip(updates, weights, strict=True)):
            path = work / f"update-{k}.scm"
            path.write_bytes(container_bytes(update, f"update-{k}"))
            job.fold(path, weight, {})
        out = io.BytesIO()
        assert job.conclude(out)
        out.seek(0)
        return HELPER.load(out), job.state_dict(), strategy
    finally:
        job.close()
        assert sorted(p.name for p in work.iterdir()) == []  # global copy, updates and scratch files all gone


def assert_models_close(got: list[np.ndarray], expected: list[np.ndarray], rtol: float = 1e-5,
                        atol: float = 1e-6) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape and g.dtype == np.float32
        np.testing.assert_allclose(g, e.astype(np.float32), rtol=rtol, atol=atol)


def scenario(seed: int = 0, count: int = 5) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[float]]:
    rng = np.random.default_rng(seed)
    global_model = make_model(rng)
    updates = [[g + 0.1 * rng.standard_normal(g.shape).astype(np.float32) for g in global_model]
               for _ in range(count)]
    weights = [float(w) for w in rng.integers(1, 100, size=count)]
    return global_model, updates, weights


def per_array(updates: list[list[np.ndarray]], fn: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """fn applied to the (K, ...) float64 stack of each array."""
    return [fn(np.stack([u[i] for u in updates]).astype(np.float64)) for i in range(len(updates[0]))]


# -- references ------------------------------------------------------------------------------------
def ref_fedavg(updates: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
    return per_array(updates, lambda s: np.average(s, axis=0, weights=weights))


def ref_server_opt(name: str, global_model: list[np.ndarray], rounds: list[tuple[list[list[np.ndarray]], list[float]]],
                   lr: float, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3,
                   momentum: float = 0.9) -> list[list[np.ndarray]]:
    """The model after each round; each round's updates are given relative to that round's global model
    as (offsets, weights): update = global + offset."""
    x = [g.astype(np.float64) for g in global_model]
    m = [np.zeros_like(a) for a in x]
    v = [np.full_like(a, tau * tau) for a in x]
    out = []
    for offsets, weights in rounds:
        x32 = [a.astype(np.float32).astype(np.float64) for a in x]  # the stored global model is float32
        updates = [[(xi + o).astype(np.float32) for xi, o in zip(x32, offset, strict=True)] for offset in offsets]
        mean = ref_fedavg(updates, weights)
        delta = [mu - xi for mu, xi in zip(mean, x32, strict=True)]
        new = []
        for i, d in enumerate(delta):
            if name == "fedavgm":
                m[i] = momentum * m[i] + d
                new.append(x32[i] + lr * m[i])
                continue
            m[i] = beta1 * m[i] + (1 - beta1) * d
            if name == "fedadam":
                v[i] = beta2 * v[i] + (1 - beta2) * d * d
            elif name == "fedyogi":
                v[i] = v[i] - (1 - beta2) * d * d * np.sign(v[i] - d * d)
            else:
                v[i] = v[i] + d * d
            new.append(x32[i] + lr * m[i] / (np.sqrt(v[i]) + tau))
        x = new
        out.append([a.astype(np.float32) for a in x])
    return out


def ref_krum_scores(updates: list[list[np.ndarray]], f: int) -> np.ndarray:
    flat = np.stack([np.concatenate([a.astype(np.float64).ravel() for a in u]) for u in updates])
    k = len(flat)
    d = np.array([[np.sum((flat[i] - flat[j]) ** 2) for j in range(k)] for i in range(k)])
    closest = min(max(k - f - 2, 1), k - 1)
    return np.array([np.sort(np.delete(d[i], i))[:closest].sum() for i in range(k)])


# -- streaming strategies ---------------------------------------------------------------------------
def test_fedavg_is_the_num_examples_weighted_mean(tmp_path: Path) -> None:
    global_model, updates, weights = scenario()
    got, state, _ = aggregate(tmp_path, "fedavg", global_model, updates, weights)
    assert_models_close(got, ref_fedavg(updates, weights))
    assert state == {}


def test_fedprox_averages_like_fedavg_and_sends_mu_to_clients(tmp_path: Path) -> None:
    global_model, updates, weights = scenario(1)
    got, _, strategy = aggregate(tmp_path, "fedprox", global_model, updates, weights, {"mu": 0.3})
    assert_models_close(got, ref_fedavg(updates, weights))
    assert strategy.configure({"epochs": 2}) == {"epochs": 2, "mu": 0.3}
    assert make_strategy("fedprox", HELPER).configure({}) == {"mu": 0.01}


@pytest.mark.parametrize(("name", "kwargs", "ref_kwargs"), [
    ("fedavgm", {"server_lr": 0.7, "momentum": 0.5}, {"lr": 0.7, "momentum": 0.5}),
    ("fedadam", {"server_lr": 0.05, "beta1": 0.8, "beta2": 0.95, "tau": 0.01},
     {"lr": 0.05, "beta1": 0.8, "beta2": 0.95, "tau": 0.01}),
    ("fedyogi", {"server_lr": 0.05, "beta2": 0.9, "tau": 0.002}, {"lr": 0.05, "beta2": 0.9, "tau": 0.002}),
    ("fedadagrad", {"server_lr": 0.02, "tau": 0.01}, {"lr": 0.02, "tau": 0.01}),
])
def test_server_optimisers_match_the_reference_over_three_rounds(tmp_path: Path, name: str, kwargs: dict[str, Any],
                                                                 ref_kwargs: dict[str, Any]) -> None:
    rng = np.random.default_rng(7)
    global_model = make_model(rng)
    rounds = []
    for _ in range(3):
        offsets = [[0.05 * rng.standard_normal(s) + 0.02 for s in SHAPES] for _ in range(4)]
        rounds.append((offsets, [float(w) for w in rng.integers(1, 20, size=4)]))
    expected = ref_server_opt(name, global_model, rounds, **ref_kwargs)
    model, state = global_model, None
    for r, (offsets, weights) in enumerate(rounds):
        updates = [[(x.astype(np.float64) + o).astype(np.float32) for x, o in zip(model, offset, strict=True)]
                   for offset in offsets]
        model, state, _ = aggregate(tmp_path, name, model, updates, weights, kwargs, state)
        assert state["rounds"] == r + 1
        assert_models_close(model, expected[r], rtol=1e-4, atol=1e-5)


def test_fedavgm_with_lr_one_and_no_momentum_is_fedavg(tmp_path: Path) -> None:
    global_model, updates, weights = scenario(2)
    got, _, _ = aggregate(tmp_path, "fedavgm", global_model, updates, weights, {"server_lr": 1, "momentum": 0})
    assert_models_close(got, ref_fedavg(updates, weights))


def test_server_optimiser_rounds_integer_arrays_to_the_mean(tmp_path: Path) -> None:
    global_model = [np.zeros(3, dtype=np.float32), np.array([10, 20], dtype=np.int64)]
    updates = [[np.ones(3, dtype=np.float32), np.array([11, 20], dtype=np.int64)],
               [np.ones(3, dtype=np.float32), np.array([14, 30], dtype=np.int64)]]
    got, state, _ = aggregate(tmp_path, "fedadam", global_model, updates, [1.0, 1.0], {"server_lr": 0.1})
    assert got[1].dtype == np.int64 and got[1].tolist() == [12, 25]  # 12.5 and 25 rounded half to even
    np.testing.assert_allclose(got[0], 0.1 * 0.1 / (np.sqrt(0.99e-6 + 0.01) + 1e-3), rtol=1e-5)
    assert state["m"][1].size == 0 and state["m"][0].dtype == np.float32


# -- robust strategies ------------------------------------------------------------------------------
def test_fedmedian_is_the_coordinate_wise_median(tmp_path: Path) -> None:
    for count in (4, 5):  # even and odd counts
        global_model, updates, weights = scenario(3, count)
        got, _, _ = aggregate(tmp_path, "fedmedian", global_model, updates, weights)
        assert_models_close(got, per_array(updates, lambda s: np.median(s, axis=0)))


def test_fedtrimmedavg_drops_the_extremes_of_each_coordinate(tmp_path: Path) -> None:
    global_model, updates, weights = scenario(4, 7)
    got, _, _ = aggregate(tmp_path, "fedtrimmedavg", global_model, updates, weights, {"trim_fraction": 0.3})
    cut = int(0.3 * 7)  # 2 from each end
    assert_models_close(got, per_array(updates, lambda s: np.sort(s, axis=0)[cut:7 - cut].mean(axis=0)))


def test_krum_selects_the_update_with_the_best_score(tmp_path: Path) -> None:
    # along one direction at 2, 0, 7, 4, 1, 7: with K - f - 2 = 3 neighbours the one at 2 wins (at 4 if
    # all 5 others counted), so the neighbour count matters
    global_model, _, weights = scenario(5, 6)
    direction = [np.random.default_rng(1).standard_normal(s).astype(np.float32) for s in SHAPES]
    updates = [[g + 0.01 * pos * d for g, d in zip(global_model, direction, strict=True)] for pos in (2, 0, 7, 4, 1, 7)]
    got, _, strategy = aggregate(tmp_path, "krum", global_model, updates, weights, {"num_byzantine": 1})
    best = int(np.argmin(ref_krum_scores(updates, 1)))
    assert strategy.selected == [best]
    assert_models_close(got, updates[best], rtol=0, atol=0)


def test_multikrum_averages_the_selected_updates_by_num_examples(tmp_path: Path) -> None:
    global_model, updates, weights = scenario(6, 7)
    got, _, strategy = aggregate(tmp_path, "multikrum", global_model, updates, weights,
                                 {"num_byzantine": 2, "num_selected": 3})
    chosen = sorted(np.argsort(ref_krum_scores(updates, 2), kind="stable")[:3].tolist())
    assert strategy.selected == chosen
    assert_models_close(got, ref_fedavg([updates[k] for k in chosen], [weights[k] for k in chosen]))


def test_multikrum_selects_k_minus_f_by_default(tmp_path: Path) -> None:
    global_model, updates, weights = scenario(8, 5)
    _, _, strategy = aggregate(tmp_path, "multikrum", global_model, updates, weights, {"num_byzantine": 1})
    assert len(strategy.selected) == 4


@pytest.mark.parametrize(("name", "kwargs"), [
    ("fedmedian", {}), ("fedtrimmedavg", {"trim_fraction": 0.2}), ("krum", {"num_byzantine": 1}),
    ("multikrum", {"num_byzantine": 1}),
])
def test_robust_strategies_hold_against_one_huge_update(tmp_path: Path, name: str, kwargs: dict[str, Any]) -> None:
    global_model, updates, weights = scenario(9, 5)
    low = per_array(updates[1:], lambda s: s.min(axis=0))
    high = per_array(updates[1:], lambda s: s.max(axis=0))
    updates[0] = [np.full(g.shape, 1e30, dtype=np.float32) for g in global_model]  # the attacker, claiming
    weights[0] = 1e6  # a huge dataset too
    attacked, _, _ = aggregate(tmp_path, "fedavg", global_model, updates, weights)
    assert np.abs(attacked[0]).max() > 1e29  # plain FedAvg is ruined: the test can tell
    got, _, _ = aggregate(tmp_path, name, global_model, updates, weights, kwargs)
    for g, lo, hi in zip(got, low, high, strict=True):  # every coordinate within the honest updates' range
        assert np.all((g >= lo.astype(np.float32)) & (g <= hi.astype(np.float32)))


# -- keywords and names -----------------------------------------------------------------------------
def test_every_required_strategy_is_registered() -> None:
    assert set(available_strategies()) == {"fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedprox",
                                           "fedmedian", "fedtrimmedavg", "krum", "multikrum"}


def test_defaults_are_filled_in_and_validated() -> None:
    assert check_strategy_config("FedAdam", {}) == ("fedadam", {"server_lr": 0.01, "beta1": 0.9, "beta2": 0.99,
                                                                "tau": 0.001})
    assert check_strategy_config("fedavgm", {"server_lr": 1}) == ("fedavgm", {"server_lr": 1.0, "momentum": 0.9})
    assert check_strategy_config("multikrum", {"num_selected": 3.0})[1]["num_selected"] == 3


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("fedadam", {"lr": 0.1}, "unknown keyword(s) lr; valid keywords: beta1, beta2, server_lr, tau"),
    ("fedadagrad", {"beta2": 0.9}, "valid keywords: beta1, server_lr, tau"),
    ("fedavg", {"mu": 1}, "valid keywords: none"),
    ("fedadam", {"beta1": 1.5}, "'beta1' must be a number >= 0 and < 1, got 1.5"),
    ("fedadam", {"server_lr": 0}, "'server_lr' must be a number > 0"),
    ("fedadam", {"tau": "small"}, "'tau' must be a number > 0, got 'small'"),
    ("fedavgm", {"momentum": True}, "'momentum' must be a number"),
    ("fedprox", {"mu": -1}, "'mu' must be a number >= 0"),
    ("fedtrimmedavg", {"trim_fraction": 0.5}, "'trim_fraction' must be a number >= 0 and < 0.5"),
    ("krum", {"num_byzantine": -1}, "'num_byzantine' must be an integer >= 0"),
    ("multikrum", {"num_selected": 0}, "'num_selected' must be an integer >= 1 or null"),
    ("fedsgd", {}, "unknown aggregator 'fedsgd'; available: fedadagrad, fedadam, fedavg, fedavgm, fedmedian, "
                   "fedprox, fedtrimmedavg, fedyogi, krum, multikrum"),
])
def test_bad_names_keywords_and_values_say_what_is_valid(name: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        check_strategy_config(name, kwargs)
    assert message in str(err.value)


def test_strategies_take_plain_lists_of_arrays_too() -> None:
    # what tests and server-side code without files use: the same maths on in-memory arrays
    s = make_strategy("fedmedian", HELPER)
    s.begin([np.zeros(3)])
    for value in (1.0, 5.0, 2.0):
        s.accumulate([np.full(3, value)], 1, {})
    result = s.result()
    assert result is not None
    np.testing.assert_array_equal(result[0], [2.0, 2.0, 2.0])


def test_fedmedian_ignores_a_minority_of_nan_values() -> None:
    s = make_strategy("fedmedian", HELPER)
    s.begin(None)
    for values in ([1.0, 5.0], [2.0, np.nan], [np.nan, 4.0]):
        s.accumulate([np.array(values)], 1, {})
    result = s.result()
    assert result is not None
    np.testing.assert_array_equal(result[0], [2.0, 5.0])  # NaN sorts last: [1, 2, nan] and [4, 5, nan]
