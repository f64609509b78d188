"""APIClient against a tiny real HTTP server: URLs, auth, the multi-step calls, and reply passing."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scaleoututil.api import APIClient
from tests.unit.test_api_client_support import FakeController, Recorded, upload_routes


@pytest.fixture(autouse=True)
def _no_env_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCALEOUT_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("SCALEOUT_AUTH_SCHEME", raising=False)


def client_for(fake: FakeController, **kwargs: object) -> APIClient:
    return APIClient(fake.url, **kwargs)  # type: ignore[arg-type]


# -- construction -------------------------------------------------------------------------------------------
def test_url_host_keeps_scheme_and_port_and_drops_the_path() -> None:
    client = APIClient("https://example.com:8443/api/v1")
    assert (client.host, client.port, client.secure) == ("example.com", 8443, True)
    assert client._get_url_api_v1("models/") == "https://example.com:8443/api/v1/models/"


def test_port_argument_wins_over_the_url_port() -> None:
    assert APIClient("http://example.com:1234", port=9000).base_url == "http://example.com:9000"


def test_localhost_defaults_to_plain_http_on_the_server_port() -> None:
    assert APIClient("localhost").base_url == "http://localhost:8092"
    assert APIClient("127.0.0.1", 8092).base_url == "http://127.0.0.1:8092"


def test_remote_host_defaults_to_https_and_443_means_secure() -> None:
    assert APIClient("example.com").base_url == "https://example.com:443"
    assert APIClient("10.0.0.5", 443).secure is True
    assert APIClient("10.0.0.5", 8092).base_url == "http://10.0.0.5:8092"


# -- auth ---------------------------------------------------------------------------------------------------
def test_no_authorization_header_without_a_token(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/clients/", body={"count": 0, "result": []})
    client_for(fake).get_clients()
    assert fake.requests[0].header("Authorization") is None


def test_token_from_environment_is_sent_as_bearer(fake: FakeController, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOUT_AUTH_TOKEN", "env-token")
    fake.on("GET", "/api/v1/clients/", body={"count": 0, "result": []})
    client_for(fake).get_clients()
    assert fake.requests[0].header("Authorization") == "Bearer env-token"


def test_token_argument_wins_and_a_scheme_prefix_is_cleaned(fake: FakeController,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOUT_AUTH_TOKEN", "env-token")
    fake.on("GET", "/api/v1/clients/", body={"count": 0, "result": []})
    client_for(fake, token="Bearer arg-token", auth_scheme="Token").get_clients()
    assert fake.requests[0].header("Authorization") == "Token arg-token"


# -- plain calls --------------------------------------------------------------------------------------------
def test_list_sends_n_max_as_x_limit_and_filters_as_query(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/validations/", body={"count": 1, "result": [{"validation_id": "v"}]})
    body = client_for(fake).get_validations(session_id="s1", sender_name="alice", n_max=7)
    assert body == {"count": 1, "result": [{"validation_id": "v"}]}
    request = fake.requests[0]
    assert request.header("X-Limit") == "7"
    assert request.query == {"session_id": "s1", "sender.name": "alice"}


def test_error_bodies_are_returned_like_the_official_client(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/models/nope", status=404, body={"message": "Model with id: nope not found"})
    assert client_for(fake).get_model("nope") == {"message": "Model with id: nope not found"}


def test_controller_status_is_at_the_root_not_under_api_v1(fake: FakeController) -> None:
    fake.on("GET", "/get_controller_status", body={"state": "idle"})
    assert client_for(fake).get_controller_status() == {"state": "idle"}


def test_active_model_is_the_newest_by_committed_at(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/models/", body={"count": 3, "result": [{"model_id": "m3"}]})
    assert client_for(fake).get_active_model() == {"model_id": "m3"}
    request = fake.requests[0]
    assert (request.header("X-Limit"), request.header("X-Sort-Key"), request.header("X-Sort-Order")) == (
        "1", "committed_at", "desc")


def test_model_trail_asks_for_ancestors_of_the_active_model(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/models/", body={"count": 2, "result": [{"model_id": "m2"}]})
    fake.on("GET", "/api/v1/models/count", body=2)
    fake.on("GET", "/api/v1/models/m2/ancestors", body=[{"model_id": "m1"}, {"model_id": "m2"}])
    trail = client_for(fake).get_model_trail()
    assert [m["model_id"] for m in trail] == ["m1", "m2"]
    request = fake.find("GET", "/api/v1/models/m2/ancestors")[0]
    assert request.query == {"include_self": "true"}
    assert (request.header("X-Reverse"), request.header("X-Limit")) == ("true", "2")


def test_download_model_writes_the_bytes(fake: FakeController, tmp_path: Path) -> None:
    fake.on("GET", "/api/v1/models/m1/download", body=b"PK-model-bytes")
    target = tmp_path / "sub" / "m1.zip"
    assert client_for(fake).download_model("m1", target)["success"] is True
    assert target.read_bytes() == b"PK-model-bytes"
    assert client_for(fake).download_model("other", tmp_path / "x.zip") == {
        "success": False, "message": "Failed to download model."}


# -- multi-step calls ---------------------------------------------------------------------------------------
def test_set_active_model_sets_the_helper_uploads_in_chunks_and_posts_the_token(fake: FakeController,
                                                                                tmp_path: Path) -> None:
    seed = tmp_path / "seed.npz"
    seed.write_bytes(b"\x00" * 1000)
    state = upload_routes(fake, token="ft-9")
    fake.on("PUT", "/api/v1/helpers/active", body={"helper": "numpyhelper"})
    fake.on("POST", "/api/v1/models/", body={"success": True, "model_id": "new-model"})

    reply = client_for(fake).set_active_model(seed)

    assert reply == {"success": True, "model_id": "new-model"}
    assert fake.requests[0].method == "PUT" and fake.requests[0].json() == {"helper": "numpyhelper"}
    assert state["chunks"][0] == seed.read_bytes()
    assert fake.find("POST", "/api/v1/models/")[0].form() == {"helper": "numpyhelper", "file_token": "ft-9"}


def test_set_active_model_refuses_unknown_extensions_before_any_request(fake: FakeController,
                                                                        tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.npz \(numpyhelper\), \.bin \(binaryhelper\)"):
        client_for(fake).set_active_model(model)
    assert fake.requests == []


def test_set_active_package_uploads_and_posts_the_form(fake: FakeController, tmp_path: Path) -> None:
    archive = tmp_path / "package.tgz"
    archive.write_bytes(b"tgz")
    upload_routes(fake, token="ft-pkg")
    fake.on("POST", "/api/v1/packages/", body={"package_id": "p1"})
    assert client_for(fake).set_active_package(archive, "numpyhelper", "v1", "first") == {"package_id": "p1"}
    assert fake.find("POST", "/api/v1/packages/")[0].form() == {
        "helper": "numpyhelper", "name": "v1", "description": "first", "file_token": "ft-pkg",
        "file_name": "package.tgz"}


def test_start_session_creates_then_starts_with_the_newest_model_and_active_helper(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/models/", body={"count": 1, "result": [{"model_id": "seed"}]})
    fake.on("GET", "/api/v1/helpers/active", body="binaryhelper")
    fake.on("POST", "/api/v1/sessions/", status=201, body={"session_id": "s-1"})
    fake.on("POST", "/api/v1/sessions/start", body={"message": "Session started"})

    reply = client_for(fake).start_session(name="demo", rounds=3, round_timeout=60, min_clients=2,
                                           aggregator_kwargs={"lr": 0.1})

    assert reply == {"message": "Session started", "session_id": "s-1"}
    created = fake.find("POST", "/api/v1/sessions/")[0].json()
    assert created["name"] == "demo" and created["seed_model_id"] == "seed"
    assert created["session_config"] == {
        "aggregator": "fedavg", "aggregator_kwargs": {"lr": 0.1}, "rounds": 3, "round_timeout": 60,
        "buffer_size": -1, "model_id": "seed", "delete_models_storage": True, "clients_required": 2,
        "requested_clients": 8, "validate": True, "helper_type": "binaryhelper", "server_functions": None}
    assert fake.find("POST", "/api/v1/sessions/start")[0].json() == {
        "session_id": "s-1", "rounds": 3, "round_timeout": 60}


def test_start_session_without_models_says_so(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/models/", body={"count": 0, "result": []})
    assert client_for(fake).start_session() == {"message": "No models found in the repository"}


def test_start_session_returns_the_create_error_and_does_not_start(fake: FakeController) -> None:
    fake.on("POST", "/api/v1/sessions/", status=400, body={"message": "Unknown aggregator 'nope'"})
    reply = client_for(fake).start_session(model_id="m", helper="numpyhelper", aggregator="nope")
    assert reply == {"message": "Unknown aggregator 'nope'"}
    assert fake.find("POST", "/api/v1/sessions/start") == []


def test_wait_for_session_polls_until_a_final_status(fake: FakeController) -> None:
    statuses = iter(["Running", "Running", "Finished"])
    fake.on("GET", "/api/v1/sessions/s1", handler=lambda _r: (200, {"session_id": "s1", "status": next(statuses)}))
    session = client_for(fake).wait_for_session("s1", timeout=10, poll_interval=0.01)
    assert session["status"] == "Finished"
    assert len(fake.requests) == 3


def test_wait_for_session_times_out(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/sessions/s1", body={"session_id": "s1", "status": "Running"})
    with pytest.raises(TimeoutError, match="still Running"):
        client_for(fake).wait_for_session("s1", timeout=0.2, poll_interval=0.05)


def test_session_is_finished_reads_the_status_case_insensitively(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/sessions/s1", body={"session_id": "s1", "status": "finished"})
    fake.on("GET", "/api/v1/sessions/s2", body={"session_id": "s2", "status": "Running"})
    assert client_for(fake).session_is_finished("s1") is True
    assert client_for(fake).session_is_finished("s2") is False


def test_run_custom_command_prefixes_the_type_and_sends_the_documented_body(fake: FakeController) -> None:
    answer = {"command_id": "c1", "status": "Finished",
              "results": [{"client_id": "a", "client_name": "alice", "status": "COMPLETED", "response": {"ok": 1}}]}
    fake.on("POST", "/api/v1/control/run_command", body=answer)
    reply = client_for(fake).run_custom_command("ping", blocking=True, timeout=5, client_ids=["a"],
                                                parameters={"x": 1})
    assert reply == answer
    assert fake.requests[0].json() == {"command_type": "Custom_ping", "parameters": {"x": 1}, "client_ids": ["a"],
                                       "timeout": 5, "synchronous": True}


def test_run_custom_command_failure_is_a_success_false_dict(fake: FakeController) -> None:
    fake.on("POST", "/api/v1/control/run_command", status=503, body={"message": "no clients online"})
    assert client_for(fake).run_custom_command("Custom_ping") == {"success": False, "message": "no clients online"}


def test_start_predictions_generates_an_id_and_sends_parameters(fake: FakeController) -> None:
    def echo(req: Recorded) -> tuple[int, object]:
        return 200, {"command_id": "c", "prediction_id": req.json()["prediction_id"]}

    fake.on("POST", "/api/v1/predictions/start", handler=echo)
    reply = client_for(fake).start_predictions(model_id="m1", parameters={"n": 2}, synchronous=True, timeout=3)
    body = fake.requests[0].json()
    assert body["model_id"] == "m1" and body["parameters"] == {"n": 2} and body["synchronous"] is True
    assert reply["prediction_id"] == body["prediction_id"] and len(body["prediction_id"]) == 36


def test_requests_go_to_the_configured_host(fake: FakeController) -> None:
    fake.on("GET", "/api/v1/combiners/", body={"count": 0, "result": []})
    port = urlsplit(fake.url).port
    client = APIClient("127.0.0.1", port=port)
    assert client.get_combiners(n_max=2) == {"count": 0, "result": []}
