"""Faults of the parts underneath a running session: the PostgreSQL statestore restarted, the S3 model
repository down for 20 s, the combiner's disk full while clients upload their updates.

Each test runs a real controller, a combiner and two clients (processes, 127.0.0.1) and hits round 2 of
a 3-round session with one fault. The session must finish, every round with both clients' updates, and
every committed model must be the FedAvg of the updates its round lists (no acknowledged update lost,
none counted twice); the processes' logs must say what was wrong while it was.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import check_fedavg_rounds, rounds_of
from tests.e2e.deployment import Deployment, wait_until
from tests.storage.services import (
    PostgresServer,
    S3Server,
    ServiceError,
    postgres_and_s3,
    postgres_bindir,
    weed_binary,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROUNDS = 3
CLIENTS = {"c1": (1.0, 1), "c2": (3.0, 2)}  # name -> (constant, num_examples)
CLIENT_ENV = {"E2E_STEP_SECONDS": "0.4", "E2E_TRAIN_STEPS": "3"}
BUCKET = "scaleout-faults"


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[PostgresServer, S3Server]]:
    try:
        postgres_bindir(), weed_binary()
    except ServiceError as exc:
        pytest.skip(f"needs PostgreSQL 15 and SeaweedFS: {exc}")
    with postgres_and_s3("scaleout-faults") as both:
        yield both


def storage_env(pg: PostgresServer, s3: S3Server) -> dict[str, str]:
    """Settings for a controller and combiner on a new PostgreSQL database and a new S3 prefix."""
    return {"SCALEOUT_STORE_URL": pg.create_database(f"f_{uuid.uuid4().hex[:10]}"),
            "SCALEOUT_REPOSITORY_TYPE": "s3", "SCALEOUT_S3_ENDPOINT": s3.endpoint, "SCALEOUT_S3_BUCKET": BUCKET,
            "SCALEOUT_S3_PREFIX": f"t-{uuid.uuid4().hex[:8]}", "SCALEOUT_S3_REGION": "us-east-1",
            "SCALEOUT_S3_ACCESS_KEY": s3.access_key, "SCALEOUT_S3_SECRET_KEY": s3.secret_key}


def start_cluster(dep: Deployment) -> str:
    """Controller, combiner `edge-1`, the seed model and both clients; returns the seed model id."""
    dep.start_controller()
    dep.start_combiner("edge-1")
    project = dep.project("weighted")
    seed_id = dep.upload_seed(project)
    for name, (constant, examples) in CLIENTS.items():
        dep.start_client(name, project, env={**CLIENT_ENV, "E2E_CONSTANT": str(constant),
                                             "E2E_NUM_EXAMPLES": str(examples)})
    return seed_id


def round_running(dep: Deployment, session_id: str, number: int) -> bool:
    return any(r["round_number"] == number and r["status"] == "Running" for r in rounds_of(dep, session_id))


def assert_session_whole(dep: Deployment, session_id: str, seed_id: str, timeout: float = 180) -> None:
    session = dep.wait_session(session_id, timeout=timeout)
    assert session["status"] == "Finished", (session, rounds_of(dep, session_id))
    checked, anomalies = check_fedavg_rounds(dep, session_id, seed_id, ROUNDS)
    assert not anomalies and checked == ROUNDS, anomalies
    stored = dep.get("/api/v1/updates/", params={"session_id": session_id}, headers={"X-Limit": "1000"})["result"]
    by_id = {u["update_id"]: u for u in stored}
    for round_ in rounds_of(dep, session_id):  # every round folded an update of each client
        senders = sorted(by_id[u]["client_id"] for c in round_["combiners"] for u in c["update_ids"])
        assert len(set(senders)) == len(senders) == len(CLIENTS), (round_["round_number"], senders)


def output_of(dep: Deployment, name: str) -> str:
    return "\n".join(p.output() for p in dep.procs if p.name == name)


def test_postgres_restarted_mid_round_the_session_finishes_with_every_update(
        tmp_path: Path, services: tuple[PostgresServer, S3Server]) -> None:
    pg, s3 = services
    dep = Deployment(tmp_path, env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4", **storage_env(pg, s3)})
    with dep.guarded():
        seed_id = start_cluster(dep)
        session_id = dep.start_session(rounds=ROUNDS, round_timeout=60, model_id=seed_id, validate=False,
                                       clients_required=2)
        wait_until(lambda: round_running(dep, session_id, 2), 90, 0.05, "round 2 to run")
        time.sleep(0.5)
        pg.restart(down_for=8.0)  # every pooled connection is cut, and the lease cannot be renewed meanwhile
        assert_session_whole(dep, session_id, seed_id)
        said = output_of(dep, "controller")
        assert "cannot connect to the statestore" in said and "retrying for up to" in said, said[-3000:]
        assert "answers again" in said


def test_s3_down_for_20s_mid_round_the_session_waits_says_why_and_finishes(
        tmp_path: Path, services: tuple[PostgresServer, S3Server]) -> None:
    pg, s3 = services
    dep = Deployment(tmp_path, env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4", **storage_env(pg, s3)})
    with dep.guarded():
        seed_id = start_cluster(dep)
        session_id = dep.start_session(rounds=ROUNDS, round_timeout=60, model_id=seed_id, validate=False,
                                       clients_required=2)
        wait_until(lambda: round_running(dep, session_id, 2), 90, 0.05, "round 2 to run")
        time.sleep(0.5)
        s3.restart(down_for=20.0)
        assert_session_whole(dep, session_id, seed_id)
        said = output_of(dep, "controller") + output_of(dep, "combiner-edge-1")
        assert f"cannot reach the S3 endpoint {s3.endpoint}" in said and "retrying for up to" in said, said[-3000:]
        assert f"the S3 endpoint {s3.endpoint} answers again" in said


def test_s3_repository_call_during_an_outage_waits_for_the_store_and_succeeds(
        services: tuple[PostgresServer, S3Server]) -> None:
    """The retry itself: a put and a read issued while the store is down finish once it is back; past
    `unavailable_wait` the call gives up with RepositoryUnavailable naming the endpoint."""
    import io

    from scaleout_server.repository.base import RepositoryUnavailable
    from scaleout_server.repository.s3 import S3Repository

    _, s3 = services
    repo = S3Repository(BUCKET, endpoint_url=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
                        prefix=f"retry-{uuid.uuid4().hex[:8]}", unavailable_wait=30)
    repo.put("models", "before", io.BytesIO(b"kept"))
    outage = threading.Thread(target=s3.restart, kwargs={"down_for": 4.0})
    outage.start()
    try:
        time.sleep(0.5)  # the store is down now
        started = time.monotonic()
        assert repo.put("models", "during", io.BytesIO(b"stored late"))[0] == len(b"stored late")
        assert time.monotonic() - started > 2  # it did wait for the store
        with repo.open("models", "before") as fh:
            assert fh.read() == b"kept"
    finally:
        outage.join()
    with repo.open("models", "during") as fh:
        assert fh.read() == b"stored late"
    impatient = S3Repository(BUCKET, endpoint_url=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
                             prefix=repo.prefix, unavailable_wait=1.5)
    s3.stop()
    try:
        started = time.monotonic()
        with pytest.raises(RepositoryUnavailable, match=f"cannot reach the S3 endpoint {s3.endpoint}"):
            impatient.exists("models", "before")
        assert 1.5 <= time.monotonic() - started < 10
    finally:
        s3.restart()
    repo.close()
    impatient.close()


def mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a `size` tmpfs at `path`; the reason when this machine cannot (not root, no mount)."""
    if os.geteuid() != 0:
        return "mounting a size-limited tmpfs needs root"
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True, check=False)
    return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip()}"


def fill(path: Path) -> Path:
    """Write zeros into `path/filler` until the filesystem is full."""
    filler = path / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def test_combiner_disk_full_during_uploads_the_session_finishes_with_every_update(tmp_path: Path) -> None:
    dep = Deployment(tmp_path, env={"SCALEOUT_CLIENT_OFFLINE_AFTER": "4"})
    disk = dep.root / "combiner-edge-1"  # the combiner's --data-dir (Deployment.start_combiner)
    reason = mount_tmpfs(disk, "8m")
    if reason is not None:
        pytest.skip(reason)
    try:
        with dep.guarded():
            seed_id = start_cluster(dep)
            session_id = dep.start_session(rounds=ROUNDS, round_timeout=60, model_id=seed_id, validate=False,
                                           clients_required=2)
            wait_until(lambda: round_running(dep, session_id, 2), 90, 0.05, "round 2 to run")
            filler = fill(disk)  # before the clients finish training: their uploads hit ENOSPC
            freed = threading.Timer(8.0, filler.unlink)
            freed.start()
            try:
                assert_session_whole(dep, session_id, seed_id)
            finally:
                freed.cancel()
                filler.unlink(missing_ok=True)
            said = output_of(dep, "combiner-edge-1") + "".join(output_of(dep, f"client-{n}") for n in CLIENTS)
            assert "No space left" in said or "disk full" in said.lower(), "nobody said the disk was full"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
