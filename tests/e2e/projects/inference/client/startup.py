"""Test project for staging and on-device inference, written against the published 1.1 client's API so
the same package runs on ours and on theirs.

infer(model, parameters)   logs parameters["n"] (default 1) results with log_inference_result("detection",
                           {...}) naming the model's first parameter, then sleeps parameters["seconds"]
                           (default 0) checking for abort
staged(model)              drops the marker file staged-<model_id> into E2E_MARKER_DIR
Custom_nap(parameters)     sleeps E2E_NAP_SECONDS (else parameters["seconds"], default 0) checking for abort
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
    Project(client)


class Project:
    def __init__(self, client: EdgeClient) -> None:
        self.client = client
        client.set_train_callback(self.train)
        client.set_inference_callback(self.infer)
        client.set_stage_model_callback(self.staged)
        client.set_custom_callback("nap", self.nap)

    def train(self, model: ScaleoutModel, settings: dict):
        params = [p + 1 for p in model.get_model_params(helper)]
        return ScaleoutModel.from_training_model(params, helper=helper), {"training_metadata": {"num_examples": 1}}

    def infer(self, model: ScaleoutModel, parameters: dict) -> dict:
        first = float(model.get_model_params(helper)[0].flat[0])
        for i in range(int(parameters.get("n", 1))):
            self.client.log_inference_result("detection", {"i": i, "first": first, "label": parameters.get("label")})
        self._sleep(float(parameters.get("seconds", 0)))
        return {"not": "reported"}  # the published semantics: only log_inference_result reaches the server

    def staged(self, model: ScaleoutModel) -> None:
        _marker(f"staged-{model.model_id}", {"first": float(model.get_model_params(helper)[0].flat[0])})

    def nap(self, parameters: dict) -> dict:
        seconds = float(os.environ.get("E2E_NAP_SECONDS") or parameters.get("seconds", 0))
        self._sleep(seconds)
        return {"slept": seconds}

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.client.check_task_abort()
            time.sleep(0.05)
