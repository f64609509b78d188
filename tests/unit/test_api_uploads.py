"""Chunked file upload (official CLI), seed model upload and model download."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from scaleoututil.helpers.helpers import get_helper
from tests.unit.test_api_support import Api, build_api, chunked_upload, npz_bytes


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from build_api(tmp_path)


@pytest.fixture
def small_api(tmp_path: Path) -> Iterator[Api]:
    yield from build_api(tmp_path, max_upload_bytes=10_000)


def _init(api: Api, size: int, chunk: int = 100) -> str:
    res = api.client.post("/api/v1/file-upload/init", json={"file_name": "m.npz", "file_size": size,
                                                            "chunk_size": chunk})
    assert res.status_code == 200, res.text
    return res.json()["upload_id"]


def _chunk(api: Api, upload_id: str, index: int, data: bytes) -> object:
    return api.client.post(f"/api/v1/file-upload/{upload_id}/chunk", content=data,
                           headers={"X-Chunk-Index": str(index)})


def test_chunked_upload_stores_the_bytes_and_returns_a_file_token(api: Api) -> None:
    data = bytes(range(256)) * 10
    token = chunked_upload(api.client, data, "blob.bin", chunk_size=1000)
    upload, stream = api.client.app.state.uploads.claim(token)  # type: ignore[attr-defined]
    with stream:
        assert stream.read() == data
    assert upload.chunks == 3 and upload.received_bytes == len(data)


def test_out_of_order_chunk_is_409_naming_the_expected_index(api: Api) -> None:
    upload_id = _init(api, 200)
    res = _chunk(api, upload_id, 1, b"x" * 100)
    assert res.status_code == 409  # type: ignore[attr-defined]
    assert "expected chunk index 0" in res.json()["message"]  # type: ignore[attr-defined]


def test_chunk_larger_than_chunk_size_is_413_and_leaves_no_bytes(api: Api) -> None:
    upload_id = _init(api, 200, chunk=100)
    res = _chunk(api, upload_id, 0, b"x" * 101)
    assert res.status_code == 413  # type: ignore[attr-defined]
    assert api.store.uploads.require(upload_id).received_bytes == 0
    assert _chunk(api, upload_id, 0, b"x" * 100).status_code == 200  # type: ignore[attr-defined]


def test_chunk_past_file_size_is_400(api: Api) -> None:
    upload_id = _init(api, 150, chunk=100)
    assert _chunk(api, upload_id, 0, b"x" * 100).status_code == 200  # type: ignore[attr-defined]
    res = _chunk(api, upload_id, 1, b"x" * 60)
    assert res.status_code == 400  # type: ignore[attr-defined]
    assert "file_size" in res.json()["message"]  # type: ignore[attr-defined]


def test_missing_chunk_index_is_400(api: Api) -> None:
    upload_id = _init(api, 10)
    res = api.client.post(f"/api/v1/file-upload/{upload_id}/chunk", content=b"x")
    assert res.status_code == 400
    assert "X-Chunk-Index" in res.json()["message"]


def test_complete_before_all_bytes_is_400(api: Api) -> None:
    upload_id = _init(api, 200)
    _chunk(api, upload_id, 0, b"x" * 100)
    res = api.client.post(f"/api/v1/file-upload/{upload_id}/complete")
    assert res.status_code == 400
    assert "received 100 of 200" in res.json()["message"]


def test_abort_removes_the_part_file_and_closes_the_upload(api: Api) -> None:
    upload_id = _init(api, 200)
    _chunk(api, upload_id, 0, b"x" * 100)
    assert api.client.post(f"/api/v1/file-upload/{upload_id}/abort").status_code == 200
    assert not (Path(api.controller.settings.data_dir) / "uploads" / f"{upload_id}.part").exists()
    assert _chunk(api, upload_id, 1, b"x" * 100).status_code == 409  # type: ignore[attr-defined]


def test_init_over_max_upload_bytes_is_413(small_api: Api) -> None:
    res = small_api.client.post("/api/v1/file-upload/init",
                                json={"file_name": "big.npz", "file_size": 10_001, "chunk_size": 100})
    assert res.status_code == 413
    assert "max_upload_bytes" in res.json()["message"]


def test_init_caps_an_absurd_chunk_size_at_max_upload_bytes(small_api: Api) -> None:
    res = small_api.client.post("/api/v1/file-upload/init",
                                json={"file_name": "m.npz", "file_size": 300, "chunk_size": 2**70})
    assert res.status_code == 200, res.text
    assert res.json()["chunk_size"] == 10_000
    upload_id = res.json()["upload_id"]
    assert _chunk(small_api, upload_id, 0, b"x" * 300).status_code == 200  # type: ignore[attr-defined]


def test_unknown_upload_is_404(api: Api) -> None:
    res = _chunk(api, "nope", 0, b"x")
    assert res.status_code == 404  # type: ignore[attr-defined]


# -- models --------------------------------------------------------------------------------

def test_model_post_with_file_token_stores_a_seed_model(api: Api) -> None:
    token = chunked_upload(api.client, npz_bytes(3, 4), "seed.npz", chunk_size=100)
    res = api.client.post("/api/v1/models/", data={"helper": "numpyhelper", "file_token": token})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["success"] is True
    model_id = body["model_id"]
    assert api.client.get(f"/api/v1/models/{model_id}").json()["model_id"] == model_id
    # the upload is consumed
    assert api.client.post("/api/v1/models/", data={"helper": "numpyhelper", "file_token": token}).status_code == 404


def test_model_post_with_multipart_file(api: Api) -> None:
    res = api.client.post("/api/v1/models", data={"helper": "numpyhelper"},
                          files={"file": ("seed.npz", npz_bytes(5), "application/octet-stream")})
    assert res.status_code == 200, res.text
    assert api.client.get("/api/v1/models/count").json() == 1


def test_model_post_with_bad_npz_is_400(api: Api) -> None:
    res = api.client.post("/api/v1/models/", data={"helper": "numpyhelper"},
                          files={"file": ("seed.npz", b"this is not an npz", "application/octet-stream")})
    assert res.status_code == 400
    assert res.json()["message"]
    assert api.client.get("/api/v1/models/count").json() == 0


def test_model_post_without_file_is_400_saying_how(api: Api) -> None:
    res = api.client.post("/api/v1/models/", data={"helper": "numpyhelper"})
    assert res.status_code == 400
    assert "file_token" in res.json()["message"]


def test_model_download_container_and_raw(api: Api) -> None:
    res = api.client.post("/api/v1/models/", data={"helper": "numpyhelper"},
                          files={"file": ("seed.npz", npz_bytes(3, 2), "application/octet-stream")})
    model_id = res.json()["model_id"]

    container = api.client.get(f"/api/v1/models/{model_id}/download")
    assert container.status_code == 200
    assert f"filename={model_id}" in container.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(container.content)) as zf:
        assert "metadata.json" in zf.namelist()

    raw = api.client.get(f"/api/v1/models/{model_id}/download", params={"format": "raw"})
    assert raw.status_code == 200
    arrays = get_helper("numpyhelper").load(io.BytesIO(raw.content))
    assert [a.tolist() for a in arrays] == [np.arange(3).tolist(), np.arange(2).tolist()]


def test_model_download_unknown_is_404(api: Api) -> None:
    assert api.client.get("/api/v1/models/nope/download").status_code == 404


def test_model_ancestors_follow_parents(api: Api) -> None:
    from scaleout_server.store import records as r

    api.store.models.add(r.ModelRecord(model_id="a"))
    api.store.models.add(r.ModelRecord(model_id="b", parent_model="a"))
    api.store.models.add(r.ModelRecord(model_id="c", parent_model="b"))
    trail = api.client.get("/api/v1/models/c/ancestors", params={"include_self": "true"}).json()
    assert [m["model_id"] for m in trail] == ["c", "b", "a"]
    reverse = api.client.get("/api/v1/models/c/ancestors", params={"include_self": "false"},
                             headers={"X-Reverse": "true", "X-Limit": "5"}).json()
    assert [m["model_id"] for m in reverse] == ["a", "b"]
    assert api.client.get("/api/v1/models/zzz/ancestors").status_code == 404
