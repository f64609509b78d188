"""Aggregation in constant memory: time and peak RSS of the combiner's aggregation path for K large updates.

K updates of a float32 model (default 50M parameters = 200 MB each) are written to disk as the
upload leaves them (model containers in the combiner's updates folder), then aggregated the way a
round does it: the strategy's session state loaded, the global model copied from a LocalRepository
(`Rounds._begin`), each update folded in place (`AggregationJob.fold`, as `Rounds._fold_updates`),
the result written to the repository and the state saved (`Rounds._conclude`). Each measurement
runs in a fresh process; peak RSS is that process's high-water mark (VmHWM) minus what it held after
its imports.

Baseline, measured in the same run: the plain NumPy weighted sum of the same arrays, each update
memory-mapped from its file (`acc += w * np.memmap(...)`, float64 accumulator, then `/ W` and a cast),
without writing anything. Both read the files from a warm page cache (`os.sync()` before every run, so
no write-back of the freshly written updates competes with the combiner's writes). Writes
bench/results/aggregation.json and bench/results/aggregation.png; deletes the update files.

Every other registered strategy is measured the same way at K=20 (`--extra`, default: all nine). The
runs of one strategy share the session's state folder, so the first starts its optimiser state afresh
and the repeats continue it (server optimisers read the saved moments back): the peak is the highest of
both cases. The aim (issue 14): every strategy's peak within 3 x one model's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pngchart import Panel, draw  # noqa: E402
from scaleout_server.aggregation.registry import available_strategies  # noqa: E402

HELPER_TYPE = "numpyhelper"


def high_water() -> int:
    """Peak resident bytes of this process's own address space (not inherited from the parent)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def weight(k: int) -> float:
    return float(100 + 7 * k)


# -- preparing the files ----------------------------------------------------------------------------
def write_files(folder: Path, params: int, count: int) -> None:
    """global model in a LocalRepository under `folder/repo`, updates update-<k>.scm in `folder/updates`."""
    from scaleout_server.repository.local import LocalRepository
    from scaleoututil.helpers.helpers import get_helper
    from scaleoututil.model import write_container

    helper = get_helper(HELPER_TYPE)
    updates = folder / "updates"
    updates.mkdir(parents=True, exist_ok=True)
    base = np.random.default_rng(0).standard_normal(params, dtype=np.float32)
    buffer = np.empty_like(base)

    def container(path: Path, model_id: str, arrays: list[np.ndarray]) -> None:
        raw = folder / ".training.npz"
        helper.save(arrays, str(raw))
        with open(raw, "rb") as training, open(path, "wb") as out:
            write_container(out, model_id, training, helper_type=HELPER_TYPE)
        raw.unlink()

    container(folder / "global.scm", "global", [base])
    with open(folder / "global.scm", "rb") as stream:
        LocalRepository(folder / "repo").put("models", "global", stream)
    (folder / "global.scm").unlink()
    for k in range(count):
        np.add(base, np.float32(0.001 * (k + 1)), out=buffer)  # distinct content, cheap to make
        container(updates / f"update-{k}.scm", f"update-{k}", [buffer])
        print(f"  wrote update {k + 1}/{count}", end="\r", flush=True)
    print()


# -- the two measured children ----------------------------------------------------------------------
def child_combiner(folder: Path, count: int, strategy_name: str) -> dict[str, Any]:
    from scaleout_server.aggregation.job import AggregationJob
    from scaleout_server.aggregation.registry import make_strategy
    from scaleout_server.combiner.rounds import Rounds
    from scaleout_server.repository.local import LocalRepository
    from scaleoututil.helpers.helpers import get_helper

    helper = get_helper(HELPER_TYPE)
    repository = LocalRepository(folder / "repo")
    work = folder / "work"
    rounds = Rounds(None, repository, None, work, state_dir=folder / "state")  # type: ignore[arg-type]
    base = high_water()
    started = time.perf_counter()
    job = AggregationJob(make_strategy(strategy_name, helper), helper, work)
    rounds._begin(job, "bench-session", "global")
    t_begin = time.perf_counter()
    for k in range(count):
        job.fold(folder / "updates" / f"update-{k}.scm", weight(k), {}, delete=False)
    t_fold = time.perf_counter()
    model_id = rounds._conclude(job, "bench-session", HELPER_TYPE, True)
    job.close()
    done = time.perf_counter()
    repository.delete("models", model_id)
    return {"seconds": done - started, "begin_seconds": t_begin - started, "fold_seconds": t_fold - t_begin,
            "conclude_seconds": done - t_fold, "peak_rss_bytes": high_water() - base, "base_rss_bytes": base}


def child_numpy(folder: Path, count: int) -> dict[str, Any]:
    from scaleout_server.aggregation.stored import StoredParams

    offsets = []
    for k in range(count):  # where each update's array starts in its file (not timed)
        path = folder / "updates" / f"update-{k}.scm"
        view = StoredParams.open(path)
        assert view._segments[0].path == path, "the benchmark expects updates stored uncompressed"
        offsets.append((path, view._segments[0].offset, view.specs[0]))
        view.close()
    base = high_water()
    started = time.perf_counter()
    acc = None
    total = 0.0
    for k, (path, offset, spec) in enumerate(offsets):
        mapped = np.memmap(path, dtype=spec.dtype, mode="r", offset=offset, shape=spec.shape)
        if acc is None:
            acc = np.zeros(spec.shape, dtype=np.float64)
        acc += weight(k) * mapped
        total += weight(k)
        del mapped
    assert acc is not None
    result = (acc / total).astype(np.float32)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_rss_bytes": high_water() - base, "checksum": float(result[:1000].sum())}


def run_child(folder: Path, kind: str, count: int, strategy: str = "fedavg", repeat: int = 1,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """The fastest of `repeat` fresh processes (on a shared machine the minimum is the figure least
    disturbed by other work), with the highest peak RSS of them all."""
    results = []
    for _ in range(repeat):
        os.sync()  # no write-back of earlier files may compete with this run's disk writes
        out = subprocess.run([sys.executable, __file__, "--child", kind, "--folder", str(folder), "--count",
                              str(count), "--strategy", strategy], capture_output=True, text=True, check=False,
                             cwd=ROOT, env={**os.environ, **(env or {})})
        if out.returncode != 0:
            raise RuntimeError(f"{kind} K={count} failed:\n{out.stderr}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    results.sort(key=lambda r: r["seconds"])
    chosen = dict(results[0])
    chosen["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in results)
    chosen["all_seconds"] = [round(r["seconds"], 2) for r in results]
    return chosen


# -- the run --------------------------------------------------------------------------------------
def check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed * 1.2 + 2e9:
        raise SystemExit(f"not enough disk space in {folder}: {free / 1e9:.1f} GB free, "
                         f"{needed / 1e9:.1f} GB needed (pass --work DIR or smaller --params/--ks)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=int, default=50_000_000, help="float32 parameters per model")
    parser.add_argument("--ks", default="5,20,50", help="numbers of updates to aggregate")
    parser.add_argument("--extra", default=",".join(s for s in available_strategies() if s != "fedavg"),
                        help="other strategies measured at K=20 (comma-separated; empty: none) [default: all]")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (the fastest is kept)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the update files [default: a temp dir]")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "aggregation.json")
    parser.add_argument("--child", choices=("combiner", "numpy"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="fedavg", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "combiner":
        print(json.dumps(child_combiner(args.folder, args.count, args.strategy)))
        return
    if args.child == "numpy":
        print(json.dumps(child_numpy(args.folder, args.count)))
        return

    ks = sorted(int(k) for k in args.ks.split(","))
    extra = [s for s in args.extra.split(",") if s]
    size = args.params * 4
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    folder = Path(tempfile.mkdtemp(prefix="scaleout-bench-aggregation-", dir=args.work))
    try:
        check_space(folder, (max(ks) + 3) * size)
        print(f"writing {max(ks)} updates of {size / 1e6:.0f} MB to {folder}")
        started = time.perf_counter()
        write_files(folder, args.params, max(ks))
        write_seconds = time.perf_counter() - started
        runs = []
        for count in ks:
            ours = run_child(folder, "combiner", count, repeat=args.repeat)
            baseline = run_child(folder, "numpy", count, repeat=args.repeat)
            runs.append({"strategy": "fedavg", "k": count, "combiner": ours, "numpy_baseline": baseline})
            print(f"fedavg K={count}: {ours['seconds']:.1f} s, peak {ours['peak_rss_bytes'] / 1e6:.0f} MB; "
                  f"numpy {baseline['seconds']:.1f} s, peak {baseline['peak_rss_bytes'] / 1e6:.0f} MB")
        count = 20 if 20 <= max(ks) else max(ks)
        for name in extra:
            # Krum's distances are BLAS products: also measured with one BLAS thread, which on a busy
            # machine is much faster than OpenBLAS's spinning worker threads
            for env in ([{}, {"OPENBLAS_NUM_THREADS": "1"}] if "krum" in name else [{}]):
                ours = run_child(folder, "combiner", count, name, repeat=args.repeat, env=env)
                runs.append({"strategy": name, "k": count, "combiner": ours, "env": env})
                print(f"{name} K={count} {env or ''}: {ours['seconds']:.1f} s, "
                      f"peak {ours['peak_rss_bytes'] / 1e6:.0f} MB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = summarise(args.params, size, write_seconds, runs)
    report["machine"]["load_average_at_start"] = load_at_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps(report["summary"], indent=2))


def summarise(params: int, size: int, write_seconds: float, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def mb(value: float) -> float:
        return round(value / 1e6, 1)

    rows = []
    for run in runs:
        ours = run["combiner"]
        row = {"strategy": run["strategy"], "k": run["k"], **({"env": run["env"]} if run.get("env") else {}),
               "seconds": round(ours["seconds"], 2),
               "seconds_begin": round(ours["begin_seconds"], 2), "seconds_fold": round(ours["fold_seconds"], 2),
               "seconds_conclude": round(ours["conclude_seconds"], 2), "peak_rss_mb": mb(ours["peak_rss_bytes"]),
               "peak_rss_over_model_size": round(ours["peak_rss_bytes"] / size, 2), "all_seconds": ours["all_seconds"]}
        if "numpy_baseline" in run:
            base = run["numpy_baseline"]
            row.update({"numpy_seconds": round(base["seconds"], 2), "numpy_peak_rss_mb": mb(base["peak_rss_bytes"]),
                        "numpy_all_seconds": base["all_seconds"],
                        "ratio_seconds_to_numpy": round(ours["seconds"] / base["seconds"], 2),
                        "ratio_fold_seconds_to_numpy": round(ours["fold_seconds"] / base["seconds"], 2)})
        rows.append(row)
    fedavg = [r for r in rows if r["strategy"] == "fedavg"]
    k_each = 20 if any(r["k"] == 20 for r in fedavg) else max(r["k"] for r in rows)
    at_k = {}  # each strategy at K=20: the highest peak of its runs (Krum: with and without one BLAS thread)
    for r in rows:
        if r["k"] == k_each and r["peak_rss_mb"] >= at_k.get(r["strategy"], {}).get("peak_rss_mb", -1):
            at_k[r["strategy"]] = r
    return {
        "benchmark": "aggregation",
        "model": {"parameters": params, "dtype": "float32", "mb": mb(size)},
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                    "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")},
        "write_updates_seconds": round(write_seconds, 1),
        "method": "fastest of the repeated runs (all_seconds), highest peak RSS; peak RSS = VmHWM of the "
                  "measuring process minus its VmHWM after imports; warm page cache",
        "runs": rows,
        "summary": {
            "fedavg_peak_rss_mb_by_k": {str(r["k"]): r["peak_rss_mb"] for r in fedavg},
            "fedavg_seconds_by_k": {str(r["k"]): r["seconds"] for r in fedavg},
            "numpy_seconds_by_k": {str(r["k"]): r["numpy_seconds"] for r in fedavg},
            "ratio_seconds_to_numpy_by_k": {str(r["k"]): r["ratio_seconds_to_numpy"] for r in fedavg},
            "max_fedavg_peak_over_model_size": max(r["peak_rss_over_model_size"] for r in fedavg),
            "k_of_each_strategy": k_each,
            "peak_rss_mb_by_strategy": {name: r["peak_rss_mb"] for name, r in at_k.items()},
            "peak_rss_over_model_size_by_strategy": {name: r["peak_rss_over_model_size"] for name, r in at_k.items()},
            "seconds_by_strategy": {name: min(x["seconds"] for x in rows if x["strategy"] == name and x["k"] == k_each)
                                    for name in at_k},
            "max_peak_over_model_size": max(r["peak_rss_over_model_size"] for r in at_k.values()),
        },
    }


SHORT = {"fedavg": "AVG", "fedprox": "PROX", "fedavgm": "AVGM", "fedadam": "ADAM", "fedyogi": "YOGI",
         "fedadagrad": "ADAGR", "fedmedian": "MEDIAN", "fedtrimmedavg": "TRIM", "krum": "KRUM", "multikrum": "MKRUM"}


def plot(report: dict[str, Any], path: Path) -> None:
    fedavg = [r for r in report["runs"] if r["strategy"] == "fedavg"]
    model_mb = report["model"]["mb"]
    categories = [f"K={r['k']}" for r in fedavg]
    each = report["summary"]["peak_rss_mb_by_strategy"]
    draw([
        Panel("PEAK RSS (MB)", categories,
              {"COMBINER FEDAVG": [r["peak_rss_mb"] for r in fedavg],
               "NUMPY MEMMAP SUM": [r["numpy_peak_rss_mb"] for r in fedavg]},
              {"MODEL": model_mb, "3X MODEL": 3 * model_mb}),
        Panel("TIME (S)", categories,
              {"COMBINER FEDAVG": [r["seconds"] for r in fedavg],
               "NUMPY MEMMAP SUM": [r["numpy_seconds"] for r in fedavg]}),
        Panel(f"PEAK RSS (MB), K={report['summary']['k_of_each_strategy']}", [SHORT.get(n, n.upper()) for n in each],
              {"COMBINER, EACH STRATEGY": list(each.values())}, {"MODEL": model_mb, "3X MODEL": 3 * model_mb}),
    ], path, title=f"AGGREGATING K UPDATES OF A {model_mb:.0f} MB FLOAT32 MODEL", panel_w=860)


if __name__ == "__main__":
    main()
