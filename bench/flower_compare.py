"""Ours vs Flower on the same workload: N clients, a P-parameter float32 model, R rounds of FedAvg.

Both sides run as real processes on loopback, one after the other in the same run:
- ours: `scaleout server start` (controller + combiner process) and N `scaleout client start` processes
  running bench/projects/trivial; the session is started through the REST API (APIClient).
- Flower (flwr from PyPI, in its own venv under .cache/bench/flower-venv, created here if missing):
  `flower-superlink --insecure` and N `flower-supernode --insecure` processes (each with its own
  SuperExec, which starts the ServerApp / ClientApp processes for the run), and `flwr run` of
  bench/flower_app against that SuperLink. Not Flower's simulation engine.
Workload on both: client i adds 0.001 * (i + 1) to every parameter and reports one example, so the
new global model is the plain mean of N different updates; every client trains every round; no
evaluation. Both final models are checked against the expected value seed + R * 0.001 * (N + 1) / 2.

Measured per side, from the moment the run is submitted until it is finished (process start-up and
client registration happen before and are excluded): wall time of the rounds (round 1 start to the
last round's end, and per round), CPU seconds and peak RSS of the server-side process tree and of
each client's process tree (peaks are reset with /proc/PID/clear_refs when the window opens). The
ratios in the report are ours / Flower. Writes bench/results/flower_compare.json and .png.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pngchart import Panel, draw  # noqa: E402
from scaleoututil.api.client import APIClient  # noqa: E402
from scaleoututil.helpers.helpers import get_helper  # noqa: E402
from scaleoututil.model import open_training_model  # noqa: E402
from tests.e2e.deployment import Deployment, Proc, wait_until  # noqa: E402

FLWR_VERSION = "1.42.0"
FLOWER_VENV = ROOT / ".cache" / "bench" / "flower-venv"
DELTA = 0.001  # the trivial training step; the same in bench/projects/trivial and bench/flower_app


# -- measuring process trees -------------------------------------------------------------------------
def reset_peak(pid: int) -> None:
    """Start this process's peak-RSS counter (VmHWM) again from its current RSS (Linux clear_refs 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def label(proc: psutil.Process) -> str:
    """A readable process name: `scaleout server`, `flower-supernode`, `flwr-clientapp`..."""
    args = proc.cmdline()
    if len(args) >= 3 and args[1] == "-m":
        return " ".join(args[2:4])
    if len(args) >= 2 and Path(args[0]).name.startswith("python"):
        return Path(args[1]).name
    return proc.name()


def high_water(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")), 0)
    except OSError:
        return 0


@dataclass
class TreeUsage:
    """What one process tree (a root process and its descendants) used inside the measuring window."""

    cpu_at_mark: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, float] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    peak_bound: int = 0  # highest sum, over the processes alive at one sample, of their peaks so far (VmHWM)
    concurrent_peak: int = 0  # highest sum of the tree's current RSS in one sample

    def summary(self) -> dict[str, Any]:
        cpu = sum(self.cpu_last[pid] - self.cpu_at_mark.get(pid, 0.0) for pid in self.cpu_last)
        return {"cpu_seconds": round(cpu, 2),
                "peak_rss_mb": round(self.peak_bound / 1e6, 1),
                "sampled_concurrent_peak_rss_mb": round(self.concurrent_peak / 1e6, 1),
                "processes": sorted(self.names.values())}  # one entry per process seen in the window


class TreeMonitor:
    """Samples CPU times and peak RSS of named process trees every `interval` seconds.

    `mark()` opens the window: CPU is counted from there and peaks are reset. A process that exits
    inside the window keeps the CPU seen at its last sample (at most `interval` of it is lost).
    """

    def __init__(self, roots: dict[str, int], interval: float = 0.1) -> None:
        self.roots = roots
        self.interval = interval
        self.usage = {name: TreeUsage() for name in roots}
        self._marked = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self, pid: int) -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _sample(self) -> None:
        with self._lock:
            if not self._marked:
                return
            for name, pid in self.roots.items():
                usage, total, bound = self.usage[name], 0, 0
                for proc in self._tree(pid):
                    try:
                        with proc.oneshot():
                            times = proc.cpu_times()
                            usage.cpu_last[proc.pid] = times.user + times.system
                            if proc.pid not in usage.names:
                                usage.names[proc.pid] = label(proc)
                            total += proc.memory_info().rss
                    except psutil.Error:
                        continue
                    bound += high_water(proc.pid)
                usage.peak_bound = max(usage.peak_bound, bound)
                usage.concurrent_peak = max(usage.concurrent_peak, total)

    def mark(self) -> None:
        with self._lock:
            for name, pid in self.roots.items():
                for proc in self._tree(pid):
                    try:
                        times = proc.cpu_times()
                    except psutil.Error:
                        continue
                    self.usage[name].cpu_at_mark[proc.pid] = times.user + times.system
                    reset_peak(proc.pid)
            self._marked = True
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def finish(self) -> dict[str, dict[str, Any]]:
        """Close the window with a last sample and return each tree's usage."""
        self._sample()
        with self._lock:
            self._marked = False
        return {name: usage.summary() for name, usage in self.usage.items()}


def side_summary(usage: dict[str, dict[str, Any]], clients: int) -> dict[str, Any]:
    """Server tree as is; clients as the mean CPU, the highest peak RSS, and client 0 in full."""
    client_usage = [usage[f"client-{i}"] for i in range(clients)]
    return {
        "server": usage["server"],
        "client_cpu_seconds_mean": round(float(np.mean([c["cpu_seconds"] for c in client_usage])), 2),
        "client_cpu_seconds_total": round(sum(c["cpu_seconds"] for c in client_usage), 2),
        "client_peak_rss_mb_max": max(c["peak_rss_mb"] for c in client_usage),
        "client_0": client_usage[0],
    }


def per_round(start: float, ends: list[float]) -> list[float]:
    """Round k lasts from the end of round k-1 (round 1: from its start) to its own end."""
    edges = [start, *ends]
    return [round(b - a, 3) for a, b in zip(edges, edges[1:], strict=False)]


def expected_model(params: int, clients: int, rounds: int) -> np.ndarray:
    np.random.seed(42)
    seed = np.random.rand(params).astype(np.float32)
    return seed.astype(np.float64) + rounds * DELTA * (clients + 1) / 2


def check_model(final: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    error = float(np.max(np.abs(final.astype(np.float64) - expected)))
    return {"shape": list(final.shape), "dtype": str(final.dtype), "max_abs_error_vs_expected": error,
            "is_mean_of_updates": bool(final.shape == expected.shape and error < 1e-5)}


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- ours -------------------------------------------------------------------------------------------
def run_ours(tmp: Path, clients: int, params: int, rounds: int, timeout: float) -> dict[str, Any]:
    dep = Deployment(tmp / "ours")
    dep.env["TRIVIAL_NUM_PARAMS"] = str(params)
    try:
        server = dep.start_server()
        project = tmp / "ours" / "trivial"
        shutil.copytree(ROOT / "bench" / "projects" / "trivial", project)
        dep.cli("run", "build", "-p", "client", cwd=project)
        api = APIClient("127.0.0.1", dep.api_port, secure=False)
        api.set_active_model(project / "seed.npz")
        names = [f"trivial-{i}" for i in range(clients)]
        procs = [dep.start_client(name, project, wait=False, env={
            "SCALEOUT_PARTITION_ID": str(i), "SCALEOUT_NUM_PARTITIONS": str(clients)}) for i, name in enumerate(names)]
        dep.wait_online(names, timeout=60 + 10 * clients)
        time.sleep(2)  # let start-up work settle before the window opens
        roots = {"server": server.popen.pid, **{f"client-{i}": p.popen.pid for i, p in enumerate(procs)}}
        load = load_avg()
        with TreeMonitor(roots) as monitor:
            monitor.mark()
            t_submit = time.time()
            reply = api.start_session(name="flower-compare", rounds=rounds, round_timeout=int(timeout),
                                      validate=False, min_clients=clients, requested_clients=clients,
                                      helper="numpyhelper")
            t_accepted = time.time()
            session_id = reply.get("session_id")
            if not session_id or reply.get("message") != "Session started":
                raise RuntimeError(f"starting the session failed: {reply}")

            def ended() -> dict[str, Any] | None:
                found = api.get_session(id=session_id)
                return found if found.get("status") in ("Finished", "Stopped", "Failed") else None

            session = wait_until(ended, timeout, 0.5, f"session {session_id}")  # timing comes from the records
            usage = monitor.finish()
        if session["status"] != "Finished":
            raise RuntimeError(f"session ended {session['status']}: {session.get('error')}")
        found = dep.rounds(session_id)
        started = [datetime.fromisoformat(r["started_at"]).timestamp() for r in found]
        ended_at = [datetime.fromisoformat(r["finished_at"]).timestamp() for r in found]
        finished = datetime.fromisoformat(session["finished_at"]).timestamp()
        final_path = tmp / "ours" / "final.zip"
        api.download_model(found[-1]["new_model_id"], final_path)
        with open(final_path, "rb") as stream:
            (final,) = get_helper("numpyhelper").load(open_training_model(stream))
        return {
            "status": "finished",
            "load_average_before": load,
            "submit_seconds": round(t_accepted - t_submit, 3),
            "run_seconds": round(finished - t_accepted, 3),
            "rounds_seconds": round(ended_at[-1] - started[0], 3),
            "per_round_seconds": per_round(started[0], ended_at),
            "usage": side_summary(usage, clients),
            "final_model": check_model(final, expected_model(params, clients, rounds)),
            "_final": final,
        }
    except BaseException:
        print(dep.dump_logs()[-20000:], file=sys.stderr)
        raise
    finally:
        dep.close()


# -- Flower -----------------------------------------------------------------------------------------
def ensure_flower_venv(venv: Path) -> str:
    """Create the Flower venv (flwr==FLWR_VERSION, numpy) once; a file lock keeps two runs from racing.
    Returns the installed flwr version."""
    marker = venv / f".installed-flwr-{FLWR_VERSION}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            print(f"creating {venv} with flwr=={FLWR_VERSION} (once)", flush=True)
            subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--clear", str(venv)],
                           check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                            f"flwr=={FLWR_VERSION}", "numpy"], check=True)
            marker.touch()
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import flwr; print(flwr.__version__)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FlowerDeployment:
    """A SuperLink and SuperNodes on loopback, each process logging to a file, stopped by PID."""

    def __init__(self, root: Path, venv: Path) -> None:
        self.root = root
        self.venv = venv
        self.port = free_port()
        self.home = root / "flwr-home"  # FLWR_HOME: the CLI's config.toml and the nodes' state
        self.home.mkdir(parents=True)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{self.port}"\n'
            "insecure = true\n")
        self.env = {**os.environ, "FLWR_HOME": str(self.home), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
                    "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}
        for key in ("PYTHONPATH", "VIRTUAL_ENV"):  # nothing of our venv may leak into Flower's
            self.env.pop(key, None)
        self.procs: list[Proc] = []

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def spawn(self, name: str, args: list[str]) -> Proc:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as fh:
            popen = subprocess.Popen(args, cwd=self.root, stdout=fh, stderr=subprocess.STDOUT, env=self.env)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def alive(self, proc: Proc) -> None:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()[-4000:]}")

    def start_superlink(self, timeout: float) -> Proc:
        proc = self.spawn("superlink", [self.bin("flower-superlink"), "--insecure", "--host", "127.0.0.1",
                                        "--port", str(self.port), "--disable-runtime-dependency-installation"])

        def ready() -> bool:
            self.alive(proc)
            return "Uvicorn running" in proc.output() and bool(psutil.Process(proc.popen.pid).children())

        wait_until(ready, timeout, 0.2, "the Flower SuperLink and its SuperExec")
        return proc

    def start_supernode(self, index: int, count: int) -> Proc:
        return self.spawn(f"supernode-{index}", [
            self.bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.port}",
            "--port", str(free_port()), "--node-config", f"partition-id={index} num-partitions={count}"])

    def wait_nodes(self, nodes: list[Proc], timeout: float) -> None:
        """A SuperNode logs its id once the SuperLink has registered it; its SuperExec must be up too."""
        def ready() -> bool:
            for proc in nodes:
                self.alive(proc)
            return all("SuperNode ID:" in p.output() and psutil.Process(p.popen.pid).children() for p in nodes)

        wait_until(ready, timeout, 0.2, "the Flower SuperNodes to register")

    def wait_serverapp(self, report: Path, timeout: float) -> str:
        """"finished" once the ServerApp wrote `report`; "failed" if the run's flwr-serverapp process ended
        without writing it (Flower ends a run whose processes miss their heartbeats); "timeout"."""
        deadline = time.monotonic() + timeout
        seen: set[int] = set()
        ended_at: float | None = None
        while time.monotonic() < deadline:
            if report.exists():
                return "finished"
            for proc in self.procs:
                self.alive(proc)
            for proc in psutil.Process(self.procs[0].popen.pid).children(recursive=True):
                try:
                    if proc.name() == "flwr-serverapp" or "flwr-serverapp" in " ".join(proc.cmdline()):
                        seen.add(proc.pid)
                except psutil.Error:
                    pass
            if seen and not any(map(running, seen)):
                ended_at = ended_at or time.monotonic()
                if time.monotonic() - ended_at > 10:  # the report is written before the process exits
                    return "failed"
            time.sleep(0.1)
        return "timeout"

    def error_lines(self, limit: int = 12) -> list[str]:
        """The first distinct ERROR lines of every Flower process log (ANSI colours removed)."""
        found: list[str] = []
        for proc in self.procs:
            for line in proc.output().splitlines():
                text = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
                if "ERROR" in text and f"{proc.name}: {text}" not in found:
                    found.append(f"{proc.name}: {text[:300]}")
        return found[:limit]

    def close(self) -> None:
        """SIGTERM each root (SuperNodes first), then SIGKILL whatever of their trees is left."""
        tree: list[psutil.Process] = []
        for proc in self.procs:
            try:
                tree += psutil.Process(proc.popen.pid).children(recursive=True)
            except psutil.Error:
                pass
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(timeout=5)
        for child in tree:
            try:
                child.kill()
            except psutil.Error:
                pass

    def dump_logs(self) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.output()[-4000:]}" for p in self.procs)


def run_flower(tmp: Path, venv: Path, clients: int, params: int, rounds: int, timeout: float) -> dict[str, Any]:
    root = tmp / "flower"
    root.mkdir()
    app = root / "flowerbench"  # flwr wants an app folder named with letters, digits and hyphens only
    shutil.copytree(ROOT / "bench" / "flower_app", app, ignore=shutil.ignore_patterns("__pycache__", "*.fab"))
    out = root / "out"
    out.mkdir()
    dep = FlowerDeployment(root, venv)
    try:
        superlink = dep.start_superlink(timeout=120)
        nodes = [dep.start_supernode(i, clients) for i in range(clients)]
        dep.wait_nodes(nodes, timeout=60 + 10 * clients)
        time.sleep(2)
        roots = {"server": superlink.popen.pid, **{f"client-{i}": p.popen.pid for i, p in enumerate(nodes)}}
        load = load_avg()
        run_config = f'num-server-rounds={rounds} num-params={params} num-nodes={clients} out-dir="{out}"'
        with TreeMonitor(roots) as monitor:
            monitor.mark()
            t_submit = time.time()
            submitted = subprocess.run([dep.bin("flwr"), "run", str(app), "bench", "--run-config", run_config,
                                        "--format", "json"], cwd=root, env=dep.env, capture_output=True,
                                       text=True, timeout=300)
            t_accepted = time.time()
            if submitted.returncode != 0:
                raise RuntimeError(f"flwr run failed:\n{submitted.stdout}\n{submitted.stderr}")
            report_file = out / "server.json"
            run_id = json.loads(submitted.stdout).get("run-id")
            outcome = dep.wait_serverapp(report_file, timeout)
            usage = monitor.finish()
        if outcome != "finished":  # Flower's own account of the run, then the errors its processes logged
            status = subprocess.run([dep.bin("flwr"), "ls", "bench", "--run-id", str(run_id), "--format", "json"],
                                    cwd=root, env=dep.env, capture_output=True, text=True, timeout=120)
            runs = json.loads(status.stdout or "{}").get("runs") or [{}]
            return {"status": outcome, "load_average_before": load, "flwr_run_status": runs[0].get("status"),
                    "seconds_until_it_ended": round(time.time() - t_accepted, 1),
                    "usage": side_summary(usage, clients), "errors_logged": dep.error_lines(),
                    "flwr_run_output": submitted.stdout.strip()[-500:]}
        stamps = json.loads(report_file.read_text())
        final = np.load(out / "final.npy")
        clock = stamps["round_clock"]  # before round 1, then after each round
        return {
            "status": "finished",
            "load_average_before": load,
            "submit_seconds": round(t_accepted - t_submit, 3),
            "run_seconds": round(stamps["main_finished"] - t_accepted, 3),
            "rounds_seconds": round(clock[-1] - clock[0], 3),
            "per_round_seconds": per_round(clock[0], clock[1:]),
            "serverapp_start_seconds": round(stamps["main_started"] - t_accepted, 3),
            "usage": side_summary(usage, clients),
            "final_model": check_model(final, expected_model(params, clients, rounds)),
            "flwr_run_output": submitted.stdout.strip()[-500:],
            "_final": final,
        }
    except BaseException:
        print(dep.dump_logs()[-20000:], file=sys.stderr)
        raise
    finally:
        dep.close()


# -- report -----------------------------------------------------------------------------------------
def ratio(a: float, b: float) -> float | None:
    return float(f"{a / b:.3g}") if b else None


def plot(report: dict[str, Any], path: Path) -> None:
    sides = [(name, report[key]) for name, key in (("OURS", "ours"), ("FLOWER", "flower"))
             if report[key]["status"] == "finished"]
    panels = [
        Panel("WALL SECONDS", ["R ROUNDS", "RUN"],
              {name: [side["rounds_seconds"], side["run_seconds"]] for name, side in sides}),
        Panel("PEAK RSS MB", ["SERVER", "CLIENT"],
              {name: [side["usage"]["server"]["peak_rss_mb"], side["usage"]["client_peak_rss_mb_max"]]
               for name, side in sides}),
        Panel("CPU SECONDS", ["SERVER", "CLIENT"],
              {name: [side["usage"]["server"]["cpu_seconds"], side["usage"]["client_cpu_seconds_mean"]]
               for name, side in sides}),
    ]
    w = report["workload"]
    failed = "" if len(sides) == 2 else f" (FLOWER RUN {report['flower']['status'].upper()})"
    draw(panels, path, title=f"OURS VS FLOWER {report['flwr_version']}: N={w['clients']} "
                             f"P={w['params']} R={w['rounds']}{failed}", panel_w=420)


def ratios(ours: dict[str, Any], flower: dict[str, Any]) -> dict[str, float | None] | None:
    if flower["status"] != "finished":
        return None
    ou, fu = ours["usage"], flower["usage"]
    return {
        "rounds_seconds": ratio(ours["rounds_seconds"], flower["rounds_seconds"]),
        "run_seconds": ratio(ours["run_seconds"], flower["run_seconds"]),
        "server_peak_rss": ratio(ou["server"]["peak_rss_mb"], fu["server"]["peak_rss_mb"]),
        "client_peak_rss": ratio(ou["client_peak_rss_mb_max"], fu["client_peak_rss_mb_max"]),
        "server_cpu_seconds": ratio(ou["server"]["cpu_seconds"], fu["server"]["cpu_seconds"]),
        "client_cpu_seconds": ratio(ou["client_cpu_seconds_mean"], fu["client_cpu_seconds_mean"]),
    }


NOTES = [
    "window: from the run being submitted (session start / flwr run) to its end; process start-up, client "
    "registration and the seed model upload happen before it",
    "run_seconds: submit accepted -> finished (ours: session finished_at; Flower: ServerApp main returns); "
    "submit_seconds: the submit call itself (ours: APIClient.start_session in-process; Flower: the `flwr run` CLI "
    "including its Python start-up and FAB build)",
    "rounds_seconds: round 1 start -> last round end; per round = end of round k-1 -> end of round k",
    "peak_rss_mb: highest sum, over the tree's processes alive at one 0.1 s sample, of each one's peak RSS so far "
    "(VmHWM, reset at window start): an upper bound of the tree's peak; sampled_concurrent_peak_rss_mb: highest "
    "sampled sum of current RSS, a lower bound",
    "Flower server tree: flower-superlink + its SuperExec + the run's flwr-serverapp; Flower client tree: "
    "flower-supernode + its SuperExec + a new flwr-clientapp process per round (default --isolation subprocess); "
    "ours: scaleout server (controller + combiner process) and one `scaleout client start` process per client",
    "Flower defaults kept: a SuperNode sleeps 3 s after an empty pull, the ServerApp sleeps 3 s between pulls for "
    "replies, SuperExecs poll for tasks every 1 s; flwr 1.42 moves messages over HTTP (uvicorn) and keeps the "
    "SuperLink state in memory (no --database); ours long-polls over gRPC and stores every model and record "
    "(local folder + SQLite)",
    "all N client process trees and the server share the machine's cores: the side that spends more client CPU "
    "per round also waits longer for it; on separate client machines that part would run in parallel",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10, help="N client processes on each side (at most ~20)")
    parser.add_argument("--params", type=int, default=1_000_000, help="P float32 parameters")
    parser.add_argument("--rounds", type=int, default=5, help="R rounds")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds each side may take for its rounds")
    parser.add_argument("--flower-venv", type=Path, default=FLOWER_VENV)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "flower_compare.json")
    args = parser.parse_args()
    if not 1 <= args.clients <= 32:
        parser.error("--clients must be between 1 and 32 (every client is a set of real processes)")
    flwr_version = ensure_flower_venv(args.flower_venv)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"ours: N={args.clients} P={args.params} R={args.rounds}", flush=True)
        ours = run_ours(Path(tmp), args.clients, args.params, args.rounds, args.timeout)
        print(f"  rounds {ours['rounds_seconds']} s; Flower {flwr_version}", flush=True)
        flower = run_flower(Path(tmp), args.flower_venv, args.clients, args.params, args.rounds, args.timeout)
        print(f"  {flower['status']}: rounds {flower.get('rounds_seconds')} s", flush=True)
    final_ours, final_flower = ours.pop("_final"), flower.pop("_final", None)
    same = None if final_flower is None else float(np.max(np.abs(final_ours.astype(np.float64) - final_flower)))
    report = {
        "benchmark": "flower_compare",
        "flwr_version": flwr_version,
        "workload": {"clients": args.clients, "params": args.params, "rounds": args.rounds,
                     "model_mb": round(args.params * 4 / 1e6, 2), "aggregator": "fedavg (plain mean)",
                     "evaluation": "none", "training": f"client i adds {DELTA} * (i + 1)"},
        "ours": ours,
        "flower": flower,
        "final_models_max_abs_difference": same,
        "ratios_ours_over_flower": ratios(ours, flower),
        "benchmark_wall_seconds": round(time.time() - started, 1),
        "cpus": os.cpu_count(),
        "notes": NOTES,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps(report, indent=2))
    if flower["status"] != "finished":
        sys.exit(f"the Flower run did not finish ({flower['status']}); see flower.errors_logged")
    wrong = [side for side in ("ours", "flower") if not report[side]["final_model"]["is_mean_of_updates"]]
    if wrong:
        sys.exit(f"the final model of {' and '.join(wrong)} is not the mean of the client updates")


if __name__ == "__main__":
    main()
