"""`python build.py`: write the seed model seed.npz (10 random float32 parameters), as the seed's example does.

`scaleout run build -p client` runs this in the client folder with SCALEOUT_BUILD_OUTPUT_DIR set to the
folder the user ran the command from, so seed.npz lands there.
"""

import os

import numpy as np

from scaleoututil.helpers.helpers import get_helper

helper = get_helper("numpyhelper")


def build() -> None:
    output_dir = os.environ.get("SCALEOUT_BUILD_OUTPUT_DIR", ".")
    np.random.seed(42)
    params = np.random.rand(10).astype(np.float32)
    helper.save([params], os.path.join(output_dir, "seed.npz"))
    print("Created seed.npz with 10 random parameters.")


if __name__ == "__main__":
    build()
