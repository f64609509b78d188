"""build(): write the seed model seed.npz: the freshly initialized Keras digits_net (fixed seed) as numpy
arrays.

`scaleout run build -p client` sets SCALEOUT_BUILD_OUTPUT_DIR to the folder the command was run from,
so seed.npz lands there.
"""

import os

from net import backend, digits_net, get_params, set_seed

from scaleoututil.helpers.helpers import get_helper

HELPER_MODULE = "numpyhelper"
helper = get_helper(HELPER_MODULE)


def build():
    output_dir = os.environ.get("SCALEOUT_BUILD_OUTPUT_DIR", ".")
    set_seed(42)
    params = get_params(digits_net())
    helper.save(params, os.path.join(output_dir, "seed.npz"))
    print(f"Created seed.npz: Keras digits_net ({backend()} backend), {len(params)} arrays, "
          f"{sum(p.size for p in params)} parameters.")
