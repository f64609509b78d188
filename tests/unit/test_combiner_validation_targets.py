"""Which clients a real combiner sends validation tasks to: not one that announced it has no validate callback
(ours, Announce Connect {"validate": false}), nor one that answered a validation task without a validation
(the published clients' way: COMPLETED, nothing sent), until its next VersionCheck (a new client process)
or a validation it sends. A validation task's result carries the metrics the client sent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from scaleout_server.combiner import rounds
from scaleoututil.grpc import scaleout_pb2 as pb
from tests.unit.test_combiner_support import SEED_ID, Harness, SimClient

pytestmark = pytest.mark.timeout(60)

VALIDATION = "Scaleout_Validation"


@dataclass
class Validator(SimClient):
    """A SimClient that answers validation tasks: "validate" sends a ModelValidation then reports COMPLETED,
    "late" reports COMPLETED first and sends the validation 0.3 s later, "refuse" only reports COMPLETED."""

    validation: str = "validate"

    def announce(self, kind: str, parameters: dict[str, object] | None = None) -> pb.Response:
        return self.stub.Announce(pb.ClientAnnounceRequest(
            client_id=self.client_id, type=kind, parameters=json.dumps(parameters) if parameters is not None else ""),
            metadata=self.metadata, timeout=5)

    def _run(self, task: pb.TaskRequest) -> None:
        if task.type != VALIDATION:
            super()._run(task)
            return
        self.download(task.model_id)
        if self.validation == "validate":
            self._send_validation(task)
            self._report(task, "COMPLETED", True)
        elif self.validation == "late":
            self._report(task, "COMPLETED", True)
            later = threading.Timer(0.3, self._send_validation, args=(task,))
            self._deferred.append(later)
            later.start()
        else:
            self._report(task, "COMPLETED", True)

    def _send_validation(self, task: pb.TaskRequest) -> None:
        self.stub.SendModelValidation(pb.ModelValidation(
            client_id=self.client_id, model_id=task.model_id, correlation_id=task.correlation_id,
            session_id=task.session_id, data=json.dumps({"accuracy": 0.5, "client": self.client_id})),
            metadata=self.metadata, timeout=5)

    def validation_tasks(self) -> int:
        return sum(1 for t in self.received if t.type == VALIDATION)


@pytest.fixture
def validators(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Validator]]:
    monkeypatch.setattr(rounds, "VALIDATION_GRACE", 1.0)  # the combiner runs in this process
    started: list[Validator] = []
    yield started
    for c in started:
        c.stop()


def start(validators: list[Validator], harness: Harness, client_id: str, validation: str) -> Validator:
    c = Validator(harness.port, client_id, validation=validation).start()  # type: ignore[call-arg]
    validators.append(c)
    return c


def validate(harness: Harness, client_ids: list[str]) -> dict[str, tuple[str, object]]:
    outcome = harness.control.RunTasks(pb.TaskBatchSpec(session_id="s1", round_id="r1", model_id=SEED_ID,
                                                        type=VALIDATION, client_ids=client_ids, timeout=10),
                                       timeout=30)
    return {r.client_id: (r.status, json.loads(r.response) if r.response else None) for r in outcome.results}


def test_a_client_that_announced_no_validate_callback_is_skipped_until_it_restarts(
        harness: Harness, validators: list[Validator]) -> None:
    a = start(validators, harness, "a", "validate")
    b = start(validators, harness, "b", "validate")
    b.announce("Connect", {"validate": False})
    a.announce("Connect", {"validate": True})

    results = validate(harness, ["a", "b"])
    assert results["a"] == ("COMPLETED", {"accuracy": 0.5, "client": "a"})
    assert results["b"] == ("SKIPPED", {"skipped": "not sent a validation task: it announced no validate callback"})
    assert (a.validation_tasks(), b.validation_tasks()) == (1, 0)

    b.announce("VersionCheck", {"client-version": "1.1.0"})  # a new process of that client: asked again
    assert validate(harness, ["b"])["b"] == ("COMPLETED", {"accuracy": 0.5, "client": "b"})
    assert b.validation_tasks() == 1


def test_a_client_that_completes_a_validation_without_one_is_asked_once_then_skipped(
        harness: Harness, validators: list[Validator]) -> None:
    start(validators, harness, "ok", "validate")
    refusing = start(validators, harness, "published", "refuse")

    first = validate(harness, ["ok", "published"])
    assert first == {"ok": ("COMPLETED", {"accuracy": 0.5, "client": "ok"}), "published": ("COMPLETED", None)}
    second = validate(harness, ["ok", "published"])
    assert second["published"][0] == "SKIPPED" and "without a validation" in str(second["published"][1])
    assert refusing.validation_tasks() == 1

    refusing.announce("VersionCheck", {"client-version": "1.1.0"})
    assert validate(harness, ["published"])["published"] == ("COMPLETED", None)
    assert refusing.validation_tasks() == 2


def test_a_validation_arriving_after_the_done_report_counts_and_the_client_stays_asked(
        harness: Harness, validators: list[Validator]) -> None:
    late = start(validators, harness, "late", "late")
    started = time.monotonic()
    assert validate(harness, ["late"])["late"] == ("COMPLETED", {"accuracy": 0.5, "client": "late"})
    assert time.monotonic() - started < 5
    assert validate(harness, ["late"])["late"][0] == "COMPLETED"
    assert late.validation_tasks() == 2
