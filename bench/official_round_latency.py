"""Seconds per round with the published clients: bounded by their polling interval, not by us.

The seed's example (train and validate do almost nothing) runs R rounds with validation on 2
clients, for each setup: our own clients (long poll: the baseline, measured in the same run), the
published 1.1 client at its default poll interval (5 s) and at 1 s, each with the combiner holding
its polls for the announced interval (`hold_interval_polls`, the default) and without, and the
published 1.0.7 client (which announces no interval, so its polls are always answered at once).
Writes bench/results/official_round_latency.json; the published venvs come from tests/interop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.deployment import Deployment  # noqa: E402
from tests.interop.conftest import SEED_EXAMPLE, Official, project_copy  # noqa: E402
from tests.interop.official import PUBLISHED, ensure_venv  # noqa: E402


def run_setup(name: str, rounds: int, release_label: str | None, interval: int, hold: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dep = Deployment(root, env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "6",
                                    "SCALEOUT_HOLD_INTERVAL_POLLS": "true" if hold else "false"})
        try:
            dep.start_server()
            project = project_copy(SEED_EXAMPLE, root / "project")
            seed = dep.upload_seed(project)
            env = {"SCALEOUT_CLIENT_TASK_POLLING_INTERVAL": str(interval)}
            if release_label is None:
                for i in range(2):
                    dep.start_client(f"c{i}", project)
            else:
                release = next(r for r in PUBLISHED if r.label == release_label)
                official = Official(ensure_venv(release), dep, root / "home")
                for i in range(2):
                    official.start_client(f"c{i}", project, env=env)
            started = time.monotonic()
            session_id = dep.start_session(rounds=rounds, round_timeout=120, model_id=seed, clients_required=2,
                                           validate=True)
            session = dep.wait_session(session_id, timeout=rounds * 60)
            wall = time.monotonic() - started
            assert session["status"] == "Finished", session
            durations = [r["round_data"]["duration"] for r in dep.rounds(session_id)]
        finally:
            dep.close()
    result = {"setup": name, "rounds": rounds, "poll_interval_s": interval if release_label else None,
              "hold_interval_polls": hold, "seconds_per_round_median": round(statistics.median(durations), 3),
              "seconds_per_round": [round(d, 3) for d in durations], "session_wall_s": round(wall, 2)}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "official_round_latency.json")
    args = parser.parse_args()
    setups = [("ours (long poll)", None, 0, True),
              ("official 1.1, 5 s interval, held polls", "1.1", 5, True),
              ("official 1.1, 5 s interval, polls answered at once", "1.1", 5, False),
              ("official 1.1, 1 s interval, held polls", "1.1", 1, True),
              ("official 1.1, 1 s interval, polls answered at once", "1.1", 1, False),
              ("official 1.0.7, 5 s interval", "1.0.7", 5, True),
              ("official 1.0.7, 1 s interval", "1.0.7", 1, True)]
    results = [run_setup(name, args.rounds, label, interval, hold) for name, label, interval, hold in setups]
    baseline = results[0]["seconds_per_round_median"]
    for r in results:
        r["ratio_to_ours"] = round(r["seconds_per_round_median"] / baseline, 1)
    args.out.write_text(json.dumps({"benchmark": "official_round_latency", "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
