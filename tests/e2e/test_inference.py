"""Staging and on-device inference with our client, ending running commands, and every APIClient method,
against a real server (controller + combiner) and real client processes.

The project (tests/e2e/projects/inference) uses the published 1.1 client's API: an inference callback that
reports with log_inference_result, a stage callback that drops a marker file, a custom command that naps.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from scaleoututil.api import APIClient
from tests.e2e.deployment import Deployment, as_json, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def seed(deployment: Deployment) -> str:
    return deployment.upload_seed(deployment.project("inference"))


@pytest.fixture
def api(deployment: Deployment) -> APIClient:
    return APIClient(deployment.api_url)


def start(dep: Deployment, name: str, markers: Path, **env: str) -> None:
    project = dep.root / "projects" / "inference"
    dep.start_client(name, project, env={"E2E_MARKER_DIR": str(markers), **env})


def test_staging_caches_the_model_and_runs_the_stage_callback_then_inference_results_are_stored(
        deployment: Deployment, seed: str, api: APIClient, tmp_path: Path, clients_stopped: None) -> None:
    dep = deployment
    start(dep, "inf-a", tmp_path)
    staged = dep.cli("model", "stage", "-id", seed, *dep.api_args())
    assert "COMPLETED" in staged.stdout, staged.stdout
    assert json.loads((tmp_path / f"staged-{seed}").read_text()) == {"first": 0.0}  # the seed's first parameter
    assert (dep.root / "projects" / "inference" / ".scaleout" / "model_cache" / f"{seed}.scm").is_file()
    command = next(c for c in api.get_commands()["result"] if c["command_type"] == "Scaleout_StageModel")
    assert command["status"] == "Finished" and command["parameters"] == {"model_id": seed}

    run = api.start_inference(seed, parameters={"n": 2, "label": "cat"}, timeout=60)
    assert run["status"] == "Finished", run
    assert [(r["status"], r["response"]) for r in run["results"]] == [("COMPLETED", None)]  # return value not sent
    listed = as_json(dep.cli("inference", "list", "--run-id", run["command_id"], "-o", "json",
                             *dep.api_args()).stdout)
    assert sorted(r["data"]["detection"]["i"] for r in listed) == [0, 1]
    assert all(r["data"] == {"detection": {"i": r["data"]["detection"]["i"], "first": 0.0, "label": "cat"}}
               and r["model_id"] == seed and r["sender"]["name"] == "inf-a" for r in listed), listed
    assert api.get_predictions(prediction_id=run["command_id"])["count"] == 2
    unlimited = api.start_inference(seed, synchronous=False, timeout=-1)  # the official "-1: infinite"
    assert unlimited["status"] == "Running", unlimited
    wait_until(lambda: api.get_command(unlimited["command_id"])["status"] == "Finished", 30, 0.2, "inference")


def test_staging_an_unknown_model_or_on_an_unknown_client_is_refused_with_a_reason(
        deployment: Deployment, seed: str) -> None:
    missing = deployment.post("/api/v1/models/no-such-model/stage", {"client_ids": None})
    assert missing.status_code == 404 and "no-such-model" in missing.json()["message"]
    nobody = deployment.post(f"/api/v1/models/{seed}/stage", {"client_ids": ["ghost"]})
    assert nobody.status_code == 400 and "ghost" in nobody.json()["message"]


@pytest.mark.parametrize(("action", "final"), [("skip", "Finished"), ("stop", "Stopped")])
def test_skip_and_stop_end_a_running_command_keeping_the_answers_in_hand(
        deployment: Deployment, seed: str, api: APIClient, tmp_path: Path, clients_stopped: None,
        action: str, final: str) -> None:
    dep = deployment
    quick, sleepy = f"quick-{action}", f"sleepy-{action}"  # new names: the last test's clients may still show
    start(dep, quick, tmp_path)
    start(dep, sleepy, tmp_path, E2E_NAP_SECONDS="90")
    command = api.run_custom_command("nap", timeout=120)
    assert "command_id" in command, command
    command_id = command["command_id"]
    quick_log = dep.root / "logs" / f"client-{quick}.log"
    wait_until(lambda: "Custom_nap completed" in quick_log.read_text(), 30, 0.2, "the quick client's answer")
    time.sleep(2)  # its done report reaches the combiner on its next poll; the sleepy client naps on
    asked = time.monotonic()
    ended = dep.post(f"/api/v1/commands/{command_id}/{action}", {"correlation_id": command_id})
    assert ended.status_code == 200, ended.text
    record = wait_until(lambda: (c := api.get_command(command_id))["status"] != "Running" and c, 20, 0.2,
                        f"command {action}")
    assert time.monotonic() - asked < 15  # not the 90 s nap
    assert record["status"] == final
    by_client = {r["client_name"]: (r["status"], r["response"]) for r in record["results"]}
    assert by_client[quick] == ("COMPLETED", {"slept": 0.0})
    assert by_client[sleepy][0] == "INTERRUPTED"
    again = dep.post(f"/api/v1/commands/{command_id}/{action}")
    assert again.status_code == 409 and "not running" in again.json()["message"]


def test_ending_a_command_that_does_not_exist_or_with_another_id_in_the_body_is_refused(
        deployment: Deployment) -> None:
    unknown = deployment.post("/api/v1/commands/nope/stop")
    assert unknown.status_code == 404 and "nope" in unknown.json()["message"]
    mismatch = deployment.post("/api/v1/commands/abc/skip", {"correlation_id": "xyz"})
    assert mismatch.status_code == 400 and "xyz" in mismatch.json()["message"]


# -- every APIClient method -----------------------------------------------------------------------------------
@pytest.fixture
def http_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, int, str]]]:
    """Every HTTP exchange made through requests: (method, path, status, body start)."""
    seen: list[tuple[str, str, int, str]] = []
    real_send = requests.Session.send

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        reply = real_send(self, request, **kwargs)
        path = requests.utils.urlparse(request.url).path
        body = "" if kwargs.get("stream") else reply.text[:200]
        seen.append((str(request.method), path, reply.status_code, body))
        return reply

    monkeypatch.setattr(requests.Session, "send", send)
    yield seen


def method_calls(dep: Deployment, api: APIClient, seed: str, client_id: str, tmp: Path) -> dict[str, Callable[[], Any]]:
    """One call per public APIClient method, in an order where each has what it needs."""
    project = dep.root / "projects" / "inference"
    dep.cli("package", "create", "--path", "client", "-o", str(tmp), cwd=project)
    package = next(tmp.glob("*.tgz"))
    state: dict[str, Any] = {}

    def session() -> Any:
        state["session"] = api.start_session(name="every-method", rounds=1, round_timeout=60, validate=False,
                                             min_clients=1)
        return state["session"]

    def nap(blocking: bool) -> Any:
        state["command"] = api.run_custom_command("nap", blocking=blocking, timeout=60,
                                                  parameters={"seconds": 0 if blocking else 30})
        return state["command"]

    return {
        "request": lambda: api.request("GET", "models/count"),
        "base_url": lambda: api.base_url,
        "get_client": lambda: api.get_client(client_id),
        "get_clients": lambda: api.get_clients(n_max=5),
        "get_clients_count": lambda: api.get_clients_count(only_active=True),
        "get_client_config": lambda: api.get_client_config(),
        "get_active_clients": lambda: api.get_active_clients(),
        "get_combiner": lambda: api.get_combiner(api.get_combiners()["result"][0]["combiner_id"]),
        "get_combiners": lambda: api.get_combiners(),
        "get_combiners_count": lambda: api.get_combiners_count(),
        "set_public_hostname": lambda: api.set_public_hostname(api.get_combiners()["result"][0]["combiner_id"],
                                                               "127.0.0.1"),
        "get_controller_status": lambda: api.get_controller_status(),
        "get_active_helper": lambda: api.get_active_helper(),
        "set_active_helper": lambda: api.set_active_helper("numpyhelper"),
        "resolve_active_helper": lambda: api.resolve_active_helper(),
        "set_active_model": lambda: api.set_active_model(str(project / "seed.npz")),
        "get_model": lambda: api.get_model(seed),
        "get_models": lambda: api.get_models(),
        "get_models_count": lambda: api.get_models_count(),
        "get_active_model": lambda: api.get_active_model(),
        "get_model_trail": lambda: api.get_model_trail(seed),
        "download_model": lambda: api.download_model(seed, tmp / "model.bin"),
        "upload_file": lambda: api.upload_file(package),
        "set_active_package": lambda: api.set_active_package(package, "numpyhelper", "every-method"),
        "get_package": lambda: api.get_package(api.get_active_package()["package_id"]),
        "get_packages": lambda: api.get_packages(),
        "get_packages_count": lambda: api.get_packages_count(),
        "get_active_package": lambda: api.get_active_package(),
        "get_package_checksum": lambda: api.get_package_checksum(),
        "download_package": lambda: api.download_package(tmp / "downloaded.tgz"),
        "stage_model": lambda: api.stage_model(seed, client_ids=[client_id]),
        "start_inference": lambda: api.start_inference(seed, parameters={"n": 1}, timeout=60),
        "get_predictions": lambda: api.get_predictions(model_id=seed),
        "start_predictions": lambda: api.start_predictions(model_id=seed, synchronous=True, timeout=60),
        "start_session": session,
        "wait_for_session": lambda: api.wait_for_session(state["session"]["session_id"], timeout=90),
        "continue_session": lambda: api.continue_session(state["session"]["session_id"], rounds=1, round_timeout=60),
        "stop_session": lambda: api.stop_session(state["session"]["session_id"]),
        "get_session": lambda: api.get_session(state["session"]["session_id"]),
        "get_sessions": lambda: api.get_sessions(),
        "get_sessions_count": lambda: api.get_sessions_count(),
        "get_session_status": lambda: api.get_session_status(state["session"]["session_id"]),
        "session_is_finished": lambda: api.session_is_finished(state["session"]["session_id"]),
        "get_round": lambda: api.get_round(api.get_rounds()["result"][0]["round_id"]),
        "get_rounds": lambda: api.get_rounds(),
        "get_rounds_count": lambda: api.get_rounds_count(),
        "start_validation": lambda: api.start_validation(seed, client_ids=[client_id], timeout=30, synchronous=True),
        "get_validation": lambda: api.get_validation("none"),
        "get_validations": lambda: api.get_validations(),
        "get_validations_count": lambda: api.get_validations_count(),
        "get_metrics": lambda: api.get_metrics(),
        "get_metrics_count": lambda: api.get_metrics_count(),
        "add_status": lambda: api.add_status({"status": "checked by hand", "type": "NOTE", "log_level": "AUDIT",
                                              "sender": {"client_id": client_id, "name": "every"}}),
        "get_status": lambda: api.get_status(api.get_statuses(n_max=1)["result"][0]["status_id"]),
        "get_statuses": lambda: api.get_statuses(),
        "get_statuses_count": lambda: api.get_statuses_count(),
        "run_custom_command": lambda: nap(blocking=True),
        "get_command": lambda: api.get_command(state["command"]["command_id"]),
        "get_commands": lambda: api.get_commands(),
        "get_commands_roots": lambda: api.get_commands_roots(),
        "get_commands_count": lambda: api.get_commands_count(),
        "step_command": lambda: (nap(blocking=False), api.step_command(state["command"]["command_id"]))[1],
        "stop_command": lambda: (nap(blocking=False), api.stop_command(state["command"]["command_id"]))[1],
        "step_current_command": lambda: (nap(blocking=False), api.step_current_command())[1],
        "stop_current_command": lambda: (session(), api.stop_current_command())[1],
        "stop_current_session": lambda: (session(), api.stop_current_session())[1],
        "step_current_session": lambda: (nap(blocking=False), api.step_current_session())[1],
        "add_attributes": lambda: api.add_attributes({"key": "charging", "value": "true", "entity_id": client_id}),
        "get_current_attributes": lambda: api.get_current_attributes([client_id]),
        "get_attribute_trail": lambda: api.get_attribute_trail(client_id),
    }


def test_every_public_api_client_method_reaches_a_route_of_the_server(
        deployment: Deployment, seed: str, api: APIClient, tmp_path: Path, clients_stopped: None,
        http_log: list[tuple[str, str, int, str]]) -> None:
    dep = deployment
    start(dep, "every", tmp_path)
    client_id = dep.online_clients()["every"]["client_id"]
    calls = method_calls(dep, api, seed, client_id, tmp_path)
    public = {name for name, _ in inspect.getmembers(APIClient) if not name.startswith("_")}
    assert public == set(calls), f"without a call here: {public - set(calls)}; gone: {set(calls) - public}"
    answers = {}
    for name, call in calls.items():
        answers[name] = call()
    assert len(http_log) >= len(calls) - 1  # each method but base_url made at least one request
    # no route is missing (404 "No route", 405) and nothing failed on the server
    broken = [(m, p, s, b) for m, p, s, b in http_log if s == 405 or s >= 500 or "No route" in b]
    assert not broken, broken
    assert answers["add_attributes"]["key"] == "charging"
    assert answers["get_current_attributes"][client_id]["charging"] == "true"
    assert [a["key"] for a in answers["get_attribute_trail"]["result"]] == ["charging"]
    assert answers["add_status"]["log_level"] == "AUDIT"
    assert answers["stage_model"]["command_type"] == "Scaleout_StageModel"
    assert answers["wait_for_session"]["status"] == "Finished"
    assert answers["step_command"]["status"] == "Finished" and answers["stop_command"]["status"] == "Stopped"
    assert answers["stop_current_command"]["status"] == "Stopped"
    assert answers["get_validation"] == {"message": "Validation with id: none not found"}
