"""One SQLAlchemy engine per statestore URL, configured the same way for the store and for migrations.

The per-dialect details live here so the rest of the store can stay dialect-neutral:
- SQLite: WAL, a busy timeout and explicit `BEGIN` / `BEGIN IMMEDIATE` (write transactions take the
  write lock up front, so two writers never deadlock on a lock upgrade).
- PostgreSQL: a larger pool with pre-ping; read transactions run as REPEATABLE READ READ ONLY, so a
  count and the page it describes come from one snapshot, as they do on SQLite.
JSON values are serialised identically for both (NaN/Infinity become null, NUL characters become
U+FFFD), because PostgreSQL's JSONB refuses what SQLite would keep.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.pool import StaticPool

from scaleout_server.store.base import StoreUnavailable

SQLITE_BUSY_TIMEOUT_S = 10.0
PG_CONNECT_TIMEOUT_S = 10
PG_POOL_SIZE = 8
PG_MAX_OVERFLOW = 24
NUL_REPLACEMENT = "\ufffd"
SUPPORTED_SCHEMES = ("sqlite", "postgresql")


def parse_url(url: str) -> URL:
    """The parsed statestore URL; ValueError naming the accepted forms."""
    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
    except ArgumentError:
        raise ValueError(f"cannot parse statestore URL {url!r}; expected e.g. sqlite:////var/lib/scaleout/store.db "
                         "or postgresql+psycopg://user:password@host/dbname") from None
    if backend not in SUPPORTED_SCHEMES:
        raise ValueError(f"unsupported statestore URL scheme {backend!r}; supported: {', '.join(SUPPORTED_SCHEMES)}")
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver we ship
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden, for logs and messages."""
    parsed = url if isinstance(url, URL) else make_url(url)
    return parsed.render_as_string(hide_password=True)


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def make_engine(url: str | URL) -> Engine:
    """An engine for a statestore URL (see `parse_url`), with the dialect settings described above."""
    parsed = parse_url(url) if isinstance(url, str) else url
    kwargs: dict[str, Any] = {"json_serializer": json_dumps}
    if parsed.get_backend_name() == "sqlite":
        memory = is_memory_sqlite(parsed)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
        if memory:
            kwargs["poolclass"] = StaticPool  # one connection, or each would see its own empty database
        else:
            Path(parsed.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs.update(pool_size=8, max_overflow=24)
        engine = create_engine(parsed, **kwargs)
        _configure_sqlite(engine, memory)
        return engine
    connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "scaleout-server"}
    return create_engine(parsed, pool_pre_ping=True, pool_size=PG_POOL_SIZE, max_overflow=PG_MAX_OVERFLOW,
                         connect_args=connect_args, **kwargs)


def read_engine(engine: Engine) -> Engine:
    """The engine to run read-only transactions on (a consistent snapshot on PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return engine


def write_engine(engine: Engine) -> Engine:
    """The engine to run write transactions on (`BEGIN IMMEDIATE` on SQLite)."""
    return engine.execution_options(scaleout_write=True)


def advisory_lock(conn: Connection, name: str) -> None:
    """PostgreSQL: serialise the transactions that lock `name` until they end (a transaction-level advisory
    lock keyed by the name's CRC-32); a no-op on SQLite, whose write transactions are serialised anyway."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(name.encode())})


@contextmanager
def connection_errors(url: str | URL) -> Iterator[None]:
    """Turn "cannot connect" driver errors into StoreUnavailable with the (password-free) URL and a hint."""
    try:
        yield
    except OperationalError as exc:
        if not _is_connect_failure(exc):
            raise
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise StoreUnavailable(
            f"cannot connect to the statestore {safe_url(url)}: {reason}. Check store_url (SCALEOUT_STORE_URL), "
            "that the database server is running and reachable, and that the database and user exist") from None


def _is_connect_failure(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    # 08: connection exception; 28: invalid authorisation; 3D000: database does not exist; None: no server answer
    if sqlstate is None:
        return type(orig).__module__.startswith("psycopg") or "unable to open database" in str(orig)
    return sqlstate.startswith(("08", "28")) or sqlstate == "3D000"


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------


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


def _portable(value: Any) -> Any:
    """A copy without what PostgreSQL's JSONB refuses: non-finite floats (-> None) and NUL characters."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT)
    if isinstance(value, dict):
        return {(_portable(k) if isinstance(k, str) else k): _portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_portable(v) for v in value]
    if isinstance(value, (bool, int)) or value is None:
        return value
    return _portable(_json_default(value))


def json_dumps(value: Any) -> str:
    """Standard JSON, the same on every backend. The common case is one plain `json.dumps`."""
    try:
        text = json.dumps(value, default=_json_default, allow_nan=False)
    except ValueError:  # NaN or Infinity somewhere
        return json.dumps(_portable(value), default=_json_default, allow_nan=False)
    if "\\u0000" in text:
        return json.dumps(_portable(value), default=_json_default, allow_nan=False)
    return text


# ---------------------------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------------------------


def _enable_wal(cursor: Any) -> None:
    """Switch the database to WAL. The switch needs an exclusive lock and SQLite answers "database is
    locked" at once, without its busy handler, when processes open a new database together; retry."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _configure_sqlite(engine: Engine, memory: bool) -> None:
    """Pragmas per connection and explicit BEGIN / BEGIN IMMEDIATE (the driver's implicit
    transactions would let a read-then-write transaction fail on lock upgrade)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_conn.cursor()
        try:
            if not memory:
                _enable_wal(cursor)
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("scaleout_write") else "BEGIN")


__all__ = ["make_engine", "parse_url", "safe_url", "read_engine", "write_engine", "advisory_lock", "connection_errors",
           "json_dumps"]
