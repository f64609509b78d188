"""The task channel (PollAndReportAsync and friends) against a real combiner on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import grpc
import pytest

from scaleout_server.combiner.client_manager import _long_poll_deadline, now
from scaleoututil.grpc import scaleout_pb2 as pb
from tests.unit.test_combiner_support import Harness, SimClient, running_harness, wait_until


def report(cid: str, done: bool, status: str = "RUNNING", response: str = "") -> pb.ActivityReport:
    return pb.ActivityReport(correlation_id=cid, status=status, done=done, response=response)


def test_long_poll_with_deadline_returns_soon_after_a_task_is_queued(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    client.poll(timeout=None)  # first contact
    result: dict[str, object] = {}

    def long_poll() -> None:
        started = time.monotonic()
        result["tasks"] = client.poll(timeout=5.0)
        result["returned"] = time.monotonic()
        result["started"] = started

    thread = threading.Thread(target=long_poll)
    thread.start()
    time.sleep(0.4)
    queued_at = time.monotonic()
    cid = harness.submit("c1")
    thread.join(6)
    assert [t.correlation_id for t in result["tasks"]] == [cid]  # type: ignore[union-attr]
    assert result["returned"] - queued_at < 0.15  # type: ignore[operator]
    assert queued_at - result["started"] > 0.3  # type: ignore[operator]  # it really was held open
    client.channel.close()


def test_long_poll_without_task_returns_a_second_before_its_deadline(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    started = time.monotonic()
    assert client.poll(timeout=2.5) == []
    elapsed = time.monotonic() - started
    assert 1.3 < elapsed < 1.8
    client.channel.close()


def test_held_poll_is_answered_max_of_a_second_and_a_tenth_of_its_time_before_its_deadline() -> None:
    """Answered 0.5 s ahead, a busy combiner's answers came too late: thousands of DEADLINE_EXCEEDED."""
    def held_for(time_remaining: float | None) -> float | None:
        deadline = _long_poll_deadline(time_remaining)
        return None if deadline is None else round(deadline - now(), 2)

    assert held_for(10.0) == 9.0  # our client's 10 s poll
    assert held_for(30.0) == 27.0
    assert held_for(1.5) == 0.5
    assert held_for(0.9) is None and held_for(None) is None  # no deadline worth holding for: answered at once


def test_poll_without_deadline_or_interval_is_answered_at_once(harness: Harness) -> None:
    """The official 1.0.7 client sends neither: it sleeps between polls itself."""
    client = SimClient(harness.port, "c1")
    started = time.monotonic()
    assert client.poll(timeout=None, interval_ms=0) == []
    assert time.monotonic() - started < 0.3
    cid = harness.submit("c1")
    assert [t.correlation_id for t in client.poll(timeout=None, interval_ms=0)] == [cid]
    client.channel.close()


def test_poll_announcing_its_interval_is_held_for_that_interval_or_until_a_task(harness: Harness) -> None:
    """The official 1.1 client sends poll_interval_ms and no deadline: holding its poll for the
    interval keeps its poll rate and hands it a task the moment one is queued."""
    client = SimClient(harness.port, "c1")
    started = time.monotonic()
    assert client.poll(timeout=None, interval_ms=800) == []
    assert 0.6 < time.monotonic() - started < 1.2
    result: dict[str, object] = {}

    def held_poll() -> None:
        result["tasks"] = client.poll(timeout=None, interval_ms=3000)
        result["returned"] = time.monotonic()

    thread = threading.Thread(target=held_poll)
    thread.start()
    time.sleep(0.4)
    queued_at = time.monotonic()
    cid = harness.submit("c1")
    thread.join(5)
    assert [t.correlation_id for t in result["tasks"]] == [cid]  # type: ignore[union-attr]
    assert result["returned"] - queued_at < 0.15  # type: ignore[operator]
    client.channel.close()


def test_interval_polls_are_answered_at_once_when_holding_is_switched_off(tmp_path: Path) -> None:
    with running_harness(tmp_path, hold_interval_polls=False) as h:
        client = SimClient(h.port, "c1")
        started = time.monotonic()
        assert client.poll(timeout=None, interval_ms=2000) == []
        assert time.monotonic() - started < 0.3
        client.channel.close()


def test_task_reported_done_is_never_sent_again(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    client.poll(timeout=None)
    cid = harness.submit("c1")
    first = client.poll(timeout=None)
    assert [t.correlation_id for t in first] == [cid]
    assert first[0].type == "Custom_ping" and json.loads(first[0].data) == {}
    # still running: re-offering would be harmless, but a running task is not offered as new
    assert client.poll(timeout=None, reports=[report(cid, False)]) == []
    assert client.poll(timeout=None, reports=[report(cid, True, "COMPLETED")]) == []
    assert client.poll(timeout=None, reports=[]) == []
    assert client.poll(timeout=None, reports=[report(cid, True, "COMPLETED")]) == []  # a repeated done report
    client.channel.close()


def test_delivered_task_missing_from_the_next_report_is_offered_again(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    client.poll(timeout=None)
    cid = harness.submit("c1")
    assert [t.correlation_id for t in client.poll(timeout=None)] == [cid]
    # the reply was lost: the client holds nothing, so it reports nothing
    assert [t.correlation_id for t in client.poll(timeout=None, reports=[])] == [cid]
    client.channel.close()


def test_abort_interrupts_only_tasks_reported_not_done(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    client.poll(timeout=None)
    running = harness.submit("c1", session_id="s1")
    finished = harness.submit("c1", session_id="s1")
    other = harness.submit("c1", session_id="s2")
    assert {t.correlation_id for t in client.poll(timeout=None)} == {running, finished, other}
    reply = harness.control.AbortSession(pb.AbortRequest(session_id="s1"), timeout=5)
    assert "2 task" in reply.response
    tasks = client.poll(timeout=None, reports=[report(running, False), report(finished, True, "COMPLETED"),
                                               report(other, False)])
    assert [(t.correlation_id, t.status) for t in tasks] == [(running, "INTERRUPTED")]
    # the client keeps reporting it until it stops: the abort is repeated, never a new task
    tasks = client.poll(timeout=None, reports=[report(running, True, "INTERRUPTED"), report(other, False)])
    assert tasks == []
    client.channel.close()


def test_abort_wakes_a_waiting_long_poll(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    client.poll(timeout=None)
    cid = harness.submit("c1", session_id="s9")
    client.poll(timeout=None)
    out: list[pb.TaskRequest] = []
    thread = threading.Thread(target=lambda: out.extend(client.poll(timeout=5.0, reports=[report(cid, False)])))
    started = time.monotonic()
    thread.start()
    time.sleep(0.3)
    harness.control.AbortSession(pb.AbortRequest(session_id="s9"), timeout=5)
    thread.join(6)
    assert time.monotonic() - started < 1.5
    assert [(t.correlation_id, t.status) for t in out] == [(cid, "INTERRUPTED")]
    client.channel.close()


def test_skip_polling_tasks_hands_out_nothing(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    client.poll(timeout=None)
    cid = harness.submit("c1")
    reply = client.stub.PollAndReportAsync(pb.ClientReport(client_id="c1", skip_polling_tasks=True),
                                           metadata=client.metadata, timeout=5)
    assert list(reply.tasks) == []
    assert [t.correlation_id for t in client.poll(timeout=None)] == [cid]
    client.channel.close()


def test_only_one_training_task_in_flight_per_client(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    client.poll(timeout=None)
    first = harness.submit("c1", task_type="Scaleout_ModelUpdate")
    second = harness.submit("c1", task_type="Scaleout_ModelUpdate")
    custom = harness.submit("c1")
    assert {t.correlation_id for t in client.poll(timeout=None)} == {first, custom}
    assert client.poll(timeout=None, reports=[report(first, False), report(custom, False)]) == []
    tasks = client.poll(timeout=None, reports=[report(first, True, "COMPLETED"), report(custom, False)])
    assert [t.correlation_id for t in tasks] == [second]
    client.channel.close()


def test_version_check_reports_success_and_connect_marks_online(harness: Harness) -> None:
    client = SimClient(harness.port, "c7", name="seven")
    reply = client.stub.Announce(pb.ClientAnnounceRequest(type="VersionCheck",
                                                          parameters=json.dumps({"client-version": "1.1.0"})),
                                 metadata=client.metadata, timeout=5)
    params = json.loads(reply.parameters)
    assert params["success"] is True and params["version"]
    client.stub.Announce(pb.ClientAnnounceRequest(type="Connect"), metadata=client.metadata, timeout=5)
    active = harness.control.ListActiveClients(pb.ClientListRequest(), timeout=5)
    assert [(c.client_id, c.name) for c in active.clients] == [("c7", "seven")]
    client.stub.Announce(pb.ClientAnnounceRequest(type="Disconnect"), metadata=client.metadata, timeout=5)
    assert harness.control.ListActiveClients(pb.ClientListRequest(), timeout=5).clients == []
    assert wait_until(lambda: [e["status"] for e in harness.events_of("client_seen")][-1:] == ["offline"])
    assert {"client_id": "c7", "name": "seven", "status": "online", "ip": "127.0.0.1"} in harness.events_of(
        "client_seen")
    client.channel.close()


def test_poll_without_client_id_fails_with_a_retryable_code(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    with pytest.raises(grpc.RpcError) as err:
        client.stub.PollAndReportAsync(pb.ClientReport(), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    client.channel.close()


def test_legacy_poll_hands_out_one_task_at_a_time(harness: Harness) -> None:
    client = SimClient(harness.port, "old")
    first = harness.submit("old")
    second = harness.submit("old")
    task = client.stub.PollAndReport(pb.ActivityReport(node_id="old"), metadata=client.metadata, timeout=None)
    assert task.correlation_id == first
    busy = client.stub.PollAndReport(pb.ActivityReport(node_id="old", correlation_id=first, status="RUNNING"),
                                     metadata=client.metadata)
    assert busy.correlation_id == ""
    nxt = client.stub.PollAndReport(pb.ActivityReport(node_id="old", correlation_id=first, status="COMPLETED",
                                                      done=True), metadata=client.metadata)
    assert nxt.correlation_id == second
    client.channel.close()


def test_stream_records_are_acked_with_the_ids_received(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    records = [pb.TelemetryRecord(telemetry_id=f"t{i}", key="cpu_usage", payload=json.dumps({"value": i}))
               for i in range(3)]
    acks = list(client.stub.StreamTelemetryRecord(iter(records), metadata=client.metadata, timeout=5))
    assert [list(a.record_ids) for a in acks] == [["t0"], ["t1"], ["t2"]]
    attrs = [pb.AttributeRecord(attribute_id="a1", key="site", payload=json.dumps({"value": "x"}))]
    assert [list(a.record_ids) for a in client.stub.StreamAttributeRecord(iter(attrs), metadata=client.metadata)] \
        == [["a1"]]
    assert wait_until(lambda: len(harness.events_of("telemetry")) == 3 and harness.events_of("attribute"))
    assert harness.events_of("telemetry")[0]["value"] == 0  # the 1.1 client's {"value": v} wrapper is removed
    assert harness.events_of("attribute")[0]["client_id"] == "c1"
    client.channel.close()


def test_status_and_metrics_become_records_with_task_ids(harness: Harness) -> None:
    client = SimClient(harness.port, "c1")
    client.poll(timeout=None)
    cid = harness.submit("c1", task_type="Scaleout_Validation", session_id="sess")
    client.poll(timeout=None)
    client.stub.SendStatus(pb.Status(client_id="c1", status="Model validation completed.", log_level=pb.AUDIT,
                                     type="MODEL_VALIDATION"), metadata=client.metadata)
    metric = pb.ModelMetric(client_id="c1", metrics=[pb.MetricElem(key="loss", value=0.5)], model_id="m",
                            round_id="r1", session_id="sess")
    metric.step.value = 3
    client.stub.SendModelMetric(metric, metadata=client.metadata)
    client.stub.SendModelValidation(pb.ModelValidation(client_id="c1", model_id="m", correlation_id=cid,
                                                       data=json.dumps({"acc": 0.9}), session_id="sess"),
                                    metadata=client.metadata)
    assert wait_until(lambda: harness.events_of("status") and harness.events_of("metric")
                      and harness.events_of("validation"))
    status = harness.events_of("status")[0]
    assert (status["log_level"], status["correlation_id"], status["session_id"]) == ("AUDIT", cid, "sess")
    assert status["sender"] == {"client_id": "c1", "name": "client-c1", "role": "client"}
    m = harness.events_of("metric")[0]
    assert (m["key"], m["value"], m["step"], m["round_id"]) == ("loss", 0.5, 3, "r1")
    v = harness.events_of("validation")[0]
    assert (v["data"], v["correlation_id"], v["session_id"]) == ({"acc": 0.9}, cid, "sess")
    client.channel.close()
