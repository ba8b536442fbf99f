"""imports.kept_sha256: sha256 of the bytes a failed import kept, so a fixed file resumes

Revision ID: 0012_import_kept_sha
Revises: 0011_batch_member
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_import_kept_sha"
down_revision: str | None = "0011_batch_member"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("imports", sa.Column("kept_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("imports", "kept_sha256")
