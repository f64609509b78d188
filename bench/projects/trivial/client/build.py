"""Seed model for the Flower comparison: TRIVIAL_NUM_PARAMS float32 parameters (default 1M), the same
values the Flower app starts from (bench/flower_app/flowerbench/workload.py)."""

import os

import numpy as np

from scaleoututil.helpers.helpers import get_helper

HELPER_MODULE = "numpyhelper"
helper = get_helper(HELPER_MODULE)


def build():
    output_dir = os.environ.get("SCALEOUT_BUILD_OUTPUT_DIR", ".")
    num_params = int(os.environ.get("TRIVIAL_NUM_PARAMS", "1000000"))
    np.random.seed(42)
    params = np.random.rand(num_params).astype(np.float32)
    helper.save([params], os.path.join(output_dir, "seed.npz"))
    print(f"Created seed.npz with {num_params} random parameters.")
