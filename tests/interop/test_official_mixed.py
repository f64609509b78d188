"""FedAvg numbers, custom commands and session stop with the published clients, alone and mixed
with ours, on the weighted test project (each client adds its own constant and reports its own
num_examples, so the expected models are known exactly)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import requests

from scaleoututil.helpers.helpers import get_helper
from tests.e2e.deployment import Deployment, wait_until
from tests.interop.conftest import WEIGHTED, Official, project_copy

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]

helper = get_helper("numpyhelper")
SEED = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, dtype=np.float64)]  # the project's build


@pytest.fixture(scope="module")
def weighted(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_copy(WEIGHTED, tmp_path_factory.mktemp("weighted") / "project")


@pytest.fixture(scope="module")
def seed_model(deployment: Deployment, weighted: Path) -> str:
    """The project's seed model, and the project as the active package (for --remote-package)."""
    deployment.cli("package", "create", "--path", "client", cwd=weighted)
    deployment.cli("package", "set-active", "-f", "package.tgz", "-n", "weighted", *deployment.api_args(),
                   cwd=weighted)
    return deployment.upload_seed(weighted)


def session_results(dep: Deployment, session_id: str) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """The final model's params and each validation's (mean_param, validation_accuracy), sorted."""
    session = dep.wait_session(session_id, timeout=120)
    assert session["status"] == "Finished", (session, dep.dump_logs())
    rounds = dep.rounds(session_id)
    assert [r["status"] for r in rounds] == ["Finished", "Finished"]
    r = requests.get(f"{dep.api_url}/api/v1/models/{rounds[-1]['new_model_id']}/download",
                     params={"format": "raw"}, timeout=30)
    validations = dep.get("/api/v1/validations/", params={"session_id": session_id})["result"]
    return helper.load(io.BytesIO(r.content)), sorted(
        (round(v["data"]["mean_param"], 5), v["data"]["validation_accuracy"]) for v in validations)


def test_official_only_mixed_and_our_clients_store_the_same_models_and_validations(
        official: Official, weighted: Path, seed_model: str, tmp_path: Path) -> None:
    dep, label = official.dep, official.release.label
    alpha = {"E2E_CONSTANT": "1.0", "E2E_NUM_EXAMPLES": "1"}
    beta = {"E2E_CONSTANT": "4.0", "E2E_NUM_EXAMPLES": "3"}
    config = {"rounds": 2, "round_timeout": 60, "model_id": seed_model, "clients_required": 2, "validate": True}

    def run(start_alpha, start_beta) -> tuple[list[np.ndarray], list[tuple[float, float]]]:  # type: ignore[no-untyped-def]
        a, b = start_alpha(), start_beta()
        results = session_results(dep, dep.start_session(**config))
        a.stop()
        b.stop()
        wait_until(lambda: not dep.online_clients(), 20, 0.2, "clients offline")
        return results

    ours = run(lambda: dep.start_client("ours-a", weighted, env=alpha),
               lambda: dep.start_client("ours-b", weighted, env=beta))
    theirs = run(lambda: official.start_client(f"off-a-{label}", weighted, env=alpha),
                 lambda: official.start_client(f"off-b-{label}", tmp_path / "b", "--remote-package", env=beta)
                 if label == "1.0.7" else official.start_client(f"off-b-{label}", weighted, env=beta))
    mixed = run(lambda: official.start_client(f"off-m-{label}", weighted, env=alpha),
                lambda: dep.start_client("ours-m", weighted, env=beta))

    # FedAvg by num_examples adds (1*1 + 4*3) / 4 = 3.25 per round
    for final, _ in (ours, theirs, mixed):
        for got, seed in zip(final, SEED, strict=True):
            np.testing.assert_allclose(got, seed + 2 * 3.25, rtol=1e-6)
            assert got.dtype == seed.dtype
    assert ours[1] == theirs[1] == mixed[1]
    assert len(ours[1]) == 4


def test_custom_command_reaches_an_official_clients_callback(official: Official, weighted: Path,
                                                              tmp_path: Path) -> None:
    dep, label = official.dep, official.release.label
    markers = tmp_path / "markers"
    official.start_client(f"cmd-{label}", weighted, env={"E2E_CONSTANT": "7", "E2E_MARKER_DIR": str(markers)})
    client_id = dep.online_clients()[f"cmd-{label}"]["client_id"]
    def run_command():  # type: ignore[no-untyped-def]  # registered first, polling its combiner a moment later
        r = dep.post("/api/v1/control/run_command", {"command_type": "echo", "parameters": {"x": 1},
                                                      "client_ids": [client_id], "synchronous": True, "timeout": 30})
        return r if r.status_code != 400 or "not connected" not in r.text else None

    r = wait_until(run_command, 15, 0.5, "the client's first poll")
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [(res["status"], res["response"]) for res in results] == [("COMPLETED", {"echo": {"x": 1},
                                                                                    "constant": 7.0})]
    assert json.loads(next(markers.glob("echo-*")).read_text()) == {"x": 1}


def test_their_session_stop_interrupts_an_official_clients_training(official: Official, weighted: Path,
                                                                    seed_model: str, tmp_path: Path) -> None:
    dep, label = official.dep, official.release.label
    markers = tmp_path / "markers"
    official.start_client(f"slow-{label}", weighted, env={"E2E_TRAIN_STEPS": "100000", "E2E_STEP_SECONDS": "0.05",
                                                          "E2E_MARKER_DIR": str(markers)})
    session_id = dep.start_session(rounds=3, round_timeout=120, model_id=seed_model, validate=False)
    wait_until(lambda: list(markers.glob("train-started-*")), 60, what="training to start")
    # log_metric values reach the server while the training runs
    wait_until(lambda: dep.get("/api/v1/metrics/count", params={"session_id": session_id}) >= 3, 20,
               what="metrics during training")
    official.cli("session", "stop")
    assert dep.wait_session(session_id, timeout=30)["status"] == "Stopped"
    aborted = wait_until(lambda: list(markers.glob("train-aborted-*")), 20, what="check_task_abort to raise")
    assert json.loads(aborted[0].read_text())["error"] == "StoppedException"
    assert dep.rounds(session_id)[-1]["status"] == "Stopped"
