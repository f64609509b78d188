"""TLS and signed packages: combiners.grpc_secure, packages.signature.

Why: a combiner that serves gRPC over TLS registers that fact, so that the controller tells its clients
to dial it with TLS (`grpc_secure` in /clients/add) and dials it with TLS itself; a compute package may
carry an Ed25519 signature that clients configured with a public key verify before running it.
Existing combiners are plaintext (false); existing packages are unsigned (NULL).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("combiners", sa.Column("grpc_secure", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("packages", sa.Column("signature", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("packages") as batch:
        batch.drop_column("signature")
    with op.batch_alter_table("combiners") as batch:
        batch.drop_column("grpc_secure")
