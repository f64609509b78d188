"""Seed model for the end-to-end tests: two arrays with known values."""

import os

import numpy as np

from scaleoututil.helpers.helpers import get_helper


def build() -> None:
    out = os.environ.get("SCALEOUT_BUILD_OUTPUT_DIR", ".")
    params = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, dtype=np.float64)]
    get_helper("numpyhelper").save(params, os.path.join(out, "seed.npz"))
