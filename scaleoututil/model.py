"""ScaleoutModel: a model's bytes plus the id and helper that give them meaning.

STUB: signatures fixed by the lead; the implementation is being written. See the docstrings.

On the wire and in the repository a model is a *container*: a ZIP holding `metadata.json`
(`{"model_id": ..., "helper_type": ..., "_version": 2, ...}`) and `training_model.bin` (the
helper's serialisation, e.g. an NPZ). A bare NPZ (or any non-container bytes) is accepted on
input and wrapped. Containers are written deterministically (fixed ZIP timestamps), so the same
id + metadata + parameters always give the same bytes and the same checksum.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Any, BinaryIO

CONTAINER_VERSION = 2
METADATA_ENTRY = "metadata.json"
TRAINING_ENTRY = "training_model.bin"


class InvalidModel(ValueError):
    """Bytes that are neither a valid container nor loadable by the requested helper."""


def is_container(stream: BinaryIO) -> bool:
    """True when the stream is a ZIP with `metadata.json` (position restored)."""
    raise NotImplementedError


def write_container(out: IO[bytes], model_id: str, training_model: BinaryIO, helper_type: str | None = None,
                    metadata: dict[str, Any] | None = None) -> None:
    """Write a container to `out`, streaming `training_model` in 1 MiB pieces."""
    raise NotImplementedError


def read_container_metadata(stream: BinaryIO) -> dict[str, Any]:
    """The container's metadata.json (InvalidModel if not a container or `_version` > 2)."""
    raise NotImplementedError


def open_training_model(stream: BinaryIO) -> IO[bytes]:
    """A readable stream of `training_model.bin` inside a container."""
    raise NotImplementedError


class ScaleoutModel:
    """model_id: str (a uuid4 unless given); helper: the helper object last used, or None;
    helper_type: str | None (from metadata or the helper)."""

    def __init__(self, model_id: str | None = None) -> None:
        raise NotImplementedError

    @staticmethod
    def from_model_params(model_params: Any, helper: Any = None, model_id: str | None = None) -> ScaleoutModel:
        """Serialise params with the helper (numpyhelper when None)."""
        raise NotImplementedError

    def get_model_params(self, helper: Any = None) -> Any:
        """Load params with the given helper (remembered) or the stored one; ValueError if none."""
        raise NotImplementedError

    @staticmethod
    def from_file(path: str) -> ScaleoutModel:
        """Container (keeps its model_id) or raw helper bytes (wrapped, new id)."""
        raise NotImplementedError

    @staticmethod
    def from_bytes(data: bytes, model_id: str | None = None) -> ScaleoutModel:
        raise NotImplementedError

    @staticmethod
    def from_stream(stream: BinaryIO, model_id: str | None = None) -> ScaleoutModel:
        raise NotImplementedError

    @staticmethod
    def from_filechunk_stream(chunks: Iterable[Any], model_id: str | None = None) -> ScaleoutModel:
        """Concatenate `FileChunk.data` pieces (empty ones skipped)."""
        raise NotImplementedError

    @property
    def checksum(self) -> str:
        """SHA-256 hex of the container bytes (cached)."""
        raise NotImplementedError

    def verify_checksum(self, checksum: str | None) -> bool:
        raise NotImplementedError

    def get_stream(self) -> BinaryIO:
        """A new readable stream of the container bytes, at position 0."""
        raise NotImplementedError

    def get_training_model_stream(self) -> BinaryIO:
        """A new readable stream of the raw training model bytes (e.g. the NPZ)."""
        raise NotImplementedError

    def save_to_file(self, path: str) -> None:
        """Write the container bytes."""
        raise NotImplementedError

    def get_filechunk_stream(self, chunk_size: int = 1024 * 1024) -> Iterator[Any]:
        """`scaleout_pb2.FileChunk` messages of the container bytes."""
        raise NotImplementedError
