"""The published clients and CLI against a *secured* server (`server start --secure`): a client token
exchanged the way each version does it (1.0.7: /api/auth/refresh; 1.1: /api/v1/clients/token, and
enrollment at /api/v1/clients/enroll), a round trained, and their CLI with the admin token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.deployment import Deployment, wait_until
from tests.interop.conftest import WEIGHTED, Official, project_copy
from tests.interop.official import Published

pytestmark = [pytest.mark.interop, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = Deployment(tmp_path_factory.mktemp("secured"), env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    dep.start_server(secure=True)
    try:
        yield dep
    finally:
        dep.close()


@pytest.fixture(scope="module")
def project(secured: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = project_copy(WEIGHTED, tmp_path_factory.mktemp("secured-project") / "project")
    secured.upload_seed(project)
    return project


def test_published_client_trains_on_a_secured_server_with_a_client_token(
        release: Published, secured: Deployment, project: Path, tmp_path: Path) -> None:
    dep, label = secured, release.label
    official = Official(release, dep, tmp_path / "home")
    tokens = {f"tok-{label}": dep.create_token("client", name=f"tok-{label}")}
    if label != "1.0.7":
        tokens[f"enr-{label}"] = dep.create_token("enrollment", name=f"enr-{label}")
    try:
        for name, token in tokens.items():
            official.start_client(name, project, "--token", token)
        session_id = dep.start_session(rounds=1, round_timeout=60, clients_required=len(tokens), validate=True)
        session = dep.wait_session(session_id, timeout=120)
        assert session["status"] == "Finished", (session, dep.dump_logs())
        validations = dep.get("/api/v1/validations/", params={"session_id": session_id})
        assert {v["sender"]["name"] for v in validations["result"]} == set(tokens)
        server_log = dep.procs[0].output()
        assert all(token not in server_log for token in tokens.values())
        # their CLI with the admin token (sent as is), and refused without one
        assert session_id in official.cli("session", "list", "-t", str(dep.admin_token))
        refused = official.cli("session", "list")
        assert session_id not in refused and ("requires a token" in refused or "401" in refused), refused
    finally:
        dep.stop_clients()
        wait_until(lambda: not dep.online_clients(), 20, 0.2, "clients offline")
