"""A session that validates (the default) with one of our clients that has no validate callback: the client
announces it, gets no validation task, and no task fails; the REST round listing and the CLI's round table
say how many clients validated and which were skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.deployment import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def project(deployment: Deployment) -> Path:
    return deployment.project("weighted")


def test_a_client_without_a_validate_callback_trains_but_is_not_asked_to_validate(
        deployment: Deployment, project: Path, clients_stopped: None) -> None:
    dep = deployment
    seed = dep.upload_seed(project)
    dep.start_client("validates", project, env={"E2E_CONSTANT": "1.0", "E2E_NUM_EXAMPLES": "1"})
    quiet = dep.start_client("no-validate", project, env={"E2E_CONSTANT": "4.0", "E2E_NUM_EXAMPLES": "3",
                                                            "E2E_NO_VALIDATE": "1"})
    session_id = dep.start_session(name="validate-some", rounds=2, round_timeout=60, model_id=seed,
                                   clients_required=2)  # validate: the default, true
    session = dep.wait_session(session_id, timeout=120)
    assert session["status"] == "Finished", session

    rounds = dep.rounds(session_id)
    assert [r["status"] for r in rounds] == ["Finished", "Finished"]
    for round_ in rounds:  # both trained; only one was asked to validate, and nothing failed
        assert round_["round_data"]["validation"] == {"clients": 1, "completed": 1, "validated": 1,
                                                      "skipped": ["no-validate"], "errors": []}
    validations = dep.get("/api/v1/validations/", params={"session_id": session_id})["result"]
    assert sorted(v["sender"]["name"] for v in validations) == ["validates", "validates"]
    assert {v["model_id"] for v in validations} == {r["new_model_id"] for r in rounds}
    output = quiet.output()
    assert "no validate callback" not in output and "Scaleout_Validation" not in output

    table = dep.cli("round", "list", "-s", session_id, *dep.api_args()).stdout
    header = [cell.strip() for cell in next(line for line in table.splitlines() if "Validated" in line).split("┃")]
    assert header.index("Validated") == header.index("Updates") + 1
    assert table.count("1/1 (1 skipped)") == 2
