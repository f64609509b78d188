"""The `scaleout.ModelService` servicer: models to clients (Download) and updates from them (Upload).

Downloads stream from the model repository in 1 MiB chunks (under the clients' 4 MiB receive
limit) and end with a `checksum` trailer so the client can verify what it got (computed once per
model: model_digests.py). Uploads go to a temporary file in the combiner's work folder, are
checked (size limit, SHA-256, container id) and only then appear under `<model-id>.scm`, where the
round picks them up. A combiner that cannot open a file right now (out of descriptors, disk full)
answers UNAVAILABLE, which clients retry, rather than failing their task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import grpc

from scaleout_server.combiner.byte_path import BytePathServer
from scaleout_server.combiner.client_service import metadata_of
from scaleout_server.combiner.model_digests import ModelDigest, ModelDigests
from scaleout_server.combiner.rounds import is_safe_id
from scaleout_server.combiner.upload_checks import UploadRejected, finish_upload
from scaleout_server.repository.base import BlobNotFound, ModelRepository, RepositoryError, RepositoryUnavailable
from scaleoututil.checksum import SHA256, HashingReader, choose_digest
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
from scaleoututil.protocol import CHUNK_SIZE, MD_CHECKSUM, MD_CLIENT_ID, MD_MODEL_ID

log = logging.getLogger(__name__)


class ModelService(pb_grpc.ModelServiceServicer):
    """Download from the model repository, Upload into the updates folder (see module docstring)."""

    def __init__(self, repository: ModelRepository, updates_dir: Path, max_model_bytes: int,
                 max_chunk_bytes: int = 0) -> None:
        self.repository = repository
        self.updates_dir = updates_dir
        self.max_model_bytes = max_model_bytes  # settings.max_model_bytes (0: no limit)
        self.max_chunk_bytes = max_chunk_bytes  # settings.max_chunk_bytes (0: only gRPC's message limit)
        self.digests = ModelDigests()
        self.byte_path: BytePathServer | None = None  # set by the combiner when its byte path listens

    async def Download(self, request: pb.ModelRequest, context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[pb.FileChunk]:
        model_id = request.model_id
        if not is_safe_id(model_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid model id {model_id!r}")
        try:
            stream = await asyncio.to_thread(self.repository.open, "models", model_id)
        except BlobNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model {model_id} not found")
            return
        except (OSError, RepositoryUnavailable) as exc:  # e.g. out of file descriptors: the client retries
            log.error("cannot open model %s for a download: %s", model_id, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"combiner cannot read model {model_id} now: {exc}")
            return
        sent = 0
        try:
            size = _size_of(stream)
            # hashed once per model, alongside this stream, not once per client (model_digests.py)
            pending = self.digests.get(model_id, size, lambda: self._digest(model_id))
            while chunk := await asyncio.to_thread(stream.read, CHUNK_SIZE):
                sent += len(chunk)
                yield pb.FileChunk(data=chunk)
        finally:
            stream.close()
        try:
            digest = await asyncio.shield(pending)
        except (BlobNotFound, OSError, RepositoryError) as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"could not checksum model {model_id}: {exc}")
            return
        if digest.size != sent:  # replaced while being sent: a stale checksum would fail the client's check
            self.digests.forget(model_id, size)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"model {model_id} changed while being sent; "
                                "download it again")
            return
        if digest.container:  # a raw legacy blob gets no trailer: the client re-wraps it, so no checksum could match
            context.set_trailing_metadata(((MD_CHECKSUM, digest.checksum),))
        log.debug("model %s sent to %s (%d bytes)", model_id, metadata_of(context).get(MD_CLIENT_ID, "?"), sent)

    def _digest(self, model_id: str, algorithm: str = SHA256) -> ModelDigest:
        """Read the stored model once: container or raw blob, checksum and size (worker thread)."""
        with self.repository.open("models", model_id) as stream:
            container = _is_container(stream)
            reader = HashingReader(stream, algorithm)
            while reader.read(CHUNK_SIZE):
                pass
        return ModelDigest(container=container, checksum=reader.hexdigest(), size=reader.size)

    async def Upload(self, request_iterator: AsyncIterator[pb.FileChunk], context: grpc.aio.ServicerContext
                     ) -> pb.ModelResponse:
        md = metadata_of(context)
        model_id = md.get(MD_MODEL_ID, "")
        checksum = md.get(MD_CHECKSUM, "").lower()
        client_id = md.get(MD_CLIENT_ID, "?")
        try:
            if not model_id or not checksum:
                raise UploadRejected(grpc.StatusCode.INVALID_ARGUMENT,
                                     "upload needs metadata 'model-id' (the update's id) and 'checksum' "
                                     "(sha256 hex of the bytes)")
            if not is_safe_id(model_id):
                raise UploadRejected(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"model-id {model_id!r} must be letters, digits, '.', '_' or '-'")
            size = await self._receive(request_iterator, model_id, checksum)
        except UploadRejected as exc:
            log.warning("upload of %r from client %s rejected: %s", model_id, client_id, exc)
            await context.abort(exc.code, str(exc))
            raise AssertionError("unreachable") from exc
        except OSError as exc:  # e.g. out of file descriptors, disk full: the client retries
            log.error("upload of %r from client %s could not be stored: %s", model_id, client_id, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"combiner cannot store the upload now: {exc}")
            raise AssertionError("unreachable") from exc
        log.info("model update %s received from client %s (%d bytes)", model_id, client_id, size)
        return pb.ModelResponse(status=pb.OK, message=f"model {model_id} received")

    async def _receive(self, chunks: AsyncIterator[pb.FileChunk], model_id: str, checksum: str) -> int:
        self.updates_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.updates_dir / f".{model_id}.{uuid.uuid4().hex[:8]}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with open(tmp, "wb") as out:
                async for chunk in chunks:
                    data = chunk.data
                    if not data:
                        continue
                    if self.max_chunk_bytes and len(data) > self.max_chunk_bytes:
                        raise UploadRejected(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                             f"a chunk of {len(data)} bytes is over the combiner's limit of "
                                             f"{self.max_chunk_bytes} bytes per chunk (setting max_chunk_bytes); "
                                             "send the model in chunks of 1 MiB")
                    size += len(data)
                    if self.max_model_bytes and size > self.max_model_bytes:
                        raise UploadRejected(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                             f"the model is over the combiner's limit of {self.max_model_bytes} bytes "
                                             "(setting max_model_bytes); refused after "
                                             f"{size - len(data)} bytes")
                    # hashing and writing 1 MiB (disk may be slow) happen off the loop that serves every client
                    await asyncio.to_thread(_append, out, digest, data)
            await asyncio.to_thread(finish_upload, tmp, self.updates_dir, model_id, digest.hexdigest(), checksum,
                                    size)
        finally:
            tmp.unlink(missing_ok=True)
        return size

    # -- the byte path (ours; large models) ------------------------------------------------------
    async def OpenTransfer(self, request: pb.TransferOffer, context: grpc.aio.ServicerContext) -> pb.TransferTicket:
        """A ticket for the byte path (byte_path.py), or an empty one meaning "use Upload / Download"."""
        model_id, direction = request.model_id, request.direction
        if direction not in ("download", "upload"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"direction must be 'download' or 'upload', not {direction!r}")
        if not is_safe_id(model_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"model id {model_id!r} must be letters, digits, '.', '_' or '-'")
        if self.byte_path is None:
            return pb.TransferTicket(reason="the byte path is off on this combiner")
        client_id = metadata_of(context).get(MD_CLIENT_ID, "?")
        algorithm = choose_digest(request.digests)
        if direction == "upload":
            size = request.size
            if size < 0:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"size must not be negative, got {size}")
            if self.max_model_bytes and size > self.max_model_bytes:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"the model is over the combiner's limit of {self.max_model_bytes} bytes "
                                    f"(setting max_model_bytes): {size} bytes offered")
            if size < self.byte_path.min_bytes:
                return pb.TransferTicket(reason=f"models under {self.byte_path.min_bytes} bytes use Upload")
            return self._ticket("upload", model_id, client_id, size, algorithm)
        try:
            size = await asyncio.to_thread(self.repository.size, "models", model_id)
        except BlobNotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model {model_id} not found")
            raise AssertionError("unreachable") from None
        except (OSError, RepositoryUnavailable) as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"combiner cannot read model {model_id} now: {exc}")
            raise AssertionError("unreachable") from exc
        if size < self.byte_path.min_bytes:
            return pb.TransferTicket(size=size, reason=f"models under {self.byte_path.min_bytes} bytes use Download")
        # the checksum goes after the bytes, from the one hash per stored model (model_digests.py)
        pending = self.digests.get(model_id, size, lambda: self._digest(model_id, algorithm), algorithm)
        digest: concurrent.futures.Future[ModelDigest] = concurrent.futures.Future()
        pending.add_done_callback(lambda done: _settle(digest, done))
        return self._ticket("download", model_id, client_id, size, algorithm, digest)

    def _ticket(self, direction: str, model_id: str, client_id: str, size: int, algorithm: str,
                digest: concurrent.futures.Future[ModelDigest] | None = None) -> pb.TransferTicket:
        assert self.byte_path is not None
        ticket = self.byte_path.issue(direction, model_id, client_id, size, digest, algorithm)
        return pb.TransferTicket(ticket=ticket, port=self.byte_path.port, tls=self.byte_path.tls is not None,
                                 size=size, digest=algorithm)


def _settle(target: concurrent.futures.Future[ModelDigest], done: asyncio.Future[ModelDigest]) -> None:
    """Hand an event-loop future's outcome to a thread's future (the byte path waits in its own thread)."""
    if done.cancelled():
        target.set_exception(RepositoryError("checksum computation cancelled"))
    elif done.exception() is not None:
        target.set_exception(done.exception())  # type: ignore[arg-type]
    else:
        target.set_result(done.result())


def _append(out: BinaryIO, digest: Any, data: bytes) -> None:
    """Hash and write one received chunk (run in a worker thread)."""
    digest.update(data)
    out.write(data)


def _size_of(stream: BinaryIO) -> int:
    """The stream's length (-1 when it cannot seek), position restored: a seek, no reading."""
    if not stream.seekable():
        return -1
    pos = stream.tell()
    size = stream.seek(0, io.SEEK_END)
    stream.seek(pos)
    return size


def _is_container(stream: BinaryIO) -> bool:
    from scaleoututil.model import is_container

    if not stream.seekable():
        return True  # repository models are containers; only a seekable stream can be inspected
    return is_container(stream)
