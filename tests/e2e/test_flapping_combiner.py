"""A combiner SIGKILLed twice in one round, and restarted each time, costs that round two attempts, not the
session: a controller, one combiner and three clients, each its own process.

Round 2's combiner is killed while its clients train, restarted, killed again once they train on the
restarted one, and restarted again. The session must finish all its rounds; round 2 records three
attempts (lost combiner, lost combiner, model) and every committed model is exactly the FedAvg of the
updates its round lists.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.cluster import CLIENTS, assert_params, download_params, seed_params, stop_all
from tests.e2e.deployment import Deployment, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SPECS = CLIENTS[:3]
ROUNDS = 3


def training_since(markers: Path, pids: list[int], since: float) -> int:
    """How many of the clients `pids` started a train callback after `since` (wall-clock seconds)."""
    return sum(1 for pid in pids if (markers / f"train-started-{pid}").exists()
               and (markers / f"train-started-{pid}").stat().st_mtime >= since)


def test_a_combiner_killed_twice_in_one_round_costs_the_round_two_attempts_not_the_session(tmp_path: Path) -> None:
    dep = Deployment(tmp_path, env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    markers = tmp_path / "markers"
    with dep.guarded():
        dep.start_controller()
        combiner = dep.start_combiner("edge-1")
        project = dep.project("weighted")
        seed = dep.upload_seed(project)
        clients = {s.name: dep.start_client(s.name, project, env=s.env(markers, 0), wait=False) for s in SPECS}
        dep.wait_online([s.name for s in SPECS])
        pids = [p.popen.pid for p in clients.values()]
        session_id = dep.start_session(rounds=ROUNDS, round_timeout=20, model_id=seed, validate=False,
                                       clients_required=2, requested_clients=3)

        second = wait_until(lambda: next((x for x in dep.rounds(session_id)
                                          if x["round_number"] == 2 and x["status"] == "Running"), None),
                            90, 0.05, "round 2 to run")
        since = datetime.fromisoformat(second["started_at"]).replace(tzinfo=UTC).timestamp()
        for kill in (1, 2):
            wait_until(lambda s=since: training_since(markers, pids, s) >= 2, 60, 0.05,
                       f"clients training before kill {kill}")
            combiner.stop(signal.SIGKILL)
            print(f"[flapping] combiner killed ({kill}) {time.time() - since:.1f}s after it was given the round")
            since = time.time()
            combiner = dep.start_combiner("edge-1")

        session = dep.wait_session(session_id, timeout=120)
        assert session["status"] == "Finished", session
        rounds = dep.rounds(session_id)
        assert [(x["round_number"], x["status"]) for x in rounds] == [(n, "Finished") for n in range(1, ROUNDS + 1)]
        log = rounds[1]["round_data"]["attempt_log"]
        assert [a["cause"] for a in log] == ["lost combiner", "lost combiner", "model"], log
        assert all(a["lost_combiners"] == ["edge-1"] and "UNAVAILABLE" in a["detail"] for a in log[:2]), log
        assert rounds[1]["round_data"]["lost_combiners"] == ["edge-1", "edge-1"]
        assert [len(x["round_data"]["attempt_log"]) for x in (rounds[0], rounds[2])] == [1, 1]

        # every committed model is exactly the weighted mean of the updates its round lists
        updates = {u["update_id"]: u for u in dep.get("/api/v1/updates/", params={"session_id": session_id},
                                                       headers={"X-Limit": "1000"})["result"]}
        added = 0.0
        for round_ in rounds:
            folded = [updates[u] for c in round_["combiners"] for u in c["update_ids"]]
            assert len(folded) >= 2, round_
            added += (sum(u["num_examples"] * u["meta"]["constant"] for u in folded)
                      / sum(u["num_examples"] for u in folded))
            assert_params(download_params(dep, round_["new_model_id"]), seed_params(), added)
        stop_all(list(clients.values()))
