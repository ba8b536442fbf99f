"""/v1/stories/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from sqlalchemy.ext.asyncio import AsyncSession

from service import store
from service.api.deps import not_found, require_token, session_dep
from service.api.schemas import StoryOut

router = APIRouter(prefix="/v1", tags=["stories"], dependencies=[Depends(require_token)])


@router.get("/stories/{story_id}", response_model=StoryOut)
async def show_story(
    story_id: int = Path(ge=1, le=2**62), session: AsyncSession = session_dep
) -> StoryOut:
    """One story with its recipe, checks and provenance."""
    try:
        story = await store.get_story(session=session, story_id=story_id)
    except store.StoryNotFound:
        raise not_found("story_id", f"story {story_id} not found") from None
    return StoryOut.model_validate(story)
