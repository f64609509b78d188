"""build(): write the seed model seed.npz: [coef (10 x 64), intercept (10)], all zeros.

`scaleout run build -p client` sets SCALEOUT_BUILD_OUTPUT_DIR to the folder the command was run from,
so seed.npz lands there.
"""

import os

import numpy as np
from digits_data import CLASSES, NUM_FEATURES

from scaleoututil.helpers.helpers import get_helper

HELPER_MODULE = "numpyhelper"
helper = get_helper(HELPER_MODULE)


def build():
    output_dir = os.environ.get("SCALEOUT_BUILD_OUTPUT_DIR", ".")
    coef = np.zeros((len(CLASSES), NUM_FEATURES))
    intercept = np.zeros(len(CLASSES))
    helper.save([coef, intercept], os.path.join(output_dir, "seed.npz"))
    print(f"Created seed.npz: logistic regression with coef {coef.shape} and intercept {intercept.shape}, all zeros.")
