"""Helper plugins: NPZ / raw serialisation and the arithmetic aggregators rely on."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from scaleoututil.checksum import HashingReader, copy_and_hash, sha256_file, sha256_stream
from scaleoututil.helpers.helpers import available_helpers, get_helper, load_metadata, save_metadata


@pytest.fixture
def npz() -> object:
    return get_helper("numpyhelper")


def test_get_helper_returns_named_helpers() -> None:
    assert get_helper("numpyhelper").name == "numpyhelper"
    assert get_helper("binaryhelper").name == "binaryhelper"
    assert available_helpers() == ["binaryhelper", "numpyhelper"]


@pytest.mark.parametrize("name", ["nope", "os", "..numpyhelper", "plugins.numpyhelper", "numpyhelper.np", ""])
def test_get_helper_rejects_unknown_or_non_identifier_names(name: str) -> None:
    with pytest.raises(ValueError, match="unknown helper .*; available: binaryhelper, numpyhelper"):
        get_helper(name)


def test_npz_round_trip_keeps_dtype_and_shape(npz, tmp_path: Path) -> None:
    params = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2, 3], dtype=np.int64), np.float64(7.5)]
    path = str(tmp_path / "m.npz")
    assert npz.save(params, path) == path
    loaded = npz.load(path)
    assert len(loaded) == 3
    for orig, back in zip(params, loaded, strict=True):
        orig = np.asarray(orig)
        assert back.dtype == orig.dtype and back.shape == orig.shape
        np.testing.assert_array_equal(back, orig)


def test_npz_save_writes_exact_path_and_arrays_named_by_index(npz, tmp_path: Path) -> None:
    path = str(tmp_path / "model_without_suffix")
    npz.save([np.zeros(i + 1) for i in range(12)], path)
    with np.load(path) as data:
        assert sorted(data.files, key=int) == [str(i) for i in range(12)]


def test_npz_save_and_load_accept_a_pathlib_path(npz, tmp_path: Path) -> None:
    target = tmp_path / "seed.npz"
    assert npz.save([np.arange(3.0)], target) == target
    np.testing.assert_array_equal(npz.load(target)[0], np.arange(3.0))
    binary = get_helper("binaryhelper")
    assert binary.load(binary.save([np.ones(2)], tmp_path / "m.bin"))[0].size == 2


def test_npz_deflates_arrays_that_compress_and_stores_those_that_do_not(npz, tmp_path: Path) -> None:
    path = str(tmp_path / "model.npz")
    sparse, noise = np.zeros(100_000, np.float32), np.random.default_rng(0).random(100_000, np.float32)
    npz.save([sparse, noise], path)
    with zipfile.ZipFile(path) as zf:
        types = {i.filename: i.compress_type for i in zf.infolist()}
    assert types == {"0.npy": zipfile.ZIP_DEFLATED, "1.npy": zipfile.ZIP_STORED}
    assert Path(path).stat().st_size < noise.nbytes + 10_000  # the zeros took almost no room
    loaded = npz.load(path)
    np.testing.assert_array_equal(loaded[0], sparse)
    np.testing.assert_array_equal(loaded[1], noise)


def test_npz_save_without_path_creates_temp_npz(npz) -> None:
    path = npz.save([np.ones(3)])
    try:
        assert path.endswith(".npz")
        np.testing.assert_array_equal(npz.load(path)[0], np.ones(3))
    finally:
        Path(path).unlink()


def test_npz_file_like_round_trip_is_deterministic(npz) -> None:
    outs = []
    for _ in range(2):
        buf = io.BytesIO()
        assert npz.save([np.arange(4.0)], buf) is buf
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    np.testing.assert_array_equal(npz.load(io.BytesIO(outs[0]))[0], np.arange(4.0))


def test_npz_load_reads_numpy_savez_files(npz) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{"1": np.ones(2), "0": np.zeros(3)})
    buf.seek(0)
    a, b = npz.load(buf)
    assert a.shape == (3,) and b.shape == (2,)


@pytest.mark.parametrize(
    "payload",
    [
        b"definitely not a model",
        b"",
        b"PK\x03\x04 truncated zip",
    ],
)
def test_npz_load_rejects_garbage_with_clear_error(npz, payload: bytes) -> None:
    with pytest.raises(ValueError, match="not a valid NPZ model file"):
        npz.load(io.BytesIO(payload))


def test_npz_load_rejects_wrong_array_names_and_single_npy(npz) -> None:
    buf = io.BytesIO()
    np.savez(buf, weights=np.ones(2))
    buf.seek(0)
    with pytest.raises(ValueError, match="not a valid NPZ model file: arrays must be named"):
        npz.load(buf)
    buf = io.BytesIO()
    np.savez(buf, **{"0": np.ones(2), "2": np.ones(2)})  # gap in the indices
    buf.seek(0)
    with pytest.raises(ValueError, match="arrays must be named"):
        npz.load(buf)
    buf = io.BytesIO()
    np.save(buf, np.ones(2))
    buf.seek(0)
    with pytest.raises(ValueError, match="not a valid NPZ model file"):
        npz.load(buf)


def test_npz_load_missing_file_is_file_not_found(npz, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        npz.load(str(tmp_path / "missing.npz"))


def test_increment_average_numbers(npz) -> None:
    out = npz.increment_average([np.array([1.0, 2.0, 3.0])], [np.array([4.0, 5.0, 6.0])], 10, 20)
    np.testing.assert_allclose(out[0], [2.5, 3.5, 4.5])


def test_arithmetic_per_array(npz) -> None:
    m1 = [np.array([1.0, -4.0]), np.array([[9.0]])]
    m2 = [np.array([2.0, 2.0]), np.array([[3.0]])]
    np.testing.assert_allclose(npz.add(m1, m2, 2.0, 3.0)[0], [8.0, -2.0])
    np.testing.assert_allclose(npz.subtract(m1, m2)[0], [-1.0, -6.0])
    np.testing.assert_allclose(npz.multiply(m1, m2)[1], [[27.0]])
    np.testing.assert_allclose(npz.divide(m1, m2)[0], [0.5, -2.0])
    np.testing.assert_allclose(npz.sqrt(m2)[1], [[np.sqrt(3.0)]])
    np.testing.assert_allclose(npz.power(m2, 2)[0], [4.0, 4.0])
    np.testing.assert_allclose(npz.sign(m1)[0], [1.0, -1.0])
    np.testing.assert_allclose(npz.scale(m1, 0.5)[0], [0.5, -2.0])
    assert npz.ones(m1, 0.5)[1].tolist() == [[0.5]]
    assert npz.zeros_like(m1)[0].tolist() == [0.0, 0.0]
    assert npz.ones([np.array([1, 2])], 0.5)[0].tolist() == [0.5, 0.5]  # int input widened, not truncated


def test_norm_is_elementwise_l1_for_every_shape(npz) -> None:
    # the official helper would give 6 (max column sum) for the matrix; we sum absolute values
    assert npz.norm([np.array([[1.0, -2.0], [3.0, 4.0]]), np.array([-1.0])]) == 11.0
    assert npz.norm([np.ones((2, 2, 2))]) == 8.0


def test_shape_mismatch_names_index_and_shapes(npz) -> None:
    with pytest.raises(ValueError, match=r"shape mismatch at array 1: \(2,\) vs \(3,\)"):
        npz.add([np.ones(1), np.ones(2)], [np.ones(1), np.ones(3)])
    with pytest.raises(ValueError, match="different numbers of arrays"):
        npz.increment_average([np.ones(1)], [np.ones(1), np.ones(1)], 1, 2)


def test_binaryhelper_round_trip_is_flat_float64(tmp_path: Path) -> None:
    h = get_helper("binaryhelper")
    path = str(tmp_path / "m.bin")
    h.save([np.array([[1, 2], [3, 4]], dtype=np.int32), np.array([5.5])], path)
    assert Path(path).stat().st_size == 5 * 8
    (loaded,) = h.load(path)
    assert loaded.dtype == np.float64 and loaded.shape == (5,)
    np.testing.assert_array_equal(loaded, [1, 2, 3, 4, 5.5])
    buf = io.BytesIO()
    h.save([np.arange(3.0)], buf)
    buf.seek(0)
    np.testing.assert_array_equal(h.load(buf)[0], np.arange(3.0))
    np.testing.assert_allclose(h.increment_average([np.zeros(2)], [np.ones(2)], 1, 4)[0], [0.25, 0.25])
    with pytest.raises(ValueError, match="not a multiple of 8"):
        h.load(io.BytesIO(b"abc"))


def test_dispatcher_metadata_file_contract(tmp_path: Path) -> None:
    base = str(tmp_path / "out")
    save_metadata({"num_examples": 3}, base)
    assert Path(base + "-metadata").exists()
    assert load_metadata(base) == {"num_examples": 3}


def test_checksum_functions_agree(tmp_path: Path) -> None:
    import hashlib

    data = np.random.default_rng(0).bytes(3 * 1024 * 1024 + 17)
    expected = hashlib.sha256(data).hexdigest()
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(str(path)) == expected
    stream = io.BytesIO(data)
    assert sha256_stream(stream) == expected
    assert stream.tell() == len(data)  # position is not restored
    dst = io.BytesIO()
    assert copy_and_hash(io.BytesIO(data), dst) == (len(data), expected)
    assert dst.getvalue() == data
    reader = HashingReader(io.BytesIO(data))
    while reader.read(1000):
        pass
    assert reader.hexdigest() == expected and reader.size == len(data)
