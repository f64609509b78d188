"""The held poll as our client's heartbeat and telemetry carrier, and the calls coming back when polls fail."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc

from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.protocol import MD_TELEMETRY
from tests.unit.test_client_fakes import FakeCombiner, running_combiner, wait_until
from tests.unit.test_client_receiver import make_env


class Refusing(FakeCombiner):
    """Answers polls UNAVAILABLE while `refuse` is set."""

    refuse = False

    def PollAndReportAsync(self, request: pb.ClientReport, context: grpc.ServicerContext) -> pb.CombinerDirective:  # noqa: N802
        if self.refuse:
            context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
        return super().PollAndReportAsync(request, context)


def test_a_held_poll_carries_liveness_and_telemetry_until_polls_fail(tmp_path: Path) -> None:
    with running_combiner(Refusing()) as (fake, port):
        contacts: list[float] = []
        env = make_env(fake, port, tmp_path, poll_timeout=1.0)
        env.receiver.on_contact = lambda: contacts.append(time.monotonic())
        env.receiver.start()
        try:
            wait_until(lambda: fake.polls)
            # nothing answered yet: the runtime keeps its heartbeat and sends telemetry itself
            assert not env.receiver.carries_liveness()
            assert not env.receiver.carry_telemetry({"cpu_usage": 1.0}, time.time())
            wait_until(lambda: contacts and env.receiver.carries_liveness(), timeout=5)  # answered, held again
            assert env.receiver.carry_telemetry({"cpu_usage": 2.0}, 1_700_000_000.0)
            assert env.receiver.carry_telemetry({"cpu_usage": 3.0, "memory_usage": 4.0}, 1_700_000_001.0)  # newest wins
            carried = wait_until(lambda: [p.metadata[MD_TELEMETRY] for p in fake.polls if MD_TELEMETRY in p.metadata])
            assert [json.loads(c) for c in carried] == [{"at": 1_700_000_001.0,
                                                         "values": {"cpu_usage": 3.0, "memory_usage": 4.0}}]
            fake.refuse = True
            wait_until(lambda: not env.receiver.carries_liveness(), timeout=5)  # heartbeats come back
            assert not env.receiver.carry_telemetry({"cpu_usage": 5.0}, time.time())
        finally:
            env.close()


class Late(FakeCombiner):
    """Lets polls run past their deadline (DEADLINE_EXCEEDED at the client) while `late` is set."""

    late = False
    ended_late = 0

    def PollAndReportAsync(self, request: pb.ClientReport, context: grpc.ServicerContext) -> pb.CombinerDirective:  # noqa: N802
        if self.late:
            time.sleep((context.time_remaining() or 0.0) + 0.1)
            self.ended_late += 1
            return pb.CombinerDirective()
        return super().PollAndReportAsync(request, context)


def test_one_poll_ending_at_its_deadline_keeps_the_poll_as_heartbeat_two_in_a_row_do_not(tmp_path: Path) -> None:
    """A busy combiner's late answer must not bring back 1000 clients' heartbeats; a silent combiner must."""
    with running_combiner(Late()) as (fake, port):
        env = make_env(fake, port, tmp_path, poll_timeout=1.0)
        env.receiver.start()
        try:
            wait_until(lambda: env.receiver.carries_liveness(), timeout=5)
            fake.late = True
            wait_until(lambda: fake.ended_late == 1, timeout=5)
            wait_until(lambda: len(fake.polls) and fake.ended_late == 1 and env.receiver.carries_liveness(), timeout=2)
            wait_until(lambda: fake.ended_late >= 2 and not env.receiver.carries_liveness(), timeout=5)
        finally:
            fake.late = False
            env.close()
