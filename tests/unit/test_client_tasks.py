"""Task execution against a real in-test gRPC combiner: callbacks, model transfer and final statuses."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from scaleout.client.connection import ClientIdentity, Connection, GrpcTarget, Outbox
from scaleout.client.edge_client import EdgeClient
from scaleout.client.tasks import StoppedException, Task, TaskExecutor
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.model import ScaleoutModel, read_container_metadata
from tests.unit.test_client_fakes import HELPER, FakeCombiner, running_combiner, seed_model


@dataclass
class Env:
    fake: FakeCombiner
    client: EdgeClient
    executor: TaskExecutor
    outbox: Outbox
    cache: Path

    def run(self, **fields: str) -> Task:
        fields.setdefault("correlation_id", "corr-1")
        task = Task(pb.TaskRequest(**fields))
        self.executor.run(task)
        self.outbox.flush(5)
        return task


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with running_combiner() as (fake, port):
        fake.add_model(seed_model("seed-model"))
        connection = Connection(GrpcTarget("127.0.0.1", port), ClientIdentity("client-1", "site-a"))
        outbox = Outbox(connection)
        client = EdgeClient()
        client._attach("client-1", "site-a", outbox)
        executor = TaskExecutor(connection, outbox, client._callbacks, tmp_path / "cache")
        try:
            yield Env(fake, client, executor, outbox, tmp_path / "cache")
        finally:
            outbox.close(1)
            connection.close()


def train_task(**extra: str) -> dict[str, str]:
    fields = {"type": "Scaleout_ModelUpdate", "model_id": "seed-model", "session_id": "s-1", "round_id": "r-1",
              "data": json.dumps({"client_settings": {"epochs": 2}})}
    fields.update(extra)
    return fields


def test_train_task_uploads_restamped_update_and_reports_completed(env: Env) -> None:
    seen: dict[str, object] = {}

    def train(model: ScaleoutModel, settings: dict) -> tuple[ScaleoutModel, dict]:
        seen["settings"] = settings
        params = model.get_model_params(HELPER)
        return ScaleoutModel.from_model_params([p + 1 for p in params], HELPER), {
            "training_metadata": {"num_examples": 12}, "loss": 0.25}

    env.client.set_train_callback(train)
    task = env.run(**train_task())

    assert (task.status, task.done, task.response) == ("COMPLETED", True, "")
    assert seen["settings"] == {"epochs": 2}
    [update] = env.fake.updates
    assert (update.client_id, update.model_id, update.correlation_id) == ("client-1", "seed-model", "corr-1")
    assert (update.round_id, update.session_id) == ("r-1", "s-1")
    meta = json.loads(update.meta)
    assert meta["training_metadata"] == {"num_examples": 12} and meta["loss"] == 0.25
    assert meta["config"] == train_task()["data"]
    assert all(meta[k] >= 0 for k in ("processing_time", "fetch_model", "upload_model"))
    data, metadata = env.fake.uploads[update.model_update_id]
    assert metadata["model-id"] == update.model_update_id != "seed-model"
    assert read_container_metadata(io.BytesIO(data))["model_id"] == update.model_update_id
    uploaded = ScaleoutModel.from_bytes(data).get_model_params(HELPER)
    np.testing.assert_allclose(uploaded[0], np.full(4, 2.0))
    assert [(s.status, s.log_level) for s in env.fake.statuses][-1] == ("Model update completed.", pb.AUDIT)


def test_train_without_num_examples_fails_and_says_what_to_return(env: Env) -> None:
    env.client.set_train_callback(lambda model, settings: (model, {"loss": 1.0}))
    task = env.run(**train_task())
    assert task.status == "FAILED"
    error = json.loads(task.response)["error"]
    assert "training_metadata" in error and "num_examples" in error
    assert not env.fake.uploads and not env.fake.updates


def test_train_returning_wrong_shape_fails_clearly(env: Env) -> None:
    env.client.set_train_callback(lambda model, settings: model)
    task = env.run(**train_task())
    assert task.status == "FAILED"
    assert "must return (model, metadata)" in json.loads(task.response)["error"]


def test_train_aborted_by_server_reports_interrupted_without_update(env: Env) -> None:
    started = threading.Event()
    proceed = threading.Event()

    def train(model: ScaleoutModel, settings: dict) -> tuple[ScaleoutModel, dict]:
        started.set()
        proceed.wait(5)
        env.client.check_task_abort()
        return model, {"training_metadata": {"num_examples": 1}}

    env.client.set_train_callback(train)
    task = Task(pb.TaskRequest(correlation_id="corr-abort", **train_task()))
    runner = threading.Thread(target=env.executor.run, args=(task,))
    runner.start()
    assert started.wait(5)
    task.abort("Aborted by server")
    proceed.set()
    runner.join(5)
    assert task.status == "INTERRUPTED" and task.done
    assert json.loads(task.response) == {"msg": "Aborted by server"}
    assert not env.fake.updates


def test_train_callback_exception_reports_failed_with_traceback(env: Env) -> None:
    def train(model: ScaleoutModel, settings: dict) -> tuple[ScaleoutModel, dict]:
        raise ValueError("bad batch 7")

    env.client.set_train_callback(train)
    task = env.run(**train_task())
    response = json.loads(task.response)
    assert task.status == "FAILED"
    assert response["error"] == "ValueError: bad batch 7"
    assert "bad batch 7" in response["traceback"] and "in train" in response["traceback"]
    env.outbox.flush(5)
    assert any(s.log_level == pb.ERROR and "bad batch 7" in s.status for s in env.fake.statuses)


def test_train_without_callback_fails_with_hint(env: Env) -> None:
    task = env.run(**train_task())
    assert task.status == "FAILED"
    assert "set_train_callback" in json.loads(task.response)["error"]


def test_validation_sends_metrics_and_completes(env: Env) -> None:
    env.client.set_validate_callback(lambda model: {"accuracy": float(model.get_model_params(HELPER)[0][0])})
    task = env.run(type="Scaleout_Validation", model_id="seed-model", session_id="s-1", correlation_id="corr-v")
    assert task.status == "COMPLETED"
    [validation] = env.fake.validations
    assert json.loads(validation.data) == {"accuracy": 1.0}
    assert (validation.model_id, validation.session_id, validation.correlation_id) == ("seed-model", "s-1", "corr-v")
    assert "Model validation completed." in [s.status for s in env.fake.statuses]


def test_validation_returning_none_sends_nothing(env: Env) -> None:
    env.client.set_validate_callback(lambda model: None)
    task = env.run(type="Scaleout_Validation", model_id="seed-model")
    assert task.status == "COMPLETED" and not env.fake.validations


def test_custom_callback_gets_parameters_and_its_result_is_the_response(env: Env) -> None:
    env.client.set_custom_callback("echo", lambda params: {"echo": params})
    task = env.run(type="Custom_echo", data=json.dumps({"parameters": {"x": 1}}))
    assert task.status == "COMPLETED"
    assert json.loads(task.response) == {"echo": {"x": 1}}


def test_custom_callback_with_empty_data_gets_empty_parameters(env: Env) -> None:
    env.client.set_custom_callback("Custom_echo", lambda params: {"echo": params})
    assert json.loads(env.run(type="Custom_echo").response) == {"echo": {}}


def test_unregistered_custom_task_fails_as_unknown(env: Env) -> None:
    task = env.run(type="Custom_missing")
    assert task.status == "FAILED"
    assert json.loads(task.response) == {"error": "Unknown task type: Custom_missing"}


def test_unknown_task_type_fails_as_invalid(env: Env) -> None:
    task = env.run(type="Weird")
    assert task.status == "FAILED"
    assert json.loads(task.response) == {"error": "Invalid task type: Weird"}


def test_result_that_is_not_json_fails_with_clear_message(env: Env) -> None:
    env.client.set_custom_callback("obj", lambda params: {"value": object()})
    task = env.run(type="Custom_obj")
    assert task.status == "FAILED"
    assert "cannot be sent as JSON" in json.loads(task.response)["error"]


def test_custom_callback_stopped_reports_interrupted(env: Env) -> None:
    def stop(params: dict) -> dict:
        raise StoppedException("user gave up")

    env.client.set_custom_callback("stop", stop)
    task = env.run(type="Custom_stop")
    assert task.status == "INTERRUPTED"
    assert json.loads(task.response) == {"msg": "user gave up"}


def test_predict_gets_parameters_when_it_accepts_two_arguments(env: Env) -> None:
    env.client.set_predict_callback(lambda model, params: {"params": params, "id": model.model_id})
    task = env.run(type="Scaleout_Inference", model_id="seed-model", data=json.dumps({"parameters": {"k": 3}}))
    assert task.status == "COMPLETED"
    assert json.loads(task.response) == {"params": {"k": 3}, "id": "seed-model"}


def test_predict_with_one_argument_gets_only_the_model(env: Env) -> None:
    env.client.set_predict_callback(lambda model: {"sum": float(model.get_model_params(HELPER)[0].sum())})
    task = env.run(type="Scaleout_Inference", model_id="seed-model")
    assert json.loads(task.response) == {"sum": 4.0}


def test_stage_model_caches_the_model_and_later_tasks_reuse_it(env: Env) -> None:
    task = env.run(type="Scaleout_StageModel", model_id="seed-model")
    assert task.status == "COMPLETED"
    assert (env.cache / "seed-model.scm").is_file()
    env.client.set_predict_callback(lambda model: {"id": model.model_id})
    assert json.loads(env.run(type="Scaleout_Inference", model_id="seed-model").response) == {"id": "seed-model"}
    assert env.fake.downloads == ["seed-model"]


def test_download_of_unknown_model_fails_the_task(env: Env) -> None:
    env.client.set_validate_callback(lambda model: {"a": 1})
    task = env.run(type="Scaleout_Validation", model_id="nope")
    assert task.status == "FAILED"
    assert "NOT_FOUND" in json.loads(task.response)["error"]


def test_download_with_wrong_checksum_is_refused(env: Env) -> None:
    env.fake.checksum_override = "0" * 64
    env.client.set_validate_callback(lambda model: {"a": 1})
    task = env.run(type="Scaleout_Validation", model_id="seed-model")
    assert task.status == "FAILED"
    assert "checksum mismatch" in json.loads(task.response)["error"]
    assert not env.fake.validations


def test_container_with_another_model_id_is_refused(env: Env) -> None:
    env.fake.models["asked-for"] = seed_model("something-else").get_stream().read()
    env.client.set_validate_callback(lambda model: {"a": 1})
    task = env.run(type="Scaleout_Validation", model_id="asked-for")
    assert task.status == "FAILED"
    assert "Model ID mismatch" in json.loads(task.response)["error"]
