"""ModelService: downloads with a checksum trailer, uploads checked before they are kept."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from scaleout_server.combiner.model_digests import ModelDigest, ModelDigests
from scaleout_server.combiner.server import updates_dir_for
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.model import ScaleoutModel
from tests.unit.test_combiner_support import SEED_ID, SEED_PARAMS, Harness, SimClient, store_seed


@pytest.fixture
def client(harness: Harness) -> SimClient:
    c = SimClient(harness.port, "c1")
    yield c
    c.channel.close()


def test_download_streams_the_model_and_sends_its_checksum_trailer(harness: Harness, client: SimClient) -> None:
    data, trailer = client.download(SEED_ID)
    with harness.repository.open("models", SEED_ID) as fh:
        assert data == fh.read()
    assert trailer == hashlib.sha256(data).hexdigest()
    params = ScaleoutModel.from_bytes(data, SEED_ID).get_model_params("numpyhelper")
    assert all(np.array_equal(a, b) for a, b in zip(params, SEED_PARAMS, strict=True))


def test_download_of_a_big_model_arrives_in_chunks_under_the_client_limit(harness: Harness,
                                                                          client: SimClient) -> None:
    big = [np.random.default_rng(0).random(700_000)]  # ~5.6 MB: more than the client's 4 MiB message limit
    model = ScaleoutModel.from_model_params(big, "numpyhelper", model_id="big")
    harness.repository.put("models", "big", model.get_stream())
    chunks = list(client.models.Download(pb.ModelRequest(model_id="big"), metadata=client.metadata))
    assert len(chunks) > 4 and max(len(c.data) for c in chunks) <= 1024 * 1024
    assert hashlib.sha256(b"".join(c.data for c in chunks)).hexdigest() == model.checksum


def test_download_of_an_unknown_model_is_not_found(client: SimClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.download("no-such-model")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_upload_is_kept_under_its_model_id(harness: Harness, client: SimClient) -> None:
    model = ScaleoutModel.from_model_params([np.zeros(3)], "numpyhelper", model_id=str(uuid.uuid4()))
    assert client.upload(model).status == pb.OK
    kept = updates_dir_for(harness.combiner.settings) / f"{model.model_id}.scm"
    assert kept.read_bytes() == model.get_stream().read()


def test_upload_with_a_wrong_checksum_is_data_loss(harness: Harness, client: SimClient) -> None:
    model = ScaleoutModel.from_model_params([np.zeros(3)], "numpyhelper", model_id="u1")
    with pytest.raises(grpc.RpcError) as err:
        client.upload(model, checksum="0" * 64)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert "checksum" in err.value.details()
    assert list(updates_dir_for(harness.combiner.settings).iterdir()) == []  # no partial file left


def test_upload_without_metadata_is_invalid_argument(client: SimClient) -> None:
    model = ScaleoutModel.from_model_params([np.zeros(3)], "numpyhelper", model_id="u2")
    with pytest.raises(grpc.RpcError) as err:
        client.models.Upload(model.get_filechunk_stream(), metadata=client.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model-id" in err.value.details()


def test_upload_whose_container_names_another_model_is_invalid_argument(client: SimClient) -> None:
    model = ScaleoutModel.from_model_params([np.zeros(3)], "numpyhelper", model_id="inside")
    md = client.metadata + (("model-id", "outside"), ("checksum", model.checksum))
    with pytest.raises(grpc.RpcError) as err:
        client.models.Upload(model.get_filechunk_stream(), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inside" in err.value.details()


def test_upload_of_raw_bytes_is_invalid_argument(client: SimClient) -> None:
    data = b"not a model at all"
    md = client.metadata + (("model-id", "raw"), ("checksum", hashlib.sha256(data).hexdigest()))
    with pytest.raises(grpc.RpcError) as err:
        client.models.Upload(iter([pb.FileChunk(data=data)]), metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_upload_over_the_size_limit_is_resource_exhausted(harness: Harness, client: SimClient) -> None:
    harness.combiner.server.model_service.max_model_bytes = 1000
    model = ScaleoutModel.from_model_params([np.random.default_rng(1).random(1000)], "numpyhelper", model_id="u3")
    with pytest.raises(grpc.RpcError) as err:
        client.upload(model)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_downloads_of_one_model_by_many_clients_hash_it_once(harness: Harness) -> None:
    clients = [SimClient(harness.port, f"c{i}") for i in range(6)]
    try:
        with ThreadPoolExecutor(len(clients)) as pool:  # concurrent, as at the start of a round
            results = list(pool.map(lambda c: c.download(SEED_ID), clients))
        results.append(clients[0].download(SEED_ID))  # and a later one
    finally:
        for c in clients:
            c.channel.close()
    with harness.repository.open("models", SEED_ID) as fh:
        stored = fh.read()
    assert all(data == stored and trailer == hashlib.sha256(stored).hexdigest() for data, trailer in results)
    assert harness.combiner.server.model_service.digests.computed == 1


def test_model_stored_again_under_its_id_with_other_bytes_gets_their_checksum(harness: Harness,
                                                                           client: SimClient) -> None:
    first, _ = client.download(SEED_ID)
    harness.repository.delete("models", SEED_ID)
    store_seed(harness.repository, params=[np.zeros(50, dtype=np.float32)])
    data, trailer = client.download(SEED_ID)
    assert data != first and trailer == hashlib.sha256(data).hexdigest()


def test_raw_legacy_blob_is_sent_without_a_checksum_trailer(harness: Harness, client: SimClient) -> None:
    """The client re-wraps a raw blob, so any checksum would fail its check forever (wire contract)."""
    raw = io.BytesIO()
    get_helper("numpyhelper").save([np.ones(3)], raw)
    harness.repository.put("models", "raw-seed", io.BytesIO(raw.getvalue()))
    for _ in range(2):  # the second time from the remembered digest
        data, trailer = client.download("raw-seed")
        assert data == raw.getvalue() and trailer is None


def test_a_failed_digest_is_forgotten_and_computed_again() -> None:
    asyncio.run(_failed_digest_is_forgotten())


async def _failed_digest_is_forgotten() -> None:
    digests = ModelDigests()
    calls: list[int] = []

    def failing() -> ModelDigest:
        calls.append(1)
        raise OSError("disk gone")

    with pytest.raises(OSError):
        await asyncio.shield(digests.get("m", 10, failing))
    good = ModelDigest(container=True, checksum="ab", size=10)
    assert await digests.get("m", 10, lambda: good) == good
    assert await digests.get("m", 10, failing) == good  # remembered now: no second computation
    assert len(calls) == 1 and digests.computed == 2


def test_digests_are_bounded_least_recently_used_first() -> None:
    asyncio.run(_digests_are_bounded())


async def _digests_are_bounded() -> None:
    digests = ModelDigests(max_models=2)
    for model_id in ("a", "b"):
        await digests.get(model_id, 1, lambda m=model_id: ModelDigest(True, m, 1))
    await digests.get("a", 1, lambda: ModelDigest(True, "never", 1))  # a is used again: b is the oldest
    await digests.get("c", 1, lambda: ModelDigest(True, "c", 1))
    assert len(digests) == 2 and digests.computed == 3
    assert (await digests.get("a", 1, lambda: ModelDigest(True, "again", 1))).checksum == "a"
    assert (await digests.get("b", 1, lambda: ModelDigest(True, "b2", 1))).checksum == "b2"
