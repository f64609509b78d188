"""The combiners this controller knows: their records, one cached gRPC channel each, and the
few questions the controller asks all of them at once (who is connected, abort this session).

A combiner counts as "heard from" when it registers, sends events, or answers a Control call;
one that stays silent for `OFFLINE_AFTER` seconds is marked offline and left out of new work.
Two things mark one offline sooner: a round losing its connection to it (`mark_offline`), and
a failed probe when a client is about to be assigned to it while it has been quiet for
`FRESH_FOR` seconds (combiners report their load every 2 s, so a live one is never that quiet).
The Control channels send keepalive pings, so a combiner whose host or link disappears fails
its running calls within about `KEEPALIVE_MS + KEEPALIVE_TIMEOUT_MS` instead of hanging them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc

from scaleout_server.auth.grpc_client import AuthorizedStub
from scaleout_server.errors import NotFoundError
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery, Store
from scaleout_server.tls import control_channel
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

OFFLINE_AFTER = 30.0  # seconds without news before a combiner is marked offline
PROBE_AFTER = 10.0  # a combiner silent this long is asked ListActiveClients to prove it is alive
PROBE_TIMEOUT = 2.0
LIST_TIMEOUT = 5.0
ABORT_TIMEOUT = 5.0
FRESH_FOR = 6.0  # a combiner heard from this recently is assigned clients without a probe
TOUCH_EVERY = 1.0  # seconds: how stale a combiner's stored last_seen may get while it keeps sending
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}
KEEPALIVE_MS = 10_000  # combiners accept pings every 5 s (combiner/server.py GRPC_OPTIONS)
KEEPALIVE_TIMEOUT_MS = 5_000
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),  # RunRound sends no data for minutes: keep pinging anyway
]


@dataclass(frozen=True)
class ActiveClient:
    """A client connected to a combiner right now, as that combiner reports it."""

    client_id: str
    name: str
    busy: bool
    combiner_id: str
    last_seen: float = 0.0  # wall-clock seconds, as the combiner last heard from it


def as_utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def dial_address(host: str, port: int, public_hostname: str | None = None) -> str:
    """Where to reach a combiner. A wildcard bind address (a container, a multi-homed host) says
    nothing about where it is: its public hostname does, else it means "this machine"."""
    if host in WILDCARD_HOSTS:
        host = public_hostname or "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def combiner_address(combiner: r.CombinerRecord) -> str:
    return dial_address(combiner.host, combiner.port, combiner.public_hostname)


def lost_connection(error: BaseException) -> bool:
    """A Control call failed because the combiner (its process, host or link) is gone, rather than
    because it refused or timed out the work."""
    if not isinstance(error, grpc.RpcError) or not hasattr(error, "code"):
        return False
    code = error.code()
    details = (error.details() or "") if hasattr(error, "details") else ""
    return code == grpc.StatusCode.UNAVAILABLE or (code == grpc.StatusCode.UNKNOWN and "Stream removed" in details)


class CombinerRegistry:
    def __init__(self, store: Store, tls_ca_file: str = "") -> None:
        self.store = store
        self.tls_ca_file = tls_ca_file  # CA trusted for combiners that serve TLS (settings.tls_ca_file)
        # a secured controller sets this: every Control call then carries a fresh controller token
        self.call_token: Callable[[], str] | None = None
        self._lock = threading.Lock()
        self._channels: dict[str, tuple[str, grpc.Channel]] = {}
        self._last_probe: dict[str, float] = {}

    # -- records ---------------------------------------------------------------------------
    def register(self, name: str, host: str, port: int, public_hostname: str | None = None,
                 grpc_secure: bool = False) -> r.CombinerRecord:
        """Same name -> same combiner_id; the address (and whether it serves TLS) is refreshed and the
        combiner is online again."""
        now = r.utcnow()
        _, found = self.store.combiners.list(ListQuery(filters={"name": name}, limit=1))
        if found:
            record = found[0]
            before = (combiner_address(record), record.grpc_secure)
            record.host, record.port, record.public_hostname = host, int(port), public_hostname
            record.status, record.last_seen, record.grpc_secure = "online", now, grpc_secure
            record = self.store.combiners.update(record)
            # a new address or TLS needs a new channel; the same ones keep it, so that a combiner registering
            # again (following a controller that took over, or after a restart: gRPC reconnects on its own)
            # does not cancel the RunRound in flight on it
            if before != (combiner_address(record), record.grpc_secure):
                self.invalidate(record.combiner_id)
        else:
            record = self.store.combiners.add(r.CombinerRecord(
                combiner_id=r.new_id(), name=name, host=host, port=int(port), public_hostname=public_hostname,
                status="online", last_seen=now, grpc_secure=grpc_secure))
            self.invalidate(record.combiner_id)
        log.info("combiner %s (%s) registered at %s", name, record.combiner_id, combiner_address(record))
        return record

    def get(self, combiner_id: str) -> r.CombinerRecord:
        record = self.store.combiners.get(combiner_id)
        if record is None:
            raise NotFoundError(f"combiner {combiner_id!r} is not registered; (re)start it so that it registers")
        return record

    def find(self, name_or_id: str) -> r.CombinerRecord | None:
        record = self.store.combiners.get(name_or_id)
        if record is not None:
            return record
        _, found = self.store.combiners.list(ListQuery(filters={"name": name_or_id}, limit=1))
        return found[0] if found else None

    def all(self) -> list[r.CombinerRecord]:
        return self.store.combiners.list()[1]

    def online(self) -> list[r.CombinerRecord]:
        return self.store.combiners.list(ListQuery(filters={"status": "online"}, sort_key="name",
                                                   descending=False))[1]

    def touch(self, combiner_id: str, load: int | None = None) -> r.CombinerRecord:
        """Note that the combiner was heard from (and its reported load). An online combiner heard
        from less than `TOUCH_EVERY` seconds ago, with an unchanged load, is not written again: its
        event feed arrives every 0.2 s, and the liveness rules count in seconds."""
        record = self.get(combiner_id)
        now = r.utcnow()
        last = as_utc(record.last_seen)
        if (record.status == "online" and (load is None or int(load) == record.load) and last is not None
                and timedelta(0) <= now - last < timedelta(seconds=TOUCH_EVERY)):
            return record
        record.last_seen = now
        if record.status != "online":
            log.info("combiner %s is online again", record.name)
        record.status = "online"
        if load is not None:
            record.load = int(load)
        return self.store.combiners.update(record)

    def heard_from(self, combiner_id: str, load: int | None = None) -> None:
        """`touch` after a combiner answered a call: one forgotten meanwhile (deleted through the
        API) is only logged, so its answer still counts."""
        try:
            self.touch(combiner_id, load)
        except NotFoundError:
            log.info("combiner %s answered but is no longer registered", combiner_id)

    def least_loaded(self) -> r.CombinerRecord | None:
        """The online combiner with the fewest online clients (ties: by name) that is alive: heard
        from within `FRESH_FOR` seconds, or answering a probe now (one that does not is marked
        offline and the next candidate is tried). The count comes from the store, not the combiners'
        reported load, because it grows with each assignment: a burst of registrations spreads."""
        candidates = sorted(self.online(), key=lambda c: (self.store.clients.count(
            {"combiner_id": c.combiner_id, "status": "online"}), c.name))
        for combiner in candidates:
            if self.alive(combiner):
                return combiner
        return None

    def alive(self, combiner: r.CombinerRecord) -> bool:
        """Heard from lately, or answers ListActiveClients now; a combiner that does not is marked offline."""
        last = as_utc(combiner.last_seen)
        if last is not None and (r.utcnow() - last).total_seconds() < FRESH_FOR:
            return True
        answered = self.active_clients([combiner], timeout=PROBE_TIMEOUT)
        if combiner.combiner_id in answered:
            self.heard_from(combiner.combiner_id, load=len(answered[combiner.combiner_id]))
            return True
        self.mark_offline(combiner.combiner_id, f"it did not answer a probe within {PROBE_TIMEOUT:g}s")
        return False

    def mark_offline(self, combiner_id: str, reason: str, unless_seen_within: float | None = None) -> None:
        """Leave a combiner out of new work at once (it comes back online with its next event or
        registration). Used when a call lost its connection to it, a probe went unanswered, or the
        sweep found it silent: that one passes `unless_seen_within` so a combiner heard from since
        the sweep read its record stays online."""
        current = self.store.combiners.get(combiner_id)
        if current is None or current.status != "online":
            return
        last = as_utc(current.last_seen)
        if unless_seen_within is not None and last is not None \
                and (r.utcnow() - last) < timedelta(seconds=unless_seen_within):
            return  # heard from meanwhile
        current.status = "offline"
        self.store.combiners.update(current)
        self.invalidate(combiner_id)
        log.warning("combiner %s marked offline: %s", current.name, reason)

    # -- channels --------------------------------------------------------------------------
    def stub(self, combiner: r.CombinerRecord) -> pb_grpc.ControlStub | AuthorizedStub:
        address = combiner_address(combiner)
        with self._lock:
            cached = self._channels.get(combiner.combiner_id)
            if cached is None or cached[0] != address:
                if cached is not None:
                    cached[1].close()
                channel = control_channel(address, secure=combiner.grpc_secure, ca_file=self.tls_ca_file,
                                          options=CHANNEL_OPTIONS)
                self._channels[combiner.combiner_id] = (address, channel)
                cached = (address, channel)
        stub = pb_grpc.ControlStub(cached[1])
        return AuthorizedStub(stub, self.call_token) if self.call_token else stub

    def invalidate(self, combiner_id: str) -> None:
        """Drop the cached channel (after a failure or an address change); the next call dials anew."""
        with self._lock:
            cached = self._channels.pop(combiner_id, None)
        if cached is not None:
            cached[1].close()

    def call_failed(self, combiner: r.CombinerRecord, what: str, error: Exception) -> str:
        """Log a failed Control call, drop the channel if the combiner was unreachable; returns a message."""
        if isinstance(error, grpc.FutureCancelledError):
            message = f"{what} on combiner {combiner.name} was cancelled: the controller stopped waiting"
            log.info(message)
            return message
        if isinstance(error, grpc.RpcError):
            code = error.code()  # type: ignore[attr-defined]
            message = f"{what} on combiner {combiner.name} failed: {code.name if code else 'UNKNOWN'}: " \
                      f"{error.details()}"  # type: ignore[attr-defined]
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
                self.invalidate(combiner.combiner_id)
        else:
            message = f"{what} on combiner {combiner.name} failed: {error}"
        log.warning(message)
        return message

    # -- fan-out questions -----------------------------------------------------------------
    def active_clients(self, combiners: Iterable[r.CombinerRecord] | None = None,
                       timeout: float = LIST_TIMEOUT) -> dict[str, list[ActiveClient]]:
        """Connected clients per online combiner, asked in parallel; an unreachable combiner is left out."""
        targets = list(self.online() if combiners is None else combiners)
        futures = []
        for combiner in targets:
            try:
                futures.append((combiner, self.stub(combiner).ListActiveClients.future(pb.ClientListRequest(),
                                                                                       timeout=timeout)))
            except Exception as exc:  # a bad address must not break the fan-out
                self.call_failed(combiner, "ListActiveClients", exc)
        out: dict[str, list[ActiveClient]] = {}
        for combiner, future in futures:
            try:
                reply = future.result()
            except Exception as exc:
                self.call_failed(combiner, "ListActiveClients", exc)
                continue
            out[combiner.combiner_id] = [ActiveClient(c.client_id, c.name, c.busy, combiner.combiner_id, c.last_seen)
                                         for c in reply.clients]
        return out

    def abort_session(self, session_id: str, reason: str, combiners: Iterable[r.CombinerRecord] | None = None,
                      conclude: bool = False) -> None:
        """Ask every (online) combiner to interrupt the session's running tasks, or with `conclude` to end
        the wait of its open rounds (they aggregate what they have); failures are only logged."""
        targets = list(self.online() if combiners is None else combiners)
        futures = []
        request = pb.AbortRequest(session_id=session_id, reason=reason, conclude=conclude)
        for combiner in targets:
            try:
                futures.append((combiner, self.stub(combiner).AbortSession.future(request, timeout=ABORT_TIMEOUT)))
            except Exception as exc:
                self.call_failed(combiner, "AbortSession", exc)
        for combiner, future in futures:
            try:
                future.result()
            except Exception as exc:
                self.call_failed(combiner, "AbortSession", exc)

    # -- liveness --------------------------------------------------------------------------
    def sweep(self) -> None:
        """Probe silent combiners; mark those silent for OFFLINE_AFTER seconds offline."""
        now = r.utcnow()
        mono = time.monotonic()
        silent: list[r.CombinerRecord] = []
        for combiner in self.all():
            last = as_utc(combiner.last_seen) or combiner.committed_at
            age = (now - as_utc(last)).total_seconds()  # type: ignore[operator]
            if age < PROBE_AFTER:
                continue
            # offline combiners are probed less often so dead entries cost little
            every = PROBE_AFTER if combiner.status == "online" else OFFLINE_AFTER
            if mono - self._last_probe.get(combiner.combiner_id, 0.0) >= every:
                self._last_probe[combiner.combiner_id] = mono
                silent.append(combiner)
            elif combiner.status == "online" and age >= OFFLINE_AFTER:
                self.mark_offline(combiner.combiner_id, f"not heard from in {age:.0f} s",
                                  unless_seen_within=OFFLINE_AFTER)
        if not silent:
            return
        answered = self.active_clients(silent, timeout=PROBE_TIMEOUT)
        for combiner in silent:
            if combiner.combiner_id in answered:
                self.heard_from(combiner.combiner_id, load=len(answered[combiner.combiner_id]))
                continue
            last = as_utc(combiner.last_seen) or as_utc(combiner.committed_at)
            age = (now - last).total_seconds()  # type: ignore[operator]
            if combiner.status == "online" and age >= OFFLINE_AFTER:
                self.mark_offline(combiner.combiner_id, f"not heard from in {age:.0f} s",
                                  unless_seen_within=OFFLINE_AFTER)

    def close(self) -> None:
        with self._lock:
            channels = list(self._channels.values())
            self._channels.clear()
        for _, channel in channels:
            channel.close()


def await_all(futures: Iterable[grpc.Future], stop: threading.Event | None = None,
              grace: float | Callable[[], float] = 5.0, poll: float = 0.1) -> bool:
    """Wait until every future is done. When `stop` is set, wait `grace` seconds more (a number, or a
    function read after the stop) for the combiners to return their aborted outcomes, then cancel
    what is left. True if stopped."""
    pending = list(futures)
    stopped_at: float | None = None
    while True:
        pending = [f for f in pending if not f.done()]
        if not pending:
            return stopped_at is not None
        if stop is not None and stop.is_set():
            now = time.monotonic()
            stopped_at = now if stopped_at is None else stopped_at
            if now - stopped_at >= (grace() if callable(grace) else grace):
                for future in pending:
                    future.cancel()
                return True
        time.sleep(poll)
