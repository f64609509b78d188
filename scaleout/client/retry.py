"""Trying a call to the server again until it answers: the one retry loop of the client.

Why one helper: every step of the client that talks to a server (token exchange, registration, the
compute package, the combiner's calls) must outlast a server that is down or restarting, for as long as
it takes, without flooding the log, and must still stop at once when the operator stops the client or
the answer shows that trying again cannot help. A step says which of its failures are worth another try
by raising `TransientError`; anything else it raises ends the loop and reaches the caller unchanged.

The wait between attempts grows exponentially with jitter (`Backoff`), so a thousand clients waiting for
a restarted controller do not knock on it at the same moment; a server that says when to come back
(`TransientError.retry_after`, e.g. "no compute package yet, ask again in 3 s") is asked again then.
`RetryLog` writes one line per group of failed attempts: the first failure, a change of reason, a
reminder every `REPORT_EVERY` seconds, and the recovery.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_START = 0.5
BACKOFF_CAP = 30.0
REPORT_EVERY = 60.0  # seconds between "still failing" lines while the reason stays the same


class TransientError(Exception):
    """The server did not answer, or answered "not now" (HTTP 429/5xx, gRPC UNAVAILABLE...): another
    attempt may succeed. `retry_after`: seconds to wait before it, when the server (or the step) knows."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Interrupted(Exception):
    """A retried call gave up because its stop event was set (task aborted or client stopping)."""


class Backoff:
    """Exponential back-off with jitter: `start` s doubling up to `cap` s, each delay varied by +-20 %;
    `reset()` after a success."""

    def __init__(self, start: float = BACKOFF_START, cap: float = BACKOFF_CAP) -> None:
        self._start = start
        self._cap = cap
        self._next = start

    @property
    def cap(self) -> float:
        return self._cap

    def next_delay(self) -> float:
        delay = self._next * random.uniform(0.8, 1.2)
        self._next = min(self._next * 2, self._cap)
        return min(delay, self._cap)

    def reset(self) -> None:
        self._next = self._start


class RetryLog:
    """The log lines of one retried step: one per group of failed attempts, not one per attempt."""

    def __init__(self, what: str, log: logging.Logger = logger, report_every: float = REPORT_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.log = log
        self.report_every = report_every
        self.clock = clock
        self.attempts = 0  # failed attempts since the last success
        self._since = 0.0
        self._reason = ""
        self._reported_at = 0.0

    def failed(self, reason: str, delay: float) -> None:
        """Note a failed attempt; logs the first, a changed reason, and a reminder every `report_every` s."""
        now = self.clock()
        self.attempts += 1
        if self.attempts == 1:
            self._since = now
            self.log.warning("%s: %s; trying again (next in %.1fs, then less often) until it answers",
                             self.what, reason, delay)
        elif reason != self._reason:
            self.log.warning("%s: now %s (attempt %d, failing for %.0fs); still trying", self.what, reason,
                             self.attempts, now - self._since)
        elif now - self._reported_at >= self.report_every:
            self.log.warning("%s: still %s after %d attempts in %.0fs; still trying", self.what, reason,
                             self.attempts, now - self._since)
        else:
            self.log.debug("%s: attempt %d failed (%s), next in %.1fs", self.what, self.attempts, reason, delay)
            return
        self._reason = reason
        self._reported_at = now

    def succeeded(self) -> None:
        """Note a success; says so when attempts had failed before it."""
        if self.attempts:
            self.log.info("%s: succeeded after %d failed attempt(s) in %.0fs", self.what, self.attempts,
                          self.clock() - self._since)
        self.attempts = 0
        self._reason = ""


def until_answered(attempt: Callable[[], T], *, what: str, stop: threading.Event | None = None,
                   backoff: Backoff | None = None, give_up: Callable[[], bool] | None = None,
                   interrupted: Callable[[str], BaseException] = Interrupted,
                   log: logging.Logger = logger) -> T:
    """Run `attempt` until it returns, and return its value.

    A `TransientError` waits (its `retry_after`, else the back-off) and tries again, logged by `RetryLog`;
    anything else propagates. When `stop` is set the wait ends at once with `interrupted(what)`; when
    `give_up()` turns true (the caller no longer needs the answer) the last TransientError is raised.
    """
    backoff = backoff or Backoff()
    record = RetryLog(what, log)
    while True:
        if stop is not None and stop.is_set():
            raise interrupted(what)
        try:
            value = attempt()
        except TransientError as exc:
            if give_up is not None and give_up():
                raise
            delay = exc.retry_after if exc.retry_after is not None else backoff.next_delay()
            record.failed(str(exc), delay)
            if stop is not None:
                if stop.wait(delay):
                    raise interrupted(what) from exc
            else:
                time.sleep(delay)
            continue
        record.succeeded()
        return value
