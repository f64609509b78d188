"""The model repository interface: opaque blobs (model containers, packages) by id.

Streams in and out, never whole files in memory, so model size is bounded by disk, not RAM.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import BinaryIO

from scaleout_server.errors import ServerError, Unavailable


class BlobNotFound(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(f"no stored object {key!r}")
        self.key = key


class RepositoryError(ServerError):
    """The storage behind the repository failed; the message says what to check."""


class RepositoryUnavailable(RepositoryError, Unavailable):
    """The storage cannot be reached (an object store that is down, a wrong endpoint)."""


class RepositoryAccessDenied(RepositoryError):
    """The storage refused our credentials or permissions."""


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


def check_name(what: str, name: str) -> str:
    """Namespaces and keys are 1-255 safe characters, the same for every backend (file names, S3 keys)."""
    # A leading dot is refused too: it keeps keys apart from temp files and hidden files.
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"invalid {what} {name!r}: use 1-255 letters, digits, '-', '_' or '.', "
                         "not starting with '.' and without '/' or '..'")
    return name


class ModelRepository(ABC):
    """Objects live in namespaces (`models`, `packages`, `partials`) under string keys."""

    @abstractmethod
    def put(self, namespace: str, key: str, stream: BinaryIO) -> tuple[int, str]:
        """Store the stream's bytes under key; returns (size in bytes, sha256 hex). Atomic: a reader
        never sees a half-written object."""

    @abstractmethod
    def open(self, namespace: str, key: str) -> BinaryIO:
        """A readable, seekable binary stream; BlobNotFound if absent. The caller closes it."""

    @abstractmethod
    def exists(self, namespace: str, key: str) -> bool: ...

    @abstractmethod
    def size(self, namespace: str, key: str) -> int: ...

    @abstractmethod
    def delete(self, namespace: str, key: str) -> bool: ...

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """Settings another process (a combiner) needs to open the same repository (never secrets)."""
