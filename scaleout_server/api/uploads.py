"""The chunked upload area behind `/api/v1/file-upload/...` (used by the official CLI).

A file arrives in numbered chunks, each streamed straight to `<data_dir>/uploads/<upload_id>.part`
so an upload never sits in memory; `complete` checks the size and hands out a `file_token` that
a later `POST /api/v1/models/` or `/packages/` names. Progress lives in the store's UploadRecords,
so a restarted controller still knows every upload.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from starlette.concurrency import run_in_threadpool

from scaleout_server.errors import Conflict, InvalidInput, NotFoundError, TooLarge
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery, Store

log = logging.getLogger(__name__)

STALE_AFTER_SECONDS = 24 * 3600


class UploadArea:
    def __init__(self, root: Path, store: Store, max_bytes: int) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.max_bytes = max_bytes
        self._writing: set[str] = set()
        self._lock = threading.Lock()

    def path_of(self, upload_id: str) -> Path:
        return self.root / f"{upload_id}.part"

    # -- lifecycle ---------------------------------------------------------------------
    def init(self, file_name: str, file_size: int, chunk_size: int) -> r.UploadRecord:
        if file_size > self.max_bytes:
            raise TooLarge(f"file_size {file_size} is over this server's limit of {self.max_bytes} bytes "
                           "(setting max_upload_bytes)")
        # no chunk can be larger than the largest file; the cap also keeps an absurd chunk_size
        # from overflowing the database's integer column
        record = r.UploadRecord(upload_id=r.new_id(), file_name=file_name, file_size=file_size,
                                chunk_size=min(chunk_size, self.max_bytes))
        self.path_of(record.upload_id).touch()
        return self.store.uploads.add(record)

    def _open_upload(self, upload_id: str) -> r.UploadRecord:
        record = self.store.uploads.get(upload_id)
        if record is None:
            raise NotFoundError(f"Upload {upload_id} not found: start one with POST /api/v1/file-upload/init")
        if record.status != "open":
            raise Conflict(f"Upload {upload_id} is {record.status}; start a new one with POST /api/v1/file-upload/init")
        return record

    async def append_chunk(self, upload_id: str, index: int, body: AsyncIterator[bytes]) -> r.UploadRecord:
        """Write chunk `index` (must be the next one) from the request body stream."""
        record = await run_in_threadpool(self._open_upload, upload_id)
        if index != record.chunks:
            raise Conflict(f"Upload {upload_id}: expected chunk index {record.chunks}, got {index}; "
                           "send chunks one at a time, in order, starting at 0")
        with self._lock:
            if upload_id in self._writing:
                raise Conflict(f"Upload {upload_id}: another chunk is being written; send chunks one at a time")
            self._writing.add(upload_id)
        try:
            remaining = record.file_size - record.received_bytes
            written = 0
            with open(self.path_of(upload_id), "r+b" if self.path_of(upload_id).exists() else "w+b") as out:
                out.seek(record.received_bytes)
                out.truncate()  # drop what a failed earlier attempt left behind
                async for piece in body:
                    written += len(piece)
                    if written > record.chunk_size:
                        out.truncate(record.received_bytes)
                        raise TooLarge(f"Upload {upload_id}: chunk {index} is larger than the chunk_size "
                                       f"{record.chunk_size} announced at init")
                    if written > remaining:
                        out.truncate(record.received_bytes)
                        raise InvalidInput(f"Upload {upload_id}: chunk {index} goes past the file_size "
                                           f"{record.file_size} announced at init")
                    out.write(piece)
            record.received_bytes += written
            record.chunks += 1
            return await run_in_threadpool(self.store.uploads.update, record)
        finally:
            with self._lock:
                self._writing.discard(upload_id)

    def complete(self, upload_id: str) -> r.UploadRecord:
        record = self._open_upload(upload_id)
        if record.received_bytes != record.file_size:
            raise InvalidInput(f"Upload {upload_id}: received {record.received_bytes} of {record.file_size} bytes; "
                               "send the missing chunks before completing")
        record.status = "complete"
        record.file_token = r.new_id()
        return self.store.uploads.update(record)

    def abort(self, upload_id: str) -> r.UploadRecord:
        record = self.store.uploads.get(upload_id)
        if record is None:
            raise NotFoundError(f"Upload {upload_id} not found")
        self.path_of(upload_id).unlink(missing_ok=True)
        record.status = "aborted"
        return self.store.uploads.update(record)

    # -- use by the model and package routes -------------------------------------------
    def claim(self, file_token: str) -> tuple[r.UploadRecord, BinaryIO]:
        """The completed upload with this token and an open stream of its bytes (caller closes)."""
        _, found = self.store.uploads.list(ListQuery(filters={"file_token": file_token}, limit=1))
        if not found or found[0].status != "complete":
            raise NotFoundError(f"Unknown file_token {file_token!r}: upload the file with /api/v1/file-upload/init, "
                                "/chunk and /complete first, then send the file_token it returned")
        record = found[0]
        try:
            stream = open(self.path_of(record.upload_id), "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise NotFoundError(f"The file of file_token {file_token!r} is gone; upload it again") from None
        return record, stream

    def discard(self, record: r.UploadRecord) -> None:
        """Forget a used upload: its bytes are in the repository now."""
        self.path_of(record.upload_id).unlink(missing_ok=True)
        self.store.uploads.delete(record.upload_id)

    def sweep(self, older_than: float = STALE_AFTER_SECONDS) -> int:
        """Delete part files nobody touched for `older_than` seconds (abandoned uploads)."""
        removed = 0
        cutoff = time.time() - older_than
        for path in self.root.glob("*.part"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    self.store.uploads.delete(path.name.removesuffix(".part"))
                    removed += 1
            except OSError as exc:
                log.warning("could not remove stale upload %s: %s", path, exc)
        return removed


def file_size_of(stream: BinaryIO) -> int:
    """Size of a seekable stream, position unchanged."""
    here = stream.tell()
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(here)
    return size
