"""The controller lease on a real PostgreSQL 15: one holder per epoch, take-over only after expiry, and the
write fence that keeps a controller that lost the lease from writing (store/lease.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from scaleout_server.controller.active import EXIT_LEASE_LOST, ControllerProcess
from scaleout_server.settings import ServerSettings
from scaleout_server.store import records as r
from scaleout_server.store.engine import make_engine
from scaleout_server.store.factory import make_store
from scaleout_server.store.lease import ControllerLease, LeaseLost
from scaleout_server.store.migration import upgrade
from scaleout_server.store.sql import SQLStore
from tests.conftest import free_port
from tests.storage.services import PostgresServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    url = postgres_server.create_database(f"lease_{uuid.uuid4().hex[:10]}")
    upgrade(url)
    return url


@pytest.fixture
def leases(postgres_url: str) -> Iterator[list[ControllerLease]]:
    made: list[ControllerLease] = []
    yield made
    for lease in made:
        lease.close()


def lease(url: str, made: list[ControllerLease], holder: str, ttl: float = 1.0) -> ControllerLease:
    made.append(ControllerLease(url, address=f"http://{holder}:8092", holder=holder, ttl=ttl))
    return made[-1]


def fenced_store(url: str, holder: ControllerLease) -> SQLStore:
    store = make_store(url)
    assert isinstance(store, SQLStore)
    store.set_write_fence(holder.fence)
    return store


def session(name: str) -> r.SessionRecord:
    return r.SessionRecord(session_id=r.new_id(), name=name, status="Created", session_config={})


def test_a_held_lease_is_refused_to_another_controller_until_it_expires(postgres_url: str,
                                                                         leases: list[ControllerLease]) -> None:
    a = lease(postgres_url, leases, "ctl-a", ttl=1.5)
    b = lease(postgres_url, leases, "ctl-b", ttl=1.5)
    assert a.try_acquire() and a.epoch == 1
    assert not b.try_acquire()
    assert a.renew()
    current = b.current()
    assert current is not None and (current.holder, current.epoch, current.expired) == ("ctl-a", 1, False)
    time.sleep(1.7)  # a stops renewing: it is dead
    assert b.try_acquire() and b.epoch == 2
    assert not a.renew(), "the old holder must learn that it lost the lease"
    assert not a.try_acquire()


def test_two_standbys_racing_for_a_free_lease_get_one_epoch_each(postgres_url: str,
                                                                 leases: list[ControllerLease]) -> None:
    racers = [lease(postgres_url, leases, f"ctl-{i}") for i in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(len(racers))

    def race(x: ControllerLease) -> None:
        barrier.wait()
        results.append(x.try_acquire())

    threads = [threading.Thread(target=race, args=(x,)) for x in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(results) == [False, False, False, True]


def test_a_controller_that_lost_the_lease_cannot_write_and_the_new_one_can(postgres_url: str,
                                                                          leases: list[ControllerLease]) -> None:
    a = lease(postgres_url, leases, "ctl-a", ttl=0.5)
    assert a.try_acquire()
    old = fenced_store(postgres_url, a)
    try:
        kept = old.sessions.add(session("written while active"))
        time.sleep(0.7)
        b = lease(postgres_url, leases, "ctl-b")
        assert b.try_acquire()
        new = fenced_store(postgres_url, b)
        try:
            with pytest.raises(LeaseLost, match=r"this controller \(ctl-a, epoch 1\) lost the controller lease "
                                                 r"to epoch 2"):
                old.sessions.add(session("written after the take-over"))
            kept.status = "Failed"
            with pytest.raises(LeaseLost):
                old.sessions.update(kept)
            new.sessions.add(session("written by the new controller"))
            names = sorted(s.name for s in new.sessions.list()[1])
            assert names == ["written by the new controller", "written while active"]
            assert new.sessions.require(kept.session_id).status == "Created"
        finally:
            new.close()
    finally:
        old.close()


def test_a_take_over_waits_for_the_old_controllers_write_in_flight(postgres_url: str,
                                                                   leases: list[ControllerLease]) -> None:
    """The fence holds the lease row FOR SHARE until the write commits: the take-over cannot slip between
    the old controller's check and its commit."""
    a = lease(postgres_url, leases, "ctl-a", ttl=0.3)
    assert a.try_acquire()
    old = fenced_store(postgres_url, a)
    b = lease(postgres_url, leases, "ctl-b")
    in_write = threading.Event()
    took_over_at: list[float] = []
    try:
        def slow(key: str, current: r.SessionRecord | None) -> r.SessionRecord | None:
            in_write.set()
            time.sleep(1.5)  # the lease expires meanwhile; b tries to take it
            assert current is not None
            current.status = "Running"
            return current

        record = old.sessions.add(session("s"))

        def take_over() -> None:
            in_write.wait(10)
            time.sleep(0.5)
            while not b.try_acquire():
                time.sleep(0.05)
            took_over_at.append(time.monotonic())

        thread = threading.Thread(target=take_over)
        thread.start()
        old.sessions.modify_many([record.session_id], slow)
        committed_at = time.monotonic()
        thread.join(10)
        assert took_over_at and took_over_at[0] >= committed_at - 0.05
        assert old.sessions.require(record.session_id).status == "Running"  # the old write was whole
        with pytest.raises(LeaseLost):
            old.sessions.add(session("too late"))
    finally:
        old.close()


def test_a_released_lease_is_taken_at_once(postgres_url: str, leases: list[ControllerLease]) -> None:
    a = lease(postgres_url, leases, "ctl-a", ttl=30)
    b = lease(postgres_url, leases, "ctl-b", ttl=30)
    assert a.try_acquire()
    assert not b.try_acquire()
    a.release()
    assert b.try_acquire() and b.epoch == 2


def test_the_lease_is_refused_on_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="the controller lease needs a PostgreSQL statestore"):
        ControllerLease(f"sqlite:///{tmp_path}/store.db", address="http://127.0.0.1:8092")


def test_an_active_controller_that_finds_its_lease_taken_exits_with_75(postgres_url: str, tmp_path: Path,
                                                                       leases: list[ControllerLease]) -> None:
    exits: list[int] = []
    exited = threading.Event()

    def record_exit(code: int) -> None:
        exits.append(code)
        exited.set()

    settings = ServerSettings(data_dir=tmp_path, store_url=postgres_url, api_port=free_port())
    process = ControllerProcess(settings, secure=False, standby=False, exit_process=record_exit)
    try:
        process.prepare()
        assert process.gate.app is not None and process.lease is not None and process.lease.epoch == 1
        assert process.controller is not None
        process.controller.store.set_setting("written", "while active")
        # a standby takes over, as it would after this controller missed its renewals (e.g. a long pause)
        rival = lease(postgres_url, leases, "rival")
        engine = make_engine(postgres_url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE controller_lease SET expires_at = now()"))
        finally:
            engine.dispose()
        assert rival.try_acquire() and rival.epoch == 2
        assert exited.wait(10), "the controller did not notice that it lost the lease"
        assert exits == [EXIT_LEASE_LOST]
        with pytest.raises(LeaseLost):
            process.controller.store.set_setting("written", "after the take-over")
    finally:
        process.close()
