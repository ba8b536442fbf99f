"""Commands migrate the store themselves: the head is read cheaply and agrees with alembic, a
current database costs one query, a fresh one is brought to head, an unreachable one is one
line naming DATABASE_URL."""

from __future__ import annotations

import pytest

from service.migrate import (
    DatabaseUnavailable,
    alembic_config,
    current_revision,
    ensure_schema,
    head_revision,
)
from service.pgserver import ensure_database


def test_head_from_the_files_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    assert head_revision() == ScriptDirectory.from_config(alembic_config("")).get_current_head()


def test_a_fresh_database_is_migrated_once(pg_server) -> None:
    ensure_database(pg_server.url(driver="postgresql"), "fresh_on_start")
    url = pg_server.url("fresh_on_start")
    assert current_revision(url) is None
    assert ensure_schema(url) is True
    assert current_revision(url) == head_revision()
    assert ensure_schema(url) is False  # at head: nothing to do


def test_an_unreachable_database_names_the_setting() -> None:
    with pytest.raises(DatabaseUnavailable, match=r"^DATABASE_URL: cannot connect \(") as info:
        current_revision("postgresql+psycopg://nobody@127.0.0.1:9/none")
    assert "\n" not in str(info.value)
