"""Trivial training for the Flower comparison: client i (its partition, SCALEOUT_PARTITION_ID) adds
0.001 * (i + 1) to every parameter, so every update differs; the same rule as the Flower ClientApp."""

from scaleout import EdgeClient, ScaleoutModel
from scaleoututil.helpers.helpers import get_helper

HELPER_MODULE = "numpyhelper"
helper = get_helper(HELPER_MODULE)
DELTA = 0.001


def startup(client: EdgeClient):
    TrivialClient(client)


class TrivialClient:
    def __init__(self, client: EdgeClient):
        self.client = client
        partition = client.partition
        self.offset = DELTA * ((partition.index if partition else 0) + 1)
        client.set_train_callback(self.train)

    def train(self, model: ScaleoutModel, settings):
        """Add this client's constant to every parameter; every client counts as one example (plain mean)."""
        params = model.get_model_params(helper)
        updated = [(p + p.dtype.type(self.offset)) for p in params]
        return ScaleoutModel.from_model_params(updated, helper=helper), {"training_metadata": {"num_examples": 1}}
