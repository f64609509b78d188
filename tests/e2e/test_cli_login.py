"""Our CLI's `login` / `context` / `remove` and `client enroll` / `create-enrollment-token` / `get-config`
against a secured server, ending with clients that start from the configs those commands wrote.

The browser `scaleout login` opens is stood in for by a BROWSER command doing what the dashboard's login
page does when a person presses Approve (or Refuse): POST /api/cli-auth/approve with the admin token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.e2e.deployment import Deployment, scaleout_cmd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

APPROVE = '''import json, os, sys, urllib.request
base, request_id = sys.argv[1].split("/cli-login/")
body = {"requestId": request_id, "approve": os.environ.get("APPROVE", "yes") == "yes"}
req = urllib.request.Request(base + "/api/cli-auth/approve", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json",
                                      "Authorization": "Bearer " + os.environ["APPROVER_TOKEN"]})
urllib.request.urlopen(req, timeout=10).read()
'''


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = Deployment(tmp_path_factory.mktemp("login"), env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    with dep.guarded():
        dep.start_server(secure=True)
        dep.project("inference")
        yield dep


class Cli:
    """Our CLI with its own SCALEOUT_HOME_DIR (contexts) and a BROWSER that approves logins."""

    def __init__(self, dep: Deployment, home: Path) -> None:
        approve = home / "approve.py"
        home.mkdir(parents=True, exist_ok=True)
        approve.write_text(APPROVE)
        self.dep = dep
        self.env = {**os.environ, "SCALEOUT_HOME_DIR": str(home), "BROWSER": f"{sys.executable} {approve} %s",
                    "APPROVER_TOKEN": str(dep.admin_token), "SCALEOUT_AUTH_TOKEN": ""}
        self.home = home

    def run(self, *args: str, ok: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(scaleout_cmd(*args), cwd=self.home, capture_output=True, text=True, timeout=120,
                              env={**self.env, **env})
        if ok:
            assert done.returncode == 0, f"scaleout {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done


def test_login_saves_a_context_whose_token_works_and_contexts_switch_and_go(secured: Deployment,
                                                                            tmp_path: Path) -> None:
    dep, cli = secured, Cli(secured, tmp_path / "home")
    assert "Logged in to" in cli.run("login", dep.api_url).stdout
    assert "Logged in to" in cli.run("login", f"http://localhost:{dep.api_port}").stdout
    saved = yaml.safe_load((cli.home / ".scaleout" / "contexts.yaml").read_text())
    assert [c["host"] for c in saved] == [dep.api_url, f"http://localhost:{dep.api_port}"]
    assert (cli.home / ".scaleout" / "contexts.yaml").stat().st_mode & 0o077 == 0  # holds tokens
    tokens = {t["token_id"]: t for t in dep.get("/api/v1/auth/tokens")["result"]}
    assert sum(t["role"] == "admin" and t["name"].startswith("cli-login-") for t in tokens.values()) == 2

    assert "★ [1]" in cli.run("context").stdout
    assert "Switched to context" in cli.run("context", "0").stdout
    sessions = cli.run("session", "list", "-o", "json")  # no -H/-t: the active context's host and token
    assert json.loads(sessions.stdout) == []
    missing = cli.run("context", "nope", ok=False)
    assert missing.returncode == 1 and "no context named 'nope'" in missing.stderr
    assert "Removed context" in cli.run("remove", "1", "-y").stdout
    assert "Removed context" in cli.run("remove", "0", "-y").stdout
    assert "No contexts found" in cli.run("context").stdout


def test_a_refused_login_or_a_bad_request_gets_a_reason(secured: Deployment, tmp_path: Path) -> None:
    dep, cli = secured, Cli(secured, tmp_path / "home")
    refused = cli.run("login", dep.api_url, ok=False, APPROVE="no")
    assert refused.returncode == 1 and "refused" in refused.stderr
    assert not (cli.home / ".scaleout" / "contexts.yaml").exists()
    started = requests.post(f"{dep.api_url}/api/cli-auth/init", timeout=10).json()
    wrong = requests.get(f"{dep.api_url}/api/cli-auth/status", timeout=10,
                         params={"requestId": started["requestId"], "pollToken": "guess"})
    assert wrong.status_code == 404
    anonymous = requests.post(f"{dep.api_url}/api/cli-auth/approve", json={"requestId": started["requestId"]},
                              timeout=10)
    assert anonymous.status_code == 401
    assert dep.post("/api/cli-auth/approve", {"requestId": started["requestId"]}).status_code == 200
    again = dep.post("/api/cli-auth/approve", {"requestId": started["requestId"]})
    assert again.status_code == 409 and "already" in again.json()["message"]
    status = {"requestId": started["requestId"], "pollToken": started["pollToken"]}
    first = requests.get(f"{dep.api_url}/api/cli-auth/status", params=status, timeout=10).json()
    assert first["status"] == "done" and first["access_token"]
    second = requests.get(f"{dep.api_url}/api/cli-auth/status", params=status, timeout=10).json()
    assert second == {"status": "error", "message": "this login was already completed"}  # handed over once


def start_from_config(dep: Deployment, config: Path, name: str) -> str:
    proc = dep._spawn(f"client-{name}", scaleout_cmd("client", "start", "--init", str(config), "--local-package"),
                      cwd=dep.root / "projects" / "inference")
    dep.wait_online([name], proc=proc)
    return str(dep.online_clients()[name]["client_id"])


def test_enrollment_and_generated_configs_start_clients(secured: Deployment, tmp_path: Path,
                                                        clients_stopped: None) -> None:
    dep, cli = secured, Cli(secured, tmp_path / "home")
    admin = ("-H", "127.0.0.1", "-P", str(dep.api_port), "-t", str(dep.admin_token))
    bad = cli.run("client", "create-enrollment-token", "-n", "x", "--expires-in", "soon", *admin, ok=False)
    assert bad.returncode == 2 and "not a lifetime" in bad.stderr
    token = cli.run("client", "create-enrollment-token", "-n", "devices", "--expires-in", "2h", *admin).stdout.strip()
    assert token.count(".") == 2  # only the token on stdout
    enrolled = cli.run("client", "enroll", "--enrollment-token", token, "-u", dep.api_url, "-n", "dev-ours",
                       "-p", str(tmp_path / "cfg")).stdout.strip()
    config = tmp_path / "cfg" / f"{enrolled}.yaml"
    assert yaml.safe_load(config.read_text())["discover_host"] == dep.api_url
    assert start_from_config(dep, config, "dev-ours") == enrolled
    wrong = cli.run("client", "enroll", "--enrollment-token", "not-a-token", "-u", dep.api_url, ok=False)
    assert wrong.returncode == 1 and "Enrollment failed (401)" in wrong.stderr

    cli.run("client", "get-config", "-n", "grp", "-g", "2", "-p", str(tmp_path / "grp"), *admin)
    configs = sorted((tmp_path / "grp").glob("*.yaml"))
    assert [c.name for c in configs] == ["grp_0.yaml", "grp_1.yaml"]
    first = yaml.safe_load(configs[0].read_text())
    assert first["refresh_token"] and first["discover_host"] == dep.api_url and first["name"] == "grp_0"
    assert start_from_config(dep, configs[0], "grp_0") == first["client_id"]
