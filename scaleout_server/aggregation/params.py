"""Model parameters that strategies read a slice at a time, so no strategy needs a whole model in memory.

A `ParamsView` is a sequence of arrays (indexing one materialises it, which tests and small models
use) that can also hand out any contiguous run of one array's flattened elements (`read`). Stored
updates (`stored.StoredParams`), plain lists of arrays (`ArrayParams`) and a strategy's result
(`ComputedParams`) all look the same to the code that folds or writes them.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

BLOCK_BYTES = 8 * 1024 * 1024  # one slice of one array: large enough for fast numpy, small next to any model


@dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of one array of a model."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


class ParamsView(Sequence[np.ndarray]):
    """Arrays readable slice by slice: `read(i, start, stop)` gives elements [start, stop) of array i,
    flattened in C order, in the array's dtype (read-only; copy before changing it)."""

    specs: list[ArraySpec]

    @abstractmethod
    def read(self, index: int, start: int, stop: int) -> np.ndarray: ...

    def release(self) -> None:
        """Give back any open file handle (reads reopen it); lets many stored updates wait cheaply."""
        return None

    def close(self) -> None:
        """Free what the view holds (files it created); reading afterwards is an error."""
        return None

    def __len__(self) -> int:
        return len(self.specs)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        spec = self.specs[index]  # IndexError past the end ends iteration
        i = index % len(self.specs)
        return np.array(self.read(i, 0, spec.size)).reshape(spec.shape)


class ArrayParams(ParamsView):
    """A list of in-memory arrays as a view (each array flattened once, without a copy when contiguous)."""

    def __init__(self, arrays: Sequence[Any]) -> None:
        self._flat = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
        self.specs = [ArraySpec(tuple(np.shape(a)), f.dtype) for a, f in zip(arrays, self._flat, strict=True)]

    def read(self, index: int, start: int, stop: int) -> np.ndarray:
        return self._flat[index][start:stop]


class ComputedParams(ParamsView):
    """A result computed slice by slice when read (e.g. a mean scaled and cast on the way to disk)."""

    def __init__(self, specs: list[ArraySpec], compute: Callable[[int, int, int], np.ndarray]) -> None:
        self.specs = specs
        self._compute = compute

    def read(self, index: int, start: int, stop: int) -> np.ndarray:
        return self._compute(index, start, stop)


def as_view(params: Any) -> ParamsView:
    """numpyhelper params (a list of arrays, a bare array, or a view already) as a ParamsView."""
    if isinstance(params, ParamsView):
        return params
    if isinstance(params, np.ndarray):
        return ArrayParams([params])
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        return ArrayParams([np.asarray(p) for p in params])
    raise TypeError(f"aggregation needs a list of numpy arrays (numpyhelper params), got {type(params).__name__}")


def blocks(specs: Sequence[ArraySpec], max_elements: int) -> Iterator[tuple[int, int, int]]:
    """(array index, start, stop) runs covering every element, each at most `max_elements` long."""
    step = max(1, int(max_elements))
    for i, spec in enumerate(specs):
        for start in range(0, spec.size, step):
            yield i, start, min(start + step, spec.size)


def block_elements(itemsize: int = 8, copies: int = 1, budget: int | None = None) -> int:
    """Elements per block so that `copies` arrays of `itemsize` bytes fit in `budget` bytes
    (default `BLOCK_BYTES`); never fewer than 1024, so tiny budgets do not mean tiny reads."""
    return max(1024, (BLOCK_BYTES if budget is None else budget) // max(1, itemsize * copies))


def check_numeric(specs: Sequence[ArraySpec], what: str = "the update") -> None:
    """Only numbers (and booleans) can be aggregated; anything else would fail halfway through a fold."""
    for i, spec in enumerate(specs):
        numeric = np.issubdtype(spec.dtype, np.number) or np.issubdtype(spec.dtype, np.bool_)
        if not numeric or np.issubdtype(spec.dtype, np.complexfloating):
            raise ValueError(f"array {i} of {what} has dtype {spec.dtype}; aggregation needs real numeric arrays")


def check_layout(expected: Sequence[ArraySpec], got: Sequence[ArraySpec], what: str = "the update",
                 reference: str = "earlier updates") -> None:
    """Same number of arrays with the same shapes (dtypes may differ: they are cast)."""
    if len(got) != len(expected):
        raise ValueError(f"{what} has {len(got)} arrays, {reference} had {len(expected)}")
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        if e.shape != g.shape:
            raise ValueError(f"array {i} of {what} has shape {g.shape}, expected {e.shape}")


def check_update(view: ParamsView, num_examples: float, expected: Sequence[ArraySpec] | None,
                 reference: str = "earlier updates") -> float:
    """The weight of a client update that can be aggregated: `num_examples` > 0 and finite, numeric arrays
    laid out like `expected` (None: nothing to compare with yet). Raises before anything is folded, so a
    rejected update leaves no trace."""
    weight = float(num_examples)
    if not weight > 0 or not np.isfinite(weight):
        raise ValueError(f"num_examples must be > 0 to weight an update, got {num_examples!r}")
    check_numeric(view.specs)
    if expected is not None:
        check_layout(expected, view.specs, reference=reference)
    return weight


def is_float(dtype: np.dtype) -> bool:
    return bool(np.issubdtype(dtype, np.floating))


def cast_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float64 results back to an array's own dtype: integers and booleans are rounded first."""
    if np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_):
        return np.rint(values).astype(dtype)
    return values.astype(dtype, copy=False)
