"""`python train.py IN OUT`: a few epochs of gradient descent on this client's data.

Reads the global model from IN and the client settings (learning_rate, epochs) from IN-metadata; writes
the updated model to OUT and {"num_examples": N, ...} to OUT-metadata (the dispatcher file contract).
"""

import os
import sys

import data
import numpy as np

from scaleoututil.helpers.helpers import get_helper, load_metadata, save_metadata

helper = get_helper("numpyhelper")


def train(in_model_path: str, out_model_path: str) -> None:
    settings = load_metadata(in_model_path) if os.path.exists(in_model_path + "-metadata") else {}
    learning_rate = float(settings.get("learning_rate", 0.05))
    epochs = int(settings.get("epochs", 5))

    (params,) = helper.load(in_model_path)
    x, y = data.load("train")
    weights = params.astype(np.float64)
    for _ in range(epochs):
        gradient = 2.0 / len(y) * x.T @ (x @ weights - y)
        weights -= learning_rate * gradient
    print(f"partition {data.partition()}: trained {epochs} epochs on {len(y)} rows, "
          f"train mse {data.mse(weights, x, y):.4f}")

    helper.save([weights.astype(params.dtype)], out_model_path)
    save_metadata({"num_examples": len(y), "epochs": epochs, "learning_rate": learning_rate}, out_model_path)


if __name__ == "__main__":
    train(sys.argv[1], sys.argv[2])
