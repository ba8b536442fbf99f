"""Process orchestration for the CLI: serve (with a worker), follow a job, the demo."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.settings import Settings

logger = logging.getLogger(__name__)
FINAL = ("completed", "cancelled", "failed", "budget_exhausted")


@contextlib.contextmanager
def worker_subprocess(
    env: dict[str, str], *, concurrency: int | None, grace_s: float
) -> Iterator[subprocess.Popen]:
    """A `worker` child process, stopped with SIGTERM (then SIGKILL) on exit."""
    cmd = [sys.executable, "-m", "service", "worker"]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    proc = subprocess.Popen(cmd, env=env)
    logger.info("worker process started pid=%d", proc.pid)
    try:
        yield proc
    finally:
        stop_process(proc, grace_s + 5)


def stop_process(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM, wait, SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_forever(
    settings: Settings,
    *,
    with_worker: bool,
    concurrency: int | None,
    listener: socket.socket | None = None,
) -> None:
    """Migrate, then run uvicorn; with a worker child sharing the provider and database.

    `listener`: the bound socket from `listen` (bound here when not given)."""
    import uvicorn

    from service.api import create_app
    from service.db import resolve_database_url
    from service.logformat import quiet_polling_access_log
    from service.migrate import upgrade
    from service.work.provider import open_provider

    listener = listener or listen(settings.host, settings.port)
    url = resolve_database_url(settings)
    upgrade(url)
    app = create_app(settings, database_url=url)
    logger.info("API on http://%s:%d (dashboard: /admin)", settings.host, settings.port)
    with contextlib.ExitStack() as stack:
        if with_worker:
            env = dict(os.environ)
            env["DATABASE_URL"] = url
            if settings.uses_simulator:
                provider = stack.enter_context(open_provider(settings))
                env["TINYSTORIES_SIMULATOR_BASE_URL"] = provider.base_url
            stack.enter_context(
                worker_subprocess(
                    env, concurrency=concurrency, grace_s=settings.shutdown_grace_seconds
                )
            )
        # uvicorn re-raises SIGTERM after its shutdown; turn it into SystemExit so the worker
        # and simulator above are stopped by the ExitStack instead of being orphaned.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info")
        quiet_polling_access_log()  # after uvicorn.Config configured its loggers
        uvicorn.Server(config).run(sockets=[listener])


def listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound here so a taken port is one clear error, not uvicorn's
    log lines and exit 3 after the worker started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what uvicorn sets too
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server there? "
            "set TINYSTORIES_PORT or --port)"
        ) from None
    sock.listen(2048)
    return sock


class ListenError(RuntimeError):
    """The API's address cannot be bound."""


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def nothing_accepted(job: dict[str, Any], top: int = 3) -> str | None:
    """Why a finished job yielded no accepted story (its top rejection checks, failures and
    last error), or None when it accepted some."""
    if job["completed"] > 0:
        return None
    parts = []
    if job["rejected"]:
        by_reason = sorted(
            job.get("rejections_by_reason", {}).items(), key=lambda kv: (-kv[1], kv[0])
        )
        reasons = ", ".join(f"{name} {n}" for name, n in by_reason[:top])
        parts.append(
            f"{job['rejected']} rejected by the checks" + (f" ({reasons})" if reasons else "")
        )
    if job["failed"]:
        parts.append(f"{job['failed']} failed")
    if job.get("last_error"):
        parts.append(f"last error: {' '.join(job['last_error'].split())[:200]}")
    return (
        f"job {job['id'][:8]} ended {job['status']} with no accepted story of "
        f"{job['n_stories']}" + (": " + "; ".join(parts) if parts else "")
    )


def follow_job(
    client: Any, job_id: str, *, poll_s: float = 0.5, fail_if_empty: bool = True
) -> dict[str, Any]:
    """Progress bar until the job reaches a final state; returns the last job view.

    A job that ended with no accepted story prints why on one `error:` line and exits 1
    (unless `fail_if_empty` is False)."""
    import typer
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    job = client.show(job_id)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    ) as progress:
        bar = progress.add_task(f"job {job_id[:8]}", total=job["n_stories"], rate="")
        while True:
            job = client.show(job_id)
            done = job["completed"] + job["rejected"] + job["failed"]
            progress.update(
                bar,
                completed=done,
                rate=f"{job['requests_per_minute']:.0f} req/min ${job['cost_usd']:.4f}",
            )
            if job["status"] in FINAL:
                break
            time.sleep(poll_s)
    why = nothing_accepted(job)
    if fail_if_empty and why is not None:
        typer.echo(f"error: {why}", err=True)
        raise typer.Exit(1)
    return job


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_demo(
    settings: Settings,
    *,
    n_stories: int,
    budget_usd: float,
    keep_database: bool = False,
    server_log: Path | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Everything on one machine, one job over REST, a summary, nothing left running.

    With keep_database the embedded Postgres stays up for the next pipeline stage (export);
    with server_log the API and worker log there instead of the terminal.
    """
    import typer

    from service.api_client import ApiClient
    from service.pgserver import EmbeddedPostgres

    embedded = None if settings.database_url else EmbeddedPostgres(settings.pg_dir)
    started_pg = embedded is not None and embedded.running() is None
    port = _free_port()
    env = dict(
        os.environ if env is None else env,
        TINYSTORIES_PORT=str(port),
        TINYSTORIES_HOST="127.0.0.1",
        TINYSTORIES_HOME=str(settings.home),
    )
    log_file = open(server_log, "ab") if server_log else None
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--with-worker"],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file else None,
    )
    try:
        deadline = time.monotonic() + 120
        client = None
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit("the API server exited during startup")
            try:
                client = ApiClient.from_settings(
                    settings.model_copy(update={"api_url": f"http://127.0.0.1:{port}"})
                )
                if client.healthy():
                    break
            except Exception:
                client = None
            time.sleep(0.5)
        if client is None:
            raise SystemExit("the API server did not come up in 120 s")
        job = client.submit({"n_stories": n_stories, "budget_usd": budget_usd, "seed": 0})
        job = follow_job(client, job["id"])
        elapsed = max(
            (job["finished_at"] and _seconds(job["started_at"], job["finished_at"])) or 0.0, 1e-9
        )
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(job["rejections_by_reason"].items()))
        typer.echo(
            f"demo: status={job['status']} stories={job['completed']} "
            f"rejected={job['rejected']} ({reasons or 'none'}) failed={job['failed']} "
            f"cost=${job['cost_usd']:.4f} rate={job['completed'] / elapsed:.1f} stories/s "
            f"provider={job['provider']}"
        )
        return job
    finally:
        stop_process(server, settings.shutdown_grace_seconds + 10)
        if log_file is not None:
            log_file.close()
        if started_pg and embedded is not None and not keep_database:
            embedded.stop()


def _seconds(start: str | None, end: str | None) -> float:
    from datetime import datetime

    if not start or not end:
        return 0.0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
