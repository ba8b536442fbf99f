"""provider_batches: Batch API jobs, each provider call's result stored before the next

Revision ID: 0008_provider_batches
Revises: 0007_diversity
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_provider_batches"
down_revision: str | None = "0007_diversity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")
MONEY = sa.Numeric(18, 9)


def upgrade() -> None:
    op.create_table(
        "provider_batches",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("key", postgresql.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column(
            "job_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="building"),
        sa.Column("task_ids", postgresql.ARRAY(sa.BigInteger()), nullable=False),
        sa.Column("reserved_usd", MONEY, nullable=False, server_default="0"),
        sa.Column("input_file_id", sa.String(200)),
        sa.Column("create_sent_at", sa.DateTime(timezone=True)),
        sa.Column("provider_batch_id", sa.String(200)),
        sa.Column("provider_status", sa.String(32)),
        sa.Column("completed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("stored", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("resubmitted", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cost_usd", MONEY, nullable=False, server_default="0"),
        sa.Column("online_cost_usd", MONEY, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text()),
        sa.Column("next_poll_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_provider_batches_job", "provider_batches", ["job_id"])
    op.create_index(
        "ix_provider_batches_open",
        "provider_batches",
        ["state"],
        postgresql_where=sa.text("state <> 'done'"),
    )


def downgrade() -> None:
    op.drop_table("provider_batches")
