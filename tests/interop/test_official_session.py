"""The published clients (1.0.7 and 1.1) and their CLI, unchanged, against our real server.

Everything a user of the published packages does is done with *their* CLI: package and seed
model upload (chunked upload + `helpers/active`), `session start`, the list/get commands, and
`client start` with the local default and with `--remote-package`, with and without tokens.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from scaleoututil.helpers.helpers import get_helper
from tests.e2e.deployment import Deployment, wait_until
from tests.interop.conftest import SEED_EXAMPLE, Official, project_copy

pytestmark = [pytest.mark.interop, pytest.mark.timeout(420)]

helper = get_helper("numpyhelper")


def params_of(dep: Deployment, model_id: str) -> list[np.ndarray]:
    r = requests.get(f"{dep.api_url}/api/v1/models/{model_id}/download", params={"format": "raw"}, timeout=30)
    assert r.status_code == 200, r.text
    return helper.load(io.BytesIO(r.content))


def refresh_jwt(client_id: str) -> str:
    """A refresh token as the 1.1 client recognises a client_refresh one (it reads the claims only)."""
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {"role": "client_refresh", "sub": client_id, "exp": int(time.time()) + 3600}
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{part({'sig': 'unchecked'})}"


def field(output: str, name: str) -> str:
    """A value from the published CLI's output (`name: value` lines in 1.1, a dict repr in 1.0.7)."""
    found = re.search(rf"['\"]?{name}['\"]?: ['\"]?([\w-]+)", output)
    assert found, f"no {name} in:\n{output}"
    return found.group(1)


def test_official_cli_and_two_official_clients_train_the_seed_example(official: Official, tmp_path: Path) -> None:
    dep, label = official.dep, official.release.label
    project = project_copy(SEED_EXAMPLE, tmp_path / "project")

    # 1. their CLI: build, package, upload package and seed model
    official.cli("run", "build", "-p", "client", cwd=project, api=False)
    official.cli("package", "create", "--path", "client", cwd=project, api=False)
    package_name = f"seed-example-{label}"
    official.cli("package", "set-active", "-f", "package.tgz", "-n", package_name, cwd=project)
    active = dep.get("/api/v1/packages/active")
    assert active["name"] == package_name
    assert active["checksum"] == hashlib.sha256((project / "package.tgz").read_bytes()).hexdigest()
    official.cli("model", "set-active", "-f", "seed.npz", cwd=project)
    seed_id = dep.get("/api/v1/models/", headers={"X-Limit": "1", "X-Sort-Key": "committed_at",
                                                   "X-Sort-Order": "desc"})["result"][0]["model_id"]
    assert dep.get("/api/v1/helpers/active") == "numpyhelper"
    seed = helper.load(str(project / "seed.npz"))
    np.testing.assert_array_equal(params_of(dep, seed_id)[0], seed[0])

    # 2. two of their clients: ./client with a refresh token, and the downloaded package
    official.start_client(f"local-{label}", project, "--token", "opaque-refresh-token")
    remote_args = ["--remote-package"] if label == "1.0.7" else ["--remote-package", package_name]
    remote_id = f"remote-{label}-id"
    if label != "1.0.7":  # 1.1 sends a client_refresh JWT to /api/v1/clients/token
        remote_args += ["-i", remote_id, "--token", refresh_jwt(remote_id)]
    official.start_client(f"remote-{label}", tmp_path / "remote-node", *remote_args)
    clients = dep.online_clients()
    assert clients[f"local-{label}"]["package"] == "local"
    assert clients[f"remote-{label}"]["package"] == "remote"
    installed = official.cli("--version", api=False)
    assert all(c["client_version"] in installed for c in clients.values()), (installed, clients)
    server_log = dep.procs[0].output()
    assert "token exchange at /api/auth/refresh" in server_log
    if label != "1.0.7":
        assert "token exchange at /api/v1/clients/token" in server_log
        assert clients[f"remote-{label}"]["client_id"] == remote_id

    # 3. a two-round session with validation, started with their CLI
    out = official.cli("session", "start", "-r", "2", "-rt", "60", "-rc", "2", "-mc", "2", "-m", seed_id,
                       "-n", f"seed-{label}")
    session_id = field(out, "session_id")
    session = dep.wait_session(session_id, timeout=120)
    assert session["status"] == "Finished", (session, dep.dump_logs())
    rounds = dep.rounds(session_id)
    assert [(r["round_number"], r["status"]) for r in rounds] == [(1, "Finished"), (2, "Finished")]

    # the seed's train returns the parameters unchanged: every model of the trail equals the seed
    for r in rounds:
        np.testing.assert_allclose(params_of(dep, r["new_model_id"])[0], seed[0], rtol=1e-6)
    updates = dep.get("/api/v1/updates/", params={"session_id": session_id})["result"]
    names = [f"local-{label}", f"remote-{label}"]
    ids = {c["client_id"] for c in clients.values()}
    assert sorted(u["client_id"] for u in updates) == sorted(ids) * 2 or len(updates) == 4 and \
        {u["client_id"] for u in updates} == ids
    validations = dep.get("/api/v1/validations/", params={"session_id": session_id})["result"]
    assert len(validations) == 4
    assert {v["data"]["validation_accuracy"] for v in validations} == {0.95}
    assert {v["model_id"] for v in validations} == {r["new_model_id"] for r in rounds}
    # log_metric: 10 values per training task (iterations 0, 10, ..., 90)
    metrics = dep.get("/api/v1/metrics/", params={"session_id": session_id, "key": "train_iteration"},
                      headers={"X-Limit": "1000"})["result"]
    assert len(metrics) == 2 * 2 * 10
    assert {m["value"] for m in metrics} == {float(i) for i in range(0, 100, 10)}
    # status messages and telemetry from both clients
    statuses = dep.get("/api/v1/statuses/", params={"session_id": session_id}, headers={"X-Limit": "1000"})["result"]
    senders = {s["sender"]["name"] for s in statuses if s["status"] == "Model update completed."}
    assert senders == set(names)

    def telemetry_from_both() -> bool:
        found = dep.get("/api/v1/telemetry/", headers={"X-Limit": "1000"})["result"]
        ids = {c["client_id"] for c in clients.values()}
        return ids <= {t["client_id"] for t in found if t["key"] == "cpu_usage"}

    wait_until(telemetry_from_both, 30, 0.5, "telemetry from both clients")

    # their list/get commands read it all back
    assert session_id in official.cli("session", "list")
    assert "Finished" in official.cli("session", "get", "-id", session_id)
    assert rounds[1]["round_id"] in official.cli("round", "list")
    assert rounds[1]["new_model_id"] in official.cli("model", "list")
    assert validations[0]["validation_id"] in official.cli("validation", "list")
    client_list = official.cli("client", "list")
    assert f"local-{label}" in client_list and f"remote-{label}" in client_list
    assert "Model update completed." in official.cli("status", "list")
