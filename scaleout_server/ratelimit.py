"""Token buckets per key (client id, address): how the server limits how often one client may call it.

Why buckets: a client may burst (a round's upload, status and metrics arrive together) but not sustain
more than `rate` requests per second. Only the most recently used keys are kept (`max_keys`); a key
forgotten for lack of room comes back with a full bucket, which is what an idle key has anyway.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float
    warned: float = float("-inf")


class RateLimiter:
    """`allow(key)` takes one token from `key`'s bucket (refilled at `rate` per second up to `burst`).

    A rate of 0 (or less) means unlimited. Thread-safe: REST handlers call it from a thread pool.
    """

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, key: str, cost: float = 1.0) -> bool:
        if not self.enabled:
            return True
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = _Bucket(tokens=float(self.burst), updated=now)
                self._buckets[key] = bucket
                if len(self._buckets) > self.max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
                bucket.updated = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return True
            return False

    def retry_after(self, key: str, cost: float = 1.0) -> float:
        """Seconds until `key` has `cost` tokens again (0 when it has them now)."""
        if not self.enabled:
            return 0.0
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            missing = cost - min(float(self.burst), bucket.tokens + (self._clock() - bucket.updated) * self.rate)
        return max(0.0, missing / self.rate)

    def should_warn(self, key: str, every: float = 60.0) -> bool:
        """True at most once per `every` seconds per key: refusals are logged without flooding the log."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None or now - bucket.warned < every:
                return False
            bucket.warned = now
            return True
