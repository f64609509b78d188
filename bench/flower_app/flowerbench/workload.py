"""The workload both sides share: the seed model and each client's update (kept identical to
bench/projects/trivial/client, which cannot import this file because it runs in our client)."""

from __future__ import annotations

import numpy as np

DELTA = 0.001  # client i adds DELTA * (i + 1) to every parameter


def seed_model(num_params: int) -> np.ndarray:
    np.random.seed(42)
    return np.random.rand(num_params).astype(np.float32)


def local_update(params: np.ndarray, partition_id: int) -> np.ndarray:
    return params + np.float32(DELTA * (partition_id + 1))
