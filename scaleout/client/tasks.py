"""Running one task the combiner handed out: the user's callback plus the model transfers around it.

Each task runs in its own thread (see task_receiver). Whatever happens in user code ends as a final
status on the Task (COMPLETED, FAILED or INTERRUPTED) with a JSON response; nothing escapes into the
poll loop, so a broken callback never takes the client down.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from scaleout.client.connection import CombinerError, Connection, Interrupted, Outbox
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.model import InvalidModel, ScaleoutModel
from scaleoututil.protocol import TaskStatus, TaskType, is_custom_task

logger = logging.getLogger(__name__)

TRACEBACK_LINES = 15
MODEL_UPDATE_STATUS = "MODEL_UPDATE"
MODEL_VALIDATION_STATUS = "MODEL_VALIDATION"


class StoppedException(Exception):
    """Raised inside a task's callback (by check_task_abort or a log_* call) once the task was aborted."""


class TaskFailed(Exception):
    """A task cannot be completed for a reason the user can fix; the message is reported as the error."""


def now_timestamp(at: float | None = None) -> Timestamp:
    ts = Timestamp()
    if at is None:
        ts.GetCurrentTime()
    else:
        ts.FromNanoseconds(int(at * 1e9))
    return ts


# -- task state --------------------------------------------------------------------------------
class Task:
    """One TaskRequest held by the client, from delivery until its done report reached the server."""

    def __init__(self, request: pb.TaskRequest) -> None:
        self.request = request
        self.correlation_id = request.correlation_id
        self.status: str = TaskStatus.PENDING
        self.done = False
        self.response = ""  # JSON text, reported when non-empty
        self.started_at: float | None = None
        self.completed_at: float | None = None
        self.abort_event = threading.Event()
        self.abort_reason = ""
        self._lock = threading.Lock()

    def abort(self, reason: str) -> None:
        with self._lock:
            if self.done or self.abort_event.is_set():
                return
            self.abort_reason = reason
            self.abort_event.set()
        logger.info("task %s (%s): abort requested: %s", self.correlation_id, self.request.type, reason)

    def raise_if_aborted(self) -> None:
        if self.abort_event.is_set():
            raise StoppedException(self.abort_reason or "Task aborted")

    def mark_running(self) -> None:
        with self._lock:
            self.status = TaskStatus.RUNNING
            self.started_at = time.time()

    def finish(self, status: str, response: dict[str, Any] | str | None = None) -> None:
        text = response if isinstance(response, str) else (json.dumps(response) if response else "")
        with self._lock:
            self.status = status
            self.response = text
            self.completed_at = time.time()
            self.done = True

    def report(self, node_id: str) -> pb.ActivityReport:
        """The ActivityReport for the next poll (a consistent snapshot)."""
        with self._lock:
            report = pb.ActivityReport(node_id=node_id, correlation_id=self.correlation_id,
                                       status=str(self.status), done=self.done)
            if self.response:
                report.response = self.response
            if self.started_at is not None:
                report.started_at.CopyFrom(now_timestamp(self.started_at))
            if self.completed_at is not None:
                report.completed_at.CopyFrom(now_timestamp(self.completed_at))
        return report


# -- per-thread task context (what log_metric attaches its ids from) ---------------------------
@dataclass
class TaskContext:
    """Identifiers of the task a thread works for, plus its metric step counter."""

    model_id: str = ""
    round_id: str = ""
    session_id: str = ""
    correlation_id: str = ""
    step: int = 0
    task: Task | None = field(default=None, repr=False)

    @classmethod
    def for_task(cls, task: Task) -> TaskContext:
        r = task.request
        return cls(model_id=r.model_id, round_id=r.round_id, session_id=r.session_id,
                   correlation_id=r.correlation_id, task=task)

    def raise_if_aborted(self) -> None:
        if self.task is not None:
            self.task.raise_if_aborted()


_local = threading.local()


def current_context() -> TaskContext | None:
    return getattr(_local, "context", None)


@contextlib.contextmanager
def activate(context: TaskContext) -> Iterator[TaskContext]:
    """Make `context` the calling thread's task context for the duration of the block."""
    previous = current_context()
    _local.context = context
    try:
        yield context
    finally:
        _local.context = previous


# -- staged models -------------------------------------------------------------------------------
class ModelCache:
    """Models staged for inference, one `<model_id>.scm` file each (the published client's layout), fetched
    from the combiner the first time they are needed. Written through a temporary name, so a crash never
    leaves a truncated model under the final one."""

    def __init__(self, directory: Path | str, download: Callable[[str, threading.Event | None], ScaleoutModel]
                 ) -> None:
        self.directory = Path(directory)
        self._download = download
        self._lock = threading.Lock()

    def path(self, model_id: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)
        return self.directory / f"{safe}.scm"

    def has(self, model_id: str) -> bool:
        return self.path(model_id).is_file()

    def put(self, model: ScaleoutModel) -> ScaleoutModel:
        """Keep `model` (a no-op when a model with its id is staged already)."""
        path = self.path(str(model.model_id))
        with self._lock:
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(path.name + f".{uuid.uuid4().hex}.partial")
                model.save_to_file(str(partial))
                partial.replace(path)
        return model

    def get(self, model_id: str, stop: threading.Event | None = None) -> ScaleoutModel:
        """The staged model, downloading and keeping it when absent. TaskFailed when the combiner sends an
        unusable model or another one."""
        if not model_id:
            raise TaskFailed("no model id given to stage")
        path = self.path(model_id)
        if path.is_file():
            return ScaleoutModel.from_file(str(path))
        try:
            model = self._download(model_id, stop)
        except InvalidModel as exc:
            raise TaskFailed(f"the combiner sent an unusable model {model_id}: {exc}") from exc
        if model.model_id != model_id:
            raise TaskFailed(f"Model ID mismatch: requested {model_id}, combiner sent {model.model_id}")
        return self.put(model)


# -- callbacks ----------------------------------------------------------------------------------
@dataclass
class CallbackRegistry:
    """The user's callbacks, set through EdgeClient and read by the executor; `models` is the executor's
    model cache, which EdgeClient.stage_model uses too (None until the client is connected)."""

    train: Callable[..., Any] | None = None
    validate: Callable[..., Any] | None = None
    predict: Callable[..., Any] | None = None
    inference: Callable[..., Any] | None = None
    stage: Callable[..., Any] | None = None
    custom: dict[str, Callable[..., Any]] = field(default_factory=dict)
    models: ModelCache | None = field(default=None, repr=False)


def build_status(client_id: str, message: str, log_level: int | str = "INFO", status_type: str | None = None
                 ) -> pb.Status:
    """A Status message; `log_level` is a LogLevel name ("INFO", "AUDIT"...) or its number."""
    if isinstance(log_level, str):
        try:
            level = pb.LogLevel.Value(log_level.upper())
        except ValueError as exc:
            names = ", ".join(pb.LogLevel.keys())
            raise ValueError(f"unknown log level {log_level!r}; use one of {names}") from exc
    else:
        level = int(log_level)
    return pb.Status(client_id=client_id, status=message, log_level=level, timestamp=now_timestamp(),
                     type=status_type or "")


def _accepts_two_args(callback: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):
        return False
    positional = 0
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if param.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 2


def _to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TaskFailed(f"{what} returned a value that cannot be sent as JSON ({exc}); "
                         "return a dict of str/int/float/bool/list/dict values") from exc


def _parse_data(request: pb.TaskRequest) -> dict[str, Any]:
    if not request.data.strip():
        return {}
    try:
        data = json.loads(request.data)
    except json.JSONDecodeError as exc:
        raise TaskFailed(f"task data is not valid JSON ({exc}): {request.data[:200]!r}") from exc
    if not isinstance(data, dict):
        raise TaskFailed(f"task data must be a JSON object, got {type(data).__name__}")
    return data


def _dict_field(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TaskFailed(f"task data field '{key}' must be a JSON object, got {type(value).__name__}")
    return value


# -- the executor -------------------------------------------------------------------------------
class TaskExecutor:
    """Runs tasks against the user's callbacks; talks to the combiner through `connection`/`outbox`."""

    def __init__(self, connection: Connection, outbox: Outbox, callbacks: CallbackRegistry,
                 model_cache_dir: Path | str, *, send_statuses: bool = True) -> None:
        self.connection = connection
        self.outbox = outbox
        self.callbacks = callbacks
        self.model_cache_dir = Path(model_cache_dir)
        self.send_statuses = send_statuses
        self.models = ModelCache(self.model_cache_dir, lambda model_id, stop: connection.download_model(model_id,
                                                                                                     stop=stop))
        callbacks.models = self.models

    @property
    def client_id(self) -> str:
        return self.connection.identity.client_id

    def status(self, message: str, level: str, status_type: str | None = None) -> None:
        if self.send_statuses:
            self.outbox.put("SendStatus", build_status(self.client_id, message, level, status_type))

    def run(self, task: Task) -> None:
        """Execute `task` to a final status. Never raises."""
        request = task.request
        task.mark_running()
        logger.info("task %s: %s started (model %s)", task.correlation_id, request.type, request.model_id or "-")
        try:
            with activate(TaskContext.for_task(task)):
                response = self._dispatch(task)
            task.finish(TaskStatus.COMPLETED, response)
            logger.info("task %s: %s completed", task.correlation_id, request.type)
        except (StoppedException, Interrupted) as exc:
            reason = task.abort_reason or (str(exc) if isinstance(exc, StoppedException) and str(exc) else
                                           "Stopped by the client code")
            task.finish(TaskStatus.INTERRUPTED, {"msg": reason})
            logger.info("task %s: %s interrupted: %s", task.correlation_id, request.type, reason)
        except (TaskFailed, CombinerError) as exc:
            task.finish(TaskStatus.FAILED, {"error": str(exc)})
            logger.error("task %s: %s failed: %s", task.correlation_id, request.type, exc)
            self._failure_status(request, str(exc))
        except (Exception, SystemExit) as exc:  # user code may raise anything, sys.exit() included
            error = f"{type(exc).__name__}: {exc}"
            lines = "".join(traceback.format_exception(exc)).rstrip().splitlines()
            task.finish(TaskStatus.FAILED, {"error": error, "traceback": "\n".join(lines[-TRACEBACK_LINES:])})
            logger.error("task %s: %s failed: %s", task.correlation_id, request.type, error, exc_info=exc)
            self._failure_status(request, error)

    def _failure_status(self, request: pb.TaskRequest, error: str) -> None:
        if request.type == TaskType.MODEL_UPDATE:
            self.status(f"Model update failed: {error}", "ERROR", MODEL_UPDATE_STATUS)
        elif request.type == TaskType.VALIDATION:
            self.status(f"Model validation failed: {error}", "ERROR", MODEL_VALIDATION_STATUS)

    def _dispatch(self, task: Task) -> str | None:
        kind = task.request.type
        if kind == TaskType.MODEL_UPDATE:
            return self._train(task)
        if kind == TaskType.VALIDATION:
            return self._validate(task)
        if kind == TaskType.INFERENCE:
            return self._predict(task)
        if kind == TaskType.STAGE_MODEL:
            self._stage(task)
            return None
        if is_custom_task(kind):
            return self._custom(task)
        if kind == TaskType.RESTART_CLIENT:
            raise TaskFailed(f"Invalid task type: {kind} (this client does not restart itself; restart it with "
                             "the tool that runs it, e.g. systemd or docker)")
        raise TaskFailed(f"Invalid task type: {kind}")

    # -- model transfer helpers -------------------------------------------------------------
    def _download(self, task: Task) -> ScaleoutModel:
        model_id = task.request.model_id
        if not model_id:
            raise TaskFailed(f"{task.request.type} task carries no model_id")
        try:
            model = self.connection.download_model(model_id, stop=task.abort_event)
        except InvalidModel as exc:
            raise TaskFailed(f"the combiner sent an unusable model {model_id}: {exc}") from exc
        if model.model_id != model_id:
            raise TaskFailed(f"Model ID mismatch: requested {model_id}, combiner sent {model.model_id}")
        return model

    def _staged(self, task: Task) -> ScaleoutModel:
        """The task's model from the local cache, downloading (and caching) it when absent."""
        if not task.request.model_id:
            raise TaskFailed(f"{task.request.type} task carries no model_id")
        return self.models.get(task.request.model_id, stop=task.abort_event)

    # -- handlers -----------------------------------------------------------------------------
    def _train(self, task: Task) -> None:
        request = task.request
        train = self.callbacks.train
        if train is None:
            raise TaskFailed("no train callback is registered: call client.set_train_callback(train) in startup()")
        settings = _dict_field(_parse_data(request), "client_settings")

        started = time.monotonic()
        model = self._download(task)
        fetch_model = time.monotonic() - started
        self.status(f"\t Starting processing of training request for model_id {request.model_id}", "INFO",
                    MODEL_UPDATE_STATUS)

        started = time.monotonic()
        result = train(model, settings)
        processing_time = time.monotonic() - started
        task.raise_if_aborted()  # aborted while training: the server no longer wants this update

        out_model, meta = self._check_train_result(result)
        meta = {**meta, "processing_time": processing_time, "fetch_model": fetch_model, "config": request.data}
        _to_json(meta, "the train callback's metadata")

        out_model.model_id = str(uuid.uuid4())  # re-stamps the container the combiner will receive
        started = time.monotonic()
        self.connection.upload_model(out_model, stop=task.abort_event)
        meta["upload_model"] = time.monotonic() - started

        update = pb.ModelUpdate(
            client_id=self.client_id, model_id=request.model_id, model_update_id=str(out_model.model_id),
            correlation_id=request.correlation_id, round_id=request.round_id, session_id=request.session_id,
            timestamp=now_timestamp(), meta=json.dumps(meta))
        self.connection.call("SendModelUpdate", update, stop=task.abort_event)
        self.status("Model update completed.", "AUDIT", MODEL_UPDATE_STATUS)
        return None

    @staticmethod
    def _check_train_result(result: Any) -> tuple[ScaleoutModel, dict[str, Any]]:
        expected = ("the train callback must return (model, metadata): a ScaleoutModel and a dict such as "
                    "{'training_metadata': {'num_examples': N}} with N > 0, the number of examples trained on")
        if not isinstance(result, tuple) or len(result) != 2:
            raise TaskFailed(f"{expected}; it returned {type(result).__name__}")
        model, meta = result
        if not isinstance(model, ScaleoutModel):
            raise TaskFailed(f"{expected}; the model is {type(model).__name__} "
                             "(build one with ScaleoutModel.from_model_params(params, helper))")
        if not isinstance(meta, dict):
            raise TaskFailed(f"{expected}; the metadata is {type(meta).__name__}")
        training = meta.get("training_metadata")
        num_examples = training.get("num_examples") if isinstance(training, dict) else None
        if isinstance(num_examples, bool) or not isinstance(num_examples, int | float) or not num_examples > 0:
            raise TaskFailed(f"{expected}; training_metadata.num_examples is {num_examples!r}")
        return model, meta

    def _validate(self, task: Task) -> None:
        request = task.request
        validate = self.callbacks.validate
        if validate is None:
            raise TaskFailed("no validate callback is registered: call client.set_validate_callback(validate) "
                             "in startup()")
        self.status(f"Processing validate request for model_id {request.model_id}", "INFO", MODEL_VALIDATION_STATUS)
        model = self._download(task)
        metrics = validate(model)
        task.raise_if_aborted()
        if metrics is not None:
            validation = pb.ModelValidation(
                client_id=self.client_id, model_id=request.model_id,
                data=_to_json(metrics, "the validate callback"), correlation_id=request.correlation_id,
                session_id=request.session_id, timestamp=now_timestamp())
            self.connection.call("SendModelValidation", validation, stop=task.abort_event)
        self.status("Model validation completed.", "AUDIT", MODEL_VALIDATION_STATUS)
        return None

    def _predict(self, task: Task) -> str | None:
        """`Scaleout_Inference`: the inference callback (published 1.1 semantics: it reports its results
        with client.log_inference_result, its return value is not sent), else the predict callback (its
        return value is the result)."""
        inference, predict = self.callbacks.inference, self.callbacks.predict
        if inference is None and predict is None:
            raise TaskFailed("no inference callback is registered: call client.set_inference_callback(infer) "
                             "(or client.set_predict_callback(predict)) in startup()")
        parameters = _dict_field(_parse_data(task.request), "parameters")
        model = self._staged(task)
        if inference is not None:
            inference(model, parameters)
            return None
        assert predict is not None
        result = predict(model, parameters) if _accepts_two_args(predict) else predict(model)
        return None if result is None else _to_json(result, "the predict callback")

    def _stage(self, task: Task) -> None:
        """`Scaleout_StageModel`: cache the model, then hand it to the stage callback, if any."""
        model = self._staged(task)
        if self.callbacks.stage is not None:
            self.callbacks.stage(model)

    def _custom(self, task: Task) -> str | None:
        kind = task.request.type
        callback = self.callbacks.custom.get(kind)
        if callback is None:
            raise TaskFailed(f"Unknown task type: {kind}")
        parameters = _dict_field(_parse_data(task.request), "parameters")
        result = callback(parameters)
        return None if result is None else _to_json(result, f"the custom callback for {kind}")
