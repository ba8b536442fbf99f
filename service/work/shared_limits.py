"""Budgets shared through Postgres: a RateLimiter for the engine and a per-job BudgetGuard."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from generator.engine import BudgetExhausted, RequestRecord
from generator.ratelimit import ModelLimits, Permit
from service import store
from service.db import autocommit, with_reconnect
from service.store.jobs import money
from service.store.queue import UNRECONCILED

logger = logging.getLogger(__name__)


@dataclass
class _Lease:
    requests: int = 0
    tokens: float = 0.0
    has_bucket: bool | None = None
    ready_at: float = 0.0  # monotonic time from which the leased capacity may be used
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class PostgresRateLimiter:
    """RPM/TPM token buckets in `rate_buckets`, shared by every process and host.

    Each process takes a small lease of capacity (`lease_s` seconds of the model's refill rate)
    per round trip instead of one request at a time: at 6,000 RPM and 0.2 s that is one
    statement per 20 requests, while the capacity a dying process can strand stays below a
    quarter of a second's worth. The bucket itself holds at most one second of refill, so the
    sum over all processes never exceeds the limit over any minute by more than that.

    A round trip always takes a lease, even from a bucket that holds less: the bucket goes
    negative and the process waits until refill has paid for it. A saturated bucket thus costs
    one statement per lease, and processes are served in the order they asked.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        limits: Mapping[str, ModelLimits],
        *,
        lease_s: float = 0.2,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.limits = dict(limits)
        self.lease_s = lease_s
        self._leases: dict[str, _Lease] = {}
        self.stats = {"round_trips": 0, "acquired": 0, "rate_limited": 0}

    async def setup(self) -> None:
        """Create the bucket rows of the configured models."""
        async with self.sessionmaker() as session, session.begin():
            await store.ensure_buckets(
                session=session,
                limits={m: (lim.rpm, lim.tpm) for m, lim in self.limits.items()},
                burst_s=1.0,
            )

    def _want(self, model: str, need_tokens: float) -> tuple[int, float]:
        lim = self.limits.get(model, ModelLimits())
        want_r = max(1, math.ceil((lim.rpm or 60) / 60.0 * self.lease_s))
        want_t = max(need_tokens, (lim.tpm or 0) / 60.0 * self.lease_s, 0.0)
        return want_r, want_t

    async def acquire(self, *, model: str, est_tokens: int) -> Permit:
        """Wait until the shared bucket lets one request of about `est_tokens` through."""
        lease = self._leases.setdefault(model, _Lease())
        if model not in self.limits:
            return Permit(model=model, est_tokens=est_tokens, acquired_at=time.monotonic())
        lim = self.limits[model]
        # One waiter per model polls at a time (the lock); the others use what it took.
        async with lease.lock:
            while not (lease.requests >= 1 and (lim.tpm is None or lease.tokens >= est_tokens)):
                want_r, want_t = self._want(model, est_tokens - lease.tokens)

                async def take(
                    want_r: int = want_r, want_t: float = want_t
                ) -> store.budget.Grant | None:
                    async with self.sessionmaker() as session:
                        await autocommit(session)
                        return await store.take_rate_capacity(
                            session=session,
                            model=model,
                            want_requests=want_r,
                            want_tokens=want_t,
                        )

                grant = await with_reconnect(take, what="rate_take")
                self.stats["round_trips"] += 1
                if grant is None:
                    break
                if grant.requests or grant.tokens:
                    lease.requests += grant.requests
                    lease.tokens += grant.tokens
                    lease.ready_at = max(lease.ready_at, time.monotonic() + grant.wait_s)
                else:
                    await asyncio.sleep(min(max(grant.wait_s, 0.005), 1.0))
            # A lease taken ahead of refill is usable once refill has paid for it; the time is
            # kept on the lease so a waiter cancelled here does not let the next one in early.
            if (delay := lease.ready_at - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            lease.requests -= 1
            lease.tokens -= est_tokens
        self.stats["acquired"] += 1
        return Permit(model=model, est_tokens=est_tokens, acquired_at=time.monotonic())

    async def settle(
        self,
        permit: Permit,
        *,
        actual_tokens: int | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Charge the token difference locally; a 429 pauses the model for every process."""
        lease = self._leases.get(permit.model)
        if lease is not None and actual_tokens is not None:
            lease.tokens += permit.est_tokens - actual_tokens
        if status == 429 and permit.model in self.limits:
            self.stats["rate_limited"] += 1
            pause = retry_after if retry_after and retry_after > 0 else 1.0

            async def block() -> None:
                async with self.sessionmaker() as session, session.begin():
                    await store.block_model(session=session, model=permit.model, seconds=pause)

            await with_reconnect(block, what="rate_block")
            if lease is not None:
                lease.requests = 0


class LeaseLost(Exception):
    """The task's lease expired and went to another worker: stop working on it."""


class BudgetWait(BudgetExhausted):
    """Only other tasks' in-flight reservations are in the way: give the task back, try later."""


class BudgetShort(BudgetExhausted):
    """What the job has left cannot pay for this request's worst case (maybe a smaller one)."""

    def __init__(self, message: str, usd: Decimal) -> None:
        super().__init__(message)
        self.usd = usd


@dataclass
class TaskContext:
    """What the current task's provider calls add up to (one per asyncio task)."""

    job_id: uuid.UUID
    task_id: int
    worker_id: str
    requests: list[RequestRecord] = field(default_factory=list)
    reserved: Decimal = Decimal(0)
    prepaid: Decimal = Decimal(0)  # reserved at claim time, not yet drawn on
    exhausted: bool = False
    # Worst cases reserved for calls that have not been answered (recorded) yet: the intents a
    # cut-short attempt is charged for, since the provider may bill them anyway.
    open_intents: list[Decimal] = field(default_factory=list)
    # (worst case, reservation, factor) of this task's story calls (StoryProcessor.plan).
    plan: tuple[float, Decimal, Decimal] | None = None

    def unreconciled(self, *, model: str, provider: str) -> list[RequestRecord]:
        """The open intents as request records charged at their reservation."""
        now = datetime.now(UTC)
        return [
            RequestRecord(
                kind="story",
                model=model,
                provider=provider,
                outcome="error",
                error_class=UNRECONCILED,
                status=None,
                attempt=len(self.requests) + 1 + i,
                prompt_tokens=0,
                completion_tokens=0,
                cost_usd=float(usd),
                latency_s=0.0,
                finish_reason=None,
                started_at=now,
                error="cut short before the provider answered; charged at its reservation",
            )
            for i, usd in enumerate(self.open_intents)
        ]


current_task: contextvars.ContextVar[TaskContext] = contextvars.ContextVar("current_task")


async def record_request(record: RequestRecord) -> None:
    """Engine `on_request` hook: keep every call for the task's finishing transaction."""
    ctx = current_task.get(None)
    if ctx is not None:
        ctx.requests.append(record)
        if ctx.open_intents:  # this call was answered: its intent is reconciled
            ctx.open_intents.pop(0)


class PostgresBudgetGuard:
    """Reserves each request's worst-case cost on the job row before it is sent.

    A task's first story request was reserved when the task was claimed (`TaskContext.prepaid`);
    only retries and summaries reserve here, one statement each.

    The reservation is also noted on the task row, so when a worker dies the reaper hands it
    back. Actual costs are added to `spent_usd` in the task's finishing transaction, together
    with the request rows, so a job's spend always equals the sum of its requests.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    async def reserve(self, usd: float) -> object:
        """Reserve `usd` on the current task's job or raise BudgetExhausted."""
        ctx = current_task.get()
        amount, factor = money(usd), Decimal(1)
        if ctx.plan is not None and math.isclose(usd, ctx.plan[0], rel_tol=1e-9):
            amount, factor = ctx.plan[1], ctx.plan[2]  # a story call at the job's max_tokens
        if amount <= ctx.prepaid:  # reserved with the claim: no round trip
            ctx.prepaid -= amount
            ctx.reserved += amount
            ctx.open_intents.append(amount)
            return amount

        async def reserve() -> str:
            async with self.sessionmaker() as session:
                await autocommit(session)
                return await store.reserve_budget(
                    session=session,
                    job_id=ctx.job_id,
                    task_id=ctx.task_id,
                    worker_id=ctx.worker_id,
                    usd=amount,
                    factor=factor,
                )

        outcome = await with_reconnect(reserve, what="budget_reserve")
        if outcome == "lost":
            raise LeaseLost(f"task {ctx.task_id} is no longer leased to this worker")
        if outcome == "wait":
            raise BudgetWait(f"job {ctx.job_id}: {amount} USD waits for in-flight reservations")
        if outcome == "exhausted":
            ctx.exhausted = True
            raise BudgetShort(f"job {ctx.job_id} cannot reserve {amount} USD", amount)
        ctx.reserved += amount
        ctx.open_intents.append(amount)
        return amount

    async def settle(self, token: object, actual_usd: float) -> None:
        """Nothing to write yet: the finishing transaction releases and charges together.

        The call's intent stays open until its request is recorded (record_request): a call
        cut short (cancelled, crashed) is charged at its reservation.
        """
        del token, actual_usd


def limits_from_settings(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, ModelLimits]:
    """TINYSTORIES_MODEL_LIMITS as ModelLimits."""
    return {
        model: ModelLimits(rpm=values.get("rpm"), tpm=values.get("tpm"))
        for model, values in raw.items()
    }
