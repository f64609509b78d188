"""Federated averaging: the example-weighted mean of the clients' parameters, folded a slice at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from scaleout_server.aggregation.base import Strategy
from scaleout_server.aggregation.params import (
    ArraySpec,
    ComputedParams,
    ParamsView,
    as_view,
    block_elements,
    blocks,
    cast_to,
    check_update,
)


class WeightedMean:
    """Running sum of weight x update in float64, one slice in memory at a time besides the sums.

    float64 whatever the clients send, so many small updates do not lose precision. The sums take
    8 bytes per parameter (2 x a float32 model): the one model-sized buffer FedAvg needs.
    """

    def __init__(self) -> None:
        self.sums: list[np.ndarray] | None = None
        self.specs: list[ArraySpec] = []
        self.weight = 0.0
        self.count = 0

    def reset(self) -> None:
        self.sums = None
        self.specs = []
        self.weight = 0.0
        self.count = 0

    def add(self, view: ParamsView, weight: float, reference: Sequence[ArraySpec] | None = None,
            reference_name: str = "earlier updates") -> None:
        """Fold `weight` x `view` in. Everything is checked before the sums change, so a rejected
        update leaves no trace. `reference` fixes the layout (else the first update does)."""
        if self.sums is not None:
            weight = check_update(view, weight, self.specs)
        else:
            weight = check_update(view, weight, reference, reference_name)
            self.specs = list(view.specs)
            self.sums = [np.zeros(spec.size, dtype=np.float64) for spec in self.specs]
        step = block_elements(8, 2)
        scratch = np.empty(min(step, max((s.size for s in self.specs), default=0)), dtype=np.float64)
        for i, start, stop in blocks(view.specs, step):
            part = scratch[:stop - start]
            np.multiply(view.read(i, start, stop), weight, out=part, dtype=np.float64)
            target = self.sums[i][start:stop]
            np.add(target, part, out=target)
        self.weight += weight
        self.count += 1

    def mean(self, index: int, start: int, stop: int) -> np.ndarray:
        """float64 mean of elements [start, stop) of array `index` (a new array)."""
        assert self.sums is not None
        return self.sums[index][start:stop] / self.weight


class FedAvg(Strategy):
    """Example-weighted mean (weight = `num_examples`); each array keeps the dtype of the first update
    (integers rounded). Across combiners it combines exactly: the controller's reduce weighs each
    combiner's mean by its examples, which gives the mean over all clients."""

    name = "fedavg"
    keywords: dict[str, Any] = {}

    def __init__(self, helper: Any, **kwargs: Any) -> None:
        super().__init__(helper, **kwargs)
        self._mean = WeightedMean()

    def begin(self, global_params: Any) -> None:
        self._mean.reset()

    def accumulate(self, params: Any, num_examples: float, metadata: dict[str, Any]) -> None:
        self._mean.add(as_view(params), num_examples)

    def result(self) -> ParamsView | None:
        if self._mean.count == 0:
            return None
        specs = list(self._mean.specs)
        return ComputedParams(specs, lambda i, start, stop: cast_to(self._mean.mean(i, start, stop), specs[i].dtype))

    @property
    def total_weight(self) -> float:
        return self._mean.weight

    @property
    def count(self) -> int:
        return self._mean.count
