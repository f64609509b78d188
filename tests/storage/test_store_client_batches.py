"""Batched client writes (`Collection.modify_many`, `ClientCollection.not_seen_since`), on SQLite and on a
real PostgreSQL 15: the combiners' event feed and the liveness sweep touch thousands of clients at once,
and must do so in a few statements, without losing a concurrent writer's change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from scaleout_server.store import records as r
from scaleout_server.store.base import Store
from tests.sql_statements import counted_statements
from tests.storage.concurrency import run_together

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _client(i: int, **fields: object) -> r.ClientRecord:
    return r.ClientRecord(client_id=f"c{i:04d}", name=f"client-{i}", committed_at=T0, **fields)  # type: ignore[arg-type]


class TestClientBatches:
    def test_modify_many_client_updates_inserts_and_skips_in_one_call(self, store: Store) -> None:
        store.clients.add(_client(1, telemetry={"cpu": 1.0}))
        store.clients.add(_client(2, telemetry={"cpu": 2.0}))
        calls: list[tuple[str, str | None]] = []

        def change(key: str, current: r.ClientRecord | None) -> r.ClientRecord | None:
            calls.append((key, current.name if current else None))
            if key == "c0002":
                return None  # left alone
            record = current or r.ClientRecord(client_id=key, name="new")
            record.telemetry = {**record.telemetry, "mem": 5.0}
            return record

        written = store.clients.modify_many(["c0003", "c0001", "c0002", "c0001"], change)
        assert calls == [("c0003", None), ("c0001", "client-1"), ("c0002", "client-2")]  # once per key, in order
        assert [c.client_id for c in written] == ["c0003", "c0001"]
        assert store.clients.require("c0001").telemetry == {"cpu": 1.0, "mem": 5.0}
        assert store.clients.require("c0003").name == "new"
        assert store.clients.require("c0002").telemetry == {"cpu": 2.0}
        assert store.clients.modify_many([], change) == []

    def test_modify_many_client_keeps_committed_at_and_sets_updated_at(self, store: Store) -> None:
        old = _client(1, updated_at=T0)
        store.clients.add(old)

        def rename(key: str, current: r.ClientRecord | None) -> r.ClientRecord:
            assert current is not None
            current.name = "renamed"
            current.committed_at = T0 + timedelta(days=1)  # ignored: the creation time stays
            return current

        [written] = store.clients.modify_many(["c0001"], rename)
        stored = store.clients.require("c0001")
        assert stored == written
        assert stored.name == "renamed" and stored.committed_at == T0
        assert (r.utcnow() - stored.updated_at).total_seconds() < 60

    def test_modify_many_of_a_thousand_clients_takes_a_few_statements(self, store: Store) -> None:
        store.add_many([_client(i, status="online") for i in range(0, 1000, 2)])  # half of them exist

        def touch(key: str, current: r.ClientRecord | None) -> r.ClientRecord:
            record = current or r.ClientRecord(client_id=key, name=key)
            record.telemetry = {"cpu": float(int(key[1:]))}
            return record

        with counted_statements(store) as statements:
            written = store.clients.modify_many([f"c{i:04d}" for i in range(1000)], touch)
        assert len(written) == 1000
        assert len(statements) <= 6, statements  # (BEGIN) + a SELECT per 500 ids + one executemany
        assert store.clients.count() == 1000
        assert store.clients.require("c0999").telemetry == {"cpu": 999.0}
        assert store.clients.require("c0998").status == "online"  # the rest of the record is kept

    def test_modify_many_client_refuses_changing_an_id_and_writes_nothing(self, store: Store) -> None:
        store.clients.add(_client(1))
        store.clients.add(_client(2))

        def swap(key: str, current: r.ClientRecord | None) -> r.ClientRecord:
            assert current is not None
            current.name = "changed"
            if key == "c0002":
                current.client_id = "elsewhere"
            return current

        with pytest.raises(ValueError, match="change a record, not its id"):
            store.clients.modify_many(["c0001", "c0002"], swap)
        assert {c.name for c in store.clients.list()[1]} == {"client-1", "client-2"}

    def test_modify_many_client_passes_the_callers_key_spelling(self, store: Store) -> None:
        seen: list[str] = []

        def create(key: str, current: r.ClientRecord | None) -> r.ClientRecord:
            seen.append(key)
            return r.ClientRecord(client_id=key, name="nul")

        store.clients.modify_many(["a\x00b"], create)
        assert seen == ["a\x00b"]
        assert store.clients.require("a\x00b").name == "nul"  # stored as U+FFFD, found either way

    def test_concurrent_client_batches_lose_no_update(self, store: Store) -> None:
        keys = [f"c{i:04d}" for i in range(20)]
        store.add_many([_client(i, attributes={"n": 0}) for i in range(20)])

        def increment(key: str, current: r.ClientRecord | None) -> r.ClientRecord:
            assert current is not None
            current.attributes = {"n": current.attributes["n"] + 1}
            return current

        def work(order: list[str]) -> None:
            for _ in range(5):
                store.clients.modify_many(order, increment)

        # opposite key orders: the store locks rows in key order, so neither deadlocks nor loses an increment
        run_together([partial(work, keys), partial(work, keys[::-1]), partial(work, keys), partial(work, keys[::-1])])
        assert {c.attributes["n"] for c in store.clients.list()[1]} == {20}

    def test_not_seen_since_selects_online_clients_not_seen_after_the_moment(self, store: Store) -> None:
        store.add_many([
            _client(1, status="online", last_seen=T0 - timedelta(seconds=30)),
            _client(2, status="online", last_seen=T0),  # exactly at the moment: stale
            _client(3, status="online", last_seen=T0 + timedelta(microseconds=1)),
            _client(4, status="online"),  # never seen
            _client(5, status="offline", last_seen=T0 - timedelta(seconds=30)),
        ])
        stale = store.clients.not_seen_since(T0)
        assert [c.client_id for c in stale] == ["c0001", "c0002", "c0004"]
        assert stale[0].last_seen == T0 - timedelta(seconds=30)
        later = datetime(2024, 5, 1, 14, 0, tzinfo=UTC).astimezone(UTC)
        assert len(store.clients.not_seen_since(later)) == 4
