"""The edge install against the full one: install size, import time and idle RSS of the client.

An edge device installs `pip install scaleout-edge-open` (the client SDK, CLI and helpers); the server
comes with the `server` extra. For each variant this builds a fresh venv (`python -m venv`, then `pip
install` of this repository's package: a copy of its sources, as a user's pip would see them) and reports:
- `site_packages_bytes`: the bytes of the regular files under the venv's site-packages, pip and setuptools
  (Python 3.11's venv brings it) included, the .pyc files pip compiles at install time too;
- `import_seconds`: `import scaleout` (the SDK: EdgeClient, ScaleoutModel, APIClient) timed inside a fresh
  interpreter, the median of --repeat processes; `help_seconds`: the wall time of `scaleout --help`; the
  variants take turns, so the machine's load changing during the run hits them alike;
- `idle_rss_bytes`: the resident memory of `scaleout client start --local-package` of the seed's example
  (examples/importer-client), connected to a local server (from the full venv) and idle, the median of
  samples taken 5 s after it came online (the client process and any children);
- `largest_packages`: the top-level names in site-packages by size.
The published `scaleout` client (1.0.7 on Python 3.11, 1.1 on Python 3.12, where that Python exists) is
installed and measured the same way for comparison (`--no-published` skips it). Writes
bench/results/edge_install.json. The venvs are built in a temporary folder and deleted.

The same venv builder (`build_venv`, `ensure_client_venv`) serves tests/e2e/test_edge_install.py.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "edge_install.json"
CACHE = REPO / ".cache" / "edge"
SOURCES = ("pyproject.toml", "README.md", "scaleout", "scaleoututil", "scaleout_server")
EXAMPLE = REPO / "examples" / "importer-client"
MARKER = ".scaleout-edge-requirement"


def _run(args: list[str], timeout: float = 900, cwd: Path | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")
    return result.stdout


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3.*/site-packages"))
    if len(found) != 1:
        raise RuntimeError(f"{venv}: expected one site-packages folder, found {found}")
    return found[0]


def build_venv(venv: Path, extras: str = "", python: str = sys.executable, requirement: str | None = None) -> Path:
    """A fresh venv at `venv` with this repository's package (`pip install .[extras]` of a copy of its
    sources, so the shared checkout gets no build folder) or with `requirement` (e.g. a published
    release) installed, dependencies resolved by pip as a user's would be."""
    shutil.rmtree(venv, ignore_errors=True)
    _run([python, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if requirement is not None:
        _run([*pip, requirement])
        return venv
    with source_copy() as src:
        _run([*pip, f"{src}{f'[{extras}]' if extras else ''}"])
    return venv


@contextmanager
def source_copy() -> Iterator[Path]:
    """The package's sources in a temporary folder: pip builds there, not in the shared checkout."""
    with tempfile.TemporaryDirectory(prefix="scaleout-src-") as tmp:
        src = Path(tmp) / "scaleout-edge-open"
        src.mkdir()
        for name in SOURCES:
            path = REPO / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, src / name)
        yield src


def core_requirement_key() -> str:
    """What a cached client-only venv was built from: the core dependency list and the Python version."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return hashlib.sha256(json.dumps([sorted(deps), platform.python_version()]).encode()).hexdigest()


def ensure_client_venv() -> Path:
    """The client-only venv for tests: built fresh when the core dependencies (or Python) changed since
    the cached one, else reused with this repository's package reinstalled (no dependencies: they are the
    same). Safe against parallel runs."""
    CACHE.mkdir(parents=True, exist_ok=True)
    venv = CACHE / "client-only"
    with open(CACHE / "client-only.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = venv / MARKER
        key = core_requirement_key()
        if (venv / "bin" / "scaleout").exists() and marker.exists() and marker.read_text() == key:
            _reinstall_package(venv)
        else:
            build_venv(venv)
            marker.write_text(key)
    return venv


def _reinstall_package(venv: Path) -> None:
    with source_copy() as src:
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "--no-deps", "--force-reinstall", str(src)])


def tree_bytes(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                total += os.stat(path).st_size
    return total


def largest(root: Path, count: int = 12) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for entry in root.iterdir():
        if entry.name.endswith((".dist-info", ".pth")) or entry.name == "__pycache__":
            continue
        sizes[entry.name] = tree_bytes(entry) if entry.is_dir() else entry.stat().st_size
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:count])


IMPORT_CODE = "import time; t = time.perf_counter(); import scaleout; print(time.perf_counter() - t)"


def timings(venvs: dict[str, Path], repeat: int) -> dict[str, dict[str, float]]:
    """Median `import scaleout` seconds (inside the interpreter) and `scaleout --help` wall seconds per venv,
    the venvs taking turns so that a change of the machine's load hits them alike."""
    imports: dict[str, list[float]] = {label: [] for label in venvs}
    helps: dict[str, list[float]] = {label: [] for label in venvs}
    for _ in range(repeat):
        for label, venv in venvs.items():
            imports[label].append(float(_run([str(venv / "bin" / "python"), "-c", IMPORT_CODE], cwd=Path("/"))))
            start = time.perf_counter()
            _run([str(venv / "bin" / "scaleout"), "--help"], cwd=Path("/"))
            helps[label].append(time.perf_counter() - start)
    return {label: {"import_seconds": round(statistics.median(imports[label]), 3),
                    "help_seconds": round(statistics.median(helps[label]), 3)} for label in venvs}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@contextmanager
def local_server(server_venv: Path, work: Path) -> Iterator[str]:
    """`scaleout server start` of `server_venv` on free loopback ports; yields its API URL."""
    api_port = free_port()
    argv = [str(server_venv / "bin" / "scaleout"), "server", "start", "--api-port", str(api_port),
            "--combiner-port", str(free_port()), "--data-dir", str(work / "server-data")]
    url = f"http://127.0.0.1:{api_port}"
    with (work / "server.log").open("wb") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=work, start_new_session=True)
    try:
        def ready() -> bool:
            if server.poll() is not None:
                raise RuntimeError(f"the server exited: {(work / 'server.log').read_text()[-3000:]}")
            try:
                return requests.get(f"{url}/api/v1/combiners/", timeout=2).json()["count"] >= 1
            except (requests.RequestException, ValueError, KeyError):
                return False

        wait_for(ready, 90, "the local server")
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (Linux /proc)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
        pending.extend(int(c) for c in children)
    return total


def idle_client_rss(venv: Path, api_url: str, work: Path, name: str) -> int:
    """Start the seed's example client of `venv` against `api_url`, wait until it is online and idle, sample
    its RSS; the client is stopped afterwards."""
    project = work / f"project-{name}"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "*.npz", "*.tgz"))
    argv = [str(venv / "bin" / "scaleout"), "client", "start", "--api-url", api_url, "-n", name, "--local-package"]
    with (work / f"client-{name}.log").open("wb") as log:
        client = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=project, start_new_session=True)
    try:
        def online() -> bool:
            if client.poll() is not None:
                raise RuntimeError(f"client {name} exited: {(work / f'client-{name}.log').read_text()[-3000:]}")
            found = requests.get(f"{api_url}/api/v1/clients/", params={"status": "online"}, timeout=5).json()
            return any(c["name"] == name for c in found["result"])

        wait_for(online, 90, f"client {name} online")
        time.sleep(5)
        samples = []
        for _ in range(5):
            samples.append(tree_rss(client.pid))
            time.sleep(1)
        return int(statistics.median(samples))
    finally:
        client.send_signal(signal.SIGTERM)
        try:
            client.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait(timeout=10)


def find_python(minor: str) -> str | None:
    sys.path.insert(0, str(REPO))
    from tests.interop.official import find_python as find

    try:
        return find(minor)
    except RuntimeError:
        return None


def measure(venv: Path) -> dict[str, object]:
    root = site_packages(venv)
    python = _run([str(venv / "bin" / "python"), "-c", "import platform; print(platform.python_version())"]).strip()
    return {"python": python, "site_packages_bytes": tree_bytes(root),
            "site_packages_mb": round(tree_bytes(root) / 1e6, 1), "largest_packages": largest(root)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="processes per import / --help timing")
    parser.add_argument("--no-published", action="store_true", help="skip the published clients' installs")
    args = parser.parse_args()
    results: dict[str, object] = {"load_average_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    variants: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="edge-install-") as tmp:
        work = Path(tmp)
        py311 = find_python("3.11") or sys.executable
        venvs = {"client": build_venv(work / "client", python=py311),
                 "client+server": build_venv(work / "server", extras="server", python=py311)}
        for label, venv in venvs.items():
            variants[label] = measure(venv)
        print("timing imports", flush=True)
        for label, figures in timings(venvs, args.repeat).items():
            variants[label].update(figures)
        with local_server(venvs["client+server"], work) as api_url:
            for label, venv in venvs.items():
                rss = idle_client_rss(venv, api_url, work, label.replace("+", "-"))
                variants[label]["idle_rss_bytes"] = rss
                variants[label]["idle_rss_mb"] = round(rss / 1e6, 1)
        py312 = find_python("3.12")
        if py312:
            print("measuring client on 3.12", flush=True)
            variants["client (Python 3.12)"] = measure(build_venv(work / "client312", python=py312))
            shutil.rmtree(work / "client312")
        if not args.no_published:
            for label, requirement, python in (("published 1.0.7", "scaleout==1.0.7", py311),
                                               ("published 1.1", "scaleout>=1.1,<1.2", py312)):
                if python is None:
                    continue
                print(f"measuring {label}", flush=True)
                venv = build_venv(work / "published", python=python, requirement=requirement)
                variants[label] = measure(venv)
                variants[label]["requirement"] = requirement
                shutil.rmtree(venv)
    results["variants"] = variants
    results["note"] = ("site_packages_mb: bytes of the regular files in a fresh venv's site-packages (pip and "
                       "setuptools included; MB = 10^6 bytes). import_seconds: `import scaleout`, median of fresh "
                       "interpreters. idle_rss: the seed's example client, online and idle.")
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for label, v in variants.items():
        extra = (f", import {v['import_seconds']} s, --help {v['help_seconds']} s, idle RSS {v['idle_rss_mb']} MB"
                 if "idle_rss_mb" in v else "")
        print(f"{label:24} {v['python']:8} {v['site_packages_mb']:7.1f} MB{extra}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
