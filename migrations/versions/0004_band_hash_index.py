"""story_bands: one column key with a hash index (band keys already encode their band)

Revision ID: 0004_band_hash_index
Revises: 0003_dedup_indexer
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_band_hash_index"
down_revision: str | None = "0003_dedup_indexer"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # band_keys() mixes the band number into each key, so (band_no, band_hash) matches exactly
    # what band_hash alone matches; an equality-only hash index is cheaper to probe and to grow
    # than the three-column btree.
    op.drop_constraint("story_bands_pkey", "story_bands", type_="primary")
    op.drop_column("story_bands", "band_no")
    op.create_index(
        "ix_story_bands_band_hash", "story_bands", ["band_hash"], postgresql_using="hash"
    )


def downgrade() -> None:
    # The old layout needs each key's band number, which the keys do not give back: empty the
    # index and let `tinystories dedup` check every story again.
    op.drop_index("ix_story_bands_band_hash", table_name="story_bands", postgresql_using="hash")
    op.execute("TRUNCATE story_bands, story_hashes, story_signatures")
    op.execute(
        "UPDATE stories SET dedup_status = NULL, dedup_cluster_id = NULL "
        "WHERE dedup_status IS NOT NULL"
    )
    op.add_column("story_bands", sa.Column("band_no", sa.SmallInteger(), nullable=False))
    op.create_primary_key("story_bands_pkey", "story_bands", ["band_no", "band_hash", "story_id"])
