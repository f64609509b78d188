"""Parameters as a list of numpy arrays, serialised as an NPZ whose arrays are named "0".."N-1".

The NPZ is the de-facto model wire format of Scaleout Edge, so the layout must stay readable by
`numpy.load`: a ZIP of DEFLATE-compressed members `0.npy`, `1.npy`, ... with standard `.npy` headers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np

from scaleoututil.helpers.helperbase import HelperBase

Params = list[np.ndarray]
SUPPORTED_FILE_TYPES = ("npz", "raw_binary")
_FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # constant timestamps: same arrays, same bytes, same checksum
_SPOOL_MAX = 10 * 1024 * 1024
_RAW_DTYPE = np.dtype("<f8")


def _as_arrays(model: Sequence[Any]) -> Params:
    if isinstance(model, np.ndarray) or not isinstance(model, Sequence):
        raise TypeError(f"model parameters must be a list of numpy arrays, got {type(model).__name__}")
    return [np.asarray(x) for x in model]


def _pairs(m1: Sequence[Any], m2: Sequence[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pair up the arrays of two models, refusing models whose layouts differ."""
    a1, a2 = _as_arrays(m1), _as_arrays(m2)
    if len(a1) != len(a2):
        raise ValueError(f"models have different numbers of arrays: {len(a1)} and {len(a2)}")
    for i, (x, y) in enumerate(zip(a1, a2, strict=True)):
        if x.shape != y.shape:
            raise ValueError(f"shape mismatch at array {i}: {x.shape} vs {y.shape}")
    return list(zip(a1, a2, strict=True))


class Helper(HelperBase):
    """numpy arrays in, numpy arrays out; element-wise arithmetic for aggregators."""

    name = "numpyhelper"
    default_file_type = "npz"

    # ---- arithmetic used by aggregators -------------------------------------------------------------

    def increment_average(self, m1: Sequence[Any], m2: Sequence[Any], n: float, N: float) -> Params:  # noqa: N803
        """Running weighted mean step, per array: x + n * (y - x) / N."""
        return [x + n * (y - x) / N for x, y in _pairs(m1, m2)]

    def add(self, m1: Sequence[Any], m2: Sequence[Any], a: float = 1.0, b: float = 1.0) -> Params:
        """Per array x * a + y * b."""
        return [x * a + y * b for x, y in _pairs(m1, m2)]

    def subtract(self, m1: Sequence[Any], m2: Sequence[Any], a: float = 1.0, b: float = 1.0) -> Params:
        """Per array x * a - y * b."""
        return [x * a - y * b for x, y in _pairs(m1, m2)]

    def multiply(self, m1: Sequence[Any], m2: Sequence[Any]) -> Params:
        return [np.multiply(x, y) for x, y in _pairs(m1, m2)]

    def divide(self, m1: Sequence[Any], m2: Sequence[Any]) -> Params:
        return [np.divide(x, y) for x, y in _pairs(m1, m2)]

    def _map(self, m: Sequence[Any], fn: Callable[[np.ndarray], np.ndarray]) -> Params:
        return [fn(x) for x in _as_arrays(m)]

    def sqrt(self, m: Sequence[Any]) -> Params:
        return self._map(m, np.sqrt)

    def sign(self, m: Sequence[Any]) -> Params:
        return self._map(m, np.sign)

    def power(self, m: Sequence[Any], a: float) -> Params:
        return self._map(m, lambda x: np.power(x, a))

    def scale(self, m: Sequence[Any], a: float) -> Params:
        return self._map(m, lambda x: x * a)

    def ones(self, m: Sequence[Any], a: float = 1.0) -> Params:
        """Arrays shaped like `m`, every element `a` (dtype widened if `a` needs it)."""
        return self._map(m, lambda x: np.full(x.shape, a, dtype=np.result_type(x, a)))

    def zeros_like(self, m: Sequence[Any]) -> Params:
        return self._map(m, np.zeros_like)

    def norm(self, m: Sequence[Any]) -> float:
        """Sum over arrays of the L1 norm of each flattened array.

        Deliberately element-wise for every shape: the official helper uses the matrix 1-norm (max column
        sum) for 2-D arrays and fails on >2-D ones, which is rarely what an aggregator wants.
        """
        return float(sum(np.abs(x).sum() for x in _as_arrays(m)))

    # ---- serialisation ------------------------------------------------------------------------------

    @staticmethod
    def check_supported_file_type(file_type: str) -> None:
        if file_type not in SUPPORTED_FILE_TYPES:
            raise ValueError(f"unsupported file_type {file_type!r}; use one of: {', '.join(SUPPORTED_FILE_TYPES)}")

    def save(self, model: Sequence[Any], path: str | os.PathLike[str] | IO[bytes] | None = None,
             file_type: str | None = None) -> str | os.PathLike[str] | IO[bytes]:
        """Write the arrays to `path` (exactly that path; a temp file when None) or a writable file-like.

        Returns the path or the file object (left positioned after the written bytes).
        """
        file_type = file_type or self.default_file_type
        self.check_supported_file_type(file_type)
        writer = _write_npz if file_type == "npz" else _write_raw
        arrays = _as_arrays(model)
        if path is None:
            path = self.get_tmp_path(".npz" if file_type == "npz" else ".bin")
        if isinstance(path, str | os.PathLike):  # a pathlib.Path is a path too, not a file object
            with open(path, "wb") as fh:
                writer(arrays, fh)
            return path
        writer(arrays, path)
        return path

    def load(self, path: str | os.PathLike[str] | IO[bytes], file_type: str | None = None) -> Params:
        """Read arrays back from a path or readable file-like (read from its current position)."""
        file_type = file_type or self.default_file_type
        self.check_supported_file_type(file_type)
        reader = _read_npz if file_type == "npz" else _read_raw
        if isinstance(path, str | os.PathLike):
            with open(path, "rb") as fh:  # a missing file is a FileNotFoundError, not a format error
                return reader(fh)
        return reader(path)


NPZ_COMPRESS_LEVEL = 1
COMPRESSIBLE_RATIO = 0.8  # deflate an array only if a sample of it shrinks below this fraction
_SAMPLE_BYTES = 1024 * 1024


def _compress_type(arr: np.ndarray) -> int:
    """DEFLATE for arrays that compress (sparse, quantised, constant), STORED for those that do not.

    Trained float weights barely compress (random-like mantissas), yet deflating them cost ~4 s per
    100 MB; a 1 MiB sample decides in milliseconds. Both entry types are standard ZIP, so any NPZ
    reader (numpy, the official clients) loads the result."""
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    sample = flat[:_SAMPLE_BYTES].tobytes()
    if not sample:
        return zipfile.ZIP_DEFLATED
    return (zipfile.ZIP_DEFLATED if len(zlib.compress(sample, NPZ_COMPRESS_LEVEL)) < COMPRESSIBLE_RATIO * len(sample)
            else zipfile.ZIP_STORED)


def _set_fast_compression(info: zipfile.ZipInfo) -> None:
    """DEFLATE level 1: nearly the size of level 6 (the default) at a fraction of the time.
    (The attribute is `_compresslevel` before Python 3.13, `compress_level` after.)"""
    for name in ("compress_level", "_compresslevel"):
        try:
            setattr(info, name, NPZ_COMPRESS_LEVEL)
            return
        except AttributeError:  # ZipInfo has __slots__: only one of the two names exists
            continue


def _write_npz(arrays: Params, fh: IO[bytes]) -> None:
    """The layout of `numpy.savez_compressed` (members `0.npy`, `1.npy`, ...), with fixed timestamps
    so the bytes are reproducible, and each member deflated only when that pays (`_compress_type`)."""
    with zipfile.ZipFile(fh, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for i, arr in enumerate(arrays):
            info = zipfile.ZipInfo(f"{i}.npy", date_time=_FIXED_DATE_TIME)
            info.compress_type = _compress_type(arr)
            _set_fast_compression(info)
            info.external_attr = 0o600 << 16
            with zf.open(info, mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)


def _read_npz(fh: IO[bytes]) -> Params:
    if not _seekable(fh):  # numpy needs to seek inside the ZIP
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MAX)
        shutil.copyfileobj(fh, spool, 1024 * 1024)
        spool.seek(0)
        fh = spool
    start = fh.tell()
    magic = fh.read(4)
    fh.seek(start)
    if magic != b"PK\x03\x04":
        raise ValueError(f"not a valid NPZ model file: it does not start with a ZIP signature (got {magic!r})")
    try:
        npz = np.load(fh, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an NPZ archive")
        with npz:
            keys = sorted(npz.files, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
            expected = [str(i) for i in range(len(keys))]
            if keys != expected:
                raise ValueError(f"arrays must be named '0'..'N-1', found {keys[:10]}")
            return [npz[k] for k in expected]
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"not a valid NPZ model file: {exc}") from exc


def _write_raw(arrays: Params, fh: IO[bytes]) -> None:
    """All arrays flattened, cast to little-endian float64 and concatenated (shapes are not kept)."""
    for arr in arrays:
        fh.write(np.ascontiguousarray(arr.ravel(), dtype=_RAW_DTYPE).tobytes())


def _read_raw(fh: IO[bytes]) -> Params:
    data = fh.read()
    if len(data) % _RAW_DTYPE.itemsize:
        raise ValueError(f"not a valid raw float64 model file: {len(data)} bytes is not a multiple of 8")
    return [np.frombuffer(data, dtype=_RAW_DTYPE).astype(np.float64)]


def _seekable(fh: IO[bytes]) -> bool:
    try:
        return bool(fh.seekable())
    except (AttributeError, ValueError):
        return False
