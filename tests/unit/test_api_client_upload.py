"""Chunked upload against a real (tiny) HTTP server: chunking, 413 back-off, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scaleoututil.api import upload as upload_mod
from scaleoututil.api.upload import UploadError, chunked_upload
from tests.unit.test_api_client_support import FakeController, Recorded, upload_routes

KIB = 1024


def _file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "blob.bin"
    path.write_bytes(os.urandom(size))
    return path


def test_file_is_sent_in_indexed_chunks_and_reassembles(tmp_path: Path, fake: FakeController) -> None:
    path = _file(tmp_path, 2500 * KIB)
    state = upload_routes(fake, token="the-token")
    seen: list[tuple[int, int]] = []

    token = chunked_upload(fake.url, path, headers={"Authorization": "Bearer t"}, chunk_size=1024 * KIB,
                           progress=lambda sent, total: seen.append((sent, total)))

    assert token == "the-token"
    init = fake.find("POST", "/api/v1/file-upload/init")[0].json()
    assert init == {"file_name": "blob.bin", "file_size": 2500 * KIB, "chunk_size": 1024 * KIB}
    assert sorted(state["chunks"]) == [0, 1, 2]
    assert b"".join(state["chunks"][i] for i in range(3)) == path.read_bytes()
    assert all(r.header("Authorization") == "Bearer t" for r in fake.requests)
    assert seen[-1] == (2500 * KIB, 2500 * KIB)
    assert len(fake.requests) == 5  # init, 3 chunks, complete


def test_default_chunk_size_is_5_mib_like_the_official_cli(tmp_path: Path, fake: FakeController) -> None:
    path = _file(tmp_path, 11 * 1024 * KIB)
    state = upload_routes(fake)
    chunked_upload(fake.url, path)
    assert [len(state["chunks"][i]) for i in range(3)] == [5 * 1024 * KIB, 5 * 1024 * KIB, 1024 * KIB]


def test_413_on_a_chunk_aborts_and_retries_with_half_the_chunk_size(tmp_path: Path,
                                                                      fake: FakeController) -> None:
    path = _file(tmp_path, 1500 * KIB)
    state = upload_routes(fake)
    real_chunk = [h for m, p, h in fake.routes if p.endswith("/chunk")][0]

    def limited(req: Recorded) -> tuple[int, object]:
        if len(req.body) > 512 * KIB:
            return 413, {"message": "body too large for the proxy"}
        return real_chunk(req)

    fake.on("POST", "/api/v1/file-upload/up-1/chunk", handler=limited)

    chunked_upload(fake.url, path, chunk_size=1024 * KIB)

    inits = [r.json()["chunk_size"] for r in fake.find("POST", "/api/v1/file-upload/init")]
    assert inits == [1024 * KIB, 512 * KIB]
    assert len(fake.find("POST", "*/abort")) == 1
    assert b"".join(state["chunks"][i] for i in sorted(state["chunks"])) == path.read_bytes()


def test_413_even_at_the_minimum_chunk_size_raises_with_the_server_message(tmp_path: Path,
                                                                           fake: FakeController,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, 100 * KIB)
    upload_routes(fake)
    fake.on("POST", "/api/v1/file-upload/up-1/chunk", status=413, body={"message": "nothing fits"})
    monkeypatch.setattr(upload_mod, "MIN_CHUNK_SIZE", 16 * KIB)

    with pytest.raises(UploadError, match="nothing fits") as info:
        chunked_upload(fake.url, path, chunk_size=64 * KIB)

    assert info.value.status_code == 413
    assert [r.json()["chunk_size"] for r in fake.find("POST", "*/init")] == [64 * KIB, 32 * KIB, 16 * KIB]


def test_413_at_init_is_about_the_file_and_is_not_retried(tmp_path: Path, fake: FakeController) -> None:
    path = _file(tmp_path, 10 * KIB)
    fake.on("POST", "/api/v1/file-upload/init", status=413, body={"message": "file_size over the limit"})

    with pytest.raises(UploadError, match="file_size over the limit"):
        chunked_upload(fake.url, path)

    assert len(fake.requests) == 1


def test_a_failed_complete_aborts_and_reports_the_server_message(tmp_path: Path,
                                                                 fake: FakeController) -> None:
    path = _file(tmp_path, 10 * KIB)
    upload_routes(fake)
    fake.on("POST", "/api/v1/file-upload/up-1/complete", status=400,
                       body={"message": "received 1 of 2 bytes"})

    with pytest.raises(UploadError, match="received 1 of 2 bytes") as info:
        chunked_upload(fake.url, path)

    assert info.value.status_code == 400
    assert len(fake.find("POST", "*/abort")) == 1


def test_fastapi_style_detail_is_used_when_there_is_no_message(tmp_path: Path,
                                                                fake: FakeController) -> None:
    path = _file(tmp_path, 10)
    fake.on("POST", "/api/v1/file-upload/init", status=422, body={"detail": "file_size: field required"})
    with pytest.raises(UploadError, match="file_size: field required"):
        chunked_upload(fake.url, path)


def test_missing_file_is_reported_before_any_request(tmp_path: Path, fake: FakeController) -> None:
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        chunked_upload(fake.url, tmp_path / "nope.bin")
    assert fake.requests == []
