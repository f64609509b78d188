"""A real local deployment for end-to-end tests: `scaleout server start` plus client processes.

Every process is started with the project's own CLI on 127.0.0.1 with free ports, its output
goes to a log file in the test's folder, and it is stopped by PID at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.conftest import free_port

PROJECTS = Path(__file__).parent / "projects"


def scaleout_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "scaleout", *args]


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Deployment:
    root: Path
    api_port: int = field(default_factory=free_port)
    combiner_port: int = field(default_factory=free_port)
    procs: list[Proc] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # a secured controller's admin token (read from the file it writes); REST calls, the CLI, combiners
    # and clients started here then carry tokens
    admin_token: str | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "scaleout-data"

    def _spawn(self, name: str, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Proc:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **(env or {})}
        with log.open("wb") as fh:
            popen = subprocess.Popen(args, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=full_env)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    # -- server -------------------------------------------------------------------------
    def start_server(self, timeout: float = 60, secure: bool = False, extra: tuple[str, ...] = ()) -> Proc:
        proc = self._spawn("server", scaleout_cmd(
            "server", "start", "--host", "127.0.0.1", "--api-port", str(self.api_port),
            "--combiner-port", str(self.combiner_port), "--data-dir", str(self.data_dir),
            *(("--secure",) if secure else ()), *extra), cwd=self.root)

        def ready() -> bool:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"server exited early:\n{proc.output()}")
            if secure and not self.admin_token and not self._read_admin_token():
                return False
            try:
                return self.get("/api/v1/combiners/")["count"] >= 1
            except (requests.RequestException, ValueError, KeyError):
                return False

        wait_until(ready, timeout, 0.2, "server and combiner")
        return proc

    def spawn_controller(self) -> Proc:
        """`scaleout controller start` without waiting for it (chaos tests kill it while it starts)."""
        return self._spawn("controller", scaleout_cmd(
            "controller", "start", "--host", "127.0.0.1", "--api-port", str(self.api_port),
            "--data-dir", str(self.data_dir)), cwd=self.root)

    def start_controller(self, timeout: float = 60) -> Proc:
        proc = self.spawn_controller()
        wait_until(lambda: self._answers("/health", proc), timeout, 0.2, "controller")
        wait_until(self._read_admin_token, 10, 0.1, "the controller's admin token file")  # always secured
        return proc

    def _read_admin_token(self) -> bool:
        path = self.data_dir / "auth" / "admin.token"
        token = path.read_text().strip() if path.exists() else ""
        self.admin_token = token or self.admin_token
        return bool(token)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}

    def create_token(self, role: str, **body: Any) -> str:
        """A new token of `role` from a secured controller (`name`, `client_id`, `expires` as for the CLI)."""
        r = self.post("/api/v1/auth/tokens", {"role": role, **body})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def start_combiner(self, name: str = "combiner", port: int | None = None, timeout: float = 60) -> Proc:
        """A stand-alone combiner registering with this deployment's controller over REST."""
        env = {"SCALEOUT_COMBINER_TOKEN": self.create_token("combiner", name=name)} if self.admin_token else None
        proc = self._spawn(f"combiner-{name}", scaleout_cmd(
            "combiner", "start", "--controller", self.api_url, "--host", "127.0.0.1",
            "--port", str(port or self.combiner_port), "--name", name,
            "--data-dir", str(self.root / f"combiner-{name}")), cwd=self.root, env=env)

        def registered() -> bool:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"combiner exited early:\n{proc.output()}")
            found = self.get("/api/v1/combiners/", params={"name": name})["result"]
            return bool(found) and found[0]["status"] == "online"

        wait_until(registered, timeout, 0.2, f"combiner {name} to register")
        return proc

    def _answers(self, path: str, proc: Proc) -> bool:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()}")
        try:
            return requests.get(self.api_url + path, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    # -- REST ---------------------------------------------------------------------------
    def get(self, path: str, **kw: Any) -> Any:
        kw["headers"] = {**self.auth_headers(), **kw.get("headers", {})}
        r = requests.get(self.api_url + path, timeout=30, **kw)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        kw["headers"] = {**self.auth_headers(), **kw.get("headers", {})}
        return requests.post(self.api_url + path, json=body, timeout=120, **kw)

    def cli(self, *args: str, check: bool = True, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run an API command of our CLI against this deployment."""
        auth = {"SCALEOUT_AUTH_TOKEN": self.admin_token} if self.admin_token else {}
        result = subprocess.run(scaleout_cmd(*args), cwd=cwd or self.root, capture_output=True, text=True,
                                timeout=timeout, env={**os.environ, **self.env, **auth})
        if check and result.returncode != 0:
            raise AssertionError(f"scaleout {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def api_args(self) -> list[str]:
        return ["-H", "127.0.0.1", "-P", str(self.api_port)]

    # -- projects and clients -----------------------------------------------------------
    def project(self, name: str = "weighted") -> Path:
        """Copy a test project into the deployment folder; returns the folder holding client/."""
        dest = self.root / "projects" / name
        if not dest.exists():
            shutil.copytree(PROJECTS / name, dest)
        return dest

    def upload_seed(self, project_dir: Path) -> str:
        self.cli("run", "build", "-p", "client", cwd=project_dir)
        self.cli("model", "set-active", "-f", "seed.npz", *self.api_args(), cwd=project_dir)
        return self.get("/api/v1/models/", headers={"X-Limit": "1", "X-Sort-Key": "committed_at",
                                                     "X-Sort-Order": "desc"})["result"][0]["model_id"]

    def start_client(self, name: str, project_dir: Path, env: dict[str, str] | None = None,
                     extra: tuple[str, ...] = ("--local-package",), wait: bool = True) -> Proc:
        if self.admin_token and "--token" not in extra:
            extra = (*extra, "--token", self.create_token("client", name=name))
        proc = self._spawn(f"client-{name}", scaleout_cmd(
            "client", "start", "--api-url", self.api_url, "-n", name, *extra), cwd=project_dir, env=env)
        if wait:
            self.wait_online([name], proc=proc)
        return proc

    def online_clients(self) -> dict[str, dict[str, Any]]:
        found = self.get("/api/v1/clients/", params={"status": "online"})["result"]
        return {c["name"]: c for c in found}

    def wait_online(self, names: list[str], timeout: float = 60, proc: Proc | None = None) -> None:
        def ok() -> bool:
            if proc is not None and proc.popen.poll() is not None:
                raise RuntimeError(f"client exited early:\n{proc.output()}")
            return set(names) <= set(self.online_clients())

        wait_until(ok, timeout, 0.2, f"clients {names} online")

    # -- sessions -----------------------------------------------------------------------
    def start_session(self, **config: Any) -> str:
        body = {"name": config.pop("name", None), "session_config": config}
        r = self.post("/api/v1/sessions/", body)
        assert r.status_code == 201, r.text
        session_id = r.json()["session_id"]
        r = self.post("/api/v1/sessions/start", {"session_id": session_id})
        assert r.status_code == 200, r.text
        return session_id

    def wait_session(self, session_id: str, timeout: float = 120) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            s = self.get(f"/api/v1/sessions/{session_id}")
            return s if s["status"] in ("Finished", "Stopped", "Failed") else None

        return wait_until(done, timeout, 0.2, f"session {session_id} to end")

    def rounds(self, session_id: str) -> list[dict[str, Any]]:
        found = self.get("/api/v1/rounds/", params={"session_id": session_id},
                         headers={"X-Sort-Key": "round_number", "X-Sort-Order": "asc"})["result"]
        return found

    def stop_clients(self) -> None:
        for proc in self.procs:
            if proc.name.startswith("client-"):
                proc.stop()

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    @contextmanager
    def guarded(self) -> Iterator[Deployment]:
        """Wraps a test's or fixture's body: prints every process's log when it fails, stops them all after."""
        try:
            yield self
        except BaseException:
            print(self.dump_logs())
            raise
        finally:
            self.close()

    def dump_logs(self) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.output()[-6000:]}" for p in self.procs)


def as_json(text: str) -> Any:
    return json.loads(text)
