"""Checksums of model bytes, computed in 1 MiB pieces so large models never sit in memory whole.

On gRPC the checksum travels as the `checksum` metadata trailer/header of model transfers: always the
lowercase hex SHA-256 of the exact bytes sent (the published clients' contract). The byte path, where
both ends are ours, negotiates the algorithm (`DIGESTS`, `choose_digest`): BLAKE3 when both ends have
the `blake3` package, since SHA-256 alone (0.75 CPU-s per GiB here) costs more than the TCP copy it
verifies, while BLAKE3 hashes 2.2 GiB/s on one core here, and more on several.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from typing import IO, Any

from scaleoututil.protocol import CHUNK_SIZE

SHA256 = "SHA256"
BLAKE3 = "BLAKE3"


def _blake3_factory() -> Callable[[], Any] | None:
    try:
        from blake3 import blake3
    except ImportError:  # a platform without a wheel: the byte path falls back to SHA-256
        return None
    # two threads at most: the other end of a transfer needs the machine too; releases the GIL
    return lambda: blake3(max_threads=2)


# checksum algorithms this process can compute, preferred first; SHA-256 is always there
DIGESTS: dict[str, Callable[[], Any]] = {
    name: factory for name, factory in ((BLAKE3, _blake3_factory()), (SHA256, hashlib.sha256)) if factory
}


def new_digest(name: str) -> Any:
    """A fresh hash object (`update`, `hexdigest`) of the named algorithm; KeyError for an unknown one."""
    return DIGESTS[name]()


def choose_digest(offered: Iterable[str]) -> str:
    """The first of the peer's algorithms (its preference order) that this process has; SHA-256 when the
    peer offered none (older peers) or none in common."""
    for name in offered:
        if name.upper() in DIGESTS:
            return name.upper()
    return SHA256


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's contents."""
    with open(path, "rb") as fh:
        return sha256_stream(fh)


def sha256_stream(stream: IO[bytes]) -> str:
    """Hex SHA-256 of the bytes from the stream's *current* position to its end.

    The stream is left at its end: the position is not restored (callers that need it rewind themselves),
    which also makes this usable on non-seekable streams.
    """
    digest = hashlib.sha256()
    while piece := stream.read(CHUNK_SIZE):
        digest.update(piece)
    return digest.hexdigest()


def copy_and_hash(src: IO[bytes], dst: IO[bytes]) -> tuple[int, str]:
    """Copy `src` (from its current position) into `dst`, returning (bytes copied, hex SHA-256) in one pass."""
    digest = hashlib.sha256()
    size = 0
    while piece := src.read(CHUNK_SIZE):
        digest.update(piece)
        dst.write(piece)
        size += len(piece)
    return size, digest.hexdigest()


class HashingReader:
    """Wraps a readable stream and hashes everything read through it, e.g. while a library consumes it.

    `hexdigest()` and `size` cover exactly the bytes handed out so far.
    """

    def __init__(self, stream: IO[bytes], algorithm: str = SHA256) -> None:
        self._stream = stream
        self._digest = new_digest(algorithm)
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._digest.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
