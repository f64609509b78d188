"""The published 1.1 client and CLI against our secured server, for what issue 21 found missing: staging and
on-device inference (stage callback, log_inference_result over StreamInferenceResult), every method of the
published API client, and the CLI's login, contexts, enrollment and client configs.

The browser `scaleout login` opens is stood in for by a BROWSER command that does what the dashboard's
login page does when a person presses Approve: POST /api/cli-auth/approve with the admin token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.deployment import PROJECTS, Deployment, wait_until
from tests.interop.conftest import Official, project_copy
from tests.interop.official import PUBLISHED, client_env, ensure_venv

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]

RELEASE = next(r for r in PUBLISHED if r.label == "1.1")
CALLS_SCRIPT = Path(__file__).with_name("published_api_calls.py")
APPROVE = '''import json, os, sys, urllib.request
url = sys.argv[1]
base, request_id = url.split("/cli-login/")
req = urllib.request.Request(base + "/api/cli-auth/approve", data=json.dumps({"requestId": request_id}).encode(),
                             headers={"Content-Type": "application/json",
                                      "Authorization": "Bearer " + os.environ["APPROVER_TOKEN"]})
urllib.request.urlopen(req, timeout=10).read()
'''


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = Deployment(tmp_path_factory.mktemp("parity"), env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    dep.start_server(secure=True)
    try:
        yield dep
    finally:
        dep.close()


@pytest.fixture(scope="module")
def project(secured: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = project_copy(PROJECTS / "inference", tmp_path_factory.mktemp("parity-project") / "project")
    secured.upload_seed(project)
    return project


@pytest.fixture
def official(secured: Deployment, tmp_path: Path) -> Iterator[Official]:
    yield Official(ensure_venv(RELEASE), secured, tmp_path / "home")
    secured.stop_clients()
    wait_until(lambda: not secured.online_clients(), 20, 0.2, "stopped clients to be seen offline")


def seed_id(dep: Deployment) -> str:
    models = dep.get("/api/v1/models/", headers={"X-Sort-Key": "committed_at", "X-Sort-Order": "asc"})
    return str(models["result"][0]["model_id"])


def test_published_client_stages_a_model_and_its_inference_results_are_stored(
        secured: Deployment, project: Path, official: Official, tmp_path: Path) -> None:
    dep, seed, markers = secured, seed_id(secured), tmp_path / "markers"
    official.start_client("pub-inf", project, "--token", dep.create_token("client", name="pub-inf"),
                          env={"E2E_MARKER_DIR": str(markers)})
    client_id = dep.online_clients()["pub-inf"]["client_id"]
    staged = dep.post(f"/api/v1/models/{seed}/stage", {"client_ids": [client_id], "synchronous": True})
    assert staged.status_code == 200, staged.text
    assert [r["status"] for r in staged.json()["results"]] == ["COMPLETED"]
    assert json.loads((markers / f"staged-{seed}").read_text()) == {"first": 0.0}
    assert (project / ".scaleout" / "model_cache" / f"{seed}.scm").is_file()

    run = dep.post("/api/v1/control/start_inference", {"model_id": seed, "synchronous": True, "timeout": 60,
                                                        "parameters": {"n": 3, "label": "dog"}})
    assert run.status_code == 200, run.text
    command_id = run.json()["command_id"]
    assert [(r["status"], r["response"]) for r in run.json()["results"]] == [("COMPLETED", None)]

    def stored() -> list[dict] | None:  # the 1.1 client streams its results after reporting the task done
        found = dep.get("/api/v1/predictions/", params={"prediction_id": command_id})["result"]
        return found if len(found) == 3 else None

    results = wait_until(stored, 30, 0.3, "three inference results")
    assert sorted(r["data"]["detection"]["i"] for r in results) == [0, 1, 2]
    assert all(r["data"]["detection"]["label"] == "dog" and r["data"]["detection"]["first"] == 0.0
               and r["model_id"] == seed and r["sender"]["client_id"] == client_id for r in results), results
    listed = subprocess.run([sys.executable, "-m", "scaleout", "inference", "list", "--run-id", command_id, "-o",
                             "json", *dep.api_args()], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SCALEOUT_AUTH_TOKEN": str(dep.admin_token)})
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 3, listed.stdout + listed.stderr


def test_every_published_api_client_method_reaches_a_route_of_our_server(
        secured: Deployment, project: Path, official: Official, tmp_path: Path) -> None:
    dep, seed = secured, seed_id(secured)
    official.start_client("pub-api", project, "--token", dep.create_token("client", name="pub-api"))
    client_id = dep.online_clients()["pub-api"]["client_id"]
    dep.cli("package", "create", "--path", "client", "-o", str(tmp_path), cwd=project)
    args = {"url": dep.api_url, "token": dep.admin_token, "seed": str(project / "seed.npz"),
            "package": str(next(tmp_path.glob("*.tgz"))), "model_id": seed, "client_id": client_id,
            "workdir": str(tmp_path)}
    result = subprocess.run([str(RELEASE.venv / "bin" / "python"), str(CALLS_SCRIPT), json.dumps(args)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=240, env=client_env(tmp_path / "h"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    answers = report["answers"]
    assert set(report["public"]) == set(answers), set(report["public"]) ^ set(answers)
    raised = {name: a["raised"] for name, a in answers.items() if isinstance(a, dict) and "raised" in a}
    assert not raised, raised
    broken = [h for h in report["http"] if h[2] == 405 or h[2] >= 500 or "No route" in h[3]]
    assert not broken, broken
    assert len(report["http"]) >= len(answers)
    assert answers["add_attributes"]["key"] == "charging"
    assert [a["key"] for a in answers["get_attribute_trail"]["result"]] == ["charging"]
    assert answers["get_current_attributes"][client_id] == {"charging": "true"}
    assert answers["stage_model"]["command_type"] == "Scaleout_StageModel"
    assert answers["start_inference"]["status"] == "Finished"
    assert answers["session_is_finished"] is True
    assert answers["step_command"]["status"] == "Finished" and answers["stop_command"]["status"] == "Stopped"
    assert answers["step_current_command"]["status"] == "Finished"
    assert answers["stop_current_command"]["status"] == "Stopped"


def test_published_cli_logs_in_switches_and_removes_contexts_enrolls_and_writes_client_configs(
        secured: Deployment, project: Path, official: Official, tmp_path: Path) -> None:
    dep = secured
    approve = tmp_path / "approve.py"
    approve.write_text(APPROVE)
    home = official.home
    env = {**client_env(home), "BROWSER": f"{sys.executable} {approve} %s", "APPROVER_TOKEN": str(dep.admin_token)}

    def cli(*args: str) -> str:
        done = subprocess.run([str(RELEASE.scaleout), *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, env=env)
        out = done.stdout + done.stderr
        assert done.returncode == 0 and "Traceback" not in out, f"scaleout {' '.join(args)}:\n{out}"
        return done.stdout

    assert "Logged in successfully" in cli("login", dep.api_url)
    assert "Logged in successfully" in cli("login", f"http://localhost:{dep.api_port}")
    saved = yaml.safe_load((home / ".scaleout" / "contexts.yaml").read_text())
    assert [c["host"] for c in saved] == [dep.api_url, f"http://localhost:{dep.api_port}"]
    listed = dep.get("/api/v1/auth/tokens")["result"]
    assert sum(t["role"] == "admin" and str(t["name"]).startswith("cli-login-") for t in listed) == 2
    assert "★ [1]" in cli("context")
    assert "Switched to context" in cli("context", "0")
    assert "models" in cli("model", "list")  # no -H/-t: the active context's host and token
    assert "Removed context" in cli("remove", "1", "-y")
    assert len(yaml.safe_load((home / ".scaleout" / "contexts.yaml").read_text())) == 1

    # our CLI reads the same contexts
    ours = subprocess.run([sys.executable, "-m", "scaleout", "session", "list", "-o", "json"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "SCALEOUT_HOME_DIR": str(home),
                                                      "SCALEOUT_AUTH_TOKEN": ""})
    assert ours.returncode == 0, ours.stdout + ours.stderr

    token = cli("client", "create-enrollment-token", "-n", "devices").strip().splitlines()[-1]
    enrolled = cli("client", "enroll", "--enrollment-token", token, "-u", dep.api_url, "-n", "dev-1",
                   "-p", str(tmp_path / "cfg")).strip().splitlines()[-1]
    config = yaml.safe_load((tmp_path / "cfg" / f"{enrolled}.yaml").read_text())
    assert config["client_id"] == enrolled and config["discover_host"] == dep.api_url and config["refresh_token"]
    # the published client start takes the refresh token from the token cache enroll wrote (same HOME)
    official.start_client("dev-1", project, "--init", str(tmp_path / "cfg" / f"{enrolled}.yaml"),
                          env={"HOME": str(home)})
    assert dep.online_clients()["dev-1"]["client_id"] == enrolled

    cli("client", "get-config", "-n", "group", "-g", "2", "-p", str(tmp_path / "group"))
    written = sorted(p.name for p in (tmp_path / "group").iterdir())
    assert written == ["group_0.yaml", "group_1.yaml"]
    assert yaml.safe_load((tmp_path / "group" / "group_1.yaml").read_text())["name"] == "group_1"
