"""Authentication modes and the pieces around the token checks: local mode's loopback rule, token admin
with auth off, our client's token kinds, and a combiner that learns from its controller to check tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from scaleout.cli.main import cli
from scaleout.cli.server_cmd import is_loopback
from scaleout.client.registration import TokenManager, TokenRefused
from scaleout_server.api.app import create_app
from scaleout_server.auth import open_authority
from scaleout_server.auth.authority import Authority
from scaleout_server.auth.grpc_gate import GateMode
from scaleout_server.auth.tokens import Role
from scaleout_server.combiner.controller_link import ControllerLink
from scaleout_server.combiner.server import CombinerServer
from scaleout_server.controller.core import Controller
from scaleout_server.repository.local import LocalRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.store.factory import make_store
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
from tests.unit.test_api_support import Api, build_api


@dataclass
class Secured:
    client: TestClient
    authority: Authority
    root: Path


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    store = make_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    controller = Controller(ServerSettings(data_dir=tmp_path / "data"), store, LocalRepository(tmp_path / "repo"))
    authority = open_authority(tmp_path / "data", store)
    with TestClient(create_app(controller, authority), raise_server_exceptions=False) as client:
        yield Secured(client, authority, tmp_path)
    store.close()


@pytest.fixture
def local_api(tmp_path: Path) -> Iterator[Api]:
    yield from build_api(tmp_path)


# -- local mode ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.1.1", True), ("localhost", True),
                                                ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("::", False),
                                                ("10.0.0.5", False), ("edge.example.org", False)])
def test_only_loopback_addresses_count_as_local(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_server_start_without_secure_refuses_a_public_address(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["server", "start", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "--secure" in result.output and "--insecure" in result.output
    assert not (tmp_path / "d").exists()  # refused before anything was created


def test_combiner_without_a_token_refuses_a_public_address(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["combiner", "start", "--controller", "http://127.0.0.1:1", "--host", "0.0.0.0",
                                      "--data-dir", str(tmp_path)], env={"SCALEOUT_COMBINER_TOKEN": ""})
    assert result.exit_code == 2 and "combiner token" in result.output


def test_token_admin_says_auth_is_off_in_local_mode(local_api: Api) -> None:
    res = local_api.client.post("/api/v1/auth/tokens", json={"role": "client"})
    assert res.status_code == 409 and "--secure" in res.json()["message"]
    enrolled = local_api.client.post("/api/v1/clients/enroll", json={"client_id": "d1"},
                                     headers={"Authorization": "Bearer anything"})
    assert enrolled.status_code == 200 and enrolled.json()["client_id"] == "d1"  # handed back, as the exchange


def test_token_admin_routes_create_list_and_revoke(secured: Secured) -> None:
    admin = {"Authorization": f"Bearer {secured.authority.issue(Role.ADMIN).token}"}
    made = secured.client.post("/api/v1/auth/tokens", json={"role": "combiner", "name": "edge-1"}, headers=admin)
    assert made.status_code == 201 and made.json()["subject"] == "edge-1" and made.json()["expires_at"] is None
    bad = secured.client.post("/api/v1/auth/tokens", json={"role": "root"}, headers=admin)
    assert bad.status_code == 400 and "admin, client, combiner" in bad.json()["message"]
    listed = secured.client.get("/api/v1/auth/tokens", headers=admin).json()["result"]
    assert [(t["role"], t["status"]) for t in listed][:1] == [("combiner", "active")]
    token_id = made.json()["token_id"]
    assert secured.client.post(f"/api/v1/auth/tokens/{token_id}/revoke", headers=admin).json()["status"] == "revoked"
    assert secured.client.get("/api/v1/auth/revoked", headers=admin).json() == {"revoked": [token_id]}
    assert secured.client.post("/api/v1/auth/tokens/nope/revoke", headers=admin).status_code == 404
    enrollment = secured.client.post("/api/v1/auth/enrollment-tokens", json={"name": "fleet", "expires_in_hours": 2},
                                     headers=admin)
    assert enrollment.status_code == 200 and {"token", "expires_at"} <= set(enrollment.json())


# -- our client's token kinds ------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")  # TestClient as the session
def test_our_client_exchanges_client_tokens_and_enrolls_with_enrollment_tokens(secured: Secured) -> None:
    authority = secured.authority
    refresh = authority.issue_client(client_id="site-1")
    manager = TokenManager("http://testserver", refresh.token, session=secured.client)  # type: ignore[arg-type]
    assert manager.url.endswith("/api/v1/clients/token")  # a client_refresh token, as the 1.1 client routes it
    assert authority.verify(manager.access_token()).sub == "site-1"

    enrollment = authority.issue(Role.ENROLLMENT, expires_in=3600)
    enrolled = TokenManager("http://testserver", enrollment.token, session=secured.client)  # type: ignore[arg-type]
    first = authority.verify(enrolled.access_token())
    assert first.role is Role.CLIENT and first.sub
    enrolled.refresh()  # later refreshes use the client's own refresh token, not the enrollment token
    assert authority.verify(enrolled.access_token()).sub == first.sub

    with pytest.raises(TokenRefused, match="403"):
        TokenManager("http://testserver", authority.issue(Role.ADMIN).token,  # type: ignore[arg-type]
                     session=secured.client).access_token()


# -- a combiner learns token checks from its controller -----------------------------------------------
def test_combiner_registered_with_a_secured_controller_checks_tokens(secured: Secured, tmp_path: Path) -> None:
    authority = secured.authority
    combiner_token = authority.issue(Role.COMBINER, subject="edge-1").token
    access = str(authority.exchange(authority.issue_client(client_id="site-1").token)["access_token"])
    settings = ServerSettings(data_dir=tmp_path / "combiner", host="127.0.0.1", combiner_port=0,
                              combiner_name="edge-1", controller_url="http://testserver", combiner_token=combiner_token)

    async def scenario() -> list[grpc.StatusCode]:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=secured.client.app),  # type: ignore[arg-type]
                                 base_url="http://testserver")
        link = ControllerLink("http://testserver", client=http, token=combiner_token)
        server = CombinerServer(settings, link=link)
        assert server.auth.mode is GateMode.PENDING
        port = await server.start()
        codes = [server.auth.mode]  # type: ignore[list-item]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.CombinerClientStub(channel)
            for metadata in ([("client-id", "site-1")],
                             [("client-id", "site-1"), ("authorization", f"Bearer {access}")]):
                try:
                    await stub.SendHeartbeat(pb.Heartbeat(client_id="site-1"), metadata=metadata, timeout=5)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
        assert await link.fetch_revoked() == []
        await server.stop(grace=0.5)
        return codes

    assert asyncio.run(scenario()) == [GateMode.ON, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.OK]


def test_combiner_given_a_token_refuses_a_controller_without_authentication(local_api: Api, tmp_path: Path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "combiner", host="127.0.0.1", combiner_port=0,
                              combiner_name="edge-1", controller_url="http://testserver", combiner_token="some-token")

    async def scenario() -> str:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=local_api.client.app),  # type: ignore[arg-type]
                                 base_url="http://testserver")
        server = CombinerServer(settings, link=ControllerLink("http://testserver", client=http, token="some-token"))
        try:
            await server.start()
        except RuntimeError as exc:
            return str(exc)
        await server.stop(grace=0.1)
        return "started"

    assert "runs without authentication" in asyncio.run(scenario())
