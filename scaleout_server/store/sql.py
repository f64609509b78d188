"""The statestore on SQLAlchemy Core: SQLite and PostgreSQL with the same code and the same behaviour.

Tables are derived from the record dataclasses (one table per record type, scalar fields as
columns, dicts/lists as JSON, `Sender` flattened into `sender_*` columns) and live in one
module-level `metadata`; Alembic revisions (store/migrations) create them, and a test checks that
the migrated schema equals `metadata`. Records stay plain dataclasses: rows are converted
explicitly, so nothing ORM-shaped leaks out of the store.

Every call runs in its own short transaction on a pooled connection, which makes one
`SQLStore` safe to share between the FastAPI thread pool and the session runner threads.
On SQLite, write transactions start with `BEGIN IMMEDIATE` and are additionally serialised inside
the process; reads run concurrently thanks to WAL. On PostgreSQL, reads see one snapshot, inserts
that may race use `ON CONFLICT`, and the one cross-row invariant (a single active package) takes
an advisory lock, so concurrent callers get the results SQLite's serialised writes would give.

Where the two databases differ, the store decides, the same way for both: strings sort by code
point (`COLLATE "C"` on PostgreSQL), NULL sorts before any value, NUL characters are stored as
U+FFFD, and values only one backend could keep (NaN in a number column, integers beyond 64 bits,
key columns longer than MAX_KEY_CHARS, which PostgreSQL's indexes cannot hold) are refused
with InvalidRecord.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import threading
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
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
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from scaleout_server.outages import ride_out
from scaleout_server.store import records as r
from scaleout_server.store.base import (
    MAX_KEY_CHARS,
    AlreadyExists,
    ClientCollection,
    Collection,
    InvalidQuery,
    InvalidRecord,
    ListQuery,
    ModelCollection,
    NotFound,
    PackageCollection,
    Store,
    StoreError,
    StoreUnavailable,
)
from scaleout_server.store.codec import KIND_OF
from scaleout_server.store.engine import (
    NUL_REPLACEMENT,
    advisory_lock,
    connection_errors,
    is_memory_sqlite,
    make_engine,
    parse_url,
    read_engine,
    safe_url,
    write_engine,
)
from scaleout_server.store.migration import prepare_schema

R = TypeVar("R")
log = logging.getLogger(__name__)

UNAVAILABLE_WAIT_S = 30.0  # PostgreSQL: how long a transaction waits for the database to come back
RETRY_MAX_S = 4.0  # longest pause between tries while the database is unreachable
_IN_CHUNK = 500  # ids per `IN (...)` lookup, below SQLite's bound-parameter limit

# Columns worth an index: the ones the REST API and the session runner filter or sort by.
_INDEXED = {
    "session_id", "round_id", "model_id", "client_id", "combiner_id", "status", "committed_at",
    "timestamp", "parent_model", "correlation_id", "key", "name", "file_name", "prediction_id",
    "sender_client_id", "sender_name",
}
# Exceptions by table: a status record's `status` is its free-text message (any length, so no index).
_FREE_TEXT = {("statuses", "status")}
_SENDER_FIELDS = ("client_id", "name", "role")
_INT64 = (-(2**63), 2**63 - 1)
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


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """How autogenerated migration scripts spell our column types: plain SQLAlchemy, so a script never
    imports this module (whose tables keep changing after the script is written)."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _json_type() -> Any:
    # SQL NULL for None (not the JSON literal `null`). PostgreSQL's `json`, not `jsonb`: it keeps the
    # text as given, so keys come back in the order they were stored, as on SQLite (nothing queries
    # inside JSON values, so jsonb's indexing would buy nothing).
    return JSON(none_as_null=True)


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


def _is_key(table_name: str, name: str) -> bool:
    """Key-like text: indexed, so bounded in length (PostgreSQL cannot index very long values)."""
    return name in _INDEXED and (table_name, name) not in _FREE_TEXT


def _columns_for(table_name: str, fields: list[_Field], id_field: str) -> list[Column[Any]]:
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
        elif f.kind == "str" and not _is_key(table_name, f.name) and f.name != id_field:
            type_ = Text  # free text (errors, descriptions): no length limit anywhere
        else:
            type_ = _SCALAR_TYPES[f.kind]()
        is_pk = f.name == id_field
        cols.append(Column(f.name, type_, primary_key=is_pk, nullable=f.nullable and not is_pk,
                           index=(_is_key(table_name, f.name) and not is_pk)))
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
"""Every table of the statestore: what the migrations must produce (tests compare them)."""

_EXTRA_TABLE_ARGS: dict[str, list[Any]] = {
    # Round numbers are unique within a session (a restarted runner must not reuse one).
    "rounds": [UniqueConstraint("session_id", "round_number", name="uq_rounds_session_round_number")],
}

TABLES: dict[str, Table] = {}
_FIELDS: dict[str, list[_Field]] = {}
_KEY_COLUMNS: dict[str, frozenset[str]] = {}  # per kind: text columns bounded by MAX_KEY_CHARS
for _k in _KINDS:
    _FIELDS[_k.kind] = _classify(_k.cls)
    _KEY_COLUMNS[_k.kind] = frozenset({_k.id_field, "sender_client_id", "sender_name", "sender_role"}
                                      | {n for n in _INDEXED if _is_key(_k.table_name, n)})
    TABLES[_k.kind] = Table(_k.table_name, metadata, *_columns_for(_k.table_name, _FIELDS[_k.kind], _k.id_field),
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

# Which controller may write (store/lease.py): one row per lease name, its holder and epoch. Only used
# on PostgreSQL, where a standby controller can take over; present everywhere so the schema is one.
lease_table = Table(
    "controller_lease", metadata,
    Column("name", String, primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("holder", String, nullable=False),
    Column("address", String, nullable=False),
    Column("acquired_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

_KIND_BY_CLASS: dict[type, _Kind] = {k.cls: k for k in _KINDS}
assert set(KIND_OF) == set(_KIND_BY_CLASS), "store/sql.py must map every record type in codec.RECORD_TYPES"


def clean_text(value: str) -> str:
    """NUL characters become U+FFFD: PostgreSQL cannot store them, so no backend does."""
    return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value


def _checked(kind: str, column: str, field_kind: str, value: Any, key: bool) -> Any:
    """The value as every backend can store it, or InvalidRecord saying why it cannot be."""
    if value is None:
        return None
    if field_kind == "str" and isinstance(value, str):
        value = clean_text(value)
        if key and len(value) > MAX_KEY_CHARS:
            raise InvalidRecord(f"{kind} field {column} is {len(value)} characters long; "
                                f"at most {MAX_KEY_CHARS} are allowed")
    elif field_kind == "int" and isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        raise InvalidRecord(f"{kind} field {column} = {value} does not fit in a 64-bit integer")
    elif field_kind == "float" and isinstance(value, float) and not math.isfinite(value):
        raise InvalidRecord(f"{kind} field {column} must be a finite number, got {value}")
    return value


def _to_row(kind: str, fields: list[_Field], record: Any) -> dict[str, Any]:
    keys = _KEY_COLUMNS[kind]
    row: dict[str, Any] = {}
    for f in fields:
        value = getattr(record, f.name)
        if f.kind == "sender":
            sender = value if value is not None else r.Sender()
            if isinstance(sender, Mapping):  # tolerate a sender that arrived as a plain dict
                sender = r.Sender(**sender)
            for part in _SENDER_FIELDS:
                column = f"{f.name}_{part}"
                row[column] = _checked(kind, column, "str", getattr(sender, part), True)
        else:
            row[f.name] = _checked(kind, f.name, f.kind, value, f.name in keys)
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
        return clean_text(value if isinstance(value, str) else str(value))
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

    def __init__(self, engine: Engine, sqlite: bool, memory: bool,
                 unavailable_wait: float = UNAVAILABLE_WAIT_S) -> None:
        self._engine = read_engine(engine)
        # PostgreSQL: how long a transaction waits for a database that cannot be reached (a restart)
        self._unavailable_wait = 0.0 if sqlite else unavailable_wait
        self._write_engine = write_engine(engine)
        # SQLite has one writer at a time anyway; queueing in-process avoids busy-timeout failures.
        # An in-memory database is one shared connection, so reads must queue as well.
        self._write_lock: threading.RLock | None = threading.RLock() if sqlite else None
        self._read_lock = self._write_lock if memory else None
        # run first in every write transaction; raises to refuse it (the controller lease, store/lease.py)
        self.fence: Callable[[Connection], None] | None = None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with (connection_errors(self._engine.url), self._read_lock or nullcontext(),
              self._connect(self._engine) as conn, conn.begin()):
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with (connection_errors(self._engine.url), self._write_lock or nullcontext(),
              self._connect(self._write_engine) as conn, conn.begin()):
            if self.fence is not None:
                self.fence(conn)
            yield conn

    def _connect(self, engine: Engine) -> Connection:
        """A pooled connection (pre-pinged), retried with jittered back-off while the database cannot be
        reached, for up to `_unavailable_wait` seconds: a session keeps its rounds through a database
        restart instead of failing them. Only getting the connection is retried: nothing has run on it
        yet, so no statement can run twice. One log line when the database goes, one when it is back."""

        def once() -> Connection:
            with connection_errors(engine.url):
                return engine.connect()

        return ride_out(once, StoreUnavailable, self._unavailable_wait, f"the statestore {safe_url(engine.url)}",
                        log, max_pause=RETRY_MAX_S)


def _dialect_insert(dialect: str, table: Table) -> Any:
    if dialect == "sqlite":
        return sqlite_dialect.insert(table)
    if dialect == "postgresql":
        return pg_dialect.insert(table)
    return None


def _insert_ignoring_taken_ids(dialect: str, table: Table, pk: Column[Any]) -> Any:
    """INSERT that skips rows whose primary key is taken (other unique violations still fail)."""
    stmt = _dialect_insert(dialect, table)
    if stmt is None:
        return sa_insert(table)
    return stmt.on_conflict_do_nothing(index_elements=[pk])


_ACTIVE_PACKAGE_LOCK = "scaleout-active-package"


def _key(value: Any) -> Any:
    """An id as stored (see `clean_text`), so lookups find what writes stored."""
    return clean_text(value) if isinstance(value, str) else value


def _sort(column: Column[Any], kind: str, descending: bool, dialect: str) -> Any:
    """One ORDER BY term that sorts alike on every backend: text by code point (PostgreSQL would use the
    database's linguistic collation) and NULL lowest, i.e. first ascending and last descending."""
    expr: Any = column.collate("C") if kind == "str" and dialect == "postgresql" else column
    expr = expr.desc() if descending else expr.asc()
    if column.nullable and not column.primary_key:
        expr = expr.nulls_last() if descending else expr.nulls_first()
    return expr


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
        return _to_row(self.kind, self._fields, record)

    def _record(self, row: Mapping[str, Any]) -> R:
        return _from_row(self._cls, self._fields, row)

    def _before_write(self, conn: Connection, record: Any) -> None:
        """Runs inside the write transaction before `record` is stored (subclasses keep invariants)."""

    def _get(self, conn: Connection, key: str) -> R | None:
        row = conn.execute(select(self._table).where(self._pk == _key(key))).mappings().first()
        return None if row is None else self._record(row)

    # -- CRUD ---------------------------------------------------------------------------------

    def get(self, key: str) -> R | None:
        with self._tx.read() as conn:
            return self._get(conn, key)

    def add(self, record: R) -> R:
        self._check_type(record)
        key = _key(getattr(record, self.id_field))
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
        key = _key(getattr(record, self.id_field))
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
        key = _key(getattr(record, self.id_field))
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
        key = _key(getattr(record, self.id_field))
        if conn.execute(sa_update(self._table).where(self._pk == key).values(values)).rowcount == 0:
            conn.execute(sa_insert(self._table).values(self._row(record)))

    def modify_many(self, keys: Iterable[str], change: Callable[[str, R | None], R | None]) -> list[R]:
        """One SELECT per `_IN_CHUNK` keys (rows locked on PostgreSQL, in key order so that two batches
        cannot deadlock; SQLite serialises write transactions anyway), then one executemany upsert."""
        wanted: dict[str, str] = {}  # id as stored -> the caller's spelling (see `clean_text`)
        for key in keys:
            wanted.setdefault(_key(key), key)
        if not wanted:
            return []
        in_key_order = sorted(wanted)
        now = r.utcnow()
        try:
            with self._tx.write() as conn:
                stored: dict[str, R] = {}
                for i in range(0, len(in_key_order), _IN_CHUNK):
                    stmt = select(self._table).where(self._pk.in_(in_key_order[i:i + _IN_CHUNK])).order_by(self._pk)
                    if self._dialect == "postgresql":
                        stmt = stmt.with_for_update()
                    for row in conn.execute(stmt).mappings():
                        stored[row[self.id_field]] = self._record(row)
                changed: list[R] = []
                for key, given in wanted.items():
                    current = stored.get(key)
                    created = getattr(current, "committed_at", None)  # before `change` may touch it
                    record = change(given, current)
                    if record is None:
                        continue
                    self._check_type(record)
                    if _key(getattr(record, self.id_field)) != key:
                        raise ValueError(f"modify_many: the {self.kind} returned for id {key!r} has id "
                                         f"{getattr(record, self.id_field)!r}; change a record, not its id")
                    if self._has_updated_at:
                        record.updated_at = now  # type: ignore[attr-defined]
                    if created is not None:
                        record.committed_at = created  # type: ignore[attr-defined]
                    self._before_write(conn, record)
                    changed.append(record)
                if changed:
                    self._upsert_many(conn, changed)
        except IntegrityError as exc:
            raise _integrity_error(self.kind, exc) from exc
        return changed

    def _upsert_many(self, conn: Connection, records: Sequence[Any]) -> None:
        """Insert or replace these records (distinct ids) with one executemany statement."""
        if self._upsert_rows is None:  # no INSERT ... ON CONFLICT: one statement per record
            for record in records:
                self._upsert(conn, record)
            return
        conn.execute(self._upsert_rows, [self._row(record) for record in records])

    @functools.cached_property
    def _upsert_rows(self) -> Any:
        """INSERT ... ON CONFLICT (id) DO UPDATE of every column but the id and `committed_at`; built
        once, since building it (and its cache key) cost more than executing it for a small batch."""
        stmt = _dialect_insert(self._dialect, self._table)
        if stmt is None:
            return None
        kept = {self.id_field, "committed_at"}
        replace = {c.name: stmt.excluded[c.name] for c in self._table.c if c.name not in kept}
        return stmt.on_conflict_do_update(index_elements=[self._pk], set_=replace)

    def delete(self, key: str) -> bool:
        with self._tx.write() as conn:
            return conn.execute(sa_delete(self._table).where(self._pk == _key(key))).rowcount > 0

    def _insert_missing(self, conn: Connection, records: Sequence[Any]) -> int:
        """Insert the records whose id is neither stored nor earlier in `records`; returns how many."""
        fresh: dict[str, Any] = {}
        for record in records:
            self._check_type(record)
            fresh.setdefault(_key(getattr(record, self.id_field)), record)
        keys = list(fresh)
        for i in range(0, len(keys), _IN_CHUNK):
            for existing in conn.execute(select(self._pk).where(self._pk.in_(keys[i:i + _IN_CHUNK]))).scalars():
                fresh.pop(existing, None)
        for record in fresh.values():
            self._before_write(conn, record)
        if fresh:
            # ON CONFLICT: a concurrent transaction may have stored the same id since the SELECT (PostgreSQL)
            conn.execute(_insert_ignoring_taken_ids(self._dialect, self._table, self._pk),
                         [self._row(rec) for rec in fresh.values()])
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
        columns = [self._filterable[canonical]]
        for tiebreak in (self._time_col, self._pk):  # deterministic pages
            if all(tiebreak is not c for c, _ in columns):
                columns.append((tiebreak, "str" if tiebreak is self._pk else "datetime"))
        return [_sort(column, kind, query.descending, self._dialect) for column, kind in columns]

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


class SQLClientCollection(SQLCollection[r.ClientRecord], ClientCollection):
    def not_seen_since(self, moment: datetime) -> list[r.ClientRecord]:
        t = self._table
        stmt = (select(t).where(t.c.status == "online", or_(t.c.last_seen.is_(None), t.c.last_seen <= moment))
                .order_by(self._pk))
        with self._tx.read() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [self._record(row) for row in rows]


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
        stmt = stmt.order_by(self._table.c.committed_at.desc(), _sort(self._pk, "str", True, self._dialect)).limit(1)
        with self._tx.read() as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else self._record(row)


class SQLPackageCollection(SQLCollection[r.PackageRecord], PackageCollection):
    def _before_write(self, conn: Connection, record: Any) -> None:
        # Storing an active package deactivates the others: at most one is active (also a unique index).
        if record.active:
            advisory_lock(conn, _ACTIVE_PACKAGE_LOCK)
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
            advisory_lock(conn, _ACTIVE_PACKAGE_LOCK)
            conn.execute(sa_update(self._table).where(self._table.c.active == true()).values(active=False))
            conn.execute(sa_update(self._table).where(self._pk == _key(package_id)).values(active=True))
            stored = self._get(conn, package_id)
        assert stored is not None
        return stored

    def get_by_file_name(self, file_name: str) -> r.PackageRecord | None:
        stmt = (select(self._table).where(self._table.c.file_name == file_name)
                .order_by(self._table.c.committed_at.desc(), _sort(self._pk, "str", True, self._dialect)).limit(1))
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

    Opening an empty database creates the schema (all migrations; the SQLite file's folder too); a
    database at an older schema revision is refused with SchemaMismatch (see store/migration.py);
    an unreachable one with StoreUnavailable."""

    def __init__(self, url: str) -> None:
        parsed = parse_url(url)
        self.url = safe_url(parsed)
        dialect = parsed.get_backend_name()
        sqlite = dialect == "sqlite"
        self._engine = make_engine(parsed)
        try:
            prepare_schema(self._engine)
        except BaseException:
            self._engine.dispose()
            raise
        self._tx = _Tx(self._engine, sqlite, is_memory_sqlite(parsed))
        self._dialect = dialect

        by_kind = {k.kind: k for k in _KINDS}
        self._collections: dict[str, SQLCollection[Any]] = {}
        for kind, attr in _COLLECTION_ATTR.items():
            cls: type[SQLCollection[Any]] = {"client": SQLClientCollection, "model": SQLModelCollection,
                                              "package": SQLPackageCollection}.get(kind, SQLCollection)
            coll = cls(by_kind[kind], self._tx, dialect)
            self._collections[kind] = coll
            setattr(self, attr, coll)

    def __repr__(self) -> str:
        return f"SQLStore({self.url!r})"

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._dialect

    def set_write_fence(self, fence: Callable[[Connection], None] | None) -> None:
        """Run `fence(connection)` first in every write transaction from now on; when it raises, the
        transaction is rolled back and the error reaches the caller. The controller lease
        (`store/lease.py`) uses it so that a controller that lost its lease cannot write anything."""
        self._tx.fence = fence

    def collection_for(self, record: Any) -> SQLCollection[Any]:
        kind = _KIND_BY_CLASS.get(type(record))
        if kind is None:
            known = ", ".join(sorted(k.cls.__name__ for k in _KINDS))
            raise TypeError(f"{type(record).__name__} is not a store record; known: {known}")
        return self._collections[kind.kind]

    # -- settings -----------------------------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        with self._tx.read() as conn:
            return conn.execute(select(settings_table.c.value).where(settings_table.c.key == _key(key))).scalar()

    def set_setting(self, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"setting {key!r} must be a string, got {type(value).__name__}")
        key = _checked("setting", "key", "str", key, True)
        value = clean_text(value)
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
                    result = conn.execute(sa_update(sessions._table).where(sessions._pk == _key(session.session_id))
                                          .values(sessions._update_values(session)))
                    if result.rowcount == 0:
                        raise NotFound("session", session.session_id)
        except IntegrityError as exc:
            raise _integrity_error("round commit", exc) from exc

    def _insert_updates(self, conn: Connection, updates: Sequence[r.UpdateRecord]) -> None:
        coll = self._collections["update"]
        for u in updates:
            coll._check_type(u)
        # Duplicates inside the batch are not skipped: they are a caller bug and fail the commit.
        seen: set[str] = set()
        for u in updates:
            if _key(u.update_id) in seen:
                raise AlreadyExists(f"update {u.update_id!r} appears twice in the round's updates")
            seen.add(_key(u.update_id))
        # Updates already reported (event feed) are kept: ON CONFLICT skips them, even when that
        # report commits while this transaction runs (PostgreSQL does not serialise writers).
        conn.execute(_insert_ignoring_taken_ids(self._dialect, coll._table, coll._pk), [coll._row(u) for u in updates])

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


__all__ = ["SQLStore", "SQLCollection", "TABLES", "metadata", "settings_table", "lease_table", "render_item"]
