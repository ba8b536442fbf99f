"""Diversity running sums (per job and overall), each story's nearest-neighbour Jaccard, and
the story browser's indexes

Revision ID: 0007_diversity
Revises: 0006_lazy_tasks_job_prices
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_diversity"
down_revision: str | None = "0006_lazy_tasks_job_prices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGINTS = postgresql.ARRAY(sa.BigInteger())


def upgrade() -> None:
    # Nullable without a default: no table rewrite, instant on millions of stories.
    op.add_column("stories", sa.Column("nn_jaccard", sa.Float(), nullable=True))
    op.create_table(
        "diversity_stats",
        sa.Column("scope", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("stories", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("words", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("ngrams", _BIGINTS, nullable=False),
        sa.Column("hll_1", sa.LargeBinary(), nullable=False),
        sa.Column("hll_2", sa.LargeBinary(), nullable=False),
        sa.Column("hll_3", sa.LargeBinary(), nullable=False),
        sa.Column("length_hist", _BIGINTS, nullable=False),
        sa.Column("vocab_hist", _BIGINTS, nullable=False),
        sa.Column("nn_hist", _BIGINTS, nullable=False),
        sa.Column("features", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "diversity_terms",
        sa.Column("scope", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("term", sa.Text(), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_diversity_terms_top", "diversity_terms", ["scope", "kind", "count"])
    op.create_index("ix_stories_verb_id", "stories", ["verb", "id"])
    op.create_index("ix_stories_noun_id", "stories", ["noun", "id"])
    op.create_index("ix_stories_adjective_id", "stories", ["adjective", "id"])
    op.create_index(
        "ix_stories_rejected_id", "stories", ["id"], postgresql_where=sa.text("NOT accepted")
    )
    op.create_index(
        "ix_stories_duplicate_id",
        "stories",
        ["dedup_status", "id"],
        postgresql_where=sa.text("dedup_status IN ('near_duplicate', 'exact_duplicate')"),
    )
    op.create_index(
        "ix_stories_cluster",
        "stories",
        ["dedup_cluster_id", "id"],
        postgresql_where=sa.text("dedup_cluster_id IS NOT NULL"),
    )


def downgrade() -> None:
    for name in (
        "ix_stories_cluster",
        "ix_stories_duplicate_id",
        "ix_stories_rejected_id",
        "ix_stories_adjective_id",
        "ix_stories_noun_id",
        "ix_stories_verb_id",
    ):
        op.drop_index(name, table_name="stories")
    op.drop_table("diversity_terms")
    op.drop_table("diversity_stats")
    op.drop_column("stories", "nn_jaccard")
