"""One client's share of a synthetic linear-regression problem: y = x . w + b + noise, 8 features.

Share p has 200 training rows and 50 test rows from its own random stream, so every client trains on
different data drawn from the same true model (TRUE_WEIGHTS, TRUE_BIAS).
"""

import numpy as np

NUM_FEATURES = 8
TRUE_WEIGHTS = np.linspace(-2.0, 2.0, NUM_FEATURES)
TRUE_BIAS = 0.5
TRAIN_ROWS = 200
TEST_ROWS = 50


def load(share: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of share `share`."""
    rng = np.random.default_rng(1000 + share)
    x = rng.normal(size=(TRAIN_ROWS + TEST_ROWS, NUM_FEATURES))
    y = x @ TRUE_WEIGHTS + TRUE_BIAS + rng.normal(scale=0.1, size=len(x))
    return x[:TRAIN_ROWS], y[:TRAIN_ROWS], x[TRAIN_ROWS:], y[TRAIN_ROWS:]


def mse(weights: np.ndarray, bias: float, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((x @ weights + bias - y) ** 2))
