"""jobs.vocabulary and the vocabularies table: jobs drawing recipes from a custom vocabulary

Revision ID: 0013_job_vocabularies
Revises: 0012_import_kept_sha
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013_job_vocabularies"
down_revision: str | None = "0012_import_kept_sha"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vocabularies",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("words", postgresql.JSONB(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    # NULL for every existing job: they drew from the packaged default, as before.
    op.add_column("jobs", sa.Column("vocabulary", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    # The older schema cannot say which words a job draws from: rather than let its unfinished
    # jobs go on with the default list, they are cancelled, saying why (their stories stay).
    op.execute(
        "UPDATE tasks SET status = 'cancelled' WHERE status IN ('pending', 'held') "
        "AND job_id IN (SELECT id FROM jobs WHERE vocabulary IS NOT NULL)"
    )
    op.execute(
        "UPDATE jobs SET status = 'cancelled', finished_at = now(), last_error = "
        "'cancelled by a schema downgrade: that version cannot use a custom vocabulary' "
        "WHERE vocabulary IS NOT NULL "
        "AND status IN ('queued', 'running', 'paused', 'budget_exhausted')"
    )
    op.drop_column("jobs", "vocabulary")
    op.drop_table("vocabularies")
