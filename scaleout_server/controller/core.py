"""The controller's operations, called by the REST routes.

The routes translate and validate HTTP; everything that needs a rule lives behind this facade.
Errors are raised as `scaleout_server.errors` types (InvalidInput, NotFoundError, Conflict,
Unavailable, TooLarge) or `scaleout_server.store.base.NotFound`; the API maps them to statuses.

The facade only wires the parts together: the combiner registry (`combiners.py`), the session
runner (`sessions.py`), ad-hoc task batches (`tasks.py`), model ingest (`models.py`) and config
validation (`session_config.py`).
"""

from __future__ import annotations

import logging
import tarfile
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, BinaryIO

from scaleout_server.auth.rest import Forbidden
from scaleout_server.controller import models, recovery
from scaleout_server.controller.combiners import CombinerRegistry, as_utc
from scaleout_server.controller.session_config import (
    ACTIVE_HELPER_SETTING,
    SessionConfig,
    active_helper,
    check_helper,
    parse_int,
    parse_positive_float,
    validate_session_config,
)
from scaleout_server.controller.session_modes import make_runner
from scaleout_server.controller.sessions import ABORT_GRACE, SessionRunner
from scaleout_server.controller.tasks import Target, TaskBatch, TaskDispatcher
from scaleout_server.errors import Conflict, InvalidInput, NotFoundError, Unavailable
from scaleout_server.repository.base import ModelRepository
from scaleout_server.settings import ServerSettings
from scaleout_server.store import codec
from scaleout_server.store import records as r
from scaleout_server.store.base import ListQuery, Store
from scaleoututil.protocol import RoundStatus, SessionStatus, TaskType, custom_task_type

log = logging.getLogger(__name__)

LIVENESS_INTERVAL = 2.0
RESTARTED = "the controller restarted during this session"
SHUT_DOWN = "the controller shut down during this session"
PACKAGE_EXTENSIONS = (".tar.gz", ".tgz", ".tar.bz2")
PACKAGE_MANIFEST = "scaleout.yaml"
RESTART_TIMEOUT = 120.0  # seconds clients get to finish (or abort) their tasks and report a restart task done
NO_COMBINER = ("no combiner is connected to this controller; start one with "
               "`scaleout combiner start --controller URL` or use `scaleout server start`")
NO_MODEL = ("no model in the repository: upload a seed model first with "
            "`scaleout model set-active --file seed.npz`")

# record kinds a combiner may send in its event feed; an update may arrive both here and in RunRound's
# outcome (the store keeps the first copy of each id)
EVENT_KINDS = ("update", "validation", "metric", "status", "prediction", "telemetry", "attribute")
LIVENESS_KINDS = ("client_seen", "combiner_load")


class Controller:
    def __init__(self, settings: ServerSettings, store: Store, repository: ModelRepository) -> None:
        self.settings = settings
        self.store = store
        self.repository = repository
        self.registry = CombinerRegistry(store, tls_ca_file=settings.tls_ca_file)
        self.dispatcher = TaskDispatcher(self.registry)
        self._lock = threading.RLock()
        self._assign_lock = threading.Lock()  # one assignment at a time: a burst of clients spreads evenly
        self._runner: SessionRunner | None = None
        self._closing = threading.Event()
        self._liveness: threading.Thread | None = None
        self._task_threads: set[threading.Thread] = set()
        self._ending: dict[str, str] = {}  # command id -> the status a stop/skip request gives it
        self.liveness_errors = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Resume the session a previous process left running (recovery.py), fail anything else it
        left running, then start the liveness sweeps."""
        plan = recovery.plan_resume(self.store)
        self._fail_leftovers(keep=plan.session_id if plan is not None else None)
        if plan is not None:
            recovery.resume(self, plan)
        if self._liveness is None:
            self._closing.clear()
            self._liveness = threading.Thread(target=self._liveness_loop, name="liveness", daemon=True)
            self._liveness.start()

    def close(self) -> None:
        """Stop the session runner (its session ends Stopped), task batches and the liveness thread."""
        self._closing.set()
        with self._lock:
            runner = self._runner
        if runner is not None:
            runner.stop(SHUT_DOWN, abort_combiners=False)
            if not runner.join(ABORT_GRACE + 5):
                log.warning("session %s: runner still busy at shutdown", runner.session_id)
        for thread in list(self._task_threads):
            thread.join(ABORT_GRACE + 2)
        if self._liveness is not None:
            self._liveness.join(LIVENESS_INTERVAL + 5)
            self._liveness = None
        self.registry.close()

    def _fail_leftovers(self, keep: str | None = None) -> None:
        for session in self.store.sessions.list(ListQuery(filters={"status": SessionStatus.RUNNING.value}))[1]:
            if session.session_id == keep:
                continue
            session.status = SessionStatus.FAILED
            session.error = RESTARTED
            session.finished_at = r.utcnow()
            self.store.sessions.update(session)
            log.warning("session %s was left running by a previous controller; marked Failed", session.session_id)
        for status in (RoundStatus.PENDING, RoundStatus.RUNNING, RoundStatus.VALIDATING):
            for round_ in self.store.rounds.list(ListQuery(filters={"status": status.value}))[1]:
                if round_.session_id == keep:
                    continue
                round_.status = RoundStatus.FAILED
                round_.error = RESTARTED
                round_.finished_at = r.utcnow()
                self.store.rounds.update(round_)

    def _liveness_loop(self) -> None:
        while not self._closing.wait(LIVENESS_INTERVAL):
            try:
                self.sweep_clients()
                self.registry.sweep()
            except Exception:  # count, log, keep sweeping
                self.liveness_errors += 1
                log.exception("liveness sweep failed (%d failures so far)", self.liveness_errors)

    def sweep_clients(self) -> int:
        """Mark clients offline that were not seen for `client_offline_after` seconds and that their
        combiner no longer reports as connected (combiners only report changes, so a quiet client
        that is still connected stays online). Returns how many were marked.

        A few statements per sweep whatever the number of clients: the database selects the stale
        ones, and the refreshed and the offline ones are each written in one batch."""
        cutoff = r.utcnow() - timedelta(seconds=self.settings.client_offline_after)
        stale = self.store.clients.not_seen_since(cutoff)
        if not stale:
            return 0
        combiner_ids = {c.combiner_id for c in stale if c.combiner_id}
        reachable = [c for c in self.registry.online() if c.combiner_id in combiner_ids]
        active = self.registry.active_clients(reachable, timeout=2.0)
        connected = {a.client_id: a.last_seen for clients in active.values() for a in clients}
        self._refresh_last_seen({c.client_id: connected[c.client_id] for c in stale if c.client_id in connected})
        marked = self._mark_offline([c.client_id for c in stale if c.client_id not in connected], cutoff)
        for client in marked:
            log.info("client %s (%s) marked offline: not seen for %.0f s and not connected to its combiner",
                     client.name, client.client_id, self.settings.client_offline_after)
        return len(marked)

    def _refresh_last_seen(self, last_seen: dict[str, float]) -> None:
        """Quiet but connected clients: take their combiner's last-seen times (never moving one back),
        so lists stay current."""
        seen = {cid: datetime.fromtimestamp(ts, UTC) for cid, ts in last_seen.items() if ts}

        def refresh(client_id: str, current: r.ClientRecord | None) -> r.ClientRecord | None:
            if current is None or (current.last_seen is not None and seen[client_id] <= as_utc(current.last_seen)):
                return None
            current.last_seen = seen[client_id]
            return current

        self.store.clients.modify_many(seen, refresh)

    def _mark_offline(self, client_ids: list[str], cutoff: datetime) -> list[r.ClientRecord]:
        """Those of the clients that are still online and not seen since `cutoff` (one seen meanwhile is spared)."""

        def offline(client_id: str, current: r.ClientRecord | None) -> r.ClientRecord | None:
            last = as_utc(current.last_seen) if current is not None else None
            if current is None or current.status != "online" or (last is not None and last > cutoff):
                return None
            current.status = "offline"
            return current

        return self.store.clients.modify_many(client_ids, offline)

    # -- combiners -------------------------------------------------------------------------
    def register_combiner(self, name: str, host: str, port: int, public_hostname: str | None = None,
                          grpc_secure: bool = False) -> tuple[r.CombinerRecord, dict[str, str]]:
        """Add or refresh a combiner (same name = same combiner; `grpc_secure`: it serves TLS);
        returns it and the repository description (`ModelRepository.describe()`) the combiner should open."""
        if not name:
            raise InvalidInput("a combiner needs a name")
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise InvalidInput(f"combiner port must be an integer, got {port!r}") from None
        if not 0 < port < 65536:
            raise InvalidInput(f"combiner port must be between 1 and 65535, got {port}")
        return self.registry.register(name, host, port, public_hostname, grpc_secure), self.repository.describe()

    def ingest_events(self, combiner_id: str, events: list[dict[str, Any]], bound_name: str | None = None) -> int:
        """Store a batch of encoded records (`store.codec.encode`) sent by a combiner, plus
        `{"kind": "client_seen", "data": {client_id, name, status, ip?}}` liveness events and
        `{"kind": "combiner_load", "data": {"load": n}}`. Returns how many were stored.

        `bound_name`: on a secured server, the combiner name the caller's token is bound to; a
        batch for another combiner is refused. The whole batch is checked before anything is
        stored; records already stored (a batch sent twice) are skipped."""
        combiner = self.registry.get(combiner_id)
        if bound_name is not None and combiner.name != bound_name:
            raise Forbidden(f"this combiner token is for the combiner named {bound_name!r}; it cannot send events "
                            f"for combiner {combiner.name!r}")
        records: list[Any] = []
        seen: list[dict[str, Any]] = []
        load: int | None = None
        for index, event in enumerate(events or []):
            if not isinstance(event, dict):
                raise InvalidInput(f"event {index}: expected an object with kind and data")
            kind, data = event.get("kind"), event.get("data") or {}
            if not isinstance(data, dict):
                raise InvalidInput(f"event {index} ({kind}): data must be an object")
            if kind == "client_seen":
                seen.append(self._check_client_seen(index, data))
            elif kind == "combiner_load":
                load = data.get("load")
                if not isinstance(load, int) or isinstance(load, bool) or not 0 <= load <= codec.MAX_INT:
                    raise InvalidInput(f"event {index} (combiner_load): data.load must be an integer >= 0, "
                                       f"got {load!r}")
            elif kind in EVENT_KINDS:
                try:
                    records.append(codec.decode(event))
                except (TypeError, ValueError) as exc:
                    raise InvalidInput(f"event {index} ({kind}): {exc}") from None
            else:
                raise InvalidInput(f"event {index}: unknown kind {kind!r}; "
                                   f"accepted: {', '.join(EVENT_KINDS + LIVENESS_KINDS)}")
        stored = self._store_records(records)
        self._clients_seen(combiner_id, seen)
        self._keep_current_values(records)
        self.registry.touch(combiner_id, load)
        return stored + len(seen) + (1 if load is not None else 0)

    def add_records(self, records: list[Any]) -> int:
        """Store records posted through the REST API (attributes, statuses) as if a combiner had sent them:
        attribute values also become the client's current ones."""
        stored = self._store_records(records)
        self._keep_current_values(records)
        return stored

    def _store_records(self, records: list[Any]) -> int:
        if records:
            self.store.add_many(records)  # ids already stored (a batch sent twice) are skipped
        return len(records)

    def _keep_current_values(self, records: list[Any]) -> None:
        """Copy each client's newest attribute and telemetry values onto its ClientRecord: that is
        what `/api/v1/attributes/current` answers (server functions select clients by it) and what
        the client list shows. Records are in arrival order, so a later one wins. The batch is
        collapsed to one value per client and key first, then written in one go (a per-client
        write made a thousand clients' telemetry cost thousands of statements per batch).

        The same write moves the client's `last_seen` to now: a value just reported shows it is there, and
        without this the liveness sweep found every quiet client stale every few seconds and rewrote all
        their rows (with 1000 idle clients, most of the controller's CPU)."""
        latest: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for record in records:
            if isinstance(record, (r.AttributeRecord, r.TelemetryRecord)) and record.client_id and record.key:
                attributes, telemetry = latest.setdefault(record.client_id, ({}, {}))
                (attributes if isinstance(record, r.AttributeRecord) else telemetry)[record.key] = record.value

        def merge(client_id: str, client: r.ClientRecord | None) -> r.ClientRecord | None:
            if client is None:  # a client the store does not know: the records alone are kept
                return None
            attributes, telemetry = latest[client_id]
            client.attributes = {**(client.attributes or {}), **attributes}
            client.telemetry = {**(client.telemetry or {}), **telemetry}
            if client.last_seen is None or as_utc(client.last_seen) < seen_at:
                client.last_seen = seen_at
            return client

        seen_at = r.utcnow()

        if latest:
            self.store.clients.modify_many(latest, merge)

    @staticmethod
    def _check_client_seen(index: int, data: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(data.get("client_id"), str) or not data["client_id"]:
            raise InvalidInput(f"event {index} (client_seen): data.client_id is required")
        if data.get("status") not in ("online", "offline"):
            raise InvalidInput(f"event {index} (client_seen): data.status must be 'online' or 'offline', "
                               f"got {data.get('status')!r}")
        for key in ("name", "ip"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise InvalidInput(f"event {index} (client_seen): data.{key} must be a string, got {data[key]!r}")
        return data

    def _clients_seen(self, combiner_id: str, seen: list[dict[str, Any]]) -> None:
        """Apply a batch's `client_seen` events (in order; a client may appear more than once) in one write."""
        by_client: dict[str, list[dict[str, Any]]] = {}
        for data in seen:
            by_client.setdefault(data["client_id"], []).append(data)

        def apply(client_id: str, record: r.ClientRecord | None) -> r.ClientRecord | None:
            record = record or r.ClientRecord(client_id=client_id, name=default_client_name(client_id))
            applied = [client_seen(record, combiner_id, data) for data in by_client[client_id]]
            return record if any(applied) else None

        if by_client:
            self.store.clients.modify_many(by_client, apply)

    # -- clients ---------------------------------------------------------------------------
    def add_client(self, client_id: str | None, name: str | None, preferred_combiner: str | None,
                   package: str, client_version: str | None, ip: str | None) -> tuple[r.ClientRecord, r.CombinerRecord]:
        """Register (or re-register) a client and assign it a combiner: the preferred one (by name
        or id) when it is online and alive, else the live one with the fewest online clients.

        A preferred combiner this controller never heard of is an InvalidInput (400: a typo must
        not go unnoticed); one that is offline or unreachable is replaced by the least loaded one,
        so that clients keep training through a combiner outage (and re-registering clients move)."""
        with self._assign_lock:
            combiner = None
            if preferred_combiner:
                combiner = self.registry.find(preferred_combiner)
                if combiner is None:
                    known = sorted(c.name for c in self.registry.all())
                    raise InvalidInput(f"preferred combiner {preferred_combiner!r} is not registered with this "
                                       f"controller (registered: {', '.join(known) or 'none'}); fix the name or start "
                                       "the client without --preferred-combiner to get the least loaded combiner")
                if combiner.status != "online" or not self.registry.alive(combiner):
                    log.warning("preferred combiner %s of client %s is offline; assigning the least loaded one",
                                preferred_combiner, client_id or name or "(new)")
                    combiner = None
            combiner = combiner or self.registry.least_loaded()
            if combiner is None:
                raise Unavailable(NO_COMBINER)
            client_id = client_id or r.new_id()
            record = self.store.clients.get(client_id) or r.ClientRecord(client_id=client_id, name="")
            record.name = name or record.name or default_client_name(client_id)
            record.combiner_id = combiner.combiner_id
            record.status = "online"
            record.last_seen = r.utcnow()
            record.package = package or record.package
            record.client_version = client_version
            record.preferred_combiner = preferred_combiner
            record.ip = ip or record.ip
            record = self.store.clients.upsert(record)
        hint = plaintext_hint(client_version)
        if hint:
            log.warning("client %s (%s): %s", client_id, record.name, hint)
        return record, combiner

    # -- models and packages ---------------------------------------------------------------
    def add_model(self, stream: BinaryIO, helper_type: str, name: str | None = None) -> r.ModelRecord:
        """Store a seed model (raw helper bytes, e.g. NPZ, or a container). Validates that the
        helper can load it (InvalidInput otherwise), wraps it in a container with a new id."""
        helper_type = check_helper(helper_type or "numpyhelper")
        limit, setting = models.model_size_limit(self.settings.max_model_bytes, self.settings.max_upload_bytes)
        stored = models.ingest_model(self.repository, stream, helper_type, limit, setting)
        record = self.store.models.add(r.ModelRecord(
            model_id=stored.model_id, name=name, helper_type=stored.helper_type, size=stored.size,
            checksum=stored.checksum))
        self.store.set_setting(ACTIVE_HELPER_SETTING, stored.helper_type)
        log.info("model %s stored (%s, %d bytes)", stored.model_id, stored.helper_type, stored.size)
        return record

    def add_package(self, stream: BinaryIO, file_name: str, name: str, description: str,
                    helper: str, signature: str | None = None) -> r.PackageRecord:
        """Store a compute package archive, validate it (a tar.gz/tgz/tar.bz2 with scaleout.yaml),
        record its SHA-256 (and its Ed25519 signature, if given), and make it the active package."""
        helper = check_helper(helper or "numpyhelper")
        base = PurePosixPath((file_name or "").replace("\\", "/")).name
        extension = next((ext for ext in PACKAGE_EXTENSIONS if base.lower().endswith(ext)), None)
        if extension is None:
            raise InvalidInput(f"package file {file_name!r} must be a {', '.join(PACKAGE_EXTENSIONS)} archive; "
                               "build one with `scaleout package create`")
        with tempfile.TemporaryFile() as tmp:
            models.copy_limited(stream, tmp, self.settings.max_package_bytes, "the package", "max_package_bytes")
            tmp.seek(0)
            check_package_archive(tmp, base)
            tmp.seek(0)
            storage_file_name = r.new_id() + extension
            size, checksum = self.repository.put("packages", storage_file_name, tmp)
        record = self.store.packages.add(r.PackageRecord(
            package_id=r.new_id(), name=name or base, file_name=base, storage_file_name=storage_file_name,
            checksum=checksum, size=size, description=description or "", helper=helper, signature=signature))
        log.info("package %s stored as %s (%d bytes)", base, storage_file_name, size)
        return self.store.packages.set_active(record.package_id)

    # -- sessions --------------------------------------------------------------------------
    def create_session(self, name: str | None, session_config: dict[str, Any],
                       seed_model_id: str | None) -> r.SessionRecord:
        """Validate the config (aggregator known, rounds >= 1, timeouts > 0, model exists...)."""
        if seed_model_id and (session_config or {}).get("model_id") not in (None, seed_model_id):
            raise InvalidInput(f"seed_model_id {seed_model_id!r} and session_config.model_id "
                               f"{session_config['model_id']!r} differ; give one of them")
        config = validate_session_config(session_config, default_helper=active_helper(self.store),
                                         resolve_model=lambda mid: self._resolve_model(mid or seed_model_id))
        session_id = r.new_id()
        record = r.SessionRecord(session_id=session_id, name=name or f"session-{session_id[:8]}",
                                 status=SessionStatus.CREATED, session_config=config.to_dict(),
                                 seed_model_id=config.model_id)
        return self.store.sessions.add(record)

    def _resolve_model(self, model_id: str | None) -> str:
        """The given model (NotFoundError if unknown) or the latest one (InvalidInput if none)."""
        if model_id:
            if self.store.models.get(model_id) is None:
                raise NotFoundError(f"model {model_id!r} not found; list models with `scaleout model list`")
            return model_id
        latest = self.store.models.latest()
        if latest is None:
            raise InvalidInput(NO_MODEL)
        return latest.model_id

    def start_session(self, session_id: str, rounds: int | None = None,
                      round_timeout: float | None = None) -> r.SessionRecord:
        """Start (or continue, from its latest model) a session's rounds in the background.
        Conflict if a session is running."""
        with self._lock:
            session = self._require_session(session_id)
            running = self._running_session_id()
            if running is not None:
                raise Conflict(f"session {running} is running; stop it first")
            config = SessionConfig.from_stored(session.session_config)
            rounds = parse_int("rounds", rounds, 1) if rounds is not None else config.rounds
            timeout = (parse_positive_float("round_timeout", round_timeout) if round_timeout is not None
                       else config.round_timeout)
            if not config.model_id or self.store.models.get(config.model_id) is None:
                raise NotFoundError(f"model {config.model_id!r} of session {session_id} not found; "
                                    "create a new session from an existing model")
            session.status = SessionStatus.RUNNING
            session.error = None
            session.started_at = r.utcnow()
            session.finished_at = None
            session = self.store.sessions.update(session)
            runner = make_runner(self.settings, config, self.store, self.repository, self.registry, self.dispatcher,
                                 session_id, rounds, timeout, on_exit=self._runner_exited)
            self._runner = runner
            runner.start()
        log.info("session %s: started, %d round(s), round_timeout %gs", session_id, rounds, timeout)
        return session

    def _require_session(self, session_id: str) -> r.SessionRecord:
        session = self.store.sessions.get(session_id)
        if session is None:
            raise NotFoundError(f"session {session_id!r} not found; list sessions with `scaleout session list`")
        return session

    def _running_session_id(self) -> str | None:
        runner = self._runner
        if runner is not None and runner.alive:
            return runner.session_id
        _, running = self.store.sessions.list(ListQuery(filters={"status": SessionStatus.RUNNING.value}, limit=1))
        return running[0].session_id if running else None

    def _runner_exited(self, runner: SessionRunner) -> None:
        with self._lock:
            if self._runner is runner:
                self._runner = None

    def stop_session(self, session_id: str | None = None) -> r.SessionRecord:
        """Stop the given (or the running) session: abort its clients' tasks, end as Stopped.
        Returns once the runner has ended (a few seconds at most), not after round_timeout."""
        with self._lock:
            runner = self._runner if self._runner is not None and self._runner.alive else None
            if session_id is None:
                session_id = self._running_session_id()
                if session_id is None:
                    raise Conflict("no session is running")
            session = self._require_session(session_id)
            if runner is not None and runner.session_id != session_id:
                runner = None
            if runner is None and session.status != SessionStatus.RUNNING:
                raise Conflict(f"session {session_id} is not running (status: {session.status})")
        if runner is None:
            # running according to the store, but not in this process: abort and record it
            self.registry.abort_session(session_id, "stopped by the user")
            session.status = SessionStatus.STOPPED
            session.finished_at = r.utcnow()
            return self.store.sessions.update(session)
        runner.stop()
        if not runner.join(ABORT_GRACE + 10):
            log.warning("session %s: runner has not ended yet after the stop request", session_id)
        return self._require_session(session_id)

    def wait_for_session(self, timeout: float | None = None) -> bool:
        """Block until the running session (if any) ends; True when none is running anymore."""
        runner = self._runner
        return True if runner is None else runner.join(timeout)

    # -- ad-hoc tasks ----------------------------------------------------------------------
    def run_command(self, command_type: str, parameters: dict[str, Any], client_ids: list[str] | None,
                    timeout: float, synchronous: bool) -> r.CommandRecord:
        """Send a `Custom_<name>` task to the chosen (default: all online) clients; with
        `synchronous`, wait for their results (or the timeout) before returning."""
        if not command_type or command_type == custom_task_type(""):
            raise InvalidInput("a command needs a name, e.g. `scaleout command run my_command`")
        task_type = custom_task_type(command_type)
        timeout = parse_positive_float("timeout", timeout)
        targets = self.dispatcher.resolve(client_ids)
        record = r.CommandRecord(command_id=r.new_id(), command_type=task_type, parameters=dict(parameters or {}),
                                 client_ids=target_client_ids(targets))
        batch = TaskBatch(task_type=task_type, data={"parameters": record.parameters}, timeout=timeout,
                          batch_id=record.command_id)
        return self._execute(record, batch, targets, synchronous)

    def restart_clients(self, abort_ongoing_tasks: bool) -> r.CommandRecord | None:
        """Ask every connected client to restart itself (`Scaleout_RestartClient`, sent by `package
        set-active --restart-clients`): an official 1.1 client runs `client start` again, which fetches
        the newly active package when it uses --remote-package. Clients that cannot restart themselves
        report FAILED on the returned command. None when no client is connected."""
        try:
            targets = self.dispatcher.resolve(None)
        except InvalidInput:  # nobody connected: nothing to restart
            return None
        parameters = {"abort_ongoing_tasks": bool(abort_ongoing_tasks), "force": False}
        task_type = TaskType.RESTART_CLIENT.value
        record = r.CommandRecord(command_id=r.new_id(), command_type=task_type, parameters=parameters,
                                 client_ids=target_client_ids(targets))
        batch = TaskBatch(task_type=task_type, data={"parameters": parameters}, timeout=RESTART_TIMEOUT,
                          batch_id=record.command_id)
        return self._execute(record, batch, targets, synchronous=False)

    def start_prediction(self, prediction_id: str, model_id: str | None, client_ids: list[str] | None,
                         parameters: dict[str, Any], timeout: float, synchronous: bool) -> r.CommandRecord:
        """Ask clients' predict callbacks to run on a model (default: latest); results are stored
        as PredictionRecords under `prediction_id` (also the id of the returned CommandRecord)."""
        prediction_id = prediction_id or r.new_id()
        if self.store.commands.get(prediction_id) is not None:
            raise Conflict(f"prediction {prediction_id!r} already exists; use a new prediction id")
        model_id = self._resolve_model(model_id)
        timeout = parse_positive_float("timeout", timeout)
        targets = self.dispatcher.resolve(client_ids)
        record = r.CommandRecord(command_id=prediction_id, command_type=TaskType.INFERENCE.value,
                                 parameters={"model_id": model_id, "parameters": dict(parameters or {})},
                                 client_ids=target_client_ids(targets))
        batch = TaskBatch(task_type=TaskType.INFERENCE.value, data={"parameters": dict(parameters or {})},
                          model_id=model_id, timeout=timeout, batch_id=prediction_id)
        return self._execute(record, batch, targets, synchronous)

    def stage_model(self, model_id: str, client_ids: list[str] | None, timeout: float,
                    synchronous: bool) -> r.CommandRecord:
        """Send `Scaleout_StageModel` to the chosen (default: all connected) clients: each downloads the
        model into its local cache (unless there already) and runs its stage callback, so a later
        inference on that model starts without a download."""
        model_id = self._resolve_model(model_id)
        timeout = parse_positive_float("timeout", timeout)
        targets = self.dispatcher.resolve(client_ids)
        record = r.CommandRecord(command_id=r.new_id(), command_type=TaskType.STAGE_MODEL.value,
                                 parameters={"model_id": model_id}, client_ids=target_client_ids(targets))
        batch = TaskBatch(task_type=TaskType.STAGE_MODEL.value, model_id=model_id, timeout=timeout,
                          batch_id=record.command_id)
        return self._execute(record, batch, targets, synchronous)

    def end_command(self, command_id: str, skip: bool) -> dict[str, Any]:
        """`POST /api/v1/commands/{id}/stop|skip`. A running command (custom, inference, validation,
        staging) ends now with the results in hand; its clients still working are told to stop
        (INTERRUPTED). `stop` records it as Stopped, `skip` as Finished (the wait was skipped). The
        id of a session: `stop` stops it; `skip` skips its barrier, the current round's wait for
        updates: the round aggregates the updates in hand now and the session goes on."""
        record = self.store.commands.get(command_id)
        if record is None:
            session_record = self.store.sessions.get(command_id)
            if session_record is not None:
                if skip:
                    if session_record.status != SessionStatus.RUNNING.value:
                        raise Conflict(f"session {command_id} is not running (status: {session_record.status})")
                    self.registry.abort_session(command_id, "round skipped by the user", conclude=True)
                    return {"message": f"Session {command_id}: the current round aggregates the updates in hand "
                                       "now; the session goes on", "correlation_id": command_id,
                            "status": session_record.status}
                session = self.stop_session(command_id)
                return {"message": f"Session {command_id} stopped", "correlation_id": command_id,
                        "status": session.status}
            raise NotFoundError(f"no command or session with id {command_id!r}; list them with "
                                "`scaleout command list` or GET /api/v1/commands/")
        if record.status != "Running":
            raise Conflict(f"command {command_id} is not running (status: {record.status})")
        self._ending[command_id] = "Finished" if skip else "Stopped"
        # every online combiner: the one(s) holding the command's batch end it, the others have nothing to do
        self.registry.abort_session(command_id, "skipped by the user" if skip else "stopped by the user")
        verb = "skipped" if skip else "stopped"
        return {"message": f"Command {command_id} {verb}: its clients still working were told to stop",
                "correlation_id": command_id, "status": self._ending[command_id]}

    def start_validation(self, session_id: str | None, model_id: str, client_ids: list[str] | None,
                         timeout: float, synchronous: bool) -> r.CommandRecord:
        """Ask clients to validate a model; the combiners store the ValidationRecords."""
        model_id = self._resolve_model(model_id)
        if session_id:
            self._require_session(session_id)
        timeout = parse_positive_float("timeout", timeout)
        targets = self.dispatcher.resolve(client_ids)
        record = r.CommandRecord(command_id=r.new_id(), command_type=TaskType.VALIDATION.value,
                                 parameters={"model_id": model_id, "session_id": session_id},
                                 client_ids=target_client_ids(targets))
        batch = TaskBatch(task_type=TaskType.VALIDATION.value, model_id=model_id, session_id=session_id or "",
                          timeout=timeout, batch_id=record.command_id)
        return self._execute(record, batch, targets, synchronous)

    def _execute(self, record: r.CommandRecord, batch: TaskBatch, targets: list[Target],
                 synchronous: bool) -> r.CommandRecord:
        record = self.store.commands.add(record)

        def work() -> r.CommandRecord:
            status, results = "Finished", []
            try:
                results = self.dispatcher.run(batch, targets, stop=self._closing, grace=0.0)
            except Exception:  # recorded on the command
                log.exception("command %s (%s) failed", record.command_id, batch.task_type)
                status = "Failed"
            ended = self._ending.pop(record.command_id, None)
            current = self.store.commands.get(record.command_id) or record
            current.status, current.results = (ended if ended and status == "Finished" else status), results
            return self.store.commands.update(current)

        if synchronous:
            return work()

        def background() -> None:
            try:
                work()
            except Exception:
                log.exception("command %s: could not record its results", record.command_id)
            finally:
                self._task_threads.discard(threading.current_thread())

        thread = threading.Thread(target=background, name=f"task-{record.command_id[:8]}", daemon=True)
        self._task_threads.add(thread)
        thread.start()
        return record

    def status(self) -> dict[str, Any]:
        """`{"state": "idle"|"running", "session_id": ...}` for `/get_controller_status`."""
        session_id = self._running_session_id()
        return {"state": "running" if session_id else "idle", "session_id": session_id}


def plaintext_hint(client_version: str | None) -> str | None:
    """Official 1.0.x clients after 1.0.0 ignore the `grpc_secure: false` this server returns and
    dial the combiner with TLS unless SCALEOUT_GRPC_SECURE=false is set; this combiner speaks
    plaintext gRPC, so such a client fails with a TLS handshake error (WRONG_VERSION_NUMBER)."""
    parts = (client_version or "").strip().split(".")
    if len(parts) < 3 or parts[:2] != ["1", "0"] or parts[2] in ("0", ""):
        return None
    return (f"official client {client_version} uses TLS for gRPC by default, and this combiner is plaintext: "
            "if it fails with a TLS handshake error, start it with SCALEOUT_GRPC_SECURE=false")


def client_seen(record: r.ClientRecord, combiner_id: str, data: dict[str, Any]) -> bool:
    """Apply one `client_seen` event of `combiner_id` to the client's record (status, name, ip, last
    seen now); False when the event does not apply."""
    if data["status"] == "offline" and record.combiner_id not in (None, "", combiner_id):
        # the client has moved to another combiner: this one only noticed that it left (possibly late,
        # after a network partition); its record belongs to the new combiner now
        return False
    record.name = data.get("name") or record.name
    record.status = data["status"]
    record.combiner_id = combiner_id
    record.last_seen = r.utcnow()
    if data.get("ip"):
        record.ip = data["ip"]
    return True


def default_client_name(client_id: str) -> str:
    return f"client-{client_id[:8]}"


def target_client_ids(targets: list[Target]) -> list[str]:
    return [c.client_id for target in targets for c in target.clients]


def check_package_archive(stream: BinaryIO, file_name: str) -> None:
    """A readable tar archive with `scaleout.yaml` at its root or inside its one top folder."""
    try:
        with tarfile.open(fileobj=stream, mode="r:*") as archive:
            names = [PurePosixPath(m.name) for m in archive.getmembers() if m.isfile()]
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(f"package {file_name!r} is not a readable tar archive: {exc}") from None
    for path in names:
        parts = [p for p in path.parts if p not in (".", "")]
        if parts and parts[-1] == PACKAGE_MANIFEST and len(parts) <= 2:
            return
    raise InvalidInput(f"package {file_name!r} has no {PACKAGE_MANIFEST} at its root (or in its top folder); "
                       "create the package from the project folder with `scaleout package create`")
