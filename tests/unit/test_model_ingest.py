"""Seed models are checked at upload from their arrays' headers: good files are stored as containers, broken
ones refused with a message saying why, and nothing is stored for them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from scaleout_server.controller.models import MODELS, ingest_model
from scaleout_server.errors import InvalidInput
from scaleout_server.repository.local import LocalRepository
from scaleoututil import model as container
from scaleoututil.helpers.helpers import get_helper

ARRAYS = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4)]


def npz_bytes(arrays: list[np.ndarray]) -> bytes:
    out = io.BytesIO()
    get_helper("numpyhelper").save(arrays, out)
    return out.getvalue()


def container_bytes(arrays: list[np.ndarray]) -> bytes:
    out = io.BytesIO()
    container.write_container(out, "a" * 32, io.BytesIO(npz_bytes(arrays)), "numpyhelper")
    return out.getvalue()


def model_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("make", [npz_bytes, container_bytes], ids=["bare npz", "container"])
def test_a_seed_is_stored_as_a_container_with_its_parameters(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    repo = LocalRepository(tmp_path / "repo")
    model = ingest_model(repo, io.BytesIO(make(ARRAYS)), "numpyhelper")
    with repo.open(MODELS, model.model_id) as fh, container.open_training_model(fh) as entry:
        loaded = get_helper("numpyhelper").load(io.BytesIO(entry.read()))
    assert [a.tolist() for a in loaded] == [a.tolist() for a in ARRAYS]
    assert [a.dtype for a in loaded] == [a.dtype for a in ARRAYS]


@pytest.mark.parametrize("data, why", [
    (npz_bytes([np.zeros(1000)])[:-300], "not a valid model file for numpyhelper"),
    (b"PK\x03\x04 not really a zip", "not a valid model file for numpyhelper"),
    (npz_bytes([np.array([1 + 2j])]), "real numeric arrays"),
    (b"", "the file is empty"),
], ids=["truncated", "garbage", "complex", "empty"])
def test_a_broken_seed_is_refused_and_nothing_is_stored(tmp_path: Path, data: bytes, why: str) -> None:
    repo = LocalRepository(tmp_path / "repo")
    with pytest.raises(InvalidInput, match=why):
        ingest_model(repo, io.BytesIO(data), "numpyhelper")
    assert model_files(tmp_path / "repo") == []
