"""A large model with the published 1.1 client: its round time against a TCP copy, and what the combiner spends.

The published clients keep ModelService.Upload/Download in 1 MiB chunks and a 4 MiB message limit, so
the byte path does not help them; what we owe them is a combiner that is never what limits their round.
One client trains R rounds (no validation) on a float32 model of --size-mb MiB with the weighted test
project (train adds a constant), once as the published 1.1 client and once as ours (the same run, the
same deployment settings). Reported per setup: seconds per round (the controller's round duration,
median), against a plain loopback TCP copy of the round's bytes (one download + one upload); the
combiner's CPU seconds per round and per GiB moved; and its fold time per update (`time_aggregation`:
reading the update and folding it into the aggregate). Writes bench/results/published_client_round.json;
the published venv comes from tests/interop (built once under .cache/interop).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.large_model_round import loopback_copy_seconds  # noqa: E402
from scaleoututil.helpers.helpers import get_helper  # noqa: E402
from tests.e2e.deployment import Deployment  # noqa: E402
from tests.interop.conftest import WEIGHTED, Official, project_copy  # noqa: E402
from tests.interop.official import PUBLISHED, ensure_venv  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB


def combiner_process(dep: Deployment) -> psutil.Process:
    children = psutil.Process(dep.procs[0].popen.pid).children()
    if len(children) != 1:
        raise RuntimeError(f"expected the server's one combiner child, found {children}")
    return children[0]


def run_setup(name: str, size: int, rounds: int, release_label: str | None,
              profile: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="published-round-") as tmp:
        root = Path(tmp)
        dep = Deployment(root)
        try:
            dep.start_server()
            project = project_copy(WEIGHTED, root / "project")
            seed = root / "seed.npz"
            params = [np.random.default_rng(0).standard_normal(size // 4, dtype=np.float32)]
            get_helper("numpyhelper").save(params, str(seed))
            del params
            dep.cli("model", "set-active", "-f", str(seed), *dep.api_args(), timeout=1800)
            seed.unlink()
            model = dep.get("/api/v1/models/", headers={"X-Limit": "1", "X-Sort-Key": "committed_at",
                                                         "X-Sort-Order": "desc"})["result"][0]["model_id"]
            env = {"E2E_CONSTANT": "1.0", "E2E_NUM_EXAMPLES": "1", "E2E_TRAIN_STEPS": "1"}
            if release_label is None:
                dep.start_client("c0", project, env=env)
            else:
                release = next(r for r in PUBLISHED if r.label == release_label)
                Official(ensure_venv(release), dep, root / "home").start_client("c0", project, env=env)
            combiner = combiner_process(dep)
            spy = None
            if profile is not None:  # py-spy on the combiner for the session (raw counts: text, greppable)
                profile.mkdir(parents=True, exist_ok=True)
                out = profile / f"combiner-{name.replace(' ', '-')}.txt"
                spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                                        str(combiner.pid), "--format", "raw", "--rate", "50", "-o", str(out)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cpu = sum(combiner.cpu_times()[:2])
            started = time.monotonic()
            session_id = dep.start_session(rounds=rounds, round_timeout=600, model_id=model, clients_required=1,
                                           validate=False)
            session = dep.wait_session(session_id, timeout=rounds * 600)
            wall = time.monotonic() - started
            cpu = sum(combiner.cpu_times()[:2]) - cpu
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
            if session["status"] != "Finished":
                raise RuntimeError(f"{name}: session ended {session['status']}: {session.get('error')}\n"
                                   f"{dep.dump_logs()[-4000:]}")
            found = dep.rounds(session_id)
            durations = [r["round_data"]["duration"] for r in found]
            folds = [c.get("time_aggregation") or 0.0 for r in found for c in r.get("combiners") or []]
            container = dep.get(f"/api/v1/models/{found[-1]['new_model_id']}")
        finally:
            dep.close()
    moved = 2 * size * rounds  # one download and one upload per round
    result = {
        "setup": name, "rounds": rounds,
        "seconds_per_round_median": round(statistics.median(durations), 3),
        "seconds_per_round": [round(d, 3) for d in durations],
        "session_wall_seconds": round(wall, 2),
        "combiner_cpu_seconds_per_round": round(cpu / rounds, 2),
        "combiner_cpu_seconds_per_gib_moved": round(cpu / (moved / GIB), 2),
        "fold_seconds_per_update": [round(f, 3) for f in folds],
        "model_size_bytes": container.get("size") if isinstance(container, dict) else None,
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=256, help="model size in MiB of float32 parameters")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "published_client_round.json")
    parser.add_argument("--profile", type=Path, help="folder for py-spy profiles of the combiner (raw stacks)")
    args = parser.parse_args()
    size = args.size_mb * MIB
    load_before = os.getloadavg()
    tcp = statistics.median(loopback_copy_seconds(2 * size) for _ in range(3))
    results = [run_setup("ours", size, args.rounds, None, args.profile),
               run_setup("published 1.1", size, args.rounds, "1.1", args.profile)]
    for r in results:
        r["ratio_round_to_tcp_copy"] = round(r["seconds_per_round_median"] / tcp, 1)
    report = {
        "benchmark": "published_client_round",
        "model_mib": args.size_mb,
        "machine": {"cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "baseline_tcp_copy_of_a_rounds_bytes_seconds": round(tcp, 3),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
