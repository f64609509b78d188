"""Byzantine-robust strategies: they need every update at once, so they read the stored updates in slices.

`accumulate` only records each update (the combiner keeps its file until the result is written);
`result` then walks the parameters in runs short enough that the K updates' slices, stacked as
float64, stay within `STACK_BUDGET` bytes. Memory is bounded by that budget whatever the model
size or K (the slices just get shorter as K grows).

- fedmedian: coordinate-wise median (unweighted: a client cannot buy influence with a large
  `num_examples`). NaN sorts last, so a minority of NaN values cannot poison a coordinate.
- fedtrimmedavg: coordinate-wise mean after dropping the `floor(trim_fraction * K)` largest and
  smallest values (unweighted).
- krum: the one update whose summed squared distance to its K - f - 2 nearest others is smallest
  (f = `num_byzantine`; at least 1 neighbour).
- multikrum: the `num_selected` updates with the best Krum scores (default K - f), averaged with
  `num_examples` weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from scaleout_server.aggregation.base import Strategy
from scaleout_server.aggregation.options import integer, number
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

log = logging.getLogger(__name__)

STACK_BUDGET = 64 * 1024 * 1024  # bytes of stacked float64 slices of all K updates at a time
_RELEASE_ABOVE = 32  # with more stored updates than this, close each file between reads


class StoredUpdatesStrategy(Strategy):
    """Base of the strategies that combine all stored updates at `result` time."""

    streaming = False

    def __init__(self, helper: Any, **kwargs: Any) -> None:
        super().__init__(helper, **kwargs)
        self._updates: list[ParamsView] = []
        self._weights: list[float] = []

    def begin(self, global_params: Any) -> None:
        self._updates = []
        self._weights = []

    def accumulate(self, params: Any, num_examples: float, metadata: dict[str, Any]) -> None:
        view = as_view(params)
        weight = check_update(view, num_examples, self._updates[0].specs if self._updates else None)
        self._updates.append(view)
        self._weights.append(weight)
        if len(self._updates) > _RELEASE_ABOVE:
            view.release()

    @property
    def specs(self) -> list[ArraySpec]:
        return list(self._updates[0].specs)

    @property
    def count(self) -> int:
        return len(self._updates)

    def stacked(self, index: int, start: int, stop: int, rows: list[int] | None = None) -> np.ndarray:
        """Elements [start, stop) of array `index` of the chosen updates (all by default), one row each."""
        chosen = range(len(self._updates)) if rows is None else rows
        out = np.empty((len(chosen), stop - start), dtype=np.float64)
        release = len(self._updates) > _RELEASE_ABOVE
        for row, k in enumerate(chosen):
            view = self._updates[k]
            out[row] = view.read(index, start, stop)
            if release:
                view.release()
        return out

    def run_length(self, copies: int = 3, rows: int | None = None) -> int:
        """Elements per slice so that `copies` stacks of `rows` (all) updates fit in STACK_BUDGET."""
        return block_elements(8, copies * (rows or len(self._updates)), STACK_BUDGET)

    def sliced(self, values: Callable[[int, int, int], np.ndarray], run: int) -> ParamsView:
        """A result computed when read, in runs of at most `run` elements: `values(index, a, b)` gives the
        float64 values of elements [a, b) of array `index`, cast to the array's dtype."""
        specs = self.specs

        def compute(index: int, start: int, stop: int) -> np.ndarray:
            out = np.empty(stop - start, dtype=specs[index].dtype)
            for a in range(start, stop, run):
                b = min(a + run, stop)
                out[a - start:b - start] = cast_to(values(index, a, b), specs[index].dtype)
            return out

        return ComputedParams(specs, compute)

    def per_coordinate(self, combine: Callable[[np.ndarray], np.ndarray]) -> ParamsView:
        """A result computed when read: `combine` maps an (n, K) stack (one row per coordinate, contiguous,
        which numpy sorts and partitions several times faster than columns) to n values, slice by slice.
        The stacks live only during the call, so the next slice's are not built while one is still held."""
        return self.sliced(lambda i, a, b: combine(np.ascontiguousarray(self.stacked(i, a, b).T)), self.run_length())


class FedMedian(StoredUpdatesStrategy):
    name = "fedmedian"

    def result(self) -> ParamsView | None:
        if not self._updates:
            return None
        count = len(self._updates)

        def median(rows: np.ndarray) -> np.ndarray:
            rows.sort(axis=1)  # for a few dozen values per row a sort beats numpy's partition-based median
            if count % 2:
                return rows[:, count // 2].copy()
            return (rows[:, count // 2 - 1] + rows[:, count // 2]) / 2.0

        return self.per_coordinate(median)


class FedTrimmedAvg(StoredUpdatesStrategy):
    name = "fedtrimmedavg"
    keywords: ClassVar[dict[str, Any]] = {"trim_fraction": 0.2}

    def check_options(self) -> None:
        self.options["trim_fraction"] = number(self.options, "trim_fraction", low=0.0, high=0.5, high_open=True)

    def result(self) -> ParamsView | None:
        if not self._updates:
            return None
        count = len(self._updates)
        cut = int(self.options["trim_fraction"] * count)

        def trimmed(rows: np.ndarray) -> np.ndarray:
            rows.sort(axis=1)
            return rows[:, cut:count - cut].mean(axis=1)

        return self.per_coordinate(trimmed)


class Krum(StoredUpdatesStrategy):
    name = "krum"
    keywords: ClassVar[dict[str, Any]] = {"num_byzantine": 0}

    def check_options(self) -> None:
        self.options["num_byzantine"] = integer(self.options, "num_byzantine", low=0)

    def selection_size(self, count: int) -> int:
        return 1

    def result(self) -> ParamsView | None:
        if not self._updates:
            return None
        scores = krum_scores(self.squared_distances(), int(self.options["num_byzantine"]))
        chosen = sorted(np.argsort(scores, kind="stable")[:self.selection_size(len(scores))].tolist())
        log.info("%s: selected %d of %d update(s): %s (best score %.6g, worst %.6g)", self.name, len(chosen),
                 len(scores), chosen[:20], float(scores.min()), float(scores.max()))
        self.selected = chosen
        return self.weighted_mean(chosen)

    def squared_distances(self) -> np.ndarray:
        """K x K squared Euclidean distances over all parameters, accumulated slice by slice."""
        count = len(self._updates)
        total = np.zeros((count, count), dtype=np.float64)
        for i, start, stop in blocks(self.specs, self.run_length(copies=3)):
            stack = self.stacked(i, start, stop)
            # distances do not change under a shift; shifting by the update of median norm (an honest one
            # while most are) keeps the Gram matrix's numbers small, so |x|^2 + |y|^2 - 2xy does not cancel
            norms = np.einsum("ij,ij->i", stack, stack)
            stack -= stack[np.argsort(norms, kind="stable")[count // 2]].copy()
            gram = stack @ stack.T
            norms = np.diag(gram)
            total += np.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)
        total = np.nan_to_num(total, nan=np.inf, posinf=np.inf)
        np.fill_diagonal(total, 0.0)
        return total

    def weighted_mean(self, rows: list[int]) -> ParamsView:
        weights = np.array([self._weights[k] for k in rows], dtype=np.float64)
        weights /= weights.sum()
        return self.sliced(lambda i, a, b: weights @ self.stacked(i, a, b, rows), self.run_length(rows=len(rows)))


class MultiKrum(Krum):
    name = "multikrum"
    keywords: ClassVar[dict[str, Any]] = {"num_byzantine": 0, "num_selected": None}

    def check_options(self) -> None:
        super().check_options()
        self.options["num_selected"] = integer(self.options, "num_selected", low=1, allow_none=True)

    def selection_size(self, count: int) -> int:
        wanted = self.options["num_selected"]
        if wanted is None:
            wanted = count - int(self.options["num_byzantine"])
        return max(1, min(int(wanted), count))


def krum_scores(distances: np.ndarray, num_byzantine: int) -> np.ndarray:
    """Each update's sum of squared distances to its K - f - 2 nearest other updates (at least one)."""
    count = len(distances)
    if count == 1:
        return np.zeros(1)
    if count < 2 * num_byzantine + 3:
        log.warning("krum with %d updates and num_byzantine=%d: Krum's guarantee needs at least 2f + 3 updates",
                    count, num_byzantine)
    neighbours = min(max(count - num_byzantine - 2, 1), count - 1)
    scores = np.empty(count)
    for k in range(count):
        others = np.delete(distances[k], k)
        scores[k] = np.sort(others)[:neighbours].sum()
    return scores
