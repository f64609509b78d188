"""The handwritten digits (scikit-learn's bundled `load_digits`: 1797 8x8 images, no download) and this
client's share of them.

Every client computes the same split on its own, so no data moves over the network: a fixed, stratified
20% is the test set all clients score on; the other 80% is dealt out with a seeded Dirichlet split, so
shares are non-IID (a few dominant digits per client) like data held by different sites. The split's
alpha comes from the train settings ("alpha"), else DIGITS_ALPHA, else 0.5; smaller is more skewed.
"""

import functools
import os

import numpy as np

from scaleoututil.partitioning import Partition, dirichlet_split

ALPHA_ENV = "DIGITS_ALPHA"
DEFAULT_ALPHA = 0.5
SPLIT_SEED = 42  # the same in every client: all of them compute the same shares
TEST_FRACTION = 0.2
MIN_SHARE = 5  # rows every client gets at least
NUM_FEATURES = 64
CLASSES = np.arange(10)


def alpha(settings: dict | None = None) -> float:
    """The Dirichlet concentration: settings["alpha"], else $DIGITS_ALPHA, else 0.5."""
    raw = (settings or {}).get("alpha", os.environ.get(ALPHA_ENV, DEFAULT_ALPHA))
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a positive number (train setting 'alpha' or ${ALPHA_ENV}), "
                         f"got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"alpha must be positive (train setting 'alpha' or ${ALPHA_ENV}), got {value}")
    return value


@functools.cache
def _train_test() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x / 16.0  # pixel values 0..16 -> 0..1 (float64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y,
                                                        random_state=SPLIT_SEED)
    return x_train, y_train, x_test, y_test


def test_set() -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the held-out test rows, the same for every client."""
    _, _, x_test, y_test = _train_test()
    return x_test, y_test


@functools.cache
def split(num_partitions: int, alpha: float) -> tuple[np.ndarray, ...]:
    """Row indices (into the training rows) of every share."""
    _, y_train, _, _ = _train_test()
    return tuple(dirichlet_split(y_train, num_partitions, alpha=alpha, seed=SPLIT_SEED, min_size=MIN_SHARE))


def share(partition: Partition, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of this partition's training rows."""
    x_train, y_train, _, _ = _train_test()
    rows = split(partition.count, alpha)[partition.index]
    return x_train[rows], y_train[rows]
