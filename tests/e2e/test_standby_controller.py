"""A standby controller takes over: two controllers on one PostgreSQL statestore and one S3 repository
(real servers), a combiner and our clients given both controller addresses, a published 1.1 client
given one service address (a small TCP proxy that, like a Kubernetes Service, forwards to the controller
whose /ready answers 200).

The active controller is SIGKILLed while a round trains. The standby must take over within 15 s, resume
the session from the statestore and the repository (it never saw the dead controller's memory or disk),
and finish it; every committed model is exactly the FedAvg of the updates its round lists. Also: a second
controller without --standby is refused while the first is alive, and --standby on SQLite is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port
from tests.e2e.cluster import CLIENTS, assert_params, download_params, seed_params, stop_all
from tests.e2e.deployment import Deployment, Proc, scaleout_cmd, wait_until
from tests.e2e.standby import ServiceProxy, ready, server_env, share_secret, start_controller
from tests.storage.services import PostgresServer, S3Server, postgres_and_s3

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TAKE_OVER_WITHIN = 15.0
ROUNDS = 4
OURS = CLIENTS[:3]
PUBLISHED_NAME = "published-1.1"
PUBLISHED_CONSTANT, PUBLISHED_EXAMPLES = 5.0, 4


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[PostgresServer, S3Server]]:
    with postgres_and_s3("scaleout-standby") as both:
        yield both


def test_the_standby_takes_over_within_15_s_and_the_session_finishes_exactly(
        services: tuple[PostgresServer, S3Server], tmp_path: Path) -> None:
    pg, s3 = services
    port_a, port_b = free_port(), free_port()
    proxy = ServiceProxy([port_a, port_b])
    dep = Deployment(tmp_path, api_port=proxy.port, env=server_env(pg, s3, "takeover"))
    standby_dir = tmp_path / "standby-data"
    share_secret(dep.data_dir, standby_dir)
    both = f"http://127.0.0.1:{port_a},http://127.0.0.1:{port_b}"
    markers = tmp_path / "markers"
    try:
        with dep.guarded():
            active = start_controller(dep, "controller-a", port_a, dep.data_dir)
            wait_until(dep._read_admin_token, 10, 0.1, "admin token")
            standby = start_controller(dep, "controller-b", port_b, standby_dir, "--standby")
            assert (ready(port_a), ready(port_b)) == (200, 503)
            refused = requests.get(f"http://127.0.0.1:{port_b}/api/v1/sessions/", headers=dep.auth_headers(), timeout=5)
            assert refused.status_code == 503 and "this controller is a standby; the active controller is" \
                in refused.json()["message"]
            wait_until(lambda: proxy.active == port_a, 10, 0.1, "the service address to reach controller-a")

            # a third controller without --standby is refused while the lease is held
            third = subprocess.run(scaleout_cmd("controller", "start", "--host", "127.0.0.1", "--api-port",
                                                str(free_port()), "--data-dir", str(tmp_path / "third")),
                                   capture_output=True, text=True, timeout=60, env={**os.environ, **dep.env})
            assert third.returncode != 0 and "another controller is active: the active controller is" \
                in third.stderr and "start this one with --standby" in third.stderr, third.stderr

            combiner = dep._spawn("combiner-edge", scaleout_cmd(
                "combiner", "start", "--controller", both, "--host", "127.0.0.1", "--port", str(dep.combiner_port),
                "--name", "edge", "--data-dir", str(tmp_path / "combiner")), cwd=dep.root,
                env={"SCALEOUT_COMBINER_TOKEN": dep.create_token("combiner", name="edge")})
            wait_until(lambda: [c["status"] for c in dep.get("/api/v1/combiners/")["result"]] == ["online"], 60, 0.2,
                       "combiner online")
            project = dep.project("weighted")
            seed = dep.upload_seed(project)
            clients = [start_ours(dep, s.name, both, project, s.env(markers, 0)) for s in OURS]
            constants = {s.name: s.constant for s in OURS}
            published = start_published(dep, tmp_path)
            if published is not None:
                clients.append(published)
                constants[PUBLISHED_NAME] = PUBLISHED_CONSTANT
            dep.wait_online(sorted(constants))
            session_id = dep.start_session(rounds=ROUNDS, round_timeout=30, model_id=seed, validate=False,
                                           clients_required=len(constants))

            wait_until(lambda: any(x["round_number"] == 2 and x["status"] == "Running"
                                   for x in dep.rounds(session_id)), 120, 0.1, "round 2 to run")
            time.sleep(0.8)  # its clients are training
            active.stop(signal.SIGKILL)
            killed = time.monotonic()
            wait_until(lambda: ready(port_b) == 200, 30, 0.1, "the standby to take over")
            took = time.monotonic() - killed
            print(f"[standby] took over {took:.1f} s after the active controller was killed")
            assert took <= TAKE_OVER_WITHIN
            assert "taking over as the active controller (lease epoch 2)" in standby.output()
            wait_until(lambda: proxy.active == port_b, 10, 0.1, "the service address to reach controller-b")

            session = dep.wait_session(session_id, timeout=180)
            assert session["status"] == "Finished", session
            rounds = dep.rounds(session_id)
            assert [(x["round_number"], x["status"]) for x in rounds] == [(n, "Finished") for n in range(1, ROUNDS + 1)]

            # exact models: each round moved the model by the weighted mean of the updates it lists
            names = {c["client_id"]: c["name"] for c in dep.get("/api/v1/clients/")["result"]}
            updates = {u["update_id"]: u for u in dep.get("/api/v1/updates/", params={"session_id": session_id},
                                                           headers={"X-Limit": "1000"})["result"]}
            added = 0.0
            for round_ in rounds:
                folded = [updates[u] for c in round_["combiners"] for u in c["update_ids"]]
                assert len(folded) == len(constants), round_
                added += (sum(u["num_examples"] * constants[names[u["client_id"]]] for u in folded)
                          / sum(u["num_examples"] for u in folded))
                assert_params(download_params(dep, round_["new_model_id"]), seed_params(), added)
            # the combiner followed its list; a client of ours started now, with the dead controller first in
            # its list, registers through the new one
            assert f"trying http://127.0.0.1:{port_b}" in combiner.output()
            late = start_ours(dep, "late", both, project, CLIENTS[3].env(markers, 0))
            dep.wait_online(["late"], timeout=60, proc=late)
            clients.append(late)

            # a clean stop hands over: controller-a, back as a standby, resumes a running session at once
            start_controller(dep, "controller-a2", port_a, dep.data_dir, "--standby")
            second = dep.start_session(rounds=2, round_timeout=30, validate=False, clients_required=2)
            wait_until(lambda: any(x["status"] == "Running" for x in dep.rounds(second)), 60, 0.1, "a round to run")
            stopped = time.monotonic()
            standby.stop(signal.SIGTERM)
            assert standby.popen.returncode == 0, standby.output()[-3000:]
            wait_until(lambda: ready(port_a) == 200, 10, 0.1, "controller-a2 to take over")
            print(f"[standby] handed over {time.monotonic() - stopped:.1f} s after SIGTERM")
            wait_until(lambda: proxy.active == port_a, 10, 0.1, "the service address to reach controller-a2")
            assert dep.wait_session(second, timeout=120)["status"] == "Finished"
            assert [x["status"] for x in dep.rounds(second)] == ["Finished", "Finished"]
            stop_all(clients)
    finally:
        proxy.close()


def start_ours(dep: Deployment, name: str, controllers: str, project: Path, env: dict[str, str]) -> Proc:
    """Our client, given every controller's address."""
    return dep._spawn(f"client-{name}", scaleout_cmd(
        "client", "start", "--api-url", controllers, "-n", name, "--local-package",
        "--token", dep.create_token("client", name=name)), cwd=project, env=env)


def start_published(dep: Deployment, tmp_path: Path) -> Proc | None:
    """A published 1.1 client through the service address, when its cached venv exists (tests/interop)."""
    from tests.interop.conftest import WEIGHTED, Official, project_copy
    from tests.interop.official import PUBLISHED

    release = next(p for p in PUBLISHED if p.label == "1.1")
    if not release.scaleout.exists():
        return None
    project = project_copy(WEIGHTED, tmp_path / "published-project")
    official = Official(release, dep, tmp_path / "published-home")
    return official.start_client(PUBLISHED_NAME, project, "--token", dep.create_token("client", name=PUBLISHED_NAME),
                                 env={"E2E_CONSTANT": str(PUBLISHED_CONSTANT),
                                      "E2E_NUM_EXAMPLES": str(PUBLISHED_EXAMPLES),
                                      "E2E_TRAIN_STEPS": "4", "E2E_STEP_SECONDS": "0.5"}, wait=False)


def test_standby_on_sqlite_is_refused_with_the_reason(tmp_path: Path) -> None:
    result = subprocess.run(scaleout_cmd("controller", "start", "--standby", "--api-port", str(free_port()),
                                         "--data-dir", str(tmp_path / "data")),
                            capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith("SCALEOUT_")})
    assert result.returncode == 1, result
    assert "cannot start the controller: --standby needs a PostgreSQL statestore" in result.stderr
    assert "SQLite belongs to one host and one controller" in result.stderr
