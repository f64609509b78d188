"""ModelService: downloads with a checksum trailer, uploads checked before they are kept."""

from __future__ import annotations

import hashlib
import uuid

import grpc
import numpy as np
import pytest

from scaleout_server.combiner.server import updates_dir_for
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.model import ScaleoutModel
from tests.unit.test_combiner_support import SEED_ID, SEED_PARAMS, Harness, SimClient


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
