"""provider_batches.member: the pool member a batch lives on (NULL: the single provider)

Revision ID: 0011_batch_member
Revises: 0010_compact_dedup_index
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_batch_member"
down_revision: str | None = "0010_compact_dedup_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("provider_batches", sa.Column("member", sa.String(200), nullable=True))


def downgrade() -> None:
    op.drop_column("provider_batches", "member")
