"""End-to-end: `scaleout server start --secure` with tokens everywhere.

A client with a client token trains a round; the CLI works with the admin token and is refused
without it; the API and the combiner refuse calls without a token; revoking the client's token stops
it; and no token (admin, combiner, client, access) ever appears in any process's log.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator

import grpc
import psutil
import pytest
import requests

from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
from tests.e2e.deployment import Deployment, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{20,}")
ISSUED: list[str] = []  # every token this module creates, for the log check at the end


def issue(dep: Deployment, role: str, **body: str) -> str:
    token = dep.create_token(role, **body)
    ISSUED.append(token)
    return token


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = Deployment(tmp_path_factory.mktemp("secure"), env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    with dep.guarded():
        dep.start_server(secure=True, extra=("--log-level", "debug"))  # debug: the most a log could leak
        yield dep


def combiner_token(dep: Deployment) -> str:
    """The token `server start --secure` handed its combiner child (from the child's environment)."""
    server = next(p for p in dep.procs if p.name == "server")
    (child,) = psutil.Process(server.popen.pid).children()
    return child.environ()["SCALEOUT_COMBINER_TOKEN"]


def test_admin_token_file_is_private_and_only_its_path_is_printed(secure: Deployment) -> None:
    path = secure.data_dir / "auth" / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((secure.data_dir / "auth" / "secret.key").stat().st_mode) == 0o600
    output = secure.procs[0].output()
    assert str(path.resolve()) in output
    assert secure.admin_token and secure.admin_token not in output


def test_api_and_combiner_refuse_calls_without_a_token(secure: Deployment) -> None:
    assert requests.get(f"{secure.api_url}/health", timeout=10).status_code == 200
    for path in ("/api/v1/sessions/", "/api/v1/clients/", "/get_controller_status"):
        assert requests.get(secure.api_url + path, timeout=10).status_code == 401, path
    client_token = issue(secure, "client", name="nosy")
    access = requests.post(f"{secure.api_url}/api/auth/refresh", json={"refresh_token": client_token,
                                                                      "role": "client"}, timeout=10).json()
    headers = {"Authorization": f"Bearer {access['access_token']}"}
    # a client may not start sessions or read other clients' data
    assert requests.get(f"{secure.api_url}/api/v1/clients/", headers=headers, timeout=10).status_code == 403
    assert requests.post(f"{secure.api_url}/api/v1/sessions/", json={}, headers=headers,
                         timeout=10).status_code == 403
    with grpc.insecure_channel(f"127.0.0.1:{secure.combiner_port}") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            pb_grpc.CombinerClientStub(channel).SendHeartbeat(pb.Heartbeat(client_id="x"), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as denied:
            pb_grpc.ControlStub(channel).ListActiveClients(pb.ClientListRequest(), timeout=10, metadata=[
                ("authorization", f"Bearer {access['access_token']}")])
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]


def test_cli_works_with_the_admin_token_and_is_refused_without(secure: Deployment) -> None:
    bare = Deployment(secure.root, api_port=secure.api_port)  # same server, no token
    refused = bare.cli("session", "list", *secure.api_args(), check=False)
    assert refused.returncode == 1 and "401" in refused.stderr + refused.stdout
    listed = secure.cli("session", "list", *secure.api_args())
    assert listed.returncode == 0
    created = secure.cli("token", "create", "--role", "admin", "-n", "ops", "--expires", "1h", "-q",
                         *secure.api_args())
    ops = created.stdout.strip()
    ISSUED.append(ops)
    assert bare.cli("session", "list", *secure.api_args(), "-t", ops).returncode == 0
    token_id = next(t["token_id"] for t in secure.get("/api/v1/auth/tokens")["result"] if t["name"] == "ops")
    secure.cli("token", "revoke", token_id, *secure.api_args())
    assert bare.cli("session", "list", *secure.api_args(), "-t", ops, check=False).returncode == 1
    listing = secure.cli("token", "list", *secure.api_args(), "-o", "json").stdout
    assert ops not in listing and '"revoked"' in listing


def test_client_with_a_client_token_trains_a_round_and_stops_when_revoked(secure: Deployment) -> None:
    project = secure.project("weighted")
    seed = secure.upload_seed(project)  # the CLI, with the admin token
    token = issue(secure, "client", name="alpha")
    client = secure.start_client("alpha", project, env={"E2E_CONSTANT": "1.0"},
                                 extra=("--local-package", "--token", token))
    session_id = secure.start_session(name="secured", rounds=1, round_timeout=60, model_id=seed,
                                      clients_required=1, validate=True)
    session = secure.wait_session(session_id, timeout=90)
    assert session["status"] == "Finished", session
    rounds = secure.rounds(session_id)
    assert len(rounds) == 1 and rounds[0]["status"] == "Finished" and rounds[0]["new_model_id"]
    assert secure.get("/api/v1/validations/", params={"session_id": session_id})["count"] == 1

    token_id = next(t["token_id"] for t in secure.get("/api/v1/auth/tokens")["result"] if t["name"] == "alpha")
    assert secure.post(f"/api/v1/auth/tokens/{token_id}/revoke").status_code == 200
    # the combiner learns of the revocation within seconds; the client's refresh is refused and it stops
    wait_until(lambda: client.popen.poll() is not None, 60, 0.5, "the revoked client to stop")
    assert "revoked" in client.output()


def test_no_token_appears_in_any_log(secure: Deployment) -> None:
    # runs last: the logs now hold a secured start, a training round, the CLI and a revocation
    secrets = [secure.admin_token or "", combiner_token(secure), *ISSUED]
    assert len(secrets) >= 5
    for proc in secure.procs:
        output = proc.output()
        assert output, proc.name
        for secret in secrets:
            assert secret and secret not in output, f"a token leaked into the {proc.name} log"
        assert not JWT.search(output), f"something token-like in the {proc.name} log: {JWT.search(output)}"
