"""The edge install: `pip install scaleout-edge-open` without the `server` extra, in its own venv
(.cache/edge/client-only, built by bench/edge_install.py and rebuilt whenever the core dependencies
change), holds none of the server's packages, refuses the server commands with the extra to install,
and its client trains a signed compute package from a server of the full install (.venv)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.edge_install import ensure_client_venv
from scaleout.cli.extras import INSTALL_SERVER
from tests.e2e.cluster import download_params, seed_params
from tests.e2e.deployment import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# the server extra's packages (and their big dependencies) that must not reach an edge device
SERVER_ONLY = {"fastapi", "starlette", "pydantic", "pydantic-core", "uvicorn", "python-multipart", "sqlalchemy",
               "alembic", "psycopg", "psycopg-binary", "boto3", "botocore", "s3transfer", "httpx", "httpcore",
               "cryptography", "mako"}  # cffi: PyNaCl (signature checks) needs it
CONSTANT = 3.0  # what the weighted test project's train adds to every parameter


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "scaleout"), *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=edge_env())


def edge_env() -> dict[str, str]:
    """Nothing of the test venv may leak into the edge venv's processes."""
    return {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}


def test_client_only_install_refuses_server_commands_and_trains_against_a_full_server(tmp_path: Path) -> None:
    venv = ensure_client_venv()
    python = str(venv / "bin" / "python")

    installed = json.loads(subprocess.run(
        [python, "-c", "import importlib.metadata as m, json; "
                       "print(json.dumps(sorted({d.metadata['Name'].lower().replace('_', '-') "
                       "for d in m.distributions()})))"],
        capture_output=True, text=True, timeout=60, check=True, env=edge_env()).stdout)
    assert "scaleout-edge-open" in installed and "grpcio" in installed
    assert not SERVER_ONLY & set(installed), sorted(SERVER_ONLY & set(installed))

    # the SDK and the client's whole code import without any server package
    imported = subprocess.run(
        [python, "-c", "import sys, scaleout, scaleout.cli.main, scaleout.client.runtime, scaleoututil.signing; "
                       "print(sorted({m.split('.')[0] for m in sys.modules}))"],
        capture_output=True, text=True, timeout=60, env=edge_env(), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "scaleout_server" not in imported.stdout and "fastapi" not in imported.stdout

    assert run(venv, "--help", cwd=tmp_path).returncode == 0
    assert "--package-public-key" in run(venv, "client", "start", "--help", cwd=tmp_path).stdout
    project = Path(__file__).parent / "projects" / "weighted"
    for command in (("server", "start"), ("controller", "start"), ("combiner", "start"), ("server", "migrate"),
                    ("simulate", "-p", str(project)), ("certs", "create", "--out", str(tmp_path / "certs"))):
        result = run(venv, *command, cwd=tmp_path)
        output = (result.stdout + result.stderr).strip()
        assert result.returncode == 1, output
        assert output.splitlines() == [output] and INSTALL_SERVER in output, output
        assert f"`scaleout {' '.join(command[:2])}" in output or f"`scaleout {command[0]}`" in output, output
    assert not (tmp_path / "certs").exists() and not (tmp_path / "scaleout-data").exists()
    keys = run(venv, "keys", "create", "--out", str(tmp_path / "edge-keys"), cwd=tmp_path)
    assert keys.returncode == 1 and "scaleout-edge-open[signing]" in keys.stderr, keys.stderr

    # a server of the full install; the project's package signed there (where cryptography is)
    dep = Deployment(tmp_path / "deployment", env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    with dep.guarded():
        dep.start_server()
        project_dir = dep.project("weighted")
        seed_id = dep.upload_seed(project_dir)
        dep.cli("keys", "create", "--out", str(tmp_path / "keys"), "--name", "project")
        dep.cli("package", "create", "--path", "client", "--sign-key", str(tmp_path / "keys" / "project.key"),
                cwd=project_dir)
        dep.cli("package", "set-active", "--file", "package.tgz", "-n", "signed", *dep.api_args(), cwd=project_dir)

        edge_dir = tmp_path / "edge-device"
        edge_dir.mkdir()
        client = dep._spawn("client-edge", [str(venv / "bin" / "scaleout"), "client", "start", "--api-url",
                                            dep.api_url, "-n", "edge", "--package-public-key",
                                            str(tmp_path / "keys" / "project.pub")],
                            cwd=edge_dir, env={**edge_env(), "E2E_CONSTANT": str(CONSTANT)})
        dep.wait_online(["edge"], proc=client, timeout=90)
        session_id = dep.start_session(rounds=2, round_timeout=60, model_id=seed_id, clients_required=1,
                                       validate=True)
        session = dep.wait_session(session_id, timeout=120)
        assert session["status"] == "Finished", session
        rounds = dep.rounds(session_id)
        assert [r["status"] for r in rounds] == ["Finished", "Finished"], rounds

        final = download_params(dep, rounds[-1]["new_model_id"])
        for got, base in zip(final, seed_params(), strict=True):
            np.testing.assert_allclose(got, base + 2 * CONSTANT, rtol=1e-5)
        updates = dep.get("/api/v1/updates/", params={"session_id": session_id})["result"]
        edge_id = dep.online_clients()["edge"]["client_id"]
        assert len(updates) == 2 and {u["client_id"] for u in updates} == {edge_id}
        validations = dep.get("/api/v1/validations/", params={"session_id": session_id})["result"]
        assert len(validations) == 2
        assert "signature verified" in client.output()
