"""The controller lease: table controller_lease (name, epoch, holder, address, acquired_at, expires_at).

Why: with PostgreSQL a second controller can stand by (`scaleout controller start --standby`) and take
over when the active one dies. The row says which controller is active until when; its epoch grows with
every take-over, and every write transaction of a controller checks it first (store/lease.py), so a
controller that lost the lease can no longer write. Existing databases get an empty table: the first
controller to start after the upgrade takes the lease.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "controller_lease",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("controller_lease")
