"""A validating session (the default) with clients that have no validate callback: a published client refuses
its first validation task the published way (COMPLETED, no validation sent) and is not asked again; ours
announces it and is never asked. No task fails, and every round says how many clients validated."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import requests

from scaleoututil.helpers.helpers import get_helper
from tests.e2e.deployment import Deployment
from tests.interop.conftest import WEIGHTED, Official, project_copy

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]

helper = get_helper("numpyhelper")
SEED = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, dtype=np.float64)]  # the project's build


@pytest.fixture(scope="module")
def seeded(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    project = project_copy(WEIGHTED, tmp_path_factory.mktemp("validation") / "project")
    return project, deployment.upload_seed(project)


def test_published_client_without_validate_callback_is_asked_once_and_ours_never(
        official: Official, seeded: tuple[Path, str]) -> None:
    dep, label = official.dep, official.release.label
    project, seed = seeded
    official.start_client(f"val-{label}", project, env={"E2E_CONSTANT": "1.0", "E2E_NUM_EXAMPLES": "1"})
    official.start_client(f"noval-{label}", project, env={"E2E_CONSTANT": "4.0", "E2E_NUM_EXAMPLES": "3",
                                                            "E2E_NO_VALIDATE": "1"})
    dep.start_client("ours-noval", project, env={"E2E_CONSTANT": "4.0", "E2E_NUM_EXAMPLES": "4",
                                                 "E2E_NO_VALIDATE": "1"})
    session_id = dep.start_session(rounds=2, round_timeout=60, model_id=seed, clients_required=3)
    session = dep.wait_session(session_id, timeout=150)
    assert session["status"] == "Finished", session
    rounds = dep.rounds(session_id)
    assert [r["status"] for r in rounds] == ["Finished", "Finished"]
    first, second = (r["round_data"]["validation"] for r in rounds)
    # round 1: ours announced it and is skipped; theirs is asked, completes without a validation
    assert first == {"clients": 2, "completed": 2, "validated": 1, "skipped": ["ours-noval"], "errors": []}
    # round 2: theirs is remembered too
    assert sorted(second["skipped"]) == sorted(["ours-noval", f"noval-{label}"])
    assert {k: second[k] for k in ("clients", "completed", "validated", "errors")} == {
        "clients": 1, "completed": 1, "validated": 1, "errors": []}
    validations = dep.get("/api/v1/validations/", params={"session_id": session_id})["result"]
    assert sorted(v["sender"]["name"] for v in validations) == [f"val-{label}"] * 2
    # all three trained both rounds: FedAvg by num_examples adds (1*1 + 4*3 + 4*4) / 8 per round
    r = requests.get(f"{dep.api_url}/api/v1/models/{rounds[-1]['new_model_id']}/download",
                     params={"format": "raw"}, timeout=30)
    for got, seed_params in zip(helper.load(io.BytesIO(r.content)), SEED, strict=True):
        np.testing.assert_allclose(got, seed_params + 2 * 29 / 8, rtol=1e-6)
