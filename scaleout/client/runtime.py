"""The client's start sequence and lifetime, shared by `scaleout client start` and tests.

Order: token exchange -> POST /clients/add -> compute package -> gRPC channel + VersionCheck ->
the project's startup(client) -> Connect -> heartbeat, telemetry and poll loops -> (signal) ->
abort tasks, final report, Disconnect. Every step that talks to a server tries again, with back-off
and jitter, until the server answers or the client is stopped (retry.until_answered): a client started
before its controller (a host reboot) comes up when the controller does. Only answers that can never
succeed stop it, each with its own exit code (registration.EXIT_*). While running, a combiner unreachable
for longer than `failover_after` seconds makes the client register again and move to the combiner the
controller assigns (failover.py).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import psutil
import requests

from scaleout.client.connection import (
    RECONNECT,
    ClientIdentity,
    CombinerError,
    Connection,
    GrpcTarget,
    Interrupted,
    Outbox,
    classify,
    describe,
)
from scaleout.client.controllers import controller_urls, follow_controllers
from scaleout.client.edge_client import EdgeClient
from scaleout.client.failover import Failover, failover_after_from_env
from scaleout.client.package_sync import PackageSource, PackageSync, SyncingTaskExecutor
from scaleout.client.registration import (
    WIRE_CLIENT_VERSION,
    Assignment,
    CombinerRefused,
    RegistrationError,
    StartupInterrupted,
    TokenManager,
    TokenRefused,
    register_client,
    startup_backoff,
)
from scaleout.client.retry import until_answered
from scaleout.client.task_receiver import DEFAULT_POLL_TIMEOUT, TaskReceiver
from scaleout.client.tasks import TaskExecutor, now_timestamp
from scaleout.client.tls import ClientTrust
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.protocol import AnnounceType

logger = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 2.0
TELEMETRY_INTERVAL = 5.0
SHUTDOWN_TASK_GRACE = 3.0
_TRUE = {"1", "true", "yes", "on"}


@dataclass
class ClientConfig:
    """Everything `client start` needs; see `scaleout client start --help` for the meaning of each."""

    api_url: str
    api_port: int | None = None
    token: str | None = None
    name: str | None = None
    client_id: str | None = None
    preferred_combiner: str | None = None
    local_package: bool = False
    package_name: str | None = None
    poll_timeout: float = DEFAULT_POLL_TIMEOUT
    workdir: Path = field(default_factory=Path.cwd)
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    telemetry_interval: float = TELEMETRY_INTERVAL
    dispatcher: bool = False  # legacy mode: run scaleout.yaml's train/validate/predict commands (client/dispatcher.py)
    managed_env: bool = False  # install python_env.yaml into the active venv at start and per new package
    max_package_bytes: int | None = None  # download/unpacked size limit for remote packages (None: the default)
    ca_file: str | None = None  # CA (PEM) trusted for the controller's HTTPS and the combiner's TLS; client/tls.py
    package_public_key: str | None = None  # Ed25519 public key (PEM): run only packages signed for it
    # seconds the combiner may stay unreachable before the client registers again and is moved to another
    # combiner; 0 never moves. None: SCALEOUT_FAILOVER_AFTER, else failover.DEFAULT_FAILOVER_AFTER
    failover_after: float | None = None


def decide_tls(grpc_secure: bool | None, env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """TLS unless the server said grpc_secure=false; SCALEOUT_GRPC_SECURE=true forces TLS."""
    forced = (env.get("SCALEOUT_GRPC_SECURE") or "").strip().lower()
    if forced in _TRUE:
        return True
    if forced:
        return bool(grpc_secure)
    return True if grpc_secure is None else grpc_secure


class ClientRuntime:
    """One running client. `run()` blocks until `stop()` (or a fatal error) and returns an exit code."""

    def __init__(self, config: ClientConfig, edge_client: EdgeClient | None = None,
                 echo: Callable[[str], None] = print) -> None:
        self.config = config
        self.edge_client = edge_client or EdgeClient()
        self.echo = echo
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.api_url = ""
        self.token: TokenManager | None = None
        self.trust: ClientTrust | None = None  # start() resolves both from --ca-file and the environment
        self.http: requests.Session | None = None
        self.assignment: Assignment | None = None
        self.connection: Connection | None = None
        self.outbox: Outbox | None = None
        self.receiver: TaskReceiver | None = None
        self.started = threading.Event()
        self._threads: list[threading.Thread] = []
        self.package_sync: PackageSync | None = None  # remote packages: switches to a newly activated one
        self.failover: Failover | None = None
        self._registration_body: dict[str, Any] = {}

    # -- control ------------------------------------------------------------------------------
    def stop(self, reason: str = "Aborted by client") -> None:
        """Ask the client to stop: running tasks are aborted, then the client disconnects."""
        if not self.stop_reason:
            self.stop_reason = reason
        self.stop_event.set()
        if self.receiver is not None:
            self.receiver.wake()

    def run(self) -> int:
        try:
            self.start()
        except StartupInterrupted:
            self._close()
            return 0
        except BaseException:
            self._close()
            raise
        self.stop_event.wait()
        return self.shutdown()

    # -- start --------------------------------------------------------------------------------
    def start(self) -> None:
        """Everything up to the running poll loop; raises RegistrationError with a user-facing message."""
        cfg = self.config
        urls = controller_urls(cfg.api_url, cfg.api_port)  # several: a standby controller too
        self.api_url = urls[0]
        if cfg.managed_env:
            _require_virtualenv()  # before registering: the fix is local and needs no server
        client_id = cfg.client_id or str(uuid.uuid4())
        name = cfg.name or f"client-{client_id[:8]}"
        self.trust = ClientTrust.resolve(cfg.ca_file)
        self.http = self.trust.session()
        follow_controllers(self.http, urls)  # REST calls reach whichever controller is active
        if cfg.package_public_key:
            _check_public_key(cfg.package_public_key)

        if cfg.token:
            self.token = TokenManager(self.api_url, cfg.token, session=self.http)
            try:
                until_answered(self.token.access_token, what="token exchange", stop=self.stop_event,
                               backoff=startup_backoff(), interrupted=StartupInterrupted, log=logger)
            except TokenRefused as exc:
                raise TokenRefused(f"failed to obtain an access token: {exc}") from exc

        body = {"name": name, "client_id": client_id, "preferred_combiner": cfg.preferred_combiner or None,
                "package": "local" if cfg.local_package else "remote", "client_version": WIRE_CLIENT_VERSION}
        failover_after = cfg.failover_after if cfg.failover_after is not None else failover_after_from_env()
        self.assignment = register_client(self.api_url, body, token=self.token, stop=self.stop_event,
                                          session=self.http)
        client_id = self.assignment.client_id
        self._registration_body = {**body, "client_id": client_id}
        project = self._load_project()

        target_for = partial(grpc_target, root_cert_path=self.trust.grpc_root_cert_path())
        target = target_for(self.assignment)
        try:
            self.connection = Connection(target, ClientIdentity(client_id, name), credentials=self.token)
        except CombinerError as exc:
            raise RegistrationError(str(exc)) from exc
        self.failover = Failover(self.connection, self._register_again, target_for, after=failover_after,
                                 on_switch=self._moved)
        self._version_check()
        self.outbox = Outbox(self.connection)
        self.edge_client._attach(client_id, name, self.outbox)
        self._run_startup(project)

        self.echo(f"Scaleout Edge client {name} (id {client_id})\n"
                  f"  controller: {self.api_url}\n"
                  f"  combiner:   {self.connection.target.address} "
                  f"({'TLS' if self.connection.target.secure else 'plaintext'})\n"
                  f"  package:    {project.path}\n"
                  "Waiting for tasks; press Ctrl-C to stop.")
        self._announce_connect()
        executor_args = (self.connection, self.outbox, self.edge_client._callbacks,
                         cfg.workdir / ".scaleout" / "model_cache")
        executor = (TaskExecutor(*executor_args) if self.package_sync is None
                    else SyncingTaskExecutor(*executor_args, sync=self.package_sync))
        self.receiver = TaskReceiver(self.connection, executor, self.stop_event, poll_timeout=cfg.poll_timeout,
                                     on_contact=self.failover.succeeded)
        self._spawn("scaleout-heartbeat", self._heartbeat_loop)
        self._spawn("scaleout-telemetry", self._telemetry_loop)
        self.receiver.start()
        self.started.set()

    def _load_project(self) -> Any:
        from scaleout.project.config import ProjectError, find_project_dir

        cfg = self.config
        source = PackageSource(self.api_url, cfg.workdir, name=cfg.package_name, token=self.token,
                               max_bytes=cfg.max_package_bytes, managed_env=cfg.managed_env, session=self.http,
                               public_key=cfg.package_public_key)
        try:
            if cfg.local_package:
                return source.prepare(find_project_dir(cfg.workdir))
            fetched = until_answered(source.fetch, what="compute package download", stop=self.stop_event,
                                     backoff=startup_backoff(), interrupted=StartupInterrupted, log=logger)
            project = source.prepare(fetched.folder)
        except ProjectError as exc:
            raise RegistrationError(str(exc)) from exc
        self.package_sync = PackageSync(source, self.edge_client, self._run_startup, checksum=fetched.checksum,
                                        project=project)
        return project

    def _run_startup(self, project: Any) -> None:
        from scaleout.project.config import ProjectError
        from scaleout.project.loader import call_entrypoint

        if self.config.dispatcher:
            self._start_dispatcher(project)
            return
        try:
            call_entrypoint(project, "startup", self.edge_client)
        except ProjectError as exc:
            if exc.__cause__ is not None:
                logger.error("startup failed", exc_info=exc.__cause__)
            raise RegistrationError(str(exc)) from exc
        if self.started.is_set() and self.connection is not None:
            try:  # a new compute package, which may (no longer) validate: tell the combiner
                self.connection.unary("Announce", self._connect_request(), timeout=5.0)
            except Exception as exc:
                logger.warning("could not tell the combiner whether this client validates: %s", describe(exc))

    def _start_dispatcher(self, project: Any) -> None:
        """Dispatcher mode: check the command entry points, run the startup command, register the callbacks."""
        from scaleout.client.dispatcher import Dispatcher
        from scaleout.project.config import ProjectError

        helper_type = self.assignment.raw.get("helper_type") if self.assignment is not None else None
        try:
            dispatcher = Dispatcher(project, default_helper=helper_type if isinstance(helper_type, str) else None)
            dispatcher.run_startup(stop=self.stop_event)
        except ProjectError as exc:
            if self.stop_event.is_set():
                raise StartupInterrupted("stopped during the startup command") from exc
            raise RegistrationError(str(exc)) from exc
        dispatcher.register(self.edge_client)
        logger.info("dispatcher mode: tasks run the commands of %s", project.project_file)

    def _version_check(self) -> None:
        assert self.connection is not None
        request = pb.ClientAnnounceRequest(client_id=self.connection.identity.client_id,
                                           type=AnnounceType.VERSION_CHECK,
                                           parameters=json.dumps({"client-version": WIRE_CLIENT_VERSION}))
        try:
            response = self.connection.call("Announce", request, stop=self.stop_event, timeout=10.0,
                                            on_unreachable=self._combiner_unreachable)
        except Interrupted as exc:
            raise StartupInterrupted("stopped while connecting") from exc
        except CombinerError as exc:
            raise CombinerRefused(f"cannot talk to the combiner at {self.connection.target.address}: {exc}") from exc
        try:
            answer = json.loads(response.parameters or "{}")
        except json.JSONDecodeError:
            answer = {}
        if not isinstance(answer, dict) or answer.get("success") is not True:
            why = response.response or "no reason given"
            raise CombinerRefused(f"the combiner at {self.connection.target.address} does not accept this client "
                                  f"(protocol {WIRE_CLIENT_VERSION}): {why}")
        logger.info("combiner version %s accepts this client", answer.get("version", "unknown"))

    def _connect_request(self) -> pb.ClientAnnounceRequest:
        """Connect, saying whether this client validates (the published clients send no parameters)."""
        assert self.connection is not None
        return pb.ClientAnnounceRequest(client_id=self.connection.identity.client_id, type=AnnounceType.CONNECT,
                                        parameters=json.dumps({"validate": self.edge_client.validates}))

    def _announce_connect(self) -> None:
        assert self.connection is not None
        request = self._connect_request()
        try:
            self.connection.call("Announce", request, stop=self.stop_event, timeout=10.0,
                                 on_unreachable=self._combiner_unreachable)
        except Interrupted as exc:
            raise StartupInterrupted("stopped while connecting") from exc
        except CombinerError as exc:
            raise CombinerRefused(f"the combiner refused Connect: {exc}") from exc

    def _combiner_unreachable(self) -> None:
        """At start-up, a combiner that stays unreachable is failed over like a running client's."""
        if self.failover is not None:
            self.failover.failed()

    # -- background loops ---------------------------------------------------------------------
    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _heartbeat_loop(self) -> None:
        assert self.connection is not None
        interval = self.config.heartbeat_interval
        failing = False
        while not self.stop_event.is_set():
            if self.receiver is not None and self.receiver.carries_liveness():
                # a held poll tells the combiner we are here, and the answered one before it told us it is:
                # the beat would be a redundant RPC (with 1000 clients, 500 of them per second)
                self.stop_event.wait(interval)
                continue
            beat = pb.Heartbeat(client_id=self.connection.identity.client_id,
                                heartbeat_interval_ms=int(interval * 1000))
            generation = self.connection.generation
            try:
                self.connection.unary("SendHeartbeat", beat, timeout=max(interval, 5.0))
                if failing:
                    logger.info("heartbeats reach the combiner again")
                    if self.receiver is not None:
                        self.receiver.wake()  # poll now instead of at the end of its back-off
                failing = False
                if self.failover is not None:
                    self.failover.succeeded()
            except Exception as exc:
                if not failing:
                    logger.warning("heartbeat failed: %s", describe(exc))
                failing = True
                if isinstance(exc, grpc.RpcError) and classify(exc) == RECONNECT:
                    # a fresh channel dials at once; grpc's own reconnect back-off grows to seconds
                    self.connection.reconnect(generation)
                if self.failover is not None and not self.stop_event.is_set() and self.failover.failed():
                    continue  # beat at once on the new combiner
            self.stop_event.wait(interval)

    def _register_again(self) -> Assignment:
        """`/clients/add` once more with our identity (failover), tried until the controller answers, the
        client stops, or the lost combiner answers again (a poll reached it: nothing to move away from)."""
        assert self.failover is not None
        failover = self.failover
        return register_client(self.api_url, self._registration_body, token=self.token, stop=self.stop_event,
                               give_up=lambda: failover.failing_since is None, session=self.http)

    def _moved(self, assignment: Assignment) -> None:
        """After failover: say Connect to the new combiner and poll it at once."""
        self.assignment = assignment
        assert self.connection is not None
        try:
            self.connection.unary("Announce", self._connect_request(), timeout=5.0)
        except Exception as exc:  # the combiner accepts clients that never announced; polls carry on
            logger.info("Connect not delivered to the new combiner: %s", describe(exc))
        if self.receiver is not None:
            self.receiver.wake()

    def _telemetry_loop(self) -> None:
        assert self.connection is not None
        psutil.cpu_percent(interval=None)  # the first reading is always 0: prime it
        while not self.stop_event.wait(self.config.telemetry_interval):
            values = {"cpu_usage": psutil.cpu_percent(interval=None), "memory_usage": psutil.virtual_memory().percent}
            at = time.time()
            if self.receiver is not None and self.receiver.carry_telemetry(values, at):
                continue  # the next poll carries it (MD_TELEMETRY): one RPC fewer per reading
            message = pb.TelemetryMessage(
                client_id=self.connection.identity.client_id, timestamp=now_timestamp(at),
                telemetries=[pb.TelemetryElem(key=key, value=value) for key, value in values.items()])
            try:
                self.connection.unary("SendTelemetryMessage", message, timeout=5.0)
            except Exception as exc:
                logger.debug("telemetry not sent: %s", describe(exc))

    # -- stop ---------------------------------------------------------------------------------
    def shutdown(self) -> int:
        """Abort running tasks, report them, say Disconnect; returns the exit code."""
        receiver = self.receiver
        fatal = receiver.fatal_error if receiver is not None else None
        if receiver is not None:
            receiver.stop()
            aborted = receiver.abort_all(self.stop_reason or "Aborted by client")
            if aborted:
                logger.info("waiting up to %.0fs for %d aborted task(s) to stop", SHUTDOWN_TASK_GRACE, aborted)
                if not receiver.wait_for_tasks(SHUTDOWN_TASK_GRACE):
                    logger.warning("a task did not stop in time (its callback does not call check_task_abort)")
            receiver.join(timeout=2.0)
            receiver.final_report(timeout=2.0)
        if self.connection is not None and self.started.is_set():
            request = pb.ClientAnnounceRequest(client_id=self.connection.identity.client_id,
                                               type=AnnounceType.DISCONNECT)
            try:
                self.connection.unary("Announce", request, timeout=2.0)
            except Exception as exc:
                logger.debug("Disconnect not delivered: %s", describe(exc))
        self._close()
        if fatal:
            logger.error("client stopped: %s", fatal)
            return 1
        logger.info("client stopped")
        return 0

    def _close(self) -> None:
        self.stop_event.set()
        if self.outbox is not None:
            self.outbox.close(timeout=3.0)
        for thread in self._threads:
            thread.join(timeout=1.0)
        if self.connection is not None:
            self.connection.close()


def grpc_target(assignment: Assignment, root_cert_path: str | None = None) -> GrpcTarget:
    """The combiner the controller assigned, with TLS as it (or SCALEOUT_GRPC_SECURE) says; TLS trusts
    `root_cert_path` (ClientTrust.grpc_root_cert_path(): --ca-file, else SCALEOUT_GRPC_ROOT_CERT_PATH),
    else the system store."""
    return GrpcTarget(host=assignment.host, port=assignment.port, secure=decide_tls(assignment.grpc_secure),
                      root_cert_path=root_cert_path)


def _check_public_key(path: str) -> None:
    """A wrong --package-public-key is reported at start, not at the first package."""
    from scaleoututil.signing import SigningError, load_public_key

    try:
        load_public_key(path)
    except SigningError as exc:
        raise RegistrationError(f"--package-public-key: {exc}") from exc


def _require_virtualenv() -> None:
    from scaleout.project.config import ProjectError
    from scaleout.project.environment import require_virtualenv

    try:
        require_virtualenv("--managed-env")
    except ProjectError as exc:
        raise RegistrationError(str(exc)) from exc


def run_client(config: ClientConfig, edge_client: EdgeClient | None = None,
               echo: Callable[[str], None] = print) -> int:
    """Run a client in the foreground with signal handling: the first Ctrl-C/SIGTERM stops it
    gracefully (tasks aborted and reported, Disconnect sent); a second one exits at once."""
    runtime = ClientRuntime(config, edge_client, echo)
    if threading.current_thread() is not threading.main_thread():
        return runtime.run()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if runtime.stop_event.is_set():
            raise KeyboardInterrupt
        logger.warning("%s received: stopping (press Ctrl-C again to exit at once)", signal.Signals(signum).name)
        runtime.stop("Aborted by client")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return runtime.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
