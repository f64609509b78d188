"""A combiner under many clients: keepalive slack, the open-file limit, and failures that must not stop it."""

from __future__ import annotations

import errno
import logging
import resource
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from scaleout_server.combiner import server as combiner_server
from scaleout_server.combiner.open_files import (
    FDS_PER_CLIENT,
    clients_supported,
    descriptors_needed,
    prepare_open_file_limit,
    raise_open_file_limit,
)
from scaleout_server.combiner.server import grpc_options
from scaleout_server.repository.local import LocalRepository
from scaleout_server.settings import ServerSettings
from tests.unit.test_combiner_support import SEED_ID, Harness, SimClient, wait_until


def test_keepalive_rule_leaves_slack_below_the_clients_five_second_pings() -> None:
    """The official client pings every 5 s; accepting exactly 5 s turns a ping that arrives early into a strike."""
    options = dict(grpc_options(ServerSettings()))
    assert options["grpc.http2.min_ping_interval_without_data_ms"] <= 4000
    assert options["grpc.keepalive_permit_without_calls"] == 1


@pytest.fixture
def restored_nofile() -> Iterator[tuple[int, int]]:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield before
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_open_file_limit_is_raised_to_the_hard_limit(restored_nofile: tuple[int, int]) -> None:
    _, hard = restored_nofile
    if hard == resource.RLIM_INFINITY or hard <= 512:
        pytest.skip(f"needs a finite hard limit above 512, not {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    assert raise_open_file_limit() == (hard, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)


def test_open_file_limit_too_low_for_the_target_is_a_clear_warning(restored_nofile: tuple[int, int],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scaleout_server.combiner.open_files")
    limit = prepare_open_file_limit(target_clients=10**9)
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and f"open-file limit is {limit}" in warning[0]
    assert "LimitNOFILE" in warning[0] and str(descriptors_needed(10**9)) in warning[0]
    caplog.clear()
    prepare_open_file_limit(target_clients=1)
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "open-file limit" in caplog.records[0].getMessage()


def test_clients_supported_leave_room_for_the_server_itself() -> None:
    assert clients_supported(1024) < 1024 // FDS_PER_CLIENT  # the default limit is not enough for 1000 clients
    assert clients_supported(descriptors_needed(1000)) == 1000
    assert clients_supported(10) == 0


def test_sweep_survives_running_out_of_file_descriptors(harness: Harness, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []

    def failing_sweep() -> None:
        calls.append(time.monotonic())
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(combiner_server, "SWEEP_INTERVAL", 0.02)
    monkeypatch.setattr(harness.combiner.server.clients, "sweep", failing_sweep)
    caplog.set_level(logging.ERROR, logger="scaleout_server.combiner.server")
    assert wait_until(lambda: len(calls) >= 10, timeout=10)
    errors = [r for r in caplog.records if "sweep failed" in r.getMessage()]
    assert len(errors) == 1  # said once a minute, not on every pass
    assert "open-file limit" in errors[0].getMessage()
    sweeper = next(t for t in harness.combiner.server._background if t.get_name() == "combiner-sweep")
    assert not sweeper.done()


class _OutOfDescriptors(LocalRepository):
    def open(self, namespace: str, key: str) -> Any:
        raise OSError(errno.EMFILE, "Too many open files")


def test_download_that_cannot_open_the_model_is_unavailable_so_the_client_retries(harness: Harness) -> None:
    """UNKNOWN would fail the official client's task; UNAVAILABLE is retried (wire contract §4.2)."""
    service = harness.combiner.server.model_service
    service.repository = _OutOfDescriptors(harness.repository.root)
    client = SimClient(harness.port, "c1")
    try:
        with pytest.raises(grpc.RpcError) as err:
            client.download(SEED_ID)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Too many open files" in err.value.details()
        service.repository = harness.repository
        data, trailer = client.download(SEED_ID)
        assert data and trailer
    finally:
        client.channel.close()
