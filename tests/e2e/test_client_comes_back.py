"""End-to-end: a client never gives up on its own, and stops with its own exit code when it must.

A client started (with a token) while the server is down, as after a host reboot, waits with one log line
per group of attempts, comes up once the server starts and trains a round. A revoked or malformed token can
never succeed: `client start` stops at once with exit code 3 and says why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from scaleout.client.registration import EXIT_TOKEN_REFUSED
from tests.e2e.deployment import Deployment, Proc, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = Deployment(tmp_path_factory.mktemp("comes-back"), env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    with dep.guarded():
        dep.start_server(secure=True)
        yield dep


def server_proc(dep: Deployment) -> Proc:
    return next(p for p in reversed(dep.procs) if p.name == "server")


def test_client_started_while_the_server_is_down_comes_up_and_trains_when_it_starts(secure: Deployment) -> None:
    project = secure.project("weighted")
    seed = secure.upload_seed(project)
    token = secure.create_token("client", name="patient")
    server_proc(secure).stop()  # port closed: the token exchange is refused

    client = secure.start_client("patient", project, env={"E2E_CONSTANT": "1.0"}, wait=False,
                                 extra=("--local-package", "--token", token))
    time.sleep(8)  # a host reboot: the client is up long before the server
    assert client.popen.poll() is None, client.output()
    waiting = [line for line in client.output().splitlines() if "token exchange" in line]
    assert waiting and "connection refused" in waiting[0] and "until it answers" in waiting[0]
    assert len(waiting) <= 2, waiting  # one line per group of attempts, not one per attempt (4 by now)

    secure.start_server(secure=True)
    secure.wait_online(["patient"], timeout=60, proc=client)
    session_id = secure.start_session(name="after-reboot", rounds=1, round_timeout=60, model_id=seed,
                                      clients_required=1, validate=False)
    session = secure.wait_session(session_id, timeout=90)
    assert session["status"] == "Finished", session
    rounds = secure.rounds(session_id)
    assert len(rounds) == 1 and rounds[0]["status"] == "Finished" and rounds[0]["new_model_id"]
    assert "token exchange: succeeded after" in client.output()
    client.stop()


def run_until_exit(dep: Deployment, name: str, token: str) -> Proc:
    proc = dep.start_client(name, dep.project("weighted"), wait=False, extra=("--local-package", "--token", token))
    wait_until(lambda: proc.popen.poll() is not None, 30, 0.2, f"client {name} to stop")
    return proc


def test_a_revoked_token_stops_the_client_with_exit_code_3_and_says_why(secure: Deployment) -> None:
    token = secure.create_token("client", name="revoked")
    token_id = next(t["token_id"] for t in secure.get("/api/v1/auth/tokens")["result"] if t["name"] == "revoked")
    assert secure.post(f"/api/v1/auth/tokens/{token_id}/revoke").status_code == 200
    proc = run_until_exit(secure, "revoked", token)
    assert proc.popen.returncode == EXIT_TOKEN_REFUSED == 3
    output = proc.output()
    assert "failed to obtain an access token" in output and "revoked" in output and "check --token" in output


def test_a_malformed_token_stops_the_client_with_exit_code_3(secure: Deployment) -> None:
    proc = run_until_exit(secure, "malformed", "not-a-token")
    assert proc.popen.returncode == EXIT_TOKEN_REFUSED
    assert "refused the token" in proc.output()
