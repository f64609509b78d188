"""Model repository in a local folder: one sub-folder per namespace, one file per key.

Writes go to a hidden temp file in the same folder and are renamed into place after an fsync,
so a reader (or a crash) never sees a half-written model.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from scaleout_server.durable import fsync_dir
from scaleout_server.repository.base import BlobNotFound, ModelRepository, check_name
from scaleoututil.protocol import CHUNK_SIZE


class LocalRepository(ModelRepository):
    """Blobs as files under `path/<namespace>/<key>`; the folder is created if missing."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalRepository({str(self.root)!r})"

    def _path(self, namespace: str, key: str) -> Path:
        return self.root / check_name("namespace", namespace) / check_name("key", key)

    def put(self, namespace: str, key: str, stream: BinaryIO) -> tuple[int, str]:
        target = self._path(namespace, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    piece = stream.read(CHUNK_SIZE)
                    if not piece:
                        break
                    out.write(piece)
                    digest.update(piece)
                    size += len(piece)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise
        fsync_dir(target.parent)
        return size, digest.hexdigest()

    def open(self, namespace: str, key: str) -> BinaryIO:
        try:
            return open(self._path(namespace, key), "rb")  # the caller closes it
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFound(f"{namespace}/{key}") from None

    def exists(self, namespace: str, key: str) -> bool:
        return self._path(namespace, key).is_file()

    def size(self, namespace: str, key: str) -> int:
        try:
            return self._path(namespace, key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"{namespace}/{key}") from None

    def delete(self, namespace: str, key: str) -> bool:
        try:
            self._path(namespace, key).unlink()
        except FileNotFoundError:
            return False
        return True

    def describe(self) -> dict[str, str]:
        return {"type": "local", "path": str(self.root)}
