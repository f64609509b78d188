"""Fixtures shared by the REST-client and CLI unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.test_api_client_support import FakeController, running_fake_controller


@pytest.fixture
def fake() -> Iterator[FakeController]:
    """A recording HTTP server standing in for the controller (a module may override it)."""
    with running_fake_controller() as controller:
        yield controller
