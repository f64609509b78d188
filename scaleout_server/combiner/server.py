"""Start and stop a combiner: one grpc.aio server with the client, model and control services.

Start-up order: bind the port, start serving, then register with the controller (which returns
the model repository to open), so a client the controller assigns here never finds the port
closed. Tests and the single-process `server start` pass the repository and an event link
explicitly and skip registration (`CombinerServer(settings, repository=..., link=CallbackLink(...))`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from scaleout_server.auth.grpc_gate import AuthInterceptor, GateMode, GrpcGate
from scaleout_server.auth.revocation_sync import sync_revocations
from scaleout_server.combiner.byte_path import BytePathServer, server_tls_context
from scaleout_server.combiner.client_manager import ClientManager
from scaleout_server.combiner.client_service import CombinerClientService
from scaleout_server.combiner.control_service import ControlService
from scaleout_server.combiner.controller_link import ControllerLink, EventLink
from scaleout_server.combiner.limits import RateLimitInterceptor
from scaleout_server.combiner.malformed import MalformedRequestInterceptor
from scaleout_server.combiner.model_service import ModelService
from scaleout_server.combiner.open_files import prepare_open_file_limit
from scaleout_server.combiner.rounds import Rounds, RoundState
from scaleout_server.ratelimit import RateLimiter
from scaleout_server.repository.base import ModelRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.tls import grpc_server_credentials, http_verify, server_tls, tls_enabled
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

GRPC_OPTIONS = [
    # the official client pings every 5 s, also between calls; stricter limits end in GOAWAY too_many_pings.
    # Accept 4 s, not exactly 5: a ping delayed on the way makes the next one arrive early, and a few of those
    # (grpc's ping strikes) close the connection, which under load ends calls CANCELLED. (This is the rule for
    # pings we receive; grpc.http2.min_time_between_pings_ms is about pings we send, and we send none.)
    ("grpc.http2.min_ping_interval_without_data_ms", 4000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]
LOAD_INTERVAL = 2.0
SWEEP_INTERVAL = 1.0
SWEEP_ERROR_EVERY = 60.0  # the same sweep failure is logged at most this often
ORPHAN_UPLOAD_AGE = 6 * 3600.0  # uploads never claimed by a ModelUpdate are deleted after this
MESSAGE_OVERHEAD = 1024 * 1024  # room above max_chunk_bytes, so an oversized chunk gets our message, not gRPC's


def grpc_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """GRPC_OPTIONS with the receive limit raised to fit a chunk of `max_chunk_bytes` (never below 8 MiB)."""
    limit = max(8 * 1024 * 1024, settings.max_chunk_bytes + MESSAGE_OVERHEAD)
    return [(k, limit if k == "grpc.max_receive_message_length" else v) for k, v in GRPC_OPTIONS]


def updates_dir_for(settings: ServerSettings) -> Path:
    return Path(settings.data_dir) / f"combiner-{settings.combiner_name}" / "updates"


def public_hostname_for(settings: ServerSettings) -> str:
    if settings.public_hostname:
        return settings.public_hostname
    if settings.host in ("", "0.0.0.0", "::", "[::]"):
        return socket.getfqdn()
    return settings.host


class CombinerServer:
    """One combiner. `await start()` returns the bound port; `await stop()` ends it gracefully."""

    def __init__(self, settings: ServerSettings, *, repository: ModelRepository | None = None,
                 link: EventLink | None = None, control_token: str | None = None,
                 update_grace: float | None = None, auth: GrpcGate | None = None) -> None:
        self.settings = settings
        self.repository = repository
        self.tls = server_tls(settings)  # TlsConfigError now rather than at the first handshake
        self.link = link if link is not None else ControllerLink(settings.controller_url, verify=http_verify(settings),
                                                                 grpc_secure=tls_enabled(settings),
                                                                 token=settings.combiner_token or None)
        # token checks on every RPC: set by the controller's registration reply (tests pass a gate)
        self.auth = auth if auth is not None else (
            GrpcGate.pending() if isinstance(self.link, ControllerLink) else GrpcGate.off())
        self.control_token = control_token
        self.updates_dir = updates_dir_for(settings)
        self.port = 0
        self.clients = ClientManager(settings.client_offline_after, emit=self.link.emit,
                                     hold_interval_polls=settings.hold_interval_polls)
        self.rounds = Rounds(self.clients, repository, self.link, self.updates_dir)  # type: ignore[arg-type]
        if update_grace is not None:
            self.rounds.update_grace = update_grace
        self.model_service = ModelService(repository, self.updates_dir, settings.max_model_bytes,  # type: ignore[arg-type]
                                          settings.max_chunk_bytes)
        self.control_service = ControlService(self.clients, self.rounds, control_token)
        self.byte_path: BytePathServer | None = None
        self._server: grpc.aio.Server | None = None
        self._background: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        settings = self.settings
        self._prepare_work_dir()
        limiter = RateLimiter(settings.client_rate_limit, settings.client_rate_burst)
        server = grpc.aio.server(options=grpc_options(settings), interceptors=[
            AuthInterceptor(self.auth), RateLimitInterceptor(limiter), MalformedRequestInterceptor()])
        pb_grpc.add_CombinerClientServicer_to_server(CombinerClientService(self.clients, self.rounds, self.link),
                                                     server)
        pb_grpc.add_ModelServiceServicer_to_server(self.model_service, server)
        pb_grpc.add_ControlServicer_to_server(self.control_service, server)
        address = f"{settings.host}:{settings.combiner_port}"
        try:
            if self.tls is not None:
                self.port = server.add_secure_port(address, grpc_server_credentials(self.tls))
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(f"combiner cannot listen on {address}: {exc}; is the port in use?") from exc
        if not self.port:
            raise RuntimeError(f"combiner cannot listen on {address}; is the port in use?")
        await server.start()
        self._server = server
        self._start_byte_path()
        public = public_hostname_for(settings)
        log.info("combiner %r serving gRPC%s on %s:%d (clients dial %s:%d)", settings.combiner_name,
                 " over TLS" if self.tls else "", settings.host, self.port, public, self.port)
        try:
            description = await self.link.connect(settings.combiner_name, settings.host, self.port, public)
            if self.repository is None:
                if description is None:
                    raise ValueError("no model repository: pass one, or register with a controller that names it")
                from scaleout_server.repository.factory import make_repository

                # the controller's description carries no secrets: S3 credentials come from our own settings
                self.repository = make_repository(description, settings)
                log.info("model repository: %s", description)
            if isinstance(self.link, ControllerLink) and self.control_token is None:
                token = (self.link.registration or {}).get("control_token")
                self.control_service.control_token = token or None
            if isinstance(self.link, ControllerLink):
                self._configure_auth(self.link.registration or {})
        except BaseException:
            await server.stop(0)
            self._stop_byte_path()
            raise
        self.rounds.repository = self.repository
        self.model_service.repository = self.repository
        self.link.start()
        self._background = [asyncio.create_task(self._report_load(), name="combiner-load"),
                            asyncio.create_task(self._sweep(), name="combiner-sweep")]
        if self.auth.mode is GateMode.ON and isinstance(self.link, ControllerLink):
            self._background.append(asyncio.create_task(sync_revocations(self.auth, self.link.fetch_revoked),
                                                        name="combiner-revocations"))
        return self.port

    def _start_byte_path(self) -> None:
        """Listen for large-model transfers beside the gRPC port (settings byte_port; -1 turns it off)."""
        settings = self.settings
        if settings.byte_port < 0:
            log.info("byte path off (byte_port -1): every model moves over gRPC")
            return
        tls = server_tls_context(self.tls.cert_file, self.tls.key_file) if self.tls is not None else None
        byte_path = BytePathServer(settings.host, settings.byte_port, lambda: self.repository, self.updates_dir, tls,
                                   settings.byte_path_min_bytes)
        byte_path.start()
        self.byte_path = byte_path
        self.model_service.byte_path = byte_path
        log.info("byte path for models of %d bytes and more on %s:%d%s", settings.byte_path_min_bytes,
                 settings.host, byte_path.port, " over TLS" if tls else "")

    def _stop_byte_path(self) -> None:
        if self.byte_path is not None:
            self.model_service.byte_path = None
            self.byte_path.stop()
            self.byte_path = None

    def _configure_auth(self, registration: dict[str, Any]) -> None:
        """Tokens on or off, as the controller says; a combiner given a token refuses to run open."""
        self.auth.configure(registration.get("auth"))
        if self.auth.mode is GateMode.ON:
            log.info("token checks on: every RPC needs a valid token of the right role")
        elif self.settings.combiner_token:
            raise RuntimeError(f"the controller at {self.settings.controller_url} runs without authentication "
                               "(local mode), but this combiner was given a token: start the controller secured "
                               "(scaleout controller start, or scaleout server start --secure)")
        else:
            log.warning("token checks off: the controller runs in local mode (no authentication)")

    async def stop(self, grace: float = 5.0) -> None:
        """Answer waiting polls, let running calls finish for up to `grace` seconds, deliver queued events."""
        self.clients.closing = True
        self.clients.wake_all()
        for task in self._background:
            task.cancel()
        for task in self._background:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._background = []
        self.model_service.byte_path = None  # no new tickets; transfers under way finish in their threads
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        self._stop_byte_path()
        await self.link.stop()
        await self.link.aclose()
        self._stopped.set()
        log.info("combiner %r stopped", self.settings.combiner_name)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def _prepare_work_dir(self) -> None:
        """Uploads left by an earlier run belong to rounds that no longer exist."""
        self.updates_dir.mkdir(parents=True, exist_ok=True)
        stale = [p for p in self.updates_dir.iterdir() if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            log.info("removed %d stale upload(s) from %s", len(stale), self.updates_dir)

    async def _report_load(self) -> None:
        while True:
            try:
                self.link.emit({"kind": "combiner_load", "data": {"load": len(self.clients.active_clients())}})
            except Exception:
                log.exception("could not report the combiner load")
            await asyncio.sleep(LOAD_INTERVAL)

    async def _sweep(self) -> None:
        """Mark silent clients offline every second, delete orphan uploads every minute; survives any failure
        (out of file descriptors, a full disk: said once per minute, and the next pass tries again)."""
        last_cleanup = time.monotonic()
        last_os_error = -SWEEP_ERROR_EVERY
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self.clients.sweep()
                if time.monotonic() - last_cleanup > 60:
                    last_cleanup = time.monotonic()
                    await asyncio.to_thread(self._delete_orphans, self._uploads_in_use())
            except OSError as exc:  # e.g. EMFILE: even starting the worker thread can need a file
                if time.monotonic() - last_os_error >= SWEEP_ERROR_EVERY:
                    last_os_error = time.monotonic()
                    log.error("combiner sweep failed: %s%s; sweeping on", exc, _fd_hint(exc))
            except Exception:  # the sweeper must survive any one failure
                log.exception("combiner sweep failed")

    def _uploads_in_use(self) -> set[str]:
        """Update files open rounds still need (read on the loop: the rounds change there)."""
        return {str(a.path) for g in self.rounds.open.values() if isinstance(g, RoundState) for a in g.updates.values()}

    def _delete_orphans(self, in_use: set[str]) -> None:
        """Delete old uploads no open round claims (worker thread: a folder of many large files)."""
        cutoff = time.time() - ORPHAN_UPLOAD_AGE
        for path in self.updates_dir.iterdir():
            try:
                if str(path) not in in_use and path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    log.info("deleted upload %s: never claimed by a model update", path.name)
            except OSError:
                continue


async def serve(settings: ServerSettings, stop_event: asyncio.Event | threading.Event | None = None, *,
                repository: ModelRepository | None = None, link: EventLink | None = None,
                ready: Any = None) -> None:
    """Run a combiner until `stop_event` is set (forever without one). `ready(port)` is called once serving."""
    server = CombinerServer(settings, repository=repository, link=link)
    await server.start()
    if ready is not None:
        ready(server.port)
    try:
        if stop_event is None:
            await asyncio.Event().wait()
        elif isinstance(stop_event, asyncio.Event):
            await stop_event.wait()
        else:
            while not stop_event.is_set():
                await asyncio.sleep(0.2)
    finally:
        await server.stop()


def _fd_hint(exc: OSError) -> str:
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return " (out of file descriptors: raise the open-file limit, see the warning at start-up)"
    return ""


def run_combiner(settings: ServerSettings) -> None:
    """Blocking entry point for `scaleout combiner start`: serve until SIGINT/SIGTERM."""
    prepare_open_file_limit()  # a process-wide limit: raised here, not by combiners embedded in tests

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        await serve(settings, stop)

    asyncio.run(main())


class CombinerThread:
    """A combiner on its own event loop in a background thread (tests, single-process server).

    `start()` returns the bound port once the server is serving; `stop()` ends it and joins.
    """

    def __init__(self, settings: ServerSettings, *, repository: ModelRepository | None = None,
                 link: EventLink | None = None, **kwargs: Any) -> None:
        self.settings = settings
        self._kwargs = {"repository": repository, "link": link, **kwargs}
        self.server: CombinerServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    @property
    def port(self) -> int:
        return self.server.port if self.server is not None else 0

    def start(self, timeout: float = 60.0) -> int:
        self._thread = threading.Thread(target=self._run, name=f"combiner-{self.settings.combiner_name}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"combiner did not start within {timeout}s")
        if self._error is not None:
            raise self._error
        return self.port

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:
            self._error = exc
            log.exception("combiner thread ended with an error")
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self.server = CombinerServer(self.settings, **self._kwargs)
        await self.server.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.stop(grace=1.0)

    def call(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine on the combiner's loop from another thread and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        if self.loop is not None and self._stop is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> CombinerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
