"""End-to-end: `scaleout client start --dispatcher` with examples/dispatcher-numpy on the real server.

The expected global model is computed by running the example's own train.py on the same inputs and
averaging its outputs weighted by the num_examples it reports, so the check holds whatever the
example's training does.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import requests

from scaleoututil.helpers.helpers import get_helper
from tests.e2e.deployment import Deployment, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dispatcher-numpy"
DISPATCHER = ("--local-package", "--dispatcher")
helper = get_helper("numpyhelper")

FLAKY_TRAIN = '''"""Fails like a broken train script while the file E2E_FAIL_FLAG names exists, else runs train.py."""
import os
import runpy
import sys

if os.path.exists(os.environ["E2E_FAIL_FLAG"]):
    print("loading data partition ...", file=sys.stderr)
    print("RuntimeError: deliberate failure in the train command", file=sys.stderr)
    sys.exit(3)
runpy.run_path("train.py", run_name="__main__")
'''


def copy_example(dep: Deployment, name: str) -> Path:
    dest = dep.root / "projects" / name
    if not dest.exists():
        shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    return dest


def download_params(dep: Deployment, model_id: str) -> list[np.ndarray]:
    r = requests.get(f"{dep.api_url}/api/v1/models/{model_id}/download", params={"format": "raw"}, timeout=30)
    assert r.status_code == 200, r.text
    return helper.load(io.BytesIO(r.content))


def run_script(project: Path, script: str, params: list[np.ndarray], partition: int, tmp: Path) -> Path:
    """Run one of the example's scripts as the dispatcher would; returns its OUT path."""
    model_in, out = tmp / f"in-{partition}.npz", tmp / f"out-{partition}{'.npz' if script == 'train.py' else ''}"
    helper.save(params, model_in)
    (tmp / f"in-{partition}.npz-metadata").write_text("{}")
    subprocess.run([sys.executable, script, str(model_in), str(out)], cwd=project / "client", check=True,
                   capture_output=True, env={**os.environ, "EXAMPLE_PARTITION": str(partition)})
    return out


def fedavg_round(project: Path, params: list[np.ndarray], tmp: Path) -> list[np.ndarray]:
    """What one round of FedAvg over partitions 0 and 1 gives, computed from the example's own train.py."""
    updates, weights = [], []
    for partition in (0, 1):
        out = run_script(project, "train.py", params, partition, tmp)
        updates.append(helper.load(out))
        weights.append(json.loads(Path(f"{out}-metadata").read_text())["num_examples"])
    total = sum(weights)
    return [sum(w * u[i].astype(np.float64) for w, u in zip(weights, updates, strict=True)) / total
            for i in range(len(params))]


@pytest.fixture(scope="module")
def example(deployment: Deployment) -> Path:
    return copy_example(deployment, "dispatcher-numpy")


@pytest.fixture(scope="module")
def seed_model(deployment: Deployment, example: Path) -> str:
    return deployment.upload_seed(example)  # `scaleout run build -p client` runs the build command


def test_dispatcher_clients_train_and_validate_and_fedavg_matches_the_scripts(
        deployment: Deployment, example: Path, seed_model: str, tmp_path: Path, clients_stopped: None) -> None:
    dep = deployment
    seed = helper.load(example / "seed.npz")
    assert len(seed) == 1 and seed[0].shape == (10,) and seed[0].dtype == np.float32
    dep.start_client("disp-0", example, env={"EXAMPLE_PARTITION": "0"}, extra=DISPATCHER)
    dep.start_client("disp-1", example, env={"EXAMPLE_PARTITION": "1"}, extra=DISPATCHER)

    session_id = dep.start_session(name="dispatcher", rounds=2, round_timeout=60, model_id=seed_model,
                                   clients_required=2, validate=True)
    session = dep.wait_session(session_id, timeout=90)
    assert session["status"] == "Finished", session
    rounds = dep.rounds(session_id)
    assert [r["status"] for r in rounds] == ["Finished", "Finished"], rounds

    expected = fedavg_round(example, fedavg_round(example, seed, tmp_path), tmp_path)
    final = download_params(dep, rounds[-1]["new_model_id"])
    np.testing.assert_allclose(final[0], expected[0], rtol=1e-5, atol=1e-6)
    assert final[0].dtype == np.float32
    assert not np.allclose(final[0], seed[0])

    updates = dep.get("/api/v1/updates/", params={"session_id": session_id})["result"]
    assert sorted(u["num_examples"] for u in updates) == [100, 100, 200, 200]
    assert all(u["meta"]["exec_training"] > 0 and u["meta"]["training_metadata"]["epochs"] == 5 for u in updates)

    # validate.py's metrics for the final model, as the script computes them on each client's data
    validations = dep.get("/api/v1/validations/", params={"session_id": session_id})["result"]
    assert len(validations) == 4
    for v in (v for v in validations if v["model_id"] == rounds[-1]["new_model_id"]):
        partition = int(v["sender"]["name"][-1])
        out = run_script(example, "validate.py", final, partition, tmp_path)
        assert v["data"] == pytest.approx(json.loads(out.read_text()), rel=1e-6)


def test_failing_train_command_fails_its_task_with_stderr_and_the_client_keeps_serving(
        deployment: Deployment, example: Path, seed_model: str, tmp_path: Path, clients_stopped: None) -> None:
    dep = deployment
    flaky = copy_example(dep, "dispatcher-flaky")
    (flaky / "client" / "flaky_train.py").write_text(FLAKY_TRAIN)
    yaml_file = flaky / "client" / "scaleout.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("python train.py", "python flaky_train.py"))
    flag = tmp_path / "fail-now"
    flag.touch()
    dep.start_client("steady", example, extra=DISPATCHER)
    dep.start_client("flaky", flaky, env={"E2E_FAIL_FLAG": str(flag)}, extra=DISPATCHER)

    session_id = dep.start_session(rounds=1, round_timeout=30, model_id=seed_model, clients_required=2,
                                   validate=False)
    assert dep.wait_session(session_id, timeout=60)["status"] == "Finished"
    (round_,) = dep.rounds(session_id)
    tasks = [t for c in round_["combiners"] for t in c.get("tasks", [])]
    failed = [t for t in tasks if t["status"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["client_name"] == "flaky", tasks
    error = json.dumps(failed[0]["response"])
    assert "python flaky_train.py" in error and "exited with code 3" in error
    assert "deliberate failure in the train command" in error and "loading data partition" in error

    # the failure did not take the client down: once the cause is gone it trains in the next session
    flag.unlink()
    session_id = dep.start_session(rounds=1, round_timeout=30, model_id=seed_model, clients_required=2,
                                   validate=False)
    assert dep.wait_session(session_id, timeout=60)["status"] == "Finished"
    (round_,) = dep.rounds(session_id)
    statuses = {t["client_name"]: t["status"] for c in round_["combiners"] for t in c.get("tasks", [])}
    assert statuses == {"steady": "COMPLETED", "flaky": "COMPLETED"}, round_


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda text: text.replace("  validate:\n    command: python validate.py\n", ""),
     "declares no entry_points.validate"),
    (lambda text: text.replace("  train:\n    command: python train.py\n", "  train: python train.py\n"),
     "entry_points.train is str 'python train.py', but dispatcher mode (--dispatcher) needs a mapping"),
], ids=["missing-validate", "malformed-train"])
def test_dispatcher_start_with_missing_or_malformed_entry_point_exits_naming_file_and_key(
        deployment: Deployment, edit: Callable[[str], str], expected: str, clients_stopped: None) -> None:
    dep = deployment
    name = "missing" if "no entry" in expected else "malformed"
    project = copy_example(dep, f"dispatcher-{name}")
    yaml_file = project / "client" / "scaleout.yaml"
    yaml_file.write_text(edit(yaml_file.read_text()))
    proc = dep.start_client(f"bad-{name}", project, extra=DISPATCHER, wait=False)
    wait_until(lambda: proc.popen.poll() is not None, 30, what="the client to give up")
    output = proc.output()
    assert proc.popen.returncode == 1, output
    assert f"{yaml_file.resolve()}" in output and expected in output, output
