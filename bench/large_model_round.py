"""One training round with a large model: seconds per round and peak memory of every process.

A real local deployment (server + 2 clients of ours, the e2e test project whose train callback adds a
constant) trains one round on a float32 model of --mb megabytes. A round moves the model 4 times over
loopback (2 downloads, 2 uploads) and aggregates 2 updates. Baseline measured in the same run: copying
the same 4 x size bytes through a plain loopback TCP socket. Writes bench/results/large_model_round.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scaleoututil.helpers.helpers import get_helper  # noqa: E402
from tests.e2e.deployment import Deployment  # noqa: E402


def loopback_copy_seconds(total_bytes: int, chunk: int = 1024 * 1024) -> float:
    """Seconds to push `total_bytes` through a loopback TCP connection (sender and receiver threads)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received = 0

    def receive() -> None:
        nonlocal received
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(chunk):
                received += len(data)

    thread = threading.Thread(target=receive)
    thread.start()
    payload = b"\0" * chunk
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sender:
        sent = 0
        while sent < total_bytes:
            sender.sendall(payload)
            sent += chunk
    thread.join()
    server.close()
    return time.perf_counter() - started


class PeakRss:
    """Samples the resident memory of a process tree every 50 ms; keeps the peak per process name."""

    def __init__(self, procs: dict[str, int]) -> None:
        self.procs = procs
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.procs.items():
                try:
                    root = psutil.Process(pid)
                    for i, proc in enumerate([root, *root.children(recursive=True)]):
                        key = name if i == 0 else f"{name}/child{i}"
                        self.peak[key] = max(self.peak.get(key, 0), proc.memory_info().rss)
                except psutil.Error:
                    pass
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=100, help="model size in MB (float32)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "large_model_round.json")
    args = parser.parse_args()
    size = args.mb * 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        dep = Deployment(Path(tmp))
        try:
            dep.start_server()
            project = dep.project("weighted")
            rng = np.random.default_rng(0)
            get_helper("numpyhelper").save([rng.standard_normal(size // 4, dtype=np.float32)],
                                           str(project / "seed.npz"))
            started = time.perf_counter()
            dep.cli("model", "set-active", "-f", "seed.npz", *dep.api_args(), cwd=project)
            upload = time.perf_counter() - started
            dep.start_client("a", project, env={"E2E_CONSTANT": "1"})
            dep.start_client("b", project, env={"E2E_CONSTANT": "3"})
            pids = {p.name: p.popen.pid for p in dep.procs}
            with PeakRss(pids) as rss:
                started = time.perf_counter()
                session_id = dep.start_session(rounds=1, round_timeout=600, validate=False, clients_required=2)
                session = dep.wait_session(session_id, 900)
                round_seconds = time.perf_counter() - started
            assert session["status"] == "Finished", session
            (round_,) = dep.rounds(session_id)
        finally:
            dep.close()
    baseline = loopback_copy_seconds(4 * size)
    report = {
        "benchmark": "large_model_round",
        "model_mb": args.mb,
        "seed_upload_seconds": round(upload, 2),
        "round_seconds": round(round_seconds, 2),
        "round_data": {k: round(v, 3) if isinstance(v, float) else v for k, v in round_["round_data"].items()},
        "baseline_loopback_copy_4x_seconds": round(baseline, 3),
        "ratio_round_to_loopback_copy": round(round_seconds / baseline, 1),
        "peak_rss_mb": {k: round(v / 1e6) for k, v in sorted(rss.peak.items())},
        "peak_rss_over_model_size": round(max(rss.peak.values()) / size, 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
