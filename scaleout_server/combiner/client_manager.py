"""Connected clients, their task queues and the task registry, all on the combiner's event loop.

A client's tasks travel only with its polls, so the rules of the client contract live here:
a task reported done is never handed out again (the client would run it a second time), an
abort travels only as a status update for a task the client reports as still running, at most
one training task is in flight per client, and a poll is held open until a task arrives (long
poll): up to shortly before its deadline when it has one (our client; max(1 s, 10%) ahead, so the answer
arrives in time on a busy combiner), or up to the poll interval the
client announces (`poll_interval_ms`, the official 1.1 clients, which poll again at once after a
poll that lasted that long, so their poll rate is unchanged and tasks arrive without the wait). A
poll with neither (the official 1.0.7 clients) is answered at once.

Everything here runs on the server's single event loop, so there are no locks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.protocol import FINAL_TASK_STATUSES, TaskStatus, TaskType

log = logging.getLogger(__name__)

# answer a held poll max(POLL_DEADLINE_MARGIN, POLL_DEADLINE_FRACTION x its remaining time) before its deadline:
# with 1000 clients a busy loop answered 0.5 s ahead too late, and thousands of polls ended DEADLINE_EXCEEDED
POLL_DEADLINE_MARGIN = 1.0
POLL_DEADLINE_FRACTION = 0.1
MIN_LONG_POLL = 1.0  # only hold polls whose deadline is further away than this
MAX_INTERVAL_HOLD = 30.0  # cap on the hold of a poll that announces only its interval
INTERVAL_HOLD_MARGIN = 0.05  # answer an interval-bound poll this much earlier
FINISHED_TASKS_KEPT = 100_000  # finished tasks remembered for late results and lookups
DONE_IDS_KEPT = 10_000  # per client: correlation ids reported done
FORGET_AFTER = 3600.0  # an offline client with no tasks is forgotten after this long


def now() -> float:
    return time.monotonic()


class UnknownTask(LookupError):
    """A client's report (update, validation, prediction, inference result) answers no task this combiner issued
    to that client: answered NOT_FOUND with this message, and nothing is stored."""


class MalformedReport(ValueError):
    """A field of a client's report that the protocol defines as JSON is not JSON: answered INVALID_ARGUMENT."""


def report_json(text: str, field_name: str) -> Any:
    """The JSON value of a report's JSON field (None when empty); MalformedReport naming the field when not JSON."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise MalformedReport(f"{field_name} is not valid JSON ({exc}): send it as JSON text, e.g. "
                              f"json.dumps(...)") from None


@dataclass(eq=False)
class Task:
    """One TaskRequest for one client, from queueing to its final report."""

    client_id: str
    correlation_id: str
    type: str
    model_id: str = ""
    session_id: str = ""
    round_id: str = ""
    data: str = "{}"
    batch_id: str = ""
    group_id: str = ""  # the round or task batch waiting for it
    status: str = TaskStatus.NEW.value  # NEW until delivered, then what the client reports
    response: str = ""
    delivered: bool = False
    done: bool = False  # the client reported it done, or the server gave up on it
    abort_status: str | None = None  # INTERRUPTED | TIMEOUT once the server asked it to stop
    reported_at: float | None = None  # when the client reported it done
    on_change: Callable[[Task], None] | None = None
    autonomous: bool = False
    validation: str | None = None  # ModelValidation.data the client sent for this task (validation tasks)

    def request(self) -> pb.TaskRequest:
        return pb.TaskRequest(client_id=self.client_id, correlation_id=self.correlation_id, type=self.type,
                              model_id=self.model_id, session_id=self.session_id, round_id=self.round_id,
                              data=self.data, timestamp=_iso_now())

    def changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception:  # a listener bug must not break the poll that reported it
                log.exception("task %s: listener failed", self.correlation_id)

    def response_json(self) -> Any:
        if not self.response:
            return None
        try:
            return json.loads(self.response)
        except ValueError:
            return self.response


@dataclass(eq=False)
class ClientState:
    """One client as this combiner knows it: liveness, queued and delivered tasks, ids reported done."""

    client_id: str
    name: str = ""
    ip: str | None = None
    last_seen: float = field(default_factory=now)
    last_seen_wall: float = field(default_factory=time.time)
    online: bool = False
    disconnected: bool = False
    polling: int = 0  # calls currently held open (long polls, task streams): the client is there
    pending: deque[Task] = field(default_factory=deque)
    in_flight: dict[str, Task] = field(default_factory=dict)  # delivered, not reported done
    done_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)
    autonomous_acked: set[str] = field(default_factory=set)
    recent: deque[Task] = field(default_factory=lambda: deque(maxlen=8))  # last tasks handed out
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # why it is not sent validation tasks ("" = it is): it announced no validate callback, or answered one
    # without a validation; cleared by its next VersionCheck (a new client process) or a validation it sends
    no_validation: str = ""

    @property
    def busy(self) -> bool:
        return bool(self.in_flight)

    def remember_done(self, correlation_id: str) -> None:
        self.done_ids[correlation_id] = None
        self.done_ids.move_to_end(correlation_id)
        while len(self.done_ids) > DONE_IDS_KEPT:
            self.done_ids.popitem(last=False)


class ClientManager:
    """Client liveness, per-client queues, and every task by correlation id.

    `emit(event)` receives `client_seen` events for the controller's feed.
    """

    def __init__(self, offline_after: float = 15.0, emit: Callable[[dict[str, Any]], None] | None = None,
                 hold_interval_polls: bool = True) -> None:
        self.offline_after = offline_after
        self.hold_interval_polls = hold_interval_polls
        self._emit = emit or (lambda event: None)
        self.clients: dict[str, ClientState] = {}
        self.tasks: OrderedDict[str, Task] = OrderedDict()
        self.closing = False
        # called once when a client reports a task done (e.g. to store an inference result)
        self.on_done: Callable[[Task], None] | None = None
        self._registered = asyncio.Event()  # set (and replaced) whenever a task is registered

    # -- liveness --------------------------------------------------------------------------
    def touch(self, client_id: str, name: str | None = None, ip: str | None = None) -> ClientState:
        """Record contact from a client (never seen before is fine: clients do not re-register)."""
        state = self.clients.get(client_id)
        if state is None:
            state = ClientState(client_id=client_id, name=name or client_id)
            self.clients[client_id] = state
            log.info("client %s (%s) made contact", client_id, state.name)
        if name:
            state.name = name
        if ip:
            state.ip = ip
        state.last_seen = now()
        state.last_seen_wall = time.time()
        if state.disconnected or not state.online:
            state.disconnected = False
            state.online = True
            self._seen(state, "online")
        return state

    def connect(self, client_id: str, name: str | None = None, ip: str | None = None) -> ClientState:
        was_online = client_id in self.clients and self.clients[client_id].online
        state = self.touch(client_id, name, ip)
        if was_online:  # touch() announced a transition already otherwise
            self._seen(state, "online")
        return state

    def disconnect(self, client_id: str) -> None:
        state = self.clients.get(client_id)
        if state is None:
            return
        state.disconnected = True
        state.online = False
        log.info("client %s (%s) disconnected", client_id, state.name)
        self._seen(state, "offline")

    def set_validates(self, client_id: str, validates: bool, why: str = "") -> None:
        """Remember whether the client runs validation tasks (`why` says why not, for the logs and results)."""
        state = self.clients.get(client_id) or self.touch_silently(client_id)
        why = "" if validates else why or "it does not validate"
        if why and not state.no_validation:
            log.info("client %s (%s) is not sent validation tasks: %s", client_id, state.name, why)
        elif not why and state.no_validation:
            log.info("client %s (%s) validates again", client_id, state.name)
        state.no_validation = why

    def is_active(self, client_id: str) -> bool:
        state = self.clients.get(client_id)
        return state is not None and self._active(state)

    def _active(self, state: ClientState) -> bool:
        return not state.disconnected and (state.polling > 0 or now() - state.last_seen <= self.offline_after)

    def active_clients(self) -> list[ClientState]:
        return [s for s in self.clients.values() if self._active(s)]

    def sweep(self) -> None:
        """Mark clients silent for longer than `offline_after` as offline (called periodically)."""
        for state in list(self.clients.values()):
            if state.online and state.polling == 0 and now() - state.last_seen > self.offline_after:
                state.online = False
                log.info("client %s (%s) silent for %.0fs: offline", state.client_id, state.name,
                         now() - state.last_seen)
                self._seen(state, "offline")
            elif (not state.online and not state.pending and not state.in_flight and state.polling == 0
                  and now() - state.last_seen > FORGET_AFTER):
                del self.clients[state.client_id]

    def _seen(self, state: ClientState, status: str) -> None:
        data: dict[str, Any] = {"client_id": state.client_id, "name": state.name, "status": status}
        if state.ip:
            data["ip"] = state.ip
        self._emit({"kind": "client_seen", "data": data})

    # -- queueing --------------------------------------------------------------------------
    def submit(self, task: Task) -> None:
        state = self.clients.get(task.client_id) or self.touch_silently(task.client_id)
        self._register(task)
        state.pending.append(task)
        state.wake.set()

    def touch_silently(self, client_id: str) -> ClientState:
        """A state for a client not yet seen, without marking it online."""
        state = ClientState(client_id=client_id, name=client_id, last_seen=now() - self.offline_after - 1)
        self.clients[client_id] = state
        return state

    def _register(self, task: Task) -> None:
        self.tasks[task.correlation_id] = task
        self._trim()
        self._registered.set()
        self._registered = asyncio.Event()

    def _trim(self) -> None:
        excess = len(self.tasks) - FINISHED_TASKS_KEPT
        if excess <= 0:
            return
        # look at the oldest few only: listing all 100k ids on every new task would stall the loop
        for cid in list(islice(self.tasks, excess * 2)):
            if excess <= 0:
                break
            if self.tasks[cid].done:
                del self.tasks[cid]
                excess -= 1

    def get_task(self, correlation_id: str) -> Task | None:
        return self.tasks.get(correlation_id) if correlation_id else None

    def issued_task(self, correlation_id: str, client_id: str, what: str) -> Task:
        """The task `correlation_id` this combiner issued to `client_id` (or that client announced as its own
        autonomous task), which a report of kind `what` answers; UnknownTask naming the reason otherwise.

        Tasks live in memory only, so a task issued before a restart of this combiner is unknown afterwards:
        the round it belonged to is re-run, and its late answers must not be counted or stored."""
        if not client_id:
            raise UnknownTask(f"{what} names no client: send metadata 'client-id' (or the message's client id)")
        if not correlation_id:
            raise UnknownTask(f"{what} from client {client_id} names no task (empty correlation id): only answers "
                              "to tasks this combiner issued are accepted")
        task = self.tasks.get(correlation_id)
        if task is None:
            raise UnknownTask(f"{what} from client {client_id} answers task {correlation_id}, which this combiner "
                              "did not issue (or no longer knows: it restarted or the task is long over); not stored")
        if task.client_id != client_id:
            raise UnknownTask(f"{what} from client {client_id} answers task {correlation_id}, which was issued to "
                              "another client; not stored")
        return task

    async def announced_task(self, correlation_id: str, client_id: str, what: str, grace: float) -> Task:
        """Like issued_task, but waits up to `grace` s for the task to become known: a client's own (autonomous)
        inference streams its results at once, while the poll that announces the task may come seconds later."""
        deadline = now() + grace
        while True:
            try:
                return self.issued_task(correlation_id, client_id, what)
            except UnknownTask:
                remaining = deadline - now()
                if not correlation_id or not client_id or correlation_id in self.tasks or remaining <= 0:
                    raise
            try:
                await asyncio.wait_for(self._registered.wait(), remaining)
            except TimeoutError:
                pass

    def abort(self, task: Task, status: str = TaskStatus.INTERRUPTED.value) -> None:
        """Stop a task: a queued one is dropped, a delivered one is told on the client's next poll."""
        if task.done:
            return
        state = self.clients.get(task.client_id)
        if not task.delivered:
            if state is not None:
                try:
                    state.pending.remove(task)
                except ValueError:
                    pass
            self.finish(task, status, json.dumps({"error": "never picked up by the client"}))
            return
        if task.abort_status is None:
            task.abort_status = status
        if state is not None:
            state.wake.set()

    def finish(self, task: Task, status: str, response: str = "") -> None:
        """Close a task on the server side (the client will not or cannot report it)."""
        if task.done:
            return
        task.done = True
        task.status = status
        if response and not task.response:
            task.response = response
        state = self.clients.get(task.client_id)
        if state is not None:
            state.in_flight.pop(task.correlation_id, None)
        task.changed()

    def wake_all(self) -> None:
        for state in self.clients.values():
            state.wake.set()

    # -- reports ---------------------------------------------------------------------------
    def apply_report(self, state: ClientState, report: pb.ActivityReport) -> Task | None:
        """Record one ActivityReport; returns the task it concerns (None when unknown)."""
        cid = report.correlation_id
        if not cid:
            return None
        task = self.tasks.get(cid)
        if task is None and report.command_type:
            task = Task(client_id=state.client_id, correlation_id=cid, type=report.command_type,
                        data=report.parameters or "{}", delivered=True, autonomous=True)
            self._register(task)
            state.in_flight[cid] = task
        if task is None:
            if report.done:
                state.remember_done(cid)
            return None
        status = report.status if report.status in _KNOWN_STATUSES else task.status
        if report.response:
            task.response = report.response
        if report.done:
            state.remember_done(cid)
            state.in_flight.pop(cid, None)
            if not task.done:
                task.done = True
                task.reported_at = now()
                task.status = status if status in FINAL_TASK_STATUSES else TaskStatus.COMPLETED.value
                task.changed()
                if self.on_done is not None:
                    try:
                        self.on_done(task)
                    except Exception:
                        log.exception("task %s: done hook failed", cid)
            return task
        if not task.done and status and status != task.status:
            task.status = status
            task.changed()
        return task

    # -- PollAndReportAsync ----------------------------------------------------------------
    async def poll(self, state: ClientState, reports: Iterable[pb.ActivityReport], skip_tasks: bool,
                   time_remaining: float | None, poll_interval: float = 0.0) -> list[pb.TaskRequest]:
        """Apply the reports, then reply with new tasks and abort updates (see module docstring)."""
        reports = list(reports)
        for report in reports:
            self.apply_report(state, report)
        running = {r.correlation_id for r in reports if r.correlation_id and not r.done}
        reported = {r.correlation_id for r in reports if r.correlation_id}
        updates = self._status_updates(state, reports)
        if skip_tasks:
            return updates
        self._forget_lost(state, reported)
        deadline = _long_poll_deadline(time_remaining)
        if deadline is None and poll_interval > 0 and self.hold_interval_polls:
            deadline = now() + min(poll_interval, MAX_INTERVAL_HOLD) - INTERVAL_HOLD_MARGIN
        state.polling += 1
        try:
            while True:
                state.wake.clear()
                tasks = self._hand_out(state)
                if tasks or updates or deadline is None or self.closing:
                    return updates + tasks
                remaining = deadline - now()
                if remaining <= 0:
                    return []
                try:
                    await asyncio.wait_for(state.wake.wait(), remaining)
                except TimeoutError:
                    return []
                # an abort requested while waiting concerns tasks the client reported running
                updates = self._status_updates(state, [r for r in reports if r.correlation_id in running])
        finally:
            state.polling -= 1
            state.last_seen = now()

    def _status_updates(self, state: ClientState, reports: list[pb.ActivityReport]) -> list[pb.TaskRequest]:
        out = []
        for report in reports:
            cid = report.correlation_id
            if not cid or report.done:
                continue
            task = self.tasks.get(cid)
            if task is None:
                # a task this combiner never gave out (it restarted?): nobody waits for its result
                if cid not in state.autonomous_acked:
                    state.autonomous_acked.add(cid)
                    log.info("client %s runs task %s unknown to this combiner; asking it to stop",
                             state.client_id, cid)
                out.append(pb.TaskRequest(correlation_id=cid, status=TaskStatus.INTERRUPTED.value))
            elif task.abort_status:
                out.append(pb.TaskRequest(correlation_id=cid, status=task.abort_status))
            elif task.autonomous and cid not in state.autonomous_acked:
                state.autonomous_acked.add(cid)
                out.append(pb.TaskRequest(correlation_id=cid, status=TaskStatus.EMPTY.value))
        return out

    def _forget_lost(self, state: ClientState, reported: set[str]) -> None:
        """Delivered tasks the client does not report never reached it (a lost reply): offer them again,
        or close them when the server has already given up on them."""
        for cid, task in list(state.in_flight.items()):
            if cid in reported or task.autonomous:
                continue
            del state.in_flight[cid]
            task.delivered = False
            if task.abort_status:
                self.finish(task, task.abort_status)
            elif not task.done:
                state.pending.appendleft(task)

    def _hand_out(self, state: ClientState) -> list[pb.TaskRequest]:
        if not state.pending:
            return []
        training_busy = any(t.type == TaskType.MODEL_UPDATE for t in state.in_flight.values())
        out: list[pb.TaskRequest] = []
        keep: deque[Task] = deque()
        while state.pending:
            task = state.pending.popleft()
            if task.done or task.correlation_id in state.done_ids:
                continue
            if task.type == TaskType.MODEL_UPDATE:
                if training_busy:
                    keep.append(task)
                    continue
                training_busy = True
            task.delivered = True
            if task.status == TaskStatus.NEW:
                task.status = TaskStatus.PENDING.value
            state.in_flight[task.correlation_id] = task
            state.recent.append(task)
            out.append(task.request())
            task.changed()
        state.pending = keep
        return out

    # -- PollAndReport (1.0.0 clients: one task at a time) ---------------------------------
    async def legacy_poll(self, state: ClientState, report: pb.ActivityReport,
                          time_remaining: float | None) -> pb.TaskRequest:
        task = self.apply_report(state, report)
        if task is not None and not report.done and task.abort_status:
            return pb.TaskRequest(correlation_id=task.correlation_id, status=task.abort_status)
        if report.correlation_id and not report.done:
            return pb.TaskRequest()  # busy with that task
        current = {report.correlation_id} if report.correlation_id else set()
        self._forget_lost(state, current)
        deadline = _long_poll_deadline(time_remaining)
        state.polling += 1
        try:
            while True:
                state.wake.clear()
                task = self._next_single(state)
                if task is not None:
                    return task.request()
                if deadline is None or self.closing or deadline - now() <= 0:
                    return pb.TaskRequest()
                try:
                    await asyncio.wait_for(state.wake.wait(), deadline - now())
                except TimeoutError:
                    return pb.TaskRequest()
        finally:
            state.polling -= 1
            state.last_seen = now()

    def _next_single(self, state: ClientState) -> Task | None:
        while state.pending:
            task = state.pending.popleft()
            if task.done or task.correlation_id in state.done_ids:
                continue
            task.delivered = True
            task.status = TaskStatus.PENDING.value
            state.in_flight[task.correlation_id] = task
            state.recent.append(task)
            task.changed()
            return task
        return None

    # -- TaskStream (legacy streaming clients) ---------------------------------------------
    async def stream(self, state: ClientState) -> AsyncIterator[pb.TaskRequest]:
        """Yield the client's tasks as they are queued, until the call ends or the server closes."""
        state.polling += 1
        try:
            while not self.closing:
                state.wake.clear()
                task = self._next_single(state)
                if task is not None:
                    state.last_seen = now()
                    yield task.request()
                    continue
                try:
                    await asyncio.wait_for(state.wake.wait(), 5.0)
                except TimeoutError:
                    pass
                state.last_seen = now()
        finally:
            state.polling -= 1

    # -- lookups ---------------------------------------------------------------------------
    def recent_task_of(self, client_id: str, task_type: str | None = None) -> Task | None:
        """The client's latest task (of a type), to attach ids to messages that carry none."""
        state = self.clients.get(client_id)
        if state is None:
            return None
        for task in reversed(state.recent):
            if task_type is None or task.type == task_type:
                return task
        return None


_KNOWN_STATUSES = {s.value for s in TaskStatus}


def _long_poll_deadline(time_remaining: float | None) -> float | None:
    """When to answer a held poll: early enough before the caller's deadline that the answer arrives in time on a
    busy combiner (a 10 s poll is held 9 s); None (answer at once) without a deadline or with one too close."""
    if time_remaining is not None and time_remaining > MIN_LONG_POLL:
        margin = max(POLL_DEADLINE_MARGIN, POLL_DEADLINE_FRACTION * time_remaining)
        return now() + max(0.0, time_remaining - margin)
    return None


def _iso_now() -> str:
    """UTC with milliseconds: the moment the combiner hands a task out (clients ignore it; benchmarks use it)."""
    at = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"
