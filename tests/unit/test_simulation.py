"""The pieces of `scaleout simulate` that need no server: slicing clients over hosts, the callback gate,
and how a client learns its partition."""

from __future__ import annotations

import threading
import time

import pytest

from scaleout.client.edge_client import EdgeClient
from scaleout.simulation.host import GatedEdgeClient, client_name, parse_indices
from scaleout.simulation.runner import SimulationConfig, slices
from scaleoututil.partitioning import Partition


def test_slices_cover_every_client_once_in_nearly_equal_parts() -> None:
    parts = slices(10, 3)
    assert parts == [(0, 1, 2, 3), (4, 5, 6), (7, 8, 9)]
    assert slices(2, 4) == [(0,), (1,)]


def test_no_more_hosts_than_clients() -> None:
    from pathlib import Path

    assert SimulationConfig(project=Path("."), clients=3).host_count(default=8) == 3
    assert SimulationConfig(project=Path("."), clients=30, hosts=4).host_count(default=8) == 4


def test_host_indices_parse_ranges_and_lists() -> None:
    assert parse_indices("3-6") == (3, 4, 5, 6)
    assert parse_indices("0,2, 5") == (0, 2, 5)
    assert client_name(7) == "sim-0007"


def test_gated_callbacks_run_at_most_parallel_at_once() -> None:
    gate = threading.Semaphore(2)
    running, peak, lock = [0], [0], threading.Lock()

    def train(model: object, settings: dict) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    clients = [GatedEdgeClient(Partition(i, 6), gate) for i in range(6)]
    for client in clients:
        client.set_train_callback(train)
    threads = [threading.Thread(target=c._callbacks.train, args=(None, {})) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 2


def test_a_virtual_client_knows_its_partition() -> None:
    client = GatedEdgeClient(Partition(3, 10), threading.Semaphore(1))
    assert client.partition == Partition(3, 10)


def test_a_real_client_takes_its_partition_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCALEOUT_PARTITION_ID", raising=False)
    monkeypatch.delenv("SCALEOUT_NUM_PARTITIONS", raising=False)
    assert EdgeClient().partition is None
    monkeypatch.setenv("SCALEOUT_PARTITION_ID", "2")
    monkeypatch.setenv("SCALEOUT_NUM_PARTITIONS", "4")
    assert EdgeClient().partition == Partition(2, 4)
    monkeypatch.setenv("SCALEOUT_PARTITION_ID", "4")
    with pytest.raises(ValueError, match="outside 0..3"):
        _ = EdgeClient().partition
