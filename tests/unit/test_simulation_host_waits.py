"""A simulation's host of virtual clients waits for a server that is not up yet, and stops when told to."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.unit.test_client_fakes import write_project

pytestmark = pytest.mark.timeout(60)


def test_virtual_clients_wait_for_a_server_that_is_down_and_sigterm_ends_the_wait(tmp_path: Path) -> None:
    project = write_project(tmp_path / "project")
    log = tmp_path / "host.log"
    with log.open("wb") as out:
        host = subprocess.Popen([sys.executable, "-m", "scaleout.simulation.host", "--api-url",
                                 f"http://127.0.0.1:{free_port()}", "--project", str(project), "--work",
                                 str(tmp_path / "work"), "--indices", "0-1", "--total", "2"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        time.sleep(4)  # several refused attempts
        assert host.poll() is None, log.read_text()
        host.send_signal(signal.SIGTERM)
        assert host.wait(timeout=10) == 0
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    output = log.read_text()
    assert output.count("not reachable") == 1, output  # one line for the group of attempts
    assert "READY" not in output and "Traceback" not in output
