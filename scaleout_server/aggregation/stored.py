"""Model files read in place, a slice at a time, and results written the same way.

An update arrives as a container (ZIP) whose `training_model.bin` is an NPZ (numpyhelper) or raw
float64 bytes (binaryhelper). Our clients store both the container entry and incompressible NPZ
members uncompressed, so every array is a plain run of bytes at a known offset of the update file:
`StoredParams` finds those offsets once and then reads any slice with one `pread`, never holding more
than that slice. Compressed parts (the official clients deflate their NPZ members) are inflated once,
streaming, into a scratch file next to the update, and read from there the same way. Reads use
`pread` rather than `mmap` so touched pages never count as the combiner's resident memory.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tempfile
import uuid
import weakref
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from scaleout_server.aggregation.params import ArraySpec, ParamsView, block_elements, blocks
from scaleoututil.model import _FIXED_DATE_TIME, METADATA_ENTRY, TRAINING_ENTRY
from scaleoututil.protocol import CHUNK_SIZE

ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = 30


@dataclass(frozen=True)
class _Segment:
    """Where one array's bytes live: a file and the offset of its first element."""

    path: Path
    offset: int


class _Window(io.RawIOBase):
    """Bytes [offset, offset + length) of an open file as a seekable stream: lets zipfile read the NPZ
    stored inside a container without copying it out."""

    def __init__(self, fh: BinaryIO, offset: int, length: int) -> None:
        self._fh = fh
        self._offset = offset
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = max(0, min(len(view), self._length - self._pos))
        if want == 0:
            return 0
        self._fh.seek(self._offset + self._pos)
        got = self._fh.readinto(view[:want]) or 0
        self._pos += got
        return got


def _data_offset(fh: BinaryIO, header_offset: int) -> int:
    """Offset of a ZIP entry's data: after its local header, whose name and extra lengths may differ
    from the central directory's."""
    fh.seek(header_offset)
    header = fh.read(_LOCAL_HEADER)
    if len(header) != _LOCAL_HEADER or header[:4] != ZIP_MAGIC:
        raise ValueError("corrupt ZIP: bad local file header")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return header_offset + _LOCAL_HEADER + name_len + extra_len


def _read_npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """(shape, fortran_order, dtype) of the .npy at the stream's position; None for a header version
    only `numpy.lib.format.read_array` understands."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    return None


def _file_type(helper: Any) -> str | None:
    return getattr(helper, "default_file_type", None) if helper is not None else None


class StoredParams(ParamsView):
    """The arrays of a model file (container, bare NPZ or raw float64), read slice by slice in place.

    `open` checks the layout (names "0".."N-1", sizes that match the headers, numeric dtypes) before
    anything is read, so a corrupt or truncated update fails when it is folded, not halfway through.
    """

    def __init__(self, path: Path, scratch_dir: Path) -> None:
        self.path = Path(path)
        self.specs = []
        self._segments: list[_Segment] = []
        self._scratch_dir = scratch_dir
        self._scratch: Path | None = None
        self._scratch_fh: BinaryIO | None = None
        self._fds: dict[Path, int] = {}
        self._closed = False

    @classmethod
    def open(cls, path: str | os.PathLike[str], helper: Any = None,
             scratch_dir: str | os.PathLike[str] | None = None) -> StoredParams:
        """Index the model file at `path`. `helper` decides how raw (non-ZIP) bytes are read; inflated
        copies go to `scratch_dir` (default: the file's folder) and are deleted by `close`."""
        path = Path(path)
        view = cls(path, Path(scratch_dir) if scratch_dir is not None else path.parent)
        try:
            view._index(helper)
            for segment in view._segments:  # held open: a sweep deleting old files by name cannot break a round
                view._fd(segment.path)
        except BaseException:
            view.close()
            raise
        finally:
            view._end_scratch()
        return view

    # -- indexing ------------------------------------------------------------------------------
    def _index(self, helper: Any) -> None:
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            region, offset, length = self.path, 0, size
            if fh.read(4) == ZIP_MAGIC:
                region, offset, length = self._training_region(fh, size)
        with open(region, "rb") as fh:
            fh.seek(offset)
            magic = fh.read(4)
            if magic == ZIP_MAGIC:
                self._index_npz(fh, region, offset, length)
            elif _file_type(helper) == "raw_binary":
                if length % 8:
                    raise ValueError(f"raw float64 model has {length} bytes, not a multiple of 8")
                self.specs = [ArraySpec((length // 8,), np.dtype("<f8"))]
                self._segments = [_Segment(region, offset)]
            elif helper is not None:
                fh.seek(offset)
                self._adopt_arrays(helper.load(_Window(fh, offset, length)))
            else:
                raise ValueError("not an NPZ model and no helper given to read it")

    def _training_region(self, fh: BinaryIO, size: int) -> tuple[Path, int, int]:
        """(file, offset, length) of the training model: in place when the container stores it
        uncompressed, else inflated into the scratch file. A ZIP without metadata.json is a bare NPZ."""
        fh.seek(0)
        with zipfile.ZipFile(fh) as zf:
            names = zf.namelist()
            if METADATA_ENTRY not in names:
                return self.path, 0, size
            if TRAINING_ENTRY not in names:
                raise ValueError(f"model container has no {TRAINING_ENTRY}")
            info = zf.getinfo(TRAINING_ENTRY)
            if info.flag_bits & 0x1:
                raise ValueError(f"{TRAINING_ENTRY} is encrypted")
            if info.compress_type == zipfile.ZIP_STORED:
                start = _data_offset(fh, info.header_offset)
                if start + info.file_size > size:
                    raise ValueError(f"model container is truncated ({size} bytes)")
                return self.path, start, info.file_size
            scratch, start = self._scratch_file()
            with zf.open(info) as src:
                shutil.copyfileobj(src, scratch, CHUNK_SIZE)
            scratch.flush()
            return self._scratch_path(), start, scratch.tell() - start

    def _index_npz(self, fh: BinaryIO, region: Path, offset: int, length: int) -> None:
        window = _Window(fh, offset, length)
        with zipfile.ZipFile(window) as npz:
            names = set(npz.namelist())
            count = len(names)
            expected = [f"{i}.npy" for i in range(count)]
            if set(expected) != names:
                found = [n.removesuffix(".npy") for n in sorted(names)[:10]]
                raise ValueError(f"NPZ arrays must be named '0'..'N-1', found {found}")
            for name in expected:
                info = npz.getinfo(name)
                if info.flag_bits & 0x1:
                    raise ValueError(f"NPZ member {name} is encrypted")
                if info.compress_type == zipfile.ZIP_STORED and self._index_stored_member(window, info, region,
                                                                                           offset):
                    continue
                self._inflate_member(npz, info)

    def _index_stored_member(self, window: _Window, info: zipfile.ZipInfo, region: Path, offset: int) -> bool:
        """Point at an uncompressed member's data in place; False when its header needs the slow path."""
        start = _data_offset(window, info.header_offset)
        window.seek(start)
        header = _read_npy_header(window)
        if header is None or header[1]:  # newer header version or Fortran order: materialise it
            return False
        shape, _, dtype = header
        spec = self._spec(shape, dtype, info.filename)
        data = window.tell()
        if data - start + spec.nbytes != info.file_size:
            raise ValueError(f"NPZ member {info.filename} holds {info.file_size} bytes, its header needs "
                             f"{data - start + spec.nbytes}: the model file is truncated or corrupt")
        self.specs.append(spec)
        self._segments.append(_Segment(region, offset + data))
        return True

    def _inflate_member(self, npz: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        """Copy a compressed (or Fortran-ordered) member's elements, C order, into the scratch file."""
        scratch, start = self._scratch_file()
        with npz.open(info) as member:
            header = _read_npy_header(member)
            if header is not None and not header[1]:
                spec = self._spec(header[0], header[2], info.filename)
                shutil.copyfileobj(member, scratch, CHUNK_SIZE)
                written = scratch.tell() - start
                if written != spec.nbytes:
                    raise ValueError(f"NPZ member {info.filename} has {written} data bytes, its header says "
                                     f"{spec.nbytes}")
                self.specs.append(spec)
                self._segments.append(_Segment(self._scratch_path(), start))
                return
        with npz.open(info) as member:  # only this one array is in memory
            array = np.lib.format.read_array(member, allow_pickle=False)
        self._append_array(array, info.filename)

    def _adopt_arrays(self, arrays: Sequence[Any]) -> None:
        """Params a helper loaded (formats we cannot read in place): written out once, one array at a time."""
        if isinstance(arrays, np.ndarray) or not isinstance(arrays, Sequence):
            raise ValueError(f"the helper returned {type(arrays).__name__}, not a list of arrays")
        for i, array in enumerate(arrays):
            self._append_array(np.asarray(array), f"array {i}")

    def _append_array(self, array: np.ndarray, name: str) -> None:
        spec = self._spec(tuple(array.shape), array.dtype, name)
        scratch, start = self._scratch_file()
        scratch.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
        self.specs.append(spec)
        self._segments.append(_Segment(self._scratch_path(), start))

    @staticmethod
    def _spec(shape: tuple[int, ...], dtype: np.dtype, name: str) -> ArraySpec:
        if dtype.hasobject or dtype.itemsize == 0:
            raise ValueError(f"{name} has dtype {dtype}; only numeric arrays can be aggregated")
        return ArraySpec(tuple(int(n) for n in shape), dtype)

    def _scratch_file(self) -> tuple[BinaryIO, int]:
        """The scratch file, open for appending, and where the next bytes will go."""
        if self._scratch_fh is None:
            self._scratch_dir.mkdir(parents=True, exist_ok=True)
            self._scratch = self._scratch_dir / f".{self.path.name}.{uuid.uuid4().hex[:8]}.arrays"
            self._scratch_fh = open(self._scratch, "w+b")  # noqa: SIM115 - closed by _end_scratch
        self._scratch_fh.seek(0, io.SEEK_END)
        return self._scratch_fh, self._scratch_fh.tell()

    def _scratch_path(self) -> Path:
        assert self._scratch is not None
        return self._scratch

    def _end_scratch(self) -> None:
        if self._scratch_fh is not None:
            self._scratch_fh.close()
            self._scratch_fh = None

    # -- reading -------------------------------------------------------------------------------
    def read(self, index: int, start: int, stop: int) -> np.ndarray:
        if self._closed:
            raise ValueError(f"stored model {self.path.name} is closed")
        spec = self.specs[index]
        start, stop = max(0, start), min(stop, spec.size)
        out = np.empty(max(0, stop - start), dtype=spec.dtype)
        if out.size == 0:
            return out
        segment = self._segments[index]
        _pread_into(self._fd(segment.path), out, segment.offset + start * spec.dtype.itemsize,
                    f"stored model {self.path.name}")
        return out

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            self._fds[path] = fd
        return fd

    def release(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    @property
    def scratch_dir(self) -> Path:
        """The folder for this view's scratch files (the work folder of the round that opened it)."""
        return self._scratch_dir

    def close(self) -> None:
        """Close the file handles and delete the scratch file (the model file itself stays)."""
        self._closed = True
        self.release()
        self._end_scratch()
        if self._scratch is not None:
            self._scratch.unlink(missing_ok=True)
            self._scratch = None


def _pread_into(fd: int, out: np.ndarray, offset: int, what: str) -> None:
    """Fill `out` with the bytes of `fd` from `offset` on (pread: the file's pages never count as ours)."""
    raw = out.view(np.uint8)
    done = 0
    while done < raw.size:
        got = os.preadv(fd, [raw[done:]], offset + done)
        if got <= 0:
            raise ValueError(f"{what} ended early (truncated while in use?)")
        done += got


class FileArrays(ParamsView):
    """Flat arrays at known offsets of one open file, read and written a slice at a time (pread/pwrite).

    What keeps a whole-model-sized state (server optimiser moments) out of memory: the saved state is
    read in place from its NPZ (`npz_members`) and the new one goes to an unlinked scratch file
    (`scratch`). The descriptor is closed by `close` or when the view is garbage-collected, so state
    handed from one round's strategy to the state store needs no owner to free it.
    """

    def __init__(self, fd: int, specs: list[ArraySpec], offsets: list[int], what: str) -> None:
        self.specs = specs
        self._fd = fd
        self._offsets = offsets
        self._what = what
        self._closer = weakref.finalize(self, os.close, fd)

    @classmethod
    def scratch(cls, folder: Path, specs: list[ArraySpec]) -> FileArrays:
        """Zero-filled arrays of `specs` in a new file in `folder`, unlinked at once: its space is
        given back when the view is closed or dropped, even after a crash."""
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".state-", suffix=".arrays", dir=folder)
        os.unlink(name)
        offsets, end = [], 0
        for spec in specs:
            offsets.append(end)
            end += spec.nbytes
        try:
            os.ftruncate(fd, end)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, [ArraySpec((spec.size,), spec.dtype) for spec in specs], offsets, "scratch state file")

    @classmethod
    def npz_members(cls, path: Path, names: Sequence[str]) -> FileArrays:
        """Members `names` (without ".npy") of an NPZ stored uncompressed (`numpy.savez`, `write_npz_member`),
        read in place. ValueError when one is compressed or Fortran-ordered: read those with numpy."""
        fd = os.open(path, os.O_RDONLY)
        try:
            specs, offsets = [], []
            with os.fdopen(os.dup(fd), "rb") as fh, zipfile.ZipFile(fh) as npz:  # the same file as `fd`
                for name in names:
                    info = npz.getinfo(f"{name}.npy")
                    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                        raise ValueError(f"NPZ member {name} is compressed or encrypted")
                    start = _data_offset(fh, info.header_offset)
                    fh.seek(start)
                    header = _read_npy_header(fh)
                    if header is None or header[1]:
                        raise ValueError(f"NPZ member {name} has a header version or order not read in place")
                    spec = StoredParams._spec(header[0], header[2], name)
                    data = fh.tell()
                    if data - start + spec.nbytes != info.file_size:
                        raise ValueError(f"NPZ member {name} holds {info.file_size} bytes, its header needs "
                                         f"{data - start + spec.nbytes}")
                    specs.append(spec)
                    offsets.append(data)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, specs, offsets, f"state file {path.name}")

    def read(self, index: int, start: int, stop: int) -> np.ndarray:
        if not self._closer.alive:
            raise ValueError(f"{self._what} is closed")
        spec = self.specs[index]
        start, stop = max(0, start), min(stop, spec.size)
        out = np.empty(max(0, stop - start), dtype=spec.dtype)
        if out.size:
            _pread_into(self._fd, out, self._offsets[index] + start * spec.dtype.itemsize, self._what)
        return out

    def write(self, index: int, start: int, values: np.ndarray) -> None:
        """Store `values` (cast to the array's dtype) as elements [start, start + len) of array `index`."""
        spec = self.specs[index]
        if start < 0 or start + values.size > spec.size:
            raise ValueError(f"elements [{start}, {start + values.size}) are outside an array of {spec.size}")
        raw = memoryview(np.ascontiguousarray(values, dtype=spec.dtype).reshape(-1).view(np.uint8))
        offset = self._offsets[index] + start * spec.dtype.itemsize
        while raw:
            done = os.pwrite(self._fd, raw, offset)
            raw, offset = raw[done:], offset + done

    def close(self) -> None:
        self._closer()


def open_copy(source: BinaryIO, path: Path, helper: Any, scratch_dir: Path | None = None) -> StoredParams:
    """Copy a model stream (e.g. from the model repository) to the local file `path` and open it in
    place. The caller deletes `path` after closing the view, also when this raises."""
    with open(path, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK_SIZE)
    return StoredParams.open(path, helper, scratch_dir)


# -- writing ------------------------------------------------------------------------------------
def write_params(params: ParamsView, out: BinaryIO, helper: Any) -> None:
    """Serialise a view in the helper's format, slice by slice (NPZ and raw float64); any other
    helper gets the arrays materialised and writes them itself."""
    file_type = _file_type(helper)
    if file_type == "npz":
        write_npz(params, out)
    elif file_type == "raw_binary":
        write_raw(params, out)
    else:
        helper.save(list(params), out)


def write_npz(params: ParamsView, out: BinaryIO) -> None:
    """An NPZ readable by `numpy.load` (members "0.npy".."N-1.npy", fixed timestamps), every member
    stored uncompressed so the next round reads it in place; written one slice at a time."""
    with zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for i in range(len(params.specs)):
            write_npz_member(zf, str(i), params, i)


def write_npz_member(zf: zipfile.ZipFile, name: str, params: ParamsView, index: int) -> None:
    """Array `index` of a view as the uncompressed member `<name>.npy` of an NPZ being written, one slice
    at a time (so it can be read in place later, and never needs the whole array in memory)."""
    spec = params.specs[index]
    info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_DATE_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o600 << 16
    with zf.open(info, mode="w", force_zip64=True) as member:
        write_npy_header(member, spec)
        for _, start, stop in blocks([spec], block_elements(8, 2)):  # results are often computed in float64
            chunk = np.ascontiguousarray(params.read(index, start, stop), dtype=spec.dtype)
            member.write(chunk.view(np.uint8).data)


def write_npy_header(fh: IO[bytes], spec: ArraySpec) -> None:
    """The `.npy` header of a C-ordered array of `spec` (format 1.0, or 2.0 when too long for 1.0); the
    array's bytes follow it."""
    header = {"descr": np.lib.format.dtype_to_descr(spec.dtype), "fortran_order": False, "shape": spec.shape}
    try:
        np.lib.format.write_array_header_1_0(fh, header)
    except ValueError:  # a header too long for version 1.0
        np.lib.format.write_array_header_2_0(fh, header)


def write_raw(params: ParamsView, out: BinaryIO) -> None:
    """binaryhelper's format: every array flattened, little-endian float64, back to back."""
    for i, spec in enumerate(params.specs):
        for _, start, stop in blocks([spec], block_elements(8)):
            out.write(np.ascontiguousarray(params.read(i, start, stop), dtype="<f8").view(np.uint8).data)
