"""CLI output: machine formats print exactly the records, human tables pick columns per resource."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import click
import yaml
from click.testing import CliRunner

from scaleout.cli import package_cmd, resources_cmd, session_cmd  # noqa: F401  (attach the commands)
from scaleout.cli.groups import cli
from scaleout.cli.output import compact, round_clients, round_counts, round_duration, short, size
from tests.unit.test_api_client_support import FakeController

SESSIONS = [
    {"session_id": "11111111-aaaa", "name": "first", "status": "Finished", "committed_at": "2024-05-01T12:00:00+00:00",
     "session_config": {"rounds": 3, "aggregator": "fedavg"}},
    {"session_id": "22222222-bbbb", "name": "second", "status": "Running", "committed_at": "2024-05-02T12:00:00+00:00",
     "session_config": {"rounds": 5, "aggregator": "fedopt"}},
]


def run(fake: FakeController, *args: str) -> click.testing.Result:
    port = str(urlsplit(fake.url).port)
    return CliRunner().invoke(cli, [*args, "-H", "127.0.0.1", "-P", port], catch_exceptions=False)


def test_json_output_is_exactly_the_result_list(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/sessions/", body={"count": 7, "result": SESSIONS})
    result = run(fake, "session", "list", "-o", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == SESSIONS


def test_yaml_output_parses_back_to_the_records(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/sessions/", body={"count": 2, "result": SESSIONS})
    result = run(fake, "session", "list", "-o", "yaml")
    assert yaml.safe_load(result.stdout) == SESSIONS


def test_json_output_of_a_get_is_the_object(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/sessions/11111111-aaaa", body=SESSIONS[0])
    result = run(fake, "session", "get", "-id", "11111111-aaaa", "-o", "json")
    assert json.loads(result.stdout) == SESSIONS[0]


def test_human_session_table_shows_chosen_columns_and_count(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/sessions/", body={"count": 7, "result": SESSIONS})
    out = run(fake, "session", "list").stdout
    for text in ("ID", "Name", "Status", "Rounds", "Aggregator", "Created", "11111111-aaaa", "fedopt", "2 of 7"):
        assert text in out
    assert "session_config" not in out


def test_human_package_table_marks_the_active_package(fake: FakeController) -> None:
    packages = [{"package_id": "p1", "name": "v1", "file_name": "package.tgz", "helper": "numpyhelper",
                 "size": 2048, "active": True},
                {"package_id": "p2", "name": "v0", "file_name": "old.tgz", "helper": "numpyhelper", "active": False}]
    fake.on("GET", "/api/v1/packages/", body={"count": 2, "result": packages})
    lines = run(fake, "package", "list").stdout.splitlines()
    assert any("p1" in line and "*" in line and "2.0 KiB" in line for line in lines)
    assert any("p2" in line and "*" not in line for line in lines)


def test_human_validation_table_shows_metrics_compactly(fake: FakeController) -> None:
    validations = [{"validation_id": "v1", "model_id": "model-123456789", "round_id": "round-abcdefgh",
                    "sender": {"name": "alice"}, "data": {"validation_accuracy": 0.912345, "validation_loss": 0.25}}]
    fake.on("GET", "/api/v1/validations/", body={"count": 1, "result": validations})
    out = run(fake, "validation", "list", "-s", "s1").stdout
    assert "validation_accuracy=0.9123 validation_loss=0.25" in out
    assert "alice" in out and "model-12" in out
    assert fake.requests[0].query == {"session_id": "s1"}


def test_empty_list_says_nothing_was_found(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/combiners/", body={"count": 0, "result": []})
    assert "No combiners found" in run(fake, "combiner", "list").stdout


def test_get_of_a_command_shows_each_clients_result(fake: FakeController) -> None:
    command = {"command_id": "c1", "command_type": "Custom_ping", "status": "Finished",
               "results": [{"client_id": "id-a", "client_name": "alice", "status": "COMPLETED",
                            "response": {"pong": True}}]}
    fake.on("GET", "/api/v1/commands/c1", body=command)
    out = run(fake, "command", "get", "-id", "c1").stdout
    assert "Custom_ping" in out and "alice" in out and "COMPLETED" in out and "pong=True" in out


# -- pure formatting helpers --------------------------------------------------------------------------------
def test_round_counts_sum_updates_and_expected_over_combiners() -> None:
    round_ = {"combiners": [{"updates_received": 2, "expected_updates": 3}, {"updates_received": 1,
                                                                              "expected_updates": 1}]}
    assert round_counts(round_) == (3, 4)
    assert round_counts({"round_data": {"num_updates": 5, "num_clients": 6}}) == (5, 6)
    server_shape = {"combiners": [{"clients": 3, "updates_received": 2, "updates_expected": 3}],
                    "round_data": {"clients_selected": 3}}
    assert round_counts(server_shape) == (2, 3)
    assert round_clients(server_shape) == 3
    assert round_counts({}) == (None, None)


def test_round_duration_prefers_round_data_then_timestamps() -> None:
    assert round_duration({"round_data": {"duration": 12.5}}) == 12.5
    assert round_duration({"started_at": "2024-05-01T12:00:00+00:00",
                           "finished_at": "2024-05-01T12:00:30+00:00", "status": "Finished"}) == 30.0
    assert round_duration({"status": "Finished"}) is None


def test_small_formatters() -> None:
    assert short("1234567890") == "12345678" and short(None) == ""
    assert size(512) == "512 B" and size(5 * 1024 * 1024) == "5.0 MiB"
    assert compact({"a": 1, "b": "x"}) == 'a=1 b="x"'
    assert compact("y" * 100, limit=10).endswith("…") and len(compact("y" * 100, limit=10)) == 10


def test_combiner_set_public_hostname_patches_the_combiner(fake: FakeController) -> None:
    fake.on("PATCH", "/api/v1/combiners/cb", body={"combiner_id": "cb", "name": "combiner"})
    result = run(fake, "combiner", "set-public-hostname", "edge.example.org", "-id", "cb")
    assert result.exit_code == 0, result.output
    assert fake.requests[0].json() == {"public_hostname": "edge.example.org"}
    assert "edge.example.org" in result.stdout
