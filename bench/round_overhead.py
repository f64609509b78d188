"""Round overhead: seconds per round with N clients and where the time goes.

For each N (default 10, 100, 1000, plus N=1 as a baseline), a fresh local deployment (server =
controller + one combiner process) trains R rounds of a float32 model of P parameters (default 1M,
4 MB) with N virtual clients of bench/loadgen.py, each on its own gRPC connection, whose training
adds a per-client constant (every update differs). Validation is off.

Where the time goes, per round, from the round record (server) and the clients' timestamps (same
machine, same wall clock):
- timeline (adds up to the round's duration): dispatch = round start -> the last client has its task;
  client work = -> the last update was acknowledged (downloads, training, uploads of the slowest
  clients); tail = -> the round is recorded finished (the combiner's last folds and the new model
  written, the controller's reduce and commit).
- phases as recorded: transfer (each client's download and upload seconds, client side), aggregation
  (the combiner's `time_aggregation`: every fold plus writing the result, and the controller's
  `time_reduce`), commit (`time_commit`: the round's model, updates and session in one transaction).
- CPU seconds per round of the combiner, the controller and the load generator.

Baselines measured in the same run: the N=1 round (the fixed cost of a round), and the raw work of a
round done directly in one process: copying the 2 x N model containers through a loopback TCP socket,
plus the NumPy weighted average of N arrays (`raw_work.total`), plus one SHA-256 pass over the N uploaded
containers (`raw_work.total_with_sha256`, the baseline of issue 14: every upload is checksummed).
Writes bench/results/round_overhead.json and .png; `--profiles DIR` keeps the raw py-spy profiles.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.large_model_round import PeakRss, loopback_copy_seconds  # noqa: E402
from bench.loadgen import LoadgenProcess, PySpy, combiner_pid, cpu_seconds, loop_lag  # noqa: E402
from bench.pngchart import Panel, draw  # noqa: E402
from scaleoututil.helpers.helpers import get_helper  # noqa: E402
from tests.e2e.deployment import Deployment  # noqa: E402


def wall(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def r3(value: float) -> float:
    return round(value, 3)


# -- one N -------------------------------------------------------------------------------------------
def run_n(n: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    dep = Deployment(folder)
    loadgen = LoadgenProcess(dep.api_url, n, folder / "loadgen", procs=args.procs,
                             extra=("--no-poll-samples", "--max-uploads", str(args.max_uploads),
                                    *(("--sdk-encode",) if args.sdk_encode else ()),
                                    *(("--heartbeat-interval", "0", "--telemetry-interval", "0") if args.quiet
                                      else ())))
    try:
        server = dep.start_server()
        seed = folder / "seed.npz"
        rng = np.random.default_rng(0)
        get_helper("numpyhelper").save([rng.standard_normal(args.params, dtype=np.float32)], str(seed))
        dep.cli("model", "set-active", "-f", str(seed), *dep.api_args())
        ready = loadgen.start(timeout=120 + n * 0.5)
        combiner = combiner_pid(server.popen.pid)
        procs = {"combiner": [combiner], "controller": [server.popen.pid], "loadgen": loadgen.pids()}
        spies = {"combiner": PySpy(combiner, folder / "combiner.pyspy.txt", args.py_spy, gil=args.profile_gil),
                 "controller": PySpy(server.popen.pid, folder / "controller.pyspy.txt", args.py_spy,
                                     gil=args.profile_gil)} \
            if n == args.profile_n else {}
        before = {k: cpu_seconds(v) for k, v in procs.items()}
        for spy in spies.values():
            spy.start()
        watched = {"combiner": combiner, "controller": server.popen.pid,
                   **{f"loadgen{i}": pid for i, pid in enumerate(procs["loadgen"])}}
        with PeakRss(watched) as rss:
            started = time.time()
            session_id = dep.start_session(rounds=args.rounds, round_timeout=args.round_timeout, validate=False,
                                           clients_required=n, requested_clients=n, aggregator="fedavg",
                                           helper_type="numpyhelper")
            session = dep.wait_session(session_id, args.rounds * (args.round_timeout + 60))
            elapsed = time.time() - started
        profiles = {name: spy.stop() for name, spy in spies.items()}
        if args.profiles and spies:
            args.profiles.mkdir(parents=True, exist_ok=True)
            for name in spies:
                raw = folder / f"{name}.pyspy.txt"
                if raw.exists():
                    shutil.copy(raw, args.profiles / f"round_overhead-{n}-{name}.pyspy.txt")
        after = {k: cpu_seconds(v) for k, v in procs.items()}
        if session["status"] != "Finished":
            raise RuntimeError(f"N={n}: session ended {session['status']}: {session.get('error')}")
        rounds = dep.rounds(session_id)
        result = loadgen.stop()
    except BaseException:
        print(dep.dump_logs()[-8000:], loadgen.output(), sep="\n")
        raise
    finally:
        if loadgen.popen is not None:
            try:
                loadgen.stop()
            except RuntimeError:
                pass
        dep.close()
    per_round = [analyse_round(rnd, [t for t in result["tasks"] if t["round_id"] == rnd["round_id"]])
                 for rnd in rounds]
    for rnd, row in zip(rounds, per_round, strict=True):
        row["loadgen_loop_lag"] = loop_lag(result, wall(rnd["started_at"]), wall(rnd["finished_at"]))
    cpu = {k: r3((after[k] - before[k]) / len(rounds)) for k in procs}
    return {
        "n": n,
        "session_seconds": round(elapsed, 2),
        "rounds": per_round,
        "summary": summarise_rounds(per_round),
        "cpu_seconds_per_round": cpu,
        "peak_rss_mb": {k: round(v / 1e6) for k, v in rss.peak.items() if "/" not in k},
        "loadgen": {"procs": args.procs, "tcp_connections_to_combiner": ready["tcp_connections_to_combiner"],
                    "register_seconds": ready["register_seconds"], "connect_seconds": ready["connect_seconds"],
                    "errors": result["errors"],
                    "error_samples": result.get("error_samples"), "peak_rss_mb": result["peak_rss_mb"]},
        **{f"{name}_profile": prof for name, prof in profiles.items() if prof},
    }


def analyse_round(rnd: dict[str, Any], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """One round's figures. The timeline uses server clocks only: the round record's start and end, the
    moment the combiner handed each task out (TaskRequest.timestamp), and the combiner's wait for the
    updates (`time_wait`, from the RunRound call, which starts `time_wait_clients` after the round);
    client-side timestamps (the load generator's) are reported beside them."""
    data = rnd["round_data"]
    combiner = (rnd.get("combiners") or [{}])[0]
    start, end = wall(rnd["started_at"]), wall(rnd["finished_at"])
    done = [t for t in tasks if t["status"] == "COMPLETED" and "update_acked" in t]
    received = [t["received"] for t in tasks]
    handed = [t["handed_out"] for t in tasks if "handed_out" in t] or received
    downloads = [t["download_end"] - t["download_start"] for t in done]
    uploads = [t["upload_end"] - t["trained"] for t in done]
    last_handed = max(handed) if handed else start
    all_updates_in = start + data.get("time_wait_clients", 0.0) + (combiner.get("time_wait") or 0.0)
    errors: dict[str, int] = {}
    for t in tasks:
        if t["status"] != "COMPLETED":
            key = f"{t['status']}: {t.get('error', '')[:160]}"
            errors[key] = errors.get(key, 0) + 1
    return {
        "round_number": rnd["round_number"],
        "seconds": r3(end - start),
        "updates": len(done),
        "failed_tasks": len(tasks) - len(done),
        "task_errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
        "timeline": {
            "dispatch": r3(last_handed - start),
            "client_work": r3(all_updates_in - last_handed),
            "tail": r3(end - all_updates_in),
        },
        "client_side": {
            "first_task_received": r3(min(received) - start) if received else None,
            "last_task_received": r3(max(received) - start) if received else None,
            "delivery_lag_mean": r3(statistics.fmean([t["received"] - t["handed_out"] for t in tasks
                                                      if "handed_out" in t])) if tasks and "handed_out" in tasks[0]
            else None,
            "last_update_acked": r3(max(t["update_acked"] for t in done) - start) if done else None,
        },
        "transfer": {
            "download_mean": r3(statistics.fmean(downloads)) if downloads else 0.0,
            "download_p99": r3(percentile(downloads, 99)),
            "upload_mean": r3(statistics.fmean(uploads)) if uploads else 0.0,
            "upload_p99": r3(percentile(uploads, 99)),
            "client_seconds_total": r3(sum(downloads) + sum(uploads)),
            "span": r3(max(t["upload_end"] for t in done) - min(t["download_start"] for t in done)) if done else 0.0,
            "mb_moved": round(sum(t.get("bytes_down", 0) + t.get("bytes_up", 0) for t in done) / 1e6, 1),
        },
        "encode_mean": r3(statistics.fmean([t["trained"] - t["download_end"] for t in done])) if done else 0.0,
        "server": {
            "time_wait_clients": r3(data.get("time_wait_clients", 0.0)),
            "time_training": r3(data.get("time_training", 0.0)),
            "combiner_time_wait": r3(combiner.get("time_wait") or 0.0),
            "combiner_time_aggregation": r3(combiner.get("time_aggregation") or 0.0),
            "time_reduce": r3(data.get("time_reduce", 0.0)),
            "time_commit": r3(data.get("time_commit", 0.0)),
            "duration": r3(data.get("duration", 0.0)),
        },
    }


def summarise_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds (the first includes warm-up, e.g. the clients' first decode)."""

    def med(get: Any) -> float:
        return r3(statistics.median([get(r) for r in rounds]))

    return {
        "seconds_per_round": med(lambda r: r["seconds"]),
        "dispatch": med(lambda r: r["timeline"]["dispatch"]),
        "client_work": med(lambda r: r["timeline"]["client_work"]),
        "tail": med(lambda r: r["timeline"]["tail"]),
        "download_mean": med(lambda r: r["transfer"]["download_mean"]),
        "upload_mean": med(lambda r: r["transfer"]["upload_mean"]),
        "transfer_span": med(lambda r: r["transfer"]["span"]),
        "aggregation": med(lambda r: r["server"]["combiner_time_aggregation"] + r["server"]["time_reduce"]),
        "commit": med(lambda r: r["server"]["time_commit"]),
        "updates": min(r["updates"] for r in rounds),
    }


# -- the raw-work baseline ---------------------------------------------------------------------------
def raw_work_seconds(n: int, params: int, container_bytes: int) -> dict[str, float]:
    """What a round cannot avoid, done directly: 2 x N containers through loopback TCP, and the weighted
    average of N updates (each base + a per-client constant, made on the fly as the clients would)."""
    copy = loopback_copy_seconds(2 * n * container_bytes)
    base = np.random.default_rng(0).standard_normal(params, dtype=np.float32)
    started = time.perf_counter()
    acc = np.zeros(params, dtype=np.float64)
    for k in range(n):
        acc += 100.0 * (base + np.float32(1e-3 * (k + 1)))
    result = (acc / (100.0 * n)).astype(np.float32)
    average = time.perf_counter() - started
    assert result.shape == base.shape
    upload = np.random.default_rng(1).integers(0, 256, container_bytes, dtype=np.uint8).tobytes()
    started = time.perf_counter()
    for _ in range(n):
        hashlib.sha256(upload).digest()
    sha = time.perf_counter() - started
    return {"loopback_copy": r3(copy), "numpy_average": r3(average), "total": r3(copy + average),
            "sha256_uploads": r3(sha), "total_with_sha256": r3(copy + average + sha)}


# -- main --------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", default="10,100,1000", help="client counts (comma-separated)")
    parser.add_argument("--baseline-n", type=int, default=1, help="the fixed-cost baseline round (0: skip)")
    parser.add_argument("--params", type=int, default=1_000_000, help="float32 parameters of the model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-timeout", type=float, default=1200.0)
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--sdk-encode", action="store_true", help="clients encode updates with ScaleoutModel")
    parser.add_argument("--quiet", action="store_true",
                        help="clients send no heartbeats or telemetry (isolates the round's own cost)")
    parser.add_argument("--max-uploads", type=int, default=0,
                        help="load generator: clients encoding+uploading at once per process (0: no cap)")
    parser.add_argument("--profile-n", type=int, default=0, help="profile the combiner with py-spy at this N")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy binary [default: on PATH]")
    parser.add_argument("--profile-gil", action="store_true",
                        help="profile only samples holding the GIL (py-spy --gil): Python's own time")
    parser.add_argument("--profiles", type=Path, default=None,
                        help="keep the raw py-spy profiles (collapsed stacks) in this folder")
    parser.add_argument("--work", type=Path, default=None, help="folder for the deployments [default: a temp dir]")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "round_overhead.json")
    args = parser.parse_args()
    ns = sorted({int(x) for x in args.ns.split(",") if x} | ({args.baseline_n} if args.baseline_n > 0 else set()))
    wall_started = time.time()
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="scaleout-bench-rounds-", dir=args.work) as tmp:
        for n in ns:
            print(f"N={n}: {args.rounds} round(s)...", flush=True)
            run = run_n(n, args, Path(tmp) / f"n{n}")
            mb = run["rounds"][0]["transfer"]["mb_moved"]
            container = int(mb * 1e6 / max(1, 2 * run["rounds"][0]["updates"]))
            run["raw_work"] = raw_work_seconds(n, args.params, container)
            runs.append(run)
            s = run["summary"]
            print(f"N={n}: {s['seconds_per_round']:.2f} s/round (dispatch {s['dispatch']:.2f}, client work "
                  f"{s['client_work']:.2f}, tail {s['tail']:.2f}); raw work {run['raw_work']['total']:.2f} s; "
                  f"CPU/round {run['cpu_seconds_per_round']}", flush=True)
    report = build_report(args, runs, wall_started, load_before)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps(report["summary"], indent=2))


def build_report(args: argparse.Namespace, runs: list[dict[str, Any]], wall_started: float,
                 load_before: tuple[float, float, float]) -> dict[str, Any]:
    baseline = next((r for r in runs if r["n"] == args.baseline_n), None)
    base_s = baseline["summary"]["seconds_per_round"] if baseline else None
    table = {}
    for run in runs:
        s = run["summary"]
        with_sha = run["raw_work"].get("total_with_sha256", run["raw_work"]["total"])
        row = {**s, "raw_work_seconds": run["raw_work"]["total"],
               "ratio_to_raw_work": round(s["seconds_per_round"] / max(run["raw_work"]["total"], 1e-9), 1),
               "raw_work_with_sha256_seconds": with_sha,
               "ratio_to_raw_work_with_sha256": round(s["seconds_per_round"] / max(with_sha, 1e-9), 1),
               "combiner_cpu_ms_per_client": round(1000 * run["cpu_seconds_per_round"]["combiner"] / run["n"], 1),
               "cpu_seconds_per_round": run["cpu_seconds_per_round"]}
        if base_s is not None and run["n"] != args.baseline_n:
            row["ratio_to_n1_round"] = round(s["seconds_per_round"] / base_s, 1)
            row["marginal_ms_per_client"] = round(1000 * (s["seconds_per_round"] - base_s) / (run["n"] - 1), 2)
        table[str(run["n"])] = row
    return {
        "benchmark": "round_overhead",
        "model": {"parameters": args.params, "dtype": "float32", "mb": round(args.params * 4 / 1e6, 1)},
        "rounds_per_n": args.rounds,
        "loadgen": {"procs": args.procs, "encode": "ScaleoutModel" if args.sdk_encode else "direct container",
                    "max_uploads": args.max_uploads,
                    "heartbeats_and_telemetry": "off" if args.quiet else
                    "as our client: every 2 s and 5 s, carried by the held poll while one is held"},
        "machine": {"cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "wall_seconds": round(time.time() - wall_started, 1),
        "method": "median over the rounds; timeline = dispatch + client_work + tail = seconds per round; "
                  "aggregation = combiner time_aggregation (folds + result) + controller time_reduce",
        "runs": runs,
        "summary": table,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    rows = report["summary"]
    ns = list(rows)
    panels = [Panel("MS PER CLIENT PER ROUND", [f"N={n}" for n in ns],
                    {"ROUND": [1000 * rows[n]["seconds_per_round"] / int(n) for n in ns],
                     "RAW WORK": [1000 * rows[n]["raw_work_seconds"] / int(n) for n in ns]})]
    for n in ns[-3:]:
        row = rows[n]
        panels.append(Panel(f"N={n}: WHERE THE TIME GOES (S)", ["DISPATCH", "CLIENTS", "TAIL", "AGGR", "COMMIT"],
                            {"ROUND": [row["dispatch"], row["client_work"], row["tail"], row["aggregation"],
                                       row["commit"]]}))
    draw(panels, path, title=f"ROUND OVERHEAD, {report['model']['mb']:.0f} MB MODEL, MEDIAN OF "
                             f"{report['rounds_per_n']} ROUNDS. DISPATCH + CLIENTS + TAIL = ROUND. "
                             "AGGR: ALL FOLDS (DURING CLIENTS) + RESULT (IN TAIL). COMMIT: IN TAIL")


if __name__ == "__main__":
    main()
