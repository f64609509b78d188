"""Staging and inference on our client, with the published 1.1 client's semantics, against a real in-test
gRPC combiner: which callback runs, what is cached and reported, and the calls' errors."""

from __future__ import annotations

import json

import pytest

from scaleout.client.edge_client import EdgeClient
from scaleoututil.model import ScaleoutModel
from tests.unit.test_client_fakes import HELPER
from tests.unit.test_client_tasks import Env, env  # noqa: F401  (the fixture)


def test_inference_callback_wins_over_predict_and_its_return_value_is_not_reported(env: Env) -> None:  # noqa: F811
    seen: list[tuple[str, dict]] = []
    env.client.set_predict_callback(lambda model: {"from": "predict"})
    env.client.set_inference_callback(lambda model, params: seen.append((model.model_id, params)) or {"x": 1})
    task = env.run(type="Scaleout_Inference", model_id="seed-model", data=json.dumps({"parameters": {"k": 3}}))
    assert (task.status, task.response) == ("COMPLETED", "")
    assert seen == [("seed-model", {"k": 3})]
    assert (env.cache / "seed-model.scm").is_file()  # staged on the way, as the published client does


def test_stage_task_caches_once_and_hands_the_model_to_the_stage_callback(env: Env) -> None:  # noqa: F811
    staged: list[float] = []
    env.client.set_stage_model_callback(lambda model: staged.append(float(model.get_model_params(HELPER)[0].sum())))
    assert env.run(type="Scaleout_StageModel", model_id="seed-model").status == "COMPLETED"
    assert env.run(type="Scaleout_StageModel", model_id="seed-model", correlation_id="corr-2").status == "COMPLETED"
    assert staged == [4.0, 4.0] and env.fake.downloads == ["seed-model"]


def test_inference_without_any_callback_fails_saying_what_to_register(env: Env) -> None:  # noqa: F811
    task = env.run(type="Scaleout_Inference", model_id="seed-model")
    assert task.status == "FAILED" and "set_inference_callback" in json.loads(task.response)["error"]


def test_stage_model_and_run_inference_from_user_code(env: Env) -> None:  # noqa: F811
    env.client.set_inference_callback(lambda model, params: (model.model_id, params))
    staged = env.client.stage_model("seed-model")
    assert staged.model_id == "seed-model" and env.fake.downloads == ["seed-model"]
    assert env.client.run_inference("seed-model", {"a": 1}) == ("seed-model", {"a": 1})  # from the cache
    own = ScaleoutModel.from_model_params([p * 2 for p in staged.get_model_params(HELPER)], HELPER)
    assert env.client.stage_model(own) is own and (env.cache / f"{own.model_id}.scm").is_file()
    assert env.fake.downloads == ["seed-model"]
    with pytest.raises(ValueError, match="not found"):
        env.client.run_inference(None)
    with pytest.raises(TypeError, match="ScaleoutModel or a model id"):
        env.client.stage_model(3)  # type: ignore[arg-type]


def test_without_a_connection_or_a_task_the_calls_say_why() -> None:
    client = EdgeClient()
    with pytest.raises(ValueError, match="No inference callback"):
        client.run_inference("m")
    with pytest.raises(RuntimeError, match="connected client"):
        client.stage_model("m")
    assert client.log_inference_result("detection", {"x": 1}) is False  # no task: dropped, as published
