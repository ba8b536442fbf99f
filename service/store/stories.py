"""Story reads for the API: one story, and a job's stories with cursor pagination."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import Story


class StoryNotFound(LookupError):
    """No story with that id."""


async def get_story(*, session: AsyncSession, story_id: int) -> Story:
    """One story or StoryNotFound."""
    story = await session.get(Story, story_id)
    if story is None:
        raise StoryNotFound(str(story_id))
    return story


async def list_stories(
    *,
    session: AsyncSession,
    job_id: uuid.UUID,
    after_id: int | None = None,
    limit: int = 50,
    accepted: bool | None = None,
) -> list[Story]:
    """A page of a job's stories in id order, starting after `after_id` (keyset pagination)."""
    query = select(Story).where(Story.job_id == job_id).order_by(Story.id).limit(limit)
    if after_id is not None:
        query = query.where(Story.id > after_id)
    if accepted is not None:
        query = query.where(Story.accepted == accepted)
    return list((await session.execute(query)).scalars())
