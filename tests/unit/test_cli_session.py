"""`scaleout session ...`: the start request, option parsing, waiting, and the per-round summary."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
from click.testing import CliRunner
from rich.console import Console

from scaleout.cli import package_cmd, resources_cmd, session_cmd  # noqa: F401  (attach the commands)
from scaleout.cli.groups import cli
from scaleout.cli.session_cmd import mean_metrics, summarize_rounds
from tests.unit.test_api_client_support import FakeController, running_fake_controller


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeController]:
    monkeypatch.setattr(session_cmd, "POLL_INTERVAL", 0.01)
    monkeypatch.setattr(session_cmd, "VALIDATION_GRACE", 0.1)
    with running_fake_controller() as controller:
        yield controller


def run(fake: FakeController, *args: str) -> click.testing.Result:
    port = str(urlsplit(fake.url).port)
    return CliRunner().invoke(cli, [*args, "-H", "127.0.0.1", "-P", port], catch_exceptions=False)


def start_routes(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/models/", body={"count": 1, "result": [{"model_id": "seed-model"}]})
    fake.on("GET", "/api/v1/helpers/active", body="numpyhelper")
    fake.on("POST", "/api/v1/sessions/", status=201, body={"session_id": "s1"})
    fake.on("POST", "/api/v1/sessions/start", body={"message": "Session started", "session_id": "s1"})


def _round(number: int, status: str = "Finished", **extra: Any) -> dict[str, Any]:
    return {"round_id": f"r{number}", "session_id": "s1", "round_number": number, "status": status,
            "new_model_id": f"m{number}", "combiners": [{"updates_received": 2, "expected_updates": 2}],
            "round_data": {"duration": 1.5 * number}, **extra}


def _validation(round_id: str | None, model_id: str, **data: Any) -> dict[str, Any]:
    return {"validation_id": f"v-{round_id}-{len(data)}", "round_id": round_id, "model_id": model_id,
            "session_id": "s1", "sender": {"name": "c"}, "data": data}


# -- the summary (pure) -------------------------------------------------------------------------------------
def test_mean_metrics_averages_numeric_values_and_skips_the_rest() -> None:
    means = mean_metrics([{"data": {"acc": 0.8, "loss": 1.0, "note": "x", "flag": True}},
                          {"data": {"acc": 0.6}},
                          {"data": None}])
    assert means == {"acc": pytest.approx(0.7), "loss": 1.0}


def test_summary_assigns_validations_by_round_id_or_by_the_rounds_new_model() -> None:
    rounds = [_round(2), _round(1)]
    validations = [
        _validation("r1", "m1", validation_accuracy=0.5),
        _validation("r1", "m1", validation_accuracy=0.7),
        _validation(None, "m2", validation_accuracy=0.9, validation_loss=0.1),  # no round_id: matched by model
        _validation("r9", "m9", validation_accuracy=0.0),  # another session's round: ignored
    ]
    summaries = summarize_rounds(rounds, validations)
    assert [s.round_number for s in summaries] == [1, 2]
    assert summaries[0].metrics == {"validation_accuracy": pytest.approx(0.6)}
    assert summaries[1].metrics == {"validation_accuracy": 0.9, "validation_loss": 0.1}
    assert (summaries[0].updates, summaries[0].expected, summaries[1].duration) == (2, 2, 3.0)


# -- session start ------------------------------------------------------------------------------------------
def test_start_sends_the_official_body_with_defaults(fake: FakeController) -> None:
    start_routes(fake)
    result = run(fake, "session", "start", "-n", "demo", "-r", "3", "-ak", '{"serveropt": "adam"}', "-v", "false")
    assert result.exit_code == 0, result.output
    assert "Session s1 started" in result.stdout
    created = fake.find("POST", "/api/v1/sessions/")[0].json()
    assert created == {"name": "demo", "seed_model_id": "seed-model", "session_config": {
        "aggregator": "fedavg", "aggregator_kwargs": {"serveropt": "adam"}, "rounds": 3, "round_timeout": 180,
        "buffer_size": -1, "model_id": "seed-model", "delete_models_storage": True, "clients_required": 1,
        "requested_clients": 8, "validate": False, "helper_type": "numpyhelper", "server_functions": None}}
    assert fake.find("POST", "/api/v1/sessions/start")[0].json() == {"session_id": "s1", "rounds": 3,
                                                                       "round_timeout": 180}
    newest = fake.find("GET", "/api/v1/models/")[0]
    assert (newest.header("X-Limit"), newest.header("X-Sort-Key")) == ("1", "committed_at")


def test_explicit_model_and_helper_skip_the_lookups(fake: FakeController) -> None:
    start_routes(fake)
    assert run(fake, "session", "start", "-m", "mine", "-hp", "binaryhelper").exit_code == 0
    assert fake.find("GET", "/api/v1/models/") == [] and fake.find("GET", "/api/v1/helpers/active") == []
    config = fake.find("POST", "/api/v1/sessions/")[0].json()["session_config"]
    assert (config["model_id"], config["helper_type"]) == ("mine", "binaryhelper")


@pytest.mark.parametrize(("value", "message"), [
    ("{serveropt: adam}", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_aggregator_kwargs_are_a_usage_error_before_any_request(fake: FakeController, value: str,
                                                                    message: str) -> None:
    result = run(fake, "session", "start", "-ak", value)
    assert result.exit_code == 2
    assert message in result.output and "--aggregator_kwargs" in result.output
    assert fake.requests == []


def test_start_without_any_model_explains_how_to_upload_one(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/models/", body={"count": 0, "result": []})
    result = run(fake, "session", "start")
    assert result.exit_code == 1
    assert "scaleout model set-active" in result.output


def test_start_shows_the_servers_reason_when_create_fails(fake: FakeController) -> None:
    start_routes(fake)
    fake.on("POST", "/api/v1/sessions/", status=409, body={"message": "A session is already running"})
    result = run(fake, "session", "start")
    assert result.exit_code == 1
    assert "A session is already running" in result.output
    assert fake.find("POST", "/api/v1/sessions/start") == []


# -- waiting --------------------------------------------------------------------------------------------------
def _session_sequence(fake: FakeController, statuses: list[str], error: str | None = None) -> None:
    remaining = iter(statuses)
    last = {"status": statuses[-1]}

    def session(_req: Any) -> tuple[int, Any]:
        last["status"] = next(remaining, last["status"])
        return 200, {"session_id": "s1", "name": "demo", "status": last["status"], "error": error,
                     "session_config": {"rounds": 2, "validate": True}}

    fake.on("GET", "/api/v1/sessions/s1", handler=session)


def test_start_wait_prints_the_per_round_table_with_metric_means(fake: FakeController) -> None:
    start_routes(fake)
    _session_sequence(fake, ["Running", "Running", "Finished"])
    fake.on("GET", "/api/v1/rounds/", body={"count": 2, "result": [_round(1), _round(2)]})
    fake.on("GET", "/api/v1/validations/", body={"count": 3, "result": [
        _validation("r1", "m1", validation_accuracy=0.5), _validation("r1", "m1", validation_accuracy=0.75),
        _validation("r2", "m2", validation_accuracy=0.9)]})

    result = run(fake, "session", "start", "-r", "2", "--wait")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "Round" in line and "Clients" in line)
    assert "validation_accuracy" in header and "Duration" in header
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    assert rows == [["1", "Finished", "2/2", "1.5s", "0.6250"], ["2", "Finished", "2/2", "3.0s", "0.9000"]]
    assert fake.find("GET", "/api/v1/rounds/")[0].query == {"session_id": "s1"}


def test_wait_on_a_failed_session_exits_1_with_its_error(fake: FakeController) -> None:
    _session_sequence(fake, ["Failed"], error="round 1: no client updates arrived")
    fake.on("GET", "/api/v1/rounds/", body={"count": 1, "result": [_round(1, status="Failed", new_model_id=None)]})
    fake.on("GET", "/api/v1/validations/", body={"count": 0, "result": []})

    result = run(fake, "session", "wait", "-id", "s1")

    assert result.exit_code == 1
    assert "Failed" in result.stdout
    assert "round 1: no client updates arrived" in result.output


def test_wait_gives_up_after_the_timeout(fake: FakeController) -> None:
    _session_sequence(fake, ["Running"])
    fake.on("GET", "/api/v1/rounds/", body={"count": 0, "result": []})
    result = run(fake, "session", "wait", "-id", "s1", "--timeout", "0.2")
    assert result.exit_code == 1
    assert "still Running" in result.output and "session wait -id s1" in result.output


def test_stop_posts_the_session_id(fake: FakeController) -> None:
    fake.on("POST", "/api/v1/control/stop", body={"message": "Session s1 stopped"})
    result = run(fake, "session", "stop", "-id", "s1")
    assert result.exit_code == 0
    assert "Session s1 stopped" in result.stdout
    assert fake.requests[0].json() == {"session_id": "s1"}


def test_wait_on_a_terminal_shows_live_lines_and_then_the_table(fake: FakeController,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(session_cmd, "console", lambda: Console(file=screen, force_terminal=True, width=120))
    _session_sequence(fake, ["Running", "Running", "Stopped"])
    fake.on("GET", "/api/v1/rounds/", body={"count": 1, "result": [_round(1)]})
    fake.on("GET", "/api/v1/validations/", body={"count": 0, "result": []})

    result = run(fake, "session", "wait", "-id", "s1")

    assert result.exit_code == 0, result.output
    text = screen.getvalue()
    assert "Round 1/2" in text  # the live line
    assert "Session demo: Stopped" in text and "was stopped" in text
