"""workers.providers: each worker's provider-pool snapshot, written with its heartbeat

Revision ID: 0009_worker_providers
Revises: 0008_provider_batches
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_worker_providers"
down_revision: str | None = "0008_provider_batches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("workers", sa.Column("providers", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("workers", "providers")
