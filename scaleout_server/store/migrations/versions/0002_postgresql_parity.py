"""PostgreSQL parity: status messages unindexed TEXT; JSON columns json, not jsonb.

Why: the first schema made PostgreSQL behave differently from SQLite in two ways.
- A status record's `status` is its free-text message, and it was indexed: PostgreSQL cannot index
  a value longer than about 2.7 kB, so it refused long messages (stack traces) that SQLite kept.
  Nobody looks statuses up by message, so the index goes and the column becomes TEXT.
- JSON columns were jsonb, which reorders object keys; json keeps the text as stored, so keys come
  back in their original order, as on SQLite. (Rows stored as jsonb keep jsonb's order.)
On SQLite only the statuses table changes (it is copied: SQLite cannot ALTER a column type).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_COLUMNS = {
    "attributes": ("value",), "clients": ("attributes", "telemetry"),
    "commands": ("parameters", "client_ids", "results"), "model_updates": ("meta",), "predictions": ("data",),
    "rounds": ("round_config", "round_data", "combiners"), "sessions": ("session_config",), "statuses": ("data",),
    "telemetry": ("value",), "validations": ("data",),
}


def _json_columns(to_json: bool) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has one JSON type
    new, old = (sa.JSON(), postgresql.JSONB()) if to_json else (postgresql.JSONB(), sa.JSON())
    cast = "json" if to_json else "jsonb"
    for table, columns in JSON_COLUMNS.items():
        for column in columns:
            op.alter_column(table, column, type_=new, existing_type=old, existing_nullable=True,
                            postgresql_using=f"{column}::{cast}")


def upgrade() -> None:
    # batch: SQLite copies the table; PostgreSQL alters in place (varchar -> text needs no rewrite)
    with op.batch_alter_table("statuses") as batch:
        batch.drop_index("ix_statuses_status")
        batch.alter_column("status", type_=sa.Text(), existing_type=sa.String(), existing_nullable=False)
    _json_columns(to_json=True)


def downgrade() -> None:
    # fails on PostgreSQL if a message is now too long to index: delete or shorten those statuses first
    _json_columns(to_json=False)
    with op.batch_alter_table("statuses") as batch:
        batch.alter_column("status", type_=sa.String(), existing_type=sa.Text(), existing_nullable=False)
        batch.create_index("ix_statuses_status", ["status"])
