"""TLS end to end inside one process: certificates from `scaleout certs create`, the real controller app
served by uvicorn over HTTPS, a real combiner serving gRPC over TLS and registering over HTTPS, and our
client's REST and gRPC code verifying both against the CA file (and failing fast with a clear message
when given another CA)."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest
import requests
from click.testing import CliRunner
from cryptography import x509

from scaleout.cli.main import cli
from scaleout.client.connection import ClientIdentity, CombinerError, Connection
from scaleout.client.registration import Assignment, register_client
from scaleout.client.runtime import grpc_target
from scaleout.client.tls import ClientTrust, UntrustedServer
from scaleout_server.combiner.controller_link import ControllerLink
from scaleout_server.combiner.server import CombinerThread
from scaleout_server.controller.app_factory import build_controller_app
from scaleout_server.controller.core import Controller
from scaleout_server.settings import ServerSettings
from scaleout_server.tls import TlsConfigError, control_channel, http_verify, server_tls, uvicorn_ssl_options
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
from scaleoututil.protocol import AnnounceType
from tests.conftest import free_port
from tests.unit.uvicorn_thread import serving

pytestmark = pytest.mark.timeout(60)


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(out: Path, hosts: str = "127.0.0.1,localhost") -> Certs:
    result = CliRunner().invoke(cli, ["certs", "create", "--out", str(out), "--hosts", hosts])
    assert result.exit_code == 0, result.output
    return Certs(out / "ca.pem", out / "server.pem", out / "server.key")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A second, unrelated CA: what a client holding the wrong file trusts."""
    return make_certs(tmp_path_factory.mktemp("other"))


@dataclass
class Server:
    api_url: str
    controller: Controller
    combiner: CombinerThread
    settings: ServerSettings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Server]:
    """Controller over HTTPS (uvicorn in a thread) and a TLS combiner that registers with it over HTTPS."""
    root = tmp_path_factory.mktemp("server")
    settings = ServerSettings(host="127.0.0.1", api_port=free_port(), combiner_port=0, data_dir=root,
                              combiner_name="tls-combiner", tls_cert=str(certs.cert), tls_key=str(certs.key),
                              tls_ca_file=str(certs.ca))
    app, controller = build_controller_app(settings)
    try:
        with serving(app, settings.api_port, **uvicorn_ssl_options(server_tls(settings))):
            api_url = f"https://127.0.0.1:{settings.api_port}"
            combiner = CombinerThread(replace(settings, controller_url=api_url))  # registers over HTTPS, verified
            combiner.start()
            try:
                yield Server(api_url, controller, combiner, settings)
            finally:
                combiner.stop()
    finally:
        controller.close()


def version_check(connection: Connection, attempts: int = 8) -> dict[str, object]:
    request = pb.ClientAnnounceRequest(client_id=connection.identity.client_id, type=AnnounceType.VERSION_CHECK,
                                       parameters=json.dumps({"client-version": "1.1.0"}))
    response = connection.call("Announce", request, timeout=5.0, max_attempts=attempts)
    return json.loads(response.parameters)


def add_body(client_id: str) -> dict[str, object]:
    return {"name": client_id, "client_id": client_id, "package": "local", "client_version": "1.1.0"}


def test_certs_create_writes_a_ca_and_a_server_certificate_for_the_hosts(certs: Certs) -> None:
    ca = x509.load_pem_x509_certificate(certs.ca.read_bytes())
    leaf = x509.load_pem_x509_certificate(certs.cert.read_bytes())
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    for key in (certs.key, certs.ca.with_name("ca.key")):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_certs_create_keeps_the_ca_and_refuses_to_overwrite_without_the_flag(tmp_path: Path) -> None:
    first = make_certs(tmp_path)
    ca_before = first.ca.read_bytes()
    again = CliRunner().invoke(cli, ["certs", "create", "--out", str(tmp_path)])
    assert again.exit_code != 0 and "--overwrite" in again.output
    result = CliRunner().invoke(cli, ["certs", "create", "--out", str(tmp_path), "--hosts", "edge.example.org",
                                      "--overwrite"])
    assert result.exit_code == 0, result.output
    assert first.ca.read_bytes() == ca_before  # clients holding ca.pem keep trusting the new certificate
    leaf = x509.load_pem_x509_certificate(first.cert.read_bytes())
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_before))


def test_combiner_registers_over_https_and_clients_are_told_to_use_tls(server: Server, certs: Certs) -> None:
    combiners = requests.get(f"{server.api_url}/api/v1/combiners/", verify=str(certs.ca), timeout=10).json()
    assert [c["grpc_secure"] for c in combiners["result"]] == [True]
    reply = requests.post(f"{server.api_url}/api/v1/clients/add", json=add_body("told"), verify=str(certs.ca),
                          timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["grpc_secure"] is True
    assert reply.json()["port"] == server.combiner.port


def test_client_registers_over_https_and_talks_grpc_over_tls_with_the_ca_file(server: Server, certs: Certs) -> None:
    trust = ClientTrust.resolve(str(certs.ca), env={})
    assignment = register_client(server.api_url, add_body("c-tls"), session=trust.session())
    target = grpc_target(assignment, trust.grpc_root_cert_path(env={}))
    assert target.secure and target.port == server.combiner.port
    connection = Connection(target, ClientIdentity(assignment.client_id, "c-tls"))
    try:
        assert version_check(connection)["success"] is True
    finally:
        connection.close()


def test_large_models_move_over_the_byte_path_with_tls_as_well(server: Server, certs: Certs) -> None:
    """The byte path speaks TLS with the combiner's certificate, trusted through the client's CA file."""
    import numpy as np

    from scaleoututil.model import ScaleoutModel

    trust = ClientTrust.resolve(str(certs.ca), env={})
    assignment = register_client(server.api_url, add_body("c-bytes"), session=trust.session())
    connection = Connection(grpc_target(assignment, trust.grpc_root_cert_path(env={})),
                            ClientIdentity(assignment.client_id, "c-bytes"))
    combiner = server.combiner.server
    assert combiner.byte_path is not None and combiner.byte_path.tls is not None
    combiner.byte_path.min_bytes = 0
    model = ScaleoutModel.from_model_params([np.arange(300_000, dtype=np.float32)], "numpyhelper",
                                            model_id="tls-bytes")
    try:
        connection.upload_model(model)
        assert combiner.byte_path.served["upload"] == 1
        combiner.repository.put("models", "tls-bytes", model.get_stream())
        assert connection.download_model("tls-bytes").checksum == model.checksum
        assert combiner.byte_path.served["download"] == 1
        assert connection.byte_path.usable
    finally:
        combiner.byte_path.min_bytes = server.settings.byte_path_min_bytes
        connection.close()


def test_client_with_another_ca_is_refused_at_once_by_the_controller(server: Server, other_ca: Certs) -> None:
    session = ClientTrust.resolve(str(other_ca.ca), env={}).session()
    started = time.monotonic()
    with pytest.raises(UntrustedServer) as err:
        register_client(server.api_url, add_body("c-wrong"), session=session)
    assert time.monotonic() - started < 5  # no retry loop: a wrong CA stays wrong
    message = str(err.value)
    assert "certificate" in message and str(other_ca.ca) in message and "--ca-file" in message


def test_client_without_a_ca_file_does_not_trust_a_dev_certificate(server: Server) -> None:
    session = ClientTrust.resolve(None, env={}).session()
    with pytest.raises(UntrustedServer, match="--ca-file"):
        register_client(server.api_url, add_body("c-none"), session=session)


def test_grpc_with_another_ca_fails_fast_with_a_clear_error(server: Server, other_ca: Certs) -> None:
    assignment = Assignment(client_id="c-grpc", host="127.0.0.1", port=server.combiner.port, grpc_secure=True)
    connection = Connection(grpc_target(assignment, str(other_ca.ca)), ClientIdentity("c-grpc", "c-grpc"))
    started = time.monotonic()
    try:
        with pytest.raises(CombinerError) as err:
            version_check(connection)
    finally:
        connection.close()
    assert time.monotonic() - started < 5
    assert "not signed by a CA this client trusts" in str(err.value)
    assert "--ca-file" in str(err.value)


def test_controller_dials_a_tls_combiner_with_the_ca_file(server: Server, certs: Certs) -> None:
    address = f"127.0.0.1:{server.combiner.port}"
    channel = control_channel(address, secure=True, ca_file=str(certs.ca))
    try:
        reply = pb_grpc.ControlStub(channel).ListActiveClients(pb.ClientListRequest(), timeout=5)
        assert isinstance(reply, pb.ClientList)
    finally:
        channel.close()
    plaintext = control_channel(address, secure=False)
    try:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.ControlStub(plaintext).ListActiveClients(pb.ClientListRequest(), timeout=3)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        plaintext.close()


def test_combiner_does_not_register_with_a_controller_it_does_not_trust(server: Server, other_ca: Certs) -> None:
    import asyncio

    async def register() -> None:
        link = ControllerLink(server.api_url, verify=http_verify(ServerSettings(tls_ca_file=str(other_ca.ca))))
        try:
            await link.connect("untrusting", "127.0.0.1", 1, "127.0.0.1")
        finally:
            await link.aclose()

    with pytest.raises(RuntimeError, match="tls_ca_file"):
        asyncio.run(asyncio.wait_for(register(), 10))


def test_tls_settings_that_cannot_work_are_refused_naming_the_setting(certs: Certs, other_ca: Certs,
                                                                     tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match="tls_key"):
        server_tls(ServerSettings(tls_cert=str(certs.cert)))
    with pytest.raises(TlsConfigError, match="does not belong"):
        server_tls(ServerSettings(tls_cert=str(certs.cert), tls_key=str(other_ca.key)))
    with pytest.raises(TlsConfigError, match="tls_cert"):
        server_tls(ServerSettings(tls_cert=str(tmp_path / "missing.pem"), tls_key=str(certs.key)))
    assert server_tls(ServerSettings()) is None


def test_server_start_refuses_a_key_that_does_not_match(certs: Certs, other_ca: Certs, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["server", "start", "--data-dir", str(tmp_path), "--tls-cert", str(certs.cert),
                                      "--tls-key", str(other_ca.key)])
    assert result.exit_code != 0
    assert "does not belong" in result.output


def test_client_trust_follows_the_flag_then_the_published_clients_variables(certs: Certs, other_ca: Certs) -> None:
    env = {"SCALEOUT_CA_FILE": str(certs.ca), "SCALEOUT_GRPC_ROOT_CERT_PATH": str(other_ca.ca)}
    assert ClientTrust.resolve(None, env=env).ca_file == str(certs.ca)
    assert ClientTrust.resolve(str(other_ca.ca), env=env).ca_file == str(other_ca.ca)  # the flag wins
    grpc_only = ClientTrust.resolve(None, env={"SCALEOUT_GRPC_ROOT_CERT_PATH": str(other_ca.ca)})
    assert grpc_only.grpc_root_cert_path(env={"SCALEOUT_GRPC_ROOT_CERT_PATH": str(other_ca.ca)}) == str(other_ca.ca)
    assert grpc_only.requests_verify() is True  # HTTPS: REQUESTS_CA_BUNDLE or the default store
    assert ClientTrust.resolve(None, env={"SCALEOUT_CONNECT_API_SECURE": "false"}).requests_verify() is False
    with pytest.raises(UntrustedServer, match="does not exist"):
        ClientTrust.resolve("/no/such/ca.pem", env={})


def test_ca_file_flag_wins_over_requests_ca_bundle(server: Server, certs: Certs, other_ca: Certs,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other_ca.ca))
    session = ClientTrust.resolve(str(certs.ca), env={}).session()
    assert session.get(f"{server.api_url}/health", timeout=5).status_code == 200


@pytest.mark.parametrize(("host", "origin"), [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"), ("::", "[::1]"),
                                              ("::1", "[::1]"), ("10.0.0.5", "10.0.0.5")])
def test_server_functions_reach_the_controller_at_its_url_also_over_ipv6_and_tls(host: str, origin: str,
                                                                                certs: Certs) -> None:
    from scaleout_server.controller.session_modes import controller_address

    plain = ServerSettings(host=host, api_port=8123)
    assert controller_address(plain) == {"host": f"http://{origin}", "port": 8123}
    secured = replace(plain, tls_cert=str(certs.cert), tls_key=str(certs.key))
    assert controller_address(secured) == {"host": f"https://{origin}", "port": 8123}
