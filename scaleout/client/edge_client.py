"""EdgeClient: what a project's `startup(client)` receives.

Deliberately small: register callbacks, log metrics/attributes/telemetry, check for aborts, send a
status line. Everything about transport (channels, retries, polling) stays in the runtime, which
attaches itself with `_attach` once the client is registered with the server.
"""

from __future__ import annotations

import json
import logging
import numbers
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.wrappers_pb2 import UInt32Value

from scaleout.client.connection import Outbox
from scaleout.client.tasks import (
    CallbackRegistry,
    StoppedException,
    TaskContext,
    build_status,
    current_context,
    now_timestamp,
)
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.model import ScaleoutModel
from scaleoututil.partitioning import Partition
from scaleoututil.protocol import custom_task_type

__all__ = ["EdgeClient", "StoppedException", "TaskContext"]

logger = logging.getLogger(__name__)

MAX_STEP = 2**32 - 1


def _number(key: str, value: Any, what: str) -> float:
    """Numbers, numpy scalars and one-element tensors become floats; anything else is refused."""
    if not isinstance(value, str | bytes):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"{what} values must be numbers; '{key}' is {type(value).__name__} {value!r}")


class EdgeClient:
    """The client handle passed to `startup(client)`; register callbacks and log from them.

    Callbacks: `train(model, settings) -> (ScaleoutModel, metadata)`, `validate(model) -> dict`,
    `predict(model[, parameters]) -> dict`, `inference(model, parameters)` (reports with
    `log_inference_result`), `stage(model)`, custom `callback(parameters) -> dict`.
    """

    def __init__(self, train_callback: Callable[..., Any] | None = None,
                 validate_callback: Callable[..., Any] | None = None,
                 predict_callback: Callable[..., Any] | None = None) -> None:
        self._callbacks = CallbackRegistry(train=train_callback, validate=validate_callback,
                                           predict=predict_callback)
        self._client_id: str | None = None
        self._name: str | None = None
        self._outbox: Outbox | None = None
        self._default_context = TaskContext()  # metrics logged outside any task
        self._step_lock = threading.Lock()
        self._partition: Partition | None = None  # set by `scaleout simulate` for each virtual client

    # -- identity -----------------------------------------------------------------------------
    @property
    def client_id(self) -> str | None:
        """The id the server knows this client by (None until the client is registered)."""
        return self._client_id

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def partition(self) -> Partition | None:
        """Which share of the data this client trains on: set per virtual client by `scaleout simulate`,
        else read from SCALEOUT_PARTITION_ID / SCALEOUT_NUM_PARTITIONS; None when neither says."""
        return self._partition or Partition.from_env()

    def _attach(self, client_id: str, name: str, outbox: Outbox | None) -> None:
        """Called by the runtime once registered: where log_* messages go from now on."""
        self._client_id = client_id
        self._name = name
        self._outbox = outbox

    # -- callbacks ----------------------------------------------------------------------------
    def set_train_callback(self, callback: Callable[..., Any] | None) -> None:
        """`callback(model: ScaleoutModel, settings: dict) -> (ScaleoutModel, {"training_metadata": {...}})`."""
        self._callbacks.train = callback

    def set_validate_callback(self, callback: Callable[..., Any] | None) -> None:
        """`callback(model: ScaleoutModel) -> dict of metrics` (None sends nothing)."""
        self._callbacks.validate = callback

    @property
    def validates(self) -> bool:
        """Whether a validate callback is registered: the client announces it, and a combiner sends validation
        tasks only to clients that validate."""
        return self._callbacks.validate is not None

    def set_predict_callback(self, callback: Callable[..., Any] | None) -> None:
        """`callback(model)` or `callback(model, parameters)`; its JSON-able result is reported."""
        self._callbacks.predict = callback

    def set_inference_callback(self, callback: Callable[..., Any] | None) -> None:
        """`callback(model: ScaleoutModel, parameters: dict)` for `Scaleout_Inference` tasks, as in the published
        1.1 client: it reports results with `log_inference_result(key, payload)` (any number, each stored on the
        server); its return value is not sent. Set, it is used instead of the predict callback."""
        self._callbacks.inference = callback

    def set_stage_model_callback(self, callback: Callable[..., Any] | None) -> None:
        """`callback(model: ScaleoutModel)`, run after a `Scaleout_StageModel` task cached the model (e.g. to load
        it onto an accelerator before inference requests arrive)."""
        self._callbacks.stage = callback

    def set_custom_callback(self, name: str, callback: Callable[..., Any]) -> None:
        """Run `callback(parameters: dict)` for task `Custom_<name>` (the prefix is added unless present)."""
        task_type = custom_task_type(name)
        self._callbacks.custom[task_type] = callback
        logger.info("registered custom callback %s", task_type)

    def remove_custom_callback(self, name: str) -> None:
        task_type = custom_task_type(name)
        if self._callbacks.custom.pop(task_type, None) is None:
            logger.warning("no custom callback %s to remove", task_type)

    # -- aborts -------------------------------------------------------------------------------
    @property
    def current_task_context(self) -> TaskContext | None:
        """The calling thread's task context; pass it as `context=` to log from threads you start."""
        return current_context()

    def check_task_abort(self) -> None:
        """Raise StoppedException if the server (or Ctrl-C) aborted the task this thread runs.

        Call it regularly in long callbacks; outside a task thread it does nothing.
        """
        context = current_context()
        if context is not None:
            context.raise_if_aborted()

    # -- logging ------------------------------------------------------------------------------
    def log_metric(self, metrics: Mapping[str, Any] | str, value: Any = None, step: int | None = None,
                   commit: bool = True, check_task_abort: bool = True, context: TaskContext | None = None) -> bool:
        """Send scalar metrics tagged with the current task's model, round and session.

        `log_metric({"loss": 0.3, "acc": 0.9})` or `log_metric("loss", 0.3)`. `step` defaults to the
        task's counter (0, 1, 2... one per committed call); `commit=False` logs without advancing it.
        Returns True when the metrics were queued for sending.
        """
        if isinstance(metrics, str):
            if value is None:
                raise TypeError(f"log_metric({metrics!r}, value): give the value to log for key {metrics!r}")
            metrics = {metrics: value}
        elif isinstance(metrics, Mapping):
            if value is not None:
                if step is not None:
                    raise TypeError("log_metric(dict, value, step): a dict of metrics takes no separate value")
                step = value  # log_metric(dict, step), the published clients' positional form
        else:
            raise TypeError(f"log_metric takes a dict of metrics or a key and a value, not {type(metrics).__name__}")
        if not metrics:
            raise ValueError("log_metric: no metrics given")
        elements = [pb.MetricElem(key=str(k), value=_number(str(k), v, "metric")) for k, v in metrics.items()]

        ctx = context or current_context() or self._default_context
        with self._step_lock:
            if step is not None:
                if isinstance(step, bool) or not isinstance(step, numbers.Integral) or not 0 <= step <= MAX_STEP:
                    raise ValueError(f"log_metric: step must be an integer between 0 and {MAX_STEP}, got {step!r}")
                ctx.step = int(step)
            used_step = ctx.step
            if commit:
                ctx.step += 1
        message = pb.ModelMetric(client_id=self._client_id or "", metrics=elements, timestamp=now_timestamp(),
                                 step=UInt32Value(value=used_step), model_id=ctx.model_id, round_id=ctx.round_id,
                                 session_id=ctx.session_id)
        sent = self._send("SendModelMetric", message)
        if check_task_abort:
            ctx.raise_if_aborted()
        return sent

    def log_attributes(self, attributes: Mapping[str, Any], check_task_abort: bool = True) -> bool:
        """Send key/value attributes describing this client (e.g. {"dataset": "site-a", "gpus": 2})."""
        if not isinstance(attributes, Mapping) or not attributes:
            raise TypeError("log_attributes takes a non-empty dict of attributes")
        elements = [pb.AttributeElem(key=str(k), value=v if isinstance(v, str) else json.dumps(v))
                    for k, v in attributes.items()]
        message = pb.AttributeMessage(client_id=self._client_id or "", attributes=elements,
                                      timestamp=now_timestamp())
        sent = self._send("SendAttributeMessage", message)
        if check_task_abort:
            self.check_task_abort()
        return sent

    def log_telemetry(self, telemetry: Mapping[str, Any], check_task_abort: bool = True) -> bool:
        """Send numeric telemetry (e.g. {"gpu_memory": 0.7})."""
        if not isinstance(telemetry, Mapping) or not telemetry:
            raise TypeError("log_telemetry takes a non-empty dict of numbers")
        elements = [pb.TelemetryElem(key=str(k), value=_number(str(k), v, "telemetry")) for k, v in telemetry.items()]
        message = pb.TelemetryMessage(client_id=self._client_id or "", telemetries=elements,
                                      timestamp=now_timestamp())
        sent = self._send("SendTelemetryMessage", message)
        if check_task_abort:
            self.check_task_abort()
        return sent

    def log_inference_result(self, key: str, payload: Any, context: Any = None, priority: str | None = None) -> bool:
        """Report one inference result (`key` labels it, e.g. "detection"; `payload` is JSON-able) for the
        inference task this thread runs, or the one `context` names (`client.current_task_context`, or an
        object with `inference_id` and `model_id`). Stored on the server as `{key: payload}` under the
        inference run. Outside an inference task nothing is sent and False is returned, as in the published
        client. `priority` is accepted for compatibility (this client sends in order)."""
        del priority
        ctx = context or current_context()
        inference_id = getattr(ctx, "inference_id", None) or getattr(ctx, "correlation_id", "") if ctx else ""
        if not inference_id:
            logger.warning("log_inference_result called outside an inference task; result %r dropped", key)
            return False
        if not isinstance(key, str) or not key:
            raise TypeError("log_inference_result: key must be a non-empty string, e.g. 'detection'")
        try:
            data = json.dumps({key: payload})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"log_inference_result: payload of {key!r} cannot be sent as JSON ({exc})") from exc
        message = pb.ModelPrediction(client_id=self._client_id or "", model_id=getattr(ctx, "model_id", "") or "",
                                     data=data, correlation_id=inference_id, prediction_id=str(uuid.uuid4()),
                                     timestamp=now_timestamp())
        return self._send("SendModelPrediction", message)

    # -- staging and inference ----------------------------------------------------------------
    def stage_model(self, model: ScaleoutModel | str) -> ScaleoutModel:
        """Keep a model in the local model cache (`.scaleout/model_cache`), ready for inference: a model id is
        downloaded from the combiner unless cached already; a ScaleoutModel is stored as given. Returns the
        model. The stage callback is not called (it runs for the server's staging tasks)."""
        cache = self._callbacks.models
        if cache is None:
            raise RuntimeError("stage_model needs a connected client: call it from a task or after start-up")
        if isinstance(model, ScaleoutModel):
            return cache.put(model)
        if not isinstance(model, str) or not model:
            raise TypeError(f"stage_model takes a ScaleoutModel or a model id, not {type(model).__name__}")
        return cache.get(model)

    def run_inference(self, model: ScaleoutModel | str | None = None, params: dict[str, Any] | None = None) -> Any:
        """Run the inference callback on `model` (a ScaleoutModel, or a model id, staged first) and return what
        it returns. Results it logs reach the server only inside an inference task."""
        inference = self._callbacks.inference
        if inference is None:
            raise ValueError("No inference callback set: call client.set_inference_callback(infer) first")
        if isinstance(model, str):
            model = self.stage_model(model)
        if model is None:
            raise ValueError("Model not found in repository.")
        return inference(model, params)

    def send_status(self, msg: str, log_level: str | int = "INFO", type: str | None = None) -> bool:
        """Send a status line to the server (`log_level`: INFO, DEBUG, WARNING, ERROR or AUDIT)."""
        return self._send("SendStatus", build_status(self._client_id or "", msg, log_level, type))

    def _send(self, rpc: str, message: Any) -> bool:
        if self._outbox is None:
            logger.warning("%s not sent: the client is not connected to a combiner yet", rpc)
            return False
        return self._outbox.put(rpc, message)
