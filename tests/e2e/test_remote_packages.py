"""End-to-end: clients that download the compute package from the server instead of --local-package.

Two clients start in empty folders (one with the default, one with the `--remote-package` spelling), train a
session on package v1, then v2 is activated and the next session runs v2's code; a restarted client takes
the package from its cache instead of downloading it again. A hostile package is refused by the client.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import requests

from scaleoututil.helpers.helpers import get_helper
from tests.e2e.deployment import Deployment, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

helper = get_helper("numpyhelper")
V1_CONSTANT = 'float(os.environ.get("E2E_CONSTANT", "1.0"))'


def download_params(dep: Deployment, model_id: str) -> list[np.ndarray]:
    r = requests.get(f"{dep.api_url}/api/v1/models/{model_id}/download", params={"format": "raw"}, timeout=30)
    assert r.status_code == 200, r.text
    return helper.load(io.BytesIO(r.content))


def make_package(dep: Deployment, project: Path, file_name: str) -> Path:
    dep.cli("package", "create", "-p", "client", "-n", file_name, "-o", str(project), cwd=project)
    return project / file_name


def run_session(dep: Deployment, model_id: str, name: str) -> str:
    """One round with both clients; returns the new global model."""
    session_id = dep.start_session(name=name, rounds=1, round_timeout=60, model_id=model_id, clients_required=2,
                                   validate=False)
    session = dep.wait_session(session_id, timeout=60)
    assert session["status"] == "Finished", session
    [round_] = dep.rounds(session_id)
    return round_["new_model_id"]


def test_clients_train_on_the_remote_package_switch_to_a_new_one_and_reuse_their_cache(
        deployment: Deployment, clients_stopped: None) -> None:
    dep = deployment
    project = dep.project("weighted")
    seed = dep.upload_seed(project)
    seed_params = download_params(dep, seed)

    v1 = make_package(dep, project, "v1.tgz")
    dep.cli("package", "set-active", "-f", str(v1), "-n", "v1", *dep.api_args())

    # v2: the same project, but its train adds 10 whatever the client's E2E_CONSTANT says
    v2_project = dep.root / "projects" / "weighted-v2"
    (v2_project / "client").mkdir(parents=True)
    for file in (project / "client").iterdir():
        if file.is_file():
            (v2_project / "client" / file.name).write_bytes(file.read_bytes())
    startup = (v2_project / "client" / "startup.py").read_text()
    assert V1_CONSTANT in startup
    (v2_project / "client" / "startup.py").write_text(startup.replace(V1_CONSTANT, "10.0"))
    v2 = make_package(dep, v2_project, "v2.tgz")

    work = {name: dep.root / "work" / name for name in ("alpha", "beta")}
    for folder in work.values():
        folder.mkdir(parents=True)  # empty: no client/ folder, the code comes from the server
    alpha = dep.start_client("alpha", work["alpha"], env={"E2E_CONSTANT": "1.0"}, extra=("-i", "alpha-id"))
    dep.start_client("beta", work["beta"], env={"E2E_CONSTANT": "3.0"}, extra=("--remote-package",))

    # session 1 on v1: each client adds its own constant, FedAvg of equal weights adds (1 + 3) / 2
    model_1 = run_session(dep, seed, "on-v1")
    for got, start in zip(download_params(dep, model_1), seed_params, strict=True):
        np.testing.assert_allclose(got, start + 2.0, rtol=1e-6)

    # activate v2; it is listed next to v1 and is the active one
    dep.cli("package", "set-active", "-f", str(v2), "-n", "v2", *dep.api_args())
    listed = json.loads(dep.cli("package", "list", "-o", "json", *dep.api_args()).stdout)
    records = listed["result"] if isinstance(listed, dict) else listed
    assert {p["name"]: p["active"] for p in records if p["name"] in ("v1", "v2")} == {"v1": False, "v2": True}
    checksums = {p["name"]: p["checksum"] for p in records}

    # session 2: both clients fetch v2 before their training task and run its code
    model_2 = run_session(dep, model_1, "on-v2")
    for got, start in zip(download_params(dep, model_2), seed_params, strict=True):
        np.testing.assert_allclose(got, start + 12.0, rtol=1e-6)
    for name, folder in work.items():
        log = (dep.root / "logs" / f"client-{name}.log").read_text()
        assert "compute package changed" in log, log[-3000:]
        cached = sorted(p.name for p in (folder / ".scaleout" / "packages").iterdir())
        assert cached == sorted([checksums["v1"], checksums["v2"]])

    # a restart with the active package already cached does not download it again
    alpha.stop()
    restarted = dep.start_client("alpha", work["alpha"], env={"E2E_CONSTANT": "1.0"}, extra=("-i", "alpha-id"),
                                 wait=False)
    wait_until(lambda: "Waiting for tasks" in restarted.output() or restarted.popen.poll() is not None, 30,
               what="the restarted client")
    log = restarted.output()
    assert restarted.popen.poll() is None, log
    assert f"compute package {checksums['v2'][:12]} is cached" in log
    assert "downloading compute package" not in log


def test_client_refuses_a_hostile_package_from_the_server_and_writes_nothing(deployment: Deployment,
                                                                             clients_stopped: None) -> None:
    dep = deployment
    hostile = dep.root / "hostile.tgz"
    with tarfile.open(hostile, "w:gz") as tar:
        for name, data in (("scaleout.yaml", b"entry_points:\n  startup: startup.py\n"),
                           ("startup.py", b"def startup(client):\n    pass\n"),
                           ("../../escaped.txt", b"written outside the package folder")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dep.cli("package", "set-active", "-f", str(hostile), "-n", "hostile", *dep.api_args())

    folder = dep.root / "work" / "victim"
    folder.mkdir(parents=True)
    proc = dep.start_client("victim", folder, extra=(), wait=False)
    proc.popen.wait(timeout=30)
    log = proc.output()
    assert proc.popen.returncode == 5, log  # EXIT_PACKAGE_REJECTED
    assert "refusing compute package hostile.tgz" in log and "contains '..'" in log
    assert not list(dep.root.rglob("escaped.txt"))
    assert not (folder / ".scaleout" / "packages").exists()
