"""Behaviour every statestore backend must show: each test runs on SQLite and on a real PostgreSQL 15
(the `store` fixture in conftest.py), including the spots where the two databases differ by nature
(string collation, NULL ordering, NUL characters, NaN, index size limits, concurrent writers)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from scaleout_server.store import records as r
from scaleout_server.store.base import (
    MAX_KEY_CHARS,
    AlreadyExists,
    InvalidQuery,
    InvalidRecord,
    ListQuery,
    NotFound,
    Store,
    StoreError,
)
from scaleout_server.store.factory import make_store
from tests.storage.concurrency import run_together

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _at(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


def _sender(i: int) -> r.Sender:
    return r.Sender(client_id=f"c{i}", name=f"client-{i}", role="client")


# One factory per collection: record number i, all with distinct ids and committed_at = T0 + i s.
FACTORIES: dict[str, Callable[[int], Any]] = {
    "clients": lambda i: r.ClientRecord(client_id=f"c{i}", name=f"client-{i}", attributes={"gpu": i % 2 == 0},
                                        committed_at=_at(i)),
    "combiners": lambda i: r.CombinerRecord(combiner_id=f"cb{i}", name=f"combiner-{i}", host="127.0.0.1",
                                            port=12080 + i, committed_at=_at(i)),
    "models": lambda i: r.ModelRecord(model_id=f"m{i}", session_id="s1", size=i, committed_at=_at(i)),
    "packages": lambda i: r.PackageRecord(package_id=f"p{i}", name=f"pkg{i}", file_name=f"pkg{i}.tgz",
                                          storage_file_name=f"u{i}.tgz", checksum="abc", committed_at=_at(i)),
    "sessions": lambda i: r.SessionRecord(session_id=f"s{i}", name=f"session-{i}", status="Created",
                                          session_config={"rounds": i, "nested": {"a": [1, 2]}}, committed_at=_at(i)),
    "rounds": lambda i: r.RoundRecord(round_id=f"r{i}", session_id="s1", round_number=i, status="Pending",
                                      round_config={"session_id": "s1"}, combiners=[{"name": "cb"}],
                                      committed_at=_at(i)),
    "updates": lambda i: r.UpdateRecord(update_id=f"u{i}", round_id="r1", session_id="s1", client_id=f"c{i}",
                                        num_examples=float(i), meta={"loss": 0.5}, committed_at=_at(i)),
    "validations": lambda i: r.ValidationRecord(validation_id=f"v{i}", model_id="m1", data={"acc": 0.9},
                                                sender=_sender(i), committed_at=_at(i)),
    "metrics": lambda i: r.MetricRecord(metric_id=f"me{i}", key="loss", value=i / 10, sender=_sender(i), step=i,
                                        committed_at=_at(i)),
    "statuses": lambda i: r.StatusRecord(status_id=f"st{i}", status=f"message {i}", sender=_sender(i),
                                         committed_at=_at(i)),
    "predictions": lambda i: r.PredictionRecord(prediction_record_id=f"pr{i}", prediction_id="run1", model_id="m1",
                                                sender=_sender(i), data=[1, 2, i], committed_at=_at(i)),
    "commands": lambda i: r.CommandRecord(command_id=f"cmd{i}", command_type="reboot", client_ids=["c1"],
                                          committed_at=_at(i)),
    "telemetry": lambda i: r.TelemetryRecord(telemetry_id=f"t{i}", client_id="c1", key="cpu", value=i * 1.5,
                                             timestamp=_at(i)),
    "attributes": lambda i: r.AttributeRecord(attribute_id=f"a{i}", client_id="c1", key="zone", value=f"z{i}",
                                              timestamp=_at(i)),
    "uploads": lambda i: r.UploadRecord(upload_id=f"up{i}", file_name="big.bin", file_size=10 * i, chunk_size=4,
                                        committed_at=_at(i)),
}


# A plain string field per collection that `update`/`upsert` tests change.
CHANGEABLE = {"clients": "name", "combiners": "name", "models": "name", "packages": "name", "sessions": "status",
              "rounds": "status", "updates": "client_id", "validations": "model_id", "metrics": "key",
              "statuses": "status", "predictions": "model_id", "commands": "status", "telemetry": "key",
              "attributes": "key", "uploads": "status"}


class TestStoreContract:
    # -- CRUD on every collection ------------------------------------------------------------

    @pytest.mark.parametrize("attr", sorted(FACTORIES))
    def test_every_collection_supports_add_get_update_upsert_delete(self, store: Store, attr: str) -> None:
        coll = getattr(store, attr)
        record = FACTORIES[attr](1)
        key = getattr(record, coll.id_field)
        assert coll.get(key) is None
        coll.add(record)
        assert coll.get(key) == record
        assert coll.require(key) == record

        changed = CHANGEABLE[attr]
        setattr(record, changed, "changed")
        stored = coll.update(record)
        assert getattr(stored, changed) == "changed"
        assert getattr(coll.get(key), changed) == "changed"

        other = FACTORIES[attr](2)
        coll.upsert(other)
        assert coll.count() == 2
        setattr(other, changed, "changed")
        coll.upsert(other)
        assert coll.count() == 2
        assert getattr(coll.get(getattr(other, coll.id_field)), changed) == "changed"

        assert coll.delete(key) is True
        assert coll.delete(key) is False
        assert coll.get(key) is None
        with pytest.raises(NotFound, match=key):
            coll.require(key)

    @pytest.mark.parametrize("attr", sorted(FACTORIES))
    def test_add_with_taken_id_raises_already_exists(self, store: Store, attr: str) -> None:
        coll = getattr(store, attr)
        coll.add(FACTORIES[attr](1))
        with pytest.raises(AlreadyExists):
            coll.add(FACTORIES[attr](1))

    def test_update_of_missing_record_raises_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound) as info:
            store.sessions.update(FACTORIES["sessions"](1))
        assert info.value.kind == "session" and info.value.key == "s1"

    def test_update_sets_updated_at_and_keeps_committed_at(self, store: Store) -> None:
        session = FACTORIES["sessions"](1)
        session.updated_at = T0
        store.sessions.add(session)
        session.status = "Started"
        session.committed_at = T0 + timedelta(days=3)
        stored = store.sessions.update(session)
        assert stored.committed_at == _at(1)
        assert stored.updated_at > T0 + timedelta(days=1)
        assert store.sessions.require("s1").status == "Started"

    def test_json_fields_round_trip_nested_structures(self, store: Store) -> None:
        rnd = FACTORIES["rounds"](1)
        rnd.round_data = {"reduce": {"time": 1.5}, "list": [1, "a", None, {"x": True}]}
        store.rounds.add(rnd)
        assert store.rounds.require("r1").round_data == rnd.round_data
        status = FACTORIES["statuses"](1)
        store.statuses.add(status)
        assert store.statuses.require("st1").data is None

    def test_settings_are_stored_and_overwritten(self, store: Store) -> None:
        assert store.get_setting("network_id") is None
        store.set_setting("network_id", "a")
        store.set_setting("network_id", "b")
        assert store.get_setting("network_id") == "b"

    # -- list / count --------------------------------------------------------------------------

    def _fill(self, store: Store, attr: str, n: int) -> None:
        store.add_many([FACTORIES[attr](i) for i in range(1, n + 1)])

    def test_list_filters_on_sender_name(self, store: Store) -> None:
        self._fill(store, "metrics", 5)
        total, page = store.metrics.list(ListQuery(filters={"sender.name": "client-3"}))
        assert total == 1 and page[0].metric_id == "me3"
        assert page[0].sender == _sender(3)
        assert store.metrics.count({"sender.client_id": "c4", "key": "loss"}) == 1
        assert store.metrics.count({"sender.role": "combiner"}) == 0

    def test_list_coerces_string_filter_values_to_column_types(self, store: Store) -> None:
        self._fill(store, "rounds", 4)
        total, page = store.rounds.list(ListQuery(filters={"round_number": "3"}))
        assert (total, [x.round_id for x in page]) == (1, ["r3"])
        self._fill(store, "metrics", 3)
        assert store.metrics.count({"value": "0.2"}) == 1
        assert store.metrics.count({"step": 2.0}) == 1
        self._fill(store, "packages", 2)
        store.packages.set_active("p2")
        assert [p.package_id for p in store.packages.list(ListQuery(filters={"active": "true"}))[1]] == ["p2"]
        assert store.packages.count({"active": "false"}) == 1

    def test_list_null_filter_matches_missing_values(self, store: Store) -> None:
        self._fill(store, "models", 3)
        store.models.add(r.ModelRecord(model_id="seed", session_id=None))
        assert [m.model_id for m in store.models.list(ListQuery(filters={"session_id": "null"}))[1]] == ["seed"]
        assert store.models.count({"session_id": None}) == 1
        assert store.models.count({"parent_model": None}) == 4

    def test_list_accepts_round_config_session_id_alias_for_rounds(self, store: Store) -> None:
        self._fill(store, "rounds", 2)
        store.rounds.add(r.RoundRecord(round_id="other", session_id="s2", round_number=1, status="Pending"))
        assert store.rounds.count({"round_config.session_id": "s1"}) == 2

    def test_list_with_several_values_matches_any_of_them(self, store: Store) -> None:
        self._fill(store, "clients", 4)
        assert store.clients.count({"client_id": ["c1", "c3", "nope"]}) == 2

    def test_list_sorts_by_key_ascending_and_descending(self, store: Store) -> None:
        self._fill(store, "metrics", 4)
        _, default = store.metrics.list()
        assert [m.metric_id for m in default] == ["me4", "me3", "me2", "me1"]  # committed_at, newest first
        _, asc = store.metrics.list(ListQuery(sort_key="value", descending=False))
        assert [m.metric_id for m in asc] == ["me1", "me2", "me3", "me4"]
        _, by_name = store.metrics.list(ListQuery(sort_key="sender.name", descending=True))
        assert [m.metric_id for m in by_name] == ["me4", "me3", "me2", "me1"]

    def test_list_sort_ties_fall_back_to_committed_at(self, store: Store) -> None:
        self._fill(store, "rounds", 3)  # all status "Pending"
        _, page = store.rounds.list(ListQuery(sort_key="status", descending=False))
        assert [x.round_id for x in page] == ["r1", "r2", "r3"]

    def test_list_limit_and_skip_page_with_total_count(self, store: Store) -> None:
        self._fill(store, "statuses", 7)
        total, page = store.statuses.list(ListQuery(limit=3, skip=2, descending=False))
        assert total == 7
        assert [s.status_id for s in page] == ["st3", "st4", "st5"]
        total, page = store.statuses.list(ListQuery(limit=0, skip=5, descending=False))
        assert total == 7 and [s.status_id for s in page] == ["st6", "st7"]
        total, page = store.statuses.list(ListQuery(filters={"sender.client_id": "c2"}, limit=1))
        assert total == 1 and len(page) == 1

    def test_unknown_filter_field_is_refused_with_valid_fields(self, store: Store) -> None:
        with pytest.raises(InvalidQuery) as info:
            store.metrics.list(ListQuery(filters={"colour": "red"}))
        message = str(info.value)
        assert "'colour'" in message and "sender.name" in message and "round_id" in message

    def test_uncoercible_filter_value_is_refused(self, store: Store) -> None:
        with pytest.raises(InvalidQuery, match="'round_number'.*integer"):
            store.rounds.count({"round_number": "three"})
        with pytest.raises(InvalidQuery, match="true or false"):
            store.packages.count({"active": "maybe"})

    def test_json_fields_are_not_filterable(self, store: Store) -> None:
        assert "session_config" not in store.sessions.fields()
        with pytest.raises(InvalidQuery):
            store.sessions.count({"session_config": "x"})

    def test_unknown_sort_key_is_refused_with_valid_keys(self, store: Store) -> None:
        with pytest.raises(InvalidQuery, match="unknown sort key 'colour'.*committed_at"):
            store.clients.list(ListQuery(sort_key="colour"))

    def test_negative_limit_is_refused(self, store: Store) -> None:
        with pytest.raises(InvalidQuery):
            store.clients.list(ListQuery(limit=-1))

    def test_fields_name_sender_parts_with_dots(self, store: Store) -> None:
        fields = store.validations.fields()
        assert {"sender.client_id", "sender.name", "sender.role", "model_id", "committed_at"} <= set(fields)
        assert "sender" not in fields and "data" not in fields

    # -- models and packages -----------------------------------------------------------------

    def _trail(self, store: Store, n: int) -> None:
        for i in range(n):
            store.models.add(r.ModelRecord(model_id=f"m{i}", parent_model=f"m{i - 1}" if i else None,
                                           session_id="s1" if i else None, committed_at=_at(i)))

    def test_ancestors_follow_parent_links(self, store: Store) -> None:
        self._trail(store, 5)
        assert [m.model_id for m in store.models.ancestors("m4")] == ["m4", "m3", "m2", "m1", "m0"]
        assert [m.model_id for m in store.models.ancestors("m4", include_self=False)] == ["m3", "m2", "m1", "m0"]
        assert [m.model_id for m in store.models.ancestors("m4", limit=2)] == ["m4", "m3"]
        assert [m.model_id for m in store.models.ancestors("m4", limit=2, reverse=True)] == ["m3", "m4"]
        assert [m.model_id for m in store.models.ancestors("m2", reverse=True)] == ["m0", "m1", "m2"]
        with pytest.raises(NotFound):
            store.models.ancestors("nope")

    def test_ancestors_stop_at_missing_parent_and_cycles(self, store: Store) -> None:
        store.models.add(r.ModelRecord(model_id="b", parent_model="gone"))
        assert [m.model_id for m in store.models.ancestors("b")] == ["b"]
        store.models.add(r.ModelRecord(model_id="x", parent_model="y"))
        store.models.add(r.ModelRecord(model_id="y", parent_model="x"))
        assert [m.model_id for m in store.models.ancestors("x")] == ["x", "y"]
        assert [m.model_id for m in store.models.ancestors("x", include_self=False)] == ["y"]

    def test_latest_model_is_the_newest_committed(self, store: Store) -> None:
        assert store.models.latest() is None
        self._trail(store, 4)
        store.models.add(r.ModelRecord(model_id="other", session_id="s2", committed_at=_at(-10)))
        assert store.models.latest().model_id == "m3"
        assert store.models.latest("s2").model_id == "other"
        assert store.models.latest("none") is None

    def test_exactly_one_package_is_active(self, store: Store) -> None:
        self._fill(store, "packages", 3)
        assert store.packages.get_active() is None
        assert store.packages.set_active("p1").active is True
        assert store.packages.set_active("p3").active is True
        assert store.packages.get_active().package_id == "p3"
        assert store.packages.count({"active": True}) == 1
        # storing another active package deactivates the previous one
        store.packages.add(r.PackageRecord(package_id="p4", name="n", file_name="f", storage_file_name="s",
                                           checksum="c", active=True))
        assert [p.package_id for p in store.packages.list(ListQuery(filters={"active": True}))[1]] == ["p4"]
        with pytest.raises(NotFound):
            store.packages.set_active("nope")
        assert store.packages.get_active().package_id == "p4"

    def test_package_found_by_file_name(self, store: Store) -> None:
        self._fill(store, "packages", 2)
        assert store.packages.get_by_file_name("pkg2.tgz").package_id == "p2"
        assert store.packages.get_by_file_name("nope.tgz") is None

    # -- multi-record transactions -------------------------------------------------------------

    def _round_parts(self) -> tuple[r.RoundRecord, r.ModelRecord, list[r.UpdateRecord], r.SessionRecord]:
        rnd = r.RoundRecord(round_id="r1", session_id="s1", round_number=1, status="Success", new_model_id="m1")
        model = r.ModelRecord(model_id="m1", parent_model="m0", session_id="s1", round_id="r1")
        updates = [r.UpdateRecord(update_id=f"u{i}", round_id="r1", session_id="s1", client_id=f"c{i}")
                   for i in range(3)]
        session = r.SessionRecord(session_id="s1", name="s", status="Started", session_config={})
        return rnd, model, updates, session

    def test_commit_round_stores_round_model_updates_and_session(self, store: Store) -> None:
        rnd, model, updates, session = self._round_parts()
        store.sessions.add(session)
        store.rounds.add(r.RoundRecord(round_id="r1", session_id="s1", round_number=1, status="Pending"))
        store.updates.add(updates[0])  # already reported: skipped, not an error
        session.status = "Finished"
        store.commit_round(rnd, model, updates, session)
        assert store.rounds.require("r1").status == "Success"
        assert store.models.require("m1").round_id == "r1"
        assert store.updates.count({"round_id": "r1"}) == 3
        assert store.sessions.require("s1").status == "Finished"

    def test_commit_round_writes_nothing_when_an_update_is_duplicated(self, store: Store) -> None:
        rnd, model, updates, session = self._round_parts()
        store.sessions.add(session)
        session.status = "Finished"
        with pytest.raises(StoreError):
            store.commit_round(rnd, model, [*updates, updates[1]], session)
        assert store.rounds.get("r1") is None
        assert store.models.get("m1") is None
        assert store.updates.count() == 0
        assert store.sessions.require("s1").status == "Started"

    def test_commit_round_writes_nothing_when_a_record_is_broken(self, store: Store) -> None:
        rnd, model, updates, _ = self._round_parts()
        updates[2].client_id = None  # type: ignore[assignment]  # required column
        with pytest.raises(StoreError):
            store.commit_round(rnd, model, updates)
        assert store.rounds.get("r1") is None and store.models.get("m1") is None and store.updates.count() == 0

    def test_commit_round_refuses_a_taken_model_id(self, store: Store) -> None:
        rnd, model, updates, _ = self._round_parts()
        store.models.add(r.ModelRecord(model_id="m1"))
        with pytest.raises(AlreadyExists):
            store.commit_round(rnd, model, updates)
        assert store.rounds.get("r1") is None and store.updates.count() == 0

    def test_add_many_is_idempotent_across_kinds(self, store: Store) -> None:
        batch = [FACTORIES["statuses"](1), FACTORIES["metrics"](1), FACTORIES["validations"](1),
                 FACTORIES["statuses"](2), FACTORIES["statuses"](2)]
        store.add_many(batch)
        store.add_many(batch)
        store.add_many([])
        assert (store.statuses.count(), store.metrics.count(), store.validations.count()) == (2, 1, 1)
        with pytest.raises(TypeError, match="not a store record"):
            store.add_many([object()])

    def test_concurrent_writes_from_eight_threads_all_land(self, store: Store) -> None:
        def work(t: int) -> None:
            for i in range(15):
                store.statuses.add(r.StatusRecord(status_id=f"{t}-{i}", status="x", sender=_sender(t)))
                store.clients.upsert(r.ClientRecord(client_id=f"c{i}", name=f"t{t}"))
                store.add_many([r.MetricRecord(metric_id=f"m{t}-{i}", key="k", value=1.0, sender=_sender(t))])
                store.statuses.list(ListQuery(filters={"sender.client_id": f"c{t}"}, limit=5))
                store.set_setting("last", str(t))

        run_together([partial(work, t) for t in range(8)])
        assert store.statuses.count() == 8 * 15
        assert store.metrics.count() == 8 * 15
        assert store.clients.count() == 15

    def test_datetimes_come_back_timezone_aware_in_utc(self, store: Store) -> None:
        cest = timezone(timedelta(hours=2))
        local = datetime(2024, 6, 1, 14, 0, tzinfo=cest)
        store.sessions.add(r.SessionRecord(session_id="s1", name="n", status="Started", session_config={},
                                           started_at=local, committed_at=local))
        stored = store.sessions.require("s1")
        assert stored.started_at == local
        assert stored.started_at.tzinfo is not None and stored.started_at.utcoffset() == timedelta(0)
        assert all(x.tzinfo is not None for x in (stored.committed_at, stored.updated_at))
        assert store.sessions.count({"committed_at": "2024-06-01T12:00:00+00:00"}) == 1

    # -- where SQLite and PostgreSQL differ by nature, the store behaves one way -------------------

    def test_strings_sort_by_code_point_not_by_language(self, store: Store) -> None:
        for i, name in enumerate(["b", "B", "a", "A", "_z", "Z", "é"]):
            store.clients.add(r.ClientRecord(client_id=f"c{i}", name=name, committed_at=_at(i)))
        _, page = store.clients.list(ListQuery(sort_key="name", descending=False))
        assert [c.name for c in page] == ["A", "B", "Z", "_z", "a", "b", "é"]
        _, page = store.clients.list(ListQuery(sort_key="name", descending=True))
        assert [c.name for c in page] == ["é", "b", "a", "_z", "Z", "B", "A"]

    def test_id_tiebreak_sorts_by_code_point(self, store: Store) -> None:
        for key in ["b", "B", "a", "A"]:
            store.models.add(r.ModelRecord(model_id=key, committed_at=T0))
        assert [m.model_id for m in store.models.list(ListQuery(descending=False))[1]] == ["A", "B", "a", "b"]
        assert store.models.latest().model_id == "b"

    def test_missing_values_sort_first_ascending_and_last_descending(self, store: Store) -> None:
        store.models.add(r.ModelRecord(model_id="m1", session_id="s2", committed_at=_at(1)))
        store.models.add(r.ModelRecord(model_id="m2", session_id=None, committed_at=_at(2)))
        store.models.add(r.ModelRecord(model_id="m3", session_id="s1", committed_at=_at(3)))
        asc = store.models.list(ListQuery(sort_key="session_id", descending=False))[1]
        desc = store.models.list(ListQuery(sort_key="session_id", descending=True))[1]
        assert [m.model_id for m in asc] == ["m2", "m3", "m1"]
        assert [m.model_id for m in desc] == ["m1", "m3", "m2"]

    def test_json_objects_keep_their_key_order(self, store: Store) -> None:
        config = {"zeta": 1, "alpha": {"y": 2, "b": 3}, "mid": [{"k2": 1, "k1": 2}], "a": None}
        store.sessions.add(r.SessionRecord(session_id="s1", name="n", status="Created", session_config=config))
        stored = store.sessions.require("s1").session_config
        assert list(stored) == ["zeta", "alpha", "mid", "a"]
        assert list(stored["alpha"]) == ["y", "b"] and list(stored["mid"][0]) == ["k2", "k1"]

    def test_nul_characters_are_stored_as_replacement_characters(self, store: Store) -> None:
        store.statuses.add(r.StatusRecord(status_id="st\x001", status="bad\x00byte", sender=_sender(1),
                                          data={"k\x00": "v\x00", "n": [1, "x\x00"]}))
        stored = store.statuses.require("st\x001")
        assert stored.status_id == "st\ufffd1" and stored.status == "bad\ufffdbyte"
        assert stored.data == {"k\ufffd": "v\ufffd", "n": [1, "x\ufffd"]}
        assert store.statuses.count({"status_id": "st\x001"}) == 1
        store.set_setting("k\x00", "v\x00")
        assert store.get_setting("k\x00") == "v\ufffd"

    def test_non_finite_numbers_inside_json_become_null(self, store: Store) -> None:
        rnd = FACTORIES["rounds"](1)
        rnd.round_data = {"loss": float("nan"), "grad": [float("inf"), 1.5, -float("inf")], "ok": 2.0}
        store.rounds.add(rnd)
        assert store.rounds.require("r1").round_data == {"loss": None, "grad": [None, 1.5, None], "ok": 2.0}

    @pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
    def test_non_finite_number_in_a_number_field_is_refused(self, store: Store, value: float) -> None:
        with pytest.raises(InvalidRecord, match="metric field value must be a finite number"):
            store.metrics.add(r.MetricRecord(metric_id="me1", key="loss", value=value, sender=_sender(1)))
        with pytest.raises(InvalidRecord):
            store.add_many([FACTORIES["statuses"](1), r.MetricRecord(metric_id="me1", key="l", value=value,
                                                                     sender=_sender(1))])
        assert store.metrics.count() == 0 and store.statuses.count() == 0  # the whole batch was refused

    def test_integer_beyond_64_bits_is_refused(self, store: Store) -> None:
        store.models.add(r.ModelRecord(model_id="big", size=2**63 - 1))
        assert store.models.require("big").size == 2**63 - 1
        with pytest.raises(InvalidRecord, match="64-bit"):
            store.models.add(r.ModelRecord(model_id="huge", size=2**63))

    def test_key_fields_are_limited_to_max_key_chars(self, store: Store) -> None:
        store.clients.add(r.ClientRecord(client_id="c1", name="n" * MAX_KEY_CHARS))
        assert store.clients.require("c1").name == "n" * MAX_KEY_CHARS
        with pytest.raises(InvalidRecord, match=f"client field name is {MAX_KEY_CHARS + 1} characters long"):
            store.clients.add(r.ClientRecord(client_id="c2", name="n" * (MAX_KEY_CHARS + 1)))
        with pytest.raises(InvalidRecord, match="client_id"):
            store.clients.upsert(r.ClientRecord(client_id="c" * 1000, name="n"))
        with pytest.raises(InvalidRecord, match="sender_name"):
            store.metrics.add(r.MetricRecord(metric_id="m", key="k", value=1.0, sender=r.Sender(name="x" * 600)))

    def test_free_text_fields_have_no_length_limit(self, store: Store) -> None:
        message = os.urandom(60_000).hex()  # incompressible, far beyond what PostgreSQL can index
        store.statuses.add(r.StatusRecord(status_id="st1", status=message, sender=_sender(1)))
        store.sessions.add(r.SessionRecord(session_id="s1", name="n", status="Failed", session_config={},
                                           error=message))
        assert store.statuses.require("st1").status == message
        assert store.sessions.require("s1").error == message
        assert store.statuses.count({"status": message}) == 1

    def test_invalid_record_is_a_400_input_error(self) -> None:
        from scaleout_server.errors import InvalidInput

        assert issubclass(InvalidRecord, InvalidInput) and issubclass(InvalidRecord, StoreError)

    def test_concurrent_package_activations_leave_exactly_one_active(self, store: Store) -> None:
        self._fill(store, "packages", 8)
        def work(t: int) -> None:
            for _ in range(5):
                store.packages.set_active(f"p{t + 1}")
                store.packages.upsert(r.PackageRecord(package_id=f"new{t}", name="n", file_name="f",
                                                      storage_file_name="s", checksum="c", active=True))

        run_together([partial(work, t) for t in range(8)])
        assert store.packages.count({"active": True}) == 1

    def test_event_feed_and_round_commit_storing_the_same_updates_concurrently(self, store: Store) -> None:
        """The combiner's event batches and the session runner's round commit both insert a round's
        updates; whichever commits second must skip them, not fail (PostgreSQL runs both at once)."""
        store.sessions.add(r.SessionRecord(session_id="s1", name="s", status="Started", session_config={}))

        def updates(n: int) -> list[r.UpdateRecord]:
            return [r.UpdateRecord(update_id=f"r{n}-u{i}", round_id=f"r{n}", session_id="s1", client_id=f"c{i}")
                    for i in range(20)]

        def feed() -> None:
            for n in range(1, 16):
                batch = updates(n)
                store.add_many(batch[::2])
                store.add_many(batch)

        def runner() -> None:
            for n in range(1, 16):
                rnd = r.RoundRecord(round_id=f"r{n}", session_id="s1", round_number=n, status="Success")
                store.commit_round(rnd, r.ModelRecord(model_id=f"m{n}", session_id="s1"), updates(n))

        run_together([feed, runner])
        assert store.updates.count() == 15 * 20 and store.rounds.count() == 15 and store.models.count() == 15


def test_sqlite_store_creates_its_folder_and_persists_across_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a/b/store.db"
    first = make_store(url)
    first.clients.add(r.ClientRecord(client_id="c1", name="one"))
    first.close()
    assert (tmp_path / "a" / "b" / "store.db").is_file()
    second = make_store(url)
    try:
        assert second.clients.require("c1").name == "one"
    finally:
        second.close()


def test_in_memory_sqlite_store_is_shared_between_threads() -> None:
    store = make_store("sqlite://")
    try:
        t = threading.Thread(target=lambda: store.clients.add(r.ClientRecord(client_id="c1", name="n")))
        t.start()
        t.join()
        assert store.clients.count() == 1
    finally:
        store.close()


def test_make_store_refuses_unknown_schemes() -> None:
    with pytest.raises(ValueError, match="supported: sqlite, postgresql"):
        make_store("mongodb://localhost/db")
