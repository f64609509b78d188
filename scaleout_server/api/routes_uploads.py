"""Chunked file upload: init, chunk (raw body + X-Chunk-Index), complete, abort."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from scaleout_server.api.common import UploadsDep
from scaleout_server.api.schemas import UploadInit
from scaleout_server.errors import InvalidInput

router = APIRouter(prefix="/api/v1/file-upload", tags=["uploads"])


@router.post("/init")
def init_upload(body: UploadInit, uploads: UploadsDep) -> dict[str, Any]:
    """Announce a file; answers the upload_id the chunks are sent to (413 if the file is too large)."""
    record = uploads.init(body.file_name, body.file_size, body.chunk_size)
    return {"upload_id": record.upload_id, "chunk_size": record.chunk_size}


@router.post("/{upload_id}/chunk")
async def upload_chunk(upload_id: str, request: Request, uploads: UploadsDep) -> dict[str, Any]:
    """One chunk as the raw request body; header X-Chunk-Index counts from 0, in order."""
    raw = request.headers.get("X-Chunk-Index")
    if raw is None:
        raise InvalidInput("header X-Chunk-Index is required (0 for the first chunk)")
    try:
        index = int(raw)
    except ValueError:
        raise InvalidInput(f"header X-Chunk-Index must be an integer, got {raw!r}") from None
    record = await uploads.append_chunk(upload_id, index, request.stream())
    return {"upload_id": upload_id, "chunk_index": index, "received_bytes": record.received_bytes}


@router.post("/{upload_id}/complete")
async def complete_upload(upload_id: str, uploads: UploadsDep) -> dict[str, Any]:
    """Check that every byte arrived; answers the file_token to name in models/ or packages/ POSTs."""
    record = await run_in_threadpool(uploads.complete, upload_id)
    return {"file_token": record.file_token, "file_name": record.file_name, "file_size": record.file_size}


@router.post("/{upload_id}/abort")
async def abort_upload(upload_id: str, uploads: UploadsDep) -> dict[str, Any]:
    """Drop an upload and its bytes."""
    await run_in_threadpool(uploads.abort, upload_id)
    return {"message": f"Upload {upload_id} aborted"}
