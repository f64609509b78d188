"""This client's share of a synthetic linear-regression problem (y = x . w + noise, 10 features).

EXAMPLE_PARTITION (default 0) picks the share: partition p has 100 * (p + 1) training rows and 50 test
rows drawn from its own random stream, so clients started with different partitions train on different
data and report different num_examples.
"""

import os

import numpy as np

NUM_FEATURES = 10
TRUE_WEIGHTS = np.linspace(-1.0, 1.0, NUM_FEATURES)
TEST_ROWS = 50


def partition() -> int:
    return int(os.environ.get("EXAMPLE_PARTITION", "0"))


def load(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of this client's "train" or "test" rows."""
    p = partition()
    train_rows = 100 * (p + 1)
    rng = np.random.default_rng(1000 + p)
    x = rng.normal(size=(train_rows + TEST_ROWS, NUM_FEATURES))
    y = x @ TRUE_WEIGHTS + rng.normal(scale=0.1, size=len(x))
    if split == "train":
        return x[:train_rows], y[:train_rows]
    return x[train_rows:], y[train_rows:]


def mse(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((x @ weights - y) ** 2))
