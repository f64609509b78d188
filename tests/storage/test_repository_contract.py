"""Behaviour every model repository must show: each test runs on a local folder and on a real S3 server
(SeaweedFS; the `repo` fixture in conftest.py). S3-only behaviour (multipart uploads, bucket creation,
credentials, unreachable endpoints) is tested at the end."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest

from scaleout_server.errors import Unavailable
from scaleout_server.repository.base import (
    BlobNotFound,
    ModelRepository,
    RepositoryAccessDenied,
    RepositoryUnavailable,
)
from scaleout_server.repository.factory import make_repository, repository_from_settings
from scaleout_server.repository.local import LocalRepository
from scaleout_server.repository.s3 import MIN_PART_SIZE, S3Repository
from scaleout_server.settings import load_settings
from tests.storage.conftest import S3_BUCKET, s3_settings
from tests.storage.services import S3_ACCESS_KEY, S3Server


class _TrickleStream(io.RawIOBase):
    """Returns at most `step` bytes per read, like a socket; can fail after `fail_after` bytes."""

    def __init__(self, data: bytes, step: int = 7777, fail_after: int | None = None) -> None:
        self._data = data
        self._pos = 0
        self._step = step
        self._fail_after = fail_after

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._fail_after is not None and self._pos >= self._fail_after:
            raise ConnectionError("client went away")
        n = self._step if size < 0 else min(size, self._step)
        piece = self._data[self._pos:self._pos + n]
        self._pos += len(piece)
        return piece


def _read(repo: ModelRepository, ns: str, key: str) -> bytes:
    with repo.open(ns, key) as f:
        return f.read()


class TestRepositoryContract:
    def test_put_then_open_round_trips_bytes_with_size_and_sha256(self, repo: ModelRepository) -> None:
        data = os.urandom(2 * 1024 * 1024 + 123)  # several chunks, last one partial
        size, sha = repo.put("models", "m-1.npz", _TrickleStream(data))  # type: ignore[arg-type]
        assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest())
        assert _read(repo, "models", "m-1.npz") == data
        assert repo.exists("models", "m-1.npz")
        assert repo.size("models", "m-1.npz") == len(data)

    def test_empty_object_is_stored(self, repo: ModelRepository) -> None:
        assert repo.put("packages", "empty", io.BytesIO(b"")) == (0, hashlib.sha256(b"").hexdigest())
        assert _read(repo, "packages", "empty") == b""

    def test_namespaces_are_separate(self, repo: ModelRepository) -> None:
        repo.put("models", "k", io.BytesIO(b"model"))
        repo.put("packages", "k", io.BytesIO(b"package"))
        assert _read(repo, "models", "k") == b"model"
        assert _read(repo, "packages", "k") == b"package"
        assert not repo.exists("partials", "k")

    def test_put_replaces_existing_object_atomically(self, repo: ModelRepository) -> None:
        old, new = b"a" * 3_000_000, b"b" * 3_000_000
        repo.put("models", "m", io.BytesIO(old))
        seen: set[bytes] = set()
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                seen.add(_read(repo, "models", "m"))

        t = threading.Thread(target=reader)
        t.start()
        try:
            for _ in range(5):
                repo.put("models", "m", io.BytesIO(new))
                repo.put("models", "m", io.BytesIO(old))
        finally:
            stop.set()
            t.join()
        assert seen <= {old, new}  # never a torn or partial object

    def test_failed_put_keeps_the_previous_object_and_leaves_no_litter(self, repo: ModelRepository) -> None:
        repo.put("models", "m", io.BytesIO(b"good"))
        with pytest.raises(ConnectionError):
            repo.put("models", "m", _TrickleStream(b"x" * 100_000, step=1000, fail_after=50_000))  # type: ignore[arg-type]
        assert _read(repo, "models", "m") == b"good"
        if isinstance(repo, LocalRepository):
            assert sorted(p.name for p in (repo.root / "models").iterdir()) == ["m"]

    @pytest.mark.parametrize("key", ["", "..", "../x", "a/b", "a\\b", ".hidden", "a..b", "x" * 256, "sp ace", "é"])
    def test_bad_keys_are_refused(self, repo: ModelRepository, key: str) -> None:
        with pytest.raises(ValueError, match="invalid key"):
            repo.put("models", key, io.BytesIO(b"x"))
        with pytest.raises(ValueError):
            repo.open("models", key)

    def test_bad_namespace_is_refused(self, repo: ModelRepository) -> None:
        with pytest.raises(ValueError, match="invalid namespace"):
            repo.exists("../models", "k")

    def test_missing_object_raises_blob_not_found(self, repo: ModelRepository) -> None:
        with pytest.raises(BlobNotFound, match="nope"):
            repo.open("models", "nope")
        with pytest.raises(BlobNotFound):
            repo.size("models", "nope")
        assert repo.exists("models", "nope") is False

    def test_delete_removes_object_once(self, repo: ModelRepository) -> None:
        repo.put("models", "m", io.BytesIO(b"x"))
        assert repo.delete("models", "m") is True
        assert repo.delete("models", "m") is False
        assert not repo.exists("models", "m")

    def test_open_is_seekable_so_zip_readers_work(self, repo: ModelRepository) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr("metadata.json", '{"model_id": "m"}')
            zf.writestr("training_model.bin", os.urandom(300_000))
        buffer.seek(0)
        repo.put("models", "m", buffer)
        with repo.open("models", "m") as stream:
            assert stream.seekable()
            with zipfile.ZipFile(stream) as zf:
                assert zf.read("metadata.json") == b'{"model_id": "m"}'
                assert zf.read("training_model.bin") == zipfile.ZipFile(buffer).read("training_model.bin")

    def test_describe_reopens_the_same_data(self, repo: ModelRepository) -> None:
        repo.put("models", "m", io.BytesIO(b"shared"))
        other = make_repository(repo.describe())
        assert _read(other, "models", "m") == b"shared"


def test_local_describe_has_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert LocalRepository("rel").describe() == {"type": "local", "path": str(tmp_path / "rel")}


def test_make_repository_refuses_unknown_types_and_missing_fields() -> None:
    with pytest.raises(ValueError, match="unknown repository type 'ftp'; known types: local, s3"):
        make_repository({"type": "ftp"})
    with pytest.raises(ValueError, match="path"):
        make_repository({"type": "local"})
    with pytest.raises(ValueError, match='needs "bucket".*s3_bucket'):
        make_repository({"type": "s3", "endpoint_url": "http://127.0.0.1:1"})


# -- S3 only -----------------------------------------------------------------------------------------


def _s3(server: S3Server, bucket: str = S3_BUCKET, **kwargs: Any) -> S3Repository:
    values: dict[str, Any] = {"endpoint_url": server.endpoint, "access_key": server.access_key,
                              "secret_key": server.secret_key, "prefix": f"t-{uuid.uuid4().hex[:8]}", **kwargs}
    return S3Repository(bucket, **values)


def _raw_client(server: S3Server) -> Any:
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, region_name="us-east-1")


def test_s3_large_object_goes_up_in_parts_and_streams_back(s3_server: S3Server) -> None:
    repo = _s3(s3_server, part_size=MIN_PART_SIZE)
    data = os.urandom(2 * MIN_PART_SIZE + 12345)
    size, sha = repo.put("models", "big", _TrickleStream(data, step=65536))  # type: ignore[arg-type]
    assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest())
    head = _raw_client(s3_server).head_object(Bucket=S3_BUCKET, Key=f"{repo.prefix}models/big")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object of three parts
    digest = hashlib.sha256()
    with repo.open("models", "big") as stream:
        while piece := stream.read(1 << 20):
            digest.update(piece)
    assert digest.hexdigest() == sha


def test_s3_failed_multipart_upload_is_aborted_and_the_old_object_stays(s3_server: S3Server) -> None:
    repo = _s3(s3_server, part_size=MIN_PART_SIZE)
    repo.put("models", "m", io.BytesIO(b"good"))
    broken = _TrickleStream(b"x" * (3 * MIN_PART_SIZE), step=1 << 20, fail_after=2 * MIN_PART_SIZE)
    with pytest.raises(ConnectionError):
        repo.put("models", "m", broken)  # type: ignore[arg-type]
    assert _read(repo, "models", "m") == b"good"
    pending = _raw_client(s3_server).list_multipart_uploads(Bucket=S3_BUCKET, Prefix=repo.prefix)
    assert pending.get("Uploads", []) == []


def test_s3_reader_seeks_with_ranged_requests(s3_server: S3Server) -> None:
    repo = _s3(s3_server)
    data = bytes(range(256)) * 1000
    repo.put("models", "m", io.BytesIO(data))
    with repo.open("models", "m") as stream:
        assert stream.read(10) == data[:10]
        stream.seek(200_000)
        assert stream.read(7) == data[200_000:200_007]
        stream.seek(-5, io.SEEK_END)
        assert stream.read() == data[-5:] and stream.tell() == len(data)
        stream.seek(3)
        assert stream.read(4) == data[3:7]


def test_s3_reader_refuses_to_mix_two_versions_of_an_object(s3_server: S3Server) -> None:
    repo = _s3(s3_server)
    repo.put("models", "m", io.BytesIO(b"a" * 3_000_000))
    with repo.open("models", "m") as stream:
        assert stream.read(10) == b"a" * 10
        repo.put("models", "m", io.BytesIO(b"b" * 3_000_000))
        stream.seek(2_000_000)  # a new request: it must not return the new version's bytes
        with pytest.raises(OSError, match="replaced while being read"):
            stream.read(10)


def test_s3_missing_bucket_is_created(s3_server: S3Server) -> None:
    bucket = f"fresh-{uuid.uuid4().hex[:10]}"
    repo = _s3(s3_server, bucket=bucket)
    repo.put("models", "m", io.BytesIO(b"x"))
    assert _raw_client(s3_server).head_object(Bucket=bucket, Key=f"{repo.prefix}models/m")["ContentLength"] == 1
    _s3(s3_server, bucket=bucket)  # opening an existing bucket is fine too


def test_s3_prefixes_keep_deployments_in_one_bucket_apart(s3_server: S3Server) -> None:
    first, second = _s3(s3_server, prefix="one/"), _s3(s3_server, prefix="/two")
    first.put("models", "m", io.BytesIO(b"first"))
    second.put("models", "m", io.BytesIO(b"second"))
    assert (_read(first, "models", "m"), _read(second, "models", "m")) == (b"first", b"second")
    assert second.describe()["prefix"] == "two/"


@pytest.mark.parametrize(("access_key", "code"), [(S3_ACCESS_KEY, "SignatureDoesNotMatch"),
                                                  ("nobody", "InvalidAccessKeyId")])
def test_s3_wrong_credentials_are_reported_as_access_denied(s3_server: S3Server, access_key: str, code: str) -> None:
    with pytest.raises(RepositoryAccessDenied) as info:
        _s3(s3_server, access_key=access_key, secret_key="wrong-secret")
    message = str(info.value)
    assert code in message and "s3_access_key" in message and "AWS_ACCESS_KEY_ID" in message
    assert "wrong-secret" not in message


def test_s3_unreachable_endpoint_is_reported_quickly() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(RepositoryUnavailable, match=f"cannot reach the S3 endpoint {endpoint}.*s3_endpoint"):
        S3Repository("models", endpoint_url=endpoint, access_key="k", secret_key="s")
    assert time.monotonic() - started < 15
    assert issubclass(RepositoryUnavailable, Unavailable)  # the REST API answers 503


def test_s3_describe_has_no_secrets_and_reopens_with_the_callers_own_credentials(
        s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    settings = s3_settings(s3_server)
    repo = repository_from_settings(settings)
    repo.put("models", "m", io.BytesIO(b"shared"))
    description = repo.describe()
    assert description == {"type": "s3", "bucket": S3_BUCKET, "endpoint_url": s3_server.endpoint,
                           "region": "us-east-1", "prefix": f"{settings.s3_prefix}/"}
    combiner_side = make_repository(description, s3_settings(s3_server))  # its own settings, same keys
    assert _read(combiner_side, "models", "m") == b"shared"


def test_s3_repository_is_chosen_by_settings_from_the_environment(
        s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"REPOSITORY_TYPE": "s3", "S3_ENDPOINT": s3_server.endpoint, "S3_BUCKET": S3_BUCKET,
                        "S3_ACCESS_KEY": s3_server.access_key, "S3_SECRET_KEY": s3_server.secret_key,
                        "S3_PREFIX": "from-env", "S3_REGION": "us-east-1"}.items():
        monkeypatch.setenv(f"SCALEOUT_{name}", value)
    settings = load_settings()
    repo = repository_from_settings(settings)
    assert isinstance(repo, S3Repository) and repo.prefix == "from-env/"
    assert settings.masked()["s3_secret_key"] == "***" and s3_server.secret_key not in str(settings.masked())
