"""bench/loadgen.py behaves on the wire like our client (the benchmarks' figures stand for our client's).

The same scenario runs against the same recording fake combiner, once with `ClientRuntime` and once with one
`VirtualClient`: start, a custom task, a training task, then a quiet spell of held polls. What each sent is
reduced to a profile (RPCs, metadata keys, poll fields, heartbeats while a poll is held, telemetry carried on
polls, the training task's calls and fields) and the two profiles must be equal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

from bench.loadgen import LoadConfig, ModelCache, Recorder, VirtualClient
from scaleout.client.runtime import ClientConfig, ClientRuntime
from scaleoututil.grpc import scaleout_pb2 as pb
from scaleoututil.protocol import MD_TELEMETRY
from tests.unit.test_client_fakes import (
    FakeCombiner,
    FakeController,
    assignment,
    running_combiner,
    running_controller,
    seed_model,
    wait_until,
    write_project,
)

POLL_TIMEOUT = 1.2
HEARTBEAT = 0.1
TELEMETRY = 0.15
QUIET = 1.6  # > one held poll: a reading is carried by the poll after it
OURS = {"client", "client-id", "name", "authorization", MD_TELEMETRY}
STARTUP = '''
def startup(client):
    client.set_custom_callback("echo", lambda params: {"echo": params})
    client.set_train_callback(lambda model, settings: (model, {"training_metadata": {"num_examples": 100}}))
    client.set_validate_callback(lambda model: {"accuracy": 0.5})  # virtual clients validate too
'''


@dataclass
class WireLog(FakeCombiner):
    """Also records when each poll was held and when heartbeats, telemetry and uploads arrived."""

    held: list[tuple[float, float, bool]] = field(default_factory=list)  # (arrived, answered, with an answer)
    deadlines: list[float] = field(default_factory=list)
    beats_at: list[float] = field(default_factory=list)
    upload_md: list[set[str]] = field(default_factory=list)
    model_calls: list[str] = field(default_factory=list)  # ModelService calls in order

    def PollAndReportAsync(self, request: pb.ClientReport, context: grpc.ServicerContext) -> pb.CombinerDirective:  # noqa: N802
        arrived, remaining = time.monotonic(), context.time_remaining()
        answer = super().PollAndReportAsync(request, context)
        with self.cond:
            self.deadlines.append(round(remaining or 0.0, 0))
            self.held.append((arrived, time.monotonic(), context.is_active()))
        return answer

    def SendHeartbeat(self, request: pb.Heartbeat, context: grpc.ServicerContext) -> pb.Response:  # noqa: N802
        self.beats_at.append(time.monotonic())
        return super().SendHeartbeat(request, context)

    def OpenTransfer(self, request: pb.TransferOffer, context: grpc.ServicerContext) -> pb.TransferTicket:  # noqa: N802
        """As our combiner answers for a model under `byte_path_min_bytes`: no ticket, use gRPC."""
        self.model_calls.append(f"OpenTransfer {request.direction} offering {','.join(request.digests)}")
        return pb.TransferTicket(reason="models under 16777216 bytes use Upload / Download")

    def Download(self, request: pb.ModelRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self.model_calls.append("Download")
        return super().Download(request, context)

    def Upload(self, request_iterator: Any, context: grpc.ServicerContext) -> pb.ModelResponse:  # noqa: N802
        self.model_calls.append("Upload")
        self.upload_md.append({k for k, _ in context.invocation_metadata()} & {"model-id", "checksum", *OURS})
        return super().Upload(request_iterator, context)


def scenario(fake: WireLog) -> None:
    """What the test does to either client once it polls."""
    wait_until(lambda: fake.polls, timeout=10)
    time.sleep(3 * HEARTBEAT)  # no poll answered yet: heartbeats go out
    fake.enqueue(pb.TaskRequest(correlation_id="c-1", type="Custom_echo", data=json.dumps({"parameters": {}})))
    wait_until(lambda: fake.done_report("c-1"), timeout=10)
    fake.enqueue(pb.TaskRequest(correlation_id="t-1", type="Scaleout_ModelUpdate", model_id="seed-model",
                                session_id="s-1", round_id="r-1", data=json.dumps({"client_settings": {}})))
    wait_until(lambda: fake.done_report("t-1") and len(fake.statuses) >= 2, timeout=10)
    time.sleep(QUIET)


def redundant_beats(fake: WireLog) -> int:
    """Heartbeats that arrived while a poll was held and the poll before it had been answered."""
    count = 0
    for at in fake.beats_at:
        for i, (arrived, answered, _) in enumerate(fake.held):
            if i and fake.held[i - 1][2] and arrived + 0.05 < at < answered - 0.05:
                count += 1
    return count


def profile(fake: WireLog) -> dict[str, Any]:
    carried = [json.loads(p.metadata[MD_TELEMETRY]) for p in fake.polls if MD_TELEMETRY in p.metadata]
    done = {r.correlation_id: r for p in fake.polls for r in p.report.reports if r.done}
    [update] = fake.updates
    return {
        "announces": [(a.type, a.parameters if a.type == "Connect" else "") for a in fake.announces],
        "poll_metadata": sorted({k for p in fake.polls for k in p.metadata} & OURS),
        "poll_interval_ms": sorted({p.report.poll_interval_ms for p in fake.polls}),
        "poll_deadline_s": sorted(set(fake.deadlines)),
        "skip_polling_tasks": sorted({p.report.skip_polling_tasks for p in fake.polls}),
        "heartbeats_sent": bool(fake.heartbeats),
        "heartbeat_interval_ms": sorted({h.heartbeat_interval_ms for h in fake.heartbeats}),
        "heartbeats_while_a_poll_is_held": redundant_beats(fake),
        "telemetry_on_polls": bool(carried),
        "telemetry_shape": sorted({(tuple(sorted(c)), tuple(sorted(c["values"]))) for c in carried}),
        "telemetry_rpc_keys": sorted({e.key for t in fake.telemetry for e in t.telemetries}),
        "done_reports": {cid: (r.status, bool(r.response), r.HasField("started_at"), r.HasField("completed_at"))
                         for cid, r in sorted(done.items())},
        "downloads": fake.downloads,
        "model_calls": fake.model_calls,
        "upload_metadata": [sorted(m) for m in fake.upload_md],
        "update": (update.correlation_id, update.model_id, update.round_id, update.session_id,
                   sorted(json.loads(update.meta)), json.loads(update.meta)["training_metadata"]),
        "statuses": [(s.log_level, s.type) for s in fake.statuses],
        "metrics": len(fake.metrics),
    }


def with_fakes(tmp_path: Path, run_client: Callable[[str, Path], Callable[[], None]]) -> dict[str, Any]:
    """Start the fakes, the client (`run_client` returns its stop function), the scenario; the profile."""
    fake = WireLog()
    fake.add_model(seed_model("seed-model"))
    with running_combiner(fake) as (_, port), \
            running_controller(FakeController({"POST /api/v1/clients/add": [assignment(port)]})) as url:
        stop = run_client(url, tmp_path)
        try:
            scenario(fake)
        finally:
            stop()
    return profile(fake)


def our_client(url: str, folder: Path) -> Callable[[], None]:
    write_project(folder / "client", STARTUP)
    config = ClientConfig(api_url=url, name="site-a", client_id="cid-1", local_package=True, workdir=folder / "client",
                          heartbeat_interval=HEARTBEAT, telemetry_interval=TELEMETRY, poll_timeout=POLL_TIMEOUT,
                          failover_after=0)
    runtime = ClientRuntime(config, echo=lambda text: None)
    runner = threading.Thread(target=runtime.run)
    runner.start()
    assert runtime.started.wait(10)

    def stop() -> None:
        runtime.stop()
        runner.join(10)
    return stop


def virtual_client(url: str, folder: Path) -> Callable[[], None]:
    done = threading.Event()
    failures: list[BaseException] = []
    ready = threading.Event()

    async def run() -> None:
        cfg = LoadConfig(api_url=url, clients=1, poll_timeout=POLL_TIMEOUT, heartbeat_interval=HEARTBEAT,
                         telemetry_interval=TELEMETRY)
        stop = asyncio.Event()
        client = VirtualClient(0, cfg, Recorder(), ModelCache(), stop, contextlib.nullcontext())
        async with httpx.AsyncClient() as http:
            await client.register(http)
        await client.connect()
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.02)
        stop.set()
        client.wake.set()
        await client.close()

    def main() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # reported by the test
            failures.append(exc)
            ready.set()

    thread = threading.Thread(target=main)
    thread.start()
    assert ready.wait(10) and not failures, failures

    def stop() -> None:
        done.set()
        thread.join(10)
        assert not failures, failures
    return stop


def test_the_load_generator_behaves_on_the_wire_like_our_client(tmp_path: Path) -> None:
    ours = with_fakes(tmp_path / "ours", our_client)
    virtual = with_fakes(tmp_path / "loadgen", virtual_client)
    assert virtual == ours
    # and what both do is what the benchmarks assume
    assert ours["announces"] == [("VersionCheck", ""), ("Connect", "{\"validate\": true}"), ("Disconnect", "")]
    assert ours["poll_deadline_s"] == [round(POLL_TIMEOUT)] and ours["poll_interval_ms"] == [POLL_TIMEOUT * 1000]
    assert ours["heartbeats_while_a_poll_is_held"] == 0 and ours["telemetry_on_polls"]
    assert ours["telemetry_shape"] == [(("at", "values"), ("cpu_usage", "memory_usage"))]
    assert ours["model_calls"] == ["OpenTransfer download offering BLAKE3,SHA256", "Download",
                                   "OpenTransfer upload offering BLAKE3,SHA256", "Upload"]
    assert Counter(ours["statuses"]) == Counter({(pb.INFO, "MODEL_UPDATE"): 1, (pb.AUDIT, "MODEL_UPDATE"): 1})


def test_the_load_generator_moves_models_over_a_real_combiners_byte_path_as_our_client_does(tmp_path: Path) -> None:
    """Offered a ticket, a virtual client downloads (checksum verified in the agreed algorithm) and uploads
    over the byte port; the combiner counts both and keeps the update durably, as for our client."""
    import blake3
    import numpy as np

    from bench.loadgen import encode_update
    from scaleout_server.combiner.server import updates_dir_for
    from scaleoututil.checksum import BLAKE3
    from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc
    from tests.unit.test_combiner_support import SEED_ID, running_harness

    with running_harness(tmp_path, byte_path_min_bytes=0) as harness:
        async def scenario() -> tuple[str, int, str]:
            cfg = LoadConfig(api_url="http://127.0.0.1:9", clients=1)
            client = VirtualClient(0, cfg, Recorder(), ModelCache(), asyncio.Event(), contextlib.nullcontext())
            client.address = f"127.0.0.1:{harness.port}"
            async with grpc.aio.insecure_channel(client.address) as channel:
                client.models = pb_grpc.ModelServiceStub(channel)
                down = await client._offer(pb.TransferOffer(direction="download", model_id=SEED_ID,
                                                            digests=["BLAKE3", "SHA256"]))
                assert down is not None and down.digest == BLAKE3
                hexdigest, data = await client._byte_download(down)
                update_id = "lg-update"
                body, checksum = encode_update([np.zeros(1000, np.float32)], update_id)
                up = await client._offer(pb.TransferOffer(direction="upload", model_id=update_id, size=len(body),
                                                          digests=["BLAKE3", "SHA256"]))
                assert up is not None
                await client._byte_upload(up, body, checksum)
                return hexdigest, len(data), update_id

        hexdigest, size, update_id = asyncio.run(scenario())
        with harness.repository.open("models", SEED_ID) as fh:
            stored = fh.read()
        assert size == len(stored) and hexdigest == blake3.blake3(stored).hexdigest()
        assert harness.combiner.server.model_service.byte_path.served == {"download": 1, "upload": 1}
        assert (updates_dir_for(harness.combiner.settings) / f"{update_id}.scm").is_file()
