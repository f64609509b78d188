"""Federated averaging: the example-weighted mean of the clients' parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scaleout_server.aggregation.base import Strategy


class FedAvg(Strategy):
    """Running weighted mean, weight = `num_examples`.

    The mean is kept in float64 whatever the clients send, so many small updates do not lose
    precision; `result` casts each array back to the dtype it arrived in (integers rounded).
    """

    name = "fedavg"
    keywords: dict[str, Any] = {}

    def __init__(self, helper: Any, **kwargs: Any) -> None:
        super().__init__(helper, **kwargs)
        self._mean: list[np.ndarray] | None = None
        self._dtypes: list[np.dtype] = []
        self._weight = 0.0
        self.count = 0

    def begin(self, global_params: Any) -> None:
        self._mean = None
        self._dtypes = []
        self._weight = 0.0
        self.count = 0

    def accumulate(self, params: Any, num_examples: float, metadata: dict[str, Any]) -> None:
        weight = float(num_examples)
        if not weight > 0:
            raise ValueError(f"num_examples must be > 0 to weight an update, got {num_examples!r}")
        arrays = _as_arrays(params)
        _check_numeric(arrays)
        if self._mean is None:
            self._mean = [a.astype(np.float64, copy=True) for a in arrays]
            self._dtypes = [a.dtype for a in arrays]
            self._weight = weight
            self.count = 1
            return
        if len(arrays) != len(self._mean):
            raise ValueError(f"update has {len(arrays)} arrays, earlier updates had {len(self._mean)}")
        # check every array before touching the mean: a bad update must leave no partial trace
        for i, (mean, a) in enumerate(zip(self._mean, arrays, strict=True)):
            if a.shape != mean.shape:
                raise ValueError(f"array {i} of the update has shape {a.shape}, expected {mean.shape}")
        self._weight += weight
        share = weight / self._weight
        for mean, a in zip(self._mean, arrays, strict=True):
            mean += share * (a.astype(np.float64, copy=False) - mean)
        self.count += 1

    def result(self) -> list[np.ndarray] | None:
        if self._mean is None:
            return None
        out = []
        for mean, dtype in zip(self._mean, self._dtypes, strict=True):
            if np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_):
                out.append(np.rint(mean).astype(dtype))
            else:
                out.append(mean.astype(dtype))
        return out

    @property
    def total_weight(self) -> float:
        return self._weight


def _check_numeric(arrays: list[np.ndarray]) -> None:
    """Only numbers (and booleans) can be averaged; anything else would fail halfway through a fold."""
    for i, a in enumerate(arrays):
        if not (np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.bool_)):
            raise ValueError(f"array {i} of the update has dtype {a.dtype}; fedavg averages numeric arrays")


def _as_arrays(params: Any) -> list[np.ndarray]:
    """numpyhelper params as a list of arrays (a bare array counts as a one-array model)."""
    if isinstance(params, np.ndarray):
        return [params]
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        return [np.asarray(p) for p in params]
    raise TypeError(f"fedavg averages a list of numpy arrays (numpyhelper params), got {type(params).__name__}")
