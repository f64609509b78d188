"""EdgeClient's user API: log_metric forms and step counting, abort checks, callback registration."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from scaleout import EdgeClient
from scaleout.client.connection import ClientIdentity, Connection, GrpcTarget, Outbox
from scaleout.client.tasks import StoppedException, Task, TaskContext, activate
from scaleoututil.grpc import scaleout_pb2 as pb
from tests.unit.test_client_fakes import FakeCombiner, running_combiner


@pytest.fixture
def connected() -> Iterator[tuple[EdgeClient, FakeCombiner, Outbox]]:
    with running_combiner() as (fake, port):
        connection = Connection(GrpcTarget("127.0.0.1", port), ClientIdentity("client-1", "site-a"))
        outbox = Outbox(connection)
        client = EdgeClient()
        client._attach("client-1", "site-a", outbox)
        try:
            yield client, fake, outbox
        finally:
            outbox.close(1)
            connection.close()


def task_context(correlation_id: str = "corr-1") -> TaskContext:
    task = Task(pb.TaskRequest(correlation_id=correlation_id, model_id="m-1", round_id="r-1", session_id="s-1",
                               type="Scaleout_ModelUpdate"))
    return TaskContext.for_task(task)


def metric_rows(fake: FakeCombiner) -> list[tuple[dict[str, float], int, str, str, str]]:
    return [({e.key: e.value for e in m.metrics}, m.step.value, m.model_id, m.round_id, m.session_id)
            for m in fake.metrics]


def test_log_metric_accepts_dict_and_key_value_and_counts_steps_per_task(connected) -> None:
    client, fake, outbox = connected
    with activate(task_context()):
        assert client.log_metric({"acc": 0.5, "loss": 2})
        assert client.log_metric("loss", 1.5)
        client.log_metric({"loss": 1.0}, step=10)
        client.log_metric({"lr": 0.1}, commit=False)
        client.log_metric({"loss": 0.5})
    assert outbox.flush(5)
    assert metric_rows(fake) == [
        ({"acc": 0.5, "loss": 2.0}, 0, "m-1", "r-1", "s-1"),
        ({"loss": 1.5}, 1, "m-1", "r-1", "s-1"),
        ({"loss": 1.0}, 10, "m-1", "r-1", "s-1"),
        ({"lr": pytest.approx(0.1)}, 11, "m-1", "r-1", "s-1"),
        ({"loss": 0.5}, 11, "m-1", "r-1", "s-1"),
    ]
    assert all(m.client_id == "client-1" for m in fake.metrics)


def test_each_task_has_its_own_step_counter(connected) -> None:
    client, fake, outbox = connected
    with activate(task_context("a")):
        client.log_metric({"x": 1})
        client.log_metric({"x": 2})
    with activate(task_context("b")):
        client.log_metric({"x": 3})
    outbox.flush(5)
    assert [row[1] for row in metric_rows(fake)] == [0, 1, 0]


def test_log_metric_outside_a_task_sends_without_ids(connected) -> None:
    client, fake, outbox = connected
    client.log_metric({"temperature": np.float32(21.5)})
    outbox.flush(5)
    assert metric_rows(fake) == [({"temperature": 21.5}, 0, "", "", "")]


def test_log_metric_from_a_helper_thread_uses_the_passed_context(connected) -> None:
    client, fake, outbox = connected
    context = task_context()
    worker = threading.Thread(target=lambda: client.log_metric({"x": 1}, context=context))
    worker.start()
    worker.join(5)
    outbox.flush(5)
    assert metric_rows(fake) == [({"x": 1.0}, 0, "m-1", "r-1", "s-1")]


def test_log_metric_rejects_bad_input_with_clear_errors(connected) -> None:
    client, _, _ = connected
    with pytest.raises(TypeError, match="must be numbers; 'name' is str"):
        client.log_metric({"name": "resnet"})
    with pytest.raises(TypeError, match="give the value"):
        client.log_metric("loss")
    with pytest.raises(ValueError, match="step must be an integer"):
        client.log_metric({"x": 1}, step=-1)


def test_log_metric_dict_with_positional_second_argument_is_the_step(connected) -> None:
    client, fake, outbox = connected
    client.log_metric({"x": 1}, 7)
    outbox.flush(5)
    assert metric_rows(fake)[0][1] == 7


def test_check_task_abort_raises_only_in_the_aborted_tasks_thread(connected) -> None:
    client, _, _ = connected
    context = task_context()
    client.check_task_abort()  # outside a task: nothing to abort
    with activate(context):
        client.check_task_abort()  # running task: fine
        context.task.abort("Aborted by server")
        with pytest.raises(StoppedException, match="Aborted by server"):
            client.check_task_abort()

    other_thread_errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            client.check_task_abort()
            with activate(task_context("other")):
                client.check_task_abort()
        except BaseException as exc:
            other_thread_errors.append(exc)

    worker = threading.Thread(target=elsewhere)
    worker.start()
    worker.join(5)
    assert other_thread_errors == []


def test_log_calls_check_for_abort_unless_told_not_to(connected) -> None:
    client, fake, outbox = connected
    context = task_context()
    context.task.abort("Timed out by server")
    with activate(context):
        assert client.log_metric({"x": 1}, check_task_abort=False)
        with pytest.raises(StoppedException, match="Timed out"):
            client.log_metric({"x": 2})
        with pytest.raises(StoppedException):
            client.log_attributes({"site": "a"})
        with pytest.raises(StoppedException):
            client.log_telemetry({"gpu": 0.5})
    outbox.flush(5)
    assert len(fake.metrics) == 2  # the metric is sent before the abort is raised


def test_attributes_telemetry_and_status_reach_the_combiner(connected) -> None:
    client, fake, outbox = connected
    client.log_attributes({"site": "a", "gpus": 2})
    client.log_telemetry({"gpu_load": 0.25})
    client.send_status("dataset loaded", "AUDIT", "DATA")
    outbox.flush(5)
    assert {(a.key, a.value) for a in fake.attributes[0].attributes} == {("site", "a"), ("gpus", "2")}
    assert [(t.key, t.value) for t in fake.telemetry[0].telemetries] == [("gpu_load", 0.25)]
    [status] = fake.statuses
    assert (status.status, status.log_level, status.type, status.client_id) == ("dataset loaded", pb.AUDIT, "DATA",
                                                                               "client-1")


def test_custom_callbacks_get_the_custom_prefix_once() -> None:
    client = EdgeClient()
    client.set_custom_callback("ping", print)
    client.set_custom_callback("Custom_pong", print)
    assert set(client._callbacks.custom) == {"Custom_ping", "Custom_pong"}
    client.remove_custom_callback("ping")
    client.remove_custom_callback("Custom_pong")
    assert client._callbacks.custom == {}


def test_constructor_callbacks_and_setters() -> None:
    def train(m, s):
        return m, {}

    client = EdgeClient(train)
    assert client._callbacks.train is train and client._callbacks.validate is None
    client.set_validate_callback(print)
    client.set_predict_callback(len)
    assert (client._callbacks.validate, client._callbacks.predict) == (print, len)
    assert client.client_id is None and client.name is None


def test_logging_before_the_client_is_connected_returns_false() -> None:
    assert EdgeClient().log_metric({"x": 1}) is False
