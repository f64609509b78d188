"""ScaleoutModel and the container format: ids, determinism, wrapping, spooling."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

from scaleoututil.grpc import scaleout_pb2
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.model import (
    METADATA_ENTRY,
    SPOOL_MAX_SIZE,
    TRAINING_ENTRY,
    InvalidModel,
    ScaleoutModel,
    is_container,
    open_training_model,
    read_container_metadata,
    write_container,
)


def _params() -> list[np.ndarray]:
    return [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1.5, -2.5])]


def _npz_bytes(params: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    get_helper("numpyhelper").save(params, buf)
    return buf.getvalue()


def _container_bytes(meta: dict, training: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(METADATA_ENTRY, json.dumps(meta))
        zf.writestr(TRAINING_ENTRY, training)
    return buf.getvalue()


def _assert_params_equal(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def test_container_round_trip_keeps_id_helper_type_and_params() -> None:
    model = ScaleoutModel.from_model_params(_params(), model_id="m-1")
    data = model.get_stream().read()
    back = ScaleoutModel.from_bytes(data)
    assert back.model_id == "m-1"
    assert back.helper_type == "numpyhelper"
    assert back.checksum == model.checksum == hashlib.sha256(data).hexdigest()
    _assert_params_equal(back.get_model_params(), _params())  # helper found through helper_type


def test_container_layout_and_metadata() -> None:
    model = ScaleoutModel.from_model_params(_params(), model_id="m-2")
    with zipfile.ZipFile(model.get_stream()) as zf:
        assert zf.namelist() == [METADATA_ENTRY, TRAINING_ENTRY]
        # the training model is stored as is: the helper's format is compressed already (or does not compress)
        assert [i.compress_type for i in zf.infolist()] == [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED]
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
        raw_meta = zf.read(METADATA_ENTRY)
        assert json.loads(raw_meta) == {"model_id": "m-2", "helper_type": "numpyhelper", "_version": 2}
        assert list(json.loads(raw_meta)) == sorted(json.loads(raw_meta))
        with np.load(io.BytesIO(zf.read(TRAINING_ENTRY))) as npz:
            assert sorted(npz.files) == ["0", "1"]


def test_same_inputs_give_same_bytes_and_checksum() -> None:
    a = ScaleoutModel.from_model_params(_params(), model_id="same")
    b = ScaleoutModel.from_model_params(_params(), model_id="same")
    assert a.get_stream().read() == b.get_stream().read()
    assert a.checksum == b.checksum


def test_changing_model_id_changes_checksum_and_container() -> None:
    model = ScaleoutModel.from_model_params(_params(), model_id="before")
    old = model.checksum
    model.model_id = "after"
    assert model.checksum != old
    assert read_container_metadata(model.get_stream())["model_id"] == "after"
    _assert_params_equal(model.get_model_params(), _params())
    model.model_id = "before"
    assert model.checksum == old


def test_restamping_a_received_container_keeps_user_metadata() -> None:
    data = _container_bytes({"model_id": "orig", "helper_type": "numpyhelper", "note": "hi"}, _npz_bytes(_params()))
    model = ScaleoutModel.from_bytes(data)
    assert model.checksum == hashlib.sha256(data).hexdigest()  # received bytes kept exactly
    model.model_id = "new"
    meta = read_container_metadata(model.get_stream())
    assert meta == {"model_id": "new", "helper_type": "numpyhelper", "_version": 2, "note": "hi"}
    _assert_params_equal(model.get_model_params(), _params())


def test_raw_npz_is_wrapped_with_new_id() -> None:
    raw = _npz_bytes(_params())
    model = ScaleoutModel.from_bytes(raw)
    uuid.UUID(model.model_id)
    assert model.helper_type is None
    with pytest.raises(ValueError, match="No helper provided to unpack model parameters."):
        model.get_model_params()
    helper = get_helper("numpyhelper")
    _assert_params_equal(model.get_model_params(helper), _params())
    assert model.helper is helper
    _assert_params_equal(model.get_model_params(), _params())  # helper remembered
    assert is_container(model.get_stream())
    assert model.get_training_model_stream().read() == raw
    assert ScaleoutModel.from_bytes(raw, model_id="seed").model_id == "seed"


def test_model_id_mismatch_raises() -> None:
    data = ScaleoutModel.from_model_params(_params(), model_id="a").get_stream().read()
    with pytest.raises(InvalidModel, match="Model ID mismatch"):
        ScaleoutModel.from_bytes(data, model_id="b")
    assert ScaleoutModel.from_bytes(data, model_id="a").model_id == "a"


def test_newer_container_version_is_refused() -> None:
    with pytest.raises(InvalidModel, match="version 3"):
        ScaleoutModel.from_bytes(_container_bytes({"model_id": "v3", "_version": 3}))


def test_minimal_container_without_version_loads() -> None:
    model = ScaleoutModel.from_bytes(_container_bytes({"model_id": "min"}, _npz_bytes(_params())))
    assert model.model_id == "min" and model.helper_type is None
    _assert_params_equal(model.get_model_params("numpyhelper"), _params())


def test_container_without_training_entry_is_invalid() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(METADATA_ENTRY, json.dumps({"model_id": "x"}))
    with pytest.raises(InvalidModel, match=TRAINING_ENTRY):
        ScaleoutModel.from_bytes(buf.getvalue())


def test_filechunk_stream_reassembles_to_same_checksum() -> None:
    params = [np.random.default_rng(1).random(400_000)]  # ~3 MB, several chunks
    model = ScaleoutModel.from_model_params(params, model_id="chunky")
    chunks = list(model.get_filechunk_stream(chunk_size=1024 * 1024))
    assert len(chunks) >= 2
    assert all(isinstance(c, scaleout_pb2.FileChunk) for c in chunks)
    assert all(len(c.data) == 1024 * 1024 for c in chunks[:-1])
    back = ScaleoutModel.from_filechunk_stream([scaleout_pb2.FileChunk(data=b"")] + chunks, model_id="chunky")
    assert back.checksum == model.checksum
    assert back.verify_checksum(model.checksum) and back.verify_checksum(None)
    assert not back.verify_checksum("0" * 64)
    _assert_params_equal(back.get_model_params(), params)


def test_restamping_while_a_chunk_stream_is_read_does_not_break_that_stream() -> None:
    params = [np.random.default_rng(3).random(400_000)]
    model = ScaleoutModel.from_model_params(params, model_id="before")
    before = model.checksum
    stream = model.get_filechunk_stream(chunk_size=1024 * 1024)
    first = next(stream)
    model.model_id = "after"  # e.g. another thread re-stamps the model during an upload
    sent = ScaleoutModel.from_filechunk_stream([first, *stream])
    assert sent.model_id == "before" and sent.checksum == before
    assert model.checksum != before
    _assert_params_equal(model.get_model_params(), params)


def test_large_model_spills_to_disk_and_round_trips(tmp_path: Path) -> None:
    params = [np.random.default_rng(2).random(30 * 1024 * 1024 // 8)]  # 30 MB of float64
    model = ScaleoutModel.from_model_params(params, model_id="big")
    assert model._training is not None and model._training._rolled  # spooled to disk
    path = str(tmp_path / "big.scm")
    model.save_to_file(path)
    assert model.size > SPOOL_MAX_SIZE and model._container._rolled
    back = ScaleoutModel.from_file(path)
    assert back._container._rolled
    assert back.model_id == "big" and back.checksum == model.checksum
    _assert_params_equal(back.get_model_params(), params)


def test_write_and_read_container_functions() -> None:
    out = io.BytesIO()
    write_container(out, "fn", io.BytesIO(b"payload"), "binaryhelper", {"k": 1, "model_id": "ignored"})
    out.seek(0)
    assert is_container(out) and out.tell() == 0
    assert read_container_metadata(out) == {"model_id": "fn", "helper_type": "binaryhelper", "_version": 2, "k": 1}
    assert open_training_model(out).read() == b"payload"
    assert not is_container(io.BytesIO(_npz_bytes(_params())))  # a bare NPZ is a ZIP, not a container
    assert not is_container(io.BytesIO(b"nope"))
    with pytest.raises(InvalidModel, match="not a model container"):
        read_container_metadata(io.BytesIO(b"nope"))


def test_from_model_params_with_binaryhelper_records_its_type() -> None:
    model = ScaleoutModel.from_model_params([np.arange(3.0)], helper=get_helper("binaryhelper"))
    back = ScaleoutModel.from_stream(model.get_stream())
    assert back.helper_type == "binaryhelper"
    np.testing.assert_array_equal(back.get_model_params()[0], np.arange(3.0))


def test_invalid_model_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="model_id"):
        ScaleoutModel(model_id="")
    model = ScaleoutModel()
    with pytest.raises(ValueError, match="model_id"):
        model.model_id = 42  # type: ignore[assignment]


def test_concurrent_readers_see_consistent_bytes() -> None:
    model = ScaleoutModel.from_model_params([np.random.default_rng(3).random(300_000)], model_id="shared")
    expected = model.get_stream().read()
    results: list[bytes] = []

    def read() -> None:
        results.append(b"".join(c.data for c in model.get_filechunk_stream(chunk_size=65536)))
        results.append(model.get_stream().read())

    threads = [threading.Thread(target=read) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12 and all(r == expected for r in results)


def test_published_package_names_build_and_read_the_same_model() -> None:
    """Projects written for the published packages call from_training_model/get_training_model."""
    params = [np.arange(4, dtype=np.float32)]
    model = ScaleoutModel.from_training_model(params, helper="numpyhelper",
                                              metadata={"model_id": "ignored", "epoch": 3})
    assert model.model_id != "ignored"
    assert model.metadata["epoch"] == 3
    reread = ScaleoutModel.from_bytes(model.get_stream().read())
    np.testing.assert_array_equal(reread.get_training_model("numpyhelper")[0], params[0])
    assert reread.metadata["epoch"] == 3
