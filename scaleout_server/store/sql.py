"""The statestore on SQLAlchemy Core: SQLite today, PostgreSQL with the same code.

Tables are derived from the record dataclasses (one table per record type, scalar fields as
columns, dicts/lists as JSON, `Sender` flattened into `sender_*` columns) and live in one
module-level `metadata`, so a migration tool can diff against it. Records stay plain
dataclasses: rows are converted explicitly, so nothing ORM-shaped leaks out of the store.

Every call runs in its own short transaction on a pooled connection, which makes one
`SQLStore` safe to share between the FastAPI thread pool and the session runner threads.
On SQLite, write transactions start with `BEGIN IMMEDIATE` (take the write lock up front, so
two writers never deadlock on a lock upgrade) and are additionally serialised inside the
process; reads run concurrently thanks to WAL.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Index,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    or_,
    select,
    true,
)
from sqlalchemy import delete as sa_delete
from sqlalchemy import insert as sa_insert
from sqlalchemy import update as sa_update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from scaleout_server.store import records as r
from scaleout_server.store.base import (
    AlreadyExists,
    Collection,
    InvalidQuery,
    ListQuery,
    ModelCollection,
    NotFound,
    PackageCollection,
    Store,
    StoreError,
)
from scaleout_server.store.codec import KIND_OF

R = TypeVar("R")

SQLITE_BUSY_TIMEOUT_S = 10.0
_IN_CHUNK = 500  # ids per `IN (...)` lookup, below SQLite's bound-parameter limit

# Columns worth an index: the ones the REST API and the session runner filter or sort by.
_INDEXED = {
    "session_id", "round_id", "model_id", "client_id", "combiner_id", "status", "committed_at",
    "timestamp", "parent_model", "correlation_id", "key", "name", "file_name", "prediction_id",
    "sender_client_id", "sender_name",
}
_SENDER_FIELDS = ("client_id", "name", "role")
# Extra filter names accepted per kind (kept out of `fields()`: they are compatibility spellings).
_ALIASES: dict[str, dict[str, str]] = {"round": {"round_config.session_id": "session_id"}}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the backend keeps.

    SQLite has no time zone support, so values are normalised to UTC and stored naive; PostgreSQL
    gets `timestamptz`. Naive input is taken to already be UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_type() -> Any:
    # SQL NULL for None (not the JSON literal `null`), JSONB on PostgreSQL.
    return JSON(none_as_null=True).with_variant(pg_dialect.JSONB(none_as_null=True), "postgresql")


# ---------------------------------------------------------------------------------------------
# Record <-> table mapping
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Field:
    """How one record field is stored: `column` for scalars, `sender_*` columns for Sender."""

    name: str
    kind: str  # str | int | float | bool | datetime | json | sender
    nullable: bool


def _unwrap(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), True
    return hint, False


def _classify(cls: type) -> list[_Field]:
    hints = typing.get_type_hints(cls)
    out: list[_Field] = []
    for f in dataclasses.fields(cls):
        base, optional = _unwrap(hints[f.name])
        if base is r.Sender:
            kind = "sender"
        elif base in (str, int, float, bool, datetime):
            kind = "datetime" if base is datetime else base.__name__
        else:  # dict, list, Any
            kind = "json"
            optional = True
        out.append(_Field(f.name, kind, optional))
    return out


_SCALAR_TYPES: dict[str, Any] = {"str": String, "int": BigInteger, "float": Float, "bool": Boolean}  # sizes > 2 GiB


def _columns_for(fields: list[_Field], id_field: str) -> list[Column[Any]]:
    cols: list[Column[Any]] = []
    for f in fields:
        if f.kind == "sender":
            cols.append(Column("sender_client_id", String, nullable=True, index=True))
            cols.append(Column("sender_name", String, nullable=True, index=True))
            cols.append(Column("sender_role", String, nullable=False))
            continue
        if f.kind == "json":
            type_: Any = _json_type()
        elif f.kind == "datetime":
            type_ = UTCDateTime()
        elif f.kind == "str" and f.name not in _INDEXED and f.name != id_field:
            type_ = Text  # free text (errors, descriptions): no length limit anywhere
        else:
            type_ = _SCALAR_TYPES[f.kind]()
        is_pk = f.name == id_field
        cols.append(Column(f.name, type_, primary_key=is_pk, nullable=f.nullable and not is_pk,
                           index=(f.name in _INDEXED and not is_pk)))
    return cols


@dataclasses.dataclass(frozen=True)
class _Kind:
    kind: str
    cls: type
    table_name: str
    id_field: str


_KINDS: list[_Kind] = [
    _Kind("client", r.ClientRecord, "clients", "client_id"),
    _Kind("combiner", r.CombinerRecord, "combiners", "combiner_id"),
    _Kind("model", r.ModelRecord, "models", "model_id"),
    _Kind("package", r.PackageRecord, "packages", "package_id"),
    _Kind("session", r.SessionRecord, "sessions", "session_id"),
    _Kind("round", r.RoundRecord, "rounds", "round_id"),
    _Kind("update", r.UpdateRecord, "model_updates", "update_id"),
    _Kind("validation", r.ValidationRecord, "validations", "validation_id"),
    _Kind("metric", r.MetricRecord, "metrics", "metric_id"),
    _Kind("status", r.StatusRecord, "statuses", "status_id"),
    _Kind("prediction", r.PredictionRecord, "predictions", "prediction_record_id"),
    _Kind("command", r.CommandRecord, "commands", "command_id"),
    _Kind("telemetry", r.TelemetryRecord, "telemetry", "telemetry_id"),
    _Kind("attribute", r.AttributeRecord, "attributes", "attribute_id"),
    _Kind("upload", r.UploadRecord, "uploads", "upload_id"),
]

metadata = MetaData()
"""Every table of the statestore (the target for `create_all` and for migrations)."""

_EXTRA_TABLE_ARGS: dict[str, list[Any]] = {
    # Round numbers are unique within a session (a restarted runner must not reuse one).
    "rounds": [UniqueConstraint("session_id", "round_number", name="uq_rounds_session_round_number")],
}

TABLES: dict[str, Table] = {}
_FIELDS: dict[str, list[_Field]] = {}
for _k in _KINDS:
    _FIELDS[_k.kind] = _classify(_k.cls)
    TABLES[_k.kind] = Table(_k.table_name, metadata, *_columns_for(_FIELDS[_k.kind], _k.id_field),
                            *_EXTRA_TABLE_ARGS.get(_k.table_name, []))

# At most one active package, enforced by the database itself.
Index("uq_packages_one_active", TABLES["package"].c.active, unique=True,
      sqlite_where=TABLES["package"].c.active == true(), postgresql_where=TABLES["package"].c.active == true())

settings_table = Table(
    "settings", metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

_KIND_BY_CLASS: dict[type, _Kind] = {k.cls: k for k in _KINDS}
assert set(KIND_OF) == set(_KIND_BY_CLASS), "store/sql.py must map every record type in codec.RECORD_TYPES"


def _to_row(fields: list[_Field], record: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for f in fields:
        value = getattr(record, f.name)
        if f.kind == "sender":
            sender = value if value is not None else r.Sender()
            if isinstance(sender, Mapping):  # tolerate a sender that arrived as a plain dict
                sender = r.Sender(**sender)
            row["sender_client_id"] = sender.client_id
            row["sender_name"] = sender.name
            row["sender_role"] = sender.role
        else:
            row[f.name] = value
    return row


def _from_row(cls: type, fields: list[_Field], row: Mapping[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields:
        if f.kind == "sender":
            kwargs[f.name] = r.Sender(client_id=row["sender_client_id"], name=row["sender_name"],
                                      role=row["sender_role"])
        else:
            kwargs[f.name] = row[f.name]
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Filter values arrive as strings from query parameters: coerce them to the column's type.
# ---------------------------------------------------------------------------------------------

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(kind: str, value: Any) -> Any:
    """The value as the column's Python type; ValueError with a reason when impossible."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none")):
        return None
    if kind == "str":
        if isinstance(value, (dict, list)):
            raise ValueError("expected a string")
        return value if isinstance(value, str) else str(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("expected true or false")
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, float):
            if value.is_integer():
                return int(value)
            raise ValueError("expected an integer")
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError("expected an integer") from None
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError("expected a number")
        try:
            return float(value if isinstance(value, (int, float)) else str(value).strip())
        except ValueError:
            raise ValueError("expected a number") from None
    if kind == "datetime":
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError("expected an ISO-8601 date and time") from None
    raise ValueError(f"cannot filter on a {kind} field")


# ---------------------------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------------------------


def _is_unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    if getattr(orig, "pgcode", None) == "23505" or getattr(orig, "sqlstate", None) == "23505":
        return True
    return "UNIQUE constraint failed" in str(orig) or "duplicate key" in str(orig)


class _Tx:
    """Short-lived transactions on the store's engine; write transactions are serialised on SQLite."""

    def __init__(self, engine: Engine, sqlite: bool, memory: bool) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(scaleout_write=True)
        # SQLite has one writer at a time anyway; queueing in-process avoids busy-timeout failures.
        # An in-memory database is one shared connection, so reads must queue as well.
        self._write_lock: threading.RLock | None = threading.RLock() if sqlite else None
        self._read_lock = self._write_lock if memory else None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._read_lock or nullcontext(), self._engine.begin() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self._write_lock or nullcontext(), self._write_engine.begin() as conn:
            yield conn


def _dialect_insert(dialect: str, table: Table) -> Any:
    if dialect == "sqlite":
        return sqlite_dialect.insert(table)
    if dialect == "postgresql":
        return pg_dialect.insert(table)
    return None


class SQLCollection(Collection[R]):
    """CRUD and list queries over one record table."""

    def __init__(self, kind: _Kind, tx: _Tx, dialect: str) -> None:
        self.kind = kind.kind
        self.id_field = kind.id_field
        self._cls = kind.cls
        self._fields = _FIELDS[kind.kind]
        self._table = TABLES[kind.kind]
        self._tx = tx
        self._dialect = dialect
        self._pk = self._table.c[kind.id_field]
        self._has_updated_at = any(f.name == "updated_at" for f in self._fields)
        self._time_col = self._table.c["committed_at" if "committed_at" in self._table.c else "timestamp"]
        # filter/sort name -> (column, kind of value)
        self._filterable: dict[str, tuple[Column[Any], str]] = {}
        for f in self._fields:
            if f.kind == "sender":
                for part in _SENDER_FIELDS:
                    self._filterable[f"{f.name}.{part}"] = (self._table.c[f"{f.name}_{part}"], "str")
            elif f.kind != "json":
                self._filterable[f.name] = (self._table.c[f.name], f.kind)
        self._aliases = dict(_ALIASES.get(kind.kind, {}))
        for f in self._fields:
            if f.kind == "sender":  # the flattened column names work too
                self._aliases.update({f"{f.name}_{p}": f"{f.name}.{p}" for p in _SENDER_FIELDS})

    # -- conversion ---------------------------------------------------------------------------

    def _check_type(self, record: Any) -> None:
        if not isinstance(record, self._cls):
            raise TypeError(f"the {self.kind} collection stores {self._cls.__name__}, not {type(record).__name__}")

    def _row(self, record: Any) -> dict[str, Any]:
        return _to_row(self._fields, record)

    def _record(self, row: Mapping[str, Any]) -> R:
        return _from_row(self._cls, self._fields, row)

    def _before_write(self, conn: Connection, record: Any) -> None:
        """Runs inside the write transaction before `record` is stored (subclasses keep invariants)."""

    def _get(self, conn: Connection, key: str) -> R | None:
        row = conn.execute(select(self._table).where(self._pk == key)).mappings().first()
        return None if row is None else self._record(row)

    # -- CRUD ---------------------------------------------------------------------------------

    def get(self, key: str) -> R | None:
        with self._tx.read() as conn:
            return self._get(conn, key)

    def add(self, record: R) -> R:
        self._check_type(record)
        key = getattr(record, self.id_field)
        try:
            with self._tx.write() as conn:
                if conn.execute(select(self._pk).where(self._pk == key)).first() is not None:
                    raise AlreadyExists(f"{self.kind} with id {key!r} already exists")
                self._before_write(conn, record)
                conn.execute(sa_insert(self._table).values(self._row(record)))
        except IntegrityError as exc:
            raise _integrity_error(self.kind, exc) from exc
        return record

    def update(self, record: R) -> R:
        """Replace the stored record. `committed_at` keeps its stored value (it is the creation
        time); `updated_at` is set to now. Returns the record as stored."""
        self._check_type(record)
        key = getattr(record, self.id_field)
        try:
            with self._tx.write() as conn:
                values = self._update_values(record)
                self._before_write(conn, record)
                result = conn.execute(sa_update(self._table).where(self._pk == key).values(values))
                if result.rowcount == 0:
                    raise NotFound(self.kind, key)
                stored = self._get(conn, key)
        except IntegrityError as exc:
            raise _integrity_error(self.kind, exc) from exc
        assert stored is not None
        return stored

    def _update_values(self, record: Any) -> dict[str, Any]:
        values = self._row(record)
        values.pop(self.id_field, None)
        values.pop("committed_at", None)
        if self._has_updated_at:
            values["updated_at"] = r.utcnow()
        return values

    def upsert(self, record: R) -> R:
        """Insert, or replace the stored record with the same id (like `update`). Returns it as stored."""
        self._check_type(record)
        key = getattr(record, self.id_field)
        try:
            with self._tx.write() as conn:
                self._upsert(conn, record)
                stored = self._get(conn, key)
        except IntegrityError as exc:
            raise _integrity_error(self.kind, exc) from exc
        assert stored is not None
        return stored

    def _upsert(self, conn: Connection, record: Any) -> None:
        values = self._update_values(record)
        self._before_write(conn, record)
        stmt = _dialect_insert(self._dialect, self._table)
        if stmt is not None:
            conn.execute(stmt.values(self._row(record))
                         .on_conflict_do_update(index_elements=[self._pk], set_=values))
            return
        key = getattr(record, self.id_field)
        if conn.execute(sa_update(self._table).where(self._pk == key).values(values)).rowcount == 0:
            conn.execute(sa_insert(self._table).values(self._row(record)))

    def delete(self, key: str) -> bool:
        with self._tx.write() as conn:
            return conn.execute(sa_delete(self._table).where(self._pk == key)).rowcount > 0

    def _insert_missing(self, conn: Connection, records: Sequence[Any]) -> int:
        """Insert the records whose id is neither stored nor earlier in `records`; returns how many."""
        fresh: dict[str, Any] = {}
        for record in records:
            self._check_type(record)
            fresh.setdefault(getattr(record, self.id_field), record)
        keys = list(fresh)
        for i in range(0, len(keys), _IN_CHUNK):
            for existing in conn.execute(select(self._pk).where(self._pk.in_(keys[i:i + _IN_CHUNK]))).scalars():
                fresh.pop(existing, None)
        for record in fresh.values():
            self._before_write(conn, record)
        if fresh:
            conn.execute(sa_insert(self._table), [self._row(rec) for rec in fresh.values()])
        return len(fresh)

    # -- queries ------------------------------------------------------------------------------

    def fields(self) -> Sequence[str]:
        return list(self._filterable)

    def _valid(self) -> str:
        return ", ".join(self._filterable)

    def _where(self, filters: Mapping[str, Any] | None) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        for name, raw in (filters or {}).items():
            canonical = self._aliases.get(name, name)
            if canonical not in self._filterable:
                raise InvalidQuery(f"unknown filter field {name!r} for {self.kind}s; valid fields: {self._valid()}")
            column, kind = self._filterable[canonical]
            values = list(raw) if isinstance(raw, (list, tuple, set, frozenset)) else [raw]
            coerced: list[Any] = []
            for value in values:
                try:
                    coerced.append(_coerce(kind, value))
                except ValueError as exc:
                    raise InvalidQuery(f"invalid value {value!r} for filter {name!r} on {self.kind}s: {exc}") from None
            clauses.append(_match(column, coerced))
        return clauses

    def _order_by(self, query: ListQuery) -> list[Any]:
        key = query.sort_key or self._time_col.name
        canonical = self._aliases.get(key, key)
        if canonical not in self._filterable:
            raise InvalidQuery(f"unknown sort key {key!r} for {self.kind}s; valid sort keys: {self._valid()}")
        columns = [self._filterable[canonical][0]]
        for tiebreak in (self._time_col, self._pk):  # deterministic pages
            if all(tiebreak is not c for c in columns):
                columns.append(tiebreak)
        return [c.desc() if query.descending else c.asc() for c in columns]

    def list(self, query: ListQuery | None = None) -> tuple[int, list[R]]:
        query = query or ListQuery()
        if query.limit < 0 or query.skip < 0:
            raise InvalidQuery(f"limit and skip must be >= 0 (got limit={query.limit}, skip={query.skip})")
        where = self._where(query.filters)
        order = self._order_by(query)
        page = select(self._table).where(*where).order_by(*order)
        if query.limit:
            page = page.limit(query.limit)
        if query.skip:
            page = page.offset(query.skip)
        with self._tx.read() as conn:
            total = conn.execute(select(func.count()).select_from(self._table).where(*where)).scalar_one()
            rows = conn.execute(page).mappings().all()
        return int(total), [self._record(row) for row in rows]

    def count(self, filters: Mapping[str, Any] | None = None) -> int:
        where = self._where(filters)
        with self._tx.read() as conn:
            return int(conn.execute(select(func.count()).select_from(self._table).where(*where)).scalar_one())


def _match(column: Column[Any], values: list[Any]) -> ColumnElement[bool]:
    present = [v for v in values if v is not None]
    clauses: list[ColumnElement[bool]] = []
    if len(present) == 1:
        clauses.append(column == present[0])
    elif present:
        clauses.append(column.in_(present))
    if len(present) < len(values):
        clauses.append(column.is_(None))
    return clauses[0] if len(clauses) == 1 else or_(*clauses)


def _integrity_error(kind: str, exc: IntegrityError) -> StoreError:
    if _is_unique_violation(exc):
        return AlreadyExists(f"{kind} conflicts with a stored record: {exc.orig}")
    return StoreError(f"{kind} rejected by the database (a required field is missing?): {exc.orig}")


class SQLModelCollection(SQLCollection[r.ModelRecord], ModelCollection):
    def ancestors(self, model_id: str, limit: int = 0, include_self: bool = True,
                  reverse: bool = False) -> list[r.ModelRecord]:
        """Follows `parent_model` links from `model_id`; stops at a missing parent or a cycle.
        `limit` bounds the number returned (the newest ones); NotFound if `model_id` is unknown."""
        trail: list[r.ModelRecord] = []
        seen: set[str] = set()
        with self._tx.read() as conn:
            current = self._get(conn, model_id)
            if current is None:
                raise NotFound(self.kind, model_id)
            if not include_self:
                seen.add(current.model_id)
                current = self._get(conn, current.parent_model) if current.parent_model else None
            while current is not None and current.model_id not in seen and (not limit or len(trail) < limit):
                trail.append(current)
                seen.add(current.model_id)
                current = self._get(conn, current.parent_model) if current.parent_model else None
        if reverse:
            trail.reverse()
        return trail

    def latest(self, session_id: str | None = None) -> r.ModelRecord | None:
        stmt = select(self._table)
        if session_id is not None:
            stmt = stmt.where(self._table.c.session_id == session_id)
        stmt = stmt.order_by(self._table.c.committed_at.desc(), self._pk.desc()).limit(1)
        with self._tx.read() as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else self._record(row)


class SQLPackageCollection(SQLCollection[r.PackageRecord], PackageCollection):
    def _before_write(self, conn: Connection, record: Any) -> None:
        # Storing an active package deactivates the others: at most one is active (also a unique index).
        if record.active:
            conn.execute(sa_update(self._table).where(self._table.c.active == true(),
                                                      self._pk != record.package_id).values(active=False))

    def get_active(self) -> r.PackageRecord | None:
        with self._tx.read() as conn:
            row = conn.execute(select(self._table).where(self._table.c.active == true())).mappings().first()
        return None if row is None else self._record(row)

    def set_active(self, package_id: str) -> r.PackageRecord:
        with self._tx.write() as conn:
            if self._get(conn, package_id) is None:
                raise NotFound(self.kind, package_id)
            conn.execute(sa_update(self._table).where(self._table.c.active == true()).values(active=False))
            conn.execute(sa_update(self._table).where(self._pk == package_id).values(active=True))
            stored = self._get(conn, package_id)
        assert stored is not None
        return stored

    def get_by_file_name(self, file_name: str) -> r.PackageRecord | None:
        stmt = (select(self._table).where(self._table.c.file_name == file_name)
                .order_by(self._table.c.committed_at.desc()).limit(1))
        with self._tx.read() as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else self._record(row)


_COLLECTION_ATTR = {
    "client": "clients", "combiner": "combiners", "model": "models", "package": "packages",
    "session": "sessions", "round": "rounds", "update": "updates", "validation": "validations",
    "metric": "metrics", "status": "statuses", "prediction": "predictions", "command": "commands",
    "telemetry": "telemetry", "attribute": "attributes", "upload": "uploads",
}


class SQLStore(Store):
    """`Store` on a SQLAlchemy URL (`sqlite:////abs/path.db`, `sqlite://` in memory, `postgresql+psycopg://...`).

    Creates missing tables on start (and the SQLite file's folder)."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.url = parsed.render_as_string(hide_password=True)
        dialect = parsed.get_backend_name()
        sqlite = dialect == "sqlite"
        memory = sqlite and parsed.database in (None, "", ":memory:")
        kwargs: dict[str, Any] = {"json_serializer": _json_dumps}
        if sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
            if memory:
                kwargs["poolclass"] = StaticPool  # one connection, or each would see its own empty database
            else:
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
                kwargs.update(pool_size=8, max_overflow=24)
        else:
            kwargs["pool_pre_ping"] = True
        self._engine = create_engine(parsed, **kwargs)
        if sqlite:
            _configure_sqlite(self._engine, memory)
        self._tx = _Tx(self._engine, sqlite, memory)
        self._dialect = dialect
        metadata.create_all(self._engine)

        by_kind = {k.kind: k for k in _KINDS}
        self._collections: dict[str, SQLCollection[Any]] = {}
        for kind, attr in _COLLECTION_ATTR.items():
            cls: type[SQLCollection[Any]] = {"model": SQLModelCollection,
                                              "package": SQLPackageCollection}.get(kind, SQLCollection)
            coll = cls(by_kind[kind], self._tx, dialect)
            self._collections[kind] = coll
            setattr(self, attr, coll)

    def __repr__(self) -> str:
        return f"SQLStore({self.url!r})"

    def collection_for(self, record: Any) -> SQLCollection[Any]:
        kind = _KIND_BY_CLASS.get(type(record))
        if kind is None:
            known = ", ".join(sorted(k.cls.__name__ for k in _KINDS))
            raise TypeError(f"{type(record).__name__} is not a store record; known: {known}")
        return self._collections[kind.kind]

    # -- settings -----------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        with self._tx.read() as conn:
            return conn.execute(select(settings_table.c.value).where(settings_table.c.key == key)).scalar()

    def set_setting(self, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"setting {key!r} must be a string, got {type(value).__name__}")
        values = {"key": key, "value": value, "updated_at": r.utcnow()}
        with self._tx.write() as conn:
            stmt = _dialect_insert(self._dialect, settings_table)
            if stmt is not None:
                conn.execute(stmt.values(values).on_conflict_do_update(
                    index_elements=[settings_table.c.key], set_={"value": value, "updated_at": values["updated_at"]}))
            elif conn.execute(sa_update(settings_table).where(settings_table.c.key == key)
                              .values(value=value, updated_at=values["updated_at"])).rowcount == 0:
                conn.execute(sa_insert(settings_table).values(values))

    # -- multi-record transactions ------------------------------------------------------------

    def commit_round(self, round_: r.RoundRecord, model: r.ModelRecord | None,
                     updates: Sequence[r.UpdateRecord], session: r.SessionRecord | None = None) -> None:
        """Upserts the round, inserts the model (AlreadyExists if its id is taken), inserts the
        updates not stored yet and updates the session, all in one transaction."""
        rounds = self._collections["round"]
        models = self._collections["model"]
        sessions = self._collections["session"]
        rounds._check_type(round_)
        try:
            with self._tx.write() as conn:
                rounds._upsert(conn, round_)
                if model is not None:
                    models._check_type(model)
                    if models._get(conn, model.model_id) is not None:
                        raise AlreadyExists(f"model with id {model.model_id!r} already exists")
                    conn.execute(sa_insert(models._table).values(models._row(model)))
                if updates:
                    self._insert_updates(conn, updates)
                if session is not None:
                    sessions._check_type(session)
                    result = conn.execute(sa_update(sessions._table).where(sessions._pk == session.session_id)
                                          .values(sessions._update_values(session)))
                    if result.rowcount == 0:
                        raise NotFound("session", session.session_id)
        except IntegrityError as exc:
            raise _integrity_error("round commit", exc) from exc

    def _insert_updates(self, conn: Connection, updates: Sequence[r.UpdateRecord]) -> None:
        coll = self._collections["update"]
        for u in updates:
            coll._check_type(u)
        ids = [u.update_id for u in updates]
        stored: set[str] = set()
        for i in range(0, len(ids), _IN_CHUNK):
            stored.update(conn.execute(select(coll._pk).where(coll._pk.in_(ids[i:i + _IN_CHUNK]))).scalars())
        # Duplicates inside the batch are not skipped: they are a caller bug and fail the commit.
        fresh = [coll._row(u) for u in updates if u.update_id not in stored]
        if fresh:
            conn.execute(sa_insert(coll._table), fresh)

    def add_many(self, records: Sequence[Any]) -> None:
        """Inserts every record whose id is not stored yet (replayed batches are no-ops), in one transaction."""
        grouped: dict[str, list[Any]] = {}
        for record in records:
            grouped.setdefault(self.collection_for(record).kind, []).append(record)
        if not grouped:
            return
        try:
            with self._tx.write() as conn:
                for kind, batch in grouped.items():
                    self._collections[kind]._insert_missing(conn, batch)
        except IntegrityError as exc:
            raise _integrity_error("record batch", exc) from exc

    def close(self) -> None:
        self._engine.dispose()


def _json_default(value: Any) -> Any:
    """JSON columns tolerate the odd datetime, dataclass or numpy scalar inside record dicts."""
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json_dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default)


def _configure_sqlite(engine: Engine, memory: bool) -> None:
    """Pragmas per connection and explicit BEGIN / BEGIN IMMEDIATE (the driver's implicit
    transactions would let a read-then-write transaction fail on lock upgrade)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_conn.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("scaleout_write") else "BEGIN")


__all__ = ["SQLStore", "SQLCollection", "TABLES", "metadata", "settings_table"]
