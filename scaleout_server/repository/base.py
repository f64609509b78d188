"""The model repository interface: opaque blobs (model containers, packages) by id.

Streams in and out, never whole files in memory, so model size is bounded by disk, not RAM.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import BinaryIO


class BlobNotFound(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(f"no stored object {key!r}")
        self.key = key


class ModelRepository(ABC):
    """Objects live in namespaces (`models`, `packages`, `partials`) under string keys."""

    @abstractmethod
    def put(self, namespace: str, key: str, stream: BinaryIO) -> tuple[int, str]:
        """Store the stream's bytes under key; returns (size in bytes, sha256 hex). Atomic: a reader
        never sees a half-written object."""

    @abstractmethod
    def open(self, namespace: str, key: str) -> BinaryIO:
        """A readable binary stream; BlobNotFound if absent. The caller closes it."""

    @abstractmethod
    def exists(self, namespace: str, key: str) -> bool: ...

    @abstractmethod
    def size(self, namespace: str, key: str) -> int: ...

    @abstractmethod
    def delete(self, namespace: str, key: str) -> bool: ...

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """Settings another process (a combiner) needs to open the same repository."""
