"""One simulation from start to end: local server, seed model, hosts of virtual clients, a session.

The server runs as `scaleout server start` in a child process (the same code a real deployment runs,
SQLite and a local folder under the run's work folder), so a simulation exercises the real protocol
and leaves a database that the dashboard and the API can read afterwards. Hosts of virtual clients
are local child processes (host.py) or Ray actors (ray_backend.py), each given a slice of the client
indices; each virtual client trains on its own partition of the data.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import requests

from scaleout.project.config import ProjectError, find_project_dir
from scaleout.simulation.host import HostSpec
from scaleoututil.api.client import APIClient

logger = logging.getLogger(__name__)

SERVER_START_TIMEOUT = 60.0
CLIENT_START_SECONDS = 0.5  # per client on top of a fixed minute: registration, startup(client), Connect


class SimulationError(Exception):
    """Something the user can fix (the message says what); the simulation is stopped cleanly."""


@dataclass
class SimulationConfig:
    """See `scaleout simulate --help` for what each setting means."""

    project: Path
    clients: int
    rounds: int = 5
    hosts: int | None = None  # None: one per core, at most one per client
    parallel: int = 1
    backend: str = "local"
    ray_address: str | None = None
    aggregator: str = "fedavg"
    aggregator_kwargs: dict[str, Any] = field(default_factory=dict)
    round_timeout: int = 600
    validate: bool = True
    clients_per_round: int | None = None  # None: every client, every round
    server_functions: str | None = None  # source text of a ServerFunctions class
    seed_model: Path | None = None  # None: run the project's build() and use what it writes
    work_dir: Path | None = None  # None: ./.scaleout-simulation/run-<time>
    name: str | None = None

    def host_count(self, default: int) -> int:
        """--hosts, else `default` (the backend's CPUs), never more than one per client."""
        wanted = self.hosts if self.hosts is not None else default
        return max(1, min(wanted, self.clients))


def slices(total: int, parts: int) -> list[tuple[int, ...]]:
    """Client indices 0..total-1 in `parts` contiguous slices of (nearly) equal size."""
    base, extra = divmod(total, parts)
    result, start = [], 0
    for part in range(parts):
        size = base + (1 if part < extra else 0)
        result.append(tuple(range(start, start + size)))
        start += size
    return [s for s in result if s]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Backend(Protocol):
    """Where hosts of virtual clients run; `start` returns once every host has been launched."""

    def cpus(self) -> int:
        """How many hosts to run when --hosts is not given."""
        ...

    def start(self, specs: list[HostSpec], logs: Path) -> None: ...

    def failed(self) -> str | None:
        """Why a host stopped early (None while all run)."""
        ...

    def stop(self) -> None: ...


class LocalBackend:
    """Each host is a `python -m scaleout.simulation.host` child process of this one."""

    def __init__(self) -> None:
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def cpus(self) -> int:
        return os.cpu_count() or 1

    def start(self, specs: list[HostSpec], logs: Path) -> None:
        for number, spec in enumerate(specs):
            log = logs / f"host-{number}.log"
            argv = [sys.executable, "-m", "scaleout.simulation.host", "--api-url", spec.api_url,
                    "--project", spec.project, "--work", spec.work,
                    "--indices", f"{spec.indices[0]}-{spec.indices[-1]}", "--total", str(spec.total),
                    "--parallel", str(spec.parallel)]
            with log.open("wb") as out:
                process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
            self.processes.append((process, log))

    def failed(self) -> str | None:
        for process, log in self.processes:
            if process.poll() is not None:
                return f"a host of virtual clients exited with code {process.returncode}: {_tail(log)}"
        return None

    def stop(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.processes:
            _wait_or_kill(process, 30.0)
        self.processes.clear()


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"(no log at {log})"
    return "\n".join(text[-lines:]) + f"\n(full log: {log})"


def _wait_or_kill(process: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def make_backend(config: SimulationConfig) -> Backend:
    if config.backend == "local":
        return LocalBackend()
    if config.backend == "ray":
        from scaleout.simulation.ray_backend import RayBackend

        return RayBackend(address=config.ray_address)
    raise SimulationError(f"unknown backend {config.backend!r}: use 'local' or 'ray'")


class Simulation:
    """`with Simulation(config) as sim: sim.prepare(); session_id = sim.start_session()`; leaving the block
    stops the clients and the server (by PID), keeping the work folder for inspection."""

    def __init__(self, config: SimulationConfig, progress: Callable[[str, int, int], None] | None = None) -> None:
        if config.clients < 1:
            raise SimulationError("--clients must be at least 1")
        self.config = config
        self.progress = progress or (lambda what, done, total: None)
        try:
            self.project = find_project_dir(config.project).resolve()
        except ProjectError as exc:
            raise SimulationError(str(exc)) from exc
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.work = (config.work_dir or Path.cwd() / ".scaleout-simulation" / f"run-{stamp}").resolve()
        self.logs = self.work / "logs"
        self.api_port = free_port()
        self.combiner_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.server: subprocess.Popen[bytes] | None = None
        self.backend: Backend | None = None
        self.api = APIClient(self.api_url)

    # -- lifetime -----------------------------------------------------------------------------
    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Clients first (they report aborted tasks and say Disconnect), then the server."""
        if self.backend is not None:
            self.backend.stop()
            self.backend = None
        if self.server is not None:
            if self.server.poll() is None:
                self.server.send_signal(signal.SIGTERM)
            _wait_or_kill(self.server, 30.0)
            self.server = None

    # -- steps --------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Server up, seed model active, every virtual client online."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        seed = self.config.seed_model or self.build_seed()
        self.start_server()
        reply = self.api.set_active_model(seed)
        if not isinstance(reply, dict) or "model_id" not in reply:
            raise SimulationError(f"the server refused the seed model {seed}: {reply}")
        self.start_clients()

    def build_seed(self) -> Path:
        """Run the project's build() in a child process (its imports stay out of this one) and return the
        one model file it writes (seed.npz when it writes several)."""
        out = self.work / "build"
        log = self.logs / "build.log"
        self.progress("building the seed model", 0, 1)
        with log.open("wb") as fh:
            result = subprocess.run([sys.executable, "-m", "scaleout", "run", "build", "-p", str(self.project),
                                     "-o", str(out)], stdout=fh, stderr=subprocess.STDOUT, cwd=self.work)
        if result.returncode != 0:
            raise SimulationError(f"the project's build failed:\n{_tail(log)}")
        files = sorted(p for p in out.iterdir() if p.is_file() and p.suffix in (".npz", ".bin"))
        if len(files) == 1:
            return files[0]
        if (out / "seed.npz").is_file():
            return out / "seed.npz"
        raise SimulationError(f"build() wrote {len(files)} model files to {out}; pass the seed with --seed-model")

    def start_server(self) -> None:
        log = self.logs / "server.log"
        argv = [sys.executable, "-m", "scaleout", "server", "start", "--api-port", str(self.api_port),
                "--combiner-port", str(self.combiner_port), "--data-dir", str(self.work / "server")]
        with log.open("wb") as out:
            self.server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.progress("starting the local server", 0, 1)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise SimulationError(f"the local server exited with code {self.server.returncode}:\n{_tail(log)}")
            if self._count("combiners/") >= 1:
                return
            time.sleep(0.2)
        raise SimulationError(f"the local server did not start within {SERVER_START_TIMEOUT:.0f} s:\n{_tail(log)}")

    def start_clients(self) -> None:
        cfg = self.config
        self.backend = make_backend(cfg)
        specs = [HostSpec(api_url=self.api_url, project=str(self.project), work=str(self.work), indices=indices,
                          total=cfg.clients, parallel=cfg.parallel)
                 for indices in slices(cfg.clients, cfg.host_count(self.backend.cpus()))]
        self.backend.start(specs, self.logs)
        timeout = 60.0 + CLIENT_START_SECONDS * cfg.clients
        deadline = time.monotonic() + timeout
        online = 0
        while online < cfg.clients:
            problem = self.backend.failed()
            if problem:
                raise SimulationError(problem)
            if time.monotonic() > deadline:
                raise SimulationError(f"only {online} of {cfg.clients} virtual clients came online within "
                                      f"{timeout:.0f} s; see the host logs in {self.logs}")
            online = self._count("clients/", status="online")
            self.progress("starting virtual clients", online, cfg.clients)
            time.sleep(0.3)

    def start_session(self) -> str:
        cfg = self.config
        per_round = min(cfg.clients_per_round or cfg.clients, cfg.clients)
        reply = self.api.start_session(name=cfg.name or f"simulation-{self.work.name}", aggregator=cfg.aggregator,
                                       aggregator_kwargs=cfg.aggregator_kwargs or None, rounds=cfg.rounds,
                                       round_timeout=cfg.round_timeout, validate=cfg.validate,
                                       min_clients=per_round, requested_clients=per_round,
                                       server_functions=cfg.server_functions)
        session_id = reply.get("session_id") if isinstance(reply, dict) else None
        if not session_id or (isinstance(reply, dict) and reply.get("status_code", 200) >= 400):
            raise SimulationError(f"the server did not start the session: {reply}")
        return str(session_id)

    def _count(self, endpoint: str, **params: str) -> int:
        try:
            reply = requests.get(f"{self.api_url}/api/v1/{endpoint}", params=params, timeout=5)
            if reply.status_code == 200:
                return int(reply.json().get("count", 0))
        except (requests.RequestException, ValueError):
            pass
        return 0
