"""Limits: token buckets per client on the combiner's RPCs and on REST registration, and request bodies
over their route's size limit refused before they are read (413 naming the limit and its setting)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient

from scaleout.client.connection import ClientIdentity, CombinerError, Connection, GrpcTarget
from scaleout_server.controller.app_factory import build_controller_app
from scaleout_server.ratelimit import RateLimiter
from scaleout_server.settings import ServerSettings, load_settings
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.model import ScaleoutModel
from tests.conftest import free_port
from tests.unit.test_combiner_support import Harness, SimClient, running_harness
from tests.unit.uvicorn_thread import serving

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- token buckets -----------------------------------------------------------------------------------------
def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.allow("a") and not limiter.allow("a")
    clock.now += 10  # refills up to the burst, not beyond
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]


def test_buckets_are_per_key_and_rate_zero_is_unlimited() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=FakeClock())
    assert limiter.allow("a") and not limiter.allow("a")
    assert limiter.allow("b")
    unlimited = RateLimiter(rate=0, burst=1)
    assert all(unlimited.allow("a") for _ in range(1000))


def test_only_the_most_recent_keys_are_kept() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=2, clock=FakeClock())
    assert limiter.allow("a") and limiter.allow("b") and limiter.allow("c")  # "a" is forgotten
    assert limiter.allow("a")  # back with a full bucket, as an idle key would have
    assert not limiter.allow("c")


def test_limits_are_settings_with_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALEOUT_CLIENT_RATE_LIMIT", "2.5")
    monkeypatch.setenv("SCALEOUT_MAX_CHUNK_BYTES", "65536")
    settings = load_settings()
    assert settings.client_rate_limit == 2.5 and settings.max_chunk_bytes == 65536


# -- combiner RPCs -----------------------------------------------------------------------------------------
@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Harness]:
    with running_harness(tmp_path, client_rate_limit=1.0, client_rate_burst=3) as harness:
        yield harness


def heartbeat(client: SimClient) -> pb.Response:
    return client.stub.SendHeartbeat(pb.Heartbeat(client_id=client.client_id), metadata=client.metadata, timeout=5)


def test_client_over_its_rate_is_refused_and_others_are_not(limited: Harness) -> None:
    noisy, quiet = SimClient(limited.port, "noisy"), SimClient(limited.port, "quiet")
    try:
        for _ in range(3):
            heartbeat(noisy)
        with pytest.raises(grpc.RpcError) as err:
            heartbeat(noisy)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "client noisy" in err.value.details() and "client_rate_limit" in err.value.details()
        # a poll is refused with a code the official client retries instead of exiting on
        with pytest.raises(grpc.RpcError) as poll_err:
            noisy.poll(timeout=5)
        assert poll_err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert heartbeat(quiet).response == "heartbeat received"
        time.sleep(1.1)  # one token back
        assert heartbeat(noisy).response == "heartbeat received"
    finally:
        noisy.channel.close()
        quiet.channel.close()


def test_the_controllers_control_calls_are_not_limited(limited: Harness) -> None:
    for _ in range(10):
        limited.control.ListActiveClients(pb.ClientListRequest(), timeout=5)


# -- REST registration -------------------------------------------------------------------------------------
@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    settings = ServerSettings(data_dir=tmp_path, registration_rate_limit=0.5, registration_burst=2,
                              max_package_bytes=10_000, max_model_bytes=20_000, max_upload_bytes=1_000_000)
    app, controller = build_controller_app(settings)
    try:
        with TestClient(app) as client:
            yield client
    finally:
        controller.close()


def register(api: TestClient, client_id: str) -> requests.Response:
    return api.post("/api/v1/clients/add", json={"client_id": client_id, "name": client_id, "package": "local"})


def test_registration_over_the_rate_is_a_429_with_retry_after(api: TestClient) -> None:
    first = [register(api, "c1").status_code for _ in range(2)]
    assert 429 not in first  # no combiner yet: refused for that reason, but not rate-limited
    limited = register(api, "c1")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert "registration_rate_limit" in limited.json()["message"]
    assert register(api, "c2").status_code != 429


# -- request bodies ----------------------------------------------------------------------------------------
def test_package_upload_over_max_package_bytes_is_413_naming_the_setting(api: TestClient) -> None:
    reply = api.post("/api/v1/packages/", files={"file": ("package.tgz", b"x" * 200_000)}, data={"name": "big"})
    assert reply.status_code == 413
    assert "max_package_bytes" in reply.json()["message"] and "10000" in reply.json()["message"]


def test_model_upload_over_max_model_bytes_is_413_naming_the_setting(api: TestClient) -> None:
    reply = api.post("/api/v1/models/", files={"file": ("seed.npz", b"x" * 200_000)}, data={"helper": "numpyhelper"})
    assert reply.status_code == 413
    assert "max_model_bytes" in reply.json()["message"]


@pytest.fixture
def socket_api(tmp_path: Path) -> Iterator[int]:
    settings = ServerSettings(host="127.0.0.1", api_port=free_port(), data_dir=tmp_path, max_package_bytes=10_000)
    app, controller = build_controller_app(settings)
    try:
        with serving(app, settings.api_port):
            yield settings.api_port
    finally:
        controller.close()


def test_oversized_declared_body_is_refused_before_it_is_sent(socket_api: int) -> None:
    with socket.create_connection(("127.0.0.1", socket_api), timeout=5) as conn:
        conn.sendall(b"POST /api/v1/packages/ HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 1000000000\r\n\r\n")  # headers only: the body never comes
        answer = b""
        while b"max_package_bytes" not in answer and (piece := conn.recv(65536)):
            answer += piece
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"max_package_bytes" in answer


def test_oversized_chunked_body_is_refused_once_it_passes_the_limit(socket_api: int) -> None:
    sent = 0

    def body() -> Iterator[bytes]:  # a well-formed multipart file part that just keeps going
        nonlocal sent
        yield (b'--b\r\nContent-Disposition: form-data; name="file"; filename="p.tgz"\r\n'
               b"Content-Type: application/octet-stream\r\n\r\n")
        for _ in range(100):
            sent += 1
            yield b"x" * 4096

    reply = requests.post(f"http://127.0.0.1:{socket_api}/api/v1/packages/", data=body(),
                          headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=10)
    assert reply.status_code == 413
    assert "max_package_bytes" in reply.json()["message"]


def test_our_client_fails_an_oversized_upload_at_once_instead_of_retrying(tmp_path: Path) -> None:
    with running_harness(tmp_path, max_model_bytes=1000) as harness:
        connection = Connection(GrpcTarget("127.0.0.1", harness.port), ClientIdentity("big", "big"))
        model = ScaleoutModel.from_model_params([np.random.default_rng(0).random(10_000)], "numpyhelper",
                                                  model_id="big-update")
        started = time.monotonic()
        try:
            with pytest.raises(CombinerError, match="max_model_bytes"):
                connection.upload_model(model)
        finally:
            connection.close()
        assert time.monotonic() - started < 5
