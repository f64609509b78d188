"""Riding out a short outage of a part underneath (the statestore's database, the S3 endpoint).

One home for the rule both backends follow: call again after a growing, jittered pause while the part
is unreachable, for at most `wait` seconds (then the last error), with one log line when it goes and
one when it is back, so a restart of PostgreSQL or the S3 server costs a session a pause, not its rounds.
Callers retry only what cannot run twice: getting a connection, or an idempotent request.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_PAUSE_S = 0.5


def ride_out(once: Callable[[], T], unavailable: type[Exception], wait: float, what: str,
             log: logging.Logger, max_pause: float = 4.0) -> T:
    """`once()`, again while it raises `unavailable`, for up to `wait` seconds. `what` names the part in
    the "answers again" line (e.g. "the S3 endpoint http://...: put models/abc")."""
    deadline = time.monotonic() + wait
    pause = FIRST_PAUSE_S
    failed_since: float | None = None
    while True:
        try:
            result = once()
        except unavailable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            if failed_since is None:
                failed_since = time.monotonic()
                log.warning("%s; retrying for up to %.0f s", exc, left)
            time.sleep(min(left, pause * random.uniform(0.5, 1.0)))
            pause = min(pause * 2, max_pause)
            continue
        if failed_since is not None:
            log.warning("%s answers again (after %.1f s)", what, time.monotonic() - failed_since)
        return result
