"""Telemetry carried on a poll (`MD_TELEMETRY`), held polls as liveness, and what the controller makes of them."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from scaleout_server.store import codec
from scaleout_server.store import records as r
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.protocol import MD_TELEMETRY
from tests.unit.test_combiner_support import Harness, SimClient, wait_until
from tests.unit.test_controller_fakes import Env, environment


def poll_with(client: SimClient, telemetry: str, timeout: float | None = None) -> list[pb.TaskRequest]:
    reply = client.stub.PollAndReportAsync(pb.ClientReport(client_id=client.client_id),
                                           metadata=(*client.metadata, (MD_TELEMETRY, telemetry)), timeout=timeout)
    return list(reply.tasks)


def test_telemetry_on_a_poll_is_stored_like_a_telemetry_message(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    poll_with(client, json.dumps({"at": 1_700_000_000.5, "values": {"cpu_usage": 12.5, "memory_usage": 40}}))
    wait_until(lambda: len(harness.events_of("telemetry")) == 2)
    events = harness.events_of("telemetry")
    assert {(e["client_id"], e["key"], e["value"]) for e in events} == {("c1", "cpu_usage", 12.5),
                                                                         ("c1", "memory_usage", 40.0)}
    assert all(e["timestamp"].startswith("2023-11-14T22:13:20.5") for e in events)
    client.channel.close()


@pytest.mark.parametrize("bad", ["not json", "[]", json.dumps({"values": {"cpu": 1}}),
                                 json.dumps({"at": 1, "values": {"cpu": "high"}}),
                                 json.dumps({"at": 1, "values": {"cpu": float("nan")}}),
                                 json.dumps({"at": 1e300, "values": {"cpu": 1}})])
def test_malformed_poll_telemetry_is_ignored_and_the_poll_is_served(harness: Harness, bad: str) -> None:
    client = SimClient(harness.port, "c1")
    cid = harness.submit("c1")
    assert [t.correlation_id for t in poll_with(client, bad)] == [cid]
    time.sleep(0.1)
    assert harness.events_of("telemetry") == []
    client.channel.close()


def test_a_client_whose_poll_is_held_is_listed_as_seen_now(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    client.poll(timeout=None)
    before = time.time()
    held = threading.Thread(target=lambda: client.poll(timeout=3.0))
    held.start()
    wait_until(lambda: harness.combiner.server.clients.clients["c1"].polling == 1)
    time.sleep(0.3)
    [listed] = harness.control.ListActiveClients(pb.ClientListRequest(), timeout=5).clients
    assert listed.client_id == "c1" and listed.last_seen >= before + 0.3  # not when the poll arrived
    harness.submit("c1")
    held.join(5)
    client.channel.close()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with environment(tmp_path) as env:
        yield env


def test_telemetry_in_an_event_batch_moves_the_clients_last_seen_forward(env: Env) -> None:
    """Otherwise the liveness sweep finds every quiet client stale and rewrites them all every few seconds."""
    combiner, _ = env.controller.register_combiner("c1", "127.0.0.1", 1001)
    old = r.utcnow() - timedelta(seconds=60)
    env.store.add_many([r.ClientRecord(client_id="a", name="a", combiner_id=combiner.combiner_id, status="online",
                                       last_seen=old)])
    env.controller.ingest_events(combiner.combiner_id, [codec.encode(r.TelemetryRecord(
        telemetry_id=str(uuid.uuid4()), client_id="a", key="cpu", value=1.0))])
    client = env.store.clients.require("a")
    assert client.telemetry == {"cpu": 1.0}
    assert client.last_seen is not None and client.last_seen.replace(tzinfo=old.tzinfo) > old + timedelta(seconds=55)
    assert env.controller.sweep_clients() == 0
