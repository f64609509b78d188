"""Load generator: many virtual clients in one process, each on its own gRPC connection to its combiner.

Each virtual client does what `scaleout client start` does on the wire (scaleout/client/runtime.py,
task_receiver.py, tasks.py), without a project or threads:

- registers through the REST API (`POST /api/v1/clients/add`, body as our client sends it) and dials
  the combiner the controller assigns, on a channel of its own: grpc shares one TCP connection between
  channels with identical arguments, so every channel gets `grpc.use_local_subchannel_pool` (the count
  of established connections is checked and reported);
- `Announce` VersionCheck and Connect; every 2 s a `SendHeartbeat` and every 5 s a telemetry reading,
  except that while a poll is held and the one before it was answered, the heartbeat is skipped and the
  reading rides on the next poll's metadata (`MD_TELEMETRY`) instead of a `SendTelemetryMessage` call;
- `PollAndReportAsync` as a long poll with a 10 s deadline (`--poll-style ours`), cancelled and sent
  again at once when a task finishes so the done report travels without delay; or answered at once and
  repeated every `--poll-interval` s (`--poll-style immediate`, how the combiner treats clients that
  announce no interval, and any client when holding is off);
- a training task: download the model (checksum trailer verified), "train" by adding a per-client
  constant (every update differs), upload the update container, `SendModelUpdate`, two `SendStatus`
  messages, then the done report. Before each transfer it asks `OpenTransfer` for a byte-path ticket
  offering the same checksum algorithms, and when one is granted moves the bytes over the combiner's
  byte port (scaleoututil/bytepath.py: request line, `OK <size>` / `GO`, the bytes, the agreed
  checksum, `OK`), else over gRPC, as our client does. Custom commands answer `{"t_received": ...}`; validations send a
  `ModelValidation`. Abort requests cancel the task (INTERRUPTED).

The update container has the layout our SDK writes (the NPZ inside stored uncompressed, as numpyhelper
does for incompressible weights) but is written directly, in less than half the time of the SDK's path
(`--sdk-encode` uses `ScaleoutModel.from_model_params`); downloads of the same model are decoded once
per process (every client still receives and verifies all the bytes).

Every task's wall-clock timestamps (handed out by the combiner, from TaskRequest.timestamp; received;
download start/end; trained; upload end; update acknowledged; finished), every poll's round trip and
this process's event-loop lag (late timers mean late client timestamps) are written to `--out` as JSON
when the run ends (SIGTERM, SIGINT, `--duration`, or the parent process gone). `--ready-file` is written
once every client polls. `--procs P` spreads the clients over P processes (this one merges their results).
The harness at the end (LoadgenProcess, cpu_seconds, PySpy) is what bench/round_overhead.py and
bench/combiner_load.py use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from scaleout.client.connection import CHANNEL_OPTIONS  # noqa: E402
from scaleout.client.registration import WIRE_CLIENT_VERSION  # noqa: E402
from scaleout.client.task_receiver import (  # noqa: E402
    DEADLINE_ENDS_TOLERATED,
    LATE_POLL_FRACTION,
    NEW_TASK_GRACE,
)
from scaleout.client.tasks import MODEL_UPDATE_STATUS, now_timestamp  # noqa: E402
from scaleoututil import bytepath  # noqa: E402
from scaleoututil.checksum import DIGESTS, SHA256, new_digest  # noqa: E402
from scaleoututil.grpc import scaleout_pb2 as pb  # noqa: E402
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc  # noqa: E402
from scaleoututil.model import ScaleoutModel, write_container  # noqa: E402
from scaleoututil.protocol import (  # noqa: E402
    CHUNK_SIZE,
    MD_CHECKSUM,
    MD_CLIENT,
    MD_CLIENT_ID,
    MD_MODEL_ID,
    MD_NAME,
    MD_TELEMETRY,
    AnnounceType,
    TaskStatus,
    TaskType,
    is_custom_task,
)

HELPER = "numpyhelper"
SEPARATE_CONNECTION = ("grpc.use_local_subchannel_pool", 1)
TRANSFER_TIMEOUT = 600.0
REGISTER_WINDOW = 120.0
MIN_POLL_INTERVAL = 1.0  # our client paces empty polls answered at once to one per second
RETRIED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.CANCELLED,
                           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                           grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass
class LoadConfig:
    api_url: str
    clients: int
    prefix: str = "vc"
    index_offset: int = 0
    poll_style: str = "ours"  # "ours": long poll with a deadline; "immediate": no deadline, paced
    poll_timeout: float = 10.0
    poll_interval: float = 5.0
    heartbeat_interval: float = 2.0
    telemetry_interval: float = 5.0
    delta: float = 1e-3
    num_examples: int = 100
    train_seconds: float = 0.0
    sdk_encode: bool = False
    shared_connection: bool = False
    register_concurrency: int = 16
    start_concurrency: int = 64
    max_uploads: int = 0  # clients encoding or uploading at once in this process (0: no cap)


# -- the update container ----------------------------------------------------------------------------
def encode_update(arrays: list[np.ndarray], model_id: str, sdk: bool = False) -> tuple[bytes, str]:
    """Container bytes of `arrays` and their sha256 (what Upload's `checksum` metadata carries)."""
    if sdk:
        model = ScaleoutModel.from_model_params(arrays, HELPER, model_id=model_id)
        data = model.get_stream().read()
        model.close()
        return data, hashlib.sha256(data).hexdigest()
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w", allowZip64=True) as zf:
        for i, arr in enumerate(arrays):
            info = zipfile.ZipInfo(f"{i}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
    npz.seek(0)
    out = io.BytesIO()
    write_container(out, model_id, npz, helper_type=HELPER)
    data = out.getvalue()
    return data, hashlib.sha256(data).hexdigest()


class ModelCache:
    """Decoded global models by id: the first client to download a model keeps its bytes and decodes them;
    the others only hash what they receive and compare with the first one's sha256 (memory stays flat)."""

    def __init__(self) -> None:
        self._models: dict[str, asyncio.Future[tuple[str, list[np.ndarray]]]] = {}

    def claim(self, model_id: str) -> bool:
        """True for the first caller per model: it must `decode` (or `fail`) that model."""
        if model_id in self._models:
            return False
        if len(self._models) > 8:
            self._models.pop(next(iter(self._models)))
        self._models[model_id] = asyncio.get_running_loop().create_future()
        return True

    async def decode(self, model_id: str, data: bytes, digest: str) -> list[np.ndarray]:
        future = self._models[model_id]
        try:
            params = await asyncio.to_thread(_decode, model_id, data)
        except BaseException as exc:
            self._models.pop(model_id, None)  # the next client decodes it instead
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        future.set_result((digest, params))
        return params

    def fail(self, model_id: str, exc: BaseException) -> None:
        """The claiming client could not download the model: the next one to ask decodes it."""
        future = self._models.pop(model_id, None)
        if future is not None and not future.done():
            future.set_exception(RuntimeError(f"model {model_id}: the decoding client failed: {exc!r}"))
            future.exception()

    async def params(self, model_id: str, digest: str) -> list[np.ndarray]:
        cached_digest, params = await asyncio.shield(self._models[model_id])
        if cached_digest != digest:
            raise ValueError(f"model {model_id}: received bytes hash to {digest}, another client got {cached_digest}")
        return params


def _decode(model_id: str, data: bytes) -> list[np.ndarray]:
    model = ScaleoutModel.from_bytes(data)
    if model.model_id != model_id:
        raise ValueError(f"Model ID mismatch: requested {model_id}, combiner sent {model.model_id}")
    params = [np.asarray(p) for p in model.get_model_params(HELPER)]
    model.close()
    return params


# -- recording ---------------------------------------------------------------------------------------
@dataclass
class Recorder:
    tasks: list[dict[str, Any]] = field(default_factory=list)
    polls: list[tuple[float, float, int]] = field(default_factory=list)  # (wall start, round trip s, tasks)
    rpcs: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[list[Any]] = field(default_factory=list)  # the first errors: time, call, code, details
    loop_lag: list[tuple[float, float]] = field(default_factory=list)  # (wall time, s the event loop was late)
    record_polls: bool = True

    def rpc(self, name: str) -> None:
        self.rpcs[name] += 1

    def error(self, name: str, exc: BaseException) -> None:
        code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
        key = f"{name}:{code}"
        self.errors[key] += 1
        if self.errors[key] <= 3:  # the first few of each kind, with what the server said
            details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            self.error_samples.append([round(time.time(), 3), name, code, (details or "")[:200]])


class TaskFailed(Exception):
    pass


@dataclass(eq=False)
class HeldTask:
    """A task the client holds until its done report was delivered (as the TaskReceiver does)."""

    request: pb.TaskRequest
    received: float
    status: str = TaskStatus.PENDING.value
    done: bool = False
    response: str = ""
    started_at: float | None = None
    completed_at: float | None = None
    times: dict[str, float] = field(default_factory=dict)
    job: asyncio.Task[None] | None = None
    abort_reason: str = ""
    step: str = "start"  # where a task is, to say where it failed

    def report(self, node_id: str) -> pb.ActivityReport:
        report = pb.ActivityReport(node_id=node_id, correlation_id=self.request.correlation_id,
                                   status=self.status, done=self.done)
        if self.response:
            report.response = self.response
        if self.started_at is not None:
            report.started_at.CopyFrom(now_timestamp(self.started_at))
        if self.completed_at is not None:
            report.completed_at.CopyFrom(now_timestamp(self.completed_at))
        return report


# -- one virtual client ------------------------------------------------------------------------------
class VirtualClient:
    def __init__(self, index: int, cfg: LoadConfig, recorder: Recorder, cache: ModelCache,
                 stop: asyncio.Event, uploads: asyncio.Semaphore | contextlib.nullcontext[None]) -> None:
        self.index = index
        self.cfg = cfg
        self.rec = recorder
        self.cache = cache
        self.stop = stop
        self.uploads = uploads
        self.client_id = str(uuid.uuid4())
        self.name = f"{cfg.prefix}-{index:05d}"
        self.address = ""
        self.channel: grpc.aio.Channel | None = None
        self.stub: pb_grpc.CombinerClientStub | None = None
        self.models: pb_grpc.ModelServiceStub | None = None
        self.held: dict[str, HeldTask] = {}
        self.wake = asyncio.Event()
        self.polling = asyncio.Event()  # set once the first poll is on its way
        self.poll_open = False  # as TaskReceiver: a poll is on its way or held
        self.last_answered = False  # the previous poll was answered
        self.deadline_ends = 0  # held polls in a row that ended at their deadline
        self.byte_path = True  # ask for byte-path tickets (until the combiner says UNIMPLEMENTED)
        self.telemetry: tuple[float, dict[str, float]] | None = None  # the newest reading for the next poll
        self.loops: list[asyncio.Task[None]] = []

    @property
    def md(self) -> list[tuple[str, str]]:
        return [(MD_CLIENT, self.client_id), (MD_CLIENT_ID, self.client_id), (MD_NAME, self.name)]

    # -- start ---------------------------------------------------------------------------------------
    async def register(self, http: httpx.AsyncClient) -> None:
        body = {"name": self.name, "client_id": self.client_id, "preferred_combiner": None, "package": "local",
                "client_version": WIRE_CLIENT_VERSION}
        deadline = time.monotonic() + REGISTER_WINDOW
        delay = 0.5
        while True:
            problem = ""
            try:
                response = await http.post(f"{self.cfg.api_url}/api/v1/clients/add", json=body, timeout=30.0)
                self.rec.rpc("REST clients/add")
                if response.status_code == 200:
                    data = response.json()
                    self.client_id = data["client_id"]
                    host = data.get("public_hostname") or data["internal_hostname"]
                    self.address = f"{host}:{int(data['port'])}"
                    return
                if response.status_code not in (203, 429) and response.status_code < 500:
                    raise RuntimeError(f"{self.name}: /clients/add answered {response.status_code}: {response.text}")
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            self.rec.errors[f"REST clients/add:{problem}"] += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: could not register within {REGISTER_WINDOW:.0f}s ({problem})")
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 8.0)

    async def connect(self) -> None:
        options = list(CHANNEL_OPTIONS) + ([] if self.cfg.shared_connection else [SEPARATE_CONNECTION])
        self.channel = grpc.aio.insecure_channel(self.address, options=options)
        self.stub = pb_grpc.CombinerClientStub(self.channel)
        self.models = pb_grpc.ModelServiceStub(self.channel)
        check = pb.ClientAnnounceRequest(client_id=self.client_id, type=AnnounceType.VERSION_CHECK,
                                         parameters=json.dumps({"client-version": WIRE_CLIENT_VERSION}))
        answer = await self._retry("Announce", lambda: self.stub.Announce(check, timeout=30.0, metadata=self.md))
        if json.loads(answer.parameters or "{}").get("success") is not True:
            raise RuntimeError(f"{self.name}: the combiner refused the version check: {answer.response}")
        connect = pb.ClientAnnounceRequest(client_id=self.client_id, type=AnnounceType.CONNECT,
                                           parameters=json.dumps({"validate": True}))  # as ours: it validates
        await self._retry("Announce", lambda: self.stub.Announce(connect, timeout=30.0, metadata=self.md))
        self.loops = [asyncio.create_task(self._poll_loop())]
        if self.cfg.heartbeat_interval > 0:
            self.loops.append(asyncio.create_task(self._heartbeat_loop()))
        if self.cfg.telemetry_interval > 0:
            self.loops.append(asyncio.create_task(self._telemetry_loop()))

    async def _retry(self, name: str, attempt: Any, attempts: int | None = 8) -> Any:
        """Retry the codes our client retries (connection.classify), `attempts` times or, with None, until the
        call succeeds or the task is cancelled (the server aborted it, or the run ends), as our client does."""
        delay = 0.5
        n = 0
        while True:
            n += 1
            try:
                result = await attempt()
                self.rec.rpc(name)
                return result
            except grpc.aio.AioRpcError as exc:
                self.rec.error(name, exc)
                if (attempts is not None and n >= attempts) or exc.code() not in RETRIED_CODES or self.stop.is_set():
                    raise
            except (OSError, TimeoutError, bytepath.TransferRefused) as exc:  # the byte path, as ByteTransferFailed
                self.rec.errors[f"{name} (byte path):{type(exc).__name__}"] += 1
                refused = isinstance(exc, bytepath.TransferRefused) and not exc.retryable
                if (attempts is not None and n >= attempts) or refused or self.stop.is_set():
                    raise
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        if self.loops:  # the poll loop ends by itself once it sees the stop (its open poll cancelled)
            await asyncio.wait(self.loops[:1], timeout=5.0)
        for task in self.held.values():
            if task.job is not None and not task.job.done():
                task.job.cancel()
        for loop in self.loops:
            loop.cancel()
        for loop in self.loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop
        if self.stub is not None:
            bye = pb.ClientAnnounceRequest(client_id=self.client_id, type=AnnounceType.DISCONNECT)
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                await self.stub.Announce(bye, timeout=5.0, metadata=self.md)
        if self.channel is not None:
            await self.channel.close()

    # -- background loops ----------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = self.cfg.heartbeat_interval
        await asyncio.sleep(random.uniform(0, interval))  # real clients do not beat in step
        while True:
            if self.poll_open and self.last_answered:  # as our client: the held poll is the heartbeat
                await asyncio.sleep(interval)
                continue
            try:
                await self.stub.SendHeartbeat(pb.Heartbeat(client_id=self.client_id,
                                                           heartbeat_interval_ms=int(interval * 1000)),
                                              timeout=max(interval, 5.0), metadata=self.md)
                self.rec.rpc("SendHeartbeat")
            except grpc.aio.AioRpcError as exc:
                self.rec.error("SendHeartbeat", exc)
            await asyncio.sleep(interval)

    async def _telemetry_loop(self) -> None:
        interval = self.cfg.telemetry_interval
        await asyncio.sleep(random.uniform(0, interval))
        while True:
            values = {"cpu_usage": random.uniform(0, 100), "memory_usage": random.uniform(20, 60)}
            at = time.time()
            if self.poll_open and self.last_answered:  # as our client: the next poll carries it
                self.telemetry = (at, values)
                await asyncio.sleep(interval)
                continue
            message = pb.TelemetryMessage(client_id=self.client_id, timestamp=now_timestamp(at), telemetries=[
                pb.TelemetryElem(key=key, value=value) for key, value in values.items()])
            try:
                await self.stub.SendTelemetryMessage(message, timeout=5.0, metadata=self.md)
                self.rec.rpc("SendTelemetryMessage")
            except grpc.aio.AioRpcError as exc:
                self.rec.error("SendTelemetryMessage", exc)
            await asyncio.sleep(interval)

    # -- the poll loop -------------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        cfg = self.cfg
        long_poll = cfg.poll_style == "ours"
        delay = 0.5
        while not self.stop.is_set():
            self.wake.clear()
            held = list(self.held.values())
            reports = [t.report(self.client_id) for t in held]
            done_ids = {t.request.correlation_id for t in held if t.done}
            request = pb.ClientReport(client_id=self.client_id, reports=reports,
                                      poll_interval_ms=int(cfg.poll_timeout * 1000) if long_poll else 0)
            wall, started = time.time(), time.perf_counter()
            metadata = self.md
            if self.telemetry is not None:
                at, values = self.telemetry
                self.telemetry = None
                metadata = [*metadata, (MD_TELEMETRY, json.dumps({"at": round(at, 3), "values": values},
                                                                 separators=(",", ":")))]
                self.rec.rpc("telemetry on a poll")
            # a deadline is what asks the combiner to hold the poll: without one it answers at once
            call = self.stub.PollAndReportAsync(request, timeout=cfg.poll_timeout if long_poll else None,
                                                metadata=metadata)
            self.polling.set()
            self.poll_open = True
            answer = asyncio.ensure_future(_await(call))
            woken = asyncio.ensure_future(self.wake.wait())
            await asyncio.wait({answer, woken}, return_when=asyncio.FIRST_COMPLETED)
            self.poll_open = False
            if not answer.done():  # a task finished (or we stop): report it with a fresh poll now
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await answer
                self.rec.rpc("PollAndReportAsync (cancelled)")
                continue
            woken.cancel()
            try:
                directive = answer.result()
            except grpc.aio.AioRpcError as exc:
                late = long_poll and time.perf_counter() - started >= LATE_POLL_FRACTION * cfg.poll_timeout
                code = exc.code()
                deadline_end = code == grpc.StatusCode.DEADLINE_EXCEEDED or (code == grpc.StatusCode.CANCELLED and late)
                self.deadline_ends = self.deadline_ends + 1 if deadline_end else 0
                if not deadline_end or self.deadline_ends >= DEADLINE_ENDS_TOLERATED:
                    self.last_answered = False  # as our client: heartbeat and telemetry calls resume
                if deadline_end:
                    self.rec.error("PollAndReportAsync", exc)  # like our client: a held poll's end, poll again
                    continue
                if exc.code() == grpc.StatusCode.CANCELLED and self.stop.is_set():
                    return
                self.rec.error("PollAndReportAsync", exc)
                await self._sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 30.0)
                continue
            delay = 0.5
            self.deadline_ends = 0
            self.last_answered = True
            rtt = time.perf_counter() - started
            self.rec.rpc("PollAndReportAsync")
            if self.rec.record_polls:
                self.rec.polls.append((wall, rtt, len(directive.tasks)))
            for cid in done_ids:
                self.held.pop(cid, None)
            self.wake.clear()
            new = self._handle(directive, time.time())
            if not long_poll:
                await self._sleep(max(0.0, cfg.poll_interval - (time.perf_counter() - started)))
            elif not new:
                await self._sleep(max(0.0, MIN_POLL_INTERVAL - (time.perf_counter() - started)))
            else:  # as our client: give a quick task the chance to report done on the next poll
                await self._sleep(NEW_TASK_GRACE)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early when a task finishes (its report should travel now)."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), seconds)

    def _handle(self, directive: pb.CombinerDirective, received: float) -> bool:
        new = False
        for request in directive.tasks:
            held = self.held.get(request.correlation_id)
            if held is not None:  # a status update for a task we hold
                if request.status in (TaskStatus.INTERRUPTED, TaskStatus.TIMEOUT) and not held.done:
                    held.abort_reason = "Aborted by server" if request.status == TaskStatus.INTERRUPTED \
                        else "Timed out by server"
                    if held.job is not None:
                        held.job.cancel()
                continue
            if not request.type:
                continue  # an ack or abort for a task we no longer hold
            task = HeldTask(request=request, received=received)
            task.times["received"] = received
            handed_out = _wall(request.timestamp)  # our combiner stamps the moment it hands the task out
            if handed_out is not None:
                task.times["handed_out"] = handed_out
            self.held[request.correlation_id] = task
            task.job = asyncio.create_task(self._run(task))
            new = True
        return new

    # -- tasks ---------------------------------------------------------------------------------------
    async def _run(self, task: HeldTask) -> None:
        request = task.request
        task.status = TaskStatus.RUNNING.value
        task.started_at = time.time()
        status, response = TaskStatus.COMPLETED.value, ""
        try:
            if request.type == TaskType.MODEL_UPDATE:
                await self._train(task)
            elif request.type == TaskType.VALIDATION:
                await self._validate(task)
            elif is_custom_task(request.type):
                response = json.dumps({"t_received": task.received, "client": self.index})
            else:
                raise TaskFailed(f"Invalid task type: {request.type}")
        except asyncio.CancelledError:
            status, response = TaskStatus.INTERRUPTED.value, json.dumps({"msg": task.abort_reason or "stopped"})
        except Exception as exc:
            status, response = TaskStatus.FAILED.value, json.dumps({"error": f"{type(exc).__name__}: {exc}"})
            self.rec.error(f"task {request.type} ({task.step})", exc)
        task.completed_at = time.time()
        task.times["finished"] = task.completed_at
        task.status, task.response, task.done = status, response, True
        self.rec.tasks.append({"client": self.index, "client_id": self.client_id, "type": request.type,
                               "correlation_id": request.correlation_id, "round_id": request.round_id,
                               "session_id": request.session_id, "status": status,
                               "error": response if status == TaskStatus.FAILED else "", **task.times})
        self.wake.set()

    async def _download(self, task: HeldTask) -> list[np.ndarray]:
        model_id = task.request.model_id
        task.step = "download"
        task.times["download_start"] = time.time()
        keep = self.cache.claim(model_id)

        async def attempt() -> tuple[str, list[bytes]]:
            ticket = await self._offer(pb.TransferOffer(direction="download", model_id=model_id,
                                                        digests=list(DIGESTS)))
            if ticket is not None:
                hexdigest, data = await self._byte_download(ticket)
                task.times["bytes_down"] = len(data)
                return hexdigest, [bytes(data)] if keep else []
            call = self.models.Download(pb.ModelRequest(model_id=model_id), timeout=TRANSFER_TIMEOUT,
                                        metadata=self.md)
            digest = hashlib.sha256()
            pieces: list[bytes] = []
            size = 0
            async for chunk in call:
                if chunk.data:
                    # sha256 releases the GIL: hashing 1 MiB in a worker keeps this loop serving the other clients
                    await asyncio.to_thread(digest.update, chunk.data)
                    size += len(chunk.data)
                    if keep:
                        pieces.append(chunk.data)
            expected = dict(await call.trailing_metadata() or ()).get(MD_CHECKSUM)
            task.times["bytes_down"] = size
            if expected and expected != digest.hexdigest():
                raise TaskFailed(f"model {model_id}: checksum mismatch")
            return digest.hexdigest(), pieces

        try:
            hexdigest, pieces = await self._retry("Download", attempt, attempts=None)
        except BaseException as exc:
            if keep:
                self.cache.fail(model_id, exc)
            raise
        task.times["download_end"] = time.time()
        if keep:
            return await self.cache.decode(model_id, b"".join(pieces), hexdigest)
        return await self.cache.params(model_id, hexdigest)

    async def _offer(self, offer: pb.TransferOffer) -> pb.TransferTicket | None:
        """As our client (scaleout/client/byte_path.py): ask for a byte-path ticket before every transfer
        attempt; None (no ticket: the model is under `byte_path_min_bytes`, or the byte path is off): gRPC."""
        if not self.byte_path:
            return None
        try:
            ticket = await self.models.OpenTransfer(offer, timeout=30.0, metadata=self.md)
            self.rec.rpc("OpenTransfer")
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            self.byte_path = False  # as our client: a combiner without the byte path is not asked again
            return None
        return ticket if ticket.ticket else None

    async def _byte_connect(self, ticket: pb.TransferTicket) -> _ByteStream:
        host = self.address.rsplit(":", 1)[0].strip("[]")
        stream = await _ByteStream.connect(host, ticket.port)
        await stream.send(f"{bytepath.PROTOCOL} {ticket.ticket}\n".encode("ascii"))
        return stream

    async def _byte_download(self, ticket: pb.TransferTicket) -> tuple[str, bytearray]:
        """A download over the byte path: (checksum, bytes), the checksum verified as our client does."""
        algorithm = ticket.digest or SHA256
        stream = await self._byte_connect(ticket)
        try:
            size = int(bytepath.expect(await stream.line(), "OK"))
            data = await stream.exactly(size)
            announced = bytepath.parse_checksum(await stream.line(), algorithm)
        finally:
            stream.close()
        hexdigest = await asyncio.to_thread(_hexdigest, algorithm, data)
        if announced and announced != hexdigest:
            raise TaskFailed(f"checksum mismatch over the byte path ({announced} != {hexdigest})")
        self.rec.rpc("byte path download")
        return hexdigest, data

    async def _byte_upload(self, ticket: pb.TransferTicket, data: bytes, checksum: str) -> None:
        """An upload over the byte path, acknowledged once the combiner has it durably, as our client's."""
        algorithm = ticket.digest or SHA256
        if algorithm != SHA256:  # our client hashes in the agreed algorithm while it sends
            checksum = await asyncio.to_thread(_hexdigest, algorithm, data)
        stream = await self._byte_connect(ticket)
        try:
            bytepath.expect(await stream.line(), "GO")
            await stream.send(data)
            await stream.send(f"{bytepath.checksum_line(checksum, algorithm)}\n".encode("ascii"))
            bytepath.expect(await stream.line(), "OK")
        finally:
            stream.close()
        self.rec.rpc("byte path upload")

    async def _status(self, message: str, level: int) -> None:
        try:
            await self.stub.SendStatus(pb.Status(client_id=self.client_id, status=message, log_level=level,
                                                 timestamp=now_timestamp(), type=MODEL_UPDATE_STATUS),
                                       timeout=10.0, metadata=self.md)
            self.rec.rpc("SendStatus")
        except grpc.aio.AioRpcError as exc:
            self.rec.error("SendStatus", exc)

    async def _train(self, task: HeldTask) -> None:
        request = task.request
        params = await self._download(task)
        fetch = task.times["download_end"] - task.times["download_start"]
        background = asyncio.create_task(self._status(
            f"\t Starting processing of training request for model_id {request.model_id}", pb.INFO))
        if self.cfg.train_seconds > 0:
            await asyncio.sleep(self.cfg.train_seconds)
        async with self.uploads:
            await self._train_and_upload(task, params, fetch)
        await background
        asyncio.create_task(self._status("Model update completed.", pb.AUDIT))

    async def _train_and_upload(self, task: HeldTask, params: list[np.ndarray], fetch: float) -> None:
        request = task.request
        update_id = str(uuid.uuid4())
        task.step = "encode"
        shift = np.float32(self.cfg.delta * (self.index + 1))
        started = time.perf_counter()
        data, checksum = await asyncio.to_thread(
            lambda: encode_update([p + shift for p in params], update_id, self.cfg.sdk_encode))
        processing = time.perf_counter() - started
        task.times["trained"] = time.time()

        def chunks(payload: bytes) -> Any:
            view = memoryview(payload)
            for offset in range(0, len(payload), CHUNK_SIZE):
                yield pb.FileChunk(data=bytes(view[offset:offset + CHUNK_SIZE]))

        md = [*self.md, (MD_MODEL_ID, update_id), (MD_CHECKSUM, checksum)]
        task.step = "upload"
        async def upload() -> Any:
            ticket = await self._offer(pb.TransferOffer(direction="upload", model_id=update_id, size=len(data),
                                                        digests=list(DIGESTS)))
            if ticket is not None:
                return await self._byte_upload(ticket, data, checksum)
            return await self.models.Upload(chunks(data), timeout=TRANSFER_TIMEOUT, metadata=md)

        await self._retry("Upload", upload, attempts=None)
        task.times["upload_end"] = time.time()
        task.times["bytes_up"] = len(data)
        data = b""
        meta = {"training_metadata": {"num_examples": self.cfg.num_examples}, "processing_time": processing,
                "fetch_model": fetch, "config": request.data,
                "upload_model": task.times["upload_end"] - task.times["trained"]}
        update = pb.ModelUpdate(client_id=self.client_id, model_id=request.model_id, model_update_id=update_id,
                                correlation_id=request.correlation_id, round_id=request.round_id,
                                session_id=request.session_id, timestamp=now_timestamp(), meta=json.dumps(meta))
        task.step = "SendModelUpdate"
        await self._retry("SendModelUpdate", lambda: self.stub.SendModelUpdate(update, timeout=30.0,
                                                                                metadata=self.md), attempts=None)
        task.times["update_acked"] = time.time()

    async def _validate(self, task: HeldTask) -> None:
        await self._download(task)
        validation = pb.ModelValidation(client_id=self.client_id, model_id=task.request.model_id,
                                        data=json.dumps({"accuracy": 0.5}), correlation_id=task.request.correlation_id,
                                        session_id=task.request.session_id, timestamp=now_timestamp())
        await self._retry("SendModelValidation", lambda: self.stub.SendModelValidation(validation, timeout=30.0,
                                                                                        metadata=self.md))


def _hexdigest(algorithm: str, data: bytes | bytearray) -> str:
    digest = new_digest(algorithm)
    digest.update(data)
    return str(digest.hexdigest())


class _ByteStream:
    """One byte-path connection on the event loop: lines and exact byte counts over a non-blocking socket.
    Errors surface as OSError (a refusal as bytepath.TransferRefused) and end the attempt; the retry loop
    above treats them like a broken gRPC stream."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.pending = bytearray()  # received after a line, before the caller asked for it

    @classmethod
    async def connect(cls, host: str, port: int) -> _ByteStream:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 30.0)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def send(self, data: bytes | bytearray) -> None:
        await asyncio.wait_for(self.loop.sock_sendall(self.sock, data), TRANSFER_TIMEOUT)

    async def line(self) -> str:
        while (end := self.pending.find(b"\n")) < 0:
            if len(self.pending) > bytepath.MAX_LINE:
                raise bytepath.ProtocolError("status line too long")
            chunk = await asyncio.wait_for(self.loop.sock_recv(self.sock, 4096), TRANSFER_TIMEOUT)
            if not chunk:
                raise bytepath.ProtocolError("connection closed before a status line")
            self.pending += chunk
        text = self.pending[:end].decode("ascii").rstrip("\r")
        del self.pending[:end + 1]
        return text

    async def exactly(self, size: int) -> bytearray:
        out = bytearray(size)
        have = min(len(self.pending), size)
        out[:have] = self.pending[:have]
        del self.pending[:have]
        with memoryview(out) as view:
            while have < size:
                n = await asyncio.wait_for(self.loop.sock_recv_into(self.sock, view[have:]), TRANSFER_TIMEOUT)
                if not n:
                    raise bytepath.ProtocolError(f"connection closed after {have} of {size} bytes")
                have += n
        return out

    def close(self) -> None:
        self.sock.close()


def _wall(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


async def _await(call: Any) -> Any:
    return await call


LAG_TICK = 0.05


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    """A load generator whose parent (a benchmark, or the --procs parent) died stops by itself."""
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            print("loadgen: parent process gone, stopping", file=sys.stderr, flush=True)
            stop.set()


async def _watch_loop_lag(rec: Recorder) -> None:
    """How late this process's event loop runs a timer: when it is late, every client timestamp taken
    here is late too (the load generator, not the server, would then be the bottleneck)."""
    while True:
        expected = time.perf_counter() + LAG_TICK
        await asyncio.sleep(LAG_TICK)
        late = time.perf_counter() - expected
        if late > 0.005:
            rec.loop_lag.append((time.time(), round(late, 4)))


# -- running many ------------------------------------------------------------------------------------
def connections_to(ports: set[int], pid: int | None = None) -> int:
    """Established TCP connections of process `pid` (default: this one) to any of `ports`."""
    try:
        found = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return -1
    return sum(1 for c in found if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED)


async def run_load(cfg: LoadConfig, duration: float, ready_file: Path | None, record_polls: bool = True
                   ) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    rec = Recorder(record_polls=record_polls)
    lag = asyncio.create_task(_watch_loop_lag(rec))
    cache = ModelCache()
    uploads = asyncio.Semaphore(cfg.max_uploads) if cfg.max_uploads > 0 else contextlib.nullcontext()
    clients = [VirtualClient(cfg.index_offset + i, cfg, rec, cache, stop, uploads) for i in range(cfg.clients)]
    started = time.time()
    cpu0 = psutil.Process().cpu_times()
    limits = httpx.Limits(max_connections=cfg.register_concurrency, max_keepalive_connections=cfg.register_concurrency)
    async with httpx.AsyncClient(limits=limits) as http:
        gate = asyncio.Semaphore(cfg.register_concurrency)

        async def register(client: VirtualClient) -> None:
            async with gate:
                await client.register(http)

        await asyncio.gather(*(register(c) for c in clients))
    registered = time.time()
    gate = asyncio.Semaphore(cfg.start_concurrency)

    async def connect(client: VirtualClient) -> None:
        async with gate:
            await client.connect()

    await asyncio.gather(*(connect(c) for c in clients))
    await asyncio.gather(*(c.polling.wait() for c in clients))
    ready = time.time()
    ports = {int(c.address.rsplit(":", 1)[1]) for c in clients}
    await asyncio.sleep(0.5)
    info = {"clients": len(clients), "client_ids": [c.client_id for c in clients], "pid": os.getpid(),
            "register_seconds": round(registered - started, 2), "connect_seconds": round(ready - registered, 2),
            "tcp_connections_to_combiner": connections_to(ports), "combiner_ports": sorted(ports), "t_ready": ready}
    print(f"loadgen: {len(clients)} clients polling ({info['tcp_connections_to_combiner']} TCP connections to "
          f"the combiner); registration {info['register_seconds']}s, connect {info['connect_seconds']}s", flush=True)
    if ready_file is not None:
        ready_file.write_text(json.dumps(info))
    watch = asyncio.create_task(_stop_when_orphaned(stop))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)
    stop.set()
    watch.cancel()
    stopping = time.time()
    for client in clients:
        client.wake.set()
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    lag.cancel()
    cpu1 = psutil.Process().cpu_times()
    return {**info, "t_start": started, "t_stop": stopping,
            "cpu_seconds": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rpcs": dict(rec.rpcs), "errors": dict(rec.errors), "error_samples": rec.error_samples, "tasks": rec.tasks,
            "polls": rec.polls, "loop_lag": rec.loop_lag}


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    rpcs: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for part in parts:
        rpcs.update(part.get("rpcs", {}))
        errors.update(part.get("errors", {}))
    return {
        "clients": sum(p["clients"] for p in parts), "client_ids": [i for p in parts for i in p["client_ids"]],
        "procs": len(parts), "pids": [p["pid"] for p in parts],
        "register_seconds": max(p["register_seconds"] for p in parts),
        "connect_seconds": max(p["connect_seconds"] for p in parts),
        "tcp_connections_to_combiner": sum(p["tcp_connections_to_combiner"] for p in parts),
        "t_ready": max(p["t_ready"] for p in parts), "t_start": min(p.get("t_start", 0) for p in parts),
        "t_stop": max(p.get("t_stop", 0) for p in parts),
        "cpu_seconds": round(sum(p.get("cpu_seconds", 0) for p in parts), 2),
        "peak_rss_mb": [p.get("peak_rss_mb") for p in parts], "rpcs": dict(rpcs), "errors": dict(errors),
        "error_samples": [x for p in parts for x in p.get("error_samples", [])][:40],
        "tasks": [t for p in parts for t in p.get("tasks", [])],
        "polls": [x for p in parts for x in p.get("polls", [])],
        "loop_lag": [x for p in parts for x in p.get("loop_lag", [])],
    }


def run_procs(args: argparse.Namespace) -> None:
    """Split the clients over `args.procs` child processes of this script; merge their ready files and results."""
    work = Path(args.out).with_suffix("")
    counts = [args.clients // args.procs + (1 if i < args.clients % args.procs else 0) for i in range(args.procs)]
    children: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    offset = args.index_offset
    base = list(sys.argv[1:])
    for i, count in enumerate(counts):
        out, ready = Path(f"{work}.part{i}.json"), Path(f"{work}.part{i}.ready")
        ready.unlink(missing_ok=True)
        argv = [*base, "--procs", "1", "--clients", str(count), "--index-offset", str(offset), "--out", str(out),
                "--ready-file", str(ready)]
        children.append((subprocess.Popen([sys.executable, __file__, *argv]), out, ready))
        offset += count
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        _supervise(args, children, stop)
    finally:
        for proc, _, _ in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _supervise(args: argparse.Namespace, children: list[tuple[subprocess.Popen[bytes], Path, Path]],
               stop: dict[str, bool]) -> None:
    parent = os.getppid()
    while not all(r.exists() for _, _, r in children):
        if stop["now"] or any(p.poll() is not None for p, _, _ in children):
            break
        time.sleep(0.2)
    if all(r.exists() for _, _, r in children) and args.ready_file:
        Path(args.ready_file).write_text(json.dumps(merge([json.loads(r.read_text()) for _, _, r in children])))
    deadline = time.monotonic() + args.duration
    while not stop["now"] and time.monotonic() < deadline and all(p.poll() is None for p, _, _ in children):
        if os.getppid() != parent:  # the benchmark that started us is gone
            break
        time.sleep(0.2)
    for proc, _, _ in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, _, _ in children:
        proc.wait(timeout=120)
    parts = [json.loads(out.read_text()) for _, out, _ in children if out.exists()]
    for _, out, ready in children:
        out.unlink(missing_ok=True)
        ready.unlink(missing_ok=True)
    if len(parts) != len(children):
        raise SystemExit(f"loadgen: {len(children) - len(parts)} of {len(children)} processes wrote no result")
    Path(args.out).write_text(json.dumps(merge(parts)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api-url", required=True, help="controller URL, e.g. http://127.0.0.1:8092")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--procs", type=int, default=1, help="processes to spread the clients over")
    p.add_argument("--prefix", default="vc", help="client names are PREFIX-00000, PREFIX-00001, ...")
    p.add_argument("--index-offset", type=int, default=0)
    p.add_argument("--poll-style", choices=("ours", "immediate"), default="ours")
    p.add_argument("--poll-timeout", type=float, default=10.0, help="long-poll deadline (poll style ours)")
    p.add_argument("--poll-interval", type=float, default=5.0, help="start-to-start pace (poll style immediate)")
    p.add_argument("--heartbeat-interval", type=float, default=2.0, help="0: no heartbeats")
    p.add_argument("--telemetry-interval", type=float, default=5.0, help="0: no telemetry")
    p.add_argument("--delta", type=float, default=1e-3, help="client i adds (i+1)*DELTA to every parameter")
    p.add_argument("--train-seconds", type=float, default=0.0, help="simulated training time per task")
    p.add_argument("--sdk-encode", action="store_true", help="encode updates with ScaleoutModel (slower)")
    p.add_argument("--max-uploads", type=int, default=0,
                   help="clients encoding+uploading at once per process, to bound memory (0: no cap)")
    p.add_argument("--shared-connection", action="store_true",
                   help="let grpc share one TCP connection between the channels (its default)")
    p.add_argument("--no-poll-samples", action="store_true", help="do not keep every poll's round trip")
    p.add_argument("--duration", type=float, default=1800.0, help="stop by itself after this many seconds")
    p.add_argument("--out", required=True, help="result JSON")
    p.add_argument("--ready-file", default=None, help="written once every client polls")
    return p.parse_args(argv)


def raise_nofile_limit() -> int:
    """Each virtual client holds a socket: lift this process's open-file limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main() -> None:
    args = parse_args()
    limit = raise_nofile_limit()
    if args.clients + 64 > limit:
        print(f"loadgen: warning: {args.clients} clients need about {args.clients + 64} open files, the limit is "
              f"{limit} (ulimit -n); spread them with --procs or raise the hard limit", file=sys.stderr)
    if args.procs > 1:
        run_procs(args)
        return
    cfg = LoadConfig(api_url=args.api_url.rstrip("/"), clients=args.clients, prefix=args.prefix,
                     index_offset=args.index_offset, poll_style=args.poll_style, poll_timeout=args.poll_timeout,
                     poll_interval=args.poll_interval, heartbeat_interval=args.heartbeat_interval,
                     telemetry_interval=args.telemetry_interval, delta=args.delta, train_seconds=args.train_seconds,
                     sdk_encode=args.sdk_encode, shared_connection=args.shared_connection,
                     max_uploads=args.max_uploads)
    result = asyncio.run(run_load(cfg, args.duration, Path(args.ready_file) if args.ready_file else None,
                                  record_polls=not args.no_poll_samples))
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()


# -- harness for the benchmarks ----------------------------------------------------------------------
class LoadgenProcess:
    """This script as a child process (or several, `procs`) against a deployment; the benchmarks use it."""

    def __init__(self, api_url: str, clients: int, folder: Path, procs: int = 1, extra: tuple[str, ...] = (),
                 duration: float = 3600.0) -> None:
        self.folder = folder
        self.out = folder / f"loadgen-{clients}.json"
        self.ready_file = folder / f"loadgen-{clients}.ready"
        self.log = folder / f"loadgen-{clients}.log"
        self.argv = [sys.executable, str(Path(__file__).resolve()), "--api-url", api_url, "--clients", str(clients),
                     "--procs", str(procs), "--out", str(self.out), "--ready-file", str(self.ready_file),
                     "--duration", str(duration), *extra]
        self.popen: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}

    def start(self, timeout: float) -> dict[str, Any]:
        """Start and wait until every virtual client polls; returns the ready information."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.popen.poll() is not None:
                raise RuntimeError(f"the load generator exited ({self.popen.returncode}):\n{self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the load generator's clients were not all polling after {timeout:.0f}s:\n"
                                   f"{self.output()}")
            time.sleep(0.2)
        time.sleep(0.1)
        self.ready = json.loads(self.ready_file.read_text())
        return self.ready

    def pids(self) -> list[int]:
        if self.popen is None:
            return []
        try:
            root = psutil.Process(self.popen.pid)
            return [root.pid, *(c.pid for c in root.children(recursive=True))]
        except psutil.Error:
            return []

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self, timeout: float = 180.0) -> dict[str, Any]:
        """SIGTERM (the clients say Disconnect), then the merged result."""
        if self.popen is None:
            return {}
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.popen = None
        if not self.out.exists():
            raise RuntimeError(f"the load generator wrote no result:\n{self.output()}")
        return json.loads(self.out.read_text())


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (all their threads)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


def combiner_pid(server_pid: int) -> int:
    """The combiner child process of `scaleout server start`."""
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            if "combiner" in child.cmdline():
                return child.pid
        except psutil.Error:
            continue
    raise RuntimeError(f"no combiner process under the server (pid {server_pid})")


class PySpy:
    """Samples a process with py-spy (if installed) and summarises where its time goes."""

    def __init__(self, pid: int, out: Path, binary: str | None, rate: int = 50, gil: bool = False) -> None:
        self.pid = pid
        self.gil = gil  # only samples holding the GIL: where the Python time goes, without waiting threads
        self.out = out
        self.binary = binary
        self.rate = rate
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not self.binary:
            return
        self.popen = subprocess.Popen([self.binary, "record", "--pid", str(self.pid), "--rate", str(self.rate),
                                       "--format", "raw", "--output", str(self.out), "--nonblocking", "--threads",
                                       *(["--gil"] if self.gil else [])],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, Any] | None:
        if self.popen is None:
            return None
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
        self.popen = None
        return summarise_profile(self.out) if self.out.exists() else None


def summarise_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """Collapsed stacks (py-spy raw, active threads only) -> the share of samples in the event-loop thread
    and in worker threads, the functions most often on top of the stack (self), and our own functions
    most often anywhere in it (inclusive), as % of all samples."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")[1:]  # the first entry names the thread
        if not frames:
            continue
        total += count
        names = [_frame_name(f) for f in frames]
        self_counts[names[-1]] += count
        for frame, name in set(zip(frames, names, strict=True)):
            if "scaleout" in frame.partition(" (")[2]:  # a function of ours (its file's path says so)
                inclusive[name] += count
        kind = ("event loop" if any("run_until_complete" in n for n in names)
                else "worker threads" if any(n.startswith("_worker ") for n in names) else "other")
        threads[kind] += count

    def table(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / max(total, 1), 1)] for name, n in counter.most_common(top)]

    return {"samples": total, "threads_percent": dict(table(threads)), "self_percent": table(self_counts),
            "ours_inclusive_percent": table(inclusive)}


def _frame_name(frame: str) -> str:
    """`fold (/x/scaleout_server/aggregation/job.py:120)` -> `fold (job.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1]})" if where else name


def loop_lag(result: dict[str, Any], start: float, end: float) -> dict[str, float]:
    """The load generator's event-loop lag between two wall times: the worst, and the total (seconds)."""
    lags = [late for at, late in result.get("loop_lag", []) if start <= at <= end]
    return {"max_s": round(max(lags, default=0.0), 3), "total_s": round(sum(lags), 3)}
