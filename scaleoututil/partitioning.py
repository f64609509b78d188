"""Which share of a data set a client trains on, and how to cut a data set into shares.

Simulations and examples need the same data set split across clients in a repeatable way: every
client must compute the same split (same seed) and take its own share, so no data moves over the
network. `Partition` says which share a client has; `iid_split` and `dirichlet_split` compute the
shares. `scaleout simulate` gives each virtual client its Partition (`client.partition` in startup);
a real client takes it from SCALEOUT_PARTITION_ID and SCALEOUT_NUM_PARTITIONS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

PARTITION_ID_ENV = "SCALEOUT_PARTITION_ID"
NUM_PARTITIONS_ENV = "SCALEOUT_NUM_PARTITIONS"


@dataclass(frozen=True)
class Partition:
    """Share `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"a partition needs count >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition index {self.index} is outside 0..{self.count - 1}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Partition | None:
        """The partition named by SCALEOUT_PARTITION_ID / SCALEOUT_NUM_PARTITIONS, or None if unset."""
        raw_index, raw_count = env.get(PARTITION_ID_ENV, "").strip(), env.get(NUM_PARTITIONS_ENV, "").strip()
        if not raw_index and not raw_count:
            return None
        try:
            return cls(int(raw_index or "0"), int(raw_count or "1"))
        except ValueError as exc:
            raise ValueError(f"{PARTITION_ID_ENV}={raw_index!r}, {NUM_PARTITIONS_ENV}={raw_count!r}: {exc}; "
                             "set both to integers, e.g. 0 and 10") from exc

    def env(self) -> dict[str, str]:
        """The environment variables that give a client process this partition."""
        return {PARTITION_ID_ENV: str(self.index), NUM_PARTITIONS_ENV: str(self.count)}


def iid_split(num_items: int, num_partitions: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffle 0..num_items-1 and cut it into num_partitions shares of (nearly) equal size."""
    if num_partitions < 1:
        raise ValueError("num_partitions must be at least 1")
    order = np.random.default_rng(seed).permutation(num_items)
    return [np.sort(share) for share in np.array_split(order, num_partitions)]


def dirichlet_split(labels: Sequence[int] | np.ndarray, num_partitions: int, alpha: float = 0.5,
                    seed: int = 0, min_size: int = 1) -> list[np.ndarray]:
    """Non-IID shares: each class is divided among the partitions in proportions drawn from Dir(alpha).

    Small alpha (0.1) gives each client a few dominant classes; large alpha (100) approaches an IID
    split. Draws are repeated (with the same seeded generator) until every share has at least
    `min_size` items, so no client is left without data.
    """
    if num_partitions < 1:
        raise ValueError("num_partitions must be at least 1")
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one class label per item (a 1-D array), got shape {y.shape}; for one-hot "
                         "labels pass labels.argmax(axis=1)")
    if len(y) == 0:
        raise ValueError("labels is empty: there is nothing to split")
    if len(y) < num_partitions * min_size:
        raise ValueError(f"{len(y)} items cannot give {num_partitions} partitions {min_size} item(s) each")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _attempt in range(1000):
        shares: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for cls in classes:
            members = rng.permutation(np.flatnonzero(y == cls))
            proportions = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
            for share, part in zip(shares, np.split(members, cuts), strict=True):
                share.append(part)
        result = [np.sort(np.concatenate(parts)) for parts in shares]
        if min(len(r) for r in result) >= min_size:
            return result
    raise ValueError(f"no Dirichlet split with alpha={alpha} gave every one of {num_partitions} partitions "
                     f"{min_size} item(s); raise alpha or lower the number of partitions")
