"""Registration, token exchange and package download against a tiny real HTTP controller."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scaleout.client.registration import (
    RegistrationError,
    RegistrationRefused,
    ServerUnavailable,
    StartupInterrupted,
    TokenManager,
    TokenRefused,
    api_base_url,
    fetch_package,
    register_client,
)
from tests.unit.test_client_fakes import (
    FakeController,
    HttpReply,
    assignment,
    package_bytes,
    running_controller,
    write_project,
)

BODY = {"name": "site-a", "client_id": "cid-1", "preferred_combiner": None, "package": "local",
        "client_version": "1.1.0"}
ADD = "POST /api/v1/clients/add"


def test_registration_returns_the_assigned_combiner_and_sends_the_body() -> None:
    fake = FakeController({ADD: [assignment(12080, client_id="server-id")]})
    with running_controller(fake) as url:
        result = register_client(url, dict(BODY))
    assert (result.client_id, result.host, result.port, result.grpc_secure) == ("server-id", "127.0.0.1", 12080, False)
    [(_, _, headers, body)] = fake.calls(ADD)
    assert json.loads(body) == BODY
    assert "Authorization" not in headers


def test_registration_falls_back_to_the_internal_hostname() -> None:
    reply = HttpReply(200, {"client_id": "c", "public_hostname": "", "internal_hostname": "combiner-0", "port": 1})
    with running_controller(FakeController({ADD: [reply]})) as url:
        result = register_client(url, dict(BODY))
    assert (result.host, result.grpc_secure) == ("combiner-0", None)


def test_registration_waits_while_the_server_answers_203() -> None:
    fake = FakeController({ADD: [HttpReply(203, {"message": "no compute package"}),
                                 HttpReply(203, {"message": "no compute package"}), assignment(5)]})
    with running_controller(fake) as url:
        result = register_client(url, dict(BODY), package_missing_interval=0.05)
    assert result.port == 5 and len(fake.calls(ADD)) == 3


@pytest.mark.parametrize(("status", "expected"), [
    (400, r"refused the registration \(400\): client name taken"),
    (401, "pass a valid --token"),
    (404, "is --api-url the controller's address"),
    (201, "unexpected HTTP 201"),
])
def test_registration_stops_with_the_servers_message_on_client_errors(status: int, expected: str) -> None:
    fake = FakeController({ADD: [HttpReply(status, {"message": "client name taken"})]})
    with running_controller(fake) as url, pytest.raises(RegistrationError, match=expected):
        register_client(url, dict(BODY))
    assert len(fake.calls(ADD)) == 1


def test_registration_retries_server_errors_then_succeeds() -> None:
    fake = FakeController({ADD: [HttpReply(503, {"message": "starting"}), assignment(7)]})
    with running_controller(fake) as url:
        assert register_client(url, dict(BODY)).port == 7


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens here once the socket closes


def test_registration_waits_for_a_controller_that_is_down_and_logs_one_line_per_group(
        caplog: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(register_client(f"http://127.0.0.1:{port}", dict(BODY))),
                              daemon=True)
    with caplog.at_level(logging.INFO, logger="scaleout.client.registration"):
        thread.start()
        time.sleep(4.0)  # longer than a few back-off steps (1, 2 s...): several refused attempts
        assert thread.is_alive() and not result
        with running_controller(FakeController({ADD: [assignment(11)]}), port=port):
            thread.join(timeout=20)
    assert result and result[0].port == 11
    lines = [r.getMessage() for r in caplog.records if r.name == "scaleout.client.registration"]
    assert len(lines) == 2, lines  # the first refusal and the recovery, not one line per attempt
    assert "not reachable" in lines[0] and "connection refused" in lines[0] and "until it answers" in lines[0]
    assert "succeeded after" in lines[1]


def test_stopping_the_client_ends_the_wait_for_a_dead_controller() -> None:
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    with pytest.raises(StartupInterrupted):
        register_client(f"http://127.0.0.1:{closed_port()}", dict(BODY), stop=stop)
    assert time.monotonic() - started < 3


def test_failover_registration_stops_trying_once_the_old_combiner_is_back() -> None:
    back = threading.Event()
    threading.Timer(1.0, back.set).start()
    with pytest.raises(ServerUnavailable, match="not reachable"):
        register_client(f"http://127.0.0.1:{closed_port()}", dict(BODY), give_up=back.is_set)


@pytest.mark.parametrize(("status", "kind", "code"), [
    (401, TokenRefused, 3), (403, RegistrationRefused, 4), (404, RegistrationRefused, 4),
])
def test_answers_that_cannot_succeed_stop_registration_with_their_exit_code(status: int, kind: type, code: int
                                                                             ) -> None:
    fake = FakeController({ADD: [HttpReply(status, {"message": "no"})]})
    with running_controller(fake) as url, pytest.raises(kind) as err:
        register_client(url, dict(BODY))
    assert err.value.exit_code == code and len(fake.calls(ADD)) == 1


def jwt(exp: float) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'exp': exp, 'sub': 'cid-1'})}.sig"


def test_token_is_exchanged_and_sent_as_bearer_on_registration() -> None:
    access = jwt(time.time() + 3600)
    fake = FakeController({"POST /api/auth/refresh": [HttpReply(200, {"access_token": access})],
                           ADD: [assignment(9)]})
    with running_controller(fake) as url:
        token = TokenManager(url, "refresh-1")
        register_client(url, dict(BODY), token=token)
        register_client(url, dict(BODY), token=token)
    [(_, _, _, body)] = fake.calls("POST /api/auth/refresh")  # one exchange: the token is still fresh
    assert json.loads(body) == {"refresh_token": "refresh-1", "role": "client"}
    assert all(headers["Authorization"] == f"Bearer {access}" for _, _, headers, _ in fake.calls(ADD))


def test_token_close_to_expiry_is_refreshed_with_the_rotated_refresh_token() -> None:
    fake = FakeController({"POST /api/auth/refresh": [
        HttpReply(200, {"access_token": "opaque-1", "refresh_token": "refresh-2", "expires_in": 5}),
        HttpReply(200, {"access_token": "opaque-2", "expires_in": 3600})]})
    with running_controller(fake) as url:
        token = TokenManager(url, "refresh-1")
        assert token.access_token() == "opaque-1"
        assert token.access_token() == "opaque-2"  # 5 s left < 30 s margin
        assert token.access_token() == "opaque-2"
    sent = [json.loads(body)["refresh_token"] for *_, body in fake.calls("POST /api/auth/refresh")]
    assert sent == ["refresh-1", "refresh-2"]


def test_refused_token_is_reported_clearly() -> None:
    fake = FakeController({"POST /api/auth/refresh": [HttpReply(401, {"message": "token revoked"})]})
    with running_controller(fake) as url, pytest.raises(RegistrationError, match="refused the token.*token revoked"):
        TokenManager(url, "bad").access_token()


def test_a_refused_refresh_is_permanent_but_a_server_error_keeps_the_current_token() -> None:
    fake = FakeController({"POST /api/auth/refresh": [
        HttpReply(200, {"access_token": "opaque-1", "expires_in": 20}),  # inside the 30 s refresh margin
        HttpReply(503, {"message": "token service restarting"}),
        HttpReply(401, {"message": "token revoked"})]})
    with running_controller(fake) as url:
        token = TokenManager(url, "refresh-1")
        assert token.access_token() == "opaque-1"
        assert token.access_token() == "opaque-1"  # 503: transient, the current token still works
        token._next_attempt = 0.0  # skip the cool-down before the next refresh attempt
        with pytest.raises(TokenRefused, match="token revoked"):
            token.access_token()


def test_api_url_gets_a_scheme_and_port() -> None:
    assert api_base_url("localhost:8092") == "http://localhost:8092"
    assert api_base_url("edge.example.com") == "https://edge.example.com"
    assert api_base_url("http://10.0.0.5/", 8092) == "http://10.0.0.5:8092"
    with pytest.raises(RegistrationError):
        api_base_url("ftp://x")


def test_api_url_without_scheme_uses_http_for_ipv6_localhost() -> None:
    assert api_base_url("[::1]:8092") == "http://[::1]:8092"
    assert api_base_url("127.0.0.1:8092/prefix") == "http://127.0.0.1:8092/prefix"


# -- compute package ---------------------------------------------------------------------------------
def package_routes(archive: bytes, checksum: str) -> dict[str, list[HttpReply]]:
    return {
        "GET /api/v1/packages/checksum": [HttpReply(200, {"checksum": checksum})],
        "GET /api/v1/packages/download": [HttpReply(200, archive, {
            "Content-Type": "application/octet-stream", "Content-Disposition": "attachment; filename=package.tgz"})],
    }


def test_remote_package_is_verified_unpacked_and_reused(tmp_path: Path) -> None:
    archive = package_bytes(write_project(tmp_path / "src"))
    checksum = hashlib.sha256(archive).hexdigest()
    fake = FakeController(package_routes(archive, checksum))
    work = tmp_path / "work"
    with running_controller(fake) as url:
        project = fetch_package(url, work).folder
        again = fetch_package(url, work).folder
    assert project == again == work / ".scaleout" / "packages" / checksum
    assert (project / "startup.py").is_file()
    assert len(fake.calls("GET /api/v1/packages/download")) == 1
    checksum_queries = [path for _, path, _, _ in fake.calls("GET /api/v1/packages/checksum")]
    assert "/api/v1/packages/checksum?name=package.tgz" in checksum_queries


def test_package_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    archive = package_bytes(write_project(tmp_path / "src"))
    fake = FakeController(package_routes(archive, "ab" * 32))
    with running_controller(fake) as url, pytest.raises(RegistrationError, match="corrupt or was tampered"):
        fetch_package(url, tmp_path / "work")
    assert not (tmp_path / "work" / ".scaleout" / "packages").exists() or not any(
        (tmp_path / "work" / ".scaleout" / "packages").iterdir())


def test_missing_package_says_how_to_provide_one(tmp_path: Path) -> None:
    fake = FakeController({"GET /api/v1/packages/download": [HttpReply(404, {"message": "no active package"})]})
    with running_controller(fake) as url, pytest.raises(RegistrationError, match="--local-package"):
        fetch_package(url, tmp_path)


def test_named_package_is_requested_by_name(tmp_path: Path) -> None:
    archive = package_bytes(write_project(tmp_path / "src"))
    fake = FakeController(package_routes(archive, hashlib.sha256(archive).hexdigest()))
    with running_controller(fake) as url:
        fetch_package(url, tmp_path / "work", name="v2")
    [(_, path, _, _)] = fake.calls("GET /api/v1/packages/download")
    assert path.endswith("?name=v2")


def test_a_download_that_breaks_off_leaves_no_partial_file(tmp_path: Path) -> None:
    class Truncating(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the base class's naming
            if not self.path.startswith("/api/v1/packages/download"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Disposition", "attachment; filename=package.tgz")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)  # then the connection closes: 99 kB missing

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Truncating)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with pytest.raises(RegistrationError, match="package download .* failed"):
            fetch_package(f"http://127.0.0.1:{server.server_address[1]}", tmp_path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert list((tmp_path / ".scaleout" / "package_archive").iterdir()) == []
