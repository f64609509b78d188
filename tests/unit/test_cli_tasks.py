"""Ad-hoc tasks from the CLI: custom commands, predictions, validations of a chosen model."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import click
from click.testing import CliRunner

from scaleout.cli import package_cmd, resources_cmd, session_cmd  # noqa: F401  (attach the commands)
from scaleout.cli.groups import cli
from tests.unit.test_api_client_support import FakeController, Recorded


def run(fake: FakeController, *args: str) -> click.testing.Result:
    port = str(urlsplit(fake.url).port)
    return CliRunner().invoke(cli, [*args, "-H", "127.0.0.1", "-P", port], catch_exceptions=False)


def _result(name: str, status: str, response: object) -> dict[str, object]:
    return {"client_id": f"id-{name}", "client_name": name, "status": status, "response": response}


def test_command_run_sends_the_custom_task_and_prints_each_clients_answer(fake: FakeController) -> None:
    fake.on("POST", "/api/v1/control/run_command", body={
        "command_id": "c1", "status": "Finished",
        "results": [_result("alice", "COMPLETED", {"files": 3}), _result("bob", "COMPLETED", "pong")]})

    result = run(fake, "command", "run", "ping", "--params", '{"depth": 2}', "--client-ids", "id-alice,id-bob")

    assert result.exit_code == 0, result.output
    assert fake.requests[0].json() == {"command_type": "Custom_ping", "parameters": {"depth": 2},
                                       "client_ids": ["id-alice", "id-bob"], "timeout": 60, "synchronous": True}
    out = result.stdout
    assert "alice" in out and "files=3" in out and "bob" in out and "pong" in out and "COMPLETED" in out


def test_command_run_exits_1_when_a_client_failed(fake: FakeController) -> None:
    fake.on("POST", "/api/v1/control/run_command", body={
        "command_id": "c1", "status": "Finished",
        "results": [_result("alice", "COMPLETED", "ok"), _result("bob", "FAILED", "KeyError: 'x'")]})
    result = run(fake, "command", "run", "Custom_ping")
    assert result.exit_code == 1
    assert "KeyError" in result.stdout and "1 of 2 client(s): bob" in result.output
    assert fake.requests[0].json()["command_type"] == "Custom_ping"


def test_command_run_no_wait_is_asynchronous(fake: FakeController) -> None:
    fake.on("POST", "/api/v1/control/run_command", body={"command_id": "c9", "status": "Running", "results": []})
    result = run(fake, "command", "run", "ping", "--no-wait", "--timeout", "5")
    assert result.exit_code == 0
    assert fake.requests[0].json()["synchronous"] is False and fake.requests[0].json()["timeout"] == 5
    assert "command get -id c9" in result.stdout


def test_command_run_with_bad_params_json_is_a_usage_error(fake: FakeController) -> None:
    result = run(fake, "command", "run", "ping", "--params", "depth=2")
    assert result.exit_code == 2 and "not valid JSON" in result.output
    assert fake.requests == []


def test_command_run_json_output_is_the_reply(fake: FakeController) -> None:
    reply = {"command_id": "c1", "status": "Finished", "results": [_result("alice", "COMPLETED", 1)]}
    fake.on("POST", "/api/v1/control/run_command", body=reply)
    assert json.loads(run(fake, "command", "run", "ping", "-o", "json").stdout) == reply


def test_prediction_start_then_shows_the_stored_predictions(fake: FakeController) -> None:
    sent: dict[str, object] = {}

    def start(req: Recorded) -> tuple[int, object]:
        sent.update(req.json())
        return 200, {"command_id": "c2", "status": "Finished", "results": [_result("alice", "COMPLETED", None)]}

    fake.on("POST", "/api/v1/predictions/start", handler=start)
    fake.on("GET", "/api/v1/predictions/", handler=lambda req: (200, {"count": 1, "result": [
        {"prediction_id": req.query.get("prediction_id"), "model_id": "m1", "sender": {"name": "alice"},
         "data": {"mean_prediction": 0.42}}]}))

    result = run(fake, "prediction", "start", "--model-id", "m1", "--params", '{"n": 3}', "--timeout", "9")

    assert result.exit_code == 0, result.output
    assert sent["model_id"] == "m1" and sent["parameters"] == {"n": 3} and sent["synchronous"] is True
    assert sent["timeout"] == 9 and len(str(sent["prediction_id"])) == 36
    assert fake.find("GET", "/api/v1/predictions/")[0].query == {"prediction_id": sent["prediction_id"]}
    assert "mean_prediction=0.42" in result.stdout


def test_validation_start_sends_model_and_session(fake: FakeController) -> None:
    fake.on("POST", "/api/v1/validations/start", body={"command_id": "c3", "status": "Running", "results": []})
    result = run(fake, "validation", "start", "--model-id", "m1", "--session-id", "s1", "--no-wait")
    assert result.exit_code == 0, result.output
    body = fake.requests[0].json()
    assert (body["model_id"], body["session_id"], body["synchronous"]) == ("m1", "s1", False)


def test_metric_list_filters_by_key_and_client_name(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/metrics/", body={"count": 1, "result": [
        {"key": "training_loss", "value": 0.123456, "step": 3, "sender": {"name": "alice"}}]})
    result = run(fake, "metric", "list", "--key", "training_loss", "--client", "alice", "-s", "s1")
    assert result.exit_code == 0
    assert fake.requests[0].query == {"session_id": "s1", "key": "training_loss", "sender.name": "alice"}
    assert "0.1235" in result.stdout
