"""Seed model for the partition test: four zeros."""

import os

import numpy as np

from scaleoututil.helpers.helpers import get_helper


def build() -> None:
    out = os.environ.get("SCALEOUT_BUILD_OUTPUT_DIR", ".")
    get_helper("numpyhelper").save([np.zeros(4)], os.path.join(out, "seed.npz"))
