"""What makes a received upload a round's update, for both byte paths (gRPC Upload and the byte path).

One home for the checks, so the two ways in can never accept different things: the bytes hash to
the checksum the client announced, they are a model container carrying the announced id, and they
are durable (fsync'd, renamed, folder fsync'd) before the client hears "received".
"""

from __future__ import annotations

from pathlib import Path

import grpc

from scaleout_server.combiner.rounds import update_file
from scaleout_server.durable import commit_file


class UploadRejected(Exception):
    """An upload refused with `code`: INVALID_ARGUMENT and DATA_LOSS make the client's task FAILED
    instead of retrying a stream that can never succeed."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def finish_upload(tmp: Path, updates_dir: Path, model_id: str, received: str, announced: str, size: int,
                  algorithm: str = "SHA256") -> None:
    """Check a fully received upload in `tmp` and commit it as `<model_id>.scm` (blocking: run in a thread).
    Raises UploadRejected for bytes that can never become an update, OSError when storing fails."""
    if received != announced.lower():
        raise UploadRejected(grpc.StatusCode.DATA_LOSS,
                             f"checksum mismatch: received {size} bytes with {algorithm.lower()} {received}, "
                             f"metadata says {announced}")
    check_container(tmp, model_id)
    commit_file(tmp, update_file(updates_dir, model_id))


def check_container(path: Path, model_id: str) -> None:
    """The file is a model container whose metadata names `model_id`."""
    from scaleoututil.model import InvalidModel, read_container_metadata

    try:
        with open(path, "rb") as stream:
            meta = read_container_metadata(stream)
    except (InvalidModel, ValueError, OSError) as exc:
        raise UploadRejected(grpc.StatusCode.INVALID_ARGUMENT, f"upload is not a model container: {exc}") from exc
    if meta.get("model_id") != model_id:
        raise UploadRejected(grpc.StatusCode.INVALID_ARGUMENT,
                             f"container metadata model_id {meta.get('model_id')!r} does not match "
                             f"metadata 'model-id' {model_id!r}")
