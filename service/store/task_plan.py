"""Tasks made as claims need them, and what each asks for, derived from (seed, index) alone.

A job is one row when submitted; claims make its tasks in chunks and the claiming worker
derives recipe and model here, so a 1,000,000-story job costs the API nothing per story and
the same seed still gives the same recipes and model mix.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from typing import Any

from cachetools import LRUCache, cached
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from vocab import RecipeSampler, Vocabulary

_FEW_PENDING = text(
    "SELECT count(*) < :wanted FROM (SELECT 1 FROM tasks "
    "WHERE job_id = :job_id AND status = 'pending' LIMIT :wanted) AS p"
)
# Tasks are made when a claim needs them: the next `chunk` indexes of a job, under its row lock
# (concurrent claims make disjoint ranges). Recipe and model stay NULL until claimed.
_MAKE_TASKS = text(
    """
    WITH before AS (
        SELECT id, tasks_made FROM jobs
        WHERE id = :job_id AND status IN ('queued', 'running') AND tasks_made < n_stories
        FOR UPDATE
    ), made AS (
        UPDATE jobs j SET tasks_made = LEAST(j.n_stories, j.tasks_made + :chunk)
        FROM before b WHERE j.id = b.id
        RETURNING b.tasks_made AS first, j.tasks_made AS stop
    )
    INSERT INTO tasks (job_id, index)
    SELECT :job_id, i FROM made, generate_series(made.first, made.stop - 1) AS i
    ON CONFLICT DO NOTHING
    """
)
# Tasks one top-up makes at least: ~10 ms of inserts, amortised over many claims.
MAKE_TASKS_CHUNK = 1000

# A first claim writes the derived recipe and model onto the task, so stories, request rows and
# the reaper see them like any other column.
_FILL_PLAN = text(
    "UPDATE tasks t SET recipe = u.r::jsonb, model = u.m "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:recipes AS text[]), CAST(:models AS text[])) "
    "AS u(id, r, m) WHERE t.id = u.id"
)


def pick_model(models: list[dict[str, Any]], seed: int, index: int) -> str:
    """The model of task `index`: a weighted draw that depends only on (seed, index)."""
    if len(models) == 1:
        return str(models[0]["model"])
    digest = hashlib.sha256(f"tinystories-model:{seed}:{index}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return str(rng.choices([m["model"] for m in models], [m["weight"] for m in models])[0])


SAMPLER_CACHE_SIZE = 64


def _sampler_key(
    feature_probs: dict[str, float] | None, vocabulary: Vocabulary | None = None
) -> tuple[Any, str | None]:
    features = None if feature_probs is None else tuple(sorted(feature_probs.items()))
    # Keyed by content hash: hashing the vocabulary itself would walk every word per task.
    return features, vocabulary.sha256 if vocabulary is not None else None


# Samplers by (feature probabilities, vocabulary sha256): built once, used by every claim.
@cached(LRUCache(maxsize=SAMPLER_CACHE_SIZE), key=_sampler_key)
def sampler_for(
    feature_probs: dict[str, float] | None, vocabulary: Vocabulary | None = None
) -> RecipeSampler:
    """A (cached) sampler for a job's feature probabilities over its vocabulary (None: the
    packaged default); ValueError when the probabilities are invalid."""
    return RecipeSampler(vocabulary, feature_probs=feature_probs)


def plan_task(
    *,
    seed: int,
    index: int,
    feature_probs: dict[str, float] | None,
    models: list[dict[str, Any]],
    vocabulary: Vocabulary | None = None,
) -> tuple[dict[str, Any], str]:
    """(recipe as a dict, model) of task `index` of a job (recipes from `vocabulary`, the
    job's own, or the packaged default when None)."""
    recipe = sampler_for(feature_probs, vocabulary).recipe(seed, index).to_dict()
    return recipe, pick_model(models, seed, index)


async def make_tasks_if_short(*, session: AsyncSession, job_id: uuid.UUID, wanted: int) -> None:
    """Make the job's next chunk of tasks when fewer than `wanted` are pending.

    The job row is locked before the claim's task rows: that claim skips locked tasks, so it
    never waits on a writer that holds tasks and wants the job row (the finisher's order).
    """
    params = {"job_id": job_id, "wanted": wanted}
    if (await session.execute(_FEW_PENDING, params)).scalar_one():
        chunk = max(MAKE_TASKS_CHUNK, wanted)
        await session.execute(_MAKE_TASKS, {"job_id": job_id, "chunk": chunk})


async def save_plans(
    *, session: AsyncSession, plans: list[tuple[int, dict[str, Any], str]]
) -> None:
    """Write derived (task id, recipe, model) onto their tasks."""
    if plans:
        await session.execute(
            _FILL_PLAN,
            {
                "ids": [p[0] for p in plans],
                "recipes": [json.dumps(p[1]) for p in plans],
                "models": [p[2] for p in plans],
            },
        )
