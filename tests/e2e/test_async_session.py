"""End-to-end: a buffered asynchronous session (`scaleout session start --mode async --buffer-size K`) with
a fast and a slow real client. The fast one contributes more updates; every global model version is
the staleness-weighted FedBuff step recomputed here from the stored updates and their base models."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import requests

from scaleoututil.helpers.helpers import get_helper
from scaleoututil.model import ScaleoutModel
from tests.e2e.deployment import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

helper = get_helper("numpyhelper")
EXPONENT = 0.5


def download_params(dep: Deployment, model_id: str) -> list[np.ndarray]:
    r = requests.get(f"{dep.api_url}/api/v1/models/{model_id}/download", params={"format": "raw"}, timeout=30)
    assert r.status_code == 200, r.text
    return helper.load(io.BytesIO(r.content))


def stored_update(dep: Deployment, model_id: str) -> list[np.ndarray]:
    """A client update the session kept (delete_models_storage false), read from the local repository."""
    path = dep.data_dir / "repository" / "models" / model_id
    return ScaleoutModel.from_bytes(Path(path).read_bytes(), model_id).get_model_params(helper)


def test_async_session_aggregates_every_k_updates_with_staleness_weights(deployment: Deployment,
                                                                          clients_stopped: None) -> None:
    dep = deployment
    project = dep.project("weighted")
    seed = dep.upload_seed(project)
    dep.start_client("fast", project, env={"E2E_CONSTANT": "1", "E2E_NUM_EXAMPLES": "1", "E2E_TRAIN_STEPS": "1",
                                           "E2E_STEP_SECONDS": "0.3"})
    dep.start_client("slow", project, env={"E2E_CONSTANT": "4", "E2E_NUM_EXAMPLES": "3", "E2E_TRAIN_STEPS": "2",
                                           "E2E_STEP_SECONDS": "0.5"})

    result = dep.cli("session", "start", "--mode", "async", "--buffer-size", "2", "-r", "4", "-rt", "30",
                     "-mc", "2", "-v", "false", "-d", "false", "--staleness-exponent", str(EXPONENT), "-m", seed,
                     "--wait", "--timeout", "60", *dep.api_args())
    assert "4 asynchronous aggregation(s)" in result.stdout

    session = dep.get("/api/v1/sessions/", params={"status": "Finished"})["result"][0]
    rounds = dep.rounds(session["session_id"])
    assert len(rounds) == 4 and all(r["status"] == "Finished" for r in rounds), rounds
    contributions = [c for r in rounds for c in r["round_data"]["contributions"]]
    count = {name: sum(1 for c in contributions if c["client_name"] == name) for name in ("fast", "slow")}
    assert count["fast"] > count["slow"] >= 1, count
    assert any(c["staleness"] > 0 for c in contributions)  # the slow client trains from older versions

    previous, parent = download_params(dep, seed), seed
    for r in rounds:
        assert r["model_id"] == parent and len(r["round_data"]["contributions"]) == 2
        expected = [p.astype(np.float64) for p in previous]
        total = sum(c["num_examples"] for c in r["round_data"]["contributions"])
        for c in r["round_data"]["contributions"]:
            update, base = stored_update(dep, c["stored_update"]), download_params(dep, c["base_model_id"])
            weight = c["num_examples"] / (1 + c["staleness"]) ** EXPONENT
            assert c["weight"] == pytest.approx(weight)
            for i, e in enumerate(expected):
                e += weight * (update[i].astype(np.float64) - base[i]) / total
        got = download_params(dep, r["new_model_id"])
        for g, e, p in zip(got, expected, previous, strict=True):
            np.testing.assert_allclose(g, e.astype(p.dtype), rtol=1e-6)
        previous, parent = got, r["new_model_id"]
