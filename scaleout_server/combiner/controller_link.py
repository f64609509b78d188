"""The combiner's link to its controller: registration, then a batched feed of events.

Everything a combiner learns from clients (statuses, metrics, validations, updates, liveness)
travels to the controller as encoded store records (`store.codec.encode`) over one REST call
per batch. Batching keeps thousands of clients' telemetry to a few requests per second; the
bounded in-memory queue keeps a controller outage from exhausting the combiner's memory
(oldest events are dropped first, and drops are logged).

With a standby controller, `controller_url` lists both (comma-separated). The link talks to one at a
time and moves to the next when the current one cannot be reached or answers 503 (a standby answers
every route but /health with 503): the combiner follows whichever controller is active, registering
with it again so that it knows the combiner is there.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx

from scaleout_server.store import codec

log = logging.getLogger(__name__)

QUIET_REGISTRATION_SECONDS = 10.0
TOKEN_HINT = ("a secured controller needs a combiner token: create one there with `scaleout token create --role "
              "combiner --name <combiner name>` and pass it with --token (or SCALEOUT_COMBINER_TOKEN)")

# seconds between deliveries: each batch costs the controller a request and two committed transactions
# whatever its size, and 1000 idle clients' telemetry at 5 batches/s kept it at 15 % of a core (1 s: about
# half that). Nothing waits for it: `flush` (the end of every round and task batch) and a full batch
# deliver at once.
BATCH_INTERVAL = 1.0
BATCH_MAX = 500  # events per request
QUEUE_MAX = 100_000  # events kept while the controller is unreachable


class EventLink:
    """Batching and acknowledgement bookkeeping; subclasses say how a batch is delivered.

    `emit` never blocks. `flush` waits until everything emitted before the call is delivered
    (or dropped), so a round's records are stored before its outcome is returned.
    """

    def __init__(self, *, batch_interval: float = BATCH_INTERVAL, batch_max: int = BATCH_MAX,
                 queue_max: int = QUEUE_MAX) -> None:
        self.combiner_id: str | None = None
        self.batch_interval = batch_interval
        self.batch_max = batch_max
        self._queue: deque[tuple[int, dict[str, Any]]] = deque()
        self._queue_max = queue_max
        self._seq = 0  # sequence number of the last event emitted
        self._done_seq = 0  # every event up to here is delivered or dropped
        self._dropped = 0
        self._progress: asyncio.Condition | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- to override -----------------------------------------------------------------------
    async def connect(self, name: str, host: str, port: int, public_hostname: str) -> dict[str, Any] | None:
        """Announce the combiner; returns the repository description to open, or None."""
        return None

    async def deliver(self, events: list[dict[str, Any]]) -> None:
        """Deliver one batch; raise to have it retried."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release transport resources (after `stop`)."""

    # -- producer side ---------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        self._seq += 1
        self._queue.append((self._seq, event))
        if len(self._queue) > self._queue_max:
            seq, _ = self._queue.popleft()
            self._mark_done(seq)
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("event queue full (%d): dropped %d oldest event(s) so far; is the controller reachable?",
                            self._queue_max, self._dropped)
        if self._wake is not None and len(self._queue) >= self.batch_max:
            self._wake.set()

    def emit_record(self, record: Any) -> None:
        self.emit(codec.encode(record))

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def dropped(self) -> int:
        return self._dropped

    async def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every event emitted so far is delivered; False if `timeout` passed first."""
        target = self._seq
        if self._done_seq >= target:
            return True
        if self._progress is None or self._task is None:
            return False
        assert self._wake is not None
        self._wake.set()
        try:
            async with self._progress:
                await asyncio.wait_for(self._progress.wait_for(lambda: self._done_seq >= target), timeout)
            return True
        except TimeoutError:
            log.warning("event feed not flushed within %.1fs (%d events waiting)", timeout or 0.0, len(self._queue))
            return False

    # -- delivery loop ---------------------------------------------------------------------
    def start(self) -> None:
        self._progress = asyncio.Condition()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="event-feed")

    async def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (up to `timeout`), then end the loop."""
        if self._task is None:
            return
        await self.flush(timeout)
        self._closing = True
        assert self._wake is not None
        self._wake.set()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        backoff = 0.0
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), backoff or self.batch_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            while self._queue:
                batch = [self._queue[i] for i in range(min(self.batch_max, len(self._queue)))]
                try:
                    await self.deliver([event for _, event in batch])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # delivery problems must never end the loop
                    backoff = min(max(backoff * 2, 0.5), 5.0)
                    log.warning("could not deliver %d event(s) to the controller (%s); retrying in %.1fs",
                                len(batch), exc, backoff)
                    break
                backoff = 0.0
                # events dropped meanwhile may have shortened the queue: remove exactly what was sent
                last = batch[-1][0]
                while self._queue and self._queue[0][0] <= last:
                    self._queue.popleft()
                self._mark_done(last)
                await self._notify()

    def _mark_done(self, seq: int) -> None:
        self._done_seq = max(self._done_seq, seq)

    async def _notify(self) -> None:
        assert self._progress is not None
        async with self._progress:
            self._progress.notify_all()


class BatchRejected(Exception):
    """The controller refused a batch as malformed; retrying would not help."""


def controller_urls(value: str | list[str]) -> list[str]:
    """The controller URLs of a `controller_url` setting: one URL, or several comma-separated."""
    items = value.split(",") if isinstance(value, str) else value
    return [u.strip().rstrip("/") for u in items if u.strip()]


class ControllerLink(EventLink):
    """Registers at `POST {url}/api/v1/combiners/` and posts batches to `.../{combiner_id}/events`,
    on the first of its controller URLs that is reachable and active."""

    def __init__(self, controller_url: str, *, client: httpx.AsyncClient | None = None,
                 register_timeout: float | None = None, verify: ssl.SSLContext | bool = True,
                 grpc_secure: bool = False,
                 token: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not controller_url:
            raise ValueError("a combiner needs the controller's URL: set controller_url "
                             "(--controller-url or SCALEOUT_CONTROLLER_URL), e.g. http://127.0.0.1:8092")
        self.urls = controller_urls(controller_url)
        self._current = 0
        # verify: the CA file that signed an HTTPS controller's certificate (tls_ca_file), True for the defaults
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(10.0), verify=verify)
        self.grpc_secure = grpc_secure  # registered, so the controller tells clients to dial us with TLS
        # a combiner token for a secured controller (never logged)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._register_timeout = register_timeout
        self._registration: dict[str, Any] | None = None
        self._identity: tuple[str, str, int, str] | None = None

    @property
    def url(self) -> str:
        """The controller URL in use."""
        return self.urls[self._current]

    def _next_controller(self, why: str) -> None:
        """Move to the next controller URL (when there are several)."""
        if len(self.urls) < 2:
            return
        old = self.url
        self._current = (self._current + 1) % len(self.urls)
        log.warning("controller at %s %s; trying %s", old, why, self.url)

    async def connect(self, name: str, host: str, port: int, public_hostname: str) -> dict[str, Any] | None:
        self._identity = (name, host, port, public_hostname)
        reply = await self._register()
        return reply.get("repository") or None

    @property
    def registration(self) -> dict[str, Any] | None:
        """The controller's full registration reply (`combiner_id`, `repository`, ...)."""
        return self._registration

    async def _register(self) -> dict[str, Any]:
        assert self._identity is not None
        name, host, port, public_hostname = self._identity
        body: dict[str, Any] = {"name": name, "host": host, "port": port, "public_hostname": public_hostname}
        if self.grpc_secure:  # absent means plaintext, so the body of a plaintext combiner stays as it was
            body["grpc_secure"] = True
        delay = 0.5
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            tried, move_on = self.url, False
            try:
                resp = await self._client.post(f"{tried}/api/v1/combiners/", json=body, headers=self._headers)
            except httpx.HTTPError as exc:
                if _untrusted_certificate(exc):
                    raise RuntimeError(f"the controller's TLS certificate at {self.url} is not trusted ({exc}); set "
                                       "tls_ca_file (--tls-ca-file / SCALEOUT_TLS_CA_FILE) to the CA file that "
                                       "signed it") from exc
                problem = f"not reachable ({type(exc).__name__}: {exc})"
                move_on = True
            else:
                if resp.status_code < 300:
                    reply = resp.json()
                    if not reply.get("combiner_id"):
                        raise RuntimeError(f"controller at {self.url} answered the registration without a "
                                           f"combiner_id: {reply!r}")
                    self._registration = reply
                    self.combiner_id = str(reply["combiner_id"])
                    log.info("registered with the controller at %s as combiner %r (id %s)", self.url, name,
                             self.combiner_id)
                    return reply
                if resp.status_code in (408, 429) or resp.status_code >= 500:
                    problem = f"answered {resp.status_code}"
                    move_on = resp.status_code == 503  # a standby, or a controller shutting down
                else:
                    hint = TOKEN_HINT if resp.status_code in (401, 403) else "check controller_url"
                    raise RuntimeError(f"controller at {self.url} refused the combiner registration "
                                       f"({resp.status_code}): {resp.text[:500]}; {hint}")
            if self._register_timeout is not None and time.monotonic() - started > self._register_timeout:
                raise RuntimeError(f"controller at {self.url} {problem}; gave up registering after "
                                   f"{attempt} attempts")
            # a controller starting alongside (scaleout server start) is normal for a few seconds
            level = logging.INFO if time.monotonic() - started < QUIET_REGISTRATION_SECONDS else logging.WARNING
            if move_on and len(self.urls) > 1:
                self._next_controller(problem)
                if self._current != 0:
                    continue  # the next address at once; a pause after each pass over the list
            log.log(level, "controller at %s %s; retrying registration in %.1fs (attempt %d)", tried, problem,
                    delay, attempt)
            await asyncio.sleep(delay)
            # several controllers: a take-over is a matter of seconds, so keep the back-off short
            delay = min(delay * 2, 10.0 if len(self.urls) < 2 else 2.0)

    async def deliver(self, events: list[dict[str, Any]]) -> None:
        if self.combiner_id is None:
            raise RuntimeError("not registered with the controller yet")
        try:
            resp = await self._client.post(f"{self.url}/api/v1/combiners/{self.combiner_id}/events",
                                           json={"events": events}, headers=self._headers)
        except httpx.TransportError as exc:
            if len(self.urls) < 2 or self._identity is None:
                raise
            # the active controller is gone: register with the one that takes over, then retry the batch
            self._next_controller(f"not reachable ({type(exc).__name__})")
            await self._register()
            raise RuntimeError("registered with the next controller") from exc
        if resp.status_code == 503 and len(self.urls) > 1 and self._identity is not None:
            self._next_controller("answered 503")
            await self._register()
            raise RuntimeError("registered with the next controller")
        if resp.status_code == 404 and self._identity is not None:
            # the controller forgot us (e.g. a fresh store): register again, then retry the batch
            log.warning("controller does not know combiner %s any more; registering again", self.combiner_id)
            await self._register()
            raise RuntimeError("re-registered with the controller")
        if resp.status_code in (400, 413, 422):
            log.error("controller rejected %d event(s) (%d): %s; dropping them", len(events), resp.status_code,
                      resp.text[:500])
            return
        resp.raise_for_status()

    async def fetch_revoked(self) -> list[str]:
        """Ids of revoked tokens (a secured controller's list, for this combiner's token checks)."""
        resp = await self._client.get(f"{self.url}/api/v1/auth/revoked", headers=self._headers)
        resp.raise_for_status()
        return [str(token_id) for token_id in resp.json().get("revoked", [])]

    async def aclose(self) -> None:
        await self._client.aclose()


def _untrusted_certificate(exc: BaseException) -> bool:
    """A certificate verification failure somewhere in the exception chain: retrying cannot fix it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


class CallbackLink(EventLink):
    """Delivers batches to a function (in a worker thread): the combiner inside the controller's
    process, or a test collecting events. No registration; pass the repository to the server."""

    def __init__(self, callback: Callable[[list[dict[str, Any]]], Any], combiner_id: str = "local",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._callback = callback
        self.combiner_id = combiner_id

    async def deliver(self, events: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(self._callback, list(events))
