"""The edge client of the server-functions example: a device that trains a linear model on its own data
with whatever settings the server sends it, and says which settings it used.

Each client describes itself with two attributes, which the server functions read to choose the
clients of a round and each client's settings:

  DEVICE_TIER      "fast" or "slow" hardware (default "fast")
  DEVICE_CHARGING  "true" or "false": only charging devices are asked to train (default "true")

EXAMPLE_PARTITION (default 0) picks the client's share of the data (`scaleout simulate` sets it through
`client.partition` instead).
"""

import os
import threading

import data
import numpy as np

from scaleout import EdgeClient, ScaleoutModel
from scaleoututil.helpers.helpers import get_helper

helper = get_helper("numpyhelper")

ATTRIBUTE_INTERVAL = 30.0  # seconds between two reports of the attributes (they may change over time)


def startup(client: EdgeClient) -> None:
    DeviceClient(client)


class DeviceClient:
    def __init__(self, client: EdgeClient) -> None:
        self.client = client
        self.tier = os.environ.get("DEVICE_TIER", "fast")
        self.charging = os.environ.get("DEVICE_CHARGING", "true").lower()
        share = client.partition.index if client.partition else int(os.environ.get("EXAMPLE_PARTITION", "0"))
        self.x_train, self.y_train, self.x_test, self.y_test = data.load(share)
        self.rng = np.random.default_rng(share)
        client.set_train_callback(self.train)
        client.set_validate_callback(self.validate)
        threading.Thread(target=self.report_attributes, name="attributes", daemon=True).start()

    def report_attributes(self) -> None:
        """Tell the server what this device is, now and every ATTRIBUTE_INTERVAL seconds (attribute
        values are strings, as the published clients require)."""
        stop = threading.Event()
        while True:
            self.client.log_attributes({"tier": self.tier, "charging": self.charging}, check_task_abort=False)
            stop.wait(ATTRIBUTE_INTERVAL)

    def train(self, model: ScaleoutModel, settings: dict):
        """Mini-batch gradient descent on the squared error, with the server's settings."""
        learning_rate = float(settings.get("learning_rate", 0.05))
        local_epochs = int(settings.get("local_epochs", 1))
        batch_size = int(settings.get("batch_size", 32))
        weights, bias = (np.array(p, dtype=np.float64) for p in model.get_model_params(helper))
        x, y = self.x_train, self.y_train
        for epoch in range(local_epochs):
            order = self.rng.permutation(len(y))
            for start in range(0, len(y), batch_size):
                rows = order[start:start + batch_size]
                error = x[rows] @ weights + bias[0] - y[rows]
                weights -= learning_rate * 2.0 * x[rows].T @ error / len(rows)
                bias -= learning_rate * 2.0 * error.mean()
                self.client.check_task_abort()
            self.client.log_metric({"train_mse": data.mse(weights, bias[0], x, y)}, step=epoch)
        # the settings this client trained with: in the metrics and in the update's metadata
        self.client.log_metric({"learning_rate": learning_rate, "local_epochs": local_epochs,
                                "batch_size": batch_size})
        print(f"trained {local_epochs} epoch(s), learning rate {learning_rate:g}, batch size {batch_size} "
              f"({self.tier} device, settings {settings})")
        metadata = {"num_examples": len(y), "learning_rate": learning_rate, "local_epochs": local_epochs,
                    "batch_size": batch_size, "train_mse": data.mse(weights, bias[0], x, y)}
        updated = ScaleoutModel.from_model_params([weights, bias], helper=helper)
        return updated, {"training_metadata": metadata, "tier": self.tier, "client_settings": settings}

    def validate(self, model: ScaleoutModel) -> dict:
        weights, bias = model.get_model_params(helper)
        return {"validation_mse": data.mse(weights, float(bias[0]), self.x_test, self.y_test)}
