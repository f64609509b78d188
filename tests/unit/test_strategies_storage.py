"""Stored updates read in place, results written slice by slice, strategy state on disk across restarts."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from scaleout_server.aggregation.job import AggregationJob
from scaleout_server.aggregation.params import ArrayParams, ComputedParams
from scaleout_server.aggregation.registry import make_strategy
from scaleout_server.aggregation.state import SessionStates
from scaleout_server.aggregation.stored import FileArrays, StoredParams, write_npz, write_raw
from scaleout_server.combiner.rounds import Rounds
from scaleout_server.repository.local import LocalRepository
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.model import ScaleoutModel, write_container

NUMPY = get_helper("numpyhelper")
ARRAYS = [np.arange(12, dtype=np.float32).reshape(3, 4), np.zeros(5000, dtype=np.float32),  # zeros get deflated
          np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.array(7, dtype=np.int64), np.array([True, False])]


def write_update(path: Path, arrays: list[np.ndarray], model_id: str = "u") -> Path:
    raw = io.BytesIO()
    NUMPY.save(arrays, raw)
    raw.seek(0)
    with open(path, "wb") as out:
        write_container(out, model_id, raw, helper_type="numpyhelper")
    return path


def assert_same(view: StoredParams, arrays: list[np.ndarray]) -> None:
    assert len(view) == len(arrays)
    for got, want in zip(view, arrays, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_our_containers_are_read_in_place_and_slices_match(tmp_path: Path) -> None:
    view = StoredParams.open(write_update(tmp_path / "u.scm", ARRAYS), NUMPY)
    try:
        assert_same(view, ARRAYS)
        np.testing.assert_array_equal(view.read(0, 5, 9), np.arange(5, 9, dtype=np.float32))
        np.testing.assert_array_equal(view.read(2, 1, 4), [1.0, 2.0, 3.0])  # C order of the Fortran array
        assert view._segments[0].path == tmp_path / "u.scm"  # the incompressible array: no copy
    finally:
        view.close()
    assert [p.name for p in tmp_path.iterdir()] == ["u.scm"]  # scratch copies deleted


def test_official_style_deflated_containers_are_inflated_once_to_scratch(tmp_path: Path) -> None:
    # the official clients deflate NPZ members (savez_compressed) and may deflate the container entry
    raw = io.BytesIO()
    np.savez_compressed(raw, **{str(i): a for i, a in enumerate(ARRAYS)})
    path = tmp_path / "o.scm"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps({"model_id": "o"}))
        zf.writestr("training_model.bin", raw.getvalue())
    scratch = tmp_path / "scratch"
    view = StoredParams.open(path, NUMPY, scratch)
    assert_same(view, ARRAYS)
    assert len(list(scratch.iterdir())) == 1
    view.close()
    assert list(scratch.iterdir()) == []


def test_bare_npz_and_binaryhelper_raw_models_are_read(tmp_path: Path) -> None:
    bare = tmp_path / "bare.npz"
    NUMPY.save(ARRAYS, str(bare))
    with StoredParamsContext(bare, NUMPY) as view:
        assert_same(view, ARRAYS)
    binary = get_helper("binaryhelper")
    raw = io.BytesIO()
    binary.save([np.arange(5.0), np.ones(2)], raw)
    raw.seek(0)
    path = tmp_path / "b.scm"
    with open(path, "wb") as out:
        write_container(out, "b", raw, helper_type="binaryhelper")
    with StoredParamsContext(path, binary) as view:
        np.testing.assert_array_equal(view[0], [0, 1, 2, 3, 4, 1, 1])


class StoredParamsContext:
    def __init__(self, path: Path, helper: object) -> None:
        self.view = StoredParams.open(path, helper)

    def __enter__(self) -> StoredParams:
        return self.view

    def __exit__(self, *exc: object) -> None:
        self.view.close()


def test_truncated_and_misnamed_models_fail_before_any_read(tmp_path: Path) -> None:
    good = write_update(tmp_path / "good.scm", [np.ones(100_000, dtype=np.float32)]).read_bytes()
    (tmp_path / "cut.scm").write_bytes(good[:len(good) // 2])
    with pytest.raises((ValueError, zipfile.BadZipFile)):
        StoredParams.open(tmp_path / "cut.scm", NUMPY)
    named = io.BytesIO()
    np.savez(named, weights=np.ones(3))
    (tmp_path / "named.npz").write_bytes(named.getvalue())
    with pytest.raises(ValueError, match="named '0'..'N-1'"):
        StoredParams.open(tmp_path / "named.npz", NUMPY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.scm", "good.scm", "named.npz"]


def test_written_npz_and_raw_are_what_the_helpers_read(tmp_path: Path) -> None:
    view = ArrayParams(ARRAYS)
    out = io.BytesIO()
    write_npz(view, out)
    out.seek(0)
    loaded = NUMPY.load(out)
    for got, want in zip(loaded, ARRAYS, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    out.seek(0)
    with zipfile.ZipFile(out) as zf:  # stored, so the next round reads the model in place
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    raw = io.BytesIO()
    write_raw(ArrayParams([np.arange(3, dtype=np.float32)]), raw)
    raw.seek(0)
    np.testing.assert_array_equal(get_helper("binaryhelper").load(raw)[0], [0.0, 1.0, 2.0])


def test_streaming_job_deletes_each_update_once_folded(tmp_path: Path) -> None:
    job = AggregationJob(make_strategy("fedavg", NUMPY), NUMPY, tmp_path)
    job.begin(None)
    first = write_update(tmp_path / "a.scm", [np.ones(3)])
    job.fold(first, 1, {})
    assert not first.exists()
    kept = write_update(tmp_path / "b.scm", [np.full(3, 3.0)])
    job.fold(kept, 1, {}, delete=False)  # a session that keeps its updates
    assert kept.exists()
    bad = write_update(tmp_path / "c.scm", [np.ones(4)])
    with pytest.raises(ValueError, match="shape"):
        job.fold(bad, 1, {})
    assert not bad.exists()  # a rejected update is deleted too
    out = io.BytesIO()
    assert job.conclude(out)
    out.seek(0)
    np.testing.assert_array_equal(NUMPY.load(out)[0], [2.0, 2.0, 2.0])
    job.close()


def test_non_streaming_job_keeps_updates_until_closed(tmp_path: Path) -> None:
    job = AggregationJob(make_strategy("fedmedian", NUMPY), NUMPY, tmp_path)
    job.begin(None)
    paths = [write_update(tmp_path / f"{k}.scm", [np.full(3, float(k))]) for k in range(3)]
    for path in paths:
        job.fold(path, 1, {})
    assert all(p.exists() for p in paths)  # the median needs them all at result time
    with job.result_container("m1", "numpyhelper") as stream:
        assert stream is not None
        model = ScaleoutModel.from_stream(stream)
    job.close()
    assert list(tmp_path.iterdir()) == []
    assert model.model_id == "m1" and model.helper_type == "numpyhelper"
    np.testing.assert_array_equal(model.get_model_params()[0], [1.0, 1.0, 1.0])


def test_only_strategies_that_read_the_global_model_get_a_copy_of_it(tmp_path: Path) -> None:
    # FedAvg, FedProx and the robust strategies never look at the global model: copying it (a full read
    # of the repository, S3 included) every round would be wasted work
    work = tmp_path / "work"
    global_model = write_update(tmp_path / "g.scm", [np.ones(3)])
    copies = {}
    for name in ("fedavg", "fedprox", "fedmedian", "krum", "fedavgm", "fedadam"):
        job = AggregationJob(make_strategy(name, NUMPY), NUMPY, work)
        with open(global_model, "rb") as stream:
            job.begin(stream)
            copies[name] = (stream.tell() > 0, any(work.glob(".global-*")))
        job.close()
    assert copies == {"fedavg": (False, False), "fedprox": (False, False), "fedmedian": (False, False),
                      "krum": (False, False), "fedavgm": (True, True), "fedadam": (True, True)}


@pytest.mark.parametrize("name", ["fedavg", "fedadam"])
def test_a_round_from_a_missing_global_model_fails_whatever_the_strategy(tmp_path: Path, name: str) -> None:
    rounds = Rounds(None, LocalRepository(tmp_path / "repo"), None, tmp_path / "work",  # type: ignore[arg-type]
                    state_dir=tmp_path / "state")
    job = AggregationJob(make_strategy(name, NUMPY), NUMPY, tmp_path / "work")
    with pytest.raises(ValueError, match="global model gone is not in the model repository"):
        rounds._begin(job, "session", "gone")
    job.close()


def test_job_without_updates_has_no_result(tmp_path: Path) -> None:
    job = AggregationJob(make_strategy("fedadam", NUMPY), NUMPY, tmp_path)
    job.begin(io.BytesIO(write_update(tmp_path / "g.scm", [np.ones(3)]).read_bytes()))
    with job.result_container("m", "numpyhelper") as stream:
        assert stream is None
    job.close()


def test_a_result_that_fails_while_written_is_an_error_after_the_stream_ends(tmp_path: Path) -> None:
    # the consumer (repository.put) reads a truncated stream to its end; leaving the block must raise,
    # so the combiner deletes what it stored instead of publishing half a model
    strategy = make_strategy("fedavg", NUMPY)
    job = AggregationJob(strategy, NUMPY, tmp_path)
    job.begin(None)
    job.fold(write_update(tmp_path / "a.scm", [np.ones(2_000_000)]), 1, {})  # several written slices
    result = strategy.result()
    assert result is not None

    def failing(index: int, start: int, stop: int) -> np.ndarray:
        if start > 0:
            raise RuntimeError("disk on fire")
        return result.read(index, start, stop)

    strategy.result = lambda: ComputedParams(result.specs, failing)  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="disk on fire"):
        with job.result_container("m", "numpyhelper") as stream:
            assert stream is not None
            data = stream.read()
    assert 0 < len(data) < 2_000_000 * 8
    job.close()


def test_session_states_round_trip_and_ignore_other_strategies(tmp_path: Path) -> None:
    states = SessionStates(tmp_path / "states")
    state = {"rounds": 3, "m": [np.arange(3, dtype=np.float32), np.zeros(0)], "v": [np.ones(3), np.zeros(0)]}
    states.save("session-1", "fedadam", state)
    loaded = SessionStates(tmp_path / "states").load("session-1", "fedadam")  # a new object: as after a restart
    assert loaded is not None and loaded["rounds"] == 3
    np.testing.assert_array_equal(loaded["m"][0], state["m"][0])
    assert loaded["m"][0].dtype == np.float32 and loaded["v"][1].size == 0
    assert states.load("session-1", "fedyogi") is None
    assert states.load("other", "fedadam") is None
    states.save("session-1", "fedadam", {})
    assert states.load("session-1", "fedadam") is None


def test_session_states_read_arrays_in_place_also_from_files_numpy_savez_wrote(tmp_path: Path) -> None:
    # state saved before the moments moved to disk (np.savez) still loads, as views reading the file in place
    # that survive the file being replaced by the next save
    states = SessionStates(tmp_path)
    meta = json.dumps({"strategy": "fedavgm", "values": {"rounds": 2}, "arrays": {"m": 2}})
    with open(states.path("old"), "wb") as out:
        np.savez(out, __meta__=np.array(meta), **{"m.0": np.arange(5, dtype=np.float32), "m.1": np.zeros(0)})
    loaded = states.load("old", "fedavgm")
    assert loaded is not None and isinstance(loaded["m"], FileArrays)
    states.save("old", "fedavgm", {"rounds": 3, "m": [np.ones(5, dtype=np.float32), np.zeros(0)]})
    np.testing.assert_array_equal(loaded["m"][0], np.arange(5, dtype=np.float32))
    assert loaded["m"].read(0, 1, 3).tolist() == [1.0, 2.0] and loaded["m"][1].size == 0
    resaved = states.load("old", "fedavgm")
    assert resaved is not None and resaved["rounds"] == 3 and resaved["m"][0].tolist() == [1.0] * 5


def test_session_states_keep_only_the_most_recent_sessions(tmp_path: Path) -> None:
    states = SessionStates(tmp_path, max_sessions=3)
    for k in range(5):
        states.save(f"s{k}", "fedavgm", {"rounds": 1, "m": [np.ones(2)]})
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["s2.npz", "s3.npz", "s4.npz"]
    assert SessionStates(tmp_path).path("../evil").parent == tmp_path  # odd ids become a hash, not a path


def test_fedadam_state_survives_a_restart(tmp_path: Path) -> None:
    # round 1 and round 2 each with brand-new strategy, job and state-store objects (as after a combiner
    # restart): the result must equal two Adam steps, not two first steps
    lr, beta1, beta2, tau = 0.1, 0.9, 0.99, 1e-3
    x0 = np.linspace(-1, 1, 2000).astype(np.float32)
    deltas = [0.5, -0.2]
    model = x0

    def one_round(global_model: np.ndarray, delta: float) -> np.ndarray:
        states = SessionStates(tmp_path / "states")
        strategy = make_strategy("fedadam", NUMPY, {"server_lr": lr})
        job = AggregationJob(strategy, NUMPY, tmp_path / "work")
        try:
            raw = io.BytesIO()
            NUMPY.save([global_model], raw)
            job.begin(io.BytesIO(raw.getvalue()), states.load("sess", "fedadam"))
            job.fold(write_update(tmp_path / "u.scm", [global_model + np.float32(delta)]), 10, {})
            out = io.BytesIO()
            assert job.conclude(out)
            states.save("sess", strategy.name, job.state_dict())
            out.seek(0)
            return NUMPY.load(out)[0]
        finally:
            job.close()

    for delta in deltas:
        model = one_round(model, delta)

    def reference(carry_state: bool) -> np.ndarray:
        x, m, v = x0.astype(np.float64), 0.0, tau * tau
        for delta in deltas:
            if not carry_state:
                m, v = 0.0, tau * tau
            x32 = x.astype(np.float32)
            d = (x32 + np.float32(delta)).astype(np.float64) - x32
            m = beta1 * m + (1 - beta1) * d
            v = beta2 * v + (1 - beta2) * d * d
            x = x32 + lr * m / (np.sqrt(v) + tau)
        return x.astype(np.float32)

    np.testing.assert_allclose(model, reference(carry_state=True), rtol=1e-5, atol=1e-6)
    assert not np.allclose(model, reference(carry_state=False), rtol=1e-3)  # a lost state would show
