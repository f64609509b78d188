"""End-to-end: server functions given to `scaleout session start --server-functions FILE`, run by the real
server against real client processes. The test project's clients write the settings of each training
task to a marker file (E2E_MARKER_DIR), which is how the selection and the settings are observed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import requests

from scaleoututil.helpers.helpers import get_helper
from tests.e2e.deployment import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

helper = get_helper("numpyhelper")

SOURCE = """
from scaleoututil.serverfunctions.allowed_import import Dict, List, ServerFunctionsBase, Tuple, np


class ServerFunctions(ServerFunctionsBase):
    # alternates between the two clients and counts rounds: state kept by the session's process
    def __init__(self):
        self.round = 0

    def client_selection(self, client_ids, round_type):
        return [ORDER[self.round % 2]]

    def client_settings(self, global_model):
        self.round += 1
        return {"round": self.round, "learning_rate": 0.1 / self.round}

    def aggregate(self, previous_global, client_updates):
        (params, metadata), = client_updates.values()
        return [p + 100 * metadata["num_examples"] for p in params]
"""

RAISES = """
class ServerFunctions(ServerFunctionsBase):
    def client_settings(self, global_model):
        raise RuntimeError("settings are broken")
"""


def markers(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("train-started-*"))]


def download_params(dep: Deployment, model_id: str) -> list[np.ndarray]:
    r = requests.get(f"{dep.api_url}/api/v1/models/{model_id}/download", params={"format": "raw"}, timeout=30)
    assert r.status_code == 200, r.text
    return helper.load(io.BytesIO(r.content))


def test_selection_settings_and_aggregation_reach_real_clients(deployment: Deployment, clients_stopped: None) -> None:
    dep = deployment
    project = dep.project("weighted")
    seed = dep.upload_seed(project)
    marks = {name: dep.root / f"markers-{name}" for name in ("alpha", "beta")}
    dep.start_client("alpha", project, env={"E2E_CONSTANT": "1", "E2E_NUM_EXAMPLES": "2",
                                            "E2E_MARKER_DIR": str(marks["alpha"])})
    dep.start_client("beta", project, env={"E2E_CONSTANT": "4", "E2E_NUM_EXAMPLES": "3",
                                           "E2E_MARKER_DIR": str(marks["beta"])})
    ids = {name: c["client_id"] for name, c in dep.online_clients().items()}
    path = dep.root / "server_functions.py"
    path.write_text(SOURCE.replace("ORDER[", f"{[ids['alpha'], ids['beta']]!r}["))

    result = dep.cli("session", "start", "--server-functions", str(path), "-r", "2", "-rt", "30", "-mc", "2",
                     "-v", "false", "-m", seed, "--wait", "--timeout", "60", *dep.api_args())
    assert "with server functions" in result.stdout

    session = dep.get("/api/v1/sessions/", params={"status": "Finished"})["result"][0]
    rounds = dep.rounds(session["session_id"])
    assert [r["status"] for r in rounds] == ["Finished", "Finished"]
    for r in rounds:
        notes = r["round_data"]["server_functions"]
        assert "errors" not in notes, notes
        assert notes["client_selection"]["selected"] == 1 and notes["client_selection"]["offered"] == 2
        assert r["round_config"]["server_functions"]["chars"] == len(path.read_text())
    # round 1 trained alpha only, round 2 beta only, each with that round's settings
    assert [m["settings"] for m in markers(marks["alpha"])] == [{"round": 1, "learning_rate": 0.1}]
    assert [m["settings"] for m in markers(marks["beta"])] == [{"round": 2, "learning_rate": 0.05}]
    # the custom aggregate: (seed + 1) + 100 * 2, then (that + 4) + 100 * 3
    final = download_params(dep, rounds[-1]["new_model_id"])
    for got, start in zip(final, download_params(dep, seed), strict=True):
        np.testing.assert_allclose(got, start + 1 + 200 + 4 + 300, rtol=1e-6)


def test_a_failing_function_is_recorded_on_the_round_and_the_round_uses_the_defaults(
        deployment: Deployment, clients_stopped: None) -> None:
    dep = deployment
    project = dep.project("weighted")
    seed = dep.upload_seed(project)
    folder = dep.root / "markers-gamma"
    dep.start_client("gamma", project, env={"E2E_CONSTANT": "2", "E2E_MARKER_DIR": str(folder)})

    session_id = dep.start_session(rounds=1, round_timeout=30, model_id=seed, validate=False,
                                   server_functions=RAISES)
    session = dep.wait_session(session_id, timeout=60)
    assert session["status"] == "Finished", session

    (round_,) = dep.rounds(session_id)
    (error,) = round_["round_data"]["server_functions"]["errors"]
    assert error.startswith("client_settings: RuntimeError: settings are broken (line 4 of the server functions")
    assert [m["settings"] for m in markers(folder)] == [{}]
    for got, start in zip(download_params(dep, round_["new_model_id"]), download_params(dep, seed), strict=True):
        np.testing.assert_allclose(got, start + 2, rtol=1e-6)
