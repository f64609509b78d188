"""FedAvg: example-weighted mean, float64 accumulation, dtypes preserved."""

from __future__ import annotations

import numpy as np
import pytest

from scaleout_server.aggregation.fedavg import FedAvg
from scaleoututil.helpers.helpers import get_helper


def make() -> FedAvg:
    strategy = FedAvg(get_helper("numpyhelper"))
    strategy.begin([np.zeros(2)])
    return strategy


def test_fedavg_weights_by_num_examples() -> None:
    s = make()
    s.accumulate([np.array([1.0, 2.0]), np.array([[0.0]])], 1, {})
    s.accumulate([np.array([3.0, 6.0]), np.array([[4.0]])], 3, {})
    result = s.result()
    np.testing.assert_allclose(result[0], [2.5, 5.0])
    np.testing.assert_allclose(result[1], [[3.0]])
    assert s.total_weight == 4 and s.count == 2


def test_fedavg_of_one_update_is_that_update() -> None:
    s = make()
    s.accumulate([np.array([7.0, -1.0])], 12, {})
    np.testing.assert_array_equal(s.result()[0], [7.0, -1.0])


def test_fedavg_without_updates_has_no_result() -> None:
    assert make().result() is None


def test_fedavg_keeps_each_arrays_dtype() -> None:
    s = make()
    s.accumulate([np.array([1, 2], dtype=np.float32), np.array([1, 4], dtype=np.int64)], 1, {})
    s.accumulate([np.array([2, 3], dtype=np.float32), np.array([2, 5], dtype=np.int64)], 1, {})
    f32, i64 = s.result()
    assert f32.dtype == np.float32 and i64.dtype == np.int64
    np.testing.assert_allclose(f32, [1.5, 2.5])
    np.testing.assert_array_equal(i64, [2, 4])  # 1.5 and 4.5 rounded half to even


def test_fedavg_accumulates_in_float64() -> None:
    # float32 running sums of many small weighted updates drift; float64 keeps the exact mean
    s = make()
    rng = np.random.default_rng(3)
    updates = [rng.random(100).astype(np.float32) for _ in range(500)]
    weights = rng.integers(1, 50, size=500)
    for u, w in zip(updates, weights, strict=True):
        s.accumulate([u], float(w), {})
    expected = np.average(np.stack(updates).astype(np.float64), axis=0, weights=weights)
    np.testing.assert_allclose(s.result()[0], expected.astype(np.float32), rtol=1e-6)


def test_fedavg_begin_forgets_the_previous_round() -> None:
    s = make()
    s.accumulate([np.array([100.0])], 1, {})
    s.begin([np.zeros(1)])
    s.accumulate([np.array([1.0])], 1, {})
    np.testing.assert_array_equal(s.result()[0], [1.0])


def test_fedavg_rejects_mismatched_updates() -> None:
    s = make()
    s.accumulate([np.zeros(2)], 1, {})
    with pytest.raises(ValueError, match="shape"):
        s.accumulate([np.zeros(3)], 1, {})
    with pytest.raises(ValueError, match="arrays"):
        s.accumulate([np.zeros(2), np.zeros(2)], 1, {})
    with pytest.raises(ValueError, match="num_examples"):
        s.accumulate([np.zeros(2)], 0, {})


def test_fedavg_has_no_session_state() -> None:
    s = make()
    assert s.state_dict() == {}
    s.load_state_dict({})
    assert s.configure({"epochs": 1}) == {"epochs": 1}


def test_fedavg_rejected_update_leaves_the_mean_untouched() -> None:
    # the first array fits, the second does not: nothing of the bad update may reach the mean or its weight
    s = make()
    s.accumulate([np.array([1.0, 1.0]), np.array([2.0])], 1, {})
    with pytest.raises(ValueError, match="shape"):
        s.accumulate([np.array([9.0, 9.0]), np.array([9.0, 9.0])], 5, {})
    with pytest.raises((TypeError, ValueError)):
        s.accumulate([np.array([9.0, 9.0]), np.array(["x"])], 5, {})
    np.testing.assert_array_equal(s.result()[0], [1.0, 1.0])
    np.testing.assert_array_equal(s.result()[1], [2.0])
    assert s.total_weight == 1 and s.count == 1
