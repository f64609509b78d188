"""Buffered asynchronous sessions (FedBuff): training without round barriers.

`session_config.mode = "async"`. The controller drives it, with the same `Control.RunRound` call the
synchronous rounds use, sent for one client at a time: a client's call returns as soon as that client
delivered its update (the combiner hands it back, stored, as the call's model), and the client is at
once given a new training task on the current global model. Every `buffer_size` updates the controller
takes one FedBuff step (`fedbuff.py`: each update's change relative to the model it was trained from,
weighted by num_examples / (1 + staleness) ** staleness_exponent) and commits the result as the next
global model, with its own round record. The session ends after `rounds` such aggregations (or a stop).

Why the controller and not the combiner: staleness is a property of the global model sequence, which
spans every combiner; a combiner only ever sees its own clients. The combiners need no new mode: one
RunRound per client task reuses their queueing, upload intake, abort and event feed unchanged, at the
cost of one copy of each update in the model repository (removed after aggregation unless the session
keeps client updates: `delete_models_storage: false`).

Clients: at the start those connected and idle (at least `clients_required`, at most
`requested_clients`); clients that connect later join within a few seconds, up to `requested_clients`.
A client whose task fails is retried after a pause and left out after `MAX_FAILURES` failures in a row;
one that disconnects is forgotten until it is seen again.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaleout_server.controller.combiners import ActiveClient, lost_connection
from scaleout_server.controller.fedbuff import BufferedUpdate, buffered_step, staleness_weight
from scaleout_server.controller.server_functions import single_update_strategy
from scaleout_server.controller.session_config import SessionConfig
from scaleout_server.controller.sessions import (
    RUN_ROUND_MARGIN,
    RoundContext,
    RoundFailed,
    SessionRunner,
    SessionStopped,
    parse_meta,
)
from scaleout_server.store import records as r
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.jsontext import loads_lenient
from scaleoututil.protocol import RoundStatus, SessionStatus, TaskStatus

log = logging.getLogger(__name__)

ASYNC_MODE = "async"
MAX_FAILURES = 3  # a client whose tasks fail this many times in a row is left out of the session
RETRY_PAUSE = 1.0  # seconds before a client whose task failed gets the next one
DISCOVER_INTERVAL = 2.0  # how often newly connected clients are looked for
WAIT_STEP = 0.2
MAX_NOTES = 20  # failures listed on a round record
FINISHED_REASON = "the asynchronous session has its aggregations"


@dataclass
class Job:
    """One client's training task: a RunRound for that client alone."""

    client: ActiveClient
    combiner: r.CombinerRecord
    base_version: int
    base_model_id: str
    future: Any = None
    outcome: pb.RoundOutcome | None = None
    error: str | None = None
    lost: bool = False


@dataclass
class Contribution:
    """A delivered update waiting in the buffer."""

    job: Job
    info: pb.UpdateInfo
    model_id: str  # the update as stored by the combiner

    @property
    def client_id(self) -> str:
        return self.job.client.client_id


@dataclass
class AsyncState:
    version: int = 0  # global models committed by this run
    global_model: str = ""
    buffer: list[Contribution] = field(default_factory=list)
    jobs: dict[str, Job] = field(default_factory=dict)  # in flight, by client id
    failures: dict[str, int] = field(default_factory=dict)  # failures in a row, by client id
    retry_at: dict[str, float] = field(default_factory=dict)  # client id -> when to give it a task again
    retry_clients: dict[str, ActiveClient] = field(default_factory=dict)
    left_out: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)  # failures since the last aggregation


class AsyncSessionRunner(SessionRunner):
    """Runs a session in buffered asynchronous mode; same life cycle (start, stop, join) as SessionRunner."""

    def __init__(self, *args: Any, work_dir: Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.work_dir = work_dir
        self._done: queue.Queue[Job] = queue.Queue()
        self._state = AsyncState()
        self._current: RoundContext | None = None
        self._config = SessionConfig()
        self._wanted = 1

    # -- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            try:
                self._run_async()
            finally:
                self._wind_down()
            self._end_session(SessionStatus.FINISHED, None)
            log.info("session %s: finished %d asynchronous aggregation(s)", self.session_id, self.rounds)
        except SessionStopped:
            self._stopped(self._current)
            log.info("session %s: stopped", self.session_id)
        except RoundFailed as exc:
            self._fail(self._current, str(exc))
        except Exception as exc:  # the thread must record, not vanish
            log.exception("session %s: unexpected error in the asynchronous session", self.session_id)
            self._fail(self._current, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if self.work_dir is not None:
                shutil.rmtree(self.work_dir, ignore_errors=True)  # only scratch copies of models
            if self.on_exit is not None:
                try:
                    self.on_exit(self)
                except Exception:
                    log.exception("session %s: exit callback failed", self.session_id)

    def _run_async(self) -> None:
        config = self._config = SessionConfig.from_stored(self._session().session_config)
        state = self._state
        state.global_model = config.model_id or ""
        self._current = self._start_round()
        t = time.monotonic()
        idle = self._wait_for_clients(config.clients_required)
        self._wanted = max(config.requested_clients, config.clients_required)
        starters = random.sample(idle, min(self._wanted, len(idle)))
        buffer_size = config.buffer_size if config.buffer_size > 0 else len(starters)
        self._current.record.round_data["time_wait_clients"] = time.monotonic() - t
        log.info("session %s: asynchronous, %d client(s) to start with, aggregating every %d update(s), "
                 "%d aggregation(s)", self.session_id, len(starters), buffer_size, self.rounds)
        for client in starters:
            self._launch(client)

        aggregations = 0
        last_progress = time.monotonic()
        next_discovery = time.monotonic() + DISCOVER_INTERVAL
        while True:
            if self.stop_event.is_set():
                raise SessionStopped()
            try:
                job: Job | None = self._done.get(timeout=WAIT_STEP)
            except queue.Empty:
                job = None
            if job is not None:
                contribution = self._collect(job)
                if contribution is not None:
                    state.buffer.append(contribution)
                    last_progress = time.monotonic()
                if len(state.buffer) >= buffer_size:
                    aggregations += 1
                    self._aggregate(state.buffer[:buffer_size], buffer_size, last=aggregations >= self.rounds)
                    del state.buffer[:buffer_size]
                    if aggregations >= self.rounds:
                        break
                    self._current = self._start_round()
                if contribution is not None:
                    self._launch(job.client)  # straight back to work, on the newest global model
            self._retry_due()
            if time.monotonic() >= next_discovery:
                next_discovery = time.monotonic() + DISCOVER_INTERVAL
                self._discover()
            if time.monotonic() - last_progress > self.round_timeout + RUN_ROUND_MARGIN:
                raise RoundFailed(f"no client delivered an update for {self.round_timeout + RUN_ROUND_MARGIN:g}s "
                                  f"(round_timeout + {RUN_ROUND_MARGIN:g}s)" + self._recent_failures())
            if not state.jobs and not state.retry_at and time.monotonic() - last_progress > self.round_timeout:
                raise RoundFailed(f"no client left to train within round_timeout ({self.round_timeout:g}s)"
                                  + self._recent_failures())

        self._wind_down()
        self._finish_last_round()

    # -- tasks -----------------------------------------------------------------------------
    def _launch(self, client: ActiveClient) -> None:
        """Give `client` a training task on the current global model (one RunRound for it alone)."""
        state, config = self._state, self._config
        assert self._current is not None
        state.retry_at.pop(client.client_id, None)
        state.retry_clients.pop(client.client_id, None)
        try:
            combiner = self.registry.get(client.combiner_id)
        except Exception:  # the combiner was forgotten meanwhile: the client is rediscovered if it comes back
            return
        aggregator, kwargs = single_update_strategy(config.aggregator, config.aggregator_kwargs)
        spec = pb.RoundSpec(
            session_id=self.session_id, round_id=self._current.record.round_id, model_id=state.global_model,
            helper_type=config.helper_type, client_ids=[client.client_id], aggregator=aggregator,
            aggregator_kwargs=json.dumps(kwargs), round_timeout=self.round_timeout, buffer_size=1,
            client_settings="{}", delete_models=True)
        job = Job(client, combiner, state.version, state.global_model)
        state.jobs[client.client_id] = job
        try:
            job.future = self.registry.stub(combiner).RunRound.future(spec, timeout=self.round_timeout
                                                                      + RUN_ROUND_MARGIN)
        except Exception as exc:  # handled like a failed task
            job.error = self.registry.call_failed(combiner, "RunRound", exc)
            self._done.put(job)
            return
        job.future.add_done_callback(lambda _future, done=job: self._done.put(done))

    def _result(self, job: Job) -> None:
        """Fill in the job's outcome (or error) from its finished call."""
        if job.future is None or job.outcome is not None:
            return
        try:
            job.outcome = job.future.result()
        except Exception as exc:
            job.error = self.registry.call_failed(job.combiner, "RunRound", exc)
            if lost_connection(exc) and not self.stop_event.is_set():
                job.lost = True
                self.registry.mark_offline(job.combiner.combiner_id,
                                           f"lost during asynchronous session {self.session_id}")
            return
        self.registry.heard_from(job.combiner.combiner_id)

    def _collect(self, job: Job) -> Contribution | None:
        """A finished task: its update for the buffer, or None (then the client is retried or dropped)."""
        state = self._state
        cid = job.client.client_id
        if state.jobs.get(cid) is job:
            del state.jobs[cid]
        self._result(job)
        outcome = job.outcome
        if outcome is not None and outcome.model_id and outcome.updates:
            state.failures[cid] = 0
            return Contribution(job, outcome.updates[0], outcome.model_id)
        if outcome is not None and outcome.model_id:  # a model without an update report: nothing to weigh
            self._delete_model(outcome.model_id)
        reason = self._failure_reason(job)
        name = job.client.name or cid
        if job.lost or not_connected(outcome):
            self._note(f"{name}: {reason}; it rejoins when it is connected again")
            return None
        state.failures[cid] = state.failures.get(cid, 0) + 1
        if state.failures[cid] >= MAX_FAILURES:
            state.left_out.add(cid)
            self._note(f"{name}: {reason}; left out after {MAX_FAILURES} failed tasks in a row")
            log.warning("session %s: client %s left out after %d failed tasks: %s", self.session_id, name,
                        MAX_FAILURES, reason)
        else:
            self._note(f"{name}: {reason}; retrying")
            state.retry_at[cid] = time.monotonic() + RETRY_PAUSE
            state.retry_clients[cid] = job.client
        return None

    def _retry_due(self) -> None:
        now = time.monotonic()
        for cid, at in list(self._state.retry_at.items()):
            if at <= now and not self.stop_event.is_set():
                self._launch(self._state.retry_clients[cid])

    def _discover(self) -> None:
        """Clients that connected (or came back) since: give them work, up to requested_clients."""
        state = self._state
        busy_with_us = set(state.jobs) | set(state.retry_at)
        if len(busy_with_us) >= self._wanted:
            return
        try:
            active = self.registry.active_clients()
        except Exception:
            log.exception("session %s: looking for new clients failed", self.session_id)
            return
        for clients in active.values():
            for client in clients:
                if len(busy_with_us) >= self._wanted:
                    return
                if client.busy or client.client_id in busy_with_us or client.client_id in state.left_out:
                    continue
                log.info("session %s: client %s joins the asynchronous session", self.session_id,
                         client.name or client.client_id)
                self._launch(client)
                busy_with_us.add(client.client_id)

    @staticmethod
    def _failure_reason(job: Job) -> str:
        if job.error:
            return job.error
        outcome = job.outcome
        if outcome is None:
            return "no outcome"
        for task in outcome.tasks:
            if task.status != TaskStatus.COMPLETED:
                response = loads_lenient(task.response)
                reason = response.get("error") if isinstance(response, dict) else response
                return f"task {task.status}" + (f": {reason}" if reason else "")
        return outcome.error or "no update arrived"

    def _note(self, text: str) -> None:
        notes = self._state.notes
        notes.append(text)
        del notes[:-MAX_NOTES]

    def _recent_failures(self) -> str:
        notes = self._state.notes[-5:]
        return ("; recent failures: " + "; ".join(notes)) if notes else ""

    # -- aggregation -----------------------------------------------------------------------
    def _aggregate(self, contributions: list[Contribution], buffer_size: int, last: bool) -> None:
        """One FedBuff step from the buffered updates, committed as the next global model."""
        state, config = self._state, self._config
        assert self._current is not None
        current = self._current
        record = current.record
        t = time.monotonic()
        items = [BufferedUpdate(c.model_id, c.job.base_model_id, c.info.num_examples,
                                state.version - c.job.base_version) for c in contributions]
        try:
            stored = buffered_step(self.repository, config.helper_type, state.global_model, items,
                                   config.staleness_exponent, work_dir=self.work_dir)
        except ValueError as exc:  # e.g. updates whose arrays do not match the global model
            raise RoundFailed(f"aggregating the buffered updates failed: {exc}") from exc
        current.uncommitted = [stored.model_id]
        time_aggregation = time.monotonic() - t

        entries = []
        for c, item in zip(contributions, items, strict=True):
            entries.append({
                "client_id": c.client_id, "client_name": c.info.client_name or c.job.client.name,
                "combiner": c.job.combiner.name, "update_id": c.info.model_update_id, "stored_update": c.model_id,
                "base_model_id": item.base_model_id, "staleness": item.staleness,
                "num_examples": item.num_examples,
                "weight": staleness_weight(item.num_examples, item.staleness, config.staleness_exponent)})
        by_combiner: dict[str, dict[str, Any]] = {}
        for c in contributions:
            entry = by_combiner.setdefault(c.job.combiner.combiner_id, {
                "combiner_id": c.job.combiner.combiner_id, "name": c.job.combiner.name, "clients": 0,
                "updates_received": 0, "updates_expected": 0, "num_examples": 0.0, "error": None})
            entry["updates_received"] += 1
            entry["updates_expected"] += 1
            entry["num_examples"] += c.info.num_examples
        for entry in by_combiner.values():
            entry["clients"] = len({c.client_id for c in contributions
                                    if c.job.combiner.combiner_id == entry["combiner_id"]})

        model = r.ModelRecord(model_id=stored.model_id, parent_model=state.global_model, session_id=self.session_id,
                              round_id=record.round_id, helper_type=config.helper_type, size=stored.size,
                              checksum=stored.checksum)
        updates = {}
        for c in contributions:
            update = r.UpdateRecord(
                update_id=c.info.model_update_id or r.new_id(), round_id=record.round_id, session_id=self.session_id,
                client_id=c.client_id, model_id=c.job.base_model_id, correlation_id=c.info.correlation_id or None,
                num_examples=c.info.num_examples, meta=parse_meta(c.info.meta))
            updates[update.update_id] = update
        record.new_model_id = stored.model_id
        record.combiners = list(by_combiner.values())
        record.round_data = {
            **record.round_data, "mode": ASYNC_MODE, "version": state.version + 1, "buffer_size": buffer_size,
            "staleness_exponent": config.staleness_exponent, "updates_received": len(contributions),
            "updates_expected": buffer_size, "contributions": entries, "time_aggregation": time_aggregation,
            "failures": list(state.notes), "duration": time.monotonic() - current.started}
        validating = last and config.validate  # the final model is validated once training has stopped
        record.status = RoundStatus.VALIDATING if validating else RoundStatus.FINISHED
        if not validating:
            record.finished_at = r.utcnow()
        session = self._session()
        session.session_config = {**session.session_config, "model_id": stored.model_id}
        self.store.commit_round(record, model, list(updates.values()), session)
        current.uncommitted = []
        state.notes = []
        if config.delete_models_storage:
            for c in contributions:
                self._delete_model(c.model_id)
        log.info("session %s: aggregation %d (round %d) -> global model %s from %d update(s), staleness %s",
                 self.session_id, state.version + 1, record.round_number, stored.model_id, len(items),
                 [i.staleness for i in items])
        state.version += 1
        state.global_model = stored.model_id

    def _finish_last_round(self) -> None:
        """Validate the final model (when the session validates), once every training task has stopped."""
        current, config = self._current, self._config
        if current is None or not config.validate:
            return
        record = self.store.rounds.require(current.record.round_id)
        t = time.monotonic()
        validation = self._validate(record, self._state.global_model, config)
        if self.stop_event.is_set():
            raise SessionStopped()
        record = self.store.rounds.require(record.round_id)
        record.round_data = {**record.round_data, "validation": validation, "time_validation": time.monotonic() - t}
        record.status = RoundStatus.FINISHED
        record.finished_at = r.utcnow()
        current.record = self.store.rounds.update(record)

    # -- the end ---------------------------------------------------------------------------
    def _wind_down(self) -> None:
        """Stop the training tasks still running (their updates are not needed any more) and remove every
        stored update that was not aggregated. Safe to call twice."""
        state = self._state
        if state.jobs:
            if not self.stop_event.is_set():
                try:
                    self.registry.abort_session(self.session_id, FINISHED_REASON)
                except Exception:
                    log.exception("session %s: asking the combiners to stop its tasks failed", self.session_id)
            deadline = time.monotonic() + self._grace
            while state.jobs and time.monotonic() < deadline:
                try:
                    job = self._done.get(timeout=WAIT_STEP)
                except queue.Empty:
                    continue
                if state.jobs.get(job.client.client_id) is job:
                    del state.jobs[job.client.client_id]
                self._result(job)
                if job.outcome is not None and job.outcome.model_id:
                    self._delete_model(job.outcome.model_id)
            for job in list(state.jobs.values()):
                if job.future is not None:
                    job.future.cancel()
            state.jobs.clear()
        state.retry_at.clear()
        for contribution in state.buffer:
            self._delete_model(contribution.model_id)
        if state.buffer and self._current is not None:
            log.info("session %s: %d delivered update(s) were not needed and were discarded", self.session_id,
                     len(state.buffer))
        state.buffer = []


def not_connected(outcome: pb.RoundOutcome | None) -> bool:
    """The combiner could not give the client the task (it is no longer connected there)."""
    return outcome is not None and bool(outcome.tasks) and all(not t.correlation_id for t in outcome.tasks)
