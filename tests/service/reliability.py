"""Helpers of the reliability tests: worker subprocesses and end-of-job invariants."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import psycopg


def worker_env(database_url: str, simulator_url: str, home: Path, **extra: str) -> dict[str, str]:
    """Environment of a worker subprocess: test database, shared simulator, fast leases."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TINYSTORIES_ADMIN_TOKEN")
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "TINYSTORIES_SIMULATOR_BASE_URL": simulator_url,
            "TINYSTORIES_HOME": str(home),
            "TINYSTORIES_LEASE_SECONDS": "2",
            "TINYSTORIES_HEARTBEAT_SECONDS": "0.5",
            "TINYSTORIES_REAPER_SECONDS": "0.5",
            "TINYSTORIES_MAX_ATTEMPTS": "12",
            "TINYSTORIES_SHUTDOWN_GRACE_SECONDS": "5",
        }
    )
    env.update(extra)
    return env


def start_worker(env: dict[str, str], log: Path, concurrency: int = 10) -> subprocess.Popen:
    """`python -m service worker` with its output in `log`."""
    handle = open(log, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "service", "worker", "--concurrency", str(concurrency)],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


def stop_all(procs: list[subprocess.Popen]) -> None:
    """SIGTERM, then SIGKILL whatever is left."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def libpq(url: str) -> str:
    """psycopg URL from the SQLAlchemy one."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def job_row(url: str, job_id: str) -> dict:
    """The job's row as a dict."""
    with psycopg.connect(libpq(url)) as conn:
        cur = conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,))
        names = [d.name for d in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))


def assert_job_consistent(url: str, job_id: str) -> dict:
    """Every task ended once, one story per done task, cost = sum of requests, under budget."""
    with psycopg.connect(libpq(url)) as conn:
        q = lambda sql: conn.execute(sql, {"j": job_id}).fetchall()  # noqa: E731
        statuses = dict(q("SELECT status, count(*) FROM tasks WHERE job_id = %(j)s GROUP BY 1"))
        doubles = q(
            "SELECT task_id FROM stories WHERE job_id = %(j)s GROUP BY task_id HAVING count(*) > 1"
        )
        orphans = q(
            "SELECT s.id FROM stories s JOIN tasks t ON t.id = s.task_id "
            "WHERE s.job_id = %(j)s AND t.status <> 'done'"
        )
        ((n_stories,),) = q("SELECT count(*) FROM stories WHERE job_id = %(j)s")
        ((accepted,),) = q("SELECT count(*) FROM stories WHERE job_id = %(j)s AND accepted")
        ((cost,),) = q("SELECT COALESCE(sum(cost_usd), 0) FROM requests WHERE job_id = %(j)s")
        ((n_requests,),) = q("SELECT count(*) FROM requests WHERE job_id = %(j)s")
        ((roll_cost, roll_req),) = q(
            "SELECT COALESCE(sum(cost_usd), 0), COALESCE(sum(requests), 0) "
            "FROM rollups_minute WHERE job_id = %(j)s"
        )
    job = job_row(url, job_id)
    assert set(statuses) <= {"done", "failed"}, statuses
    assert sum(statuses.values()) == job["n_stories"]
    assert doubles == [] and orphans == []
    assert n_stories == statuses.get("done", 0) == job["completed"] + job["rejected"]
    assert accepted == job["completed"]
    assert job["failed"] == statuses.get("failed", 0), (job["failed"], statuses)
    assert job["spent_usd"] == Decimal(cost) == Decimal(roll_cost)
    assert job["n_requests"] == n_requests == roll_req
    assert job["spent_usd"] <= job["budget_usd"]
    assert job["reserved_usd"] == 0
    assert job["status"] == "completed"
    return job
