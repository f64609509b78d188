"""Malformed gRPC input against one real combiner: each is answered with a proper status code (or, where
the client contract demands a normal Response, with a message saying why it was ignored), and the same
combiner keeps serving: after all of them a round still trains.

Complements test_combiner_models.py (wrong checksum -> DATA_LOSS, missing metadata, container id mismatch,
raw bytes, model over the size limit), which this module does not repeat.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from scaleout_server.combiner.server import updates_dir_for
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.model import ScaleoutModel
from tests.unit.test_combiner_support import SEED_ID, SEED_PARAMS, Harness, SimClient, running_harness

pytestmark = pytest.mark.timeout(60)

MAX_CHUNK = 64 * 1024
MAX_MODEL = 400_000


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One combiner for the whole module: every test also proves it survived the ones before."""
    with running_harness(tmp_path_factory.mktemp("combiner"), max_chunk_bytes=MAX_CHUNK,
                         max_model_bytes=MAX_MODEL) as h:
        yield h


@pytest.fixture
def client(harness: Harness) -> Iterator[SimClient]:
    c = SimClient(harness.port, "bad-input")
    yield c
    c.channel.close()


def still_serving(harness: Harness, client: SimClient) -> None:
    assert client.stub.SendHeartbeat(pb.Heartbeat(client_id=client.client_id), metadata=client.metadata,
                                     timeout=5).response == "heartbeat received"
    data, trailer = client.download(SEED_ID)
    assert trailer == hashlib.sha256(data).hexdigest()
    assert not list(updates_dir_for(harness.combiner.settings).glob(".*.part"))  # no half-written upload left


def upload_md(client: SimClient, model_id: str, data: bytes) -> tuple[tuple[str, str], ...]:
    return client.metadata + (("model-id", model_id), ("checksum", hashlib.sha256(data).hexdigest()))


def test_chunk_over_max_chunk_bytes_is_resource_exhausted_naming_the_setting(harness: Harness,
                                                                             client: SimClient) -> None:
    data = b"\0" * (MAX_CHUNK + 1)
    with pytest.raises(grpc.RpcError) as err:
        client.models.Upload(iter([pb.FileChunk(data=data)]), metadata=upload_md(client, "big-chunk", data))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_chunk_bytes" in err.value.details() and str(MAX_CHUNK) in err.value.details()
    still_serving(harness, client)


def test_model_over_max_model_bytes_is_refused_early_naming_the_setting(harness: Harness, client: SimClient) -> None:
    over_the_limit = [b"\1" * MAX_CHUNK for _ in range(MAX_MODEL // MAX_CHUNK + 1)]
    never = threading.Event()

    def stream() -> Iterator[pb.FileChunk]:
        for chunk in over_the_limit:
            yield pb.FileChunk(data=chunk)
        never.wait(10)  # the stream stays open: only an early refusal ends the call in time

    started = time.monotonic()
    try:
        with pytest.raises(grpc.RpcError) as err:
            client.models.Upload(stream(), metadata=upload_md(client, "too-big", b"".join(over_the_limit)), timeout=20)
    finally:
        never.set()
    assert time.monotonic() - started < 5
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_model_bytes" in err.value.details()
    still_serving(harness, client)


@pytest.mark.parametrize("model_id", ["../../etc/passwd", "a/b", ""])
def test_download_of_an_unusable_model_id_is_invalid_argument(harness: Harness, client: SimClient,
                                                             model_id: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.download(model_id)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    still_serving(harness, client)


def test_download_of_an_unknown_model_id_is_not_found(harness: Harness, client: SimClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.download("no-such-model-0000")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    still_serving(harness, client)


def test_upload_under_an_unusable_model_id_is_invalid_argument(harness: Harness, client: SimClient) -> None:
    model = ScaleoutModel.from_model_params([np.zeros(2)], "numpyhelper", model_id="ok")
    data = model.get_stream().read()
    with pytest.raises(grpc.RpcError) as err:
        client.models.Upload(iter([pb.FileChunk(data=data)]), metadata=upload_md(client, "../escape", data))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    still_serving(harness, client)


def test_upload_with_a_wrong_checksum_leaves_nothing_behind(harness: Harness, client: SimClient) -> None:
    model = ScaleoutModel.from_model_params([np.ones(3)], "numpyhelper", model_id="wrong-sum")
    with pytest.raises(grpc.RpcError) as err:
        client.upload(model, checksum="f" * 64)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert not (updates_dir_for(harness.combiner.settings) / "wrong-sum.scm").exists()
    still_serving(harness, client)


def test_model_update_for_an_unknown_model_and_task_is_not_found(harness: Harness, client: SimClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.stub.SendModelUpdate(pb.ModelUpdate(
            client_id=client.client_id, model_id="no-such-model", model_update_id="never-uploaded",
            correlation_id="no-such-task", meta=json.dumps({"training_metadata": {"num_examples": 1}})),
            metadata=client.metadata, timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-task" in err.value.details() and "did not issue" in err.value.details()
    assert not [u for u in harness.events_of("update") if u.get("update_id") == "never-uploaded"]
    still_serving(harness, client)


def test_bytes_that_are_not_a_protobuf_message_are_invalid_argument(harness: Harness, client: SimClient) -> None:
    raw = client.channel.unary_unary("/scaleout.CombinerClient/SendHeartbeat")  # no serializers: raw bytes
    with pytest.raises(grpc.RpcError) as err:
        raw(b"\xff\xff\xff\xff not protobuf", metadata=client.metadata, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SendHeartbeat" in err.value.details()
    still_serving(harness, client)


class BadMetaClient(SimClient):
    """Trains and uploads normally, then reports the update with `meta` that is not JSON (and the task done)."""

    def _send_update(self, task: pb.TaskRequest, model: ScaleoutModel) -> None:
        try:
            self.stub.SendModelUpdate(pb.ModelUpdate(
                client_id=self.client_id, model_id=task.model_id, model_update_id=model.model_id,
                correlation_id=task.correlation_id, round_id=task.round_id, session_id=task.session_id,
                meta="{training_metadata: not json"), metadata=self.metadata)
        except grpc.RpcError as exc:
            self.errors.append(exc)


def test_update_with_invalid_json_meta_fails_that_task_and_the_round_still_aggregates(harness: Harness) -> None:
    good = SimClient(harness.port, "good", constant=2.0, num_examples=1).start()
    bad = BadMetaClient(harness.port, "bad-meta", constant=100.0, num_examples=1).start()
    try:
        outcome = harness.control.RunRound(pb.RoundSpec(
            session_id="s-bad", round_id="r-bad", model_id=SEED_ID, helper_type="numpyhelper",
            client_ids=["good", "bad-meta"], aggregator="fedavg", round_timeout=10, buffer_size=-1,
            client_settings="{}", delete_models=True), timeout=30)
    finally:
        good.stop()
        bad.stop()
    [refused] = bad.errors
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT and "ModelUpdate.meta" in refused.details()
    tasks = {t.client_id: t for t in outcome.tasks}
    assert tasks["bad-meta"].status == "FAILED"
    assert "not valid JSON" in tasks["bad-meta"].response
    assert tasks["good"].status == "COMPLETED"
    assert [u.client_id for u in outcome.updates] == ["good"]
    for got, seed in zip(harness.load_model(outcome.model_id), SEED_PARAMS, strict=True):
        np.testing.assert_allclose(got, seed + 2.0)  # only the good update counted


def test_a_streamed_chunk_that_is_not_a_protobuf_message_is_invalid_argument(harness: Harness,
                                                                            client: SimClient) -> None:
    raw = client.channel.stream_unary("/scaleout.ModelService/Upload")
    good = pb.FileChunk(data=b"abc").SerializeToString()
    with pytest.raises(grpc.RpcError) as err:
        raw(iter([good, b"\xff\xff\xff\xff garbage"]), metadata=upload_md(client, "garbled", b"abc"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    still_serving(harness, client)
