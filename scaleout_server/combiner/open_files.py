"""The combiner's open-file limit: each connected client holds a socket, and a model file during a round.

With the usual default soft limit of 1024 descriptors, a combiner serves about 1000 idle clients and
then fails the moment a round opens model files for them (EMFILE in worker threads). Any process
may raise its soft limit up to its hard limit, so start-up does that, logs the result and warns when
it is too low for the number of clients a combiner is meant to carry; beyond the hard limit only the
administrator can help (`ulimit -n`, systemd `LimitNOFILE=`, a container's `--ulimit nofile=`).
"""

from __future__ import annotations

import logging

try:
    import resource
except ImportError:  # Windows: no such limit to raise
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FDS_PER_CLIENT = 2  # its connection, and the model file of its download or upload during a round
FDS_RESERVED = 256  # the server itself: listening socket, event loop, threads, logs, the controller link, aggregation
TARGET_CLIENTS = 1000  # what one combiner is meant to carry: below this, start-up warns
UNLIMITED_TARGETS = (1_048_576, 65_536, 10_240)  # tried in turn when the hard limit is "unlimited" (macOS caps it)


def clients_supported(limit: int) -> int:
    """How many clients one combiner can carry through a round with this many descriptors."""
    return max(0, (limit - FDS_RESERVED) // FDS_PER_CLIENT)


def descriptors_needed(clients: int) -> int:
    return clients * FDS_PER_CLIENT + FDS_RESERVED


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) now in force (None: no such
    limit on this platform). Never fails: a limit that cannot be raised stays as it was."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return soft, hard
    for target in UNLIMITED_TARGETS if hard == resource.RLIM_INFINITY else (hard,):  # highest first
        if target <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            break
        except (ValueError, OSError) as exc:
            log.debug("could not raise the open-file limit to %d: %s", target, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def prepare_open_file_limit(target_clients: int = TARGET_CLIENTS) -> int | None:
    """Raise the limit (see raise_open_file_limit), log it, and warn when it is below what `target_clients`
    need. Returns the soft limit in force."""
    limits = raise_open_file_limit()
    if limits is None:
        return None
    limit, hard = limits
    if limit == resource.RLIM_INFINITY:
        log.info("open-file limit: unlimited")
        return limit
    supported = clients_supported(limit)
    if supported < target_clients:
        log.warning("open-file limit is %d descriptors (hard limit %s): enough for about %d clients on this "
                    "combiner, not %d; each client needs %d during a round (its connection and a model file). "
                    "Raise the limit to at least %d, e.g. `ulimit -n 65536` before starting, LimitNOFILE=65536 "
                    "in a systemd unit, or `--ulimit nofile=65536:65536` for a container", limit,
                    "unlimited" if hard == resource.RLIM_INFINITY else hard, supported, target_clients,
                    FDS_PER_CLIENT, descriptors_needed(target_clients))
    else:
        log.info("open-file limit: %d descriptors (enough for about %d clients)", limit, supported)
    return limit
