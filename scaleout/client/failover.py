"""Moving to another combiner when ours stays unreachable.

Why: with several combiners, the one a client was assigned can die or lose its network while the
others carry on. The client's calls already retry and reconnect, which covers a combiner that
restarts; a combiner that stays away for longer than `after` seconds is given up on, and the client
registers again through `POST /api/v1/clients/add` (same client id). The controller answers with a
live combiner (it probes a quiet one before assigning it), and the client's one Connection is
pointed there, so every thread (polls, uploads, heartbeats, the outbox) follows at its next call.

The heartbeat loop feeds this class: `succeeded()` after each heartbeat that reached the combiner,
`failed()` after each that did not.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping

from scaleout.client.connection import Connection, GrpcTarget
from scaleout.client.registration import Assignment, RegistrationError

logger = logging.getLogger(__name__)

DEFAULT_FAILOVER_AFTER = 10.0  # seconds of unreachable combiner before asking the controller for another
FAILOVER_ENV = "SCALEOUT_FAILOVER_AFTER"


def failover_after_from_env(environ: Mapping[str, str] | None = None) -> float:
    """`SCALEOUT_FAILOVER_AFTER` seconds (0 disables failover); the default when unset."""
    text = ((environ if environ is not None else os.environ).get(FAILOVER_ENV) or "").strip()
    if not text:
        return DEFAULT_FAILOVER_AFTER
    try:
        value = float(text)
    except ValueError:
        raise RegistrationError(f"{FAILOVER_ENV} must be a number of seconds (0 disables failover), "
                                f"got {text!r}") from None
    if value < 0:
        raise RegistrationError(f"{FAILOVER_ENV} must be >= 0 seconds, got {text!r}")
    return value


class Failover:
    """Decides when to re-register and switches the connection to the combiner the controller names.

    `register` runs `/clients/add` again (raising RegistrationError when the controller cannot
    help right now); `to_target` turns its answer into a gRPC target; `on_switch` runs after the
    connection points at a new combiner (announce ourselves there, poll at once)."""

    def __init__(self, connection: Connection, register: Callable[[], Assignment],
                 to_target: Callable[[Assignment], GrpcTarget], *, after: float = DEFAULT_FAILOVER_AFTER,
                 on_switch: Callable[[Assignment], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.connection = connection
        self.register = register
        self.to_target = to_target
        self.after = after
        self.on_switch = on_switch
        self.clock = clock
        self.failing_since: float | None = None
        self.next_attempt = 0.0
        self.switches = 0

    @property
    def enabled(self) -> bool:
        return self.after > 0

    def succeeded(self) -> None:
        self.failing_since = None

    def failed(self) -> bool:
        """Note a failed contact; after `after` seconds of nothing but failures, ask the controller
        for a combiner. True when the connection now points at another combiner."""
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
        if not self.enabled or now - self.failing_since < self.after or now < self.next_attempt:
            return False
        self.next_attempt = now + self.after  # whatever happens, do not ask again before this
        lost = self.connection.target.address
        logger.warning("combiner %s unreachable for %.0fs; asking the controller for another combiner", lost,
                       now - self.failing_since)
        try:
            assignment = self.register()
            target = self.to_target(assignment)
        except RegistrationError as exc:
            logger.warning("could not re-register with the controller (%s); still retrying combiner %s", exc, lost)
            return False
        if target.address == lost:
            logger.warning("the controller assigned the same combiner %s again; still retrying it", lost)
            self.connection.reconnect()
            return False
        self.connection.retarget(target)
        self.failing_since = None
        self.switches += 1
        logger.warning("moved from combiner %s to combiner %s", lost, target.address)
        if self.on_switch is not None:
            try:
                self.on_switch(assignment)
            except Exception:  # the switch itself succeeded; the follow-up is best effort
                logger.exception("after moving to combiner %s", target.address)
        return True
