"""A combiner's copy of the revocation list, refreshed from the controller every few seconds.

Access tokens live 15 minutes; revoking one (or the refresh token it came from) takes effect on
the controller at once and on every combiner within `REVOCATION_INTERVAL` seconds. When the
controller cannot be reached the last list stays in force.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from scaleout_server.auth.grpc_gate import GrpcGate

log = logging.getLogger(__name__)

REVOCATION_INTERVAL = 5.0


async def sync_revocations(gate: GrpcGate, fetch: Callable[[], Awaitable[Sequence[str]]],
                           interval: float = REVOCATION_INTERVAL) -> None:
    """Forever: `gate.set_revoked(await fetch())`, then sleep `interval`. Failures are logged (once
    per outage) and retried; cancel the task to stop."""
    failing = False
    while True:
        try:
            gate.set_revoked(list(await fetch()))
            if failing:
                log.info("revocation list fetched from the controller again")
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop must outlive any controller outage
            if not failing:
                log.warning("could not fetch the revocation list from the controller (%s); keeping the last one",
                            exc)
            failing = True
        await asyncio.sleep(interval)
