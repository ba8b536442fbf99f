"""Tasks made by the claims that need them (recipe and model derived at claim); per-job
prices; a job's mode (online / batch / auto) and why it was chosen

Revision ID: 0006_lazy_tasks_job_prices
Revises: 0005_api_sessions_idempotency
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_lazy_tasks_job_prices"
down_revision: str | None = "0005_api_sessions_idempotency"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("tasks", "recipe", nullable=True)
    op.alter_column("tasks", "model", nullable=True)
    op.add_column("jobs", sa.Column("tasks_made", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE jobs SET tasks_made = n_stories")
    op.add_column("jobs", sa.Column("prices", postgresql.JSONB(), nullable=True))
    op.add_column("jobs", sa.Column("mode", sa.String(16), nullable=False, server_default="online"))
    op.add_column("jobs", sa.Column("mode_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "mode_reason")
    op.drop_column("jobs", "mode")
    op.drop_column("jobs", "prices")
    op.drop_column("jobs", "tasks_made")
    op.execute("DELETE FROM tasks WHERE recipe IS NULL OR model IS NULL")
    op.alter_column("tasks", "model", nullable=False)
    op.alter_column("tasks", "recipe", nullable=False)
