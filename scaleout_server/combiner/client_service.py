"""The `scaleout.CombinerClient` servicer: what edge clients call.

Translation only: identify the client, turn messages into store records for the controller's
feed, and hand tasks and updates to the client manager and the rounds.

Error codes follow the client contract. The published clients exit when a poll fails with anything
but UNAVAILABLE/FAILED_PRECONDITION, so the polls answer those two only. The reports that answer a
task are checked instead of trusted, because the published clients drop a message answered with
NOT_FOUND or INVALID_ARGUMENT and go on with their other tasks (they retry only UNAVAILABLE and
FAILED_PRECONDITION, which is why neither is used here):
- an update, validation, prediction or inference result must answer a task this combiner issued to
  that client (correlation id and client id; ClientManager.issued_task), else NOT_FOUND saying why,
  and nothing is stored. Tasks live in memory, so those issued before a restart are unknown
  afterwards (the round logic re-runs what they belonged to); an update whose round has ended is
  NOT_FOUND too. A replay of an accepted report answers OK each time and is stored once;
- a field the protocol defines as JSON (ModelUpdate.meta, ModelValidation.data, ModelPrediction.data,
  InferenceResult.payload, ClientAnnounceRequest.parameters) that is not JSON is INVALID_ARGUMENT;
- an Announce of an unknown type is INVALID_ARGUMENT.
Other problems with a client's data (a model_update_id that cannot be a file name, an update
without num_examples, malformed poll telemetry) are logged and answered with a normal Response
that says why, as before: the round records the failed task either way.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

import grpc

from scaleout_server.combiner.client_manager import (
    ClientManager,
    ClientState,
    MalformedReport,
    Task,
    UnknownTask,
    report_json,
)
from scaleout_server.combiner.controller_link import EventLink
from scaleout_server.combiner.rounds import Rounds
from scaleout_server.store import records as r
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
from scaleoututil.jsontext import loads_lenient
from scaleoututil.protocol import MD_CLIENT, MD_CLIENT_ID, MD_NAME, MD_TELEMETRY, AnnounceType, TaskType

log = logging.getLogger(__name__)

STATUS_TASK_TYPES = {"MODEL_UPDATE": TaskType.MODEL_UPDATE.value, "MODEL_VALIDATION": TaskType.VALIDATION.value}
ANNOUNCE_TYPES = {t.value for t in AnnounceType}
# how long an inference result for a task not known yet waits for it: a client's own (autonomous) inference
# streams results at once, the poll announcing the task may follow a poll interval later
INFERENCE_TASK_GRACE = 15.0


def server_version() -> str:
    try:
        return importlib_metadata.version("scaleout-edge-open")
    except importlib_metadata.PackageNotFoundError:
        return "0.0.0"


def metadata_of(context: grpc.aio.ServicerContext) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, bytes):
            continue
        out.setdefault(key.lower(), value)
    return out


def peer_ip(context: grpc.aio.ServicerContext) -> str | None:
    """`ipv4:10.0.0.5:51234` -> `10.0.0.5`; `ipv6:[::1]:5000` -> `::1`."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]").replace("%5B", "").replace("%5D", "")
    return None


def timestamp_of(message: Any) -> datetime:
    """The client's timestamp; the time of arrival when there is none or it is not a valid time (seconds
    outside years 1-9999 or nanos outside 0-999999999 made ToDatetime raise, and the call end UNKNOWN)."""
    if message.HasField("timestamp"):
        ts = message.timestamp
        if ts.seconds or ts.nanos:
            try:
                return ts.ToDatetime(tzinfo=UTC)
            except (ValueError, OverflowError):
                pass
    return datetime.now(UTC)


def record_value(payload: str) -> Any:
    """The value of a streamed attribute or telemetry record.

    The 1.1 client wraps a scalar as `{"value": v}` (`log_attributes({"charging": "True"})`, the
    cpu/memory loop), while the unary messages of 1.0.x clients and ours carry `v` itself; unwrapping
    stores one shape for both, so `attributes/current` answers `"True"` whichever client sent it."""
    value = loads_lenient(payload)
    if isinstance(value, dict) and len(value) == 1 and "value" in value:
        return value["value"]
    return value


class RecentIds:
    """A bounded set: ids of records already forwarded, so client re-sends are not stored twice."""

    def __init__(self, size: int = 50_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def __contains__(self, value: object) -> bool:
        return value in self._ids

    def add(self, value: str) -> bool:
        """True when `value` is new."""
        if not value:
            return True
        if value in self._ids:
            return False
        self._ids[value] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


class CombinerClientService(pb_grpc.CombinerClientServicer):
    """Every RPC an edge client makes; see the module docstring for the error-code rules."""

    def __init__(self, clients: ClientManager, rounds: Rounds, link: EventLink) -> None:
        self.clients = clients
        self.rounds = rounds
        self.link = link
        self.version = server_version()
        self._seen = RecentIds()
        self.inference_task_grace = INFERENCE_TASK_GRACE  # read at start, so tests may shorten it
        clients.on_done = self._task_done

    # -- identity --------------------------------------------------------------------------
    def _client(self, context: grpc.aio.ServicerContext, message_client_id: str = "") -> ClientState | None:
        md = metadata_of(context)
        client_id = md.get(MD_CLIENT_ID) or md.get(MD_CLIENT) or message_client_id
        if not client_id:
            return None
        return self.clients.touch(client_id, md.get(MD_NAME), peer_ip(context))

    @staticmethod
    async def _refuse(context: grpc.aio.ServicerContext, problem: UnknownTask | MalformedReport) -> None:
        """End the call with NOT_FOUND (no such task for this client) or INVALID_ARGUMENT (not JSON)."""
        code = grpc.StatusCode.NOT_FOUND if isinstance(problem, UnknownTask) else grpc.StatusCode.INVALID_ARGUMENT
        log.warning("refused a client report (%s): %s", code.name, problem)
        await context.abort(code, str(problem))

    def _sender(self, state: ClientState | None, client_id: str = "") -> r.Sender:
        if state is None:
            return r.Sender(client_id=client_id or None)
        return r.Sender(client_id=state.client_id, name=state.name)

    # -- tasks -----------------------------------------------------------------------------
    async def PollAndReportAsync(self, request: pb.ClientReport, context: grpc.aio.ServicerContext
                                 ) -> pb.CombinerDirective:
        try:
            md = metadata_of(context)
            client_id = md.get(MD_CLIENT_ID) or md.get(MD_CLIENT) or request.client_id
            state = self.clients.touch(client_id, md.get(MD_NAME), peer_ip(context)) if client_id else None
            if state is not None and MD_TELEMETRY in md:
                self._poll_telemetry(state.client_id, md[MD_TELEMETRY])
            if state is None:
                problem = "no client id: send metadata 'client-id' or ClientReport.client_id"
            elif self.clients.closing:
                return pb.CombinerDirective()
            else:
                tasks = await self.clients.poll(state, request.reports, request.skip_polling_tasks,
                                                context.time_remaining(), request.poll_interval_ms / 1000)
                return pb.CombinerDirective(tasks=tasks)
        except Exception as exc:  # the official client exits on UNKNOWN: answer UNAVAILABLE instead
            log.exception("poll failed")
            problem = f"combiner error: {exc}"
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION if "client id" in problem
                            else grpc.StatusCode.UNAVAILABLE, problem)
        raise AssertionError("unreachable")

    async def PollAndReport(self, request: pb.ActivityReport, context: grpc.aio.ServicerContext) -> pb.TaskRequest:
        try:
            state = self._client(context, request.node_id)
            if state is None:
                problem = "no client id: send metadata 'client-id' or ActivityReport.node_id"
            elif self.clients.closing:
                return pb.TaskRequest()
            else:
                return await self.clients.legacy_poll(state, request, context.time_remaining())
        except Exception as exc:
            log.exception("legacy poll failed")
            problem = f"combiner error: {exc}"
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION if "client id" in problem
                            else grpc.StatusCode.UNAVAILABLE, problem)
        raise AssertionError("unreachable")

    async def TaskStream(self, request: pb.ClientAvailableMessage, context: grpc.aio.ServicerContext
                         ) -> AsyncIterator[pb.TaskRequest]:
        state = self._client(context, request.client_id)
        if state is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no client id: send metadata 'client-id'")
            return
        log.info("client %s opened a task stream", state.client_id)
        async for task in self.clients.stream(state):
            yield task

    def _task_done(self, task: Task) -> None:
        """A client reported a task done: an inference task's response is its prediction."""
        if task.type == TaskType.INFERENCE and task.response:
            state = self.clients.clients.get(task.client_id)
            self.link.emit_record(r.PredictionRecord(
                prediction_record_id=str(uuid.uuid4()), prediction_id=task.batch_id or task.correlation_id,
                model_id=task.model_id, sender=self._sender(state, task.client_id), data=task.response_json(),
                correlation_id=task.correlation_id))

    # -- announce / liveness ---------------------------------------------------------------
    async def Announce(self, request: pb.ClientAnnounceRequest, context: grpc.aio.ServicerContext) -> pb.Response:
        md = metadata_of(context)
        client_id = md.get(MD_CLIENT_ID) or md.get(MD_CLIENT) or request.client_id
        kind = request.type
        if kind not in ANNOUNCE_TYPES:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown announcement type {kind!r}: use one of "
                                f"{', '.join(sorted(ANNOUNCE_TYPES))}")
        try:
            parameters = report_json(request.parameters, "ClientAnnounceRequest.parameters")
        except MalformedReport as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if kind == AnnounceType.VERSION_CHECK:
            if client_id:  # a client process starting: it may validate now, whatever its predecessor did
                self.clients.touch(client_id, md.get(MD_NAME), peer_ip(context))
                self.clients.set_validates(client_id, True)
            client_version = parameters or {}
            version = client_version.get("client-version") if isinstance(client_version, dict) else None
            log.info("client %s (version %s) checked compatibility", client_id or "?", version or "?")
            return pb.Response(response=f"combiner version {self.version}",
                               parameters=json.dumps({"success": True, "version": self.version}))
        if not client_id:
            return pb.Response(response="no client id")
        if kind == AnnounceType.CONNECT:
            self.clients.connect(client_id, md.get(MD_NAME), peer_ip(context))
            validates = parameters.get("validate") if isinstance(parameters, dict) else None
            if isinstance(validates, bool):  # ours says; the published clients send no parameters
                self.clients.set_validates(client_id, validates, "it announced no validate callback")
        else:  # DISCONNECT
            self.clients.touch(client_id, md.get(MD_NAME), peer_ip(context))
            self.clients.disconnect(client_id)
        return pb.Response()

    async def SendHeartbeat(self, request: pb.Heartbeat, context: grpc.aio.ServicerContext) -> pb.Response:
        self._client(context, request.client_id)
        return pb.Response(response="heartbeat received")

    async def SendBacklogReport(self, request: pb.BacklogReport, context: grpc.aio.ServicerContext) -> pb.Response:
        state = self._client(context, request.client_id)
        if request.backlog_dropped_total:
            log.warning("client %s dropped %d queued message(s) so far (backlog %d)",
                        state.client_id if state else request.client_id, request.backlog_dropped_total,
                        request.backlog_total)
        return pb.Response(response="backlog report received")

    # -- results ---------------------------------------------------------------------------
    async def SendModelUpdate(self, request: pb.ModelUpdate, context: grpc.aio.ServicerContext) -> pb.Response:
        state = self._client(context, request.client_id)
        client_id = state.client_id if state else request.client_id
        try:
            note = self.rounds.receive_update(request, client_id, state.name if state else "")
        except (UnknownTask, MalformedReport) as exc:
            await self._refuse(context, exc)
        return pb.Response(response=note)

    async def SendModelValidation(self, request: pb.ModelValidation, context: grpc.aio.ServicerContext
                                  ) -> pb.Response:
        state = self._client(context, request.client_id)
        client_id = state.client_id if state else request.client_id
        try:
            data = report_json(request.data, "ModelValidation.data")
            task = self.clients.issued_task(request.correlation_id, client_id, "ModelValidation")
        except (UnknownTask, MalformedReport) as exc:
            await self._refuse(context, exc)
        if not self._seen.add(f"validation:{task.correlation_id}"):
            return pb.Response(response="duplicate validation, already received")
        task.validation = request.data or "{}"
        task.changed()
        self.clients.set_validates(client_id, True)
        self.link.emit_record(r.ValidationRecord(
            validation_id=str(uuid.uuid4()), model_id=request.model_id or task.model_id,
            data=data if isinstance(data, dict) else {"value": data}, sender=self._sender(state, request.client_id),
            correlation_id=task.correlation_id, session_id=request.session_id or task.session_id or None,
            round_id=task.round_id or None, timestamp=timestamp_of(request)))
        return pb.Response(response="validation received")

    async def SendModelPrediction(self, request: pb.ModelPrediction, context: grpc.aio.ServicerContext
                                  ) -> pb.Response:
        state = self._client(context, request.client_id)
        client_id = state.client_id if state else request.client_id
        try:
            data = report_json(request.data, "ModelPrediction.data")
            task = self.clients.issued_task(request.correlation_id, client_id, "ModelPrediction")
        except (UnknownTask, MalformedReport) as exc:
            await self._refuse(context, exc)
        if not self._seen.add(f"prediction:{task.correlation_id}:{request.prediction_id}"):
            return pb.Response(response="duplicate prediction, already received")
        self.link.emit_record(r.PredictionRecord(
            prediction_record_id=str(uuid.uuid4()),
            prediction_id=task.batch_id or request.prediction_id or task.correlation_id,
            model_id=request.model_id or task.model_id, sender=self._sender(state, request.client_id), data=data,
            correlation_id=task.correlation_id, timestamp=timestamp_of(request)))
        return pb.Response(response="prediction received")

    async def SendModelMetric(self, request: pb.ModelMetric, context: grpc.aio.ServicerContext) -> pb.Response:
        state = self._client(context, request.client_id)
        step = request.step.value if request.HasField("step") else None
        sender = self._sender(state, request.client_id)
        for elem in request.metrics:
            self.link.emit_record(r.MetricRecord(
                metric_id=str(uuid.uuid4()), key=elem.key, value=float(elem.value), sender=sender, step=step,
                model_id=request.model_id or None, round_id=request.round_id or None,
                session_id=request.session_id or None, timestamp=timestamp_of(request)))
        return pb.Response(response="metrics received")

    async def SendStatus(self, request: pb.Status, context: grpc.aio.ServicerContext) -> pb.Response:
        state = self._client(context, request.client_id)
        client_id = state.client_id if state else request.client_id
        task = self._task_for_status(client_id, request.type)
        self.link.emit_record(r.StatusRecord(
            status_id=str(uuid.uuid4()), status=request.status, sender=self._sender(state, request.client_id),
            log_level=pb.LogLevel.Name(request.log_level) if request.log_level in pb.LogLevel.values() else "INFO",
            type=request.type or None, correlation_id=task.correlation_id if task else None,
            session_id=(task.session_id or None) if task else None, round_id=(task.round_id or None) if task else None,
            timestamp=timestamp_of(request)))
        return pb.Response(response="status received")

    def _task_for_status(self, client_id: str, status_type: str) -> Task | None:
        """Status messages carry no task ids: use the client's task they evidently belong to."""
        task_type = STATUS_TASK_TYPES.get(status_type)
        if task_type is not None:
            return self.clients.recent_task_of(client_id, task_type)
        state = self.clients.clients.get(client_id)
        if state is not None and len(state.in_flight) == 1:
            return next(iter(state.in_flight.values()))
        return None

    # -- attributes and telemetry ----------------------------------------------------------
    async def SendAttributeMessage(self, request: pb.AttributeMessage, context: grpc.aio.ServicerContext
                                   ) -> pb.Response:
        state = self._client(context, request.client_id)
        client_id = state.client_id if state else request.client_id
        for elem in request.attributes:
            self.link.emit_record(r.AttributeRecord(attribute_id=str(uuid.uuid4()), client_id=client_id, key=elem.key,
                                                    value=elem.value, timestamp=timestamp_of(request)))
        return pb.Response(response="attributes received")

    async def SendTelemetryMessage(self, request: pb.TelemetryMessage, context: grpc.aio.ServicerContext
                                   ) -> pb.Response:
        state = self._client(context, request.client_id)
        client_id = state.client_id if state else request.client_id
        if request.record_id and not self._seen.add("telemetry-message:" + request.record_id):
            return pb.Response(response="duplicate telemetry, already received")
        for elem in request.telemetries:
            self.link.emit_record(r.TelemetryRecord(telemetry_id=str(uuid.uuid4()), client_id=client_id, key=elem.key,
                                                    value=float(elem.value), timestamp=timestamp_of(request)))
        return pb.Response(response="telemetry received")

    def _poll_telemetry(self, client_id: str, text: str) -> None:
        """Our client's telemetry riding on its poll (`MD_TELEMETRY`, see scaleout/client/task_receiver.py):
        stored as SendTelemetryMessage would store it. A malformed value is logged and ignored: the poll
        itself must go on."""
        try:
            reading = json.loads(text)
            at = datetime.fromtimestamp(float(reading["at"]), UTC)
            values = {str(k): float(v) for k, v in reading["values"].items()}
            if not all(math.isfinite(v) for v in values.values()) or len(values) > 64:
                raise ValueError("values must be at most 64 finite numbers")
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, OSError) as exc:
            log.info("client %s: ignoring malformed poll telemetry %.100r: %s", client_id, text, exc)
            return
        for key, value in values.items():
            self.link.emit_record(r.TelemetryRecord(telemetry_id=str(uuid.uuid4()), client_id=client_id, key=key,
                                                    value=value, timestamp=at))

    async def StreamTelemetryRecord(self, request_iterator: AsyncIterator[pb.TelemetryRecord],
                                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.RecordAck]:
        async for ack in self._store_and_ack(request_iterator, context, "telemetry", "telemetry_id",
                                             r.TelemetryRecord):
            yield ack

    async def StreamAttributeRecord(self, request_iterator: AsyncIterator[pb.AttributeRecord],
                                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.RecordAck]:
        async for ack in self._store_and_ack(request_iterator, context, "attribute", "attribute_id",
                                             r.AttributeRecord):
            yield ack

    async def _store_and_ack(self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                             kind: str, id_field: str, record_type: Any) -> AsyncIterator[pb.RecordAck]:
        """The 1.1 record streams: forward each record once (re-sends are recognised by id) and echo its
        id in a RecordAck, as the client expects. Any record from a client shows it is alive."""
        state = self._client(context)
        async for record in request_iterator:
            client_id = state.client_id if state else record.client_id
            if state is not None:
                self.clients.touch(state.client_id)
            record_id = getattr(record, id_field)
            if self._seen.add(f"{kind}:{record_id}"):
                self.link.emit_record(record_type(**{id_field: record_id or str(uuid.uuid4())}, client_id=client_id,
                                                  key=record.key, value=record_value(record.payload),
                                                  timestamp=timestamp_of(record)))
            yield pb.RecordAck(record_ids=[record_id])

    async def StreamInferenceResult(self, request_iterator: AsyncIterator[pb.InferenceResult],
                                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.RecordAck]:
        """Store each result of an inference task issued to (or announced by) the sender once, and ack it. A
        result that is not JSON or answers no such task is acknowledged, not stored, and ends the stream with
        INVALID_ARGUMENT / NOT_FOUND: the 1.1 client re-sends unacknowledged records on a new stream forever,
        so the ack is what makes it drop the record, and the status says why it was dropped."""
        state = self._client(context)
        async for result in request_iterator:
            key = f"inference:{result.inference_result_id}"
            if result.inference_result_id and key in self._seen:
                yield pb.RecordAck(record_ids=[result.inference_result_id])
                continue
            client_id = state.client_id if state else result.node_id
            try:
                payload = report_json(result.payload, "InferenceResult.payload")
                task = await self.clients.announced_task(result.inference_id, client_id, "InferenceResult",
                                                         self.inference_task_grace)
            except (UnknownTask, MalformedReport) as exc:
                yield pb.RecordAck(record_ids=[result.inference_result_id])
                await self._refuse(context, exc)
                return
            self._seen.add(key)
            self.link.emit_record(r.PredictionRecord(
                prediction_record_id=result.inference_result_id or str(uuid.uuid4()),
                prediction_id=task.batch_id or task.correlation_id, model_id=result.model_id or task.model_id,
                sender=self._sender(state, result.node_id), data={result.key: payload} if result.key else payload,
                correlation_id=task.correlation_id, timestamp=timestamp_of(result)))
            yield pb.RecordAck(record_ids=[result.inference_result_id])
