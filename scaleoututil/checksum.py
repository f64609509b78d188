"""SHA-256 checksums of model bytes, computed in 1 MiB pieces so large models never sit in memory whole.

The checksum travels as the `checksum` gRPC metadata trailer/header of model transfers: always the
lowercase hex SHA-256 of the exact bytes sent.
"""

from __future__ import annotations

import hashlib
import os
from typing import IO

from scaleoututil.protocol import CHUNK_SIZE


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

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._digest = hashlib.sha256()
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
