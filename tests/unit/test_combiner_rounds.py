"""RunRound, RunTasks and AbortSession with simulated clients on a real combiner."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import grpc
import numpy as np
import pytest

from scaleout_server.aggregation import registry
from scaleout_server.aggregation.fedavg import FedAvg
from scaleout_server.combiner.server import updates_dir_for
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
from tests.unit.test_combiner_support import SEED_ID, SEED_PARAMS, Harness, SimClient, wait_until


def start(clients: list[SimClient], harness: Harness, client_id: str, **kwargs: object) -> SimClient:
    c = SimClient(harness.port, client_id, **kwargs).start()  # type: ignore[arg-type]
    clients.append(c)
    return c


def spec(client_ids: list[str], timeout: float = 10.0, **kwargs: object) -> pb.RoundSpec:
    return pb.RoundSpec(session_id="s1", round_id="r1", model_id=SEED_ID, helper_type="numpyhelper",
                        client_ids=client_ids, aggregator="fedavg", round_timeout=timeout, buffer_size=-1,
                        client_settings=json.dumps({"epochs": 2}), delete_models=True, **kwargs)


def by_client(outcome: pb.RoundOutcome) -> dict[str, pb.TaskResult]:
    return {t.client_id: t for t in outcome.tasks}


def test_round_with_two_clients_returns_their_weighted_mean(harness: Harness, clients: list[SimClient]) -> None:
    start(clients, harness, "a", constant=1.0, num_examples=1)
    start(clients, harness, "b", constant=3.0, num_examples=3)
    started = time.monotonic()
    outcome = harness.control.RunRound(spec(["a", "b"]), timeout=30)
    assert time.monotonic() - started < 5
    assert outcome.error == "" and not outcome.aborted
    assert outcome.num_examples == 4 and outcome.updates_expected == 2
    model = harness.load_model(outcome.model_id)
    for got, seed in zip(model, SEED_PARAMS, strict=True):
        assert got.dtype == seed.dtype
        np.testing.assert_allclose(got, seed + 2.5)  # (1*1 + 3*3) / 4
    assert {u.client_id: u.num_examples for u in outcome.updates} == {"a": 1, "b": 3}
    assert {u.client_name for u in outcome.updates} == {"client-a", "client-b"}
    assert json.loads(outcome.updates[0].meta)["training_metadata"]["num_examples"] in (1, 3)
    assert {k: t.status for k, t in by_client(outcome).items()} == {"a": "COMPLETED", "b": "COMPLETED"}
    # clients got valid task data; update files were deleted after aggregation (delete_models)
    data = json.loads(clients[0].received[0].data)
    assert data["client_settings"] == {"epochs": 2} and data["round_id"] == "r1" and data["model_id"] == SEED_ID
    assert list(updates_dir_for(harness.combiner.settings).glob("*.scm")) == []
    # the updates reached the event feed before the outcome was returned
    assert {u["client_id"] for u in harness.events_of("update")} == {"a", "b"}


def test_round_times_out_on_a_silent_client_and_aggregates_the_other(harness: Harness,
                                                                    clients: list[SimClient]) -> None:
    start(clients, harness, "a", constant=1.0, num_examples=2)
    silent = start(clients, harness, "quiet", behaviour="silent")
    started = time.monotonic()
    outcome = harness.control.RunRound(spec(["a", "quiet"], timeout=2.0), timeout=30)
    elapsed = time.monotonic() - started
    assert 1.9 < elapsed < 4.0
    assert outcome.num_examples == 2 and [u.client_id for u in outcome.updates] == ["a"]
    np.testing.assert_allclose(harness.load_model(outcome.model_id)[0], SEED_PARAMS[0] + 1)
    results = by_client(outcome)
    assert results["quiet"].status == "TIMEOUT" and results["a"].status == "COMPLETED"
    # the silent client is told to stop its task
    assert wait_until(lambda: silent.interrupted == [(results["quiet"].correlation_id, "TIMEOUT")])


def test_round_counts_an_update_that_arrives_after_the_done_report(harness: Harness,
                                                                  clients: list[SimClient]) -> None:
    start(clients, harness, "late", constant=2.0, behaviour="done-first", update_delay=0.8)
    outcome = harness.control.RunRound(spec(["late"]), timeout=30)
    assert [u.client_id for u in outcome.updates] == ["late"]
    np.testing.assert_allclose(harness.load_model(outcome.model_id)[1], SEED_PARAMS[1] + 2)


def test_round_ends_after_the_grace_period_when_a_completed_client_sends_no_update(
        harness: Harness, clients: list[SimClient]) -> None:
    start(clients, harness, "a", constant=1.0)
    start(clients, harness, "lazy", behaviour="no-update")
    started = time.monotonic()
    outcome = harness.control.RunRound(spec(["a", "lazy"], timeout=20.0), timeout=30)
    assert time.monotonic() - started < 5  # grace is 1.5 s in the harness, far below the 20 s timeout
    assert [u.client_id for u in outcome.updates] == ["a"] and outcome.model_id


def test_update_without_num_examples_fails_that_clients_task(harness: Harness, clients: list[SimClient]) -> None:
    start(clients, harness, "zero", constant=1.0, num_examples=0)
    outcome = harness.control.RunRound(spec(["zero"], timeout=10.0), timeout=30)
    assert outcome.model_id == "" and list(outcome.updates) == []
    result = by_client(outcome)["zero"]
    assert result.status == "FAILED" and "num_examples" in json.loads(result.response)["error"]


def test_round_with_a_client_that_is_not_connected(harness: Harness, clients: list[SimClient]) -> None:
    start(clients, harness, "a", constant=1.0)
    outcome = harness.control.RunRound(spec(["a", "ghost"]), timeout=30)
    assert outcome.updates_expected == 1 and outcome.model_id
    ghost = by_client(outcome)["ghost"]
    assert ghost.status == "FAILED" and "not connected" in ghost.response


def test_round_without_helper_type_uses_the_one_named_by_the_model(harness: Harness,
                                                                   clients: list[SimClient]) -> None:
    start(clients, harness, "a", constant=1.0)
    request = spec(["a"])
    request.helper_type = ""
    outcome = harness.control.RunRound(request, timeout=30)
    assert outcome.error == "" and outcome.model_id
    assert json.loads(clients[0].received[0].data)["helper_type"] == "numpyhelper"


def test_round_with_an_unknown_aggregator_reports_an_error(harness: Harness) -> None:
    outcome = harness.control.RunRound(pb.RoundSpec(session_id="s", round_id="r", model_id=SEED_ID,
                                                    aggregator="nope", round_timeout=5), timeout=10)
    assert "unknown aggregator 'nope'" in outcome.error and "fedavg" in outcome.error


def test_round_with_a_missing_model_reports_an_error(harness: Harness) -> None:
    outcome = harness.control.RunRound(pb.RoundSpec(session_id="s", round_id="r", model_id="missing",
                                                    aggregator="fedavg", round_timeout=5), timeout=10)
    assert "missing" in outcome.error and "not in the model repository" in outcome.error


def test_abort_session_ends_a_waiting_round_promptly(harness: Harness, clients: list[SimClient]) -> None:
    silent = start(clients, harness, "quiet", behaviour="silent")
    out: list[pb.RoundOutcome] = []
    thread = threading.Thread(target=lambda: out.append(harness.control.RunRound(spec(["quiet"], timeout=30.0),
                                                                                 timeout=40)))
    thread.start()
    assert wait_until(lambda: bool(silent.received))
    started = time.monotonic()
    harness.control.AbortSession(pb.AbortRequest(session_id="s1", reason="test"), timeout=5)
    thread.join(10)
    assert time.monotonic() - started < 2
    assert out[0].aborted and out[0].model_id == ""
    assert by_client(out[0])["quiet"].status == "INTERRUPTED"
    assert wait_until(lambda: silent.interrupted and silent.interrupted[0][1] == "INTERRUPTED")


def test_late_update_for_a_closed_round_is_not_found_and_not_stored(harness: Harness, clients: list[SimClient]
                                                                      ) -> None:
    late = start(clients, harness, "slow", constant=5.0, behaviour="done-first", update_delay=2.5)
    outcome = harness.control.RunRound(spec(["slow"], timeout=20.0), timeout=30)  # grace 1.5 s < delay
    assert outcome.model_id == "" and list(outcome.updates) == []
    time.sleep(1.5)  # the update arrives now, after the round closed
    late.stop()
    assert list(updates_dir_for(harness.combiner.settings).glob("*.scm")) == []
    assert harness.events_of("update") == []
    [refused] = [e for e in late.errors if isinstance(e, grpc.RpcError)]
    assert refused.code() == grpc.StatusCode.NOT_FOUND
    assert "no longer open" in refused.details() and "not used" in refused.details()


def test_run_tasks_collects_a_custom_command_response(harness: Harness, clients: list[SimClient]) -> None:
    start(clients, harness, "a", custom=lambda params: {"pong": params})
    batch = pb.TaskBatchSpec(type="Custom_ping", data=json.dumps({"parameters": {"x": 1}}),
                             client_ids=["a", "ghost"], timeout=10, batch_id="cmd-1")
    started = time.monotonic()
    outcome = harness.control.RunTasks(batch, timeout=20)
    assert time.monotonic() - started < 3
    results = {r.client_id: r for r in outcome.results}
    assert results["a"].status == "COMPLETED" and json.loads(results["a"].response) == {"pong": {"x": 1}}
    assert results["a"].client_name == "client-a"
    assert results["ghost"].status == "FAILED" and "not connected" in results["ghost"].response


def test_run_tasks_times_out_running_clients(harness: Harness, clients: list[SimClient]) -> None:
    def slow(params: dict[str, object]) -> dict[str, object]:
        time.sleep(2.0)
        return {}

    start(clients, harness, "slow", custom=slow)
    outcome = harness.control.RunTasks(pb.TaskBatchSpec(type="Custom_wait", client_ids=["slow"], timeout=1.0),
                                       timeout=20)
    assert [r.status for r in outcome.results] == ["TIMEOUT"]


def test_inference_response_becomes_a_prediction(harness: Harness, clients: list[SimClient]) -> None:
    c = start(clients, harness, "a")
    c.custom = None
    # our client reports the predict callback's result in the final report of a Scaleout_Inference task
    original = c._run

    def run(task: pb.TaskRequest) -> None:
        if task.type == "Scaleout_Inference":
            c._report(task, "COMPLETED", True, {"prediction": [1, 2]})
        else:
            original(task)

    c._run = run  # type: ignore[method-assign]
    outcome = harness.control.RunTasks(pb.TaskBatchSpec(type="Scaleout_Inference", model_id=SEED_ID,
                                                        client_ids=["a"], timeout=10, batch_id="pred-7"), timeout=20)
    assert [r.status for r in outcome.results] == ["COMPLETED"]
    predictions = harness.events_of("prediction")
    assert [(p["prediction_id"], p["data"], p["model_id"]) for p in predictions] == \
        [("pred-7", {"prediction": [1, 2]}, SEED_ID)]


def test_combiner_reports_its_load(harness: Harness, clients: list[SimClient]) -> None:
    start(clients, harness, "a")
    assert wait_until(lambda: any(e["load"] == 1 for e in harness.events_of("combiner_load")), timeout=5)


class SlowFedAvg(FedAvg):
    """FedAvg whose steps take a while, as numpy work on a large model does."""

    name = "slowavg"
    begin_delay = 0.6
    fold_delay = 0.6
    result_delay = 0.6

    def begin(self, global_params: object) -> None:
        time.sleep(self.begin_delay)
        super().begin(global_params)

    def accumulate(self, params: object, num_examples: float, metadata: dict[str, object]) -> None:
        time.sleep(self.fold_delay)
        super().accumulate(params, num_examples, metadata)

    def result(self) -> list[np.ndarray] | None:
        time.sleep(self.result_delay)
        return super().result()


@pytest.fixture
def slow_strategy(monkeypatch: pytest.MonkeyPatch) -> type[SlowFedAvg]:
    monkeypatch.setitem(registry._STRATEGIES, SlowFedAvg.name, SlowFedAvg)
    return SlowFedAvg


def test_strategy_work_runs_off_the_event_loop(harness: Harness, clients: list[SimClient],
                                               slow_strategy: type[SlowFedAvg]) -> None:
    # begin, accumulate and result each take 0.6 s: the loop that answers every client must not notice
    start(clients, harness, "a", constant=1.0)
    done = threading.Event()
    gaps: list[float] = []

    async def probe() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.05)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    assert harness.combiner.loop is not None
    probing = asyncio.run_coroutine_threadsafe(probe(), harness.combiner.loop)
    request = spec(["a"])
    request.aggregator = slow_strategy.name
    outcome = harness.control.RunRound(request, timeout=30)
    done.set()
    probing.result(5)
    assert outcome.error == "" and outcome.model_id
    np.testing.assert_allclose(harness.load_model(outcome.model_id)[0], SEED_PARAMS[0] + 1)
    assert max(gaps) < 0.4


def test_cancelled_round_deletes_the_updates_it_did_not_fold(harness: Harness, clients: list[SimClient],
                                                            slow_strategy: type[SlowFedAvg],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # both updates arrive at once; folding the first takes 0.6 s, and the controller gives up meanwhile
    monkeypatch.setattr(slow_strategy, "begin_delay", 0.0)
    start(clients, harness, "a", constant=1.0)
    start(clients, harness, "b", constant=2.0)
    request = spec(["a", "b"])
    request.aggregator = slow_strategy.name
    with pytest.raises(grpc.RpcError) as info:
        harness.control.RunRound(request, timeout=0.4)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    updates = updates_dir_for(harness.combiner.settings)
    assert wait_until(lambda: list(updates.glob("*.scm")) == [], timeout=3)


def test_cancelled_task_batch_leaves_no_task_queued(harness: Harness) -> None:
    # the client is connected (heartbeat) but does not poll yet: its task waits in the queue
    stub = pb_grpc.CombinerClientStub(harness.channel)
    stub.SendHeartbeat(pb.Heartbeat(client_id="idle"), metadata=(("client-id", "idle"),), timeout=5)
    with pytest.raises(grpc.RpcError) as info:
        harness.control.RunTasks(pb.TaskBatchSpec(type="Custom_ping", client_ids=["idle"], timeout=30), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    server = harness.combiner.server
    assert server is not None
    state = server.clients.clients["idle"]
    assert wait_until(lambda: not state.pending)
    # the next poll gets nothing: nobody waits for that task's result any more (a 1 s deadline is not held)
    reply = stub.PollAndReportAsync(pb.ClientReport(client_id="idle"), metadata=(("client-id", "idle"),), timeout=1)
    assert list(reply.tasks) == []


def test_finished_rounds_and_batches_are_not_kept_alive_by_their_tasks(harness: Harness,
                                                                      clients: list[SimClient]) -> None:
    # finished tasks stay registered for late reports; they must not pin their round's updates in memory
    start(clients, harness, "a", constant=1.0, custom=lambda params: {})
    assert harness.control.RunRound(spec(["a"]), timeout=30).model_id
    harness.control.RunTasks(pb.TaskBatchSpec(type="Custom_ping", client_ids=["a"], timeout=10), timeout=20)
    server = harness.combiner.server
    assert server is not None
    tasks = list(server.clients.tasks.values())
    assert len(tasks) == 2 and all(t.done and t.on_change is None for t in tasks)
