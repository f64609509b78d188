"""Skipping a running session's barrier (`POST /api/v1/commands/{session_id}/skip`, the published
APIClient's `step_command`): the current round stops waiting for its slow client, aggregates the update in
hand, and the session goes on to its next round; a session that is not running is refused with 409."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.cluster import assert_params, download_params, seed_params
from tests.e2e.deployment import Deployment, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_skip_ends_the_rounds_wait_with_the_updates_in_hand_and_the_session_goes_on(
        deployment: Deployment, clients_stopped: None) -> None:
    dep = deployment
    project: Path = dep.project("weighted")
    seed = dep.upload_seed(project)
    quick = dep.start_client("skip-quick", project, env={"E2E_CONSTANT": "2.0", "E2E_NUM_EXAMPLES": "1"})
    dep.start_client("skip-slow", project, env={"E2E_CONSTANT": "5.0", "E2E_TRAIN_STEPS": "200",
                                                "E2E_STEP_SECONDS": "0.5"})  # 100 s a round unless stopped
    session_id = dep.start_session(name="skip-me", rounds=2, round_timeout=150, model_id=seed, validate=False,
                                   clients_required=2)
    wait_until(lambda: quick.output().count("Scaleout_ModelUpdate completed") >= 1, 60, 0.2,
               "the quick client's first update")
    time.sleep(1.0)  # its update reaches the combiner right after the task's done report
    asked = time.monotonic()
    skipped = dep.post(f"/api/v1/commands/{session_id}/skip", {"correlation_id": session_id})
    assert skipped.status_code == 200, skipped.text
    assert "goes on" in skipped.json()["message"]

    def first_round_ended() -> dict | None:
        rounds = dep.rounds(session_id)
        return rounds[0] if rounds and rounds[0]["status"] != "Running" else None

    first = wait_until(first_round_ended, 30, 0.2, "round 1 to end")
    assert time.monotonic() - asked < 20  # not the slow client's 100 s
    assert first["status"] == "Finished", first
    assert_params(download_params(dep, first["new_model_id"]), seed_params(), 2.0)  # the quick update alone

    # the session went on: round 2 runs; skip it too and the session finishes with both rounds
    wait_until(lambda: len(dep.rounds(session_id)) == 2 and quick.output().count(
        "Scaleout_ModelUpdate completed") >= 2, 60, 0.2, "round 2 and the quick client's second update")
    time.sleep(1.0)
    assert dep.post(f"/api/v1/commands/{session_id}/skip").status_code == 200
    session = dep.wait_session(session_id, timeout=60)
    assert session["status"] == "Finished", session
    second = dep.rounds(session_id)[1]
    assert_params(download_params(dep, second["new_model_id"]), seed_params(), 4.0)

    again = dep.post(f"/api/v1/commands/{session_id}/skip")
    assert again.status_code == 409 and "not running" in again.json()["message"]
