"""Initial schema: the statestore tables as they were before migrations existed (issue 2).

A frozen snapshot: it must never follow later changes to records.py/sql.py; those get new revisions.
Databases created by those earlier versions are recognised and recorded as being at this revision.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("attributes", "clients", "combiners", "commands", "metrics", "model_updates", "models", "packages",
          "predictions", "rounds", "sessions", "settings", "statuses", "telemetry", "uploads", "validations")


def _json() -> sa.types.TypeEngine[object]:
    # SQL NULL for None (not the JSON literal null); JSONB on PostgreSQL
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _ts() -> sa.DateTime:
    # timestamptz on PostgreSQL; SQLite keeps naive UTC (the store converts)
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "attributes",
        sa.Column("attribute_id", sa.String(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False, index=True),
        sa.Column("key", sa.String(), nullable=False, index=True),
        sa.Column("value", _json(), nullable=True),
        sa.Column("timestamp", _ts(), nullable=False, index=True),
        sa.PrimaryKeyConstraint("attribute_id")
    )

    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False, index=True),
        sa.Column("combiner_id", sa.String(), nullable=True, index=True),
        sa.Column("status", sa.String(), nullable=False, index=True),
        sa.Column("package", sa.Text(), nullable=False),
        sa.Column("client_version", sa.Text(), nullable=True),
        sa.Column("preferred_combiner", sa.Text(), nullable=True),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.Column("package_checksum", sa.Text(), nullable=True),
        sa.Column("attributes", _json(), nullable=True),
        sa.Column("telemetry", _json(), nullable=True),
        sa.Column("last_seen", _ts(), nullable=True),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("client_id")
    )

    op.create_table(
        "combiners",
        sa.Column("combiner_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False, index=True),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("port", sa.BigInteger(), nullable=False),
        sa.Column("public_hostname", sa.Text(), nullable=True),
        sa.Column("status", sa.String(), nullable=False, index=True),
        sa.Column("load", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", _ts(), nullable=True),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("combiner_id")
    )

    op.create_table(
        "commands",
        sa.Column("command_id", sa.String(), nullable=False),
        sa.Column("command_type", sa.Text(), nullable=False),
        sa.Column("parameters", _json(), nullable=True),
        sa.Column("client_ids", _json(), nullable=True),
        sa.Column("status", sa.String(), nullable=False, index=True),
        sa.Column("results", _json(), nullable=True),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("command_id")
    )

    op.create_table(
        "metrics",
        sa.Column("metric_id", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False, index=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("sender_client_id", sa.String(), nullable=True, index=True),
        sa.Column("sender_name", sa.String(), nullable=True, index=True),
        sa.Column("sender_role", sa.String(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=True),
        sa.Column("model_id", sa.String(), nullable=True, index=True),
        sa.Column("round_id", sa.String(), nullable=True, index=True),
        sa.Column("session_id", sa.String(), nullable=True, index=True),
        sa.Column("timestamp", _ts(), nullable=False, index=True),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.PrimaryKeyConstraint("metric_id")
    )

    op.create_table(
        "model_updates",
        sa.Column("update_id", sa.String(), nullable=False),
        sa.Column("round_id", sa.String(), nullable=False, index=True),
        sa.Column("session_id", sa.String(), nullable=False, index=True),
        sa.Column("client_id", sa.String(), nullable=False, index=True),
        sa.Column("model_id", sa.String(), nullable=True, index=True),
        sa.Column("correlation_id", sa.String(), nullable=True, index=True),
        sa.Column("num_examples", sa.Float(), nullable=False),
        sa.Column("meta", _json(), nullable=True),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.PrimaryKeyConstraint("update_id")
    )

    op.create_table(
        "models",
        sa.Column("model_id", sa.String(), nullable=False),
        sa.Column("parent_model", sa.String(), nullable=True, index=True),
        sa.Column("session_id", sa.String(), nullable=True, index=True),
        sa.Column("round_id", sa.String(), nullable=True, index=True),
        sa.Column("name", sa.String(), nullable=True, index=True),
        sa.Column("helper_type", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("checksum", sa.Text(), nullable=True),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.PrimaryKeyConstraint("model_id")
    )

    op.create_table(
        "packages",
        sa.Column("package_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False, index=True),
        sa.Column("file_name", sa.String(), nullable=False, index=True),
        sa.Column("storage_file_name", sa.Text(), nullable=False),
        sa.Column("checksum", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("helper", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.PrimaryKeyConstraint("package_id"),
        # at most one active package
        sa.Index("uq_packages_one_active", "active", unique=True,
                 sqlite_where=sa.text("active = 1"), postgresql_where=sa.text("active = true")),
    )

    op.create_table(
        "predictions",
        sa.Column("prediction_record_id", sa.String(), nullable=False),
        sa.Column("prediction_id", sa.String(), nullable=False, index=True),
        sa.Column("model_id", sa.String(), nullable=False, index=True),
        sa.Column("sender_client_id", sa.String(), nullable=True, index=True),
        sa.Column("sender_name", sa.String(), nullable=True, index=True),
        sa.Column("sender_role", sa.String(), nullable=False),
        sa.Column("data", _json(), nullable=True),
        sa.Column("correlation_id", sa.String(), nullable=True, index=True),
        sa.Column("timestamp", _ts(), nullable=False, index=True),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.PrimaryKeyConstraint("prediction_record_id")
    )

    op.create_table(
        "rounds",
        sa.Column("round_id", sa.String(), nullable=False),
        sa.Column("session_id", sa.String(), nullable=False, index=True),
        sa.Column("round_number", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(), nullable=False, index=True),
        sa.Column("model_id", sa.String(), nullable=True, index=True),
        sa.Column("new_model_id", sa.Text(), nullable=True),
        sa.Column("round_config", _json(), nullable=True),
        sa.Column("round_data", _json(), nullable=True),
        sa.Column("combiners", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("round_id"),
        sa.UniqueConstraint("session_id", "round_number", name="uq_rounds_session_round_number")
    )

    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False, index=True),
        sa.Column("status", sa.String(), nullable=False, index=True),
        sa.Column("session_config", _json(), nullable=True),
        sa.Column("seed_model_id", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("session_id")
    )

    op.create_table(
        "settings",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("key")
    )

    op.create_table(
        "statuses",
        sa.Column("status_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False, index=True),
        sa.Column("sender_client_id", sa.String(), nullable=True, index=True),
        sa.Column("sender_name", sa.String(), nullable=True, index=True),
        sa.Column("sender_role", sa.String(), nullable=False),
        sa.Column("log_level", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=True),
        sa.Column("correlation_id", sa.String(), nullable=True, index=True),
        sa.Column("session_id", sa.String(), nullable=True, index=True),
        sa.Column("round_id", sa.String(), nullable=True, index=True),
        sa.Column("data", _json(), nullable=True),
        sa.Column("timestamp", _ts(), nullable=False, index=True),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.PrimaryKeyConstraint("status_id")
    )

    op.create_table(
        "telemetry",
        sa.Column("telemetry_id", sa.String(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False, index=True),
        sa.Column("key", sa.String(), nullable=False, index=True),
        sa.Column("value", _json(), nullable=True),
        sa.Column("timestamp", _ts(), nullable=False, index=True),
        sa.PrimaryKeyConstraint("telemetry_id")
    )

    op.create_table(
        "uploads",
        sa.Column("upload_id", sa.String(), nullable=False),
        sa.Column("file_name", sa.String(), nullable=False, index=True),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("chunk_size", sa.BigInteger(), nullable=False),
        sa.Column("received_bytes", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(), nullable=False, index=True),
        sa.Column("file_token", sa.Text(), nullable=True),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.PrimaryKeyConstraint("upload_id")
    )

    op.create_table(
        "validations",
        sa.Column("validation_id", sa.String(), nullable=False),
        sa.Column("model_id", sa.String(), nullable=False, index=True),
        sa.Column("data", _json(), nullable=True),
        sa.Column("sender_client_id", sa.String(), nullable=True, index=True),
        sa.Column("sender_name", sa.String(), nullable=True, index=True),
        sa.Column("sender_role", sa.String(), nullable=False),
        sa.Column("correlation_id", sa.String(), nullable=True, index=True),
        sa.Column("session_id", sa.String(), nullable=True, index=True),
        sa.Column("round_id", sa.String(), nullable=True, index=True),
        sa.Column("timestamp", _ts(), nullable=False, index=True),
        sa.Column("committed_at", _ts(), nullable=False, index=True),
        sa.PrimaryKeyConstraint("validation_id")
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)  # drops its indexes too
