"""Seed model upload, model trail and model download."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse

from scaleout_server.api.common import ControllerDep, UploadsDep, parse_bool, root_route
from scaleout_server.api.listing import int_header, to_json
from scaleout_server.controller.session_config import active_helper
from scaleout_server.errors import InvalidInput
from scaleoututil.model import open_training_model

router = APIRouter(tags=["models"])

STREAM_PIECE = 1024 * 1024


def stream_and_close(*streams: IO[bytes]) -> Iterator[bytes]:
    """Yield the first stream in 1 MiB pieces, then close all of them (inner first)."""
    try:
        while piece := streams[0].read(STREAM_PIECE):
            yield piece
    finally:
        for stream in streams:
            stream.close()


@root_route(router, "/api/v1/models/", "POST")
def add_model(
    controller: ControllerDep,
    uploads: UploadsDep,
    helper: str | None = Form(None),
    file_token: str | None = Form(None),
    name: str | None = Form(None),
    file: UploadFile | None = File(None),
) -> dict[str, Any]:
    """Store a seed model: multipart `file`, or `file_token` from /api/v1/file-upload, plus `helper`."""
    helper_type = (helper or active_helper(controller.store)).strip()
    if file is not None:
        record = controller.add_model(file.file, helper_type, name or file.filename)
    elif file_token:
        upload, stream = uploads.claim(file_token)
        try:
            record = controller.add_model(stream, helper_type, name or upload.file_name)
        finally:
            stream.close()
        uploads.discard(upload)
    else:
        raise InvalidInput("Send the model as a multipart 'file' field, or upload it with /api/v1/file-upload "
                           "and send the returned 'file_token' as a form field")
    return {"success": True, "message": f"Model {record.model_id} added", "model_id": record.model_id,
            "model": to_json(record)}


@router.get("/api/v1/models/{model_id}/ancestors")
def model_ancestors(model_id: str, request: Request, controller: ControllerDep,
                    include_self: str | None = None) -> list[dict[str, Any]]:
    """The trail from this model back to its seed (header X-Limit: how many, X-Reverse: oldest first)."""
    trail = controller.store.models.ancestors(  # NotFound (404) for an unknown model
        model_id,
        limit=int_header(request, "X-Limit"),
        include_self=parse_bool(include_self, "include_self", default=True),
        reverse=parse_bool(request.headers.get("X-Reverse"), "header X-Reverse", default=False),
    )
    return [to_json(m) for m in trail]


@router.get("/api/v1/models/{model_id}/download")
def download_model(model_id: str, controller: ControllerDep,
                   fmt: str = Query("container", alias="format")) -> StreamingResponse:
    """The stored model container (`?format=raw`: just the helper bytes, e.g. the NPZ)."""
    if fmt not in ("container", "raw"):
        raise InvalidInput(f"format must be 'container' or 'raw', got {fmt!r}")
    record = controller.store.models.require(model_id)
    container = controller.repository.open("models", model_id)
    if fmt == "container":
        headers = {"Content-Disposition": f"attachment; filename={model_id}.zip"}
        try:
            headers["Content-Length"] = str(controller.repository.size("models", model_id))
        except Exception:  # size is a nicety; the stream is what matters
            pass
        return StreamingResponse(stream_and_close(container), media_type="application/zip", headers=headers)
    try:
        inner = open_training_model(container)
    except Exception:
        container.close()
        raise
    suffix = "npz" if record.helper_type == "numpyhelper" else "bin"
    headers = {"Content-Disposition": f"attachment; filename={model_id}.{suffix}"}
    return StreamingResponse(stream_and_close(inner, container), media_type="application/octet-stream",
                             headers=headers)
