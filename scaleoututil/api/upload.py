"""Chunked file upload to the controller (`/api/v1/file-upload/...`).

Large models and packages go up in pieces so that no single request hits a proxy's body limit;
when something in between still answers 413 (Payload Too Large) the upload starts over with
half the chunk size, down to `MIN_CHUNK_SIZE`. The result is a `file_token` that the models and
packages form routes accept in place of a multipart file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

DEFAULT_CHUNK_SIZE = 5 * 1024 * 1024
MIN_CHUNK_SIZE = 256 * 1024
UPLOAD_TIMEOUT = 300.0  # seconds per request; a chunk over a slow link can take a while

ProgressCallback = Callable[[int, int], None]  # (bytes sent so far, total bytes)


class UploadError(RuntimeError):
    """The controller refused a step of the upload; `message` is the server's own explanation."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class _TooLarge(Exception):
    """Internal: a 413 that a smaller chunk size may fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def error_message(response: requests.Response) -> str:
    """The server's explanation of a failed request: `message` (ours), `detail` (FastAPI), else the text."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "detail", "error"):
            if body.get(key):
                value = body[key]
                return value if isinstance(value, str) else str(value)
    text = (response.text or "").strip()
    return text[:500] if text else f"HTTP {response.status_code} {response.reason or ''}".strip()


def chunked_upload(
    base_url: str,
    file_path: str | os.PathLike[str],
    headers: dict[str, str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressCallback | None = None,
    *,
    verify: bool = True,
    timeout: float = UPLOAD_TIMEOUT,
    session: requests.Session | None = None,
) -> str:
    """Upload `file_path` in chunks and return the server's `file_token`.

    `base_url` is `scheme://host[:port]` (no `/api/v1`). Raises `UploadError` with the server's
    message when a step fails, `FileNotFoundError` when the file does not exist.
    """
    path = Path(file_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file to upload")
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    http = session or requests.Session()
    root = base_url.rstrip("/") + "/api/v1/file-upload"
    size = path.stat().st_size
    while True:
        try:
            return _upload_once(http, root, path, size, headers or {}, chunk_size, progress, verify, timeout)
        except _TooLarge as err:
            if chunk_size <= MIN_CHUNK_SIZE:
                raise UploadError(
                    f"The server rejected the upload as too large even with {MIN_CHUNK_SIZE // 1024} KiB chunks: "
                    f"{err.message}",
                    413,
                ) from None
            chunk_size = max(MIN_CHUNK_SIZE, chunk_size // 2)


def _upload_once(http: requests.Session, root: str, path: Path, size: int, headers: dict[str, str],
                 chunk_size: int, progress: ProgressCallback | None, verify: bool, timeout: float) -> str:
    reply = http.post(f"{root}/init", json={"file_name": path.name, "file_size": size, "chunk_size": chunk_size},
                      headers=headers, verify=verify, timeout=timeout)
    _check(reply, "starting the upload", smaller_chunks_help=False)
    started = _json(reply, "starting the upload")
    upload_id = started.get("upload_id")
    if not upload_id:
        raise UploadError(f"The server did not return an upload_id when starting the upload: {reply.text[:200]}")
    granted = started.get("chunk_size")
    if isinstance(granted, int) and 0 < granted < chunk_size:
        chunk_size = granted  # the server may ask for smaller pieces
    try:
        if progress:
            progress(0, size)
        sent = 0
        with path.open("rb") as stream:
            index = 0
            while True:
                piece = stream.read(chunk_size)
                if not piece and index > 0:
                    break
                reply = http.post(f"{root}/{upload_id}/chunk", data=piece,
                                  headers={**headers, "X-Chunk-Index": str(index),
                                           "Content-Type": "application/octet-stream"},
                                  verify=verify, timeout=timeout)
                _check(reply, f"sending chunk {index}")
                sent += len(piece)
                if progress:
                    progress(sent, size)
                index += 1
                if not piece:  # an empty file still sends one (empty) chunk
                    break
        reply = http.post(f"{root}/{upload_id}/complete", headers=headers, verify=verify, timeout=timeout)
        _check(reply, "completing the upload")
        token = _json(reply, "completing the upload").get("file_token")
        if not token:
            raise UploadError(f"The server did not return a file_token when completing the upload: {reply.text[:200]}")
        return str(token)
    except BaseException:
        _abort(http, root, upload_id, headers, verify)
        raise


def _check(reply: requests.Response, step: str, smaller_chunks_help: bool = True) -> None:
    """Raise for a failed step; a 413 on a chunk (not on init, which is about the whole file) is retried."""
    if reply.status_code == 413 and smaller_chunks_help:
        raise _TooLarge(error_message(reply))
    if reply.status_code >= 400:
        raise UploadError(f"Upload failed while {step} (HTTP {reply.status_code}): {error_message(reply)}",
                          reply.status_code)


def _json(reply: requests.Response, step: str) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        raise UploadError(f"Upload failed while {step}: the server's reply is not JSON: {reply.text[:200]}") from None
    if not isinstance(body, dict):
        raise UploadError(f"Upload failed while {step}: expected a JSON object, got {body!r:.200}")
    return body


def _abort(http: requests.Session, root: str, upload_id: str, headers: dict[str, str], verify: bool) -> None:
    """Best effort: tell the server to drop the partial upload; its own failure is not the user's problem."""
    try:
        http.post(f"{root}/{upload_id}/abort", headers=headers, verify=verify, timeout=10)
    except requests.RequestException:
        pass
