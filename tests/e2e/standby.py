"""Two controllers for one deployment, shared by the standby test and the chaos scenarios: a TCP proxy in
front of them (a Kubernetes Service with a readiness probe, for the published clients), the environment
that points a controller at PostgreSQL and S3, the token secret they share, and starting one."""

from __future__ import annotations

import base64
import os
import secrets
import socket
import threading
from pathlib import Path

import requests

from tests.conftest import free_port
from tests.e2e.deployment import Deployment, Proc, scaleout_cmd, wait_until
from tests.storage.services import PostgresServer, S3Server


class ServiceProxy:
    """One TCP address in front of several controllers: each new connection goes to the backend whose
    `/ready` answered 200 last (checked every 0.2 s), as a Kubernetes Service with a readiness probe does."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.active: int | None = None
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        for target in (self._probe, self._accept):
            threading.Thread(target=target, daemon=True).start()

    def _probe(self) -> None:
        while not self._stop.wait(0.2):
            ready = None
            for port in self.backends:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                        ready = port
                        break
                except requests.RequestException:
                    continue
            self.active = ready

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            port = self.active
            if port is None:
                conn.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._server.close()


def server_env(pg: PostgresServer, s3: S3Server, database: str) -> dict[str, str]:
    return {"SCALEOUT_STORE_URL": pg.create_database(database), "SCALEOUT_REPOSITORY_TYPE": "s3",
            "SCALEOUT_S3_ENDPOINT": s3.endpoint, "SCALEOUT_S3_BUCKET": "standby", "SCALEOUT_S3_REGION": "us-east-1",
            "SCALEOUT_S3_PREFIX": database, "SCALEOUT_S3_ACCESS_KEY": s3.access_key,
            "SCALEOUT_S3_SECRET_KEY": s3.secret_key, "SCALEOUT_CLIENT_OFFLINE_AFTER": "4"}


def share_secret(*data_dirs: Path) -> None:
    """The deployment's token secret, given to every controller (a Kubernetes Secret in production)."""
    secret = base64.b64encode(secrets.token_bytes(32)).decode() + "\n"
    for data_dir in data_dirs:
        path = data_dir / "auth" / "secret.key"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(secret)
        os.chmod(path, 0o600)


def start_controller(dep: Deployment, name: str, port: int, data_dir: Path, *extra: str) -> Proc:
    proc = dep._spawn(name, scaleout_cmd("controller", "start", "--host", "127.0.0.1", "--api-port", str(port),
                                         "--data-dir", str(data_dir), *extra), cwd=dep.root)

    def healthy() -> bool:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{proc.output()}")
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(healthy, 60, 0.2, name)
    return proc


def ready(port: int) -> int | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code
    except requests.RequestException:
        return None
