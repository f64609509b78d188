"""End-to-end: the real server and real client processes train the test project.

The test project's train callback adds a client-specific constant to every parameter and
reports a client-specific num_examples, so the expected global model is known exactly.
"""

from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from scaleoututil.helpers.helpers import get_helper
from tests.e2e.deployment import Deployment, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

helper = get_helper("numpyhelper")


def download_params(dep: Deployment, model_id: str) -> list[np.ndarray]:
    r = requests.get(f"{dep.api_url}/api/v1/models/{model_id}/download", params={"format": "raw"}, timeout=30)
    assert r.status_code == 200, r.text
    return helper.load(io.BytesIO(r.content))


def seed_params() -> list[np.ndarray]:
    return [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, dtype=np.float64)]


@pytest.fixture(scope="module")
def project(deployment: Deployment) -> Path:
    return deployment.project("weighted")


@pytest.fixture(scope="module")
def seed_model(deployment: Deployment, project: Path) -> str:
    return deployment.upload_seed(project)


def test_fedavg_global_model_is_num_examples_weighted_mean(deployment: Deployment, project: Path, seed_model: str,
                                                           clients_stopped: None) -> None:
    dep = deployment
    dep.start_client("alpha", project, env={"E2E_CONSTANT": "1.0", "E2E_NUM_EXAMPLES": "1"})
    dep.start_client("beta", project, env={"E2E_CONSTANT": "4.0", "E2E_NUM_EXAMPLES": "3"})

    session_id = dep.start_session(name="weighted", rounds=2, round_timeout=60, model_id=seed_model,
                                   clients_required=2, validate=True)
    session = dep.wait_session(session_id, timeout=120)
    assert session["status"] == "Finished", session

    rounds = dep.rounds(session_id)
    assert [r["round_number"] for r in rounds] == [1, 2]
    assert all(r["status"] == "Finished" for r in rounds), rounds
    assert all(r["round_data"].get("duration", 0) > 0 for r in rounds)

    # FedAvg weighted by num_examples: each round adds (1*1 + 4*3) / 4 = 3.25
    final_model = rounds[-1]["new_model_id"]
    got = download_params(dep, final_model)
    for g, s in zip(got, seed_params(), strict=True):
        np.testing.assert_allclose(g, s + 2 * 3.25, rtol=1e-6)
        assert g.dtype == s.dtype

    # the model trail holds rounds + 1 models, ending at the seed
    trail = dep.get(f"/api/v1/models/{final_model}/ancestors", params={"include_self": "true"})
    trail_ids = [m["model_id"] for m in (trail["result"] if isinstance(trail, dict) else trail)]
    assert len(trail_ids) == 3 and trail_ids[-1] == seed_model and trail_ids[0] == final_model

    # each update's metadata, as the train callback returned it
    updates = dep.get("/api/v1/updates/", params={"session_id": session_id})["result"]
    assert len(updates) == 4
    assert sorted(u["meta"]["constant"] for u in updates) == [1.0, 1.0, 4.0, 4.0]
    assert sorted(u["num_examples"] for u in updates) == [1, 1, 3, 3]

    # validations of each round's new model, with the metrics the callback returned
    validations = dep.get("/api/v1/validations/", params={"session_id": session_id})["result"]
    assert len(validations) == 4
    by_model = {r["new_model_id"]: r for r in rounds}
    for v in validations:
        assert v["model_id"] in by_model
        assert v["round_id"] == by_model[v["model_id"]]["round_id"]
        expected_acc = 0.51 if v["sender"]["name"] == "alpha" else 0.54
        assert v["data"]["validation_accuracy"] == pytest.approx(expected_acc)
    final_vals = [v for v in validations if v["model_id"] == final_model]
    expected_mean = float(np.mean(np.concatenate([(s + 6.5).ravel() for s in seed_params()])))
    assert all(v["data"]["mean_param"] == pytest.approx(expected_mean, rel=1e-6) for v in final_vals)

    # log_metric values: 3 steps per training task, 2 clients, 2 rounds
    metrics = dep.get("/api/v1/metrics/", params={"session_id": session_id, "key": "train_loss"})["result"]
    assert len(metrics) == 12
    assert sorted({m["step"] for m in metrics}) == [0, 1, 2]
    assert {round(m["value"], 4) for m in metrics} == {1.0, 0.5, 0.3333}


def test_session_stop_aborts_running_training(deployment: Deployment, project: Path, seed_model: str,
                                              tmp_path: Path, clients_stopped: None) -> None:
    dep = deployment
    markers = tmp_path / "markers"
    dep.start_client("slow", project, env={"E2E_TRAIN_STEPS": "100000", "E2E_STEP_SECONDS": "0.05",
                                           "E2E_MARKER_DIR": str(markers)})
    session_id = dep.start_session(rounds=3, round_timeout=120, model_id=seed_model, validate=False)
    wait_until(lambda: list(markers.glob("train-started-*")), 60, what="training to start")
    # log_metric values reach the server while the training still runs
    wait_until(lambda: dep.get("/api/v1/metrics/count", params={"session_id": session_id}) >= 3, 20,
               what="metrics during training")
    assert dep.get(f"/api/v1/sessions/{session_id}")["status"] == "Running"

    started = time.monotonic()
    result = dep.cli("session", "stop", *dep.api_args())
    assert result.returncode == 0
    session = dep.wait_session(session_id, timeout=30)
    assert session["status"] == "Stopped"
    assert time.monotonic() - started < 20
    aborted = wait_until(lambda: list(markers.glob("train-aborted-*")), 20, what="check_task_abort to raise")
    assert json.loads(aborted[0].read_text())["error"] == "StoppedException"
    rounds = dep.rounds(session_id)
    assert rounds[-1]["status"] == "Stopped"
    # the server keeps serving and can run the next session
    assert requests.get(dep.api_url + "/health", timeout=5).status_code == 200
    assert dep.get("/get_controller_status")["state"] == "idle"


def test_custom_command_reaches_callback_and_returns_result(deployment: Deployment, project: Path,
                                                             tmp_path: Path, clients_stopped: None) -> None:
    dep = deployment
    markers = tmp_path / "markers"
    dep.start_client("cmd", project, env={"E2E_CONSTANT": "7", "E2E_MARKER_DIR": str(markers)})
    client_id = dep.online_clients()["cmd"]["client_id"]
    r = dep.post("/api/v1/control/run_command", {"command_type": "echo", "parameters": {"x": 1},
                                                  "client_ids": [client_id], "synchronous": True, "timeout": 30})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 1 and results[0]["status"] == "COMPLETED"
    assert results[0]["response"] == {"echo": {"x": 1}, "constant": 7.0}
    assert json.loads(next(markers.glob("echo-*")).read_text()) == {"x": 1}

    # and through the CLI
    out = dep.cli("command", "run", "echo", "--params", '{"y": 2}', "--client-ids", client_id, *dep.api_args())
    assert "COMPLETED" in out.stdout and '"y": 2' in out.stdout.replace("'", '"')


def test_prediction_calls_predict_callbacks_and_stores_results(deployment: Deployment, project: Path,
                                                               seed_model: str, clients_stopped: None) -> None:
    dep = deployment
    dep.start_client("pred", project)
    r = dep.post("/api/v1/predictions/start", {"prediction_id": "pred-1", "model_id": seed_model,
                                                "synchronous": True, "timeout": 30})
    assert r.status_code == 200, r.text
    predictions = dep.get("/api/v1/predictions/", params={"prediction_id": "pred-1"})["result"]
    assert len(predictions) == 1
    assert predictions[0]["data"] == {"first": 0.0}
    assert predictions[0]["model_id"] == seed_model


def test_killed_client_does_not_hang_the_round(deployment: Deployment, project: Path, seed_model: str,
                                               tmp_path: Path, clients_stopped: None) -> None:
    dep = deployment
    markers = tmp_path / "markers"
    dep.start_client("steady", project, env={"E2E_CONSTANT": "2"})
    doomed = dep.start_client("doomed", project, env={"E2E_TRAIN_STEPS": "100000", "E2E_STEP_SECONDS": "0.05",
                                                      "E2E_MARKER_DIR": str(markers)})
    session_id = dep.start_session(rounds=1, round_timeout=10, model_id=seed_model, clients_required=2,
                                   validate=False)
    wait_until(lambda: list(markers.glob("train-started-*")), 60, what="doomed client to start training")
    doomed.stop(signal.SIGKILL)
    started = time.monotonic()
    session = dep.wait_session(session_id, timeout=60)
    assert session["status"] == "Finished", session
    assert time.monotonic() - started < 40
    (round_,) = dep.rounds(session_id)
    got = download_params(dep, round_["new_model_id"])
    np.testing.assert_allclose(got[1], np.ones(4) + 2)  # only the steady client's update


def test_callback_that_raises_is_reported_as_failed_task(deployment: Deployment, project: Path, seed_model: str,
                                                         clients_stopped: None) -> None:
    dep = deployment
    dep.start_client("good", project, env={"E2E_CONSTANT": "1"})
    dep.start_client("broken", project, env={"E2E_TRAIN_FAIL": "1"})
    session_id = dep.start_session(rounds=1, round_timeout=30, model_id=seed_model, clients_required=2,
                                   validate=False)
    session = dep.wait_session(session_id, timeout=60)
    assert session["status"] == "Finished"
    (round_,) = dep.rounds(session_id)
    tasks = [t for c in round_["combiners"] for t in c.get("tasks", [])]
    failed = [t for t in tasks if t["status"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["client_name"] == "broken"
    assert "deliberate failure in train" in json.dumps(failed[0]["response"])
    # the broken client keeps serving: it answers a custom command afterwards
    client_id = dep.online_clients()["broken"]["client_id"]
    r = dep.post("/api/v1/control/run_command", {"command_type": "echo", "parameters": {}, "client_ids": [client_id],
                                                  "synchronous": True, "timeout": 30})
    assert r.json()["results"][0]["status"] == "COMPLETED"


def test_a_large_model_trains_over_the_byte_path_with_fedavg_exact(deployment: Deployment, project: Path,
                                                                   clients_stopped: None, tmp_path: Path) -> None:
    """Models of 16 MiB and more move over the combiner's byte path (our clients; real processes)."""
    dep = deployment
    big = [np.random.default_rng(7).standard_normal(4_500_000).astype(np.float32), np.ones(3, dtype=np.float64)]
    seed_file = tmp_path / "big-seed.npz"
    helper.save(big, str(seed_file))
    dep.cli("model", "set-active", "-f", str(seed_file), *dep.api_args())
    seed_id = dep.get("/api/v1/models/", headers={"X-Limit": "1", "X-Sort-Key": "committed_at",
                                                  "X-Sort-Order": "desc"})["result"][0]["model_id"]
    server_log = dep.procs[0].output
    before = server_log().count("over the byte path")
    dep.start_client("big-a", project, env={"E2E_CONSTANT": "1.0", "E2E_NUM_EXAMPLES": "1"})
    dep.start_client("big-b", project, env={"E2E_CONSTANT": "4.0", "E2E_NUM_EXAMPLES": "3"})
    session_id = dep.start_session(name="big", rounds=1, round_timeout=120, model_id=seed_id, clients_required=2,
                                   validate=False)
    session = dep.wait_session(session_id, timeout=180)
    assert session["status"] == "Finished", session
    got = download_params(dep, dep.rounds(session_id)[-1]["new_model_id"])
    for g, s in zip(got, big, strict=True):
        np.testing.assert_allclose(g, s + 3.25, rtol=1e-6)  # (1*1 + 4*3) / 4
    assert server_log().count("over the byte path") - before == 2  # both updates; downloads log at debug
