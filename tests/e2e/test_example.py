"""The README's first command, minus venv creation: the seed's example end to end through the CLI,
with the compute package uploaded and downloaded by the clients."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_seed_example_trains_three_rounds_with_two_clients(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_example.py"), "--work-dir", str(tmp_path / "run"),
         "--api-port", str(free_port()), "--combiner-port", str(free_port()), "--stop"],
        capture_output=True, text=True, timeout=280)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    table = out[out.index("validation_accuracy"):] if "validation_accuracy" in out else ""
    assert table, out
    # three finished rounds, each with 2 of 2 updates and the example's accuracy 0.95
    rows = [line for line in table.splitlines() if "Finished" in line]
    assert len(rows) == 3, out
    assert all("0.95" in row and "2/2" in row for row in rows), out
    assert "Server: http://127.0.0.1:" in out
