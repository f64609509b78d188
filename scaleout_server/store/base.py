"""The statestore interface: what the controller needs to remember, whatever backs it.

One `Store` holds one `Collection` per record type. Collections share the list
conventions of the REST API (equality filters, limit/skip, sort key and order), so the
wire layer can pass query parameters through after validating them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from scaleout_server.errors import InvalidInput, Unavailable
from scaleout_server.store import records as r

R = TypeVar("R")

MAX_KEY_CHARS = 512
"""Longest value of an id or other indexed text field (PostgreSQL cannot index much longer values,
so every backend refuses them alike)."""


class StoreError(Exception):
    """Base class for store failures the wire layer maps to HTTP statuses."""


class NotFound(StoreError):
    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} with id {key!r} not found")
        self.kind = kind
        self.key = key


class AlreadyExists(StoreError):
    pass


class InvalidQuery(StoreError):
    """An unknown filter or sort field; the message names the valid ones."""


class InvalidRecord(StoreError, InvalidInput):
    """A record value no backend can keep the same way (e.g. NaN in a number column, an indexed text
    longer than `MAX_KEY_CHARS`); refused on every backend so SQLite and PostgreSQL behave alike."""


class StoreUnavailable(StoreError, Unavailable):
    """The database cannot be reached (wrong URL, server down, bad credentials); the message says which."""


class LeaseLost(StoreError):
    """This controller does not hold the controller lease (any more): it may not write (store/lease.py)."""


class SchemaMismatch(StoreError):
    """The database schema is not the one this version uses: run `scaleout server migrate`, or upgrade
    the software when the database is newer."""


@dataclass(frozen=True)
class ListQuery:
    """Filters are `field=value` equality tests. Dotted names reach into `sender`
    (`sender.name`, `sender.client_id`); the value `None` matches a missing field."""

    filters: Mapping[str, Any] | None = None
    limit: int = 0  # 0: no limit
    skip: int = 0
    sort_key: str | None = None  # default: committed_at
    descending: bool = True


class Collection(ABC, Generic[R]):
    """CRUD over one record type, keyed by the record's id field."""

    kind: str  # "client", "model", ... used in messages
    id_field: str  # e.g. "client_id"

    @abstractmethod
    def get(self, key: str) -> R | None: ...

    def require(self, key: str) -> R:
        """`get`, raising NotFound instead of returning None."""
        found = self.get(key)
        if found is None:
            raise NotFound(self.kind, key)
        return found

    @abstractmethod
    def add(self, record: R) -> R:
        """Insert; AlreadyExists when the id is taken."""

    @abstractmethod
    def update(self, record: R) -> R:
        """Replace the stored record with the same id (sets `updated_at` where present); NotFound if absent."""

    @abstractmethod
    def upsert(self, record: R) -> R: ...

    @abstractmethod
    def modify_many(self, keys: Iterable[str], change: Callable[[str, R | None], R | None]) -> list[R]:
        """Read-modify-write of many records in one transaction and a few statements, whatever their
        number (the combiners' event feed touches thousands of clients per batch).

        `change(key, stored_or_None)` is called once per distinct key, in the given order, and returns
        the record to store (a new one for a missing key inserts it) or None to leave it alone. Stored
        records are locked against concurrent writers until the transaction ends, so `change` sees
        and replaces the current version (it runs inside that transaction: it must not call the
        store). Like `update`, `updated_at` is set to now and `committed_at` keeps its stored value.
        Returns the records written."""

    @abstractmethod
    def delete(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, query: ListQuery | None = None) -> tuple[int, list[R]]:
        """(number of matches ignoring limit/skip, the page of records)."""

    @abstractmethod
    def count(self, filters: Mapping[str, Any] | None = None) -> int: ...

    @abstractmethod
    def fields(self) -> Sequence[str]:
        """Names usable as filters and sort keys."""


class ModelCollection(Collection[r.ModelRecord], ABC):
    @abstractmethod
    def ancestors(self, model_id: str, limit: int = 0, include_self: bool = True,
                  reverse: bool = False) -> list[r.ModelRecord]:
        """The model trail from `model_id` back towards the seed (newest first unless `reverse`)."""

    @abstractmethod
    def latest(self, session_id: str | None = None) -> r.ModelRecord | None: ...


class ClientCollection(Collection[r.ClientRecord], ABC):
    @abstractmethod
    def not_seen_since(self, moment: datetime) -> list[r.ClientRecord]:
        """Online clients whose `last_seen` is unset or not after `moment`: the liveness sweep's
        candidates, selected by the database rather than by listing every online client."""


class PackageCollection(Collection[r.PackageRecord], ABC):
    @abstractmethod
    def get_active(self) -> r.PackageRecord | None: ...

    @abstractmethod
    def set_active(self, package_id: str) -> r.PackageRecord:
        """Make one package active and every other one inactive, atomically."""

    @abstractmethod
    def get_by_file_name(self, file_name: str) -> r.PackageRecord | None: ...


class Store(ABC):
    """All collections of one deployment, plus the few operations that span several."""

    clients: ClientCollection
    combiners: Collection[r.CombinerRecord]
    models: ModelCollection
    packages: PackageCollection
    sessions: Collection[r.SessionRecord]
    rounds: Collection[r.RoundRecord]
    updates: Collection[r.UpdateRecord]
    validations: Collection[r.ValidationRecord]
    metrics: Collection[r.MetricRecord]
    statuses: Collection[r.StatusRecord]
    predictions: Collection[r.PredictionRecord]
    commands: Collection[r.CommandRecord]
    telemetry: Collection[r.TelemetryRecord]
    attributes: Collection[r.AttributeRecord]
    uploads: Collection[r.UploadRecord]

    @abstractmethod
    def get_setting(self, key: str) -> str | None: ...

    @abstractmethod
    def set_setting(self, key: str, value: str) -> None: ...

    @abstractmethod
    def commit_round(self, round_: r.RoundRecord, model: r.ModelRecord | None,
                     updates: Sequence[r.UpdateRecord], session: r.SessionRecord | None = None) -> None:
        """Store a finished round, the model it produced, its updates and the session's new state in
        one transaction: after a crash either all of it is there or none of it."""

    @abstractmethod
    def add_many(self, records: Sequence[Any]) -> None:
        """Insert a batch of records of any kinds in one transaction (combiner event batches)."""

    @abstractmethod
    def close(self) -> None: ...
