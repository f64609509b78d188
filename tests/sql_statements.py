"""Counting the SQL statements a store sends: batching tests prove a bounded number, whatever the records."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from scaleout_server.store.base import Store


@contextmanager
def counted_statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements the store sends while the block runs (an executemany counts once)."""
    statements: list[str] = []
    engine = store._engine  # type: ignore[attr-defined]

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)
