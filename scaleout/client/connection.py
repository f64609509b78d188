"""The client's gRPC link to its combiner: one channel, per-call metadata, retries and reconnects.

Why a class of its own: every thread of the client (poll loop, task threads, heartbeat, telemetry,
the outbox) shares one channel, and all of them must survive a combiner restart. Retry policy,
channel rebuilding and token refresh therefore live in exactly one place.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from scaleout.client.byte_path import BytePath, ByteTransferFailed
from scaleout.client.retry import Backoff as Backoff
from scaleout.client.retry import Interrupted as Interrupted
from scaleout.client.retry import TransientError, until_answered
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
from scaleoututil.model import ScaleoutModel
from scaleoututil.protocol import (
    CHUNK_SIZE,
    MD_AUTHORIZATION,
    MD_CHECKSUM,
    MD_CLIENT,
    MD_CLIENT_ID,
    MD_MODEL_ID,
    MD_NAME,
)

logger = logging.getLogger(__name__)

# Keepalive exactly as the published clients configure it; combiners allow pings every 5 s.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 30000),
    ("grpc.keepalive_permit_without_calls", 1),
]
DEFAULT_CALL_TIMEOUT = 30.0
OLD_CHANNEL_GRACE = 30.0  # replaced channels close later, so calls in flight on them can finish
MAX_CHECKSUM_MISMATCHES = 3


class Credentials(Protocol):
    """Source of the access token sent with every call (see registration.TokenManager)."""

    def access_token(self) -> str | None: ...

    def refresh(self) -> None:
        """Obtain a new access token now; raises when the server refuses."""


class CombinerError(Exception):
    """A call failed in a way retrying will not fix; the message says what the combiner answered."""


@dataclass(frozen=True)
class GrpcTarget:
    host: str
    port: int
    secure: bool = False
    root_cert_path: str | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ClientIdentity:
    client_id: str
    name: str


# How a failed call is handled.
RECONNECT = "reconnect"  # channel broken: rebuild it, back off, retry
RETRY = "retry"  # transient: back off, retry
REAUTH = "reauth"  # refresh the token once, retry
FATAL = "fatal"  # retrying cannot help

_RETRY_CODES = {
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


def classify(error: grpc.RpcError) -> str:
    """Map a gRPC error to RECONNECT, RETRY, REAUTH or FATAL."""
    code = error.code() if hasattr(error, "code") else None
    if code == grpc.StatusCode.UNAVAILABLE:
        return FATAL if _tls_problem(error) else RECONNECT  # an untrusted certificate stays untrusted
    if code == grpc.StatusCode.UNKNOWN and "Stream removed" in (error.details() or ""):
        return RECONNECT
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return REAUTH
    if code in _RETRY_CODES:
        return RETRY
    return FATAL


def describe(error: BaseException) -> str:
    """`UNAVAILABLE: failed to connect to all addresses` rather than grpc's multi-line repr."""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        problem = _tls_problem(error)
        if problem:
            return (f"cannot connect to the combiner over TLS: {problem}. Pass the CA file that signed its "
                    "certificate with --ca-file (or SCALEOUT_CA_FILE / SCALEOUT_GRPC_ROOT_CERT_PATH) "
                    f"[{error.code().name}: {error.details()}]")
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


def _tls_problem(error: grpc.RpcError) -> str | None:
    from scaleout.client.tls import grpc_tls_problem

    try:
        return grpc_tls_problem(error.details())
    except Exception:  # an RpcError without details()
        return None


class Connection:
    """Channel + stubs to one combiner. Thread-safe; `reconnect()` swaps in a fresh channel."""

    def __init__(self, target: GrpcTarget, identity: ClientIdentity, credentials: Credentials | None = None) -> None:
        self.target = target
        self.identity = identity
        self.credentials = credentials
        self._lock = threading.Lock()
        self._generation = 0
        self._closed = False
        self._retired: list[grpc.Channel] = []
        self._channel = self._make_channel()
        self._combiner = pb_grpc.CombinerClientStub(self._channel)
        self._models = pb_grpc.ModelServiceStub(self._channel)
        self.byte_path = BytePath(self)  # large models beside gRPC when the combiner offers it

    # -- channel ------------------------------------------------------------------------------
    def _make_channel(self) -> grpc.Channel:
        if not self.target.secure:
            return grpc.insecure_channel(self.target.address, options=CHANNEL_OPTIONS)
        from scaleout.client.tls import grpc_root_certificates

        try:
            root = grpc_root_certificates(self.target.root_cert_path)  # the given CA, else the system store
        except OSError as exc:
            raise CombinerError(f"cannot read the TLS root certificate {self.target.root_cert_path} "
                                f"(--ca-file / SCALEOUT_GRPC_ROOT_CERT_PATH): {exc.strerror or exc}") from exc
        creds = grpc.ssl_channel_credentials(root_certificates=root)
        return grpc.secure_channel(self.target.address, creds, options=CHANNEL_OPTIONS)

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def combiner(self) -> pb_grpc.CombinerClientStub:
        return self._combiner

    @property
    def models(self) -> pb_grpc.ModelServiceStub:
        return self._models

    def reconnect(self, seen_generation: int | None = None) -> None:
        """Replace the channel (once per outage, however many threads noticed it).

        grpc would reconnect on its own, but its internal back-off can grow to minutes; a fresh
        channel dials at once. The old channel is closed after a grace period so that calls still
        running on it (another thread's upload, say) are not cancelled under their feet.
        """
        with self._lock:
            if self._closed or (seen_generation is not None and seen_generation != self._generation):
                return
            old = self._swap_channel_locked()
            self._retired.append(old)
        timer = threading.Timer(OLD_CHANNEL_GRACE, self._close_retired, args=(old,))
        timer.daemon = True
        timer.start()
        logger.debug("rebuilt gRPC channel to %s (generation %d)", self.target.address, self._generation)

    def retarget(self, target: GrpcTarget) -> None:
        """Dial another combiner from now on (the controller assigned one after ours was lost).

        Every thread picks the new channel up with its next call. The old combiner was given up on,
        so calls still waiting on it (an upload into a dead link would wait for TCP to time out)
        are cancelled now: their retry loops carry on with the new channel."""
        with self._lock:
            if self._closed:
                return
            previous = self.target
            self.target = target
            try:
                old = self._swap_channel_locked()
            except BaseException:
                self.target = previous
                raise
            retired, self._retired = [old, *self._retired], []
        for channel in retired:
            channel.close()
        logger.info("now dialling combiner %s (was %s)", target.address, previous.address)

    def _swap_channel_locked(self) -> grpc.Channel:
        """Dial `self.target` on a fresh channel, point both stubs at it and start a new generation; returns
        the old channel for the caller to close. Called with `_lock` held; changes nothing if dialling fails."""
        old = self._channel
        self._channel = self._make_channel()
        self._combiner = pb_grpc.CombinerClientStub(self._channel)
        self._models = pb_grpc.ModelServiceStub(self._channel)
        self._generation += 1
        return old

    def _close_retired(self, channel: grpc.Channel) -> None:
        with self._lock:
            if channel in self._retired:
                self._retired.remove(channel)
            else:
                return
        channel.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            channels = [self._channel, *self._retired]
            self._retired.clear()
        for channel in channels:
            channel.close()

    # -- metadata -----------------------------------------------------------------------------
    def metadata(self, *extra: tuple[str, str]) -> list[tuple[str, str]]:
        md = [
            (MD_CLIENT, self.identity.client_id),
            (MD_CLIENT_ID, self.identity.client_id),
            (MD_NAME, self.identity.name),
        ]
        token = self.credentials.access_token() if self.credentials is not None else None
        if token:
            md.append((MD_AUTHORIZATION, f"Bearer {token}"))
        md.extend(extra)
        return md

    # -- calls --------------------------------------------------------------------------------
    def unary(self, rpc: str, request: Any, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> Any:
        """One attempt of a CombinerClient unary RPC, e.g. `unary("SendStatus", status)`."""
        method = getattr(self._combiner, rpc)
        return method(request, timeout=timeout, metadata=self.metadata())

    def call(self, rpc: str, request: Any, *, stop: threading.Event | None = None,
             timeout: float | None = DEFAULT_CALL_TIMEOUT, max_attempts: int | None = None,
             on_unreachable: Callable[[], Any] | None = None) -> Any:
        """A CombinerClient unary RPC, retried on connection loss (see `retry`)."""
        return self.retry(lambda: self.unary(rpc, request, timeout), what=rpc, stop=stop, max_attempts=max_attempts,
                          on_unreachable=on_unreachable)

    def retry(self, attempt: Callable[[], Any], *, what: str, stop: threading.Event | None = None,
              max_attempts: int | None = None, checksum_errors: bool = False,
              on_unreachable: Callable[[], Any] | None = None) -> Any:
        """Run `attempt` until it succeeds (retry.until_answered: back-off with jitter, one log line per group
        of failed attempts).

        UNAVAILABLE rebuilds the channel (and calls `on_unreachable`, e.g. Failover.failed, which may move
        the connection to another combiner); transient codes back off (0.5 s doubling to 30 s);
        UNAUTHENTICATED refreshes the token once. Raises CombinerError for anything retrying cannot fix or
        once `max_attempts` is used up, Interrupted when `stop` is set.
        """
        attempts = 0
        reauthed = False
        mismatches = 0

        def once() -> Any:
            nonlocal attempts, reauthed, mismatches
            attempts += 1
            generation = self._generation
            try:
                return attempt()
            except ChecksumMismatch as exc:
                if not checksum_errors:
                    raise
                mismatches += 1
                if mismatches >= MAX_CHECKSUM_MISMATCHES:
                    raise CombinerError(f"{what}: {exc} ({mismatches} attempts)") from exc
                action, reason = RETRY, str(exc)
            except ByteTransferFailed as exc:
                if not exc.retryable:
                    raise CombinerError(str(exc)) from exc
                action, reason = RETRY, str(exc)
            except grpc.RpcError as exc:
                action, reason = classify(exc), describe(exc)
                if action == REAUTH:
                    if self.credentials is None:
                        raise CombinerError(
                            f"{what}: the combiner requires authentication ({reason}); "
                            "start the client with --token") from exc
                    if not reauthed:
                        reauthed = True
                        try:
                            self.credentials.refresh()  # a refused refresh token raises (TokenRefused)
                        except TransientError as refresh_error:  # controller unreachable: try again later
                            reason = f"{reason}; token refresh failed: {refresh_error}"
                        else:
                            attempts -= 1  # a fresh token makes the next attempt a new one
                            raise TransientError(reason, retry_after=0.0) from exc
                    action = RETRY
                if action == FATAL:
                    raise CombinerError(f"{what} failed: {reason}") from exc
            if max_attempts is not None and attempts >= max_attempts:
                raise CombinerError(f"{what} failed after {attempts} attempts: {reason}")
            if action == RECONNECT:
                reason = f"combiner {self.target.address} unreachable ({reason})"
                self.reconnect(generation)
                if on_unreachable is not None:
                    on_unreachable()
            raise TransientError(reason)

        return until_answered(once, what=what, stop=stop, log=logger)

    # -- models -------------------------------------------------------------------------------
    def download_model(self, model_id: str, stop: threading.Event | None = None) -> ScaleoutModel:
        """Fetch a model, over the byte path when the combiner offers it; the checksum the combiner sends
        (gRPC: the `checksum` trailer), when sent, must match the bytes received."""

        def attempt() -> ScaleoutModel:
            received = self.byte_path.download(model_id)
            if received is not None:
                model, expected, actual = received
                if expected and expected != actual:
                    model.close()
                    raise ChecksumMismatch(f"model {model_id}: checksum mismatch (combiner says {expected}, "
                                           f"received bytes hash to {actual})")
                return model
            call = self._models.Download(pb.ModelRequest(model_id=model_id), metadata=self.metadata())
            digest = hashlib.sha256()

            def chunks() -> Iterator[pb.FileChunk]:
                for chunk in call:
                    if chunk.data:
                        digest.update(chunk.data)
                        yield chunk

            model = ScaleoutModel.from_filechunk_stream(chunks(), model_id=model_id)
            expected = dict(call.trailing_metadata() or ()).get(MD_CHECKSUM)
            if expected and expected != digest.hexdigest():
                raise ChecksumMismatch(f"model {model_id}: checksum mismatch (combiner says {expected}, "
                                       f"received bytes hash to {digest.hexdigest()})")
            return model

        return self.retry(attempt, what=f"Download of model {model_id}", stop=stop, checksum_errors=True)

    def upload_model(self, model: ScaleoutModel, stop: threading.Event | None = None) -> None:
        """Send a model: over the byte path when the combiner offers it, else streamed in 1 MiB chunks with
        `model-id` and `checksum` metadata."""

        def attempt() -> None:
            if self.byte_path.upload(model):
                return
            md = self.metadata((MD_MODEL_ID, str(model.model_id)), (MD_CHECKSUM, model.checksum))
            try:
                self._models.Upload(model.get_filechunk_stream(CHUNK_SIZE), metadata=md)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:  # a size limit: sending again cannot help
                    raise CombinerError(f"the combiner refused model {model.model_id}: {describe(exc)}") from exc
                raise

        self.retry(attempt, what=f"Upload of model {model.model_id}", stop=stop)


class ChecksumMismatch(ValueError):
    """The downloaded bytes do not hash to the checksum the combiner sent."""


class Outbox:
    """Sends fire-and-forget messages (metrics, statuses, telemetry) from one background thread.

    Why: a training loop calling `log_metric` must not stall while the combiner restarts. The
    queue is bounded (oldest dropped first); transient failures are retried with back-off;
    messages the combiner rejects outright (INVALID_ARGUMENT, UNIMPLEMENTED...) are dropped and logged.
    """

    def __init__(self, connection: Connection, maxsize: int = 10_000) -> None:
        self._connection = connection
        self._queue: collections.deque[tuple[str, Any]] = collections.deque(maxlen=maxsize)
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="scaleout-outbox", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        return self._dropped

    def put(self, rpc: str, request: Any) -> bool:
        with self._cond:
            if self._closing:
                return False
            if len(self._queue) == self._queue.maxlen:
                self._dropped += 1
            self._queue.append((rpc, request))
            self._cond.notify_all()
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far has been sent (or dropped)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Send what can be sent within `timeout`, then stop; the rest is dropped."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            left = len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        if left:
            logger.warning("dropped %d unsent message(s) at shutdown", left)
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                rpc, request = self._queue[0]
                self._busy = True
            generation = self._connection.generation
            done = True
            try:
                metadata = self._connection.metadata()
            except Exception as exc:  # no valid token right now: keep the message, try again later
                logger.warning("cannot send %s yet: %s", rpc, exc)
                metadata, done = None, False
            try:
                if metadata is not None:
                    getattr(self._connection.combiner, rpc)(request, timeout=10.0, metadata=metadata)
                    backoff.reset()
            except grpc.RpcError as exc:
                action = classify(exc)
                if action == FATAL or (action == REAUTH and self._connection.credentials is None):
                    logger.warning("combiner rejected %s (%s); message dropped", rpc, describe(exc))
                else:
                    done = False
                    if action == RECONNECT:
                        self._connection.reconnect(generation)
                    elif action == REAUTH and self._connection.credentials is not None:
                        try:
                            self._connection.credentials.refresh()
                        except Exception as refresh_error:  # logged, retried later
                            logger.warning("token refresh failed: %s", refresh_error)
            except Exception:  # a bad message must not kill the sender
                logger.exception("could not send %s; message dropped", rpc)
            with self._cond:
                if done:
                    if self._queue and self._queue[0][1] is request:
                        self._queue.popleft()
                    self._busy = False
                    self._cond.notify_all()
                    continue
                self._busy = False
                self._cond.notify_all()
                delay = backoff.next_delay()
                logger.debug("%s not sent, retrying in %.1fs", rpc, delay)
                self._cond.wait(delay)
