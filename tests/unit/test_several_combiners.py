"""Several combiners on the controller side: where clients go, how their combiners are dialled, and what
a round does when a combiner is lost (real gRPC fake combiners, a real SQLite store and local repository)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest

from scaleout_server.controller import combiners, models
from scaleout_server.controller.combiners import combiner_address, dial_address
from scaleout_server.errors import InvalidInput
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.protocol import RoundStatus, SessionStatus
from tests.unit.test_controller_fakes import HELPER, Env, FakeCombiner, environment, serve


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with environment(tmp_path) as e:
        yield e


def make_quiet(env: Env, name: str) -> None:
    """As if the combiner had sent nothing for longer than a live one ever stays silent."""
    record = env.controller.registry.find(name)
    assert record is not None
    record.last_seen = r.utcnow() - timedelta(seconds=combiners.FRESH_FOR + 5)
    env.store.combiners.update(record)


def test_a_wildcard_bound_combiner_is_dialled_at_its_public_hostname() -> None:
    assert dial_address("0.0.0.0", 12080, "combiner-1.example") == "combiner-1.example:12080"
    assert dial_address("0.0.0.0", 12080) == "127.0.0.1:12080"
    assert dial_address("10.0.0.5", 12080, "ignored.example") == "10.0.0.5:12080"
    assert dial_address("::", 12080, "fd00::7") == "[fd00::7]:12080"
    record = r.CombinerRecord(combiner_id="c", name="c", host="::", port=1, public_hostname="edge")
    assert combiner_address(record) == "edge:1"


def test_clients_registering_at_once_spread_evenly_over_the_combiners(env: Env,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    env.controller.register_combiner("a", "127.0.0.1", 1001)
    env.controller.register_combiner("b", "127.0.0.1", 1002)
    upsert = env.store.clients.upsert

    def slow_upsert(record: r.ClientRecord) -> r.ClientRecord:
        time.sleep(0.02)  # widen the window between counting a combiner's clients and recording one more
        return upsert(record)

    monkeypatch.setattr(env.store.clients, "upsert", slow_upsert)
    threads = [threading.Thread(target=env.controller.add_client, args=(f"c{i}", None, None, "local", None, None))
               for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    counts = {c.name: env.store.clients.count({"combiner_id": c.combiner_id}) for c in env.store.combiners.list()[1]}
    assert counts == {"a": 5, "b": 5}


def test_an_unknown_preferred_combiner_is_refused_with_the_registered_names(env: Env) -> None:
    env.controller.register_combiner("edge-1", "127.0.0.1", 1001)
    env.controller.register_combiner("edge-2", "127.0.0.1", 1002)
    with pytest.raises(InvalidInput, match=r"preferred combiner 'edge-3' is not registered with this controller "
                                           r"\(registered: edge-1, edge-2\); fix the name or start the client "
                                           r"without --preferred-combiner"):
        env.controller.add_client("c1", None, "edge-3", "local", None, None)
    assert env.store.clients.get("c1") is None


def test_a_quiet_combiner_that_does_not_answer_a_probe_gets_no_clients_and_is_marked_offline(env: Env) -> None:
    alive = env.combiner("alive", "x")
    env.controller.register_combiner("dead", "127.0.0.1", 1)  # nothing listens there
    for name in ("alive", "dead"):
        make_quiet(env, name)
    # "dead" has fewer clients, so it is the first candidate, and the preferred one of the second client
    env.controller.add_client("x", None, None, "local", None, None)
    _, first = env.controller.add_client("c1", None, None, "local", None, None)
    assert first.name == "alive"
    statuses = {c.name: c.status for c in env.store.combiners.list()[1]}
    assert statuses == {"alive": "online", "dead": "offline"}
    assert env.store.combiners.require(first.combiner_id).load == len(alive.clients)  # the probe's answer
    _, second = env.controller.add_client("c2", None, "dead", "local", None, None)
    assert second.name == "alive"


def test_a_quiet_preferred_combiner_that_answers_its_probe_is_kept(env: Env) -> None:
    env.combiner("a")
    env.combiner("b", "x", "y")
    make_quiet(env, "b")
    _, combiner = env.controller.add_client("c1", None, "b", "local", None, None)
    assert combiner.name == "b"
    assert env.store.combiners.require(combiner.combiner_id).status == "online"


def test_without_a_live_combiner_registration_is_unavailable(env: Env) -> None:
    env.controller.register_combiner("dead", "127.0.0.1", 1)
    make_quiet(env, "dead")
    with pytest.raises(Exception, match="no combiner is connected to this controller"):
        env.controller.add_client("c1", None, None, "local", None, None)


def run_session(env: Env, config: dict, timeout: float = 20) -> r.SessionRecord:
    session = env.controller.create_session("s", config, None)
    env.controller.start_session(session.session_id)
    assert env.controller.wait_for_session(timeout), "session did not end in time"
    return env.store.sessions.require(session.session_id)


def rounds_of(env: Env, session_id: str) -> list[r.RoundRecord]:
    return env.store.rounds.list(ListQuery(filters={"session_id": session_id}, sort_key="round_number",
                                           descending=False))[1]


def test_a_combiner_lost_mid_round_is_marked_offline_and_the_round_completes_from_the_others(env: Env) -> None:
    env.combiner("lost", "a", fail_with=grpc.StatusCode.UNAVAILABLE)
    env.combiner("kept", "b", delta=2.0)
    env.seed()
    session = run_session(env, {"rounds": 2, "validate": False, "clients_required": 1, "requested_clients": 2})
    assert session.status == SessionStatus.FINISHED, session.error
    first, second = rounds_of(env, session.session_id)
    entries = {c["name"]: c for c in first.combiners}
    assert "UNAVAILABLE" in entries["lost"]["error"] and entries["lost"]["model_id"] is None
    assert first.round_data["lost_combiners"] == ["lost"] and first.round_data["attempts"] == 1
    assert np.allclose(models.load_params(env.repository, first.new_model_id, HELPER)[0], 2.0)
    # the next round no longer asks the lost combiner
    assert [c["name"] for c in second.combiners] == ["kept"]
    assert env.controller.registry.find("lost").status == "offline"  # type: ignore[union-attr]


class LosesItsClients(FakeCombiner):
    """A combiner whose RunRound is lost, while its client turns up at another combiner."""

    def __init__(self, name: str, env: Env, heir: FakeCombiner) -> None:
        super().__init__(name, env.repository, fail_with=grpc.StatusCode.UNAVAILABLE)
        self.heir = heir

    def RunRound(self, request: pb.RoundSpec, context: grpc.ServicerContext) -> pb.RoundOutcome:  # noqa: N802
        self.heir.clients = [pb.ActiveClient(client_id=c.client_id, name=c.name) for c in self.clients]
        self.clients = []
        return super().RunRound(request, context)


def test_a_round_that_lost_its_only_combiner_is_run_once_more_with_the_clients_connected_then(env: Env) -> None:
    heir = env.combiner("heir", delta=3.0)
    doomed = LosesItsClients("doomed", env, heir)
    doomed.add_clients("a")
    ctx = serve(doomed)
    ctx.__enter__()
    try:
        env.controller.register_combiner("doomed", "127.0.0.1", doomed.port)
        env.seed()
        session = run_session(env, {"rounds": 1, "validate": False, "clients_required": 1})
    finally:
        ctx.__exit__(None, None, None)
    assert session.status == SessionStatus.FINISHED, session.error
    (round_,) = rounds_of(env, session.session_id)
    assert round_.status == RoundStatus.FINISHED
    assert round_.round_data["attempts"] == 2 and round_.round_data["lost_combiners"] == ["doomed"]
    assert [c["name"] for c in round_.combiners] == ["heir"]
    assert np.allclose(models.load_params(env.repository, round_.new_model_id, HELPER)[0], 3.0)


def test_a_combiner_failing_without_losing_its_connection_fails_the_round_without_a_retry(env: Env) -> None:
    env.combiner("broken", "a", fail_with=grpc.StatusCode.INTERNAL)
    env.seed()
    session = run_session(env, {"rounds": 1, "validate": False, "round_timeout": 5})
    assert session.status == SessionStatus.FAILED
    (round_,) = rounds_of(env, session.session_id)
    assert round_.round_data["attempts"] == 1 and "lost_combiners" not in round_.round_data
    assert env.controller.registry.find("broken").status == "online"  # type: ignore[union-attr]


def test_a_late_offline_report_from_the_combiner_a_client_left_does_not_override_its_new_combiner(env: Env) -> None:
    old, _ = env.controller.register_combiner("old", "127.0.0.1", 1001)
    new, _ = env.controller.register_combiner("new", "127.0.0.1", 1002)
    env.controller.ingest_events(old.combiner_id, [
        {"kind": "client_seen", "data": {"client_id": "c1", "name": "site-a", "status": "online"}}])
    # the client lost "old" and registered again: the controller moved it to "new"
    old_record = env.store.combiners.require(old.combiner_id)
    old_record.status = "offline"
    env.store.combiners.update(old_record)
    _, assigned = env.controller.add_client("c1", "site-a", None, "local", None, None)
    assert assigned.combiner_id == new.combiner_id
    # "old" comes back from a partition and reports that the client left it
    env.controller.ingest_events(old.combiner_id, [
        {"kind": "client_seen", "data": {"client_id": "c1", "status": "offline"}}])
    client = env.store.clients.require("c1")
    assert (client.status, client.combiner_id) == ("online", new.combiner_id)
    # the new combiner's own reports still count
    env.controller.ingest_events(new.combiner_id, [
        {"kind": "client_seen", "data": {"client_id": "c1", "status": "offline"}}])
    assert env.store.clients.require("c1").status == "offline"
