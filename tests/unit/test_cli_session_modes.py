"""`scaleout session start` options for server functions and the asynchronous mode, and the APIClient's
equivalents: what reaches the controller."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
from click.testing import CliRunner

from scaleout.cli import session_cmd  # noqa: F401  (attach the commands)
from scaleout.cli.groups import cli
from scaleoututil.api.client import APIClient
from scaleoututil.serverfunctions import ServerFunctionsBase
from tests.unit.test_api_client_support import FakeController, running_fake_controller


@pytest.fixture
def fake() -> Iterator[FakeController]:
    with running_fake_controller() as controller:
        controller.on("GET", "/api/v1/models/", body={"count": 1, "result": [{"model_id": "seed-model"}]})
        controller.on("GET", "/api/v1/helpers/active", body="numpyhelper")
        controller.on("POST", "/api/v1/sessions/", status=201, body={"session_id": "s1"})
        controller.on("POST", "/api/v1/sessions/start", body={"message": "Session started", "session_id": "s1"})
        yield controller


def run(fake: FakeController, *args: str) -> click.testing.Result:
    port = str(urlsplit(fake.url).port)
    return CliRunner().invoke(cli, [*args, "-H", "127.0.0.1", "-P", port], catch_exceptions=False)


def sent_config(fake: FakeController) -> dict[str, object]:
    return fake.find("POST", "/api/v1/sessions/")[0].json()["session_config"]


def test_server_functions_file_is_sent_as_source_text(fake: FakeController, tmp_path: Path) -> None:
    source = "from scaleoututil.serverfunctions import ServerFunctionsBase\n\n" \
             "class ServerFunctions(ServerFunctionsBase):\n    pass\n"
    path = tmp_path / "server_functions.py"
    path.write_text(source)
    result = run(fake, "session", "start", "--server-functions", str(path))
    assert result.exit_code == 0, result.output
    assert "with server functions" in result.stdout
    config = sent_config(fake)
    assert config["server_functions"] == source and "mode" not in config


def test_a_missing_server_functions_file_is_a_usage_error(fake: FakeController, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["session", "start", "--server-functions", str(tmp_path / "nope.py")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert fake.find("POST", "/api/v1/sessions/") == []


def test_async_mode_with_buffer_size_and_staleness_exponent(fake: FakeController) -> None:
    result = run(fake, "session", "start", "--mode", "async", "--buffer-size", "3", "--staleness-exponent", "1",
                 "-r", "7")
    assert result.exit_code == 0, result.output
    assert "7 asynchronous aggregation(s)" in result.stdout
    config = sent_config(fake)
    assert (config["mode"], config["buffer_size"], config["staleness_exponent"], config["rounds"]) == \
        ("async", 3, 1.0, 7)


def test_round_buffer_size_keeps_its_short_and_official_spellings(fake: FakeController) -> None:
    assert run(fake, "session", "start", "-rb", "2").exit_code == 0
    assert run(fake, "session", "start", "--round_buffer_size", "4").exit_code == 0
    assert [c.json()["session_config"]["buffer_size"] for c in fake.find("POST", "/api/v1/sessions/")] == [2, 4]


def test_an_unknown_mode_is_a_usage_error(fake: FakeController) -> None:
    result = CliRunner().invoke(cli, ["session", "start", "--mode", "turbo"])
    assert result.exit_code == 2 and "'turbo' is not one of 'sync', 'async'" in result.output


class ServerFunctions(ServerFunctionsBase):
    def client_settings(self, global_model: list) -> dict:
        return {"learning_rate": 0.01}


def test_api_client_sends_the_class_source_and_the_async_keys(fake: FakeController) -> None:
    port = urlsplit(fake.url).port
    client = APIClient("127.0.0.1", port)
    client.start_session(server_functions=ServerFunctions, mode="async", staleness_exponent=0.25)
    config = sent_config(fake)
    assert str(config["server_functions"]).startswith("class ServerFunctions(ServerFunctionsBase):")
    assert (config["mode"], config["staleness_exponent"]) == ("async", 0.25)
