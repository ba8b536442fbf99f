"""The queue in the store: claims, leases, reaping, finishing, budgets."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from service import store
from service.store.dashboard import queue_depth
from tests.service.conftest import create_test_job


async def _job(sessionmaker, n: int = 10, *, priority: int = 0, budget: str = "1") -> uuid.UUID:
    return await create_test_job(sessionmaker, n, priority=priority, budget=budget)


async def _reserved_after_reaping(sessionmaker, job_id: uuid.UUID) -> Decimal:
    """What the job still has reserved once the (already expiring) leases are reaped; what was
    reserved is charged (the calls may have been billed), as `unreconciled` request rows."""
    async with sessionmaker() as s:
        before = (await store.get_job(session=s, job_id=job_id)).reserved_usd
    await asyncio.sleep(0.05)
    async with sessionmaker() as s, s.begin():
        await store.reap_expired(session=s, max_attempts=5)
    async with sessionmaker() as s:
        job = await store.get_job(session=s, job_id=job_id)
        charged = (
            await s.execute(
                text("SELECT COALESCE(sum(cost_usd), 0) FROM requests WHERE error_class = :c"),
                {"c": store.queue.UNRECONCILED},
            )
        ).scalar_one()
        roll = await store.rollup_totals(session=s, job_id=job_id)
    assert job.spent_usd == charged == before == roll["cost_usd"]
    return job.reserved_usd


async def _claim(sessionmaker, worker: str, limit: int, lease_s: float = 60.0):
    async with sessionmaker() as s, s.begin():
        return await store.claim_tasks(session=s, worker_id=worker, limit=limit, lease_s=lease_s)


def _story(text_: str = "Once upon a time.") -> dict:
    return {"text": text_, "accepted": True, "model": "m", "provider": "simulator"}


async def test_concurrent_claims_are_disjoint_and_follow_priority(sessionmaker) -> None:
    low = await _job(sessionmaker, 30)
    high = await _job(sessionmaker, 5, priority=10)
    batches = await asyncio.gather(*[_claim(sessionmaker, f"w{i}", 7) for i in range(5)])
    ids = [t.id for b in batches for t in b]
    assert len(ids) == len(set(ids)) == 35
    first = await _claim(sessionmaker, "late", 5)
    assert first == []
    async with sessionmaker() as s:
        job = await store.get_job(session=s, job_id=high)
        assert job.status == "running" and job.started_at is not None
        owners = (
            await s.execute(
                text("SELECT count(DISTINCT lease_owner) FROM tasks WHERE status='running'")
            )
        ).scalar_one()
    assert owners == 5
    assert low != high


async def test_priority_first_and_paused_jobs_are_skipped(sessionmaker) -> None:
    low = await _job(sessionmaker, 5)
    high = await _job(sessionmaker, 5, priority=5)
    got = await _claim(sessionmaker, "w", 5)
    assert {t.job_id for t in got} == {high}
    async with sessionmaker() as s, s.begin():
        await store.transition_job(session=s, job_id=low, action="pause")
    assert await _claim(sessionmaker, "w", 5) == []
    async with sessionmaker() as s, s.begin():
        await store.transition_job(session=s, job_id=low, action="resume")
    assert {t.job_id for t in await _claim(sessionmaker, "w", 5)} == {low}


async def test_expired_leases_return_and_exhausted_attempts_fail(sessionmaker) -> None:
    job_id = await _job(sessionmaker, 2)
    for attempt in (1, 2):
        got = await _claim(sessionmaker, f"dead{attempt}", 2, lease_s=0.01)
        assert len(got) == 2 and all(t.attempts == attempt for t in got)
        await asyncio.sleep(0.05)
        async with sessionmaker() as s, s.begin():
            reaped = await store.reap_expired(session=s, max_attempts=2)
        assert reaped == ((2, 0) if attempt == 1 else (0, 2))
    async with sessionmaker() as s:
        job = await store.get_job(session=s, job_id=job_id)
        errors = (await s.execute(text("SELECT DISTINCT last_error FROM tasks"))).scalars().all()
    assert job.failed == 2 and job.status == "failed"
    assert errors == ["lease expired"]


async def test_one_reaper_at_a_time(sessionmaker) -> None:
    async with sessionmaker() as a, a.begin():
        assert await store.reap_expired(session=a, max_attempts=3) == (0, 0)
        async with sessionmaker() as b, b.begin():
            assert await store.reap_expired(session=b, max_attempts=3) is None


async def test_finish_is_once_per_task_and_story_unique(sessionmaker) -> None:
    job_id = await _job(sessionmaker, 1)
    (task,) = await _claim(sessionmaker, "w", 1)
    result = store.TaskResult(outcome="story", story=_story())
    async with sessionmaker() as s, s.begin():
        status = await store.finish_task(
            session=s, task=task, worker_id="w", result=result, max_attempts=3
        )
    assert status == "done"
    async with sessionmaker() as s, s.begin():
        again = await store.finish_task(
            session=s, task=task, worker_id="w", result=result, max_attempts=3
        )
    assert again == "lost"
    async with sessionmaker() as s:
        job = await store.get_job(session=s, job_id=job_id)
        n = (await s.execute(text("SELECT count(*) FROM stories"))).scalar_one()
    assert n == 1 and job.completed == 1 and job.status == "completed"
    with pytest.raises(IntegrityError):
        async with sessionmaker() as s, s.begin():
            await s.execute(
                text(
                    "INSERT INTO stories (task_id, job_id, text, accepted, text_hash) "
                    "VALUES (:t, :j, 'x', true, 'h')"
                ),
                {"t": task.id, "j": job_id},
            )


async def test_requests_cost_and_rollups_add_up(sessionmaker) -> None:
    from generator.engine import RequestRecord

    job_id = await _job(sessionmaker, 2)
    tasks = await _claim(sessionmaker, "w", 2)
    now = datetime.now(UTC)

    def rec(outcome: str, cost: float, status: int, attempt: int) -> RequestRecord:
        return RequestRecord(
            kind="story",
            model="m",
            provider="simulator",
            outcome=outcome,
            error_class={200: None, 429: "rate_limit"}.get(status, "bad_request"),
            status=status,
            attempt=attempt,
            prompt_tokens=10,
            completion_tokens=20 if outcome == "ok" else 0,
            cost_usd=cost,
            latency_s=0.3,
            finish_reason="stop",
            started_at=now,
        )

    results = [
        store.TaskResult(
            outcome="story",
            story=_story("A."),
            requests=[rec("error", 0.0, 429, 1), rec("ok", 0.00012345, 200, 2)],
        ),
        store.TaskResult(
            outcome="fail", error="bad_request", requests=[rec("error", 0.00000001, 400, 1)]
        ),
    ]
    for task, result in zip(tasks, results, strict=True):
        async with sessionmaker() as s, s.begin():
            await store.finish_task(
                session=s, task=task, worker_id="w", result=result, max_attempts=3
            )
    async with sessionmaker() as s:
        job = await store.get_job(session=s, job_id=job_id)
        total = (await s.execute(text("SELECT sum(cost_usd) FROM requests"))).scalar_one()
        roll = await store.rollup_totals(session=s, job_id=job_id)
    assert job.spent_usd == total == Decimal("0.000123460")
    assert roll["requests"] == 3 and roll["rate_limited"] == 1 and roll["errors"] == 2
    assert roll["cost_usd"] == total
    assert (roll["stories_accepted"], roll["tasks_failed"]) == (1, 1)
    assert job.status == "completed" and job.failed == 1 and job.n_requests == 3


async def test_budget_reservation_never_exceeds_and_reaper_returns_it(sessionmaker) -> None:
    job_id = await _job(sessionmaker, 3, budget="0.001")
    tasks = await _claim(sessionmaker, "w", 3, lease_s=0.01)
    granted = 0
    for task in tasks:
        for _ in range(5):
            async with sessionmaker() as s, s.begin():
                ok = await store.reserve_budget(
                    session=s,
                    job_id=job_id,
                    task_id=task.id,
                    worker_id="w",
                    usd=Decimal("0.0003"),
                )
            granted += ok == "ok"
        async with sessionmaker() as s, s.begin():
            other = await store.reserve_budget(
                session=s, job_id=job_id, task_id=task.id, worker_id="x", usd=Decimal(0)
            )
        assert other == "lost"
    assert granted == 3
    async with sessionmaker() as s:
        job = await store.get_job(session=s, job_id=job_id)
    assert job.reserved_usd == Decimal("0.0009")
    assert await _reserved_after_reaping(sessionmaker, job_id) == 0


async def test_prepay_covers_claimed_tasks_while_the_budget_lasts(sessionmaker) -> None:
    job_id = await _job(sessionmaker, 5, budget="0.001")
    tasks = await _claim(sessionmaker, "w", 5, lease_s=0.01)
    async with sessionmaker() as s, s.begin():  # only the lease holder pays for a task
        assert (
            await store.prepay_tasks(
                session=s, worker_id="x", amounts=[(tasks[0].id, job_id, Decimal("0.0001"))]
            )
            == {}
        )
    # 0.0003 each: the first three fit a 0.001 budget, the fourth and fifth do not.
    async with sessionmaker() as s, s.begin():
        got = await store.prepay_tasks(
            session=s, worker_id="w", amounts=[(t.id, t.job_id, Decimal("0.0003")) for t in tasks]
        )
    assert sorted(got) == sorted(t.id for t in tasks)[:3]
    assert set(got.values()) == {Decimal("0.0003")}
    async with sessionmaker() as s:
        job = await store.get_job(session=s, job_id=job_id)
        per_task = dict(
            (
                await s.execute(
                    text("SELECT id, reserved_usd FROM tasks WHERE job_id = :j"), {"j": job_id}
                )
            ).all()
        )
    assert job.reserved_usd == Decimal("0.0009")
    assert sum(per_task.values()) == Decimal("0.0009")
    # The rest of the budget still serves per-request reservations, and no more.
    last = max(t.id for t in tasks)
    async with sessionmaker() as s, s.begin():
        ok = await store.reserve_budget(
            session=s, job_id=job_id, task_id=last, worker_id="w", usd=Decimal("0.0001")
        )
        over = await store.reserve_budget(
            session=s, job_id=job_id, task_id=last, worker_id="w", usd=Decimal("0.0001")
        )
    # Other tasks' reservations are in the way: wait; more than the whole rest: exhausted.
    assert (ok, over) == ("ok", "wait")
    async with sessionmaker() as s, s.begin():
        too_much = await store.reserve_budget(
            session=s, job_id=job_id, task_id=last, worker_id="w", usd=Decimal("0.001")
        )
    assert too_much == "exhausted"
    # A dead worker's prepaid budget goes back with its expired leases.
    assert await _reserved_after_reaping(sessionmaker, job_id) == 0


async def test_dead_workers_leases_return_before_they_expire(sessionmaker) -> None:
    await _job(sessionmaker, 4)
    async with sessionmaker() as s, s.begin():
        for worker in ("dead", "alive"):
            await store.register_worker(session=s, worker_id=worker, host="h", pid=1, concurrency=2)
        await s.execute(
            text(
                "UPDATE workers SET heartbeat_at = now() - interval '10 seconds' WHERE id = 'dead'"
            )
        )
    for worker in ("dead", "alive"):
        assert len(await _claim(sessionmaker, worker, 2, lease_s=600)) == 2
    async with sessionmaker() as s, s.begin():
        assert await store.reap_expired(session=s, max_attempts=5, dead_after_s=5) == (2, 0)
    async with sessionmaker() as s:
        owners = dict(
            (await s.execute(text("SELECT status, count(*) FROM tasks GROUP BY 1"))).all()
        )
        workers = dict((await s.execute(text("SELECT id, status FROM workers"))).all())
    assert owners == {"pending": 2, "running": 2}
    assert workers == {"dead": "dead", "alive": "running"}
    # The dead worker's tasks are claimable again at once.
    assert len(await _claim(sessionmaker, "alive", 5)) == 2


async def test_exhausted_job_holds_its_tasks_until_a_raised_budget_resumes_it(
    sessionmaker,
) -> None:
    job_id = await _job(sessionmaker, 4, budget="0.001")
    (task,) = await _claim(sessionmaker, "w", 1)
    async with sessionmaker() as s, s.begin():
        await s.execute(text("UPDATE jobs SET spent_usd = budget_usd"))
        assert await store.mark_budget_exhausted(session=s, job_id=job_id)
        assert await queue_depth(session=s) == {"pending": 0, "running": 1}
    # The running task ends after the job stopped: held with the rest, not pending.
    async with sessionmaker() as s, s.begin():
        status = await store.finish_task(
            session=s, task=task, worker_id="w", result=store.TaskResult("retry"), max_attempts=3
        )
    assert status == "held"
    with pytest.raises(store.InvalidTransition, match="raise its budget"):
        async with sessionmaker() as s, s.begin():
            await store.transition_job(session=s, job_id=job_id, action="resume")
    with pytest.raises(store.jobs.BudgetTooLow, match=r"at least 0\.001"):
        async with sessionmaker() as s, s.begin():
            await store.jobs.set_job_budget(session=s, job_id=job_id, budget_usd=Decimal("0.0005"))
    async with sessionmaker() as s, s.begin():
        job = await store.jobs.set_job_budget(session=s, job_id=job_id, budget_usd=Decimal("0.002"))
        assert (job.budget_usd, job.status) == (Decimal("0.002"), "budget_exhausted")
        job = await store.transition_job(session=s, job_id=job_id, action="resume")
        assert (job.status, job.finished_at, job.last_error) == ("running", None, None)
        assert await queue_depth(session=s) == {"pending": 4, "running": 0}
    assert len(await _claim(sessionmaker, "w", 10)) == 4
    async with sessionmaker() as s, s.begin():
        await s.execute(text("UPDATE tasks SET status = 'pending', lease_owner = NULL"))
        await store.mark_budget_exhausted(session=s, job_id=job_id)
        job = await store.transition_job(session=s, job_id=job_id, action="cancel")
        left = (await s.execute(text("SELECT DISTINCT status FROM tasks"))).scalars().all()
    assert job.status == "cancelled" and left == ["cancelled"]
    with pytest.raises(store.InvalidTransition):
        async with sessionmaker() as s, s.begin():
            await store.jobs.set_job_budget(session=s, job_id=job_id, budget_usd=Decimal(1))


async def test_release_refunds_the_attempt_and_charges_calls_cut_short(sessionmaker) -> None:
    from service.work.shared_limits import TaskContext

    job_id = await _job(sessionmaker, 1)
    (task,) = await _claim(sessionmaker, "w", 1)
    async with sessionmaker() as s, s.begin():
        assert await store.prepay_tasks(
            session=s, worker_id="w", amounts=[(task.id, job_id, Decimal("0.0002"))]
        ) == {task.id: Decimal("0.0002")}
    ctx = TaskContext(job_id=job_id, task_id=task.id, worker_id="w")
    ctx.open_intents.append(Decimal("0.0002"))  # sent, never answered
    cut_short = ctx.unreconciled(model="m", provider="simulator")
    async with sessionmaker() as s, s.begin():
        status = await store.finish_task(
            session=s,
            task=task,
            worker_id="w",
            result=store.TaskResult("release", requests=cut_short),
            max_attempts=1,
        )
    async with sessionmaker() as s:
        job = await store.get_job(session=s, job_id=job_id)
        attempts = (await s.execute(text("SELECT attempts FROM tasks"))).scalar_one()
    assert status == "pending" and attempts == 0  # max_attempts=1 and still not failed
    assert (job.spent_usd, job.reserved_usd, job.n_requests) == (Decimal("0.0002"), 0, 1)


async def test_a_late_answer_replaces_the_charge_the_reaper_made(sessionmaker) -> None:
    from generator.engine import RequestRecord

    job_id = await _job(sessionmaker, 1)
    (task,) = await _claim(sessionmaker, "slow", 1, lease_s=0.01)
    async with sessionmaker() as s, s.begin():
        await store.prepay_tasks(
            session=s, worker_id="slow", amounts=[(task.id, job_id, Decimal("0.0005"))]
        )
    assert await _reserved_after_reaping(sessionmaker, job_id) == 0  # charged 0.0005
    answer = RequestRecord(
        kind="story",
        model="m",
        provider="simulator",
        outcome="ok",
        error_class=None,
        status=200,
        attempt=1,
        prompt_tokens=10,
        completion_tokens=20,
        cost_usd=0.0001,
        latency_s=0.3,
        finish_reason="stop",
        started_at=datetime.now(UTC),
    )
    result = store.TaskResult("story", story=_story(), requests=[answer])
    async with sessionmaker() as s, s.begin():
        status = await store.finish_task(
            session=s, task=task, worker_id="slow", result=result, max_attempts=3
        )
    async with sessionmaker() as s:
        job = await store.get_job(session=s, job_id=job_id)
        rows = (await s.execute(text("SELECT error_class, cost_usd FROM requests"))).all()
        roll = await store.rollup_totals(session=s, job_id=job_id)
    assert status == "lost" and rows == [(None, Decimal("0.0001"))]
    assert job.spent_usd == roll["cost_usd"] == Decimal("0.0001")
    assert job.n_requests == roll["requests"] == 1
