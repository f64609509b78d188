"""Alembic entry point: runs the revision scripts on the connection `store/migration.py` passes in
(`config.attributes["connection"]`), or on `sqlalchemy.url` when Alembic's own CLI is used."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection

from scaleout_server.store.migration import VERSION_TABLE


def _options() -> dict[str, Any]:
    from scaleout_server.store.sql import metadata, render_item

    # batch mode: SQLite can only ALTER a table by copying it, Alembic's batch operations do that
    return {"target_metadata": metadata, "version_table": VERSION_TABLE, "render_as_batch": True,
            "compare_type": True, "render_item": render_item}


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options())
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **_options())
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from scaleout_server.store.engine import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


main()
