"""`python predict.py IN OUT`: predictions of the model in IN; write them to OUT as JSON.

IN-metadata holds the prediction task's parameters; {"inputs": [[10 numbers], ...]} chooses the rows
to predict (default: this client's first three test rows).
"""

import json
import os
import sys

import data
import numpy as np

from scaleoututil.helpers.helpers import get_helper, load_metadata

helper = get_helper("numpyhelper")


def predict(in_model_path: str, out_json_path: str) -> None:
    parameters = load_metadata(in_model_path) if os.path.exists(in_model_path + "-metadata") else {}
    (params,) = helper.load(in_model_path)
    inputs = np.asarray(parameters["inputs"], dtype=np.float64) if "inputs" in parameters else data.load("test")[0][:3]
    with open(out_json_path, "w") as fh:
        json.dump({"predictions": [float(v) for v in inputs @ params]}, fh)


if __name__ == "__main__":
    predict(sys.argv[1], sys.argv[2])
