"""Behaviour every model repository must show. Backends come from the `repo` fixture's params."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scaleout_server.repository.base import BlobNotFound, ModelRepository
from scaleout_server.repository.factory import make_repository
from scaleout_server.repository.local import LocalRepository

BACKENDS: dict[str, Callable[[Path], ModelRepository]] = {
    "local": lambda tmp_path: LocalRepository(tmp_path / "repo" / "nested"),
}


@pytest.fixture(params=sorted(BACKENDS))
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelRepository]:
    yield BACKENDS[request.param](tmp_path)


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

    def test_describe_reopens_the_same_data(self, repo: ModelRepository) -> None:
        repo.put("models", "m", io.BytesIO(b"shared"))
        other = make_repository(repo.describe())
        assert _read(other, "models", "m") == b"shared"


def test_local_describe_has_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert LocalRepository("rel").describe() == {"type": "local", "path": str(tmp_path / "rel")}


def test_make_repository_refuses_unknown_types() -> None:
    with pytest.raises(ValueError, match="known types: local"):
        make_repository({"type": "s3"})
    with pytest.raises(ValueError, match="path"):
        make_repository({"type": "local"})
