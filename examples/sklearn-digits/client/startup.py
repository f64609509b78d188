"""startup(client): federated logistic regression on the digits with scikit-learn.

Each round a client starts an SGDClassifier (log loss, i.e. one-vs-rest logistic regression) from the
global coefficients and intercept, runs a few epochs of SGD over its own share, and returns the new
[coef, intercept]. SGD's partial_fit is told all ten classes, so a share that lacks some digits (the
Dirichlet split makes that common) still yields a full 10 x 64 coefficient matrix for FedAvg.

Train settings (all optional): epochs (1), learning_rate (0.05), l2 (1e-4), alpha (the split's Dirichlet
concentration; default $DIGITS_ALPHA or 0.5). The client's share is `client.partition` (set by
SCALEOUT_PARTITION_ID / SCALEOUT_NUM_PARTITIONS, or per virtual client by `scaleout simulate`); without
one the client trains on all training rows.
"""

import digits_data
import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss

from scaleout import EdgeClient, ScaleoutModel
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.partitioning import Partition

HELPER_MODULE = "numpyhelper"
helper = get_helper(HELPER_MODULE)

DEFAULT_SETTINGS = {"epochs": 1, "learning_rate": 0.05, "l2": 1e-4}


def startup(client: EdgeClient):
    DigitsClient(client)


def classifier(params: list, learning_rate: float = 0.05, l2: float = 1e-4, seed: int = 0) -> SGDClassifier:
    """An SGDClassifier holding the model [coef, intercept], ready to predict or to continue training."""
    if len(params) != 2 or params[0].shape != (len(digits_data.CLASSES), digits_data.NUM_FEATURES):
        shapes = [p.shape for p in params]
        raise ValueError(f"expected the model [coef (10, 64), intercept (10,)], got arrays of shapes {shapes}; "
                         "was the seed model built by this example's build.py?")
    clf = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=learning_rate, alpha=l2, random_state=seed)
    clf.coef_ = params[0].astype(np.float64)  # copies: training updates them in place
    clf.intercept_ = params[1].astype(np.float64)
    clf.classes_ = digits_data.CLASSES
    return clf


def scores(clf: SGDClassifier, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, log loss) of the classifier on (x, y)."""
    proba = clf.predict_proba(x)
    accuracy = float(np.mean(digits_data.CLASSES[proba.argmax(axis=1)] == y))
    return accuracy, float(log_loss(y, proba, labels=digits_data.CLASSES))


class DigitsClient:
    def __init__(self, client: EdgeClient):
        self.client = client
        self.alpha = digits_data.alpha()
        client.set_train_callback(self.train)
        client.set_validate_callback(self.validate)
        digits_data.share(self.partition, self.alpha)  # load and split the data now, not in the first round

    @property
    def partition(self) -> Partition:
        return self.client.partition or Partition(0, 1)

    def train(self, model: ScaleoutModel, settings):
        """A few epochs of SGD on this client's share, starting from the global model."""
        settings = {**DEFAULT_SETTINGS, **(settings or {})}
        epochs, learning_rate, l2 = int(settings["epochs"]), float(settings["learning_rate"]), float(settings["l2"])
        self.alpha = digits_data.alpha(settings)
        partition = self.partition
        x, y = digits_data.share(partition, self.alpha)
        clf = classifier(model.get_model_params(helper), learning_rate, l2, seed=partition.index)
        for epoch in range(epochs):
            clf.partial_fit(x, y, classes=digits_data.CLASSES)
            accuracy, loss = scores(clf, x, y)
            print(f"partition {partition.index}/{partition.count}: epoch {epoch + 1}/{epochs} on {len(y)} rows, "
                  f"train loss {loss:.4f}, accuracy {accuracy:.4f}")
            self.client.log_metric({"train_loss": loss, "train_accuracy": accuracy})
            self.client.check_task_abort()  # raises if the session was stopped
        new_model = ScaleoutModel.from_model_params([clf.coef_, clf.intercept_], helper=helper)
        metadata = {"num_examples": len(y), "epochs": epochs, "learning_rate": learning_rate, "l2": l2,
                    "alpha": self.alpha}
        return new_model, {"training_metadata": metadata}

    def validate(self, model: ScaleoutModel):
        """Accuracy and log loss on this client's share and on the shared test set."""
        clf = classifier(model.get_model_params(helper))
        train_accuracy, train_loss = scores(clf, *digits_data.share(self.partition, self.alpha))
        test_accuracy, test_loss = scores(clf, *digits_data.test_set())
        return {"training_accuracy": train_accuracy, "training_loss": train_loss,
                "test_accuracy": test_accuracy, "test_loss": test_loss}
