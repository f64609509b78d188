"""The combiner refuses what it never asked for, against one real combiner.

Updates, validations, predictions and inference results must answer a task this combiner issued to the
sender (correlation id and client id), else NOT_FOUND naming the reason and nothing is stored; a field the
protocol defines as JSON that is not JSON is INVALID_ARGUMENT; an unknown announcement type is
INVALID_ARGUMENT; a replay of an accepted report answers OK and is stored once; and tasks issued before a
restart of the combiner are unknown afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from scaleout_server.combiner import client_service
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.protocol import TaskType
from tests.unit.test_combiner_support import Harness, SimClient, running_harness

pytestmark = pytest.mark.timeout(60)

METRICS = json.dumps({"accuracy": 0.9})


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    grace = client_service.INFERENCE_TASK_GRACE
    client_service.INFERENCE_TASK_GRACE = 0.5  # an unknown inference id waits this long for its task
    try:
        with running_harness(tmp_path_factory.mktemp("refuses")) as h:
            yield h
    finally:
        client_service.INFERENCE_TASK_GRACE = grace


@pytest.fixture
def client(harness: Harness) -> Iterator[SimClient]:
    c = SimClient(harness.port, "asker")
    yield c
    c.channel.close()


def refused(call: object) -> grpc.RpcError:
    """The RpcError a call raised (the test fails when it succeeded)."""
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the combiner accepted the report")


def settle(harness: Harness) -> None:
    """Let the event link forward what the combiner emitted (it batches every 0.05 s)."""
    time.sleep(0.3)


def validations(harness: Harness, cid: str) -> list[dict]:
    return [v for v in harness.events_of("validation") if v.get("correlation_id") == cid]


def predictions(harness: Harness, cid: str) -> list[dict]:
    return [p for p in harness.events_of("prediction") if p.get("correlation_id") == cid]


def validation(client: SimClient, cid: str, data: str = METRICS) -> pb.Response:
    return client.stub.SendModelValidation(pb.ModelValidation(client_id=client.client_id, model_id="m",
                                                              correlation_id=cid, data=data),
                                           metadata=client.metadata, timeout=5)


def test_validation_with_unknown_task_and_broken_json_is_invalid_argument_and_not_stored(
        harness: Harness, client: SimClient) -> None:
    err = refused(lambda: validation(client, "never-issued", data="[[["))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "ModelValidation.data is not valid JSON" in err.details()
    settle(harness)
    assert validations(harness, "never-issued") == []


def test_validation_for_a_task_never_issued_is_not_found_and_not_stored(harness: Harness, client: SimClient) -> None:
    err = refused(lambda: validation(client, "never-issued"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "never-issued" in err.details() and "did not issue" in err.details() and "asker" in err.details()
    err = refused(lambda: validation(client, ""))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "empty correlation id" in err.details()
    settle(harness)
    assert validations(harness, "never-issued") == []


def test_validation_for_another_clients_task_is_not_found(harness: Harness, client: SimClient) -> None:
    cid = harness.submit("someone-else", TaskType.VALIDATION.value)
    err = refused(lambda: validation(client, cid))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "issued to another client" in err.details()
    settle(harness)
    assert validations(harness, cid) == []


def test_validation_of_an_issued_task_is_stored_once_however_often_it_is_replayed(harness: Harness,
                                                                                 client: SimClient) -> None:
    cid = harness.submit(client.client_id, TaskType.VALIDATION.value, session_id="s-val")
    answers = [validation(client, cid).response for _ in range(3)]
    assert answers == ["validation received"] + ["duplicate validation, already received"] * 2
    settle(harness)
    [stored] = validations(harness, cid)
    assert stored["data"] == {"accuracy": 0.9} and stored["session_id"] == "s-val"


def prediction(client: SimClient, cid: str, data: str = '{"y": 1}') -> pb.Response:
    return client.stub.SendModelPrediction(pb.ModelPrediction(client_id=client.client_id, model_id="m",
                                                              correlation_id=cid, data=data, prediction_id="p1"),
                                           metadata=client.metadata, timeout=5)


def test_predictions_answer_an_issued_task_in_json_and_are_stored_once(harness: Harness, client: SimClient) -> None:
    assert refused(lambda: prediction(client, "never-issued")).code() == grpc.StatusCode.NOT_FOUND
    cid = harness.submit(client.client_id, "Scaleout_Prediction")
    err = refused(lambda: prediction(client, cid, data="{y: 1"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "ModelPrediction.data" in err.details()
    assert [prediction(client, cid).response for _ in range(2)] == [
        "prediction received", "duplicate prediction, already received"]
    settle(harness)
    [stored] = predictions(harness, cid)
    assert stored["data"] == {"y": 1}
    assert predictions(harness, "never-issued") == []


def test_update_with_meta_that_is_not_json_and_an_unknown_task_is_invalid_argument(harness: Harness,
                                                                                  client: SimClient) -> None:
    update = pb.ModelUpdate(client_id=client.client_id, model_update_id="u-bad-meta", correlation_id="never-issued",
                            meta="{not json")
    err = refused(lambda: client.stub.SendModelUpdate(update, metadata=client.metadata, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "ModelUpdate.meta" in err.details()
    update.meta = json.dumps({"training_metadata": {"num_examples": 3}})
    err = refused(lambda: client.stub.SendModelUpdate(update, metadata=client.metadata, timeout=5))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "did not issue" in err.details()
    settle(harness)
    assert not [u for u in harness.events_of("update") if u.get("update_id") == "u-bad-meta"]


@pytest.mark.parametrize("kind", ["Reboot", "connect", ""])
def test_an_unknown_announcement_type_is_invalid_argument(client: SimClient, kind: str) -> None:
    err = refused(lambda: client.stub.Announce(pb.ClientAnnounceRequest(client_id=client.client_id, type=kind),
                                               metadata=client.metadata, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown announcement type" in err.details() and "Connect" in err.details()


def test_an_announcement_with_parameters_that_are_not_json_is_invalid_argument(client: SimClient) -> None:
    err = refused(lambda: client.stub.Announce(pb.ClientAnnounceRequest(
        client_id=client.client_id, type="VersionCheck", parameters="{client-version: 1"),
        metadata=client.metadata, timeout=5))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "parameters" in err.details()
    answer = client.stub.Announce(pb.ClientAnnounceRequest(client_id=client.client_id, type="VersionCheck",
                                                           parameters=json.dumps({"client-version": "1.1.0"})),
                                  metadata=client.metadata, timeout=5)
    assert json.loads(answer.parameters)["success"] is True


def stream_results(client: SimClient, results: list[pb.InferenceResult]) -> tuple[list[str], grpc.RpcError | None]:
    """Send `results` on one StreamInferenceResult call; the acked ids and the error that ended it, if any."""
    acked: list[str] = []
    try:
        for ack in client.stub.StreamInferenceResult(iter(results), metadata=client.metadata, timeout=10):
            acked.extend(ack.record_ids)
    except grpc.RpcError as exc:
        return acked, exc
    return acked, None


def result(rid: str, inference_id: str, payload: str = '{"label": 3}') -> pb.InferenceResult:
    return pb.InferenceResult(inference_result_id=rid, inference_id=inference_id, key="out", payload=payload,
                              model_id="m")


def test_inference_results_must_answer_an_issued_inference_task(harness: Harness, client: SimClient) -> None:
    cid = harness.submit(client.client_id, TaskType.INFERENCE.value)
    acked, error = stream_results(client, [result("r1", cid), result("r1", cid), result("r2", "never-issued"),
                                           result("r3", cid)])
    # r1 stored once; r2 refused (acknowledged, so that a 1.1 client drops it instead of re-sending it forever)
    assert acked == ["r1", "r1", "r2"]
    assert error is not None and error.code() == grpc.StatusCode.NOT_FOUND and "never-issued" in error.details()
    acked, error = stream_results(client, [result("r4", cid, payload="{label")])
    assert acked == ["r4"] and error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stream_results(client, [result("r3", cid)]) == (["r3"], None)
    settle(harness)
    assert sorted(p["prediction_record_id"] for p in predictions(harness, cid)) == ["r1", "r3"]
    by_id = {p["prediction_record_id"]: p["data"] for p in predictions(harness, cid)}
    assert by_id["r1"] == {"out": {"label": 3}}
    assert predictions(harness, "never-issued") == []


def test_tasks_issued_before_a_combiner_restart_are_unknown_afterwards(tmp_path: Path) -> None:
    with running_harness(tmp_path) as before:
        c = SimClient(before.port, "restarted")
        cid = before.submit(c.client_id, TaskType.VALIDATION.value)
        c.channel.close()
    with running_harness(tmp_path) as after:  # same data folder: the combiner restarted
        c = SimClient(after.port, "restarted")
        try:
            err = refused(lambda: validation(c, cid))
        finally:
            c.channel.close()
        assert err.code() == grpc.StatusCode.NOT_FOUND and "restarted" in err.details()
        settle(after)
        assert validations(after, cid) == []


def test_update_with_an_unusable_id_is_not_found_unless_it_answers_an_issued_task(harness: Harness,
                                                                                  client: SimClient) -> None:
    meta = json.dumps({"training_metadata": {"num_examples": 3}})
    update = pb.ModelUpdate(client_id=client.client_id, model_update_id="../escape", correlation_id="never-issued",
                            meta=meta)
    err = refused(lambda: client.stub.SendModelUpdate(update, metadata=client.metadata, timeout=5))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    update.correlation_id = harness.submit(client.client_id, TaskType.MODEL_UPDATE.value)
    answer = client.stub.SendModelUpdate(update, metadata=client.metadata, timeout=5)
    assert answer.response == "ignored: bad model_update_id"
