"""story_hashes.text_hash as 32 raw bytes; story_bands under a (band_hash, story_id) btree;
no index on stories.text_hash

Revision ID: 0010_compact_dedup_index
Revises: 0009_worker_providers
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_compact_dedup_index"
down_revision: str | None = "0009_worker_providers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The sha256 as bytea: 33 bytes a row instead of 65, in the table and its primary key. A
    # value that is not hex (not written by the service) keeps its UTF-8 bytes, as
    # store.dedup.hash_bytes does.
    op.execute(
        "ALTER TABLE story_hashes ALTER COLUMN text_hash TYPE bytea USING CASE "
        "WHEN text_hash ~ '^([0-9a-fA-F]{2})*$' THEN decode(text_hash, 'hex') "
        "ELSE convert_to(text_hash, 'UTF8') END"
    )
    # A btree holding both columns answers a batch's band lookup from the index alone (the hash
    # index points at heap rows, one random page per match) and is smaller than the hash index.
    op.drop_index("ix_story_bands_band_hash", table_name="story_bands", postgresql_using="hash")
    op.create_index("ix_story_bands_band_hash_story_id", "story_bands", ["band_hash", "story_id"])
    # No query looks stories up by hash (exact duplicates are found in story_hashes): the index
    # cost ~100 bytes and one random btree insert per story.
    op.drop_index("ix_stories_text_hash", table_name="stories")


def downgrade() -> None:
    op.create_index("ix_stories_text_hash", "stories", ["text_hash"])
    op.drop_index("ix_story_bands_band_hash_story_id", table_name="story_bands")
    op.create_index(
        "ix_story_bands_band_hash", "story_bands", ["band_hash"], postgresql_using="hash"
    )
    op.execute(
        "ALTER TABLE story_hashes ALTER COLUMN text_hash TYPE varchar(64) "
        "USING encode(text_hash, 'hex')"
    )
