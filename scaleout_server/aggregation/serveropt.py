"""Server optimisers (Reddi et al., "Adaptive Federated Optimization"; Hsu et al. for momentum).

Each round the clients' example-weighted mean gives a pseudo-gradient `d = mean - global`; the
server treats it as a gradient step and applies its own optimiser to the global model:

    fedavgm:    m = momentum * m + d                          x = x + server_lr * m
    fedadam:    m = beta1 * m + (1 - beta1) * d;  v = beta2 * v + (1 - beta2) * d^2
    fedyogi:    m as fedadam;  v = v - (1 - beta2) * d^2 * sign(v - d^2)
    fedadagrad: m as fedadam;  v = v + d^2
    (adaptive:) x = x + server_lr * m / (sqrt(v) + tau)

with m = 0 and v = tau^2 at the session's first round and no bias correction (as in the paper and
in FEDn's `fedopt`). The moments are the session state: they persist across rounds (on disk, see
`state.SessionStates`) and are kept in the array's float precision (float32 for float32 models).
Integer and boolean arrays (counters) take the plain rounded mean. Everything runs a slice at a
time.

Memory: the float64 sums (2 x a float32 model) and nothing else model-sized. Each moment is another
whole model, so when the global model is a file (the combiner's round), the moments stay on disk too:
the previous state is read in place (`SessionStates.load` gives file-backed views) and the new one is
written, slice by slice, to an unlinked scratch file in the round's work folder, which `state_dict`
hands on for `SessionStates.save` to copy slice by slice. With in-memory params (tests, server-side
code without files) the moments are in-memory arrays updated in place. The arithmetic is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from scaleout_server.aggregation.base import Strategy
from scaleout_server.aggregation.fedavg import WeightedMean
from scaleout_server.aggregation.options import number
from scaleout_server.aggregation.params import (
    ArraySpec,
    ComputedParams,
    ParamsView,
    as_view,
    block_elements,
    blocks,
    cast_to,
    check_numeric,
    is_float,
)
from scaleout_server.aggregation.stored import FileArrays, StoredParams

log = logging.getLogger(__name__)


class ServerOptimizer(Strategy):
    """FedAvg of the updates, then one optimiser step from the global model (see module docstring).

    Subclasses name their moments (`moments`), give each one's initial value (`initial`) and update
    them and return the step for one slice (`step`).
    """

    moments: ClassVar[tuple[str, ...]] = ("m",)
    uses_global_model = True

    def __init__(self, helper: Any, **kwargs: Any) -> None:
        super().__init__(helper, **kwargs)
        self._mean = WeightedMean()
        self._global: ParamsView | None = None
        # the moments, one flat array per model array: lists updated in place, or read-only views of files
        # (the loaded state, or the scratch file the last result wrote) when `_spill_dir` is set
        self._state: dict[str, Sequence[np.ndarray]] | None = None
        self._spill_dir: Path | None = None
        self._rounds = 0
        self._loaded: dict[str, Any] | None = None
        self._result: ParamsView | None = None

    def check_options(self) -> None:
        self.options["server_lr"] = number(self.options, "server_lr", low=0.0, low_open=True)

    # -- state --------------------------------------------------------------------------------
    def initial(self, moment: str) -> float:
        return 0.0

    def state_dict(self) -> dict[str, Any]:
        """The rounds taken and each moment's arrays: a list, or a file-backed view (a sequence of arrays
        too) that `SessionStates.save` copies slice by slice, so no whole moment is ever in memory."""
        if self._state is None:
            return {}
        return {"rounds": self._rounds,
                **{k: v if isinstance(v, ParamsView) else list(v) for k, v in self._state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = dict(state) if state else None

    def _restore(self, specs: list[ArraySpec]) -> None:
        """Adopt the loaded state (or keep this object's own from its previous round) if it fits this
        model, else start the moments afresh."""
        loaded, self._loaded = self._loaded, None
        if loaded is None:
            loaded = self.state_dict()
        self._state, self._rounds = None, 0
        if not loaded:
            return
        try:
            state: dict[str, Sequence[np.ndarray]] = {}
            for k in self.moments:
                arrays = loaded[k]
                sizes = [a.size for a in arrays.specs] if isinstance(arrays, ParamsView) else \
                    [np.asarray(a).size for a in arrays]
                if len(sizes) != len(specs):
                    raise ValueError(f"{len(sizes)} arrays for a model of {len(specs)}")
                for size, spec in zip(sizes, specs, strict=True):
                    if size != (spec.size if is_float(spec.dtype) else 0):
                        raise ValueError(f"a moment of {size} elements for an array of {spec.size}")
                if self._spill_dir is not None:  # read in place, a slice at a time
                    state[k] = arrays if isinstance(arrays, ParamsView) else as_view(list(arrays))
                else:  # updated in place
                    state[k] = [np.require(np.asarray(a).reshape(-1), requirements=["C", "W"]) for a in arrays]
            self._state, self._rounds = state, int(loaded.get("rounds", 0))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("%s: the saved optimiser state does not fit this model (%s); starting afresh", self.name, exc)

    @staticmethod
    def _moment_specs(specs: list[ArraySpec]) -> list[ArraySpec]:
        """A fresh moment's arrays: the array's float precision (at least float32), empty for integers."""
        return [ArraySpec((s.size,), np.promote_types(s.dtype, np.float32)) if is_float(s.dtype)
                else ArraySpec((0,), np.dtype(np.float64)) for s in specs]

    def _fresh_state(self, specs: list[ArraySpec]) -> dict[str, list[np.ndarray]]:
        return {moment: [np.full(s.size, self.initial(moment), dtype=s.dtype) for s in self._moment_specs(specs)]
                for moment in self.moments}

    # -- the round ----------------------------------------------------------------------------
    def begin(self, global_params: Any) -> None:
        view = as_view(global_params)
        check_numeric(view.specs, "the global model")
        self._global = view
        self._spill_dir = view.scratch_dir if isinstance(view, StoredParams) else None
        self._mean.reset()
        self._result = None
        self._restore(list(view.specs))

    def accumulate(self, params: Any, num_examples: float, metadata: dict[str, Any]) -> None:
        if self._global is None:
            raise ValueError(f"{self.name} needs begin(global model) before updates")
        if self._result is not None:
            raise ValueError(f"{self.name}: the round's result was already taken")
        self._mean.add(as_view(params), num_examples, reference=self._global.specs, reference_name="the global model")

    def result(self) -> ParamsView | None:
        """Apply the step once (the sums become the new model in place) and return it."""
        if self._result is not None:
            return self._result
        if self._mean.count == 0 or self._global is None or self._mean.sums is None:
            return None
        glob = self._global
        specs = list(glob.specs)
        sums = self._mean.sums
        if self._spill_dir is None:
            if self._state is None:
                self._state = self._fresh_state(specs)
            source, target = self._state, None
        else:
            source = self._state  # None: the first round, moments start from their initial values
            target = {k: FileArrays.scratch(self._spill_dir, self._moment_dtypes(k, specs, source))
                      for k in self.moments}
        for i, start, stop in blocks(specs, block_elements(8, 6)):
            mean = self._mean.mean(i, start, stop)
            if is_float(specs[i].dtype):
                x = glob.read(i, start, stop).astype(np.float64)
                if target is None:  # in-memory moments: `step` updates their slices in place
                    moments = {k: v[i][start:stop] for k, v in self._state.items()}
                else:  # file-backed: a writable copy of each slice, written to the new state afterwards
                    moments = {k: self._moment_slice(k, source, i, start, stop, target[k].specs[i].dtype)
                               for k in self.moments}
                sums[i][start:stop] = x + self.step(mean - x, moments)
                if target is not None:
                    for k, values in moments.items():
                        target[k].write(i, start, values)
            else:
                sums[i][start:stop] = mean
        if target is not None:
            self._state = dict(target)
        self._mean.weight = 1.0  # the sums now hold the new model itself
        self._rounds += 1
        self._result = ComputedParams(specs, lambda i, a, b: cast_to(sums[i][a:b], specs[i].dtype))
        return self._result

    def _moment_dtypes(self, moment: str, specs: list[ArraySpec],
                       source: dict[str, Sequence[np.ndarray]] | None) -> list[ArraySpec]:
        """The new state's arrays for `moment`: the dtypes of the state it continues (as in-memory moments
        keep theirs), else those of a fresh one."""
        if source is None:
            return self._moment_specs(specs)
        arrays = source[moment]
        assert isinstance(arrays, ParamsView)  # `_restore` made every file-backed source a view
        return [ArraySpec((s.size,), s.dtype) for s in arrays.specs]

    def _moment_slice(self, moment: str, source: dict[str, Sequence[np.ndarray]] | None, index: int, start: int,
                      stop: int, dtype: np.dtype) -> np.ndarray:
        """A writable copy of elements [start, stop) of one moment array (its initial value when fresh)."""
        if source is None:
            return np.full(stop - start, self.initial(moment), dtype=dtype)
        arrays = source[moment]
        assert isinstance(arrays, ParamsView)
        return np.array(arrays.read(index, start, stop), dtype=dtype)

    def step(self, delta: np.ndarray, moments: dict[str, np.ndarray]) -> np.ndarray:
        """Update the moments' slices in place from the pseudo-gradient slice; return the step (float64)."""
        raise NotImplementedError

    @staticmethod
    def _momentum(m: np.ndarray, delta: np.ndarray, beta1: float) -> np.ndarray:
        value = beta1 * m + (1.0 - beta1) * delta
        m[...] = value
        return value


class FedAvgM(ServerOptimizer):
    name = "fedavgm"
    keywords: ClassVar[dict[str, Any]] = {"server_lr": 1.0, "momentum": 0.9}

    def check_options(self) -> None:
        super().check_options()
        self.options["momentum"] = number(self.options, "momentum", low=0.0, high=1.0, high_open=True)

    def step(self, delta: np.ndarray, moments: dict[str, np.ndarray]) -> np.ndarray:
        m = moments["m"]
        value = self.options["momentum"] * m + delta
        m[...] = value
        return self.options["server_lr"] * value


class _Adaptive(ServerOptimizer):
    moments: ClassVar[tuple[str, ...]] = ("m", "v")

    def check_options(self) -> None:
        super().check_options()
        self.options["beta1"] = number(self.options, "beta1", low=0.0, high=1.0, high_open=True)
        if "beta2" in self.options:
            self.options["beta2"] = number(self.options, "beta2", low=0.0, high=1.0, high_open=True)
        self.options["tau"] = number(self.options, "tau", low=0.0, low_open=True)

    def initial(self, moment: str) -> float:
        return float(self.options["tau"]) ** 2 if moment == "v" else 0.0

    def step(self, delta: np.ndarray, moments: dict[str, np.ndarray]) -> np.ndarray:
        m = self._momentum(moments["m"], delta, self.options["beta1"])
        v_slot = moments["v"]
        v = self.second_moment(v_slot.astype(np.float64), delta * delta)
        v_slot[...] = v
        return self.options["server_lr"] * m / (np.sqrt(v) + self.options["tau"])

    def second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class FedAdam(_Adaptive):
    name = "fedadam"
    keywords: ClassVar[dict[str, Any]] = {"server_lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}

    def second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        beta2 = self.options["beta2"]
        return beta2 * v + (1.0 - beta2) * d2


class FedYogi(_Adaptive):
    name = "fedyogi"
    keywords: ClassVar[dict[str, Any]] = {"server_lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}

    def second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return v - (1.0 - self.options["beta2"]) * d2 * np.sign(v - d2)


class FedAdagrad(_Adaptive):
    name = "fedadagrad"
    keywords: ClassVar[dict[str, Any]] = {"server_lr": 0.01, "beta1": 0.9, "tau": 1e-3}

    def second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return v + d2
