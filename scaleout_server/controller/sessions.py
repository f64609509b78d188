"""SessionRunner: one session's rounds, run one after the other in a background thread.

Each round is a small state machine (Pending -> Running -> [Validating ->] Finished, or Failed /
Stopped) whose every step is written to the store as it happens. A round goes to every combiner
with selected clients; a combiner lost during the round (its process, host or link gone) is marked
offline and the round is completed from the others' results. When no combiner returned a model and
one was lost, the round is run again, with the clients connected then, as often as its deadline
allows (`ROUND_DEADLINE_FACTOR`): a combiner that restarts twice in a round costs that round time,
not the session. Every attempt and why it ended is recorded in `round_data.attempt_log`.
The round's result (new model, updates, round and session state) is committed in one transaction.
Nothing here polls the database for progress: the combiners' `RunRound` calls block until their
part is done and return a typed outcome, and a stop request interrupts every wait.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scaleout_server.controller import reduce as reducing
from scaleout_server.controller.combiners import ActiveClient, CombinerRegistry, await_all, lost_connection
from scaleout_server.controller.models import MODELS
from scaleout_server.controller.server_functions import ServerFunctionsHooks, single_update_strategy
from scaleout_server.controller.session_config import SessionConfig
from scaleout_server.controller.tasks import Target, TaskBatch, TaskDispatcher
from scaleout_server.repository.base import ModelRepository
from scaleout_server.store import records as r
from scaleout_server.store.base import LeaseLost, Store
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.jsontext import loads_lenient
from scaleoututil.protocol import TASK_SKIPPED, RoundStatus, SessionStatus, TaskStatus, TaskType

log = logging.getLogger(__name__)

CLIENT_POLL_INTERVAL = 0.5
RUN_ROUND_MARGIN = 60.0  # the gRPC deadline of RunRound is round_timeout + this
ABORT_GRACE = 5.0  # after a stop, how long combiners get to return their aborted outcomes
STOPPED_BY_USER = "stopped by the user"
# A round that lost a combiner and got no model is run again until this many round_timeouts after it
# started (the first attempt always gets a whole round_timeout; a re-run gets what is left, up to one)
ROUND_DEADLINE_FACTOR = 2.0
MIN_ATTEMPT_SECONDS = 3.0  # a re-run needs at least this much of the deadline left to be started

# why an attempt ended (`round_data.attempt_log[].cause`)
CAUSE_MODEL = "model"  # at least one combiner returned a model: the round goes on to commit it
CAUSE_LOST = "lost combiner"  # no model, and a combiner's connection was lost during the attempt
CAUSE_NO_CLIENTS = "no clients"  # too few clients connected to start the attempt
CAUSE_NO_UPDATES = "no updates"  # the combiners answered, but no client returned an update in time


class RoundFailed(Exception):
    """The round cannot produce a model; the message is stored on the round and the session."""


class TooFewClients(RoundFailed):
    """Not enough clients connected before the wait's deadline."""


@dataclass
class Attempt:
    """One run of a round's training, as recorded in `round_data.attempt_log`."""

    number: int
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(default_factory=lambda: r.utcnow().isoformat())
    cause: str = ""
    detail: str = ""
    lost_combiners: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"attempt": self.number, "started_at": self.started_at,
                "seconds": round(time.monotonic() - self.started, 3), "cause": self.cause, "detail": self.detail,
                "lost_combiners": self.lost_combiners}


def describe_attempts(log: list[dict[str, Any]]) -> str:
    """`attempt 1 (2.1 s): lost combiner: ...; attempt 2 ...`: what the failed round went through."""
    return "; ".join(f"attempt {a['attempt']} ({a['seconds']:.1f} s): {a['cause']}"
                     + (f": {a['detail']}" if a["detail"] else "") for a in log)


class SessionStopped(Exception):
    """A stop request arrived while the round was in progress."""


@dataclass
class CombinerCall:
    combiner: r.CombinerRecord
    clients: list[ActiveClient]
    future: Any = None
    outcome: pb.RoundOutcome | None = None
    error: str | None = None
    lost: bool = False  # the connection to the combiner was lost during the call


def training_failures(calls: list[CombinerCall]) -> list[str]:
    """`name: error` for each client whose training task FAILED: when every client fails at once
    (e.g. user code that does not run on that client version) this, not the timeout, is the cause."""
    out: list[str] = []
    for call in calls:
        for task in call.outcome.tasks if call.outcome is not None else []:
            if task.status != TaskStatus.FAILED:
                continue
            response = loads_lenient(task.response)
            reason = response.get("error") if isinstance(response, dict) else response
            out.append(f"{task.client_name or task.client_id}: {reason or 'no reason given'}")
    return out


@dataclass
class RoundContext:
    record: r.RoundRecord
    started: float = field(default_factory=time.monotonic)
    uncommitted: list[str] = field(default_factory=list)  # partial models to remove if the round fails


def parse_meta(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except ValueError:
        return {"raw": text}
    return meta if isinstance(meta, dict) else {"value": meta}


def validation_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """round_data.validation from a validation batch's results: a COMPLETED result carries the metrics the
    client sent (None when it sent none); SKIPPED ones name clients that do not validate (not asked)."""
    asked = [x for x in results if x["status"] != TASK_SKIPPED]
    completed = [x for x in asked if x["status"] == TaskStatus.COMPLETED]
    return {
        "clients": len(asked),
        "completed": len(completed),
        "validated": sum(1 for x in completed if x["response"] is not None),
        "skipped": [x["client_name"] or x["client_id"] for x in results if x["status"] == TASK_SKIPPED],
        "errors": [f"{x['client_name'] or x['client_id']}: {x['status']} {x['response'] or ''}".strip()
                   for x in asked if x["status"] != TaskStatus.COMPLETED],
    }


class SessionRunner:
    """Runs `rounds` rounds of one session; `stop()` ends it early as Stopped."""

    def __init__(self, store: Store, repository: ModelRepository, registry: CombinerRegistry,
                 dispatcher: TaskDispatcher, session_id: str, rounds: int, round_timeout: float,
                 on_exit: Callable[[SessionRunner], None] | None = None,
                 hooks: ServerFunctionsHooks | None = None) -> None:
        self.store = store
        self.repository = repository
        self.registry = registry
        self.dispatcher = dispatcher
        self.session_id = session_id
        self.rounds = rounds
        self.round_timeout = round_timeout
        self.on_exit = on_exit
        self.hooks = hooks  # the session's server functions (server_functions.py), if it has any
        self.stop_event = threading.Event()
        self.stop_reason = STOPPED_BY_USER
        # set once the session's final status is written: from then on the runner writes nothing, so
        # the session may be started again even though the thread is still winding down
        self.ended = threading.Event()
        self._grace = ABORT_GRACE
        self._thread = threading.Thread(target=self._run, name=f"session-{session_id[:8]}", daemon=True)

    # -- control ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, reason: str = STOPPED_BY_USER, abort_combiners: bool = True) -> None:
        """Flag the runner and (normally) ask every combiner to interrupt the session's tasks;
        returns at once. The round in progress and the session end as Stopped."""
        if self.stop_event.is_set():
            return
        self.stop_reason = reason
        if not abort_combiners:
            self._grace = 0.0  # nobody will make the combiners return early: stop waiting now
        self.stop_event.set()
        log.info("session %s: stop requested (%s)", self.session_id, reason)
        if not abort_combiners:
            return
        try:
            self.registry.abort_session(self.session_id, reason)
        except Exception:
            log.exception("session %s: asking the combiners to abort failed", self.session_id)

    def join(self, timeout: float | None = None) -> bool:
        """True when the runner has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        """Still running the session (its final status not yet written)."""
        return self._thread.is_alive() and not self.ended.is_set()

    # -- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        current: RoundContext | None = None
        try:
            for _ in range(self.rounds):
                if self.stop_event.is_set():
                    raise SessionStopped()
                current = None
                current = self._start_round()
                self._run_round(current)
            self._end_session(SessionStatus.FINISHED, None)
            log.info("session %s: finished %d round(s)", self.session_id, self.rounds)
        except SessionStopped:
            self._stopped(current)
            log.info("session %s: stopped", self.session_id)
        except RoundFailed as exc:
            self._fail(current, str(exc))
        except Exception as exc:  # the thread must record, not vanish
            round_no = current.record.round_number if current else "-"
            log.exception("session %s round %s: unexpected error", self.session_id, round_no)
            self._fail(current, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if self.hooks is not None:
                self.hooks.close()
            if self.on_exit is not None:
                try:
                    self.on_exit(self)
                except Exception:
                    log.exception("session %s: exit callback failed", self.session_id)

    def _fail(self, current: RoundContext | None, message: str) -> None:
        if self.stop_event.is_set():  # a failure caused by the stop itself is a stop
            self._stopped(current)
            return
        log.error("session %s round %s failed: %s", self.session_id,
                  current.record.round_number if current else "-", message)
        self._end_round(current, RoundStatus.FAILED, message)
        self._end_session(SessionStatus.FAILED, message)

    def _stopped(self, current: RoundContext | None) -> None:
        self._end_round(current, RoundStatus.STOPPED, self.stop_reason)
        self._end_session(SessionStatus.STOPPED, None if self.stop_reason == STOPPED_BY_USER else self.stop_reason)

    def _session(self) -> r.SessionRecord:
        return self.store.sessions.require(self.session_id)

    def _end_session(self, status: str, error: str | None) -> None:
        try:
            session = self._session()
            session.status = status
            session.error = error
            session.finished_at = r.utcnow()
            self.store.sessions.update(session)
        except LeaseLost as exc:  # another controller carries on with the session
            log.warning("session %s: status %s not recorded: %s", self.session_id, status, exc)
        except Exception:
            log.exception("session %s: could not record status %s", self.session_id, status)
        finally:
            self.ended.set()

    def _end_round(self, current: RoundContext | None, status: str, error: str | None) -> None:
        if current is None:
            return
        for model_id in current.uncommitted:
            self._delete_model(model_id)
        try:
            record = self.store.rounds.get(current.record.round_id) or current.record
            if record.status in (RoundStatus.FINISHED, RoundStatus.FAILED, RoundStatus.STOPPED):
                return
            record.status = status
            record.error = error
            record.finished_at = r.utcnow()
            record.round_data = {**record.round_data, **current.record.round_data,
                                 "duration": time.monotonic() - current.started}
            record.combiners = current.record.combiners or record.combiners
            self.store.rounds.update(record)
        except LeaseLost as exc:
            log.warning("session %s round %d: status %s not recorded: %s", self.session_id,
                        current.record.round_number, status, exc)
        except Exception:
            log.exception("session %s round %d: could not record status %s", self.session_id,
                          current.record.round_number, status)

    def _delete_model(self, model_id: str) -> None:
        try:
            self.repository.delete(MODELS, model_id)
        except Exception:
            log.exception("session %s: could not delete partial model %s", self.session_id, model_id)

    # -- one round -------------------------------------------------------------------------
    def _start_round(self) -> RoundContext:
        session = self._session()
        config = SessionConfig.from_stored(session.session_config)
        number = self.store.rounds.count({"session_id": self.session_id}) + 1
        round_config = {**config.to_dict(), "round_timeout": self.round_timeout}
        if config.server_functions:  # a digest, not the code, in every round
            round_config["server_functions"] = self.hooks.describe() if self.hooks is not None else "(not run)"
        record = r.RoundRecord(
            round_id=r.new_id(), session_id=self.session_id, round_number=number, status=RoundStatus.PENDING,
            model_id=config.model_id, round_config=round_config, started_at=r.utcnow())
        self.store.rounds.add(record)
        current = RoundContext(record)
        record.status = RoundStatus.RUNNING
        current.record = self.store.rounds.update(record)
        log.info("session %s round %d (%s): running from model %s", self.session_id, number, record.round_id,
                 config.model_id)
        return current

    def _run_round(self, current: RoundContext) -> None:
        record = current.record
        config = SessionConfig.from_stored(record.round_config)
        data = record.round_data
        calls, partials = self._train(current, config)

        t = time.monotonic()
        reduced = None if self.hooks is None else self.hooks.reduce(
            record, config, [c.outcome for c in calls if c.outcome is not None], partials)
        if reduced is None:
            reduced = reducing.reduce_partials(self.repository, partials, config.helper_type)
        current.uncommitted = list(dict.fromkeys([*current.uncommitted, reduced.model.model_id]))
        data["time_reduce"] = time.monotonic() - t
        if self.stop_event.is_set():
            raise SessionStopped()

        t = time.monotonic()
        self._commit(current, config, calls, reduced)
        current.uncommitted = []
        for model_id in reduced.partials_to_delete:
            if model_id != reduced.model.model_id:
                self._delete_model(model_id)
        data["time_commit"] = time.monotonic() - t

        t = time.monotonic()
        if config.validate:
            data["validation"] = self._validate(record, reduced.model.model_id, config)
        data["time_validation"] = time.monotonic() - t
        if self.stop_event.is_set():
            raise SessionStopped()

        record = self.store.rounds.require(record.round_id)
        record.round_data = {**data, "duration": time.monotonic() - current.started}
        record.status = RoundStatus.FINISHED
        record.finished_at = r.utcnow()
        current.record = self.store.rounds.update(record)
        log.info("session %s round %d: finished, new global model %s", self.session_id, record.round_number,
                 reduced.model.model_id)

    def _train(self, current: RoundContext, config: SessionConfig
               ) -> tuple[list[CombinerCall], list[reducing.PartialModel]]:
        """Run the round's training until a combiner returns a model. An attempt that lost a combiner
        and got no model is run again with the clients connected then, while the round's deadline
        leaves time; anything else without a model fails the round with what happened."""
        record = current.record
        data = record.round_data
        deadline = current.started + ROUND_DEADLINE_FACTOR * self.round_timeout
        log_: list[dict[str, Any]] = []
        lost: list[str] = []
        while True:
            attempt = Attempt(len(log_) + 1)
            first = attempt.number == 1
            t = time.monotonic()
            try:
                # the first attempt waits a whole round_timeout for clients (as a round always did); a
                # re-run waits for the lost clients (or others) to come back until the round's deadline
                idle = self._wait_for_clients(config.clients_required, None if first else deadline)
            except TooFewClients as exc:
                if first:
                    raise
                attempt.cause, attempt.detail = CAUSE_NO_CLIENTS, str(exc)
                self._record_attempts(data, log_ + [attempt.as_dict()], lost)
                raise RoundFailed(f"the round lost its combiner(s) and could not be run again: "
                                  f"{describe_attempts(data['attempt_log'])}") from None
            data["time_wait_clients"] = time.monotonic() - t
            timeout = self.round_timeout if first else min(self.round_timeout, deadline - time.monotonic())

            # never fewer than clients_required, even when requested_clients is set lower
            wanted = max(config.requested_clients, config.clients_required)
            chosen = self.hooks.select(record, idle) if self.hooks is not None else None
            selected = chosen if chosen is not None else random.sample(idle, min(wanted, len(idle)))
            data["clients_selected"] = len(selected)
            t = time.monotonic()
            calls = self._run_on_combiners(record, config, selected, timeout)
            data["time_training"] = time.monotonic() - t
            record.combiners = [self._combiner_entry(call) for call in calls]
            partials = [reducing.PartialModel(call.combiner.name, call.outcome.model_id, call.outcome.num_examples)
                        for call in calls if call.outcome is not None and call.outcome.model_id]
            current.uncommitted = [p.model_id for p in partials]
            if self.stop_event.is_set():
                raise SessionStopped()
            attempt.lost_combiners = [call.combiner.name for call in calls if call.lost]
            lost += attempt.lost_combiners
            if partials:
                attempt.cause = CAUSE_MODEL
                attempt.detail = (f"combiner(s) {', '.join(attempt.lost_combiners)} lost; the round goes on with "
                                  "the others' models" if attempt.lost_combiners else "")
            elif attempt.lost_combiners:
                attempt.cause = CAUSE_LOST
                attempt.detail = "; ".join(c.error or f"combiner {c.combiner.name} lost" for c in calls if c.lost)
            else:
                attempt.cause = CAUSE_NO_UPDATES
                attempt.detail = self._no_updates(calls, timeout)
            log_.append(attempt.as_dict())
            self._record_attempts(data, log_, lost)
            if partials:
                return calls, partials
            if attempt.cause == CAUSE_NO_UPDATES:
                raise RoundFailed(attempt.detail if first else
                                  f"no model after {len(log_)} attempts: {describe_attempts(log_)}")
            left = deadline - time.monotonic()
            if left < MIN_ATTEMPT_SECONDS:
                raise RoundFailed(f"the round's deadline ({ROUND_DEADLINE_FACTOR:g} x round_timeout = "
                                  f"{ROUND_DEADLINE_FACTOR * self.round_timeout:g}s after it started) left no "
                                  f"time for another attempt: {describe_attempts(log_)}")
            self._store_progress(current)
            log.warning("session %s round %d: attempt %d got no model and lost combiner(s) %s; running the round "
                        "again with the clients connected now (%.0f s left before its deadline)", self.session_id,
                        record.round_number, attempt.number, ", ".join(attempt.lost_combiners), left)

    @staticmethod
    def _record_attempts(data: dict[str, Any], attempts: list[dict[str, Any]], lost: list[str]) -> None:
        data["attempts"] = len(attempts)
        data["attempt_log"] = list(attempts)
        if lost:
            data["lost_combiners"] = list(lost)

    def _store_progress(self, current: RoundContext) -> None:
        """Write the round's attempts so far (it stays Running): `round show` tells why it takes long."""
        try:
            stored = self.store.rounds.require(current.record.round_id)
            stored.round_data = {**stored.round_data, **current.record.round_data}
            stored.combiners = current.record.combiners
            self.store.rounds.update(stored)
        except Exception:  # progress only: the round's end writes everything again
            log.exception("session %s round %d: could not record the attempt", self.session_id,
                          current.record.round_number)

    def _no_updates(self, calls: list[CombinerCall], timeout: float) -> str:
        errors = [c.error for c in calls if c.error]
        failures = training_failures(calls)
        if failures:
            errors.append(f"training failed on {len(failures)} client(s): " + "; ".join(failures[:5])
                          + (" ..." if len(failures) > 5 else ""))
        return (f"no client returned a model update within round_timeout ({timeout:g}s)"
                + "".join(f"; {e}" for e in errors))

    def _wait_for_clients(self, required: int, deadline: float | None = None) -> list[ActiveClient]:
        """Idle clients across all combiners, once at least `required` of them are connected; waits
        until `deadline` (monotonic), by default a round_timeout from now."""
        limit = f"within round_timeout ({self.round_timeout:g}s)" if deadline is None else "by the round's deadline"
        deadline = time.monotonic() + self.round_timeout if deadline is None else deadline
        idle: list[ActiveClient] = []
        combiners_seen = 0
        while True:
            active = self.registry.active_clients()
            combiners_seen = len(active)
            idle = [c for clients in active.values() for c in clients if not c.busy]
            if len(idle) >= required:
                return idle
            if time.monotonic() >= deadline:
                break
            if self.stop_event.wait(CLIENT_POLL_INTERVAL):
                raise SessionStopped()
        hint = "" if combiners_seen else "; no combiner answered"
        raise TooFewClients(f"only {len(idle)} of the {required} required clients connected {limit}{hint}")

    def _run_on_combiners(self, record: r.RoundRecord, config: SessionConfig,
                          selected: list[ActiveClient], timeout: float) -> list[CombinerCall]:
        # server functions may add client settings (for all, and per client), and need each client's update
        # on its own to aggregate
        ids = [c.client_id for c in selected]
        settings = self.hooks.client_settings(record, config.helper_type, ids) if self.hooks is not None else {}
        own = self.hooks.settings_by_client(record, config.helper_type, ids) if self.hooks is not None else {}
        per_client = self.hooks is not None and self.hooks.collects_updates(record)
        aggregator, kwargs = (single_update_strategy(config.aggregator, config.aggregator_kwargs) if per_client
                              else (config.aggregator, config.aggregator_kwargs))
        by_combiner: dict[str, list[ActiveClient]] = {}
        for client in selected:
            by_combiner.setdefault(client.client_id if per_client else client.combiner_id, []).append(client)
        calls: list[CombinerCall] = []
        for clients in by_combiner.values():
            call = CombinerCall(self.registry.get(clients[0].combiner_id), clients)
            buffer_size = config.buffer_size if config.buffer_size < 0 else min(config.buffer_size, len(clients))
            by_client = {c.client_id: own[c.client_id] for c in clients if c.client_id in own}
            spec = pb.RoundSpec(
                session_id=self.session_id, round_id=record.round_id, model_id=record.model_id or "",
                helper_type=config.helper_type, client_ids=[c.client_id for c in clients],
                aggregator=aggregator, aggregator_kwargs=json.dumps(kwargs),
                round_timeout=timeout, buffer_size=buffer_size, client_settings=json.dumps(settings),
                delete_models=config.delete_models_storage,
                client_settings_by_client=json.dumps(by_client) if by_client else "")
            try:
                call.future = self.registry.stub(call.combiner).RunRound.future(
                    spec, timeout=timeout + RUN_ROUND_MARGIN)
            except Exception as exc:  # recorded on the round
                call.error = self.registry.call_failed(call.combiner, "RunRound", exc)
            calls.append(call)
        log.info("session %s round %d: training on %d client(s) via %d combiner(s)", self.session_id,
                 record.round_number, len(selected), len(calls))
        await_all([c.future for c in calls if c.future is not None], self.stop_event, grace=lambda: self._grace)
        for call in calls:
            if call.future is None:
                continue
            try:
                call.outcome = call.future.result()
            except Exception as exc:  # one combiner failing does not end the round
                call.error = self.registry.call_failed(call.combiner, "RunRound", exc)
                if lost_connection(exc) and not self.stop_event.is_set():
                    call.lost = True
                    self.registry.mark_offline(call.combiner.combiner_id, f"lost during round {record.round_number} "
                                               f"of session {self.session_id}; the round goes on without it")
                continue
            self.registry.heard_from(call.combiner.combiner_id)
            if call.outcome.error:
                call.error = call.outcome.error
                log.warning("session %s round %d: combiner %s reported: %s", self.session_id, record.round_number,
                            call.combiner.name, call.outcome.error)
        return calls

    @staticmethod
    def _combiner_entry(call: CombinerCall) -> dict[str, Any]:
        outcome = call.outcome
        return {
            "combiner_id": call.combiner.combiner_id,
            "name": call.combiner.name,
            "clients": len(call.clients),
            "model_id": (outcome.model_id or None) if outcome else None,
            "num_examples": outcome.num_examples if outcome else 0.0,
            "updates_received": len(outcome.updates) if outcome else 0,
            "updates_expected": outcome.updates_expected if outcome else len(call.clients),
            # exactly the updates folded into this combiner's model (the store may hold more for the round:
            # updates reported by a combiner that was lost before it concluded)
            "update_ids": [u.model_update_id for u in outcome.updates] if outcome else [],
            "time_wait": outcome.time_wait if outcome else None,
            "time_aggregation": outcome.time_aggregation if outcome else None,
            "aborted": bool(outcome.aborted) if outcome else False,
            "error": call.error,
            # every selected client's task result: why a client did not contribute is in its response
            "tasks": [{"client_id": t.client_id, "client_name": t.client_name, "status": t.status,
                       "response": loads_lenient(t.response)} for t in (outcome.tasks if outcome else [])],
        }

    def _commit(self, current: RoundContext, config: SessionConfig, calls: list[CombinerCall],
                reduced: reducing.Reduced) -> None:
        record = current.record
        model = r.ModelRecord(
            model_id=reduced.model.model_id, parent_model=record.model_id, session_id=self.session_id,
            round_id=record.round_id, helper_type=config.helper_type, size=reduced.model.size,
            checksum=reduced.model.checksum)
        updates: dict[str, r.UpdateRecord] = {}  # keyed by id: a combiner reporting an update twice is harmless
        for call in calls:
            for info in call.outcome.updates if call.outcome is not None else []:
                update = r.UpdateRecord(
                    update_id=info.model_update_id or r.new_id(), round_id=record.round_id,
                    session_id=self.session_id, client_id=info.client_id, model_id=record.model_id,
                    correlation_id=info.correlation_id or None, num_examples=info.num_examples,
                    meta=parse_meta(info.meta))
                updates[update.update_id] = update
        record.new_model_id = model.model_id
        record.status = RoundStatus.VALIDATING if config.validate else RoundStatus.FINISHED
        if not config.validate:
            record.finished_at = r.utcnow()
        session = self._session()
        session.session_config = {**session.session_config, "model_id": model.model_id}
        self.store.commit_round(record, model, list(updates.values()), session)

    def _validate(self, record: r.RoundRecord, model_id: str, config: SessionConfig) -> dict[str, Any]:
        """Every connected client that validates gets the new model to validate; the combiners store the
        results. Stored as round_data.validation: clients asked, completed, validated (sent metrics),
        skipped (names of clients that do not validate: not asked), errors."""
        active = self.registry.active_clients()
        targets = [Target(self.registry.get(cid), clients) for cid, clients in active.items() if clients]
        if not targets:
            return {"clients": 0, "completed": 0, "validated": 0, "skipped": [],
                    "errors": ["no client connected for validation"]}
        batch = TaskBatch(task_type=TaskType.VALIDATION.value, model_id=model_id, session_id=self.session_id,
                          round_id=record.round_id, timeout=self.round_timeout, batch_id=record.round_id)
        results = self.dispatcher.run(batch, targets, stop=self.stop_event, grace=lambda: self._grace)
        return validation_summary(results)
