"""The controller's event feed and liveness sweep at scale: a combiner's batch carries thousands of
clients' telemetry, and the sweep refreshes or retires thousands of clients. Both must keep what the
REST API shows (current values, last_seen, online/offline) and cost a bounded number of statements."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from scaleout_server.store import codec
from scaleout_server.store import records as r
from tests.sql_statements import counted_statements
from tests.unit.test_api_support import Api, build_api
from tests.unit.test_controller_fakes import Env, environment


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with environment(tmp_path, start=False) as e:
        yield e


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from build_api(tmp_path)


def telemetry(client_id: str, key: str, value: float) -> dict[str, Any]:
    return codec.encode(r.TelemetryRecord(telemetry_id=str(uuid.uuid4()), client_id=client_id, key=key, value=value))


def attribute(client_id: str, key: str, value: Any) -> dict[str, Any]:
    return codec.encode(r.AttributeRecord(attribute_id=str(uuid.uuid4()), client_id=client_id, key=key, value=value))


def seen(client_id: str, status: str = "online", **data: str) -> dict[str, Any]:
    return {"kind": "client_seen", "data": {"client_id": client_id, "status": status, **data}}


def old_enough(env: Env) -> Any:
    return r.utcnow() - timedelta(seconds=env.settings.client_offline_after + 30)


def test_a_batch_keeps_each_clients_latest_values_as_the_rest_api_shows_them(api: Api) -> None:
    combiner, _ = api.controller.register_combiner("c1", "127.0.0.1", 1001)
    post = f"/api/v1/combiners/{combiner.combiner_id}/events"
    assert api.client.post(post, json={"events": [
        seen("a", name="alpha"), telemetry("a", "cpu", 1.0), telemetry("a", "mem", 10.0),
        attribute("a", "zone", "north")]}).status_code == 200
    res = api.client.post(post, json={"events": [
        telemetry("a", "cpu", 2.0), telemetry("b", "cpu", 7.0), attribute("a", "zone", "south"),
        telemetry("a", "cpu", 3.0),  # the same client and key twice in a batch: the later one wins
        attribute("a", "gpu", True), telemetry("ghost", "cpu", 9.0), seen("b")]})
    assert res.status_code == 200, res.text

    clients = {c["client_id"]: c for c in api.client.get("/api/v1/clients/").json()["result"]}
    assert set(clients) == {"a", "b"}  # telemetry of a client nobody registered creates no client
    assert clients["a"]["telemetry"] == {"cpu": 3.0, "mem": 10.0}  # keys not in the batch are kept
    assert clients["b"]["telemetry"] == {"cpu": 7.0}  # seen in the same batch, after its telemetry
    assert (clients["a"]["name"], clients["a"]["status"], clients["b"]["status"]) == ("alpha", "online", "online")
    current = api.client.post("/api/v1/attributes/current", json={"node_ids": ["a", "b", "ghost"]}).json()
    assert current == {"a": {"zone": "south", "gpu": True}, "b": {}, "ghost": {}}
    assert api.store.telemetry.count() == 6  # every record is stored, not only the latest


def test_client_seen_events_of_one_batch_apply_in_order(env: Env) -> None:
    combiner, _ = env.controller.register_combiner("c1", "127.0.0.1", 1001)
    before = r.utcnow()
    env.controller.ingest_events(combiner.combiner_id, [
        seen("x", name="ex", ip="10.0.0.1"), seen("x", status="offline"), seen("y"), seen("y", name="why")])
    x, y = env.store.clients.require("x"), env.store.clients.require("y")
    assert (x.name, x.ip, x.status, x.combiner_id) == ("ex", "10.0.0.1", "offline", combiner.combiner_id)
    assert (y.name, y.status) == ("why", "online")
    assert x.last_seen >= before and y.last_seen >= before


def test_a_batch_of_a_thousand_clients_costs_a_bounded_number_of_statements(env: Env) -> None:
    combiner, _ = env.controller.register_combiner("c1", "127.0.0.1", 1001)

    def batch(n: int, value: float) -> list[dict[str, Any]]:
        ids = [f"client-{i:04d}" for i in range(n)]
        return ([seen(cid) for cid in ids] + [telemetry(cid, key, value) for cid in ids for key in ("cpu", "mem")]
                + [attribute(cid, "zone", f"z{value}") for cid in ids])

    with counted_statements(env.store) as small:
        env.controller.ingest_events(combiner.combiner_id, batch(10, 1.0))
    with counted_statements(env.store) as large:
        env.controller.ingest_events(combiner.combiner_id, batch(1000, 2.0))
    # per-record work would be thousands; the record inserts look up stored ids 500 at a time
    assert len(large) <= 30, large
    # the combiner's own row is rewritten at most once a second, so one of the two may carry that write too
    assert len(large) - len(small) <= 10
    assert env.store.clients.count({"status": "online"}) == 1000
    last = env.store.clients.require("client-0999")
    assert last.telemetry == {"cpu": 2.0, "mem": 2.0} and last.attributes == {"zone": "z2.0"}
    assert env.store.clients.require("client-0000").telemetry == {"cpu": 2.0, "mem": 2.0}


def test_sweep_refreshes_and_retires_a_thousand_clients_in_a_bounded_number_of_statements(env: Env) -> None:
    connected = [f"on-{i:04d}" for i in range(1000)]
    gone = [f"off-{i:04d}" for i in range(1000)]
    fake = env.combiner("c1", *connected)
    combiner_id = env.store.combiners.list()[1][0].combiner_id
    heard = time.time() - 1
    for state in fake.clients:
        state.last_seen = heard
    env.store.add_many([r.ClientRecord(client_id=cid, name=cid, combiner_id=combiner_id, status="online",
                                       last_seen=old_enough(env)) for cid in connected + gone])
    env.store.clients.upsert(r.ClientRecord(client_id="fresh", name="fresh", combiner_id=combiner_id,
                                            status="online", last_seen=r.utcnow()))

    with counted_statements(env.store) as statements:
        assert env.controller.sweep_clients() == 1000
    assert len(statements) <= 20, statements

    by_status: dict[str, set[str]] = {}
    for client in env.store.clients.list()[1]:
        by_status.setdefault(client.status, set()).add(client.client_id)
    assert by_status == {"online": {*connected, "fresh"}, "offline": set(gone)}
    refreshed = env.store.clients.require("on-0999").last_seen
    assert abs(refreshed.timestamp() - heard) < 0.01  # the combiner's time, not the sweep's
    with counted_statements(env.store) as statements:
        assert env.controller.sweep_clients() == 0  # nothing stale any more: one query
    assert [s.split()[0] for s in statements] in (["SELECT"], ["BEGIN", "SELECT"])


def test_sweep_never_moves_last_seen_back_and_keeps_connected_clients_online(env: Env) -> None:
    fake = env.combiner("c1", "quiet")
    stored = old_enough(env)
    fake.clients[0].last_seen = (stored - timedelta(seconds=60)).timestamp()  # the combiner knows an older time
    client, _ = env.controller.add_client("quiet", None, None, "remote", None, None)
    client.last_seen = stored
    env.store.clients.update(client)
    assert env.controller.sweep_clients() == 0
    after = env.store.clients.require("quiet")
    assert after.status == "online" and after.last_seen == stored


def test_sweep_spares_a_client_seen_while_it_asked_the_combiners(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.combiner("c1")
    combiner_id = env.store.combiners.list()[1][0].combiner_id
    for cid in ("back", "gone"):
        env.store.clients.upsert(r.ClientRecord(client_id=cid, name=cid, combiner_id=combiner_id, status="online",
                                                last_seen=old_enough(env)))
    ask = env.controller.registry.active_clients

    def meanwhile(*args: Any, **kwargs: Any) -> Any:
        env.controller.ingest_events(combiner_id, [seen("back")])  # reconnects during the sweep
        return ask(*args, **kwargs)

    monkeypatch.setattr(env.controller.registry, "active_clients", meanwhile)
    assert env.controller.sweep_clients() == 1
    assert env.store.clients.require("back").status == "online"
    assert env.store.clients.require("gone").status == "offline"


def test_event_batches_rewrite_the_combiners_record_only_when_it_changes_or_a_second_passed(env: Env) -> None:
    combiner, _ = env.controller.register_combiner("c1", "127.0.0.1", 1001)
    load = {"kind": "combiner_load", "data": {"load": 3}}
    env.controller.ingest_events(combiner.combiner_id, [load])
    first = env.store.combiners.require(combiner.combiner_id)
    assert first.load == 3
    with counted_statements(env.store) as statements:
        env.controller.ingest_events(combiner.combiner_id, [load])  # same load, just heard from
    assert not [s for s in statements if s.startswith("UPDATE")]
    assert env.store.combiners.require(combiner.combiner_id).last_seen == first.last_seen
    env.controller.ingest_events(combiner.combiner_id, [{"kind": "combiner_load", "data": {"load": 4}}])
    assert env.store.combiners.require(combiner.combiner_id).load == 4  # a new load is written at once
    first.last_seen = r.utcnow() - timedelta(seconds=1.5)
    env.store.combiners.update(first)
    env.controller.ingest_events(combiner.combiner_id, [])
    assert (r.utcnow() - env.store.combiners.require(combiner.combiner_id).last_seen).total_seconds() < 1
