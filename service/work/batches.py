"""Batch API jobs: tasks sent as provider batches at the batch price, results stored as stories.

One process at a time runs the batch runner (a Postgres advisory lock held on its own
connection: a killed process drops it and another worker takes over). Every step stores what
the provider returned before the next call, so any process resumes any batch:

  build   lease up to `batch_size` pending tasks of a batch job, reserve their worst case at
          the batch price (tasks the budget cannot pay for go back), one row per batch
  upload  the JSONL request file -> its file id, on the endpoint that will hold the batch
          (a pooled model's member, chosen then and stored: service.work.batch_clients)
  create  `create_sent_at` first, then the batch -> its id; a process that finds
          `create_sent_at` set but no id looks the batch up by its key instead of creating
          a second one
  poll    until the batch ends; then every task ends through the same path as an online
          story (checks, dedup hash, Instruct summary, finish_tasks): retryable failures and
          lines the provider never returned go back to pending for a later batch,
          others fail with their reason
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from generator.errors import ProviderError
from service import store
from service.store import batches as batch_store
from service.store.batches import BATCH_OWNER
from service.store.models_batch import ProviderBatch
from service.work.batch_clients import BatchClients
from service.work.batch_results import task_results

logger = logging.getLogger(__name__)

BATCH_LOCK_KEY = 0x7453_4241_5443  # "tSBATC": one batch runner across all processes
METADATA_KEY = "tinystories_batch"


class BatchRunner:
    """Moves every batch job along; call `step()` while holding the runner lock."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        processor: Any,
        clients: BatchClients,
        batch_size: int = 5_000,
        poll_s: float = 30.0,
        max_attempts: int = 5,
        max_requests: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.processor = processor
        # Clients are made on first use: the SDK is imported only when a batch job exists.
        self.clients = clients
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self.limits = {
            k: v for k, v in (("max_requests", max_requests), ("max_bytes", max_bytes)) if v
        }

    async def step(self) -> int:
        """One pass: build new batches, then move each due batch one step. Returns how many
        things changed (0: nothing to do now)."""
        changed = await self.build()
        async with self.sessionmaker() as session, session.begin():
            due = [b.id for b in await batch_store.due_batches(session=session)]
        for batch_id in due:
            changed += await self.advance(batch_id)
        return changed

    async def build(self) -> int:
        """Lease pending tasks of batch jobs into new batches, one per job and model."""
        async with self.sessionmaker() as session, session.begin():
            tasks = await store.claim_tasks(
                session=session,
                worker_id=BATCH_OWNER,
                limit=self.batch_size,
                lease_s=float(timedelta(hours=26).total_seconds()),
                mode="batch",
            )
            if not tasks:
                return 0
            amounts = [(t.id, t.job_id, self._worst_case(t)) for t in tasks]
            paid = await store.prepay_tasks(session=session, worker_id=BATCH_OWNER, amounts=amounts)
            unpaid = [t for t in tasks if t.id not in paid]
            if unpaid:
                await store.release_tasks(
                    session=session, worker_id=BATCH_OWNER, task_ids=[t.id for t in unpaid]
                )
            groups: dict[tuple[Any, str], list[Any]] = {}
            for task in tasks:
                if task.id in paid:
                    groups.setdefault((task.job_id, task.model), []).append(task)
            for (job_id, model), members in groups.items():
                await batch_store.open_batch(
                    session=session,
                    job_id=job_id,
                    model=model,
                    task_ids=[t.id for t in members],
                    reserved_usd=sum((paid[t.id] for t in members), Decimal(0)),
                )
            for job_id in {t.job_id for t in unpaid} - {job for job, _ in groups}:
                if not await batch_store.open_batches(session=session, job_id=job_id):
                    await store.mark_budget_exhausted(session=session, job_id=job_id)
        logger.info(
            "batches built tasks=%d batches=%d unpaid=%d", len(paid), len(groups), len(unpaid)
        )
        return len(groups) + len(unpaid)

    def _worst_case(self, task: Any) -> Decimal:
        from generator.prompts import render_story_prompt
        from generator.ratelimit import estimate_prompt_tokens
        from vocab import Recipe

        engine = self.processor.engines.for_task(task)
        prompt = render_story_prompt(Recipe.from_dict(task.recipe), task.template_version)
        tokens = estimate_prompt_tokens([{"role": "user", "content": prompt}])
        usd = engine.pricing.cost(task.model, tokens, task.max_tokens, batch=True)
        return store.jobs.money(usd)

    async def advance(self, batch_id: int) -> int:
        """Move one batch one step (under its row lock for the database part)."""
        async with self.sessionmaker() as session, session.begin():
            batch = await session.get(
                ProviderBatch, batch_id, with_for_update={"skip_locked": True}
            )
            if batch is None or batch.state not in batch_store.OPEN_STATES:
                return 0
            state = batch.state
            snapshot = {c: getattr(batch, c) for c in ProviderBatch.__table__.columns.keys()}
        try:
            if state == "building":
                await self._upload(snapshot)
            elif state == "uploaded":
                await self._create(snapshot)
            else:
                await self._poll(snapshot)
        except Exception as exc:
            from generator.errors import redact

            if not isinstance(exc, ProviderError | TimeoutError | OSError):
                raise
            logger.warning("batch step failed batch=%s state=%s error=%s", batch_id, state, exc)
            await self._set(
                batch_id,
                last_error=redact(str(exc))[:500],
                next_poll_at=datetime.now(UTC) + timedelta(seconds=self.poll_s),
            )
        return 1

    async def _set(self, batch_id: int, **fields: Any) -> None:
        async with self.sessionmaker() as session, session.begin():
            await batch_store.set_batch(session=session, batch_id=batch_id, **fields)

    async def _tasks(self, task_ids: list[int]) -> list[Any]:
        async with self.sessionmaker() as session:
            return await batch_store.batch_tasks(session=session, task_ids=task_ids)

    async def _upload(self, batch: dict[str, Any]) -> None:
        tasks = await self._tasks(batch["task_ids"])
        if not tasks:  # every task was taken back (lease expired): nothing to send
            await self._set(batch["id"], state="done", finished_at=datetime.now(UTC))
            return
        member = self.clients.choose(batch["model"])
        try:
            file_id = await self._upload_file(batch, tasks, member)
        except BaseException as exc:
            if member is not None:  # the member's breaker learns from it, as from a chat call
                if isinstance(exc, ProviderError):
                    member.record(exc)
                else:
                    member.breaker.release()
            raise
        if member is not None:
            member.record(None)
        await self._set(
            batch["id"],
            state="uploaded",
            input_file_id=file_id,
            member=member.name if member is not None else None,
            last_error=None,
        )

    async def _upload_file(self, batch: dict[str, Any], tasks: list[Any], member: Any) -> str:
        from generator.batch_files import BatchRequest, build_batch_files
        from generator.prompts import render_story_prompt
        from vocab import Recipe

        requests = [
            BatchRequest(
                custom_id=str(t.id),
                model=self.clients.request_model(t.model, member),
                messages=[
                    {
                        "role": "user",
                        "content": render_story_prompt(
                            Recipe.from_dict(t.recipe), t.template_version
                        ),
                    }
                ],
                max_tokens=t.max_tokens,
            )
            for t in tasks
        ]
        files = list(build_batch_files(requests, **self.limits))
        if len(files) > 1:  # over the provider's per-file limits: keep the first file's tasks
            keep = set(files[0].custom_ids)
            extra = [t.id for t in tasks if str(t.id) not in keep]
            async with self.sessionmaker() as session, session.begin():
                await store.release_tasks(session=session, worker_id=BATCH_OWNER, task_ids=extra)
                await batch_store.set_batch(
                    session=session,
                    batch_id=batch["id"],
                    task_ids=[int(i) for i in files[0].custom_ids],
                )
        file_id: str = await self.clients.client(member).upload(
            files[0], filename=f"{batch['key']}.jsonl"
        )
        return file_id

    def _client(self, batch: dict[str, Any]) -> Any:
        """The client of the endpoint that holds `batch`."""
        return self.clients.client(self.clients.member(batch["model"], batch["member"]))

    async def _create(self, batch: dict[str, Any]) -> None:
        key = str(batch["key"])
        client = self._client(batch)
        found = None
        if batch["create_sent_at"] is not None:  # a create may have reached the provider
            found = await client.find(METADATA_KEY, key)
        if found is None:
            await self._set(batch["id"], create_sent_at=datetime.now(UTC))
            found = await client.create(
                batch["input_file_id"], metadata={METADATA_KEY: key, "job": str(batch["job_id"])}
            )
        await self._set(
            batch["id"],
            state="submitted",
            provider_batch_id=found.id,
            provider_status=found.status,
            last_error=None,
            next_poll_at=datetime.now(UTC) + timedelta(seconds=self.poll_s),
        )
        logger.info("batch submitted batch=%s provider_batch_id=%s", batch["id"], found.id)

    async def _poll(self, batch: dict[str, Any]) -> None:
        client = self._client(batch)
        status = await client.retrieve(batch["provider_batch_id"])
        if not status.terminal:
            await self._set(
                batch["id"],
                provider_status=status.status,
                completed=status.completed,
                failed=status.failed,
                last_error=None,
                next_poll_at=datetime.now(UTC) + timedelta(seconds=self.poll_s),
            )
            return
        tasks = await self._tasks(batch["task_ids"])
        results = await client.results(status, [str(t.id) for t in tasks])
        items, online = await task_results(
            self.processor, tasks, results, status, provider=client.provider
        )
        # The batch's own lines (Instruct summaries are online calls, counted on the job).
        cost = sum((r.cost_usd for _, res in items for r in res.requests[:1]), 0.0)
        error = None
        if status.status != "completed":
            error = f"batch {status.status}" + (f": {status.errors[0]}" if status.errors else "")
        if results.malformed_lines:
            error = (error + "; " if error else "") + f"{results.malformed_lines} malformed lines"
        async with self.sessionmaker() as session, session.begin():
            statuses = await store.finish_tasks(
                session=session, items=items, worker_id=BATCH_OWNER, max_attempts=self.max_attempts
            )
            await batch_store.set_batch(
                session=session,
                batch_id=batch["id"],
                state="done",
                provider_status=status.status,
                completed=status.completed,
                failed=status.failed,
                stored=sum(s == "done" for s in statuses),
                resubmitted=sum(s == "pending" for s in statuses),
                cost_usd=store.jobs.money(cost),
                online_cost_usd=store.jobs.money(online),
                last_error=error,
                finished_at=datetime.now(UTC),
            )
        logger.info(
            "batch done batch=%s status=%s stored=%d back_to_queue=%d malformed_lines=%d",
            batch["id"],
            status.status,
            sum(s == "done" for s in statuses),
            sum(s == "pending" for s in statuses),
            results.malformed_lines,
        )


_ANY_BATCH_WORK = text(
    "SELECT EXISTS (SELECT 1 FROM jobs WHERE mode = 'batch' AND status IN ('queued', 'running')) "
    "OR EXISTS (SELECT 1 FROM provider_batches WHERE state <> 'done')"
)


async def batch_work_left(session: AsyncSession) -> bool:
    """Whether a batch job is running or a batch is open."""
    return bool((await session.execute(_ANY_BATCH_WORK)).scalar_one())


async def batch_loop(
    runner: BatchRunner,
    lock_sessionmaker: async_sessionmaker[AsyncSession],
    stopping: asyncio.Event,
    idle_s: float | None = None,
) -> None:
    """Run the batch runner while this process holds the runner lock; retry the lock."""
    idle_s = idle_s if idle_s is not None else min(2.0, runner.poll_s)
    while not stopping.is_set():
        try:
            async with lock_sessionmaker() as session:
                if not (await session.execute(_ANY_BATCH_WORK)).scalar_one():
                    await session.commit()
                    await _sleep(stopping, idle_s)
                    continue
                got = (
                    await session.execute(
                        text("SELECT pg_try_advisory_lock(:k)"), {"k": BATCH_LOCK_KEY}
                    )
                ).scalar_one()
                await session.commit()
                if got:
                    try:
                        while not stopping.is_set():
                            if not await runner.step():
                                if not (await session.execute(_ANY_BATCH_WORK)).scalar_one():
                                    break
                                await _sleep(stopping, idle_s)
                    finally:
                        await session.execute(
                            text("SELECT pg_advisory_unlock(:k)"), {"k": BATCH_LOCK_KEY}
                        )
                        await session.commit()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("batch runner error=%r", exc)
        await _sleep(stopping, idle_s)


async def _sleep(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        pass
