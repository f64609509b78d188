"""`scaleout simulate` end to end: a real local server, virtual clients in host processes (and Ray actors),
each on its own partition; the numbers after FedAvg prove every client trained on its own share."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

PROJECT = Path(__file__).parent / "projects" / "partitioned"


def simulate(tmp_path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    project = tmp_path / "partitioned"
    if not project.exists():
        shutil.copytree(PROJECT, project)
    return subprocess.run([sys.executable, "-m", "scaleout", "simulate", "-p", str(project / "client"),
                           "--work-dir", str(tmp_path / "work"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


def fedavg_step(clients: int) -> float:
    """Client i adds i+1 with weight i+1: the weighted mean moves every parameter by this much per round."""
    return sum((i + 1) ** 2 for i in range(clients)) / sum(i + 1 for i in range(clients))


def port_closed(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((parts.hostname, parts.port)) != 0


def check_results(tmp_path: Path, clients: int, rounds: int) -> dict[str, Any]:
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    assert results["session"]["status"].lower() == "finished"
    assert [r["status"].lower() for r in results["rounds"]] == ["finished"] * rounds
    metrics = [json.loads(v["data"]) if isinstance(v["data"], str) else v["data"] for v in results["validations"]]
    final = [m for m in metrics if abs(m["mean"] - rounds * fedavg_step(clients)) < 1e-6]
    assert sorted(m["partition"] for m in final) == list(range(clients)), metrics
    assert {m["partitions"] for m in final} == {clients}
    assert port_closed(results["api_url"]), "the simulation's server still listens after the command ended"
    return results


@pytest.mark.timeout(300)
def test_simulate_runs_every_virtual_client_on_its_own_partition(tmp_path: Path) -> None:
    done = simulate(tmp_path, "--clients", "7", "--rounds", "2", "--hosts", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Finished" in done.stdout
    check_results(tmp_path, clients=7, rounds=2)
    logs = {p.name for p in (tmp_path / "work" / "logs").iterdir()}
    assert {"server.log", "build.log", "host-0.log", "host-1.log"} <= logs


@pytest.mark.timeout(300)
def test_simulate_spreads_clients_over_a_local_ray_cluster(tmp_path: Path) -> None:
    done = simulate(tmp_path, "--clients", "4", "--rounds", "1", "--backend", "ray", "--hosts", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    check_results(tmp_path, clients=4, rounds=1)


@pytest.mark.timeout(120)
def test_simulate_reports_a_failing_build_and_starts_nothing(tmp_path: Path) -> None:
    project = tmp_path / "partitioned"
    shutil.copytree(PROJECT, project)
    (project / "client" / "build.py").write_text("def build():\n    raise RuntimeError('no data folder here')\n")
    done = simulate(tmp_path, "--clients", "2")
    assert done.returncode == 1
    assert "build failed" in done.stderr and "no data folder here" in done.stderr, done.stderr
    assert not (tmp_path / "work" / "server").exists()


def test_simulate_refuses_a_folder_without_a_project(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = subprocess.run([sys.executable, "-m", "scaleout", "simulate", "-p", str(tmp_path / "empty")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "scaleout.yaml" in done.stderr
