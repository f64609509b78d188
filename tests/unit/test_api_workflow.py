"""Client registration, compute packages and sessions through the REST API, as the official
client and CLI drive them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_api_support import Api, build_api, chunked_upload, npz_bytes, package_bytes


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from build_api(tmp_path)


def _combiner(api: Api, public_hostname: str | None = None) -> str:
    body = {"name": "combiner", "host": "10.1.2.3", "port": 12080}
    if public_hostname:
        body["public_hostname"] = public_hostname
    res = api.client.post("/api/v1/combiners/", json=body)
    assert res.status_code == 200, res.text
    assert "repository" in res.json()
    return res.json()["combiner_id"]


def _seed(api: Api) -> str:
    res = api.client.post("/api/v1/models/", data={"helper": "numpyhelper"},
                          files={"file": ("seed.npz", npz_bytes(4), "application/octet-stream")})
    assert res.status_code == 200, res.text
    return res.json()["model_id"]


def _package_via_cli_upload(api: Api, data: bytes, file_name: str = "package.tgz", name: str = "mnist") -> dict:
    token = chunked_upload(api.client, data, file_name, chunk_size=512)
    res = api.client.post("/api/v1/packages/", data={"helper": "numpyhelper", "name": name, "description": "d",
                                                     "file_token": token, "file_name": file_name})
    assert res.status_code == 200, res.text
    return res.json()


# -- clients/add -----------------------------------------------------------------------------

ADD = {"name": "tc1", "client_id": "cid-1", "preferred_combiner": None, "package": "local", "client_version": "1.1.0"}


def test_clients_add_answers_what_the_official_client_needs(api: Api) -> None:
    combiner_id = _combiner(api, public_hostname="edge.example.org:9999")
    res = api.client.post("/api/v1/clients/add", json=ADD, headers={"Authorization": "Bearer None"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["client_id"] == "cid-1"
    assert body["public_hostname"] == "edge.example.org"  # host only, never host:port
    assert body["internal_hostname"] == "10.1.2.3"
    assert body["port"] == 12080 and isinstance(body["port"], int)
    assert body["grpc_secure"] is False
    assert body["helper_type"] == "numpyhelper"
    assert body["combiner_id"] == combiner_id
    assert api.client.get("/api/v1/clients/cid-1").json()["combiner"] == combiner_id


def test_clients_add_remote_without_active_package_is_203_with_instructions(api: Api) -> None:
    _combiner(api)
    res = api.client.post("/api/v1/clients/add", json={**ADD, "package": "remote"})
    assert res.status_code == 203
    assert "scaleout package set-active" in res.json()["message"]


def test_clients_add_without_combiner_is_503(api: Api) -> None:
    res = api.client.post("/api/v1/clients/add", json=ADD)
    assert res.status_code == 503
    assert res.json()["message"]


def test_clients_add_rejects_unknown_package_mode(api: Api) -> None:
    _combiner(api)
    res = api.client.post("/api/v1/clients/add", json={**ADD, "package": "elsewhere"})
    assert res.status_code == 400
    assert "local" in res.json()["message"]


def test_combiner_registration_without_slash_and_event_feed(api: Api) -> None:
    res = api.client.post("/api/v1/combiners", json={"name": "c2", "host": "h", "port": 1})
    assert res.status_code == 200
    combiner_id = res.json()["combiner_id"]
    events = [{"kind": "client_seen", "data": {"client_id": "x1", "name": "x", "status": "online"}}]
    res = api.client.post(f"/api/v1/combiners/{combiner_id}/events", json={"events": events})
    assert res.status_code == 200
    assert res.json()["stored"] >= 1
    assert api.client.get("/api/v1/clients/x1").json()["status"] == "online"


# -- packages --------------------------------------------------------------------------------

def test_package_upload_activates_and_serves_download_and_checksum(api: Api) -> None:
    data = package_bytes()
    body = _package_via_cli_upload(api, data)
    assert body["message"] == "Package uploaded"
    package_id = body["package_id"]
    assert api.client.get("/api/v1/packages/active").json()["package_id"] == package_id

    download = api.client.get("/api/v1/packages/download")
    assert download.status_code == 200
    assert download.headers["content-disposition"] == "attachment; filename=package.tgz"
    assert download.content == data

    # the official client asks for the checksum by the downloaded *file* name
    checksum = api.client.get("/api/v1/packages/checksum", params={"name": "package.tgz"})
    assert checksum.json()["checksum"] == hashlib.sha256(data).hexdigest()
    assert api.client.get("/api/v1/packages/checksum").json()["checksum"] == hashlib.sha256(data).hexdigest()
    by_name = api.client.get("/api/v1/packages/download", params={"name": "mnist"})
    assert by_name.content == data


def test_clients_add_remote_succeeds_once_a_package_is_active(api: Api) -> None:
    _combiner(api)
    _package_via_cli_upload(api, package_bytes())
    res = api.client.post("/api/v1/clients/add", json={**ADD, "package": "remote"})
    assert res.status_code == 200


def test_package_multipart_upload_like_the_apiclient(api: Api) -> None:
    res = api.client.post("/api/v1/packages", data={"helper": "numpyhelper", "name": "p", "description": ""},
                          files={"file": ("my pkg.tgz", package_bytes(), "application/gzip")})
    assert res.status_code == 200, res.text
    download = api.client.get("/api/v1/packages/download")
    assert download.headers["content-disposition"] == "attachment; filename=my_pkg.tgz"


def test_package_without_scaleout_yaml_is_400(api: Api) -> None:
    res = api.client.post("/api/v1/packages/", data={"helper": "numpyhelper", "name": "p"},
                          files={"file": ("p.tgz", package_bytes(with_yaml=False), "application/gzip")})
    assert res.status_code == 400
    assert "scaleout.yaml" in res.json()["message"]


def test_package_download_without_any_package_is_404_with_instructions(api: Api) -> None:
    res = api.client.get("/api/v1/packages/download")
    assert res.status_code == 404
    assert "set-active" in res.json()["message"]
    assert api.client.get("/api/v1/packages/checksum", params={"name": "nope.tgz"}).status_code == 404
    assert api.client.get("/api/v1/packages/active").status_code == 404


def test_set_active_package_by_id(api: Api) -> None:
    first = _package_via_cli_upload(api, package_bytes(), "a.tgz", "a")["package_id"]
    _package_via_cli_upload(api, package_bytes(), "b.tgz", "b")
    assert api.client.get("/api/v1/packages/active").json()["name"] == "b"
    assert api.client.put("/api/v1/packages/active", json={"id": first}).status_code == 200
    assert api.client.get("/api/v1/packages/active").json()["package_id"] == first
    assert api.client.put("/api/v1/packages/active", json={"id": "ghost"}).status_code == 404


# -- sessions --------------------------------------------------------------------------------

def test_session_create_is_201_with_session_id(api: Api) -> None:
    model_id = _seed(api)
    res = api.client.post("/api/v1/sessions/", json={
        "name": "s", "session_config": {"aggregator": "fedavg", "rounds": 2, "round_timeout": 30,
                                        "model_id": model_id, "helper_type": "numpyhelper"}})
    assert res.status_code == 201, res.text
    session_id = res.json()["session_id"]
    assert api.client.get(f"/api/v1/sessions/{session_id}").json()["status"] == "Created"
    assert api.client.get("/api/v1/sessions/", params={"name": "s"}).json()["count"] == 1


def test_session_create_unknown_aggregator_is_400(api: Api) -> None:
    _seed(api)
    res = api.client.post("/api/v1/sessions/", json={"session_config": {"aggregator": "magic"}})
    assert res.status_code == 400
    assert "magic" in res.json()["message"] and "fedavg" in res.json()["message"]


def test_session_create_negative_rounds_is_400(api: Api) -> None:
    _seed(api)
    res = api.client.post("/api/v1/sessions", json={"session_config": {"rounds": -3}})
    assert res.status_code == 400
    assert "rounds" in res.json()["message"]


def test_session_create_with_unknown_model_is_404(api: Api) -> None:
    res = api.client.post("/api/v1/sessions/", json={"session_config": {"model_id": "ghost"}})
    assert res.status_code == 404
    assert "ghost" in res.json()["message"]


def test_session_start_unknown_id_is_404(api: Api) -> None:
    res = api.client.post("/api/v1/sessions/start", json={"session_id": "ghost"})
    assert res.status_code == 404
    assert res.json()["message"]


def test_session_patch_only_accepts_stop(api: Api) -> None:
    res = api.client.patch("/api/v1/sessions/any", json={"status": "Running"})
    assert res.status_code == 400
    assert "Stopped" in res.json()["message"]


def test_controller_status(api: Api) -> None:
    res = api.client.get("/get_controller_status")
    assert res.status_code == 200
    assert res.json()["state"] == "idle"


def test_run_command_without_clients_is_400(api: Api) -> None:
    res = api.client.post("/api/v1/control/run_command", json={"command_type": "hello", "blocking": True,
                                                              "timeout": 1, "extra": 5})
    assert res.status_code == 400
    assert res.json()["message"]


def test_run_command_moves_top_level_extras_into_parameters(api: Api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The official APIClient merges its parameters into the body's top level; the route must
    # hand them to the controller as parameters. The controller call itself is recorded here.
    from scaleout_server.store import records as r

    calls: list[tuple] = []

    def record_call(*args: object) -> r.CommandRecord:
        calls.append(args)
        return r.CommandRecord(command_id="cmd", command_type=str(args[0]), status="Finished", results=[{"ok": 1}])

    monkeypatch.setattr(api.controller, "run_command", record_call)
    res = api.client.post("/api/v1/control/run_command", json={
        "command_type": "hello", "blocking": True, "timeout": 5, "client_ids": "a, b", "lr": 0.1,
        "parameters": {"epochs": 2}})
    assert res.status_code == 200, res.text
    assert calls == [("Custom_hello", {"epochs": 2, "lr": 0.1}, ["a", "b"], 5.0, True)]
    body = res.json()
    assert body["command_id"] == "cmd" and body["status"] == "Finished" and body["results"] == [{"ok": 1}]


def test_stop_without_running_session_says_so(api: Api) -> None:
    res = api.client.post("/api/v1/control/stop")
    assert 400 <= res.status_code < 500
    assert res.json()["message"]
