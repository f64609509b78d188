"""Task latency: from a task being queued to the client's callback starting.

Starts a real local deployment (server + one client of ours), then sends N custom commands one
after another through the REST API. Each command's callback returns `time.time()` at its start;
latency = callback start - the moment the API call was sent, so it includes the REST call and the
controller -> combiner hop on top of the queue -> poll -> callback path (an upper bound).
Baseline measured in the same run: a trivial REST call (`GET /api/v1/clients/count`).
Writes JSON to bench/results/task_latency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.deployment import Deployment  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "task_latency.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dep = Deployment(Path(tmp))
        try:
            dep.start_server()
            project = Path(tmp) / "latency"
            import shutil

            shutil.copytree(ROOT / "bench" / "projects" / "latency", project)
            dep.start_client("bench", project)
            client_id = dep.online_clients()["bench"]["client_id"]
            session = requests.Session()
            latencies: list[float] = []
            baseline: list[float] = []
            for i in range(args.samples + 5):
                t0 = time.time()
                r = session.post(f"{dep.api_url}/api/v1/control/run_command", timeout=60, json={
                    "command_type": "stamp", "client_ids": [client_id], "synchronous": True, "timeout": 30})
                r.raise_for_status()
                result = r.json()["results"][0]
                t1 = time.perf_counter()
                session.get(f"{dep.api_url}/api/v1/clients/count", timeout=10).raise_for_status()
                rest = time.perf_counter() - t1
                if i >= 5:  # warm-up
                    latencies.append(result["response"]["t_callback"] - t0)
                    baseline.append(rest)
                time.sleep(0.05)
        finally:
            dep.close()
    report = {
        "benchmark": "task_latency",
        "samples": len(latencies),
        "median_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "baseline_rest_median_ms": round(statistics.median(baseline) * 1000, 2),
        "ratio_median_to_rest_call": round(statistics.median(latencies) / statistics.median(baseline), 2),
        "official_client_fixed_poll_interval_ms": 5000,
        "note": "latency = callback start - REST call sent (includes REST and controller->combiner hops)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
