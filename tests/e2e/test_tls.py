"""End-to-end over TLS: `scaleout certs create`, `scaleout server start --tls-cert/--tls-key/--tls-ca-file`
(HTTPS API, gRPC combiner over TLS, the combiner registering over HTTPS and the controller calling it over
TLS), the CLI over HTTPS, and our client process training a round with `--ca-file`. A client holding
another CA stops at once with a message naming the fix."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.deployment import Deployment, Proc, scaleout_cmd, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def make_certs(out: Path) -> Path:
    subprocess.run(scaleout_cmd("certs", "create", "--out", str(out), "--hosts", "127.0.0.1,localhost"),
                   check=True, capture_output=True, timeout=60)
    return out


@dataclass
class TlsDeployment(Deployment):
    """A Deployment whose server serves HTTPS and gRPC over TLS with certificates from `certs create`."""

    certs: Path = field(default_factory=Path)

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca(self) -> Path:
        return self.certs / "ca.pem"

    def start_server(self, timeout: float = 60) -> Proc:
        proc = self._spawn("server", scaleout_cmd(
            "server", "start", "--host", "127.0.0.1", "--api-port", str(self.api_port),
            "--combiner-port", str(self.combiner_port), "--data-dir", str(self.data_dir),
            "--tls-cert", str(self.certs / "server.pem"), "--tls-key", str(self.certs / "server.key"),
            "--tls-ca-file", str(self.ca)), cwd=self.root)

        def ready() -> bool:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"server exited early:\n{proc.output()}")
            try:
                return self.get("/api/v1/combiners/")["count"] >= 1
            except (requests.RequestException, ValueError, KeyError):
                return False

        wait_until(ready, timeout, 0.2, "server and combiner over TLS")
        return proc

    def get(self, path: str, **kw: Any) -> Any:
        r = requests.get(self.api_url + path, timeout=30, verify=str(self.ca), **kw)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return requests.post(self.api_url + path, json=body, timeout=120, verify=str(self.ca), **kw)

    def api_args(self) -> list[str]:
        return ["-H", self.api_url]

    def cli(self, *args: str, check: bool = True, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The API commands trust the dev CA through REQUESTS_CA_BUNDLE (the requests library's variable)."""
        result = subprocess.run(scaleout_cmd(*args), cwd=cwd or self.root, capture_output=True, text=True,
                                timeout=timeout, env={**os.environ, **self.env, "REQUESTS_CA_BUNDLE": str(self.ca)})
        if check and result.returncode != 0:
            raise AssertionError(f"scaleout {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDeployment]:
    root = tmp_path_factory.mktemp("tls-deployment")
    dep = TlsDeployment(root, certs=make_certs(root / "certs"), env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    with dep.guarded():
        dep.start_server()
        yield dep


def test_server_over_tls_tells_clients_to_use_tls_and_refuses_plain_http(deployment: TlsDeployment) -> None:
    combiners = deployment.get("/api/v1/combiners/")["result"]
    assert [c["grpc_secure"] for c in combiners] == [True]
    server_log = deployment.procs[0].output()
    assert f"--ca-file {deployment.ca}" in server_log  # the start banner says how to start clients
    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{deployment.api_port}/health", timeout=5)


def test_client_with_the_ca_file_trains_a_round_over_tls(deployment: TlsDeployment, clients_stopped: None) -> None:
    dep = deployment
    project = dep.project("weighted")
    seed = dep.upload_seed(project)
    client = dep.start_client("tls-alpha", project, env={"E2E_CONSTANT": "1.0", "E2E_NUM_EXAMPLES": "1"},
                              extra=("--local-package", "--ca-file", str(dep.ca)))
    session_id = dep.start_session(name="over-tls", rounds=1, round_timeout=60, model_id=seed, clients_required=1)
    session = dep.wait_session(session_id, timeout=120)
    assert session["status"] == "Finished", session
    assert [r["status"] for r in dep.rounds(session_id)] == ["Finished"]
    assert "(TLS)" in client.output()


def test_client_with_another_ca_stops_with_a_clear_error(deployment: TlsDeployment, tmp_path: Path,
                                                         clients_stopped: None) -> None:
    other = make_certs(tmp_path / "other")
    client = deployment.start_client("tls-wrong", deployment.project("weighted"), wait=False,
                                     extra=("--local-package", "--ca-file", str(other / "ca.pem")))
    code = client.popen.wait(timeout=30)
    output = client.output()
    assert code != 0
    assert "cannot verify the TLS certificate" in output and "--ca-file" in output
    assert "Traceback" not in output
