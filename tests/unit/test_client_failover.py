"""Our client moving to another combiner when its own stays unreachable: when it asks the controller,
what it does with the answer, and that its threads really follow (real gRPC fake combiners)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from scaleout.client.connection import ClientIdentity, Connection, GrpcTarget
from scaleout.client.failover import DEFAULT_FAILOVER_AFTER, Failover, failover_after_from_env
from scaleout.client.registration import Assignment, RegistrationError
from scaleoututil.grpc import scaleout_pb2 as pb
from tests.unit.test_client_fakes import FakeCombiner, Poll, running_combiner, wait_until
from tests.unit.test_client_receiver import make_env


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Controller:
    """Answers re-registrations with the next scripted assignment (or error)."""

    def __init__(self, *answers: Assignment | RegistrationError) -> None:
        self.answers = list(answers)
        self.calls = 0

    def register(self) -> Assignment:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, RegistrationError):
            raise answer
        return answer


def assigned(port: int) -> Assignment:
    return Assignment(client_id="c1", host="127.0.0.1", port=port, grpc_secure=False)


def to_target(assignment: Assignment) -> GrpcTarget:
    return GrpcTarget(assignment.host, assignment.port)


@pytest.fixture
def connection() -> Iterator[Connection]:
    conn = Connection(GrpcTarget("127.0.0.1", 1), ClientIdentity("c1", "site-a"))
    yield conn
    conn.close()


def test_the_client_asks_the_controller_only_after_the_combiner_stayed_unreachable(connection: Connection) -> None:
    clock, controller, switched = Clock(), Controller(assigned(2)), []
    failover = Failover(connection, controller.register, to_target, after=10.0, on_switch=switched.append, clock=clock)
    assert failover.failed() is False
    clock.now += 9.9
    assert failover.failed() is False and controller.calls == 0
    failover.succeeded()  # the combiner answered: the outage is over
    clock.now += 5
    assert failover.failed() is False
    clock.now += 10
    assert failover.failed() is True
    assert controller.calls == 1 and connection.target.address == "127.0.0.1:2" and connection.generation == 1
    assert [a.port for a in switched] == [2] and failover.switches == 1


def test_the_same_combiner_again_or_no_answer_keeps_the_connection_and_waits_another_period(
        connection: Connection) -> None:
    clock = Clock()
    controller = Controller(assigned(1), RegistrationError("controller unreachable"), assigned(3))
    failover = Failover(connection, controller.register, to_target, after=5.0, clock=clock)
    failover.failed()
    clock.now += 5
    assert failover.failed() is False and connection.target.address == "127.0.0.1:1"  # same combiner
    clock.now += 1
    assert failover.failed() is False and controller.calls == 1  # not asked again so soon
    clock.now += 4
    assert failover.failed() is False and controller.calls == 2  # the controller could not help
    clock.now += 5
    assert failover.failed() is True and connection.target.address == "127.0.0.1:3"


def test_failover_after_zero_never_moves(connection: Connection) -> None:
    clock, controller = Clock(), Controller(assigned(2))
    failover = Failover(connection, controller.register, to_target, after=0, clock=clock)
    clock.now += 3600
    assert failover.failed() is False and failover.failed() is False and controller.calls == 0


@pytest.mark.parametrize(("value", "expected"), [(None, DEFAULT_FAILOVER_AFTER), ("", DEFAULT_FAILOVER_AFTER),
                                                 ("2.5", 2.5), ("0", 0.0)])
def test_failover_after_comes_from_the_environment(value: str | None, expected: float) -> None:
    environ = {} if value is None else {"SCALEOUT_FAILOVER_AFTER": value}
    assert failover_after_from_env(environ) == expected


@pytest.mark.parametrize("value", ["soon", "-1"])
def test_a_bad_failover_setting_says_what_to_fix(value: str) -> None:
    with pytest.raises(RegistrationError, match="SCALEOUT_FAILOVER_AFTER must be"):
        failover_after_from_env({"SCALEOUT_FAILOVER_AFTER": value})


class Hanging(FakeCombiner):
    """Heartbeats are held until released: a combiner behind a dead link."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def SendHeartbeat(self, request: pb.Heartbeat, context: grpc.ServicerContext) -> pb.Response:  # noqa: N802
        self.release.wait(10)
        return pb.Response()


def test_retarget_cancels_calls_waiting_on_the_combiner_given_up_and_later_calls_reach_the_new_one() -> None:
    with running_combiner(Hanging()) as (old, old_port), running_combiner() as (new, new_port):
        connection = Connection(GrpcTarget("127.0.0.1", old_port), ClientIdentity("c1", "site-a"))
        outcome: list[BaseException | None] = []

        def beat() -> None:
            try:
                connection.unary("SendHeartbeat", pb.Heartbeat(client_id="c1"), timeout=20)
                outcome.append(None)
            except grpc.RpcError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=beat)
        thread.start()
        time.sleep(0.3)  # the heartbeat is now held by the old combiner
        started = time.monotonic()
        connection.retarget(GrpcTarget("127.0.0.1", new_port))
        thread.join(5)
        assert time.monotonic() - started < 2
        assert isinstance(outcome[0], grpc.RpcError) and outcome[0].code() == grpc.StatusCode.CANCELLED
        connection.call("SendHeartbeat", pb.Heartbeat(client_id="c1"), max_attempts=3)
        assert len(new.heartbeats) == 1
        old.release.set()
        connection.close()


class RepeatsStop(FakeCombiner):
    """Answers every poll at once with "stop" for each running task it is told about: what a combiner
    does with a task it never gave out (the client moved here from a combiner that died)."""

    def PollAndReportAsync(self, request: pb.ClientReport, context: grpc.ServicerContext) -> pb.CombinerDirective:  # noqa: N802
        with self.cond:
            self.polls.append(Poll(time.monotonic(), request, {}))
            tasks, self.pending = self.pending, []
        tasks += [pb.TaskRequest(correlation_id=r.correlation_id, status="INTERRUPTED")
                  for r in request.reports if not r.done]
        return pb.CombinerDirective(tasks=tasks)


def test_a_task_slow_to_stop_does_not_make_the_client_poll_in_a_tight_loop(tmp_path: Path) -> None:
    with running_combiner(RepeatsStop()) as (fake, port):
        env = make_env(fake, port, tmp_path)
        release = threading.Event()

        def stuck(params: dict) -> dict:  # ignores the abort for a while, like a call into a dead link
            release.wait(10)
            return {}

        env.client.set_custom_callback("stuck", stuck)
        fake.enqueue(pb.TaskRequest(correlation_id="t-1", type="Custom_stuck", data="{}"))
        env.receiver.start()
        try:
            wait_until(lambda: any(r.correlation_id == "t-1" for p in fake.polls for r in p.report.reports))
            before = len(fake.polls)
            time.sleep(1.5)
            assert len(fake.polls) - before <= 4  # paced at one poll per second, not hundreds
        finally:
            release.set()
            env.close()
