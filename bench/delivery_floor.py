"""The floor of task delivery to many held clients with Python gRPC on this machine, for issue 14 part 5.

A bare gRPC asyncio server (no combiner logic, no interceptors, no database) holds N unary polls
(`PollAndReportAsync`) from N channels of one asyncio client process, each its own TCP connection as our
clients' are, then answers all of them at once with one small task; or, second design, keeps N server
streams (`TaskStream`) open and pushes one task down each. Reported per design: delivery latency from the
release to each client's receipt (p50 / p99 / max) and the server's CPU seconds for the N answers.

This is the cost of the mechanism alone, so it bounds what the combiner can reach with Python gRPC on the
same cores: `bench/combiner_load.py`'s task delivery p99 cannot be below this design's. Writes
bench/results/delivery_floor.json.

    .venv/bin/python bench/delivery_floor.py --n 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from scaleoututil.grpc import scaleout_pb2 as pb  # noqa: E402
from scaleoututil.grpc import scaleout_pb2_grpc as pb_grpc  # noqa: E402

TASK = pb.TaskRequest(model_id="m" * 36, correlation_id="c" * 36, type="Scaleout_Custom", data="{}")


class HoldingServicer(pb_grpc.CombinerClientServicer):
    """Holds every poll until released; keeps every task stream open until a task is pushed."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.polls = 0
        self.streams: list[asyncio.Queue[pb.TaskRequest]] = []

    async def PollAndReportAsync(self, request: pb.ClientReport, context: Any) -> pb.CombinerDirective:  # noqa: N802
        self.polls += 1
        await self.release.wait()
        return pb.CombinerDirective(tasks=[TASK])

    async def TaskStream(self, request: pb.ClientAvailableMessage, context: Any) -> Any:  # noqa: N802
        queue: asyncio.Queue[pb.TaskRequest] = asyncio.Queue()
        self.streams.append(queue)
        yield await queue.get()


async def serve(design: str, n: int, folder: Path) -> None:
    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 100_000)])
    servicer = HoldingServicer()
    pb_grpc.add_CombinerClientServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    (folder / "port").write_text(str(port))
    while (servicer.polls if design == "poll" else len(servicer.streams)) < n:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # let the last calls settle
    released, cpu = time.time(), time.process_time()
    if design == "poll":
        servicer.release.set()
    else:
        for queue in servicer.streams:
            queue.put_nowait(TASK)
    (folder / "released").write_text(str(released))
    await asyncio.sleep(3.0)
    (folder / "server_cpu").write_text(str(time.process_time() - cpu))
    await server.stop(0)


async def hold(design: str, n: int, port: int) -> list[float]:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(n)]
    received: list[float] = []

    async def one(channel: grpc.aio.Channel) -> None:
        stub = pb_grpc.CombinerClientStub(channel)
        if design == "poll":
            await stub.PollAndReportAsync(pb.ClientReport(), timeout=60)
        else:
            async for _ in stub.TaskStream(pb.ClientAvailableMessage(), timeout=60):
                break
        received.append(time.time())

    await asyncio.gather(*(one(channel) for channel in channels))
    await asyncio.gather(*(channel.close() for channel in channels))
    return received


def run_once(design: str, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="delivery-floor-") as name:
        folder = Path(name)
        server = subprocess.Popen([sys.executable, __file__, "--serve", design, "--n", str(n), "--folder", name])
        try:
            while not (folder / "port").exists():
                time.sleep(0.05)
            received = asyncio.run(hold(design, n, int((folder / "port").read_text())))
            server.wait(timeout=60)
        finally:
            server.kill()
        released = float((folder / "released").read_text())
        lags = sorted(t - released for t in received)
        return {"p50_ms": round(lags[len(lags) // 2] * 1000, 1),
                "p99_ms": round(lags[max(0, int(len(lags) * 0.99) - 1)] * 1000, 1),
                "max_ms": round(lags[-1] * 1000, 1),
                "server_cpu_seconds": round(float((folder / "server_cpu").read_text()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="held clients")
    parser.add_argument("--repeat", type=int, default=3, help="runs per design, interleaved (medians reported)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "delivery_floor.json")
    parser.add_argument("--serve", choices=("poll", "stream"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.n, Path(args.folder)))
        return
    load_at_start = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {"poll": [], "stream": []}
    for i in range(args.repeat):
        for design in runs:
            runs[design].append(run_once(design, args.n))
            print(f"repeat {i + 1}/{args.repeat} {design}: {runs[design][-1]}", file=sys.stderr)
    report = {
        "benchmark": "delivery_floor",
        "n": args.n,
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load_at_start],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "method": "bare grpc.aio server and one asyncio client process with N channels (one TCP connection each); "
                  "latency from the release to each receipt; medians over the repeats",
        **{design: {key: statistics.median(run[key] for run in rows) for key in rows[0]} | {"runs": rows}
           for design, rows in runs.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({design: {k: v for k, v in report[design].items() if k != "runs"} for design in runs}))


if __name__ == "__main__":
    main()
