"""Combiners, client assignment, the combiner event feed and liveness."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from scaleout_server.auth.rest import Forbidden
from scaleout_server.controller import combiners
from scaleout_server.errors import InvalidInput, NotFoundError, Unavailable
from scaleout_server.store import codec
from scaleout_server.store import records as r
from tests.unit.test_controller_fakes import Env, environment


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with environment(tmp_path, start=False) as e:
        yield e


def test_register_combiner_keeps_the_id_for_the_same_name(env: Env) -> None:
    first, repo = env.controller.register_combiner("c1", "127.0.0.1", 12080)
    assert repo == env.repository.describe()
    first.status = "offline"
    env.store.combiners.update(first)
    again, _ = env.controller.register_combiner("c1", "10.0.0.2", 12081, public_hostname="edge.example")
    assert again.combiner_id == first.combiner_id
    assert (again.host, again.port, again.public_hostname, again.status) == ("10.0.0.2", 12081, "edge.example",
                                                                            "online")
    other, _ = env.controller.register_combiner("c2", "127.0.0.1", 12082)
    assert other.combiner_id != first.combiner_id
    with pytest.raises(InvalidInput, match="port"):
        env.controller.register_combiner("c3", "127.0.0.1", 0)


def test_add_client_without_combiner_says_how_to_start_one(env: Env) -> None:
    with pytest.raises(Unavailable, match="no combiner is connected to this controller; start one with "
                                          "`scaleout combiner start --controller URL`"):
        env.controller.add_client(None, None, None, "remote", None, None)


def test_add_client_goes_to_the_least_loaded_combiner_unless_a_preferred_one_is_online(env: Env) -> None:
    a, _ = env.controller.register_combiner("a", "127.0.0.1", 1001)
    b, _ = env.controller.register_combiner("b", "127.0.0.1", 1002)
    assigned = [env.controller.add_client(f"cl{i}", None, None, "remote", "1.1.0", None)[1].name for i in range(4)]
    assert sorted(assigned) == ["a", "a", "b", "b"]

    client, combiner = env.controller.add_client(None, None, "b", "local", "1.1.0", "10.1.1.1")
    assert combiner.combiner_id == b.combiner_id
    assert client.name == f"client-{client.client_id[:8]}"
    assert (client.status, client.package, client.ip, client.combiner_id) == ("online", "local", "10.1.1.1",
                                                                              b.combiner_id)
    assert client.last_seen is not None
    _, by_id = env.controller.add_client(None, "named", a.combiner_id, "remote", None, None)
    assert by_id.combiner_id == a.combiner_id

    b.status = "offline"
    env.store.combiners.update(b)
    _, fallback = env.controller.add_client(None, None, "b", "remote", None, None)
    assert fallback.combiner_id == a.combiner_id
    # re-registering keeps the client id and updates the record
    again, _ = env.controller.add_client("cl0", "renamed", None, "remote", "1.1.1", None)
    assert again.client_id == "cl0" and again.name == "renamed" and again.client_version == "1.1.1"
    assert env.store.clients.count() == 7


def test_ingest_events_stores_records_and_upserts_seen_clients(env: Env) -> None:
    combiner, _ = env.controller.register_combiner("c1", "127.0.0.1", 1001)
    metric = r.MetricRecord(metric_id="m1", key="loss", value=0.5, sender=r.Sender(client_id="x", name="cx"))
    validation = r.ValidationRecord(validation_id="v1", model_id="m", data={"acc": 0.9}, sender=r.Sender("x"))
    events = [codec.encode(metric), codec.encode(validation),
              {"kind": "client_seen", "data": {"client_id": "x", "name": "cx", "status": "online", "ip": "1.2.3.4"}},
              {"kind": "combiner_load", "data": {"load": 3}}]
    assert env.controller.ingest_events(combiner.combiner_id, events) == 4
    assert env.store.metrics.require("m1").value == 0.5
    assert env.store.validations.require("v1").data == {"acc": 0.9}
    client = env.store.clients.require("x")
    assert (client.name, client.status, client.ip, client.combiner_id) == ("cx", "online", "1.2.3.4",
                                                                           combiner.combiner_id)
    assert env.store.combiners.require(combiner.combiner_id).load == 3
    # a batch sent twice stores nothing new and does not fail
    env.controller.ingest_events(combiner.combiner_id, events[:2])
    assert env.store.metrics.count() == 1
    env.controller.ingest_events(combiner.combiner_id, [
        {"kind": "client_seen", "data": {"client_id": "x", "status": "offline"}}])
    assert env.store.clients.require("x").status == "offline" and env.store.clients.require("x").name == "cx"


@pytest.mark.parametrize(("event", "message"), [
    ({"kind": "gossip", "data": {}}, "event 1: unknown kind 'gossip'; accepted: update, validation, metric"),
    ({"kind": "round", "data": {}}, "unknown kind 'round'"),
    ({"kind": "client_seen", "data": {"client_id": "y", "status": "away"}}, "status must be 'online' or 'offline'"),
    ({"kind": "client_seen", "data": {"status": "online"}}, "client_id is required"),
    ({"kind": "combiner_load", "data": {"load": "lots"}}, "data.load must be an integer"),
    ({"kind": "metric", "data": {"metric_id": "m2", "bogus_field": 1}}, "event 1 (metric)"),
    ("text", "event 1: expected an object"),
    # wrongly typed values are refused with the field's name, not stored (a 500 from the database before)
    ({"kind": "metric", "data": {"metric_id": "m2", "key": "k", "value": "abc", "sender": {}}},
     "event 1 (metric): value: expected a number, got str"),
    ({"kind": "metric", "data": {"metric_id": ["m2"], "key": "k", "value": 1, "sender": {}}},
     "metric_id: expected a string, got list"),
    ({"kind": "metric", "data": {"metric_id": "m2", "key": "k", "value": 1, "sender": "me"}},
     "Sender: expected an object, got str"),
    ({"kind": "metric", "data": {"metric_id": "m2", "key": "k", "value": 1, "sender": {}, "step": 2**70}},
     "step: 1180591620717411303424 is out of range"),
    ({"kind": "attribute", "data": {"attribute_id": "a", "client_id": ["x"], "key": "k", "value": 1}},
     "client_id: expected a string, got list"),
    ({"kind": "validation", "data": {"validation_id": "v", "model_id": "m", "data": [1], "sender": {}}},
     "data: expected an object, got list"),
    ({"kind": "combiner_load", "data": {"load": 2**70}}, "data.load must be an integer >= 0"),
    ({"kind": "client_seen", "data": {"client_id": "y", "status": "online", "name": 5}}, "data.name must be a string"),
])
def test_ingest_events_rejects_a_bad_batch_as_a_whole(env: Env, event: object, message: str) -> None:
    combiner, _ = env.controller.register_combiner("c1", "127.0.0.1", 1001)
    good = codec.encode(r.MetricRecord(metric_id="m1", key="loss", value=0.5, sender=r.Sender()))
    with pytest.raises(InvalidInput) as info:
        env.controller.ingest_events(combiner.combiner_id, [good, event])  # type: ignore[list-item]
    assert message in str(info.value)
    assert env.store.metrics.count() == 0


def test_ingest_events_from_an_unknown_combiner_is_not_found(env: Env) -> None:
    with pytest.raises(NotFoundError, match="not registered"):
        env.controller.ingest_events("nope", [])
    with pytest.raises(NotFoundError, match="not registered"):  # unknown before refused
        env.controller.ingest_events("nope", [], bound_name="c1")


def test_ingest_events_refuses_a_batch_for_another_combiner_than_the_token_names(env: Env) -> None:
    combiner, _ = env.controller.register_combiner("c1", "127.0.0.1", 1001)
    with pytest.raises(Forbidden, match="this combiner token is for the combiner named 'c2'; it cannot send "
                                        "events for combiner 'c1'"):
        env.controller.ingest_events(combiner.combiner_id, [{"kind": "combiner_load", "data": {"load": 3}}],
                                     bound_name="c2")
    assert env.store.combiners.require(combiner.combiner_id).load != 3
    assert env.controller.ingest_events(combiner.combiner_id, [{"kind": "combiner_load", "data": {"load": 3}}],
                                        bound_name="c1") == 1


def test_register_combiner_records_whether_it_serves_tls(env: Env) -> None:
    first, _ = env.controller.register_combiner("c1", "127.0.0.1", 12080, grpc_secure=True)
    assert env.store.combiners.require(first.combiner_id).grpc_secure is True
    again, _ = env.controller.register_combiner("c1", "127.0.0.1", 12080)  # restarted without TLS
    assert again.grpc_secure is False and env.store.combiners.require(first.combiner_id).grpc_secure is False


def test_quiet_clients_are_marked_offline_unless_their_combiner_still_lists_them(env: Env) -> None:
    fake = env.combiner("c1", "connected")
    env.controller.add_client("fresh", None, None, "remote", None, None)
    old = r.utcnow() - timedelta(seconds=env.settings.client_offline_after + 1)
    for cid in ("gone", "connected"):
        client, _ = env.controller.add_client(cid, None, None, "remote", None, None)
        client.last_seen = old
        env.store.clients.update(client)
    assert env.controller.sweep_clients() == 1
    assert env.store.clients.require("gone").status == "offline"
    assert env.store.clients.require("connected").status == "online"
    assert env.store.clients.require("fresh").status == "online"
    fake.clients.clear()
    assert env.controller.sweep_clients() == 1
    assert env.store.clients.require("connected").status == "offline"


def test_sweep_refreshes_last_seen_of_quiet_clients_their_combiner_still_lists(env: Env) -> None:
    fake = env.combiner("c1", "quiet")
    fake.clients[0].last_seen = time.time()
    client, _ = env.controller.add_client("quiet", None, None, "remote", None, None)
    client.last_seen = r.utcnow() - timedelta(seconds=env.settings.client_offline_after + 30)
    env.store.clients.update(client)
    env.controller.sweep_clients()
    refreshed = env.store.clients.require("quiet")
    assert refreshed.status == "online"
    assert (r.utcnow() - refreshed.last_seen).total_seconds() < 5


def test_silent_combiners_are_probed_and_dead_ones_marked_offline(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    alive = env.combiner("alive", "a", "b")
    dead, _ = env.controller.register_combiner("dead", "127.0.0.1", 1)  # nothing listens there
    old = r.utcnow() - timedelta(seconds=combiners.OFFLINE_AFTER + 5)
    for record in env.store.combiners.list()[1]:
        record.last_seen = old
        env.store.combiners.update(record)
    env.controller.registry.sweep()
    by_name = {c.name: c for c in env.store.combiners.list()[1]}
    assert by_name["alive"].status == "online" and by_name["alive"].load == len(alive.clients)
    assert by_name["dead"].status == "offline" and by_name["dead"].combiner_id == dead.combiner_id
    # a combiner that sends events is online again
    env.controller.ingest_events(dead.combiner_id, [])
    assert env.store.combiners.require(dead.combiner_id).status == "online"


def test_mark_offline_spares_a_combiner_heard_from_within_the_given_time(env: Env) -> None:
    fresh, _ = env.controller.register_combiner("fresh", "127.0.0.1", 1001)
    registry = env.controller.registry
    registry.mark_offline(fresh.combiner_id, "silent", unless_seen_within=combiners.OFFLINE_AFTER)
    assert env.store.combiners.require(fresh.combiner_id).status == "online"
    registry.mark_offline(fresh.combiner_id, "lost its connection")
    assert env.store.combiners.require(fresh.combiner_id).status == "offline"


def test_active_clients_skips_an_unreachable_combiner(env: Env) -> None:
    fake = env.combiner("up", "a")
    env.controller.register_combiner("down", "127.0.0.1", 1)
    active = env.controller.registry.active_clients()
    up = env.controller.registry.find("up")
    assert up is not None
    assert list(active) == [up.combiner_id]
    assert [c.client_id for c in active[up.combiner_id]] == [c.client_id for c in fake.clients]
