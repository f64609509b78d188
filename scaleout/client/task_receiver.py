"""The poll loop: report every held task, receive new tasks and abort requests, one thread per task.

Polls are long-polls: each `PollAndReportAsync` carries a deadline (`poll_timeout`), and the
combiner holds it open until it has a task for us, so a new task arrives within milliseconds.
When one of our tasks finishes, the open poll is cancelled and a new one carries the result at
once, instead of waiting for the long-poll to end.

A held poll is also our liveness signal and our telemetry's carrier: while one is held (and the
last one was answered), the runtime sends no `SendHeartbeat` (the combiner counts a client with a held
poll as present) and hands its telemetry readings to the next poll's metadata (`MD_TELEMETRY`) instead
of a `SendTelemetryMessage` call. With 1000 clients that is one RPC where there were three, and the
per-RPC cost of gRPC in Python was most of an idle combiner's CPU. The separate calls come back as
soon as a poll fails or ends at its deadline, so failover still notices a combiner that is gone.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from scaleout.client.connection import (
    FATAL,
    REAUTH,
    RECONNECT,
    Backoff,
    Connection,
    classify,
    describe,
)
from scaleout.client.registration import TokenRefused
from scaleout.client.tasks import StoppedException, Task, TaskExecutor
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.protocol import MD_TELEMETRY, TaskStatus

__all__ = ["StoppedException", "TaskReceiver"]

logger = logging.getLogger(__name__)

DEFAULT_POLL_TIMEOUT = 10.0
MIN_POLL_INTERVAL = 1.0  # pace for combiners that answer at once instead of holding the poll
FORGOTTEN_MEMORY = 1000
LATE_POLL_FRACTION = 0.8  # a poll cancelled after this share of its timeout ended like a held poll
# after a poll brought new tasks, wait up to this long for one of them to finish before polling again: a quick
# task (a command) then reports done on the next poll, instead of that poll going out with RUNNING, being
# cancelled and sent again (with 1000 clients, half the RPCs a command burst cost the combiner)
NEW_TASK_GRACE = 0.25
# held polls in a row that end at their deadline before heartbeat and telemetry calls come back: one is a busy
# combiner's late answer (resuming 1000 clients' heartbeats then made it busier), several a combiner gone quiet
DEADLINE_ENDS_TOLERATED = 2
_VALID_STATUSES = {str(s) for s in TaskStatus} | {"EMPTY"}
_ABORT_REASONS = {TaskStatus.INTERRUPTED: "Aborted by server", TaskStatus.TIMEOUT: "Timed out by server"}


class TaskReceiver:
    """Runs the poll loop in a thread; owns the tasks the client holds until their done report is acked."""

    def __init__(self, connection: Connection, executor: TaskExecutor, stop: threading.Event, *,
                 poll_timeout: float = DEFAULT_POLL_TIMEOUT, min_poll_interval: float = MIN_POLL_INTERVAL,
                 on_contact: Callable[[], None] | None = None) -> None:
        self.on_contact = on_contact  # called after every answered poll (failover: the combiner is there)
        self.connection = connection
        self.executor = executor
        self.stop_event = stop
        self.poll_timeout = poll_timeout
        self.min_poll_interval = min_poll_interval
        self.fatal_error: str | None = None
        self._tasks: dict[str, Task] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._cond = threading.Condition()
        self._changes = 0  # bumped whenever a task finishes or the loop must wake up
        self._forgotten: collections.deque[str] = collections.deque(maxlen=FORGOTTEN_MEMORY)
        self._thread: threading.Thread | None = None
        self.polls = 0
        self._poll_open = False  # a poll is on its way or held by the combiner
        self._last_answered = False  # the previous poll was answered (not failed, not ended by its deadline)
        self._deadline_ends = 0  # held polls in a row that ended at their deadline
        self._telemetry: tuple[float, dict[str, float]] | None = None  # the newest reading for the next poll

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="scaleout-poll", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        self.stop_event.set()
        self.wake()

    def wake(self) -> None:
        """Interrupt an open poll so that the next one reports the tasks' current state."""
        with self._cond:
            self._changes += 1
            self._cond.notify_all()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def client_id(self) -> str:
        return self.connection.identity.client_id

    def held_tasks(self) -> list[Task]:
        with self._cond:
            return list(self._tasks.values())

    def abort_all(self, reason: str) -> int:
        """Flag every unfinished task; returns how many were running."""
        running = [t for t in self.held_tasks() if not t.done]
        for task in running:
            task.abort(reason)
        return len(running)

    def wait_for_tasks(self, timeout: float) -> bool:
        """Wait until every held task has finished; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            return self._cond.wait_for(lambda: all(t.done for t in self._tasks.values()),
                                       timeout=max(0.0, deadline - time.monotonic()))

    # -- liveness and telemetry on the poll ---------------------------------------------------
    def carries_liveness(self) -> bool:
        """True while a poll is held and the one before it was answered: the combiner sees us (a separate
        heartbeat would tell it nothing new) and we saw it."""
        with self._cond:
            return self._poll_open and self._last_answered

    def carry_telemetry(self, values: dict[str, float], at: float) -> bool:
        """Hand a telemetry reading to the next poll (newer readings replace older ones); False when polls
        are not getting through, so the caller sends it on its own."""
        with self._cond:
            if not (self._poll_open and self._last_answered):
                return False
            self._telemetry = (at, dict(values))
            return True

    def _telemetry_metadata(self) -> tuple[tuple[str, str], ...]:
        with self._cond:
            reading, self._telemetry = self._telemetry, None
        if reading is None:
            return ()
        at, values = reading
        return ((MD_TELEMETRY, json.dumps({"at": round(at, 3), "values": values}, separators=(",", ":"))),)

    def _poll_state(self, open_: bool, answered: bool | None = None) -> None:
        with self._cond:
            self._poll_open = open_
            if answered is not None:
                self._last_answered = answered

    # -- the loop -----------------------------------------------------------------------------
    def _build_report(self, *, skip_polling_tasks: bool = False) -> tuple[pb.ClientReport, set[str]]:
        reports = [task.report(self.client_id) for task in self.held_tasks()]
        done = {r.correlation_id for r in reports if r.done}
        request = pb.ClientReport(client_id=self.client_id, reports=reports,
                                  poll_interval_ms=int(self.poll_timeout * 1000),
                                  skip_polling_tasks=skip_polling_tasks)
        return request, done

    def run(self) -> None:
        """The poll thread's body. An unexpected error stops the whole client (exit status 1): a client that
        keeps heartbeating without polling looks healthy to the server yet never runs a task."""
        try:
            self._poll_loop()
        except Exception as exc:
            logger.exception("the task poll loop crashed")
            self._fatal(f"the task poll loop crashed ({describe(exc)}); the client cannot receive tasks")

    def _poll_loop(self) -> None:
        backoff = Backoff()
        reauthed = False
        deadline_warned = False
        while not self.stop_event.is_set():
            with self._cond:
                seen = self._changes
            request, done_ids = self._build_report()
            generation = self.connection.generation
            started = time.monotonic()
            try:
                future = self.connection.combiner.PollAndReportAsync.future(
                    request, timeout=self.poll_timeout,
                    metadata=self.connection.metadata(*self._telemetry_metadata()))
            except TokenRefused as exc:
                self._fatal(f"cannot poll the combiner: {exc}")
                return
            except Exception as exc:  # e.g. the token server is unreachable right now
                delay = backoff.next_delay()
                logger.warning("cannot poll the combiner (%s), retrying in %.1fs", describe(exc), delay)
                self._sleep(delay)
                continue
            future.add_done_callback(lambda _f: self._notify())
            self._poll_state(True)
            with self._cond:
                # 1 s slices: a stop event set without wake() is still noticed promptly
                while not (future.done() or self.stop_event.is_set() or self._changes != seen):
                    self._cond.wait(1.0)
            self._poll_state(False)
            if not future.done() and future.cancel():
                continue  # a task finished (or we are stopping): report it with a fresh poll now
            try:
                directive = future.result()
            except grpc.FutureCancelledError:
                continue
            except grpc.RpcError as exc:
                action = classify(exc)
                code = exc.code() if hasattr(exc, "code") else None
                # A held poll that ends at (or near) its deadline is a normal end under load, not a failure:
                # poll again at once. Backing off here left idle clients deaf for up to 30 s with 1000 clients.
                near_deadline = time.monotonic() - started >= LATE_POLL_FRACTION * self.poll_timeout
                late = code == grpc.StatusCode.DEADLINE_EXCEEDED or (
                    code == grpc.StatusCode.CANCELLED and near_deadline)
                self._deadline_ends = self._deadline_ends + 1 if late else 0
                if not late or self._deadline_ends >= DEADLINE_ENDS_TOLERATED:
                    self._poll_state(False, answered=False)  # heartbeats and telemetry calls resume
                if late:
                    if not deadline_warned:
                        logger.info("the combiner held a poll until the %.0fs deadline (%s); polling again",
                                    self.poll_timeout, code.name if code else "?")
                        deadline_warned = True
                    continue
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    self._fatal(f"the combiner at {self.connection.target.address} does not implement "
                                f"PollAndReportAsync ({describe(exc)}): is it a Scaleout Edge combiner?")
                    return
                if action == REAUTH:
                    if self.connection.credentials is None:
                        self._fatal(f"the combiner refused the client ({describe(exc)}): it requires a token; "
                                    "start the client with --token")
                        return
                    if not reauthed:
                        reauthed = True
                        try:
                            self.connection.credentials.refresh()
                            continue
                        except TokenRefused as refused:
                            self._fatal(f"the combiner refused the client ({describe(exc)}) and {refused}")
                            return
                        except Exception as refresh_error:
                            logger.error("token refresh failed: %s", refresh_error)
                delay = backoff.next_delay()
                if action == RECONNECT:
                    logger.warning("combiner %s unreachable (%s), retrying in %.1fs",
                                   self.connection.target.address, describe(exc), delay)
                    self.connection.reconnect(generation)
                elif action == FATAL:
                    logger.error("poll failed (%s), retrying in %.1fs", describe(exc), delay)
                else:
                    logger.warning("poll failed (%s), retrying in %.1fs", describe(exc), delay)
                self._sleep(delay)
                continue
            self.polls += 1
            self._deadline_ends = 0
            self._poll_state(False, answered=True)
            if self.on_contact is not None:
                self.on_contact()
            backoff.reset()
            reauthed = False
            self._forget(done_ids)
            with self._cond:
                before_start = self._changes
            if not self._handle(directive):
                # nothing new to run (at most status updates for held tasks, e.g. "stop that task" repeated
                # by a combiner that does not know it): pace, or a task slow to stop would make us spin
                self._pace(started, seen)
            else:
                self._wait_for_change(before_start, NEW_TASK_GRACE)

    def _sleep(self, delay: float) -> None:
        """Back off, but wake early on stop or `wake()` (e.g. heartbeats reach the combiner again)."""
        with self._cond:
            seen = self._changes
            self._cond.wait_for(lambda: self.stop_event.is_set() or self._changes != seen, timeout=delay)

    def _wait_for_change(self, seen: int, timeout: float) -> None:
        """Until a task finishes (or `wake()`, or stop), at most `timeout` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self.stop_event.is_set() or self._changes != seen, timeout=timeout)

    def _pace(self, started: float, seen: int) -> None:
        """Keep at least `min_poll_interval` between empty polls (unless a task finished meanwhile)."""
        remaining = self.min_poll_interval - (time.monotonic() - started)
        if remaining > 0:
            with self._cond:
                self._cond.wait_for(lambda: self.stop_event.is_set() or self._changes != seen, timeout=remaining)

    def _fatal(self, message: str) -> None:
        logger.error(message)
        self.fatal_error = message
        self.stop_event.set()

    def _forget(self, done_ids: set[str]) -> None:
        if not done_ids:
            return
        with self._cond:
            for correlation_id in done_ids:
                self._tasks.pop(correlation_id, None)
                self._threads.pop(correlation_id, None)
                self._forgotten.append(correlation_id)

    def _handle(self, directive: pb.CombinerDirective) -> int:
        """Apply status updates to held tasks and start new ones; returns how many were started."""
        started = 0
        for request in directive.tasks:
            correlation_id = request.correlation_id
            if not correlation_id:
                logger.warning("ignoring a task without correlation_id (type %r)", request.type)
                continue
            with self._cond:
                task = self._tasks.get(correlation_id)
            if task is not None:
                self._status_update(task, request.status)
                continue
            if correlation_id in self._forgotten:
                logger.debug("ignoring re-delivered task %s, already reported done", correlation_id)
                continue
            if request.status in _ABORT_REASONS:
                logger.debug("ignoring %s for unknown task %s", request.status, correlation_id)
                continue
            if self.stop_event.is_set():  # shutdown already aborted the held tasks; this one would run on unchecked
                logger.info("not starting task %s (%s): the client is stopping", correlation_id, request.type)
                continue
            self._start(request)
            started += 1
        return started

    def _status_update(self, task: Task, status: str) -> None:
        reason = _ABORT_REASONS.get(status)
        if reason is not None:
            task.abort(reason)
        elif status not in _VALID_STATUSES:
            logger.warning("task %s: ignoring unknown status %r from the combiner", task.correlation_id, status)

    def _start(self, request: pb.TaskRequest) -> None:
        task = Task(request)
        thread = threading.Thread(target=self._run_task, args=(task,), name=f"task-{task.correlation_id[:8]}",
                                  daemon=True)
        with self._cond:
            self._tasks[task.correlation_id] = task
            self._threads[task.correlation_id] = thread
        logger.info("received task %s: %s", task.correlation_id, request.type)
        thread.start()

    def _run_task(self, task: Task) -> None:
        try:
            self.executor.run(task)
        finally:
            if not task.done:  # executor.run never raises; belt and braces
                task.finish(TaskStatus.FAILED, {"error": "task ended without a result"})
            self.wake()

    def final_report(self, timeout: float = 2.0) -> Any:
        """One last poll with `skip_polling_tasks` so the combiner learns how our tasks ended (no new tasks)."""
        request, done_ids = self._build_report(skip_polling_tasks=True)
        if not request.reports:
            return None
        try:
            result = self.connection.combiner.PollAndReportAsync(request, timeout=timeout,
                                                                 metadata=self.connection.metadata())
        except Exception as exc:
            logger.warning("could not send the final task report: %s", describe(exc))
            return None
        self._forget(done_ids)
        return result
