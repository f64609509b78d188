"""What the several-combiner tests (one machine, and `tests/multihost`) share: the clients' training
behaviour, the flat FedAvg they must add up to, and the checks on a finished session.

The test project's train callback adds a per-client constant to every parameter and reports a
per-client num_examples, so the global model a round must produce is known exactly.
"""

from __future__ import annotations

import io
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

from scaleoututil.helpers.helpers import get_helper
from tests.e2e.deployment import Deployment

helper = get_helper("numpyhelper")
TRAIN_STEPS = "4"
STEP_SECONDS = "0.5"  # 2 s of training: time to kill a combiner while its clients train


@dataclass(frozen=True)
class ClientSpec:
    name: str
    constant: float
    num_examples: int

    def env(self, marker_dir: Path, failover_after: float) -> dict[str, str]:
        return {"E2E_CONSTANT": str(self.constant), "E2E_NUM_EXAMPLES": str(self.num_examples),
                "E2E_TRAIN_STEPS": TRAIN_STEPS, "E2E_STEP_SECONDS": STEP_SECONDS,
                "E2E_MARKER_DIR": str(marker_dir), "SCALEOUT_FAILOVER_AFTER": str(failover_after)}


# Chosen so that averaging the two combiners' models with equal weights, or by client count, gives
# another number than the flat FedAvg, whichever two clients share a combiner.
CLIENTS = (ClientSpec("site-a", 1.0, 1), ClientSpec("site-b", 2.0, 3), ClientSpec("site-c", 10.0, 2),
           ClientSpec("site-d", 20.0, 6))


def fedavg_step(specs: list[ClientSpec] | tuple[ClientSpec, ...]) -> float:
    """What one round adds to every parameter: the num_examples-weighted mean of the constants."""
    return sum(s.constant * s.num_examples for s in specs) / sum(s.num_examples for s in specs)


def seed_params() -> list[np.ndarray]:
    """The weighted test project's seed model (its build.py)."""
    return [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, dtype=np.float64)]


def download_params(dep: Deployment, model_id: str) -> list[np.ndarray]:
    r = requests.get(f"{dep.api_url}/api/v1/models/{model_id}/download", params={"format": "raw"}, timeout=30,
                     headers=dep.auth_headers())
    assert r.status_code == 200, f"model {model_id} cannot be downloaded ({r.status_code}): {r.text[:300]}"
    return helper.load(io.BytesIO(r.content))


def assert_params(got: list[np.ndarray], base: list[np.ndarray], added: float) -> None:
    assert len(got) == len(base)
    for g, b in zip(got, base, strict=True):
        np.testing.assert_allclose(g, b + added, rtol=1e-5)
        assert g.dtype == b.dtype


def rounds_of(dep: Deployment, session_id: str) -> list[dict[str, Any]]:
    return dep.get("/api/v1/rounds/", params={"session_id": session_id},
                   headers={"X-Sort-Key": "round_number", "X-Sort-Order": "asc"})["result"]


def clients_by_combiner(dep: Deployment) -> dict[str, list[str]]:
    """Online client names per combiner name, as the controller records them."""
    combiners = {c["combiner_id"]: c["name"] for c in dep.get("/api/v1/combiners/")["result"]}
    out: dict[str, list[str]] = {}
    for client in dep.get("/api/v1/clients/", params={"status": "online"})["result"]:
        out.setdefault(combiners.get(client["combiner_id"], "?"), []).append(client["name"])
    return {k: sorted(v) for k, v in out.items()}


def combiner_status(dep: Deployment, name: str) -> str:
    found = dep.get("/api/v1/combiners/", params={"name": name})["result"]
    return found[0]["status"] if found else "missing"


def wait_for_training(marker_dir: Path, pids: list[int], since: float, timeout: float = 60) -> None:
    """Until every process in `pids` has started a train callback after `since` (wall-clock seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        started = [pid for pid in pids if (marker_dir / f"train-started-{pid}").exists()
                   and (marker_dir / f"train-started-{pid}").stat().st_mtime >= since]
        if len(started) == len(pids):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"clients {pids} did not start training within {timeout}s (started: {started})")
        time.sleep(0.05)


def check_no_model_lost(dep: Deployment, rounds: list[dict[str, Any]], seed_model: str) -> None:
    """Every committed round's model is in the store and downloadable, and the last one's trail goes
    through all of them, newest first, to `seed_model` (the model the rounds started from)."""
    assert all(r["status"] == "Finished" and r["new_model_id"] for r in rounds), rounds
    for r in rounds:
        download_params(dep, r["new_model_id"])
    trail = dep.get(f"/api/v1/models/{rounds[-1]['new_model_id']}/ancestors", params={"include_self": "true"})
    ids = [m["model_id"] for m in (trail["result"] if isinstance(trail, dict) else trail)]
    expected = [r["new_model_id"] for r in reversed(rounds)] + [seed_model]
    assert ids[:len(expected)] == expected, ids


def stop_all(procs: list[Any], timeout: float = 15) -> None:
    """SIGTERM every process (a tests.e2e.deployment.Proc) at once, then wait; kill those still running."""
    running = [p for p in procs if p.popen.poll() is None]
    for proc in running:
        proc.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(timeout=5)


def check_fedavg_rounds(dep: Deployment, session_id: str, seed_model: str, rounds: int) -> tuple[int, list[str]]:
    """Recompute every Finished round of a weighted-project session from its stored updates and compare
    it with the model the round committed. Returns (models checked, anomalies): an anomaly is a round
    number not Finished exactly once, an update folded into two rounds, a round that folded nothing, or
    a committed model that is not the num_examples-weighted mean of the constants its round lists."""
    anomalies: list[str] = []
    finished = [x for x in rounds_of(dep, session_id) if x["status"] == "Finished"]
    numbers = sorted(x["round_number"] for x in finished)
    if numbers != list(range(1, rounds + 1)):
        anomalies.append(f"Finished round numbers {numbers}, expected each of 1..{rounds} once")
    stored = dep.get("/api/v1/updates/", params={"session_id": session_id}, headers={"X-Limit": "1000"})
    updates = {u["update_id"]: u for u in stored["result"]}
    seen: set[str] = set()
    params = [p.astype(np.float64) for p in download_params(dep, seed_model)]
    checked = 0
    for round_ in sorted(finished, key=lambda x: x["round_number"]):
        ids = [u for c in round_["combiners"] for u in c["update_ids"]]
        if seen & set(ids):
            anomalies.append(f"round {round_['round_number']} folds updates another round folded: {seen & set(ids)}")
        seen |= set(ids)
        missing = [u for u in ids if u not in updates]
        if not ids or missing:
            anomalies.append(f"round {round_['round_number']} lists no stored update (missing {missing})")
            break
        folded = [updates[u] for u in ids]
        total = sum(u["num_examples"] for u in folded)
        params = [p + sum(u["num_examples"] * u["meta"]["constant"] for u in folded) / total for p in params]
        got = download_params(dep, round_["new_model_id"])
        checked += 1
        if not all(np.allclose(g, w, rtol=1e-6) for g, w in zip(got, params, strict=True)):
            anomalies.append(f"round {round_['round_number']} model {round_['new_model_id']} is not the FedAvg "
                             f"of its {len(ids)} updates")
    return checked, anomalies
