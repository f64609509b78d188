"""The poll loop against a real long-polling in-test combiner: prompt delivery, prompt reports, aborts,
reconnection and per-call metadata."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from scaleout.client.connection import ClientIdentity, Connection, GrpcTarget, Outbox
from scaleout.client.edge_client import EdgeClient
from scaleout.client.registration import TokenRefused
from scaleout.client.task_receiver import TaskReceiver
from scaleout.client.tasks import Task, TaskExecutor
from scaleoututil.grpc import scaleout_pb2 as pb
from tests.unit.test_client_fakes import FakeCombiner, running_combiner, wait_until


@dataclass
class Env:
    fake: FakeCombiner
    client: EdgeClient
    receiver: TaskReceiver
    connection: Connection
    outbox: Outbox

    def close(self) -> None:
        self.receiver.stop()
        self.receiver.join(5)
        self.outbox.close(1)
        self.connection.close()


class StaticToken:
    def __init__(self) -> None:
        self.refreshes = 0

    def access_token(self) -> str:
        return f"token-{self.refreshes}"

    def refresh(self) -> None:
        self.refreshes += 1


def make_env(fake: FakeCombiner, port: int, tmp_path: Path, credentials: StaticToken | None = None,
             poll_timeout: float = 10.0) -> Env:
    connection = Connection(GrpcTarget("127.0.0.1", port), ClientIdentity("client-1", "site-a"), credentials)
    outbox = Outbox(connection)
    client = EdgeClient()
    client._attach("client-1", "site-a", outbox)
    executor = TaskExecutor(connection, outbox, client._callbacks, tmp_path / "cache")
    receiver = TaskReceiver(connection, executor, threading.Event(), poll_timeout=poll_timeout)
    return Env(fake, client, receiver, connection, outbox)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with running_combiner() as (fake, port):
        env = make_env(fake, port, tmp_path)
        env.receiver.start()
        try:
            yield env
        finally:
            env.close()


def custom(correlation_id: str, name: str = "echo", **params: object) -> pb.TaskRequest:
    return pb.TaskRequest(correlation_id=correlation_id, type=f"Custom_{name}", data=json.dumps({"parameters": params}))


def start_abortable_task(env: Env, correlation_id: str) -> None:
    """Deliver a custom task whose callback runs until aborted; return once it is running."""
    running = threading.Event()

    def long_job(params: dict) -> dict:
        running.set()
        while True:
            env.client.check_task_abort()
            time.sleep(0.01)

    env.client.set_custom_callback("long", long_job)
    env.fake.enqueue(custom(correlation_id, "long"))
    assert running.wait(5)


def test_a_task_queued_during_a_long_poll_starts_within_milliseconds(env: Env) -> None:
    started: list[float] = []
    env.client.set_custom_callback("echo", lambda params: started.append(time.monotonic()) or params)
    wait_until(lambda: env.fake.polls)
    time.sleep(0.3)  # the poll is now being held open by the combiner
    queued = time.monotonic()
    env.fake.enqueue(custom("t-1", x=1))
    wait_until(lambda: started)
    assert started[0] - queued < 0.5


def test_a_finished_task_is_reported_at_once_not_when_the_long_poll_ends(env: Env) -> None:
    finished: list[float] = []

    def echo(params: dict) -> dict:
        time.sleep(0.2)
        finished.append(time.monotonic())
        return {"echo": params}

    env.client.set_custom_callback("echo", echo)
    env.fake.enqueue(custom("t-1", x=1))
    report = wait_until(lambda: env.fake.done_report("t-1"), timeout=5)
    reported_at = next(p.at for p in env.fake.polls if any(r.done for r in p.report.reports))
    assert reported_at - finished[0] < 0.5
    assert report.status == "COMPLETED" and json.loads(report.response) == {"echo": {"x": 1}}
    assert report.node_id == "client-1" and report.HasField("started_at") and report.HasField("completed_at")


def test_a_done_task_is_reported_exactly_once(env: Env) -> None:
    env.client.set_custom_callback("echo", lambda params: params)
    env.fake.enqueue(custom("t-1"))
    wait_until(lambda: env.fake.done_report("t-1"))
    env.fake.enqueue(custom("t-2"))  # answers the poll that carried t-1's done report
    wait_until(lambda: env.fake.done_report("t-2"))  # sent by a later poll
    assert sum(r.done for r in env.fake.reports_for("t-1")) == 1
    assert "t-1" not in [t.correlation_id for t in env.receiver.held_tasks()]


def test_running_tasks_are_reported_with_every_poll(env: Env) -> None:
    release = threading.Event()
    env.client.set_custom_callback("slow", lambda params: release.wait(5) and {"ok": True})
    env.fake.enqueue(custom("t-slow", "slow"))
    wait_until(lambda: any(r.status == "RUNNING" for r in env.fake.reports_for("t-slow")), timeout=15)
    release.set()
    assert wait_until(lambda: env.fake.done_report("t-slow")).status == "COMPLETED"


def test_an_interrupt_directive_aborts_the_running_task(env: Env) -> None:
    start_abortable_task(env, "t-long")
    env.fake.enqueue(pb.TaskRequest(correlation_id="t-long", status="INTERRUPTED"))
    report = wait_until(lambda: env.fake.done_report("t-long"))
    assert report.status == "INTERRUPTED"
    assert json.loads(report.response) == {"msg": "Aborted by server"}


def test_abort_for_an_unknown_task_and_bad_statuses_do_not_start_tasks(env: Env) -> None:
    env.fake.enqueue(pb.TaskRequest(correlation_id="ghost", status="INTERRUPTED"))
    env.fake.enqueue(pb.TaskRequest(correlation_id="", type="Custom_echo"))
    polls = len(env.fake.polls)
    wait_until(lambda: len(env.fake.polls) > polls + 1)
    assert env.receiver.held_tasks() == []


def test_an_unexpected_error_in_the_poll_loop_stops_the_client_instead_of_leaving_it_deaf(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_report(self: Task, node_id: str) -> pb.ActivityReport:
        raise RuntimeError("report bug")

    release = threading.Event()
    env.client.set_custom_callback("slow", lambda params: release.wait(5) and {"ok": True})
    monkeypatch.setattr(Task, "report", broken_report)
    env.fake.enqueue(custom("t-slow", "slow"))
    assert env.receiver.stop_event.wait(5), "the poll thread died without stopping the client"
    release.set()
    assert env.receiver.fatal_error is not None and "report bug" in env.receiver.fatal_error
    env.receiver.join(5)
    assert env.receiver._thread is not None and not env.receiver._thread.is_alive()


def test_a_revoked_refresh_token_stops_the_client_instead_of_polling_forever(tmp_path: Path) -> None:
    class RevokedToken(StaticToken):
        def access_token(self) -> str:
            raise TokenRefused("the server refused the token (401: revoked); check --token")

    with running_combiner() as (fake, port):
        env = make_env(fake, port, tmp_path, credentials=RevokedToken())
        env.receiver.start()
        try:
            assert env.receiver.stop_event.wait(5)
            assert env.receiver.fatal_error is not None and "check --token" in env.receiver.fatal_error
        finally:
            env.close()


def test_tasks_arriving_while_the_client_stops_are_not_started(tmp_path: Path) -> None:
    with running_combiner() as (fake, port):
        env = make_env(fake, port, tmp_path)
        try:
            env.receiver.stop_event.set()  # shutdown has begun (and aborted what was running)
            env.receiver._handle(pb.CombinerDirective(tasks=[custom("late")]))
            assert env.receiver.held_tasks() == []
        finally:
            env.close()


def test_every_call_carries_client_metadata(env: Env) -> None:
    wait_until(lambda: env.fake.polls)
    metadata = env.fake.polls[0].metadata
    assert (metadata["client"], metadata["client-id"], metadata["name"]) == ("client-1", "client-1", "site-a")
    assert "authorization" not in metadata


def test_token_goes_in_the_authorization_metadata(tmp_path: Path) -> None:
    with running_combiner() as (fake, port):
        env = make_env(fake, port, tmp_path, credentials=StaticToken())
        env.receiver.start()
        try:
            wait_until(lambda: fake.polls)
            assert fake.polls[0].metadata["authorization"] == "Bearer token-0"
        finally:
            env.close()


def test_the_loop_survives_a_combiner_restart_and_keeps_serving(tmp_path: Path) -> None:
    with running_combiner() as (fake, port):
        env = make_env(fake, port, tmp_path, poll_timeout=2.0)
        env.client.set_custom_callback("echo", lambda params: {"echo": params})
        env.receiver.start()
        wait_until(lambda: fake.polls)
    try:
        time.sleep(0.8)  # combiner down: polls fail with UNAVAILABLE and back off
        with running_combiner(FakeCombiner(), port=port) as (second, _):
            second.enqueue(custom("after-restart", x=2))
            report = wait_until(lambda: second.done_report("after-restart"), timeout=15)
            assert json.loads(report.response) == {"echo": {"x": 2}}
        assert env.receiver.fatal_error is None
    finally:
        env.close()


def test_final_report_tells_the_combiner_how_tasks_ended_without_taking_new_ones(env: Env) -> None:
    start_abortable_task(env, "t-long")
    env.receiver.stop()
    env.receiver.join(5)
    assert env.receiver.abort_all("Aborted by client") == 1
    assert env.receiver.wait_for_tasks(5)
    env.fake.enqueue(custom("must-not-start"))
    env.receiver.final_report()
    last = env.fake.polls[-1].report
    assert last.skip_polling_tasks
    assert [(r.correlation_id, r.status, r.done) for r in last.reports] == [("t-long", "INTERRUPTED", True)]
    assert env.receiver.held_tasks() == []


class TokenCheckingCombiner(FakeCombiner):
    def PollAndReportAsync(self, request: pb.ClientReport, context) -> pb.CombinerDirective:  # type: ignore[override]
        if dict(context.invocation_metadata()).get("authorization") != "Bearer token-1":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "token expired")
        return super().PollAndReportAsync(request, context)


def test_unauthenticated_poll_refreshes_the_token_once_and_retries(tmp_path: Path) -> None:
    credentials = StaticToken()
    with running_combiner(TokenCheckingCombiner()) as (fake, port):
        env = make_env(fake, port, tmp_path, credentials=credentials)
        env.receiver.start()
        try:
            wait_until(lambda: fake.polls)
            assert credentials.refreshes == 1
            assert fake.polls[0].metadata["authorization"] == "Bearer token-1"
        finally:
            env.close()


def test_metrics_logged_while_the_combiner_is_down_arrive_after_it_returns(tmp_path: Path) -> None:
    with running_combiner() as (fake, port):
        env = make_env(fake, port, tmp_path)
    try:
        assert env.client.log_metric({"loss": 0.5})  # queued, not lost
        time.sleep(0.3)
        with running_combiner(FakeCombiner(), port=port) as (second, _):
            wait_until(lambda: second.metrics, timeout=15)
            assert second.metrics[0].metrics[0].value == 0.5
    finally:
        env.close()


class LateCancellingCombiner(FakeCombiner):
    """Holds each of the first polls until just before the client's deadline, then cancels it (as a loaded
    server's late answer looks to the client); afterwards behaves normally."""

    def __init__(self, late_polls: int) -> None:
        super().__init__()
        self.late_polls = late_polls

    def PollAndReportAsync(self, request: pb.ClientReport, context) -> pb.CombinerDirective:  # type: ignore[override]
        if self.late_polls > 0:
            self.late_polls -= 1
            time.sleep(max(0.0, context.time_remaining() - 0.1))
            context.abort(grpc.StatusCode.CANCELLED, "answered too late")
        return super().PollAndReportAsync(request, context)


def test_polls_cancelled_at_their_deadline_are_renewed_at_once_without_back_off(tmp_path: Path) -> None:
    with running_combiner(LateCancellingCombiner(late_polls=4)) as (fake, port):
        env = make_env(fake, port, tmp_path, poll_timeout=0.5)
        env.client.set_custom_callback("echo", lambda params: {"echo": params})
        started = time.monotonic()
        env.receiver.start()
        try:
            fake.enqueue(custom("after-late-polls", x=1))
            wait_until(lambda: fake.done_report("after-late-polls"), timeout=10)
            # four late polls take ~2 s; backing off after each (0.5 + 1 + 2 + 4 s) would take over 9 s
            assert time.monotonic() - started < 5
        finally:
            env.close()
