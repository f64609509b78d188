"""startup(client): federated training of a small CNN on the digits with Keras 3 (PyTorch backend, CPU).

Each round a client loads the global weights into digits_net, runs a few epochs of SGD with momentum over
its own share in mini-batches (`model.fit`), and returns the new weights. Train settings (all optional):
epochs (1), learning_rate (0.1), momentum (0.9), batch_size (32), alpha (the split's Dirichlet
concentration; default $DIGITS_ALPHA or 0.5). The client's share is `client.partition` (set by
SCALEOUT_PARTITION_ID / SCALEOUT_NUM_PARTITIONS, or per virtual client by `scaleout simulate`); without one
the client trains on all training rows.
"""

import digits_data
from net import digits_net, fit, get_params, scores, set_params, set_seed

from scaleout import EdgeClient, ScaleoutModel
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.partitioning import Partition

HELPER_MODULE = "numpyhelper"
helper = get_helper(HELPER_MODULE)

DEFAULT_SETTINGS = {"epochs": 1, "learning_rate": 0.1, "momentum": 0.9, "batch_size": 32}


def startup(client: EdgeClient):
    DigitsClient(client)


class DigitsClient:
    def __init__(self, client: EdgeClient):
        self.client = client
        self.alpha = digits_data.alpha()
        self.rounds_trained = 0  # seeds the batch order: repeatable, yet different each round
        client.set_train_callback(self.train)
        client.set_validate_callback(self.validate)
        digits_data.share(self.partition, self.alpha)  # load and split the data now, not in the first round

    @property
    def partition(self) -> Partition:
        return self.client.partition or Partition(0, 1)

    def train(self, model: ScaleoutModel, settings):
        """A few epochs of mini-batch SGD on this client's share, starting from the global model."""
        settings = {**DEFAULT_SETTINGS, **(settings or {})}
        epochs, batch_size = int(settings["epochs"]), int(settings["batch_size"])
        learning_rate, momentum = float(settings["learning_rate"]), float(settings["momentum"])
        self.alpha = digits_data.alpha(settings)
        partition = self.partition
        x, y = digits_data.share(partition, self.alpha)
        set_seed(1000 * self.rounds_trained + partition.index)
        self.rounds_trained += 1
        net = digits_net(learning_rate, momentum)
        set_params(net, model.get_model_params(helper))
        # check_task_abort raises if the session was stopped, which ends fit()
        for epoch, result in enumerate(fit(net, x, y, epochs, batch_size, self.client.check_task_abort)):
            print(f"partition {partition.index}/{partition.count}: epoch {epoch + 1}/{epochs} on {len(y)} rows, "
                  f"train loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}")
            self.client.log_metric({"train_loss": result["loss"], "train_accuracy": result["accuracy"]})
        new_model = ScaleoutModel.from_model_params(get_params(net), helper=helper)
        metadata = {"num_examples": len(y), "epochs": epochs, "learning_rate": learning_rate,
                    "momentum": momentum, "batch_size": batch_size, "alpha": self.alpha}
        return new_model, {"training_metadata": metadata}

    def validate(self, model: ScaleoutModel):
        """Accuracy and cross-entropy loss on this client's share and on the shared test set."""
        net = digits_net()
        set_params(net, model.get_model_params(helper))
        train_accuracy, train_loss = scores(net, *digits_data.share(self.partition, self.alpha))
        test_accuracy, test_loss = scores(net, *digits_data.test_set())
        return {"training_accuracy": train_accuracy, "training_loss": train_loss,
                "test_accuracy": test_accuracy, "test_loss": test_loss}
