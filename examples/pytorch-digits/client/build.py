"""build(): write the seed model seed.npz: the freshly initialized DigitsNet (fixed seed) as numpy arrays.

`scaleout run build -p client` sets SCALEOUT_BUILD_OUTPUT_DIR to the folder the command was run from,
so seed.npz lands there.
"""

import os

import torch
from net import DigitsNet, get_params

from scaleoututil.helpers.helpers import get_helper

HELPER_MODULE = "numpyhelper"
helper = get_helper(HELPER_MODULE)


def build():
    output_dir = os.environ.get("SCALEOUT_BUILD_OUTPUT_DIR", ".")
    torch.manual_seed(42)
    params = get_params(DigitsNet())
    helper.save(params, os.path.join(output_dir, "seed.npz"))
    print(f"Created seed.npz: DigitsNet, {len(params)} arrays, {sum(p.size for p in params)} parameters.")
