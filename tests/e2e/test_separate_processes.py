"""Controller and combiner started on their own talk over the network; clients survive a combiner restart."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from tests.e2e.deployment import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_standalone_controller_and_combiner_train_and_clients_reconnect_after_combiner_restart(
        tmp_path: Path) -> None:
    dep = Deployment(tmp_path, env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    with dep.guarded():
        dep.start_controller()
        combiner = dep.start_combiner("edge-1")
        project = dep.project("weighted")
        seed = dep.upload_seed(project)
        client = dep.start_client("roamer", project, env={"E2E_CONSTANT": "1"})

        first = dep.start_session(rounds=1, round_timeout=30, model_id=seed, validate=False)
        assert dep.wait_session(first, 60)["status"] == "Finished"

        # the combiner dies; the client keeps retrying and reconnects to the restarted combiner
        combiner.stop(signal.SIGKILL)
        dep.start_combiner("edge-1")
        dep.wait_online(["roamer"], timeout=60, proc=client)
        second = dep.start_session(rounds=1, round_timeout=30, validate=False, clients_required=1)
        session = dep.wait_session(second, 90)
        assert session["status"] == "Finished", session
        assert "retrying" in client.output() or "unreachable" in client.output()


def test_server_start_stops_with_an_error_when_its_combiner_dies(tmp_path: Path) -> None:
    dep = Deployment(tmp_path)
    try:
        server = dep.start_server()
        (combiner_pid,) = [c.pid for c in psutil.Process(server.popen.pid).children()]
        os.kill(combiner_pid, signal.SIGKILL)
        server.popen.wait(timeout=30)
        assert server.popen.returncode == 1
        assert "combiner exited unexpectedly" in server.output()
    finally:
        dep.close()
