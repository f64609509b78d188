"""Chaos: a seeded schedule SIGKILLs the controller, the combiner and a client during a 5-round session.

Each kill happens while a chosen round is Running, after a seeded delay, and the process is started
again. The session must finish with rounds 1..5 each Finished exactly once, and its final model must
equal FedAvg recomputed here, round by round from the seed, from the stored updates (each update's
num_examples and the constant its client adds, which the weighted project puts in the update's meta).
"""

from __future__ import annotations

import io
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from scaleoututil.helpers.helpers import get_helper
from tests.e2e.deployment import Deployment, Proc, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SEED = int(os.environ.get("E2E_CHAOS_SEED", "20240611"))  # another seed: another schedule
ROUNDS = 5
CLIENTS = {"c1": (1.0, 1), "c2": (2.0, 2), "c3": (4.0, 3)}  # name -> (constant, num_examples)
CLIENT_ENV = {"E2E_STEP_SECONDS": "0.4", "E2E_TRAIN_STEPS": "3"}  # ~1.2 s of training per round
helper = get_helper("numpyhelper")


def schedule(rng: random.Random) -> list[tuple[int, str, float]]:
    """(round, victim, delay after the round started) for one controller, one combiner and one client kill,
    each in a different round (a round lost twice is not something the session promises to survive)."""
    rounds = rng.sample(range(2, ROUNDS + 1), 3)
    victims = ["controller", "combiner", rng.choice(sorted(CLIENTS))]
    return sorted((n, v, rng.uniform(0.2, 1.0)) for n, v in zip(rounds, victims, strict=True))


def try_get(dep: Deployment, path: str, **kw: Any) -> Any:
    try:
        return dep.get(path, **kw)
    except (requests.RequestException, ValueError):
        return None  # the controller may be down right now


def running_round(dep: Deployment, session_id: str) -> int | None:
    found = try_get(dep, "/api/v1/rounds/", params={"session_id": session_id},
                    headers={"X-Sort-Key": "round_number", "X-Sort-Order": "desc", "X-Limit": "1"})
    if not found or not found["result"]:
        return None
    latest = found["result"][0]
    return int(latest["round_number"]) if latest["status"] == "Running" else None


def download_params(dep: Deployment, model_id: str) -> list[np.ndarray]:
    r = requests.get(f"{dep.api_url}/api/v1/models/{model_id}/download", params={"format": "raw"},
                     headers=dep.auth_headers(), timeout=30)
    assert r.status_code == 200, r.text
    return helper.load(io.BytesIO(r.content))


def expected_model(seed: list[np.ndarray], rounds: list[dict[str, Any]],
                   updates: dict[str, dict[str, Any]]) -> list[np.ndarray]:
    """FedAvg from the seed: each round moves the model by the num_examples-weighted mean of its clients'
    constants (a client's update is the global model plus its constant)."""
    params = [p.astype(np.float64) for p in seed]
    for round_ in rounds:
        folded = [updates[u] for c in round_["combiners"] for u in c["update_ids"]]
        assert folded, f"round {round_['round_number']} folded no stored update"
        total = sum(u["num_examples"] for u in folded)
        step = sum(u["num_examples"] * u["meta"]["constant"] for u in folded) / total
        params = [p + step for p in params]
    return params


def test_session_survives_seeded_sigkills_of_controller_combiner_and_client(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    plan = schedule(rng)
    dep = Deployment(tmp_path, env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    started = time.monotonic()
    with dep.guarded():
        procs: dict[str, Proc] = {"controller": dep.start_controller(), "combiner": dep.start_combiner("edge-1")}
        project = dep.project("weighted")
        seed_id = dep.upload_seed(project)

        def start_client(name: str, wait: bool = True) -> Proc:
            constant, examples = CLIENTS[name]
            return dep.start_client(name, project, wait=wait, env={
                **CLIENT_ENV, "E2E_CONSTANT": str(constant), "E2E_NUM_EXAMPLES": str(examples)})

        for name in CLIENTS:
            procs[name] = start_client(name)
        session_id = dep.start_session(rounds=ROUNDS, round_timeout=15, model_id=seed_id, validate=False,
                                       clients_required=2)

        for round_number, victim, delay in plan:
            wait_until(lambda n=round_number: running_round(dep, session_id) == n, 90, 0.05,
                       f"round {round_number} to run")
            time.sleep(delay)
            procs[victim].stop(signal.SIGKILL)
            print(f"[chaos] killed {victim} {delay:.2f}s into round {round_number}")
            if victim == "controller":
                procs[victim] = dep.start_controller()
            elif victim == "combiner":
                procs[victim] = dep.start_combiner("edge-1")
            else:
                time.sleep(0.5)
                procs[victim] = start_client(victim, wait=False)

        session = wait_until(lambda: (s := try_get(dep, f"/api/v1/sessions/{session_id}"))
                             and s["status"] in ("Finished", "Stopped", "Failed") and s, 120, 0.2, "session end")
        assert session["status"] == "Finished", session

        rounds = dep.rounds(session_id)
        finished = [x for x in rounds if x["status"] == "Finished"]
        assert sorted(x["round_number"] for x in finished) == list(range(1, ROUNDS + 1))

        stored = dep.get("/api/v1/updates/", params={"session_id": session_id}, headers={"X-Limit": "1000"})
        updates = {u["update_id"]: u for u in stored["result"]}
        expected = expected_model(download_params(dep, seed_id), finished, updates)
        final = download_params(dep, session["session_config"]["model_id"])
        for got, want in zip(final, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6)
        # the killed client came back on its own (the others reconnected to the restarted combiner)
        dep.wait_online(sorted(CLIENTS), timeout=30)
        print(f"[chaos] schedule {plan} done in {time.monotonic() - started:.1f}s")
