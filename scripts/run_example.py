"""Run an example project (default: the seed's importer-client) on a local deployment, start to finish.

Starts `scaleout server start` in the background, builds and uploads the example's seed model and
compute package, starts N clients that download the package, runs a session and prints its
per-round table and the server's URL. Everything is done with the `scaleout` CLI, as a user would.
The server and clients keep running afterwards (unless --stop) so results can be inspected;
`python scripts/run_example.py --stop-only` stops them (by the PIDs recorded in the work folder).
`--example dispatcher-numpy` runs the legacy dispatcher example instead: its clients are started with
--dispatcher, client i with EXAMPLE_PARTITION=i-1 (its share of the example's data).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {"importer-client": (), "dispatcher-numpy": ("--dispatcher",)}  # name -> extra `client start` flags


def sh(args: list[str], cwd: Path) -> None:
    """Run a `scaleout` command with its output going straight to ours (live progress included)."""
    print(f"$ scaleout {' '.join(args)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "scaleout", *args], cwd=cwd)
    if result.returncode != 0:
        sys.exit(f"scaleout {args[0]} {args[1]} failed with exit code {result.returncode}")


def spawn(name: str, args: list[str], cwd: Path, work: Path, env: dict[str, str] | None = None) -> int:
    log = work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "scaleout", *args], cwd=cwd, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    (work / "pids").mkdir(exist_ok=True)
    (work / "pids" / f"{name}.pid").write_text(str(proc.pid))
    print(f"started {name} (pid {proc.pid}, log {log})", flush=True)
    return proc.pid


def _gone(pid: int) -> bool:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child: reap it
            return True
    except ChildProcessError:  # started by an earlier run: not ours to reap
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop_all(work: Path) -> None:
    """Stop the recorded processes by PID: clients first (they say goodbye), then the server."""
    pidfiles = sorted((work / "pids").glob("*.pid")) if (work / "pids").exists() else []
    pidfiles.sort(key=lambda p: p.stem == "server")
    for pidfile in pidfiles:
        pid = int(pidfile.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while not _gone(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pidfile.unlink()
        print(f"stopped {pidfile.stem} (pid {pid})")


def wait_for(url: str, predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = requests.get(url, timeout=2)
            if r.status_code == 200 and predicate(r.json()):
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.3)
    sys.exit(f"timed out waiting for {what} ({url})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--example", choices=sorted(EXAMPLES), default="importer-client",
                        help="which project under examples/ to run")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".example-run", help="where data, logs, pids go")
    parser.add_argument("--api-port", type=int, default=8092)
    parser.add_argument("--combiner-port", type=int, default=12080)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stop", action="store_true", help="stop server and clients when the session ends")
    parser.add_argument("--stop-only", action="store_true", help="only stop a previous run's processes")
    args = parser.parse_args()
    work: Path = args.work_dir.resolve()
    if args.stop_only:
        stop_all(work)
        return
    stop_all(work)  # a previous run's processes would hold the ports
    if work.exists():
        shutil.rmtree(work)
    project = work / args.example
    shutil.copytree(ROOT / "examples" / args.example, project)
    api = f"http://127.0.0.1:{args.api_port}"
    api_opts = ["-H", "127.0.0.1", "-P", str(args.api_port)]

    spawn("server", ["server", "start", "--api-port", str(args.api_port), "--combiner-port",
                     str(args.combiner_port), "--data-dir", str(work / "scaleout-data")], work, work)
    wait_for(f"{api}/api/v1/combiners/", lambda body: body.get("count", 0) >= 1, 60, "the server")
    try:
        sh(["run", "build", "-p", "client"], project)
        sh(["package", "create", "--path", "client"], project)
        sh(["package", "set-active", "--file", "package.tgz", "-n", args.example, *api_opts], project)
        sh(["model", "set-active", "--file", "seed.npz", *api_opts], project)
        for i in range(1, args.clients + 1):
            client_dir = work / f"client-{i}"
            client_dir.mkdir()
            spawn(f"client-{i}", ["client", "start", "--api-url", api, "-n", f"client-{i}", *EXAMPLES[args.example]],
                  client_dir, work, env={"EXAMPLE_PARTITION": str(i - 1)})
        wait_for(f"{api}/api/v1/clients/?status=online", lambda body: body.get("count", 0) >= args.clients, 90,
                 f"{args.clients} clients to connect")
        sh(["session", "start", "--rounds", str(args.rounds), "--min_clients", str(args.clients),
            "-n", f"{args.example}-example", "--wait", *api_opts], project)
    finally:
        if args.stop:
            stop_all(work)
    print(f"\nServer: {api}   (REST API under {api}/api/v1, OpenAPI at {api}/docs)")
    if not args.stop:
        print(f"Server and clients keep running; logs in {work / 'logs'}. "
              f"Stop them with: python scripts/run_example.py --stop-only")


if __name__ == "__main__":
    main()
