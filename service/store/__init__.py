"""All SQL of the service, one module per concern. Callers own the transaction."""

from service.store.budget import (
    block_model,
    ensure_buckets,
    prepay_tasks,
    release_task_budget,
    reserve_budget,
    take_rate_capacity,
)
from service.store.jobs import (
    InvalidTransition,
    JobNotFound,
    create_job,
    get_job,
    job_rates,
    list_jobs,
    mark_budget_exhausted,
    transition_job,
)
from service.store.queue import (
    ClaimedTask,
    claim_tasks,
    extend_leases,
    reap_expired,
    release_tasks,
)
from service.store.results import TaskResult, finish_task, finish_tasks
from service.store.rollups import rollup_totals
from service.store.stories import StoryNotFound, get_story, list_stories
from service.store.workers import heartbeat_worker, register_worker, stop_worker

__all__ = [
    "ClaimedTask",
    "InvalidTransition",
    "JobNotFound",
    "StoryNotFound",
    "TaskResult",
    "block_model",
    "claim_tasks",
    "create_job",
    "ensure_buckets",
    "extend_leases",
    "finish_task",
    "finish_tasks",
    "get_job",
    "get_story",
    "heartbeat_worker",
    "job_rates",
    "list_jobs",
    "list_stories",
    "mark_budget_exhausted",
    "prepay_tasks",
    "reap_expired",
    "register_worker",
    "release_task_budget",
    "release_tasks",
    "reserve_budget",
    "rollup_totals",
    "stop_worker",
    "take_rate_capacity",
    "transition_job",
]
