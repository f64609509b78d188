"""Shared API options of the CLI: base URL resolution, token, and how failures end a command."""

from __future__ import annotations

from urllib.parse import urlsplit

import click
import pytest
from click.testing import CliRunner

from scaleout.cli import package_cmd, resources_cmd, session_cmd  # noqa: F401  (attach the commands)
from scaleout.cli.api_options import parse_id_list, parse_json_object, resolve_base_url
from scaleout.cli.groups import cli
from tests.conftest import free_port
from tests.unit.test_api_client_support import FakeController


@pytest.fixture(autouse=True)
def _no_env_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCALEOUT_AUTH_TOKEN", raising=False)


def run(*args: str, env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def at(fake: FakeController) -> list[str]:
    return ["-H", "127.0.0.1", "-P", str(urlsplit(fake.url).port)]


# -- URL resolution -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "port", "protocol", "expected"), [
    (None, None, None, "http://127.0.0.1:8092"),
    (None, 9000, None, "http://127.0.0.1:9000"),
    ("localhost", None, None, "http://localhost:8092"),
    ("https://localhost", None, None, "https://localhost:8092"),
    ("localhost", 8092, None, "http://localhost:8092"),
    ("edge.example.com", None, None, "https://edge.example.com"),
    ("edge.example.com", 8092, "http", "http://edge.example.com:8092"),
    ("http://10.0.0.5:8092/some/path", None, None, "http://10.0.0.5:8092"),
    ("https://edge.example.com:8443", 9443, None, "https://edge.example.com:9443"),
    ("https://edge.example.com", None, "http", "http://edge.example.com"),
    ("10.0.0.5:8092", None, None, "https://10.0.0.5:8092"),
])
def test_base_url_is_rebuilt_from_host_port_and_protocol(host: str | None, port: int | None, protocol: str | None,
                                                         expected: str) -> None:
    assert resolve_base_url(host, port, protocol) == expected


def test_a_bad_port_in_the_host_url_is_a_usage_error() -> None:
    with pytest.raises(click.BadParameter, match="not a valid host"):
        resolve_base_url("http://host:notaport")


# -- token --------------------------------------------------------------------------------------------------
def test_token_option_is_sent_as_bearer(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/clients/", body={"count": 0, "result": []})
    assert run("client", "list", *at(fake), "-t", "secret").exit_code == 0
    assert fake.requests[0].header("Authorization") == "Bearer secret"


def test_token_falls_back_to_the_environment(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/clients/", body={"count": 0, "result": []})
    assert run("client", "list", *at(fake), env={"SCALEOUT_AUTH_TOKEN": "from-env"}).exit_code == 0
    assert fake.requests[0].header("Authorization") == "Bearer from-env"


def test_no_token_no_authorization_header(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/clients/", body={"count": 0, "result": []})
    assert run("client", "list", *at(fake)).exit_code == 0
    assert fake.requests[0].header("Authorization") is None


def test_n_max_is_sent_as_x_limit_and_filters_as_query(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/clients/", body={"count": 0, "result": []})
    assert run("client", "list", *at(fake), "--n_max", "3", "--online").exit_code == 0
    assert fake.requests[0].header("X-Limit") == "3"
    assert fake.requests[0].query == {"status": "online"}


# -- failures -----------------------------------------------------------------------------------------------
def test_connection_refused_exits_1_and_says_how_to_start_the_server() -> None:
    port = free_port()
    result = run("session", "list", "-P", str(port))
    assert result.exit_code == 1
    assert f"Could not connect to the controller at http://127.0.0.1:{port}" in result.output
    assert "scaleout server start" in result.output


def test_http_error_prints_the_server_message_and_exits_1(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/sessions/nope", status=404, body={"message": "Session with id: nope not found"})
    result = run("session", "get", *at(fake), "-id", "nope")
    assert result.exit_code == 1
    assert "Session with id: nope not found" in result.output and "404" in result.output


def test_unauthorized_hints_at_the_token_option(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/models/", status=401, body={"message": "Missing token"})
    result = run("model", "list", *at(fake))
    assert result.exit_code == 1
    assert "Missing token" in result.output and "--token" in result.output


def test_get_commands_require_an_id(fake: FakeController) -> None:
    result = run("round", "get", *at(fake))
    assert result.exit_code == 2
    assert "-id" in result.output
    assert fake.requests == []


# -- small parsers ------------------------------------------------------------------------------------------
def test_json_object_parser_accepts_objects_and_explains_everything_else() -> None:
    assert parse_json_object('{"lr": 0.1}', "--x") == {"lr": 0.1}
    assert parse_json_object(None, "--x") == {}
    with pytest.raises(click.BadParameter, match="not valid JSON"):
        parse_json_object("{lr: 0.1}", "--x")
    with pytest.raises(click.BadParameter, match="expected a JSON object"):
        parse_json_object("[1, 2]", "--x")


def test_client_id_lists_are_comma_separated() -> None:
    assert parse_id_list(" a, b,,c ") == ["a", "b", "c"]
    assert parse_id_list("") is None
