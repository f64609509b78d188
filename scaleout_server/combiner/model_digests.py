"""The checksum trailer of model downloads, computed once per stored model instead of once per client.

Every client of a round downloads the same global model, and each download ends with the model's
SHA-256 as its `checksum` trailer (client-1.1 wire contract). Hashing the model again for every
client was ~8% of the combiner's CPU in a 1000-client round. Stored models never change (new models
get new ids), so the first download of a model starts one hash of the stored object in a worker
thread, alongside its own streaming, and every download of that model, concurrent or later, waits
for that one result only at its end, where the trailer goes. The key includes the object's size, so
an id that was deleted and stored again with other bytes is hashed afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MODELS_KEPT = 64  # digests remembered (a few bytes each); a session needs one per round


@dataclass(frozen=True)
class ModelDigest:
    """What a download's trailer needs to know about one stored model."""

    container: bool  # a raw legacy blob gets no trailer: the client re-wraps it, so no checksum could match
    checksum: str  # hex checksum of the stored bytes (SHA-256 unless the byte path agreed on another)
    size: int  # bytes hashed


class ModelDigests:
    """Digests by (model id, size), each computed at most once at a time; bounded, least recently used out.

    Runs on the combiner's event loop (no locks). A failed computation is forgotten, so the next
    download tries again.
    """

    def __init__(self, max_models: int = MODELS_KEPT) -> None:
        self.max_models = max_models
        self._entries: OrderedDict[tuple[str, int, str], asyncio.Future[ModelDigest]] = OrderedDict()
        self.computed = 0  # how many hashes were started (tests, diagnostics)

    def get(self, model_id: str, size: int, compute: Callable[[], ModelDigest],
            algorithm: str = "SHA256") -> asyncio.Future[ModelDigest]:
        """The digest of the model in `algorithm`, started with `compute()` in a worker thread unless
        already known or under way. Await it through `asyncio.shield`: one cancelled download must not
        cancel it for all."""
        key = (model_id, size, algorithm)
        future = self._entries.get(key)
        if future is not None:
            self._entries.move_to_end(key)
            return future
        future = asyncio.ensure_future(asyncio.to_thread(compute))
        self.computed += 1
        self._entries[key] = future
        future.add_done_callback(lambda done: self._forget_failed(key, done))
        while len(self._entries) > self.max_models:
            self._entries.popitem(last=False)  # downloads still waiting hold their own reference
        return future

    def forget(self, model_id: str, size: int, algorithm: str = "SHA256") -> None:
        """Drop a digest found not to match what was read (the object changed after all)."""
        self._entries.pop((model_id, size, algorithm), None)

    def _forget_failed(self, key: tuple[str, int, str], future: asyncio.Future[ModelDigest]) -> None:
        if not future.cancelled() and future.exception() is None:
            return
        if self._entries.get(key) is future:
            del self._entries[key]
        if not future.cancelled():
            log.warning("could not compute the checksum of model %s: %s", key[0], future.exception())

    def __len__(self) -> int:
        return len(self._entries)
