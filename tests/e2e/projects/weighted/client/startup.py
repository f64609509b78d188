"""Test project whose behaviour is chosen per client process through environment variables.

E2E_CONSTANT     added to every parameter by train (default 1.0)
E2E_NUM_EXAMPLES num_examples reported by train (default 1)
E2E_TRAIN_STEPS  training iterations, each logging a metric and checking for abort (default 3)
E2E_STEP_SECONDS sleep per iteration (default 0)
E2E_TRAIN_FAIL   when set, train raises
E2E_LATE_ONCE_SECONDS  the first train sleeps this long after training, without checking for abort, so its
                 update arrives after its round ended (default 0)
E2E_MARKER_DIR   folder where callbacks drop marker files the tests read
E2E_NO_VALIDATE  when set, no validate callback is registered
"""

import json
import os
import time

from scaleout import EdgeClient, ScaleoutModel
from scaleoututil.helpers.helpers import get_helper

helper = get_helper("numpyhelper")


def _marker(name: str, payload: dict) -> None:
    folder = os.environ.get("E2E_MARKER_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "w") as fh:
            json.dump(payload, fh)


def startup(client: EdgeClient) -> None:
    TestClient(client)


class TestClient:
    def __init__(self, client: EdgeClient) -> None:
        self.client = client
        self.constant = float(os.environ.get("E2E_CONSTANT", "1.0"))
        self.num_examples = int(os.environ.get("E2E_NUM_EXAMPLES", "1"))
        client.set_train_callback(self.train)
        if not os.environ.get("E2E_NO_VALIDATE"):
            client.set_validate_callback(self.validate)
        if hasattr(client, "set_predict_callback"):  # the published 1.0.7 client has no predict
            client.set_predict_callback(self.predict)
        client.set_custom_callback("echo", self.echo)

    def train(self, model: ScaleoutModel, settings: dict):
        params = model.get_model_params(helper)
        steps = int(os.environ.get("E2E_TRAIN_STEPS", "3"))
        pause = float(os.environ.get("E2E_STEP_SECONDS", "0"))
        _marker(f"train-started-{os.getpid()}", {"settings": settings})
        if os.environ.get("E2E_TRAIN_FAIL"):
            raise RuntimeError("deliberate failure in train")
        try:
            for step in range(steps):
                self.client.log_metric({"train_loss": 1.0 / (step + 1)})
                self.client.check_task_abort()
                time.sleep(pause)
        except Exception as exc:
            _marker(f"train-aborted-{os.getpid()}", {"error": type(exc).__name__})
            raise
        late = float(os.environ.get("E2E_LATE_ONCE_SECONDS", "0"))
        if late and not getattr(self, "was_late", False):
            self.was_late = True
            time.sleep(late)
        new_params = [p + self.constant for p in params]
        return ScaleoutModel.from_model_params(new_params, helper=helper), {
            "training_metadata": {"num_examples": self.num_examples},
            "constant": self.constant,
        }

    def validate(self, model: ScaleoutModel) -> dict:
        params = model.get_model_params(helper)
        return {"mean_param": float(sum(float(p.sum()) for p in params) / sum(p.size for p in params)),
                "validation_accuracy": 0.5 + self.constant / 100}

    def predict(self, model: ScaleoutModel) -> dict:
        params = model.get_model_params(helper)
        return {"first": float(params[0].flat[0])}

    def echo(self, params: dict) -> dict:
        _marker(f"echo-{os.getpid()}", params)
        return {"echo": params, "constant": self.constant}
