"""Rounds and task batches on one combiner: queue the tasks, wait for the results, aggregate.

A round lives exactly as long as its `RunRound` call. Updates are handed to the strategy as they
arrive, read in place from the files the uploads wrote, a slice at a time (`aggregation.job`), so
memory does not grow with the model count; an update for a round that is no longer open is
logged and deleted, never carried into a later round (and answered NOT_FOUND: see
combiner/client_service.py). Strategy state (server optimiser moments)
is saved per session under `<combiner dir>/strategy-state/`, so it survives a restart. Every wait
is bounded by the round's (or batch's) timeout, and an aborted session ends its rounds at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaleout_server.aggregation.job import AggregationJob
from scaleout_server.aggregation.registry import make_strategy
from scaleout_server.aggregation.state import SessionStates
from scaleout_server.combiner.client_manager import (
    ClientManager,
    MalformedReport,
    Task,
    UnknownTask,
    now,
    report_json,
)
from scaleout_server.combiner.controller_link import EventLink
from scaleout_server.repository.base import BlobNotFound, ModelRepository
from scaleout_server.store import records as r
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.protocol import TASK_SKIPPED, TaskStatus, TaskType

log = logging.getLogger(__name__)

UPDATE_GRACE = 10.0  # after a COMPLETED report, wait this long for the task's ModelUpdate
VALIDATION_GRACE = 5.0  # ... and this long for a validation task's ModelValidation
DEFAULT_BATCH_TIMEOUT = 300.0  # RunTasks without a positive timeout
FLUSH_TIMEOUT = 5.0  # wait at most this long for the controller to take a round's records
DEFAULT_HELPER = "numpyhelper"
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
NOT_CONNECTED = "client not connected to this combiner"


def is_safe_id(value: str) -> bool:
    """Ids that are also file names: no separators, no leading dot."""
    return bool(SAFE_ID.match(value or ""))


def update_file(updates_dir: Path, model_id: str) -> Path:
    """Where an uploaded update waits for its ModelUpdate: ModelService writes it, the round reads it."""
    return updates_dir / f"{model_id}.scm"


def _error(message: str) -> str:
    return json.dumps({"error": message})


class _Either(Container[str]):
    """`x in _Either(a, b)`: in a or in b, without building their union."""

    def __init__(self, *parts: Container[str]) -> None:
        self.parts = parts

    def __contains__(self, item: object) -> bool:
        return any(item in part for part in self.parts)


@dataclass(eq=False)
class TaskGroup:
    """Tasks one Control call waits for; `changed` wakes the waiting call."""

    group_id: str
    session_id: str
    tasks: dict[str, Task] = field(default_factory=dict)  # by correlation id
    results: list[pb.TaskResult] = field(default_factory=list)  # clients that got no task
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    aborted: bool = False

    def __post_init__(self) -> None:
        self._open: dict[str, None] = {}  # tasks not seen done yet, oldest first (pruned lazily)

    def add(self, task: Task) -> None:
        task.group_id = self.group_id
        task.on_change = self._on_change
        self.tasks[task.correlation_id] = task
        if not task.done:
            self._open[task.correlation_id] = None

    def _on_change(self, task: Task) -> None:
        self.changed.set()

    def waits_for_a_task(self, exempt: Container[str] = ()) -> bool:
        """True while a task is not done (and not in `exempt`). Amortised O(1): the waiting call asks after
        every change, and scanning all tasks each time made a 1000-client round or command quadratic."""
        done: list[str] = []
        found = False
        for cid in self._open:
            if self.tasks[cid].done:
                done.append(cid)
            elif cid not in exempt:
                found = True
                break
        for cid in done:
            del self._open[cid]
        return found


@dataclass(eq=False)
class Accepted:
    """An update accepted into a round: its description for the outcome, and the file to fold."""

    info: pb.UpdateInfo
    path: Path


@dataclass(eq=False)
class RoundState(TaskGroup):
    """A training round: finished once `buffer` updates arrived, or every task is settled (a COMPLETED
    task only after `grace` seconds without its update, since the update may trail the done report)."""

    buffer: int = 0
    grace: float = UPDATE_GRACE
    delete_models: bool = True
    concluded: bool = False  # the user skipped the wait: aggregate the updates in hand, the session goes on
    updates: dict[str, Accepted] = field(default_factory=dict)  # by correlation id, in arrival order
    rejected: dict[str, str] = field(default_factory=dict)  # correlation id -> error
    queue: asyncio.Queue[Accepted | None] = field(default_factory=asyncio.Queue)

    def settled(self, task: Task, at: float) -> bool:
        cid = task.correlation_id
        if cid in self.updates or cid in self.rejected:
            return True
        if not task.done:
            return False
        if task.status == TaskStatus.COMPLETED and task.reported_at is not None:
            return at - task.reported_at >= self.grace  # the update may still be on its way
        return True

    def next_grace_end(self) -> float | None:
        if self.waits_for_a_task(_Either(self.updates, self.rejected)):
            return None  # a task still running: no grace end can finish the round before it changes
        ends = [t.reported_at + self.grace for t in self.tasks.values()
                if t.done and t.reported_at is not None and t.status == TaskStatus.COMPLETED
                and t.correlation_id not in self.updates and t.correlation_id not in self.rejected]
        return min(ends) if ends else None

    def finished(self) -> bool:
        if self.aborted or self.concluded:
            return True
        if self.buffer > 0 and len(self.updates) >= self.buffer:
            return True
        if self.waits_for_a_task(_Either(self.updates, self.rejected)):
            return False  # that task is not settled: no need to look at the others
        at = now()
        return all(self.settled(t, at) for t in self.tasks.values())


class Rounds:
    """The open rounds and task batches of this combiner, and how Control calls run them."""

    def __init__(self, clients: ClientManager, repository: ModelRepository, link: EventLink, updates_dir: Path,
                 *, update_grace: float = UPDATE_GRACE, state_dir: Path | None = None) -> None:
        self.clients = clients
        self.repository = repository
        self.link = link
        self.updates_dir = updates_dir
        self.update_grace = update_grace
        self.open: dict[str, TaskGroup] = {}
        self._seen_updates: OrderedDict[str, None] = OrderedDict()
        self.states = SessionStates(state_dir if state_dir is not None else Path(updates_dir).parent / "strategy-state")

    def update_path(self, model_id: str) -> Path:
        return update_file(self.updates_dir, model_id)

    # -- RunRound --------------------------------------------------------------------------
    async def run_round(self, spec: pb.RoundSpec) -> pb.RoundOutcome:
        started = now()
        tag = f"session {spec.session_id} round {spec.round_id}"
        try:
            kwargs = _json_object(spec.aggregator_kwargs, "aggregator_kwargs")
            client_settings = _json_object(spec.client_settings, "client_settings")
            by_client = _settings_by_client(spec.client_settings_by_client)
            helper_type = (spec.helper_type or await asyncio.to_thread(self._model_helper_type, spec.model_id)
                           or DEFAULT_HELPER)
            helper = _get_helper(helper_type)
            strategy = make_strategy(spec.aggregator or "fedavg", helper, kwargs)
            job = AggregationJob(strategy, helper, self.updates_dir)
            try:
                await asyncio.to_thread(self._begin, job, spec.session_id, spec.model_id)
                # a client's own settings go over the shared ones; the strategy's (e.g. FedProx's mu) over both
                by_client = {cid: strategy.configure({**client_settings, **own}) for cid, own in by_client.items()}
                client_settings = strategy.configure(client_settings)
            except BaseException:
                await asyncio.to_thread(job.close)
                raise
        except Exception as exc:  # a bad spec or model: the controller gets the reason, not a gRPC failure
            log.error("%s: cannot start: %s", tag, exc)
            return pb.RoundOutcome(error=str(exc))

        group = RoundState(group_id=f"round:{spec.round_id or uuid.uuid4()}:{uuid.uuid4().hex[:8]}",
                           session_id=spec.session_id, grace=self.update_grace, delete_models=spec.delete_models)
        data = _task_data(spec, helper_type, client_settings)
        for client_id in _unique(spec.client_ids):
            if not self.clients.is_active(client_id):
                group.results.append(pb.TaskResult(client_id=client_id, status=TaskStatus.FAILED.value,
                                                   response=_error(NOT_CONNECTED), client_name=self._name(client_id)))
                continue
            task = Task(client_id=client_id, correlation_id=str(uuid.uuid4()), type=TaskType.MODEL_UPDATE.value,
                        model_id=spec.model_id, session_id=spec.session_id, round_id=spec.round_id,
                        data=_task_data(spec, helper_type, by_client[client_id]) if client_id in by_client else data)
            group.add(task)
        group.buffer = len(group.tasks) if spec.buffer_size <= 0 else min(spec.buffer_size, len(group.tasks))
        self.open[group.group_id] = group
        for task in group.tasks.values():
            self.clients.submit(task)
        log.info("%s: %d training task(s) queued (model %s, aggregator %s, waiting for %d update(s), timeout %.0fs)",
                 tag, len(group.tasks), spec.model_id, strategy.name, group.buffer, spec.round_timeout)

        folded: dict[str, float] = {}
        failed: dict[str, str] = {}
        agg_time = [0.0]
        worker = asyncio.create_task(self._fold_updates(group, job, folded, failed, agg_time))
        try:
            await self._wait(group, spec.round_timeout if spec.round_timeout > 0 else 180.0)
            self._close(group)
            stop_status = (TaskStatus.INTERRUPTED.value if group.aborted or group.concluded
                           else TaskStatus.TIMEOUT.value)
            stopped = self._stop_tasks(group, stop_status)
            group.queue.put_nowait(None)
            time_wait = now() - started
            await worker
        except BaseException:  # cancelled: no task of a closed round may stay queued or running
            self._close(group)
            self._stop_tasks(group, TaskStatus.TIMEOUT.value)
            worker.cancel()
            self._discard_queued(group)
            job.close()  # only unlinks files: quick enough for the loop, and a cancelled call must not wait
            raise

        outcome = pb.RoundOutcome(updates_expected=group.buffer, time_wait=time_wait, aborted=group.aborted)
        t0 = now()
        try:
            outcome.model_id = await asyncio.to_thread(self._conclude, job, spec.session_id, helper_type,
                                                       bool(folded))
        except Exception as exc:
            log.exception("%s: aggregation failed", tag)
            outcome.error = f"aggregation failed: {exc}"
        finally:
            await asyncio.to_thread(job.close)
        del strategy, job  # the accumulator is as large as the model: free it before waiting on the event feed
        agg_time[0] += now() - t0
        outcome.time_aggregation = agg_time[0]
        for cid, accepted in group.updates.items():
            if cid in folded:
                outcome.updates.append(accepted.info)
                outcome.num_examples += folded[cid]
        outcome.tasks.extend(group.results)
        for task in group.tasks.values():
            outcome.tasks.append(self._task_result(group, task, stopped, stop_status, failed))
        if not group.tasks and not outcome.error:
            outcome.error = f"none of the {len(spec.client_ids)} selected client(s) is connected to this combiner"
        await self.link.flush(FLUSH_TIMEOUT)
        log.info("%s: %s with %d update(s) (%.0f examples) in %.1fs%s", tag,
                 f"model {outcome.model_id}" if outcome.model_id else "no model", len(outcome.updates),
                 outcome.num_examples, now() - started, " [aborted]" if group.aborted else "")
        return outcome

    def _stop_tasks(self, group: RoundState, status: str) -> set[str]:
        """Abort the round's tasks that are neither finished nor answered by an update."""
        stopped = set()
        for task in group.tasks.values():
            cid = task.correlation_id
            if not task.done and cid not in group.updates and cid not in group.rejected:
                stopped.add(cid)
                self.clients.abort(task, status)
        return stopped

    def _task_result(self, group: RoundState, task: Task, stopped: set[str], stop_status: str,
                     failed: dict[str, str]) -> pb.TaskResult:
        cid = task.correlation_id
        result = pb.TaskResult(client_id=task.client_id, correlation_id=cid, client_name=self._name(task.client_id),
                               status=task.status, response=task.response)
        if cid in stopped:
            result.status = stop_status
        elif cid in group.rejected or cid in failed:
            result.status = TaskStatus.FAILED.value
            result.response = _error(group.rejected.get(cid) or failed[cid])
        elif cid in group.updates:
            result.status = TaskStatus.COMPLETED.value
        return result

    async def _wait(self, group: TaskGroup, timeout: float) -> None:
        deadline = now() + timeout
        while True:
            group.changed.clear()
            if self._group_finished(group):
                return
            remaining = deadline - now()
            if remaining <= 0:
                return
            wake_at = group.next_grace_end() if isinstance(group, RoundState) else None
            wait = remaining if wake_at is None else max(0.01, min(remaining, wake_at - now() + 0.01))
            try:
                await asyncio.wait_for(group.changed.wait(), wait)
            except TimeoutError:
                pass

    @staticmethod
    def _group_finished(group: TaskGroup) -> bool:
        if isinstance(group, RoundState):
            return group.finished()
        return group.aborted or not group.waits_for_a_task()

    def _close(self, group: TaskGroup) -> None:
        """No one waits on the group any more. Its tasks stay in the client manager's registry for late
        reports, so unhook them: otherwise each would keep the whole group (updates, metadata) alive."""
        group.closed = True
        self.open.pop(group.group_id, None)
        for task in group.tasks.values():
            task.on_change = None

    async def _fold_updates(self, group: RoundState, job: AggregationJob, folded: dict[str, float],
                            failed: dict[str, str], agg_time: list[float]) -> None:
        """Hand each accepted update to the strategy, one at a time, off the event loop. The job deletes
        the file (when the session deletes updates) as soon as the strategy no longer needs it."""
        while True:
            accepted = await group.queue.get()
            if accepted is None:
                return
            info = accepted.info
            t0 = now()
            try:
                await asyncio.to_thread(job.fold, accepted.path, info.num_examples, json.loads(info.meta or "{}"),
                                        delete=group.delete_models)
                folded[info.correlation_id] = info.num_examples
            except Exception as exc:
                log.error("update %s from client %s could not be aggregated: %s", info.model_update_id,
                          info.client_id, exc)
                failed[info.correlation_id] = f"update {info.model_update_id} could not be aggregated: {exc}"
            finally:
                agg_time[0] += now() - t0

    @staticmethod
    def _discard_queued(group: RoundState) -> None:
        """A cancelled round folds nothing more: delete the files of updates still queued for it now,
        instead of leaving them to the orphan sweep hours later."""
        while not group.queue.empty():
            accepted = group.queue.get_nowait()
            if accepted is not None and group.delete_models:
                accepted.path.unlink(missing_ok=True)

    def _begin(self, job: AggregationJob, session_id: str, model_id: str) -> None:
        """Restore the session's strategy state and start the round from the global model: copied to the
        work folder when the strategy reads it, else only looked up, so a missing model fails the round
        either way (worker thread: copying a large model would stall every client's poll)."""
        if not model_id:
            raise ValueError("the round has no model_id to train from")
        state = self.states.load(session_id, job.strategy.name)
        missing = ValueError(f"global model {model_id} is not in the model repository {self.repository.describe()}; "
                             "the controller and every combiner must share it (the same folder, or S3)")
        if not job.strategy.uses_global_model:
            if not self.repository.exists("models", model_id):
                raise missing
            job.begin(None, state)
            return
        try:
            stream = self.repository.open("models", model_id)
        except BlobNotFound as exc:
            raise missing from exc
        with stream:
            job.begin(stream, state)

    def _conclude(self, job: AggregationJob, session_id: str, helper_type: str, has_updates: bool) -> str:
        """Aggregate, store the new model (id "" when there is none) and save the strategy's session
        state (worker thread: the numpy work and the container writing are proportional to model size)."""
        if not has_updates:
            return ""
        model_id = str(uuid.uuid4())
        try:
            with job.result_container(model_id, helper_type) as stream:
                if stream is None:
                    return ""
                self.repository.put("models", model_id, stream)
        except BaseException:
            self._discard_model(model_id)
            raise
        self.states.save(session_id, job.strategy.name, job.state_dict())
        return model_id

    def _discard_model(self, model_id: str) -> None:
        """A result that failed while being stored must not stay in the repository half-written."""
        try:
            self.repository.delete("models", model_id)
        except Exception as exc:
            log.warning("could not delete the incomplete model %s: %s", model_id, exc)

    def _model_helper_type(self, model_id: str) -> str | None:
        """The helper named in a stored container's metadata (None when absent or unreadable)."""
        from scaleoututil.model import InvalidModel, is_container, read_container_metadata

        try:
            with self.repository.open("models", model_id) as stream:
                if stream.seekable() and is_container(stream):
                    value = read_container_metadata(stream).get("helper_type")
                    return value if isinstance(value, str) and value else None
        except (BlobNotFound, InvalidModel, OSError, ValueError):
            return None
        return None

    # -- model updates (from SendModelUpdate) ----------------------------------------------
    def receive_update(self, msg: pb.ModelUpdate, client_id: str, client_name: str) -> str:
        """Accept one ModelUpdate into its open round; returns a short note for the Response.

        Raises MalformedReport when `meta` is not a JSON object, UnknownTask when the update answers no task this
        combiner issued to `client_id` or its round is no longer open; nothing is kept then (a known task of an
        open round is marked failed). A replay of an accepted update answers OK again and is counted once."""
        uid = msg.model_update_id
        if uid in self._seen_updates:
            return "duplicate update, already received"
        meta_error = ""
        try:
            meta = report_json(msg.meta or "{}", "ModelUpdate.meta")
            if not isinstance(meta, dict):
                raise MalformedReport(f"ModelUpdate.meta must be a JSON object, not {type(meta).__name__}")
        except MalformedReport as exc:
            meta, meta_error = {}, f"update meta is not valid JSON: {exc}"
        safe = is_safe_id(uid)
        path = self.update_path(uid) if safe else None
        try:
            task = self.clients.issued_task(msg.correlation_id, client_id, f"ModelUpdate {uid!r}")
        except UnknownTask:
            if path is not None:
                path.unlink(missing_ok=True)
            if meta_error:
                raise MalformedReport(meta_error) from None
            raise
        if path is None:
            log.warning("client %s sent a ModelUpdate with an unusable model_update_id %r; ignored", client_id, uid)
            return "ignored: bad model_update_id"
        group = self.open.get(task.group_id)
        cid = task.correlation_id
        if not isinstance(group, RoundState) or group.closed:
            log.warning("update %s from client %s (task %s, round %s) arrived for a round that is not open on this "
                        "combiner; not used", uid, client_id, cid, task.round_id or msg.round_id)
            path.unlink(missing_ok=True)
            if meta_error:
                raise MalformedReport(meta_error)
            raise UnknownTask(f"ModelUpdate {uid} from client {client_id} answers task {cid}, whose round "
                              f"{task.round_id or '?'} is no longer open on this combiner (it ended before the update "
                              "arrived): the update is not used")
        if cid in group.updates or cid in group.rejected:
            log.warning("client %s sent a second update (%s) for task %s; ignored", client_id, uid, cid)
            path.unlink(missing_ok=True)
            return "ignored: task already has an update"
        if meta_error:
            self._reject(group, task, path, meta_error)
            raise MalformedReport(meta_error)
        training = meta.get("training_metadata")
        num = training.get("num_examples") if isinstance(training, dict) else None
        if isinstance(num, bool) or not isinstance(num, (int, float)) or not num > 0:
            return self._reject(group, task, path, "update metadata must contain training_metadata.num_examples > 0 "
                                f"(got {num!r}); return it from the train callback")
        if not path.exists():
            return self._reject(group, task, path, f"model {uid} was not uploaded to this combiner before "
                                "SendModelUpdate")
        self._remember_update(uid)
        info = pb.UpdateInfo(client_id=client_id, model_update_id=uid, correlation_id=cid, num_examples=float(num),
                             meta=json.dumps(meta), client_name=client_name)
        accepted = Accepted(info=info, path=path)
        group.updates[cid] = accepted
        group.queue.put_nowait(accepted)
        group.changed.set()
        self.link.emit_record(r.UpdateRecord(update_id=uid, round_id=task.round_id, session_id=task.session_id,
                                             client_id=client_id, model_id=msg.model_id or task.model_id,
                                             correlation_id=cid, num_examples=float(num), meta=meta))
        log.info("update %s from client %s accepted for round %s (%d/%d)", uid, client_name, task.round_id,
                 len(group.updates), group.buffer)
        return "update received"

    def _reject(self, group: RoundState, task: Task, path: Path, error: str) -> str:
        log.warning("update for task %s from client %s rejected: %s", task.correlation_id, task.client_id, error)
        group.rejected[task.correlation_id] = error
        group.changed.set()
        path.unlink(missing_ok=True)
        return f"rejected: {error}"

    def _remember_update(self, uid: str) -> None:
        self._seen_updates[uid] = None
        while len(self._seen_updates) > 100_000:
            self._seen_updates.popitem(last=False)

    # -- RunTasks --------------------------------------------------------------------------
    async def run_tasks(self, spec: pb.TaskBatchSpec) -> pb.TaskBatchOutcome:
        batch_id = spec.batch_id or str(uuid.uuid4())
        group = TaskGroup(group_id=f"batch:{batch_id}:{uuid.uuid4().hex[:8]}", session_id=spec.session_id)
        data = spec.data or "{}"
        for client_id in _unique(spec.client_ids):
            if not self.clients.is_active(client_id):
                group.results.append(pb.TaskResult(client_id=client_id, status=TaskStatus.FAILED.value,
                                                   response=_error(NOT_CONNECTED), client_name=self._name(client_id)))
                continue
            why = self.clients.clients[client_id].no_validation if spec.type == TaskType.VALIDATION else ""
            if why:
                group.results.append(pb.TaskResult(client_id=client_id, status=TASK_SKIPPED, client_name=self._name(
                    client_id), response=json.dumps({"skipped": f"not sent a validation task: {why}"})))
                continue
            group.add(Task(client_id=client_id, correlation_id=str(uuid.uuid4()), type=spec.type,
                           model_id=spec.model_id, session_id=spec.session_id, round_id=spec.round_id, data=data,
                           batch_id=batch_id))
        self.open[group.group_id] = group
        for task in group.tasks.values():
            self.clients.submit(task)
        timeout = spec.timeout if spec.timeout > 0 else DEFAULT_BATCH_TIMEOUT
        log.info("batch %s: %d %s task(s) queued (timeout %.0fs)", batch_id, len(group.tasks), spec.type, timeout)
        try:
            await self._wait(group, timeout)
            if spec.type == TaskType.VALIDATION:
                await self._await_validations(group)
        except BaseException:  # cancelled: nobody waits for these results, so no task may stay queued or running
            self._close(group)
            for task in group.tasks.values():
                self.clients.abort(task, TaskStatus.TIMEOUT.value)
            raise
        self._close(group)
        stop_status = TaskStatus.INTERRUPTED.value if group.aborted else TaskStatus.TIMEOUT.value
        out = pb.TaskBatchOutcome(results=group.results)
        for task in group.tasks.values():
            status = task.status
            if not task.done:
                self.clients.abort(task, stop_status)
                status = stop_status
            response = task.response
            if task.type == TaskType.VALIDATION and status == TaskStatus.COMPLETED:
                response = task.validation or ""  # a validation's result is its metrics; "" = none was sent
                if _refused_validation(task):  # the published clients' way to refuse (no validate callback)
                    self.clients.set_validates(task.client_id, False, "it answered a validation task without a "
                                               "validation (no validate callback?)")
            out.results.append(pb.TaskResult(client_id=task.client_id, correlation_id=task.correlation_id,
                                             status=status, response=response,
                                             client_name=self._name(task.client_id)))
        await self.link.flush(FLUSH_TIMEOUT)
        return out

    async def _await_validations(self, group: TaskGroup) -> None:
        """A client's done report can overtake its ModelValidation (they travel separately, the published
        clients queue the validation): give a completed task's validation VALIDATION_GRACE s to arrive."""
        deadline = now() + VALIDATION_GRACE
        while not group.aborted and any(_refused_validation(t) for t in group.tasks.values()):
            remaining = deadline - now()
            if remaining <= 0:
                return
            group.changed.clear()
            try:
                await asyncio.wait_for(group.changed.wait(), remaining)
            except TimeoutError:
                pass

    # -- AbortSession ----------------------------------------------------------------------
    def abort_session(self, session_id: str) -> int:
        """Drop the session's queued tasks, tell running ones to stop, end its open rounds; returns the
        number of tasks affected. The id may also be a task batch's (a command being stopped): its
        RunTasks call then returns at once, with the results in hand and the rest INTERRUPTED."""
        if not session_id:
            return 0
        count = 0
        batch_prefix = f"batch:{session_id}:"
        for group in list(self.open.values()):
            if group.session_id == session_id or group.group_id.startswith(batch_prefix):
                group.aborted = True
                group.changed.set()
        for state in self.clients.clients.values():
            for task in [*state.pending, *state.in_flight.values()]:
                if (task.session_id == session_id or task.batch_id == session_id) and not task.done:
                    self.clients.abort(task, TaskStatus.INTERRUPTED.value)
                    count += 1
        log.info("session %s aborted: %d task(s) stopped", session_id, count)
        return count

    def conclude_session(self, session_id: str) -> int:
        """End the wait of the session's open rounds now: each aggregates the updates it has and returns
        its outcome as at its deadline (the clients still training are told to stop, INTERRUPTED), and
        the session goes on. Returns the number of rounds concluded."""
        count = 0
        for group in list(self.open.values()):
            if isinstance(group, RoundState) and group.session_id == session_id and not group.closed:
                group.concluded = True
                group.changed.set()
                count += 1
        log.info("session %s: %d open round(s) told to aggregate the updates in hand now", session_id, count)
        return count

    def _name(self, client_id: str) -> str:
        state = self.clients.clients.get(client_id)
        return state.name if state is not None else ""


def _refused_validation(task: Task) -> bool:
    """A validation task the client completed, unasked to stop, without sending a validation."""
    return task.done and task.status == TaskStatus.COMPLETED and task.validation is None and task.abort_status is None


def _get_helper(helper_type: str) -> Any:
    from scaleoututil.helpers.helpers import get_helper

    try:
        return get_helper(helper_type)
    except (ImportError, ModuleNotFoundError, KeyError) as exc:
        raise ValueError(f"unknown helper {helper_type!r}: {exc}") from exc


def _json_object(text: str, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _task_data(spec: pb.RoundSpec, helper_type: str, client_settings: dict[str, Any]) -> str:
    """A training task's `data`: the client reads its `client_settings` (the other keys are informative)."""
    return json.dumps({"client_settings": client_settings, "round_id": spec.round_id, "session_id": spec.session_id,
                       "model_id": spec.model_id, "helper_type": helper_type})


def _settings_by_client(text: str) -> dict[str, dict[str, Any]]:
    """`RoundSpec.client_settings_by_client`: a JSON object of JSON objects, keyed by client id."""
    by_client = _json_object(text, "client_settings_by_client")
    bad = [cid for cid, own in by_client.items() if not isinstance(own, dict)]
    if bad:
        raise ValueError(f"client_settings_by_client must map client ids to JSON objects; {bad[0]!r} maps to "
                         f"{type(by_client[bad[0]]).__name__}")
    return by_client


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i for i in ids if i))

