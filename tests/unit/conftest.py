"""Fixtures shared by the unit tests: a fake controller for the REST-client and CLI tests, a real combiner
with simulated clients for the combiner tests. A module may override any of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_api_client_support import FakeController, running_fake_controller
from tests.unit.test_combiner_support import Harness, SimClient, running_harness


@pytest.fixture
def fake() -> Iterator[FakeController]:
    """A recording HTTP server standing in for the controller (a module may override it)."""
    with running_fake_controller() as controller:
        yield controller


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A real combiner on 127.0.0.1 (test_combiner_support.running_harness)."""
    with running_harness(tmp_path) as h:
        yield h


@pytest.fixture
def clients() -> Iterator[list[SimClient]]:
    """Simulated clients a test starts; stopped afterwards."""
    started: list[SimClient] = []
    yield started
    for c in started:
        c.stop()
