"""The published clients (1.0.7 and 1.1), unchanged, against our server over TLS (`server start --tls-cert
--tls-key --tls-ca-file`, certificates from `scaleout certs create`), given the CA the way their users give it:
REQUESTS_CA_BUNDLE for the HTTPS registration and package calls, SCALEOUT_GRPC_ROOT_CERT_PATH for the gRPC
channel, which they open over TLS because /clients/add says `grpc_secure: true` (1.1) or by default (1.0.7).
A client given another CA for gRPC never comes online: it exits after its first gRPC call fails the
handshake."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from scaleoututil.helpers.helpers import get_helper
from tests.e2e.deployment import Proc, wait_until
from tests.e2e.test_tls import TlsDeployment, make_certs
from tests.interop.conftest import WEIGHTED, Official, project_copy
from tests.interop.official import client_env

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]

helper = get_helper("numpyhelper")
SEED = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, dtype=np.float64)]  # the project's build


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDeployment]:
    """One TLS server for the module; the `official` fixture runs the published clients against it."""
    root = tmp_path_factory.mktemp("tls-interop")
    dep = TlsDeployment(root, certs=make_certs(root / "certs"), env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    with dep.guarded():
        dep.start_server()
        yield dep


@pytest.fixture(scope="module")
def seeded(deployment: TlsDeployment, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    project = project_copy(WEIGHTED, tmp_path_factory.mktemp("tls-weighted") / "project")
    return project, deployment.upload_seed(project)


def start_tls_client(official: Official, name: str, project: Path, ca: Path, grpc_ca: Path | None = None,
                     wait: bool = True, **env: str) -> Proc:
    """Their `client start` over HTTPS with the CA given as their users give it; SCALEOUT_GRPC_SECURE unset, so
    each release chooses TLS by its own rule."""
    dep = official.dep
    full_env = {**client_env(official.home / name), "REQUESTS_CA_BUNDLE": str(ca),
                "SCALEOUT_GRPC_ROOT_CERT_PATH": str(grpc_ca or ca), **env}
    full_env.pop("SCALEOUT_GRPC_SECURE")
    command = [str(official.release.scaleout), "client", "start", "--api-url", dep.api_url, "-n", name,
               "--disable-managed-env"]
    proc = dep._spawn(f"client-{name}", command, cwd=project, env=full_env)
    if wait:
        dep.wait_online([name], proc=proc)
    return proc


def test_published_client_trains_and_validates_a_round_over_tls_with_the_ca_it_is_given(
        official: Official, seeded: tuple[Path, str]) -> None:
    dep, label = official.dep, official.release.label
    assert isinstance(dep, TlsDeployment) and dep.api_url.startswith("https://")
    project, seed_id = seeded
    client = start_tls_client(official, f"tls-{label}", project, dep.ca, E2E_CONSTANT="2.5", E2E_NUM_EXAMPLES="3")
    client_id = dep.online_clients()[f"tls-{label}"]["client_id"]

    session_id = dep.start_session(name=f"tls-{label}", rounds=1, round_timeout=60, model_id=seed_id,
                                   clients_required=1, validate=True)
    session = dep.wait_session(session_id, timeout=120)
    assert session["status"] == "Finished", (session, client.output()[-3000:])
    [round_] = dep.rounds(session_id)
    assert round_["status"] == "Finished"
    r = requests.get(f"{dep.api_url}/api/v1/models/{round_['new_model_id']}/download", params={"format": "raw"},
                     timeout=30, verify=str(dep.ca))
    assert r.status_code == 200, r.text
    for got, seed in zip(helper.load(io.BytesIO(r.content)), SEED, strict=True):
        np.testing.assert_allclose(got, seed + 2.5, rtol=1e-6)
    validations = dep.get("/api/v1/validations/", params={"session_id": session_id})["result"]
    assert [(v["sender"]["client_id"], v["model_id"]) for v in validations] == [(client_id,
                                                                                 round_["new_model_id"])]
    assert "Traceback" not in client.output()


def test_published_client_given_another_ca_for_grpc_stops_without_training(
        official: Official, seeded: tuple[Path, str], tmp_path: Path) -> None:
    dep, label = official.dep, official.release.label
    other = make_certs(tmp_path / "other")
    project, _ = seeded
    client = start_tls_client(official, f"tls-wrong-{label}", project, dep.ca, grpc_ca=other / "ca.pem",
                              wait=False)
    client.popen.wait(timeout=90)  # its first gRPC call fails the TLS handshake: the client exits (1.0.7 with 0)
    output = client.output()
    assert "CERTIFICATE_VERIFY_FAILED" in output or "certificate verify failed" in output.lower(), output[-3000:]
    wait_until(lambda: f"tls-wrong-{label}" not in dep.online_clients(), 10, 0.2, "the client never online")
