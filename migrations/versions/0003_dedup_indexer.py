"""dedup indexer: queue index of unchecked stories, exact duplicates in the rollups

Revision ID: 0003_dedup_indexer
Revises: 0002_dataset_quality
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_dedup_indexer"
down_revision: str | None = "0002_dataset_quality"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "rollups_minute",
        sa.Column("exact_duplicates", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_index(
        "ix_stories_undeduped",
        "stories",
        ["id"],
        unique=False,
        postgresql_where=sa.text("dedup_status IS NULL AND accepted"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_stories_undeduped",
        table_name="stories",
        postgresql_where=sa.text("dedup_status IS NULL AND accepted"),
    )
    op.drop_column("rollups_minute", "exact_duplicates")
