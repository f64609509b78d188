"""The contract every model helper fulfils, so aggregation and transfer code stays framework-agnostic."""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from typing import IO, Any


class HelperBase(ABC):
    """A helper turns a framework's parameters into one binary object and back, and knows how to average them.

    `name` is the plugin module name (e.g. "numpyhelper"); it is what a model container records as
    `helper_type`, so `get_helper(helper.name)` must give back an equivalent helper.
    """

    name: str = "helperbase"

    @abstractmethod
    def increment_average(self, m1: Any, m2: Any, n: float, N: float) -> Any:  # noqa: N803 (the usual notation)
        """One step of a running weighted mean: m1 + n * (m2 - m1) / N."""

    @abstractmethod
    def save(self, model: Any, path: str | os.PathLike[str] | IO[bytes] | None = None
             ) -> str | os.PathLike[str] | IO[bytes]:
        """Serialise `model` to a path or writable file-like (a temp file when None); return where it went."""

    @abstractmethod
    def load(self, path: str | os.PathLike[str] | IO[bytes]) -> Any:
        """Read parameters back from a path or readable file-like."""

    @staticmethod
    def get_tmp_path(suffix: str = ".npz") -> str:
        """A fresh temp file path (the file exists and is empty; the caller removes it)."""
        fd, path = tempfile.mkstemp(suffix=suffix)
        os.close(fd)
        return path
