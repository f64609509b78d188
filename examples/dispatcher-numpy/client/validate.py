"""`python validate.py IN OUT`: score the model in IN on this client's data; write the metrics to OUT as JSON."""

import sys

import data

from scaleoututil.helpers.helpers import get_helper, save_metrics

helper = get_helper("numpyhelper")


def validate(in_model_path: str, out_json_path: str) -> None:
    (params,) = helper.load(in_model_path)
    x_train, y_train = data.load("train")
    x_test, y_test = data.load("test")
    metrics = {
        "training_loss": data.mse(params, x_train, y_train),
        "test_loss": data.mse(params, x_test, y_test),
    }
    save_metrics(metrics, out_json_path)


if __name__ == "__main__":
    validate(sys.argv[1], sys.argv[2])
