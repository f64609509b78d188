"""Run an example project (default: the seed's importer-client) on a local deployment, start to finish.

Starts `scaleout server start` in the background, builds and uploads the example's seed model and
compute package, starts N clients that download the package, runs a session and prints its
per-round table and the server's URL. Everything is done with the `scaleout` CLI, as a user would.
The server and clients keep running afterwards (unless --stop) so results can be inspected;
`python scripts/run_example.py --stop-only` stops them (by the PIDs recorded in the work folder).
`--example dispatcher-numpy` runs the legacy dispatcher example instead: its clients are started with
--dispatcher, client i with EXAMPLE_PARTITION=i-1 (its share of the example's data).
`--example sklearn-digits` / `pytorch-digits` / `keras-digits` run the machine-learning examples; every
client i of N gets its data share as SCALEOUT_PARTITION_ID=i-1, SCALEOUT_NUM_PARTITIONS=N (`client.partition`).
`--example server-functions` starts 4 device clients (alternately DEVICE_TIER=fast/slow, the last with
DEVICE_CHARGING=false), waits until the server knows their attributes, runs the session with the
example's server_functions.py and prints who trained in each round with which settings (show_rounds.py).
The example's python_env.yaml requirements must be installed in this Python first (the script checks,
and says how: `scaleout run install -p client`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

import requests

from scaleout.project.config import ProjectError, load_project
from scaleout.project.environment import read_python_env, split_provided
from scaleoututil.partitioning import Partition

ROOT = Path(__file__).resolve().parent.parent
# name -> extra `client start` flags
EXAMPLES = {"importer-client": (), "dispatcher-numpy": ("--dispatcher",), "sklearn-digits": (), "pytorch-digits": (),
            "keras-digits": (), "server-functions": ()}
DEFAULT_CLIENTS = {"server-functions": 4}  # examples that need more than 2 clients to show anything


def device_env(example: str, i: int, clients: int) -> dict[str, str]:
    """The server-functions example's client i (1-based) of N: alternately fast and slow hardware, and
    (with 3 or more clients) the last one not charging, so that the server functions never pick it."""
    if example != "server-functions":
        return {}
    return {"DEVICE_TIER": "fast" if i % 2 else "slow",
            "DEVICE_CHARGING": "false" if i == clients and clients >= 3 else "true"}


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


def _unmet(requirement: str) -> str | None:
    """Why `requirement` is not satisfied by this Python's installed packages (None when it is)."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # no `packaging`: check the distribution's presence only
        name = requirement.split(";")[0].strip()
        for sep in "<>=!~[@ ":
            name = name.split(sep)[0]
        try:
            importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            return "not installed"
        return None
    try:
        req = Requirement(requirement)
    except InvalidRequirement:
        return None  # an option line or a path: pip's business, not checked here
    if req.marker is not None and not req.marker.evaluate():
        return None
    try:
        version = importlib_metadata.version(req.name)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return f"version {version} is installed"
    return None


def missing_requirements(client_dir: Path) -> list[str]:
    """The python_env.yaml dependencies of the project in `client_dir` that this Python lacks, with why."""
    try:
        env = read_python_env(load_project(client_dir))
    except ProjectError:
        return []  # no python_env: the project manages its environment itself
    requirements, _ = split_provided(env.dependencies)
    return [f"{req} ({why})" for req in requirements if (why := _unmet(req)) is not None]


def check_requirements(example: str) -> None:
    """Exit with a message saying what to install when the example's requirements are missing here."""
    example_dir = ROOT / "examples" / example
    missing = missing_requirements(example_dir / "client")
    if missing:
        sys.exit(f"examples/{example} needs packages that {sys.executable} does not have:\n  "
                 + "\n  ".join(missing)
                 + f"\nInstall its python_env.yaml requirements into this Python, then run this script again:\n"
                 f"  cd {example_dir} && {sys.executable} -m scaleout run install -p client"
                 + ("\n(PyTorch's CPU-only build, much smaller: prefix that command with "
                    "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu)"
                    if any(m.startswith("torch") for m in missing) else ""))


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
    parser.add_argument("--clients", type=int, default=None, help="default: 2 (4 for server-functions)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stop", action="store_true", help="stop server and clients when the session ends")
    parser.add_argument("--stop-only", action="store_true", help="only stop a previous run's processes")
    args = parser.parse_args()
    args.clients = args.clients or DEFAULT_CLIENTS.get(args.example, 2)
    work: Path = args.work_dir.resolve()
    if args.stop_only:
        stop_all(work)
        return
    check_requirements(args.example)
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
                  client_dir, work, env={"EXAMPLE_PARTITION": str(i - 1), **Partition(i - 1, args.clients).env(),
                                         **device_env(args.example, i, args.clients)})
        wait_for(f"{api}/api/v1/clients/?status=online", lambda body: body.get("count", 0) >= args.clients, 90,
                 f"{args.clients} clients to connect")
        server_functions = []
        if args.example == "server-functions":  # its client selection reads the attributes the clients report
            wait_for(f"{api}/api/v1/clients/?status=online",
                     lambda body: sum("tier" in (c.get("attributes") or {}) for c in body["result"]) >= args.clients,
                     60, "the clients' attributes")
            server_functions = ["--server-functions", "server_functions.py"]
        sh(["session", "start", "--rounds", str(args.rounds), "--min_clients", str(args.clients),
            "-n", f"{args.example}-example", "--wait", *server_functions, *api_opts], project)
        if server_functions:
            subprocess.run([sys.executable, "show_rounds.py", *api_opts], cwd=project, check=True)
    finally:
        if args.stop:
            stop_all(work)
    print(f"\nServer: {api}   (REST API under {api}/api/v1, OpenAPI at {api}/docs)")
    if not args.stop:
        print(f"Server and clients keep running; logs in {work / 'logs'}. "
              f"Stop them with: python scripts/run_example.py --stop-only")


if __name__ == "__main__":
    main()
