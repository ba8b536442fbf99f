"""/v1/jobs: submit, list, show, pause, resume, cancel, and a job's stories."""

from __future__ import annotations

import functools
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from service import store
from service.api.deps import not_found, require_token, session_dep
from service.api.idempotency import IDEMPOTENCY_HEADER, earlier_result, record_result, request_hash
from service.api.schemas import (
    JobCreate,
    JobList,
    JobOut,
    JobUpdate,
    StoryOut,
    StoryPage,
    VocabularyOut,
)
from service.store.batches import batch_summary
from service.store.jobs import money
from service.store.models import Job
from service.store.rollups import duplicates_by_model
from service.store.task_plan import sampler_for
from service.store.vocabularies import save_vocabulary

JobStatus = Literal[
    "queued", "running", "paused", "completed", "cancelled", "failed", "budget_exhausted"
]

router = APIRouter(prefix="/v1", tags=["jobs"], dependencies=[Depends(require_token)])


def _unprocessable(field: str, message: str) -> HTTPException:
    return HTTPException(status_code=422, detail={"field": field, "message": message})


# The provider's batch completion window: a deadline shorter than this needs online calls.
BATCH_WINDOW_HOURS = 24.0


def choose_mode(
    body: JobCreate, *, saving_usd: float, min_saving_usd: float
) -> tuple[str, str | None]:
    """online or batch, and why when `auto` chose it. `saving_usd`: what the Batch API would
    save on the job's stories at their worst-case token counts."""
    if body.mode != "auto":
        return body.mode, None
    if body.deadline_hours is not None and body.deadline_hours < BATCH_WINDOW_HOURS:
        return "online", (
            f"auto: the deadline ({body.deadline_hours:g} h) is shorter than the batch "
            f"window ({BATCH_WINDOW_HOURS:g} h)"
        )
    if saving_usd < min_saving_usd:
        return "online", (
            f"auto: the Batch API would save at most ${saving_usd:.2f} on this job, under "
            f"${min_saving_usd:g} (TINYSTORIES_AUTO_BATCH_MIN_SAVING_USD): not worth waiting "
            f"up to {BATCH_WINDOW_HOURS:g} h"
        )
    why = "no deadline" if body.deadline_hours is None else f"deadline {body.deadline_hours:g} h"
    return "batch", (
        f"auto: {why}, so the Batch API at its discount: saves up to ${saving_usd:,.2f}"
    )


def batch_saving(
    pricing: Any, models: list[dict[str, Any]], n: int, *, max_tokens: int, template: str
) -> float:
    """What the Batch API saves on `n` stories at their worst case (the prompt's estimate plus
    `max_tokens` out), the models drawn by weight."""
    from generator.prompts import render_story_prompt
    from generator.ratelimit import estimate_prompt_tokens
    from vocab import Recipe

    recipe = Recipe(verb="jump", noun="ball", adjective="happy", features=("Dialogue",))
    prompt = render_story_prompt(recipe, template)
    tokens = estimate_prompt_tokens([{"role": "user", "content": prompt}])
    total = sum(m["weight"] for m in models)
    per_story = sum(
        m["weight"]
        / total
        * (
            pricing.cost(m["model"], tokens, max_tokens)
            - pricing.cost(m["model"], tokens, max_tokens, batch=True)
        )
        for m in models
    )
    return n * per_story


def job_prices(body: JobCreate, used: list[str]) -> dict[str, dict[str, float]]:
    """The job's own prices by model: `price` for every model it uses, `prices` over it."""
    prices: dict[str, dict[str, float]] = {}
    if body.price is not None:
        prices = {m: body.price.model_dump() for m in used}
    for name, price in (body.prices or {}).items():
        prices[name] = price.model_dump()
    return prices


@functools.cache
def _default_vocabulary_out() -> VocabularyOut:
    from vocab import default_vocabulary

    return VocabularyOut(**default_vocabulary().identity(), custom=False)


def vocabulary_out(job: Job) -> VocabularyOut:
    """The job's vocabulary as the API shows it: name, content hash, words per role."""
    if job.vocabulary is not None:
        return VocabularyOut(**job.vocabulary, custom=True)
    return _default_vocabulary_out()


def job_out(request: Request, job: Job, rates: store.jobs.JobRates | None) -> JobOut:
    """A job row as the API shows it."""
    done = job.completed + job.rejected + job.failed
    remaining = max(job.n_stories - done, 0)
    per_min = rates.stories_per_minute if rates else 0.0
    eta = None
    if job.status in ("queued", "running") and per_min > 0:
        eta = remaining / per_min * 60.0
    elif remaining == 0:
        eta = 0.0
    return JobOut(
        id=job.id,
        name=job.name,
        status=job.status,
        n_stories=job.n_stories,
        completed=job.completed,
        rejected=job.rejected,
        failed=job.failed,
        pending=remaining,
        models=job.models,
        prices=job.prices,
        mode=job.mode,
        mode_reason=job.mode_reason,
        vocabulary=vocabulary_out(job),
        instruct=job.instruct,
        summary_model=job.summary_model,
        template_version=job.template_version,
        seed=job.seed,
        priority=job.priority,
        budget_usd=float(job.budget_usd),
        cost_usd=float(job.spent_usd),
        reserved_usd=float(job.reserved_usd),
        n_requests=job.n_requests,
        prompt_tokens=job.prompt_tokens,
        completion_tokens=job.completion_tokens,
        requests_per_minute=rates.requests_per_minute if rates else 0.0,
        tokens_per_minute=rates.tokens_per_minute if rates else 0.0,
        stories_per_minute=per_min,
        eta_seconds=eta,
        provider=job.provider,
        simulator=job.provider == "simulator",
        last_error=job.last_error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


async def _one(request: Request, session: AsyncSession, job: Job) -> JobOut:
    rates = await store.job_rates(session=session, job_ids=[job.id])
    out = job_out(request, job, rates.get(job.id))
    out.rejections_by_reason = await store.jobs.rejections_by_reason(session=session, job_id=job.id)
    by_model = await duplicates_by_model(session=session, job_id=job.id)
    checked = sum(m["checked"] for m in by_model)
    out.duplicates = sum(m["duplicates"] for m in by_model)
    out.duplicate_rate = round(out.duplicates / checked, 6) if checked else 0.0
    out.duplicates_by_model = {str(m["model"]): m for m in by_model}
    if job.mode == "batch":
        out.batches = await batch_summary(session=session, job_id=job.id)
    return out


async def _get(session: AsyncSession, job_id: uuid.UUID) -> Job:
    try:
        return await store.get_job(session=session, job_id=job_id)
    except store.JobNotFound:
        raise not_found("job_id", f"job {job_id} not found") from None


JOBS_ROUTE = "POST /v1/jobs"


@router.post("/jobs", status_code=201, response_model=JobOut)
async def submit_job(
    body: JobCreate,
    request: Request,
    session: AsyncSession = session_dep,
    idempotency_key: str | None = IDEMPOTENCY_HEADER,
) -> JobOut:
    """Queue a generation job: one task per story."""
    from generator.prompts import DEFAULT_TEMPLATE_VERSION, available_versions

    fingerprint = request_hash(body)
    earlier = await earlier_result(session, JOBS_ROUTE, idempotency_key, fingerprint)
    if earlier is not None:
        return await _one(request, session, await _get(session, uuid.UUID(earlier.resource_id)))

    settings = request.app.state.settings
    pricing = request.app.state.pricing
    if body.n_stories > settings.max_job_stories:
        raise _unprocessable("n_stories", f"at most {settings.max_job_stories} stories per job")
    if body.model is not None and body.models is not None:
        raise _unprocessable("models", "give either model or models, not both")
    if body.models is not None:
        models = [{"model": m, "weight": w} for m, w in body.models.items()]
    else:
        models = [{"model": body.model or settings.story_model, "weight": 1.0}]
    summary_model = (body.summary_model or settings.summary_model) if body.instruct else None
    used = [*(x["model"] for x in models), *([summary_model] if summary_model else [])]
    prices = job_prices(body, used)
    if prices:
        pricing = pricing.with_prices(prices)
    for m in used:
        if not pricing.has(m):
            field = "summary_model" if m == summary_model else "model"
            raise _unprocessable(
                field,
                f"no price known for model {m!r}: give the job a price (price: "
                "{input, output} in USD per 1M tokens, 0 for a local model; CLI: "
                "--price-input/--price-output) or add it to TINYSTORIES_PRICING",
            )
    template_version = body.template_version or DEFAULT_TEMPLATE_VERSION
    if template_version not in available_versions("story"):
        raise _unprocessable("template_version", f"unknown template version {template_version!r}")
    max_tokens = body.max_tokens or settings.story_max_tokens
    saving = (  # only auto mode weighs it
        batch_saving(
            pricing, models, body.n_stories, max_tokens=max_tokens, template=template_version
        )
        if body.mode == "auto"
        else 0.0
    )
    mode, mode_reason = choose_mode(
        body, saving_usd=saving, min_saving_usd=settings.auto_batch_min_saving_usd
    )
    try:  # the schema checked every word; this builds it (NFC, hash) for the sampler
        vocabulary = body.vocabulary.build() if body.vocabulary is not None else None
    except ValueError as exc:
        raise _unprocessable("vocabulary.words", str(exc)) from None
    try:
        sampler_for(body.feature_probs, vocabulary)
    except ValueError as exc:
        raise _unprocessable("feature_probs", str(exc)) from None
    vocabulary_info = (
        await save_vocabulary(session=session, vocabulary=vocabulary)
        if vocabulary is not None
        else None
    )
    job = await store.create_job(
        session=session,
        job_id=uuid.uuid4(),
        fields={
            "name": body.name,
            "n_stories": body.n_stories,
            "models": models,
            "template_version": template_version,
            "feature_probs": body.feature_probs,
            "prices": prices or None,
            "mode": mode,
            "mode_reason": mode_reason,
            "vocabulary": vocabulary_info,
            "instruct": body.instruct,
            "summary_model": summary_model,
            "max_tokens": max_tokens,
            "seed": body.seed,
            "budget_usd": money(body.budget_usd),
            "priority": body.priority,
            "provider": request.app.state.provider_info["provider"],
        },
    )
    winner = await record_result(
        session, JOBS_ROUTE, idempotency_key, fingerprint, str(job.id), 201
    )
    if winner is not None:  # a concurrent retry created it first; ours was rolled back
        return await _one(request, session, await _get(session, uuid.UUID(winner.resource_id)))
    return await _one(request, session, job)


@router.get("/jobs", response_model=JobList)
async def list_jobs(
    request: Request,
    status: JobStatus | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
    id_prefix: str | None = Query(
        default=None,
        min_length=1,
        max_length=36,
        pattern="^[0-9a-fA-F-]+$",
        description="Only jobs whose id starts with this (what the CLI prints is 8 characters).",
    ),
    session: AsyncSession = session_dep,
) -> JobList:
    """Newest jobs first."""
    jobs = await store.list_jobs(session=session, status=status, limit=limit, id_prefix=id_prefix)
    rates = await store.job_rates(session=session, job_ids=[j.id for j in jobs])
    info = request.app.state.provider_info
    return JobList(
        items=[job_out(request, j, rates.get(j.id)) for j in jobs],
        provider=info["provider"],
        simulator=info["simulator"],
    )


@router.get("/jobs/{job_id}", response_model=JobOut)
async def show_job(
    job_id: uuid.UUID, request: Request, session: AsyncSession = session_dep
) -> JobOut:
    """One job with progress, cost and rates."""
    return await _one(request, session, await _get(session, job_id))


async def _transition(
    request: Request, session: AsyncSession, job_id: uuid.UUID, action: str
) -> JobOut:
    await _get(session, job_id)
    try:
        job = await store.transition_job(session=session, job_id=job_id, action=action)
    except store.InvalidTransition as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    return await _one(request, session, job)


@router.patch("/jobs/{job_id}", response_model=JobOut)
async def update_job(
    job_id: uuid.UUID, body: JobUpdate, request: Request, session: AsyncSession = session_dep
) -> JobOut:
    """Change a job's budget (raise it, then resume an exhausted job)."""
    await _get(session, job_id)
    try:
        job = await store.jobs.set_job_budget(
            session=session, job_id=job_id, budget_usd=money(body.budget_usd)
        )
    except store.InvalidTransition as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except store.jobs.BudgetTooLow as exc:
        raise _unprocessable("budget_usd", str(exc)) from None
    return await _one(request, session, job)


@router.post("/jobs/{job_id}/pause", response_model=JobOut)
async def pause_job(
    job_id: uuid.UUID, request: Request, session: AsyncSession = session_dep
) -> JobOut:
    """Stop handing out the job's tasks; in-flight ones finish."""
    return await _transition(request, session, job_id, "pause")


@router.post("/jobs/{job_id}/resume", response_model=JobOut)
async def resume_job(
    job_id: uuid.UUID, request: Request, session: AsyncSession = session_dep
) -> JobOut:
    """Continue a paused job, or an exhausted one whose budget was raised."""
    return await _transition(request, session, job_id, "resume")


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
async def cancel_job(
    job_id: uuid.UUID, request: Request, session: AsyncSession = session_dep
) -> JobOut:
    """Cancel the job's pending tasks; stored stories stay."""
    return await _transition(request, session, job_id, "cancel")


@router.get("/jobs/{job_id}/stories", response_model=StoryPage)
async def job_stories(
    job_id: uuid.UUID,
    cursor: str | None = Query(default=None, max_length=32, pattern=r"^[0-9]+$"),
    limit: int = Query(default=50, ge=1, le=500),
    accepted: bool | None = None,
    session: AsyncSession = session_dep,
) -> StoryPage:
    """A page of the job's stories; `next_cursor` is null on the last page."""
    await _get(session, job_id)
    after = int(cursor) if cursor else None
    if after is not None and after > 2**62:
        raise _unprocessable("cursor", "cursor out of range")
    stories = await store.list_stories(
        session=session, job_id=job_id, after_id=after, limit=limit, accepted=accepted
    )
    items = [StoryOut.model_validate(s) for s in stories]
    next_cursor = str(stories[-1].id) if len(stories) == limit else None
    return StoryPage(items=items, next_cursor=next_cursor)
