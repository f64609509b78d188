"""A process (or Ray actor) that runs a slice of a simulation's virtual clients.

Each virtual client is a full ClientRuntime (registration, its own gRPC channel, heartbeats, the
project's startup(client) and callbacks) in this process's threads. Callbacks of all clients in one
host share a semaphore, so `parallel` trainings run at once per host however many clients it holds:
the machine's cores, not the client count, set how much runs together. Run as
`python -m scaleout.simulation.host ...` by the local backend; ray_backend.py wraps the same class.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaleout.client.edge_client import EdgeClient
from scaleout.client.registration import StartupInterrupted
from scaleout.client.runtime import ClientConfig, ClientRuntime
from scaleoututil.partitioning import Partition

logger = logging.getLogger(__name__)

# Virtual clients send telemetry rarely: a hundred clients sampling psutil every 5 s measure the same machine.
VIRTUAL_TELEMETRY_INTERVAL = 60.0


def client_name(index: int) -> str:
    """The name (and client id) of virtual client `index`: sim-0000, sim-0001, ..."""
    return f"sim-{index:04d}"


@dataclass(frozen=True)
class HostSpec:
    """What one host runs: clients `indices` of `total`, the project at `project`, state under `work`."""

    api_url: str
    project: str
    work: str
    indices: tuple[int, ...]
    total: int
    parallel: int = 1
    token: str | None = None


class GatedEdgeClient(EdgeClient):
    """An EdgeClient whose callbacks wait for a slot of the host's semaphore before running."""

    def __init__(self, partition: Partition, gate: threading.Semaphore) -> None:
        super().__init__()
        self._partition = partition
        self._gate = gate

    def _gated(self, callback: Callable[..., Any] | None) -> Callable[..., Any] | None:
        if callback is None:
            return None

        @functools.wraps(callback)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._gate:
                return callback(*args, **kwargs)

        return run

    def set_train_callback(self, callback: Callable[..., Any] | None) -> None:
        super().set_train_callback(self._gated(callback))

    def set_validate_callback(self, callback: Callable[..., Any] | None) -> None:
        super().set_validate_callback(self._gated(callback))

    def set_predict_callback(self, callback: Callable[..., Any] | None) -> None:
        super().set_predict_callback(self._gated(callback))

    def set_custom_callback(self, name: str, callback: Callable[..., Any]) -> None:
        gated = self._gated(callback)
        assert gated is not None
        super().set_custom_callback(name, gated)


class VirtualClientHost:
    """Starts its virtual clients one after another (startup imports the project once per client) and
    stops them all on `stop()`."""

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self.runtimes: list[ClientRuntime] = []
        self._gate = threading.Semaphore(max(1, spec.parallel))
        self._starting: ClientRuntime | None = None  # start() waits for the server as long as it takes

    def start(self) -> int:
        """Register and connect every client of the slice; returns how many are running."""
        spec = self.spec
        for index in spec.indices:
            name = client_name(index)
            workdir = Path(spec.work) / "clients" / name
            workdir.mkdir(parents=True, exist_ok=True)
            config = ClientConfig(api_url=spec.api_url, token=spec.token, name=name, client_id=name,
                                  local_package=True, workdir=workdir,
                                  telemetry_interval=VIRTUAL_TELEMETRY_INTERVAL)
            _point_at_project(workdir, Path(spec.project))
            runtime = ClientRuntime(config, GatedEdgeClient(Partition(index, spec.total), self._gate),
                                    echo=logger.debug)
            self._starting = runtime
            try:
                runtime.start()
            finally:
                self._starting = None
            self.runtimes.append(runtime)
            logger.info("virtual client %s started (partition %d of %d)", name, index, spec.total)
        return len(self.runtimes)

    def interrupt(self) -> None:
        """End the wait of a client still starting (its start() raises StartupInterrupted); safe in a signal
        handler."""
        starting = self._starting
        if starting is not None:
            starting.stop("simulation ended")

    def stop(self) -> None:
        """Stop every client: running tasks are aborted and reported, then each says Disconnect."""
        for runtime in self.runtimes:
            runtime.stop("simulation ended")
        for runtime in self.runtimes:
            runtime.shutdown()
        self.runtimes.clear()


def _point_at_project(workdir: Path, project: Path) -> None:
    """`client start --local-package` finds the project under workdir/client: link it there, so every virtual
    client reads the one project folder while keeping its own model cache."""
    link = workdir / "client"
    if link.is_symlink() or link.exists():
        return
    link.symlink_to(project.resolve(), target_is_directory=True)


def parse_indices(text: str) -> tuple[int, ...]:
    """`0-9` or `0,3,5`: the client indices a host runs."""
    indices: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            low, high = part.split("-", 1)
            indices.extend(range(int(low), int(high) + 1))
        elif part:
            indices.append(int(part))
    return tuple(indices)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a slice of a simulation's virtual clients until SIGTERM.")
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--indices", required=True, help="e.g. 0-49")
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    host = VirtualClientHost(HostSpec(api_url=args.api_url, project=args.project, work=args.work,
                                      indices=parse_indices(args.indices), total=args.total,
                                      parallel=args.parallel, token=os.environ.get("SCALEOUT_AUTH_TOKEN")))

    def on_signal(*_: Any) -> None:
        stop.set()
        host.interrupt()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        try:
            started = host.start()
        except StartupInterrupted:
            return 0
        print(f"READY {started}", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
