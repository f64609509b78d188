"""ScaleoutModel: a model's bytes plus the id and helper that give them meaning.

On the wire and in the repository a model is a *container*: a ZIP holding `metadata.json`
(`{"model_id": ..., "helper_type": ..., "_version": 2, ...}`) and `training_model.bin` (the
helper's serialisation, e.g. an NPZ). A bare NPZ (or any non-container bytes) is accepted on
input and wrapped. Containers are written deterministically (fixed ZIP timestamps, fixed entry
order, sorted JSON keys), so the same id + metadata + parameters always give the same bytes and
the same checksum.

Bytes live in `tempfile.SpooledTemporaryFile`s (memory up to 10 MiB, then disk) and are moved in
1 MiB pieces, so a model never has to fit in memory as a whole.
"""

from __future__ import annotations

import json
import tempfile
import threading
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any, BinaryIO

from scaleoututil.checksum import sha256_stream
from scaleoututil.grpc import scaleout_pb2
from scaleoututil.protocol import CHUNK_SIZE

CONTAINER_VERSION = 2
METADATA_ENTRY = "metadata.json"
TRAINING_ENTRY = "training_model.bin"
SPOOL_MAX_SIZE = 10 * 1024 * 1024  # bytes kept in memory before a model spills to a temp file
MAX_METADATA_SIZE = 4 * 1024 * 1024  # metadata.json is small; refuse anything that is clearly not
RESERVED_METADATA_KEYS = frozenset({"model_id", "helper_type", "_version"})
DEFAULT_HELPER = "numpyhelper"

_FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, zlib.error)


class InvalidModel(ValueError):
    """Bytes that are neither a valid container nor loadable by the requested helper."""


# ---- container functions ----------------------------------------------------------------------------

def new_spool() -> tempfile.SpooledTemporaryFile[bytes]:
    """Where model bytes go: memory up to SPOOL_MAX_SIZE, then a temp file (`fileno()` forces the file)."""
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_SIZE)


def _copy(src: IO[bytes], dst: IO[bytes]) -> int:
    size = 0
    while piece := src.read(CHUNK_SIZE):
        dst.write(piece)
        size += len(piece)
    return size


def _zip_info(name: str, compress_type: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    """Entry header with every platform- and time-dependent field pinned, for reproducible bytes."""
    info = zipfile.ZipInfo(name, date_time=_FIXED_DATE_TIME)
    info.compress_type = compress_type
    info.create_system = 3
    info.external_attr = 0o644 << 16
    return info


def is_container(stream: BinaryIO) -> bool:
    """True when the stream is a ZIP with `metadata.json` (position restored)."""
    pos = stream.tell()
    try:
        if stream.read(4) != b"PK\x03\x04":
            return False
        stream.seek(pos)
        with zipfile.ZipFile(stream) as zf:
            return METADATA_ENTRY in zf.namelist()
    except _ZIP_ERRORS:
        return False
    finally:
        stream.seek(pos)


def write_container(out: IO[bytes], model_id: str, training_model: BinaryIO, helper_type: str | None = None,
                    metadata: dict[str, Any] | None = None) -> None:
    """Write a container to `out`, streaming `training_model` in 1 MiB pieces.

    `training_model` is read from its current position to its end. Reserved keys (`model_id`,
    `helper_type`, `_version`) in `metadata` are ignored; `helper_type` is written only when given.
    """
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
    meta = {k: v for k, v in (metadata or {}).items() if k not in RESERVED_METADATA_KEYS}
    meta["model_id"] = model_id
    meta["_version"] = CONTAINER_VERSION
    if helper_type is not None:
        meta["helper_type"] = helper_type
    try:
        meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model metadata must be JSON-serialisable: {exc}") from exc
    with zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        zf.writestr(_zip_info(METADATA_ENTRY), meta_bytes)
        # force_zip64: the size is unknown up front; always forcing keeps the bytes independent of the source type.
        # STORED: the helpers' formats are compressed already (NPZ) or do not compress (raw floats); deflating
        # them again cost seconds per 100 MB for no gain. Readers, the official clients' included, accept it.
        with zf.open(_zip_info(TRAINING_ENTRY, zipfile.ZIP_STORED), mode="w", force_zip64=True) as dst:
            _copy(training_model, dst)


def read_container_metadata(stream: BinaryIO) -> dict[str, Any]:
    """The container's metadata.json (InvalidModel if not a container or `_version` > 2). Position restored."""
    pos = stream.tell()
    try:
        with zipfile.ZipFile(stream) as zf:
            with zf.open(METADATA_ENTRY) as fh:
                raw = fh.read(MAX_METADATA_SIZE + 1)
    except KeyError as exc:
        raise InvalidModel(f"not a model container: the ZIP has no {METADATA_ENTRY}") from exc
    except _ZIP_ERRORS as exc:
        raise InvalidModel(f"not a model container: {exc}") from exc
    finally:
        stream.seek(pos)
    if len(raw) > MAX_METADATA_SIZE:
        raise InvalidModel(f"{METADATA_ENTRY} is larger than {MAX_METADATA_SIZE} bytes")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"{METADATA_ENTRY} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise InvalidModel(f"{METADATA_ENTRY} must hold a JSON object, got {type(meta).__name__}")
    version = meta.get("_version", CONTAINER_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidModel(f"{METADATA_ENTRY} has a non-integer _version: {version!r}")
    if version > CONTAINER_VERSION:
        raise InvalidModel(f"model container version {version} is newer than the supported version "
                           f"{CONTAINER_VERSION}; upgrade scaleout to read it")
    return meta


def open_training_model(stream: BinaryIO) -> IO[bytes]:
    """A readable stream of `training_model.bin` inside a container.

    It reads through `stream`, so do not move `stream` while using it.
    """
    try:
        zf = zipfile.ZipFile(stream)
        return zf.open(TRAINING_ENTRY)
    except KeyError as exc:
        raise InvalidModel(f"model container has no {TRAINING_ENTRY}") from exc
    except _ZIP_ERRORS as exc:
        raise InvalidModel(f"not a model container: {exc}") from exc


# ---- ScaleoutModel ----------------------------------------------------------------------------------

def _check_model_id(model_id: Any) -> str:
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
    return model_id


class ScaleoutModel:
    """model_id: str (a uuid4 unless given); helper: the helper object last used, or None;
    helper_type: str | None (from metadata or the helper).

    Internally the bytes are held once: either as the helper's serialisation (`_training`, e.g. right
    after `from_model_params`) or as container bytes (`_container`, e.g. as received). The container is
    built lazily when first needed; received containers are kept byte-for-byte, so `checksum` equals the
    SHA-256 of what was received. Changing `model_id` or `helper_type` rebuilds the container on next use.
    All access to the backing data goes through an RLock, so one model can be shared between threads.
    """

    def __init__(self, model_id: str | None = None) -> None:
        self._lock = threading.RLock()
        self._model_id = _check_model_id(model_id) if model_id is not None else str(uuid.uuid4())
        self.helper: Any = None
        self._helper_type: str | None = None
        self._user_metadata: dict[str, Any] = {}
        self._training: tempfile.SpooledTemporaryFile[bytes] | None = new_spool()
        self._container: tempfile.SpooledTemporaryFile[bytes] | None = None
        self._checksum: str | None = None

    def close(self) -> None:
        """Release the backing temporary files now rather than when the object is collected."""
        with self._lock:
            for spool in (self._training, self._container):
                if spool is not None:
                    spool.close()
            self._training = self._container = None

    def __enter__(self) -> ScaleoutModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: S110 - interpreter shutdown may have torn down what close() uses
            pass

    def __repr__(self) -> str:
        return f"ScaleoutModel(model_id={self._model_id!r}, helper_type={self._helper_type!r})"

    # ---- identity and metadata ----

    @property
    def model_id(self) -> str:
        return self._model_id

    @model_id.setter
    def model_id(self, value: str) -> None:
        """Re-stamp the model (e.g. a client gives its update the id it was asked for); the checksum changes."""
        value = _check_model_id(value)
        with self._lock:
            if value != self._model_id:
                self._invalidate_container()
                self._model_id = value

    @property
    def helper_type(self) -> str | None:
        return self._helper_type

    @helper_type.setter
    def helper_type(self, value: str | None) -> None:
        """Record which helper reads `training_model.bin` (e.g. when wrapping a bare seed NPZ)."""
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"helper_type must be a non-empty string or None, got {value!r}")
        with self._lock:
            if value != self._helper_type:
                self._invalidate_container()
                self._helper_type = value

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the metadata.json content this model's container has (or will have)."""
        with self._lock:
            meta = dict(self._user_metadata)
            meta["model_id"] = self._model_id
            meta["_version"] = CONTAINER_VERSION
            if self._helper_type is not None:
                meta["helper_type"] = self._helper_type
            return meta

    # ---- construction ----

    @staticmethod
    def from_model_params(model_params: Any, helper: Any = None, model_id: str | None = None) -> ScaleoutModel:
        """Serialise params with the helper (numpyhelper when None)."""
        resolved = _resolve_helper(helper if helper is not None else DEFAULT_HELPER)
        model = ScaleoutModel(model_id)
        spool = new_spool()
        resolved.save(model_params, spool)
        spool.seek(0)
        model._training = spool
        model.helper = resolved
        name = getattr(resolved, "name", None)
        model._helper_type = name if isinstance(name, str) and name else None
        return model

    @staticmethod
    def from_training_model(model_params: Any, helper: Any = None,
                            metadata: dict[str, Any] | None = None) -> ScaleoutModel:
        """The published packages' name for `from_model_params` (with optional metadata entries), so
        projects written against them run here unchanged."""
        model = ScaleoutModel.from_model_params(model_params, helper=helper)
        # as published, a new model always gets a fresh id: reserved keys (model_id, ...) are dropped
        model._user_metadata = {k: v for k, v in (metadata or {}).items() if k not in RESERVED_METADATA_KEYS}
        return model

    def get_training_model(self, helper: Any = None) -> Any:
        """The published packages' name for `get_model_params`."""
        return self.get_model_params(helper)

    def get_model_params(self, helper: Any = None) -> Any:
        """Load params with the given helper (remembered) or the stored one; ValueError if none.

        Without either, the helper named by `helper_type` is used. `helper` may also be a helper name.
        """
        if helper is None:
            helper = self.helper
        if helper is None and self._helper_type is not None:
            try:
                helper = _resolve_helper(self._helper_type)
            except ValueError as exc:
                raise ValueError(f"model {self._model_id} was saved with helper {self._helper_type!r}, which is "
                                 f"not available here; pass a helper to get_model_params(): {exc}") from exc
        if helper is None:
            raise ValueError("No helper provided to unpack model parameters.")
        helper = _resolve_helper(helper)
        self.helper = helper
        with self.get_training_model_stream() as stream:
            return helper.load(stream)

    @staticmethod
    def from_file(path: str) -> ScaleoutModel:
        """Container (keeps its model_id) or raw helper bytes (wrapped, new id)."""
        spool = new_spool()
        with open(path, "rb") as fh:
            _copy(fh, spool)
        return ScaleoutModel.from_spool(spool, None)

    @staticmethod
    def from_bytes(data: bytes, model_id: str | None = None) -> ScaleoutModel:
        spool = new_spool()
        spool.write(data)
        return ScaleoutModel.from_spool(spool, model_id)

    @staticmethod
    def from_stream(stream: BinaryIO, model_id: str | None = None) -> ScaleoutModel:
        """Copy the stream (from its current position) in; see `from_spool` for container vs raw."""
        spool = new_spool()
        _copy(stream, spool)
        return ScaleoutModel.from_spool(spool, model_id)

    @staticmethod
    def from_filechunk_stream(chunks: Iterable[Any], model_id: str | None = None) -> ScaleoutModel:
        """Concatenate `FileChunk.data` pieces (empty ones skipped). Plain bytes pieces are accepted too."""
        spool = new_spool()
        for chunk in chunks:
            data = chunk if isinstance(chunk, bytes | bytearray | memoryview) else chunk.data
            if data:
                spool.write(data)
        return ScaleoutModel.from_spool(spool, model_id)

    @staticmethod
    def from_spool(spool: tempfile.SpooledTemporaryFile[bytes], model_id: str | None = None) -> ScaleoutModel:
        """Adopt received bytes (a spool from `new_spool()`, which the model owns from now on): a container
        keeps its id and exact bytes; anything else is wrapped.

        With `model_id` given, a container holding another id raises InvalidModel("Model ID mismatch ...").
        """
        if model_id is not None:
            _check_model_id(model_id)
        spool.seek(0)
        if not is_container(spool):
            model = ScaleoutModel(model_id)
            model._training = spool
            return model
        meta = read_container_metadata(spool)
        stored_id = meta.get("model_id")
        if stored_id is not None and (not isinstance(stored_id, str) or not stored_id):
            raise InvalidModel(f"{METADATA_ENTRY} has an invalid model_id: {stored_id!r}")
        if model_id is not None and stored_id is not None and stored_id != model_id:
            raise InvalidModel(f"Model ID mismatch: expected {model_id!r}, the container holds {stored_id!r}")
        helper_type = meta.get("helper_type")
        model = ScaleoutModel(stored_id or model_id)
        model._helper_type = helper_type if isinstance(helper_type, str) and helper_type else None
        model._user_metadata = {k: v for k, v in meta.items() if k not in RESERVED_METADATA_KEYS}
        with zipfile.ZipFile(spool) as zf:
            if TRAINING_ENTRY not in zf.namelist():
                raise InvalidModel(f"model container has no {TRAINING_ENTRY}")
        spool.seek(0)
        with model._lock:
            model._container = spool
            model._training = None
            if stored_id is None:
                model._invalidate_container()  # no id inside: rebuild so the stored bytes carry one
        return model

    # ---- internal state handling (call with the lock held) ----

    def _extract_training(self) -> tempfile.SpooledTemporaryFile[bytes]:
        """The training model as a fresh spool, from whichever form is held."""
        spool = new_spool()
        if self._training is not None:
            self._training.seek(0)
            _copy(self._training, spool)
        else:
            assert self._container is not None
            self._container.seek(0)
            try:
                with open_training_model(self._container) as src:
                    _copy(src, spool)
            except _ZIP_ERRORS as exc:
                raise InvalidModel(f"corrupt {TRAINING_ENTRY} in model container: {exc}") from exc
        spool.seek(0)
        return spool

    def _invalidate_container(self) -> None:
        """Forget the container bytes (a re-stamp); they are dropped, not closed, because a chunk stream
        started before the re-stamp may still be reading them (the spool closes once unreferenced)."""
        if self._training is None:
            self._training = self._extract_training()
        self._container = None
        self._checksum = None

    def _ensure_container(self) -> tempfile.SpooledTemporaryFile[bytes]:
        if self._container is None:
            assert self._training is not None
            spool = new_spool()
            self._training.seek(0)
            write_container(spool, self._model_id, self._training, self._helper_type, self._user_metadata)
            self._container = spool
            self._training.close()
            self._training = None
            self._checksum = None
        return self._container

    # ---- reading the bytes ----

    @property
    def checksum(self) -> str:
        """SHA-256 hex of the container bytes (cached)."""
        with self._lock:
            container = self._ensure_container()
            if self._checksum is None:
                container.seek(0)
                self._checksum = sha256_stream(container)
            return self._checksum

    @property
    def known_checksum(self) -> str | None:
        """The checksum if it was computed already (no hashing pass), else None."""
        with self._lock:
            return self._checksum if self._container is not None else None

    def verify_checksum(self, checksum: str | None) -> bool:
        """True when `checksum` is None (nothing to check) or equals this model's checksum."""
        if checksum is None:
            return True
        return checksum.strip().lower() == self.checksum

    @property
    def size(self) -> int:
        """Length in bytes of the container."""
        with self._lock:
            container = self._ensure_container()
            container.seek(0, 2)
            return container.tell()

    def get_stream(self) -> BinaryIO:
        """A new readable stream of the container bytes, at position 0."""
        spool = new_spool()
        with self._lock:
            container = self._ensure_container()
            container.seek(0)
            _copy(container, spool)
        spool.seek(0)
        return spool  # type: ignore[return-value]

    def get_stream_unsafe(self) -> BinaryIO:
        """The internal container stream, rewound. Not thread-safe; never write to it."""
        with self._lock:
            container = self._ensure_container()
            container.seek(0)
            return container  # type: ignore[return-value]

    def get_training_model_stream(self) -> BinaryIO:
        """A new readable stream of the raw training model bytes (e.g. the NPZ)."""
        with self._lock:
            return self._extract_training()  # type: ignore[return-value]

    def save_to_file(self, path: str) -> None:
        """Write the container bytes."""
        with self._lock, open(path, "wb") as out:
            container = self._ensure_container()
            container.seek(0)
            _copy(container, out)

    def get_filechunk_stream(self, chunk_size: int = 1024 * 1024) -> Iterator[Any]:
        """`scaleout_pb2.FileChunk` messages of the container bytes.

        The lock is taken per chunk, not across yields, so a slow consumer never blocks other threads;
        the container spool read from is never modified (a re-stamp builds a new one).
        """
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        with self._lock:
            container = self._ensure_container()
        offset = 0
        while True:
            with self._lock:
                container.seek(offset)
                data = container.read(chunk_size)
            if not data:
                return
            offset += len(data)
            yield scaleout_pb2.FileChunk(data=data)


def _resolve_helper(helper: Any) -> Any:
    """A helper object, given one or a plugin name."""
    if isinstance(helper, str):
        from scaleoututil.helpers.helpers import get_helper  # local: keeps model import light

        return get_helper(helper)
    return helper
