"""`jobs submit --wait` following a job over the real API: an empty ending exits 1 with why."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import typer

from service.api_client import ApiClient
from service.supervise import follow_job, nothing_accepted
from tests.service.conftest import TEST_TOKEN


@contextlib.contextmanager
def live_api(settings: Any) -> Iterator[str]:
    """The API under uvicorn on a free port, in a thread."""
    import uvicorn

    from service.api import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _finished_job(url: str, *, accepted: int, rejections: dict[str, int], failed: int) -> str:
    """A job as the workers leave it: counters on the row, rejections in the minute rollups."""
    job_id = uuid.uuid4()
    rejected = sum(rejections.values())
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute(
            "INSERT INTO jobs (id, n_stories, models, template_version, max_tokens, seed, "
            "budget_usd, provider, status, completed, rejected, failed, last_error, "
            "started_at, finished_at) VALUES (%s, %s, '[]', 'v1', 400, 0, 1, 'openai', "
            "'completed', %s, %s, %s, %s, now(), now())",
            (
                job_id,
                accepted + rejected + failed,
                accepted,
                rejected,
                failed,
                "timeout: request timed out" if failed else None,
            ),
        )
        conn.execute(
            "INSERT INTO rollups_minute (minute, model, job_id, stories_accepted, "
            "stories_rejected, tasks_failed, rejections_by_reason) "
            "VALUES (date_trunc('minute', now()), 'llama-local', %s, %s, %s, %s, %s::jsonb)",
            (job_id, accepted, rejected, failed, psycopg.types.json.Json(rejections)),
        )
    return str(job_id)


def test_a_job_with_nothing_accepted_exits_1_naming_the_top_reasons(settings, capsys) -> None:
    url = settings.database_url
    empty = _finished_job(
        url,
        accepted=0,
        rejections={"repetition": 7, "too_short": 3, "refusal": 1, "empty": 1},
        failed=2,
    )
    some = _finished_job(url, accepted=3, rejections={"too_short": 1}, failed=0)
    with live_api(settings) as base_url:
        client = ApiClient(base_url, TEST_TOKEN)
        assert follow_job(client, some, poll_s=0.05)["completed"] == 3
        with pytest.raises(typer.Exit) as ended:
            follow_job(client, empty, poll_s=0.05)
        assert ended.value.exit_code == 1
        # The demo may look at the job itself.
        view = follow_job(client, empty, poll_s=0.05, fail_if_empty=False)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        f"error: job {empty[:8]} ended completed with no accepted story of 14: 12 rejected by "
        "the checks (repetition 7, too_short 3, empty 1); 2 failed; "
        "last error: timeout: request timed out"
    )
    assert view["rejections_by_reason"]["repetition"] == 7


def test_nothing_accepted_is_none_for_a_job_with_stories() -> None:
    job = {"id": "0" * 32, "status": "completed", "n_stories": 5, "completed": 1}
    assert nothing_accepted(job | {"rejected": 4, "failed": 0}) is None
    cancelled = {**job, "completed": 0, "rejected": 0, "failed": 0, "status": "cancelled"}
    assert nothing_accepted(cancelled) == "job 00000000 ended cancelled with no accepted story of 5"
