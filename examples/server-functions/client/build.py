"""`scaleout run build -p client`: write the seed model seed.npz (the weights and the bias of a linear
model, all zero) to SCALEOUT_BUILD_OUTPUT_DIR (the folder the command was run from)."""

import os

import numpy as np
from data import NUM_FEATURES

from scaleoututil.helpers.helpers import get_helper

helper = get_helper("numpyhelper")


def build() -> None:
    output_dir = os.environ.get("SCALEOUT_BUILD_OUTPUT_DIR", ".")
    params = [np.zeros(NUM_FEATURES), np.zeros(1)]
    helper.save(params, os.path.join(output_dir, "seed.npz"))
    print(f"Created seed.npz: a linear model with {NUM_FEATURES} weights and a bias, all zero.")


if __name__ == "__main__":
    build()
