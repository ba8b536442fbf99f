"""Process helpers of the service benchmark: spawn, pause, stop and measure the CPU of the
API, worker and simulator processes it runs (kept apart so bench_service.py reads as the
experiment)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import psutil

TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(url: str, home: Path, sim_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(
        {
            "DATABASE_URL": url,
            "TINYSTORIES_HOME": str(home),
            "TINYSTORIES_ADMIN_TOKEN": TOKEN,
            "TINYSTORIES_SIMULATOR_BASE_URL": sim_url,
        }
    )
    env.update(extra)
    return env


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "service", *args],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def cpu_s(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def tree_cpu_s(pid: int) -> float:
    """CPU of a process and its live children (Postgres backends, simulator)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    return sum(cpu_s(p.pid) for p in procs)


def stop(procs: list[subprocess.Popen], timeout: float = 30) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def hold(procs: list[subprocess.Popen], url: str | None = None) -> None:
    """SIGSTOP, but never in the middle of a transaction: a paused holder of row or advisory
    locks would stall the others (with `url`, checked by the workers' application_name)."""
    for p in procs:
        while True:
            os.kill(p.pid, signal.SIGSTOP)
            if url is None or not in_transaction(url, p.pid):
                break
            os.kill(p.pid, signal.SIGCONT)
            time.sleep(0.01)


def in_transaction(url: str, pid: int) -> bool:
    import psycopg

    from service.store.exports import libpq_url

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state <> 'idle'",
            (f"tinystories-worker:{pid}",),
        ).fetchone()
    return bool(row and row[0])


def release(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        os.kill(p.pid, signal.SIGCONT)


def listener_pid(base_url: str) -> int:
    """The child process listening on the port of `base_url` (the simulator)."""
    port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    for child in psutil.Process().children():
        try:
            conns = child.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.laddr and c.laddr.port == port for c in conns):
            return child.pid
    raise SystemExit(f"no process listens on {base_url}")


def start_simulators(configs: list) -> tuple[list[str], ExitStack]:
    """Start simulator processes in parallel; returns their URLs and a stack that stops them."""
    from generator.simulator import run_simulator

    stack = ExitStack()
    cms = [run_simulator(c, subprocess_mode=True) for c in configs]
    urls: list[str | None] = [None] * len(cms)
    errors: list[BaseException] = []

    def enter(i: int) -> None:
        try:
            urls[i] = cms[i].__enter__()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enter, args=(i,)) for i in range(len(cms))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for cm, u in zip(cms, urls, strict=True):
        if u is not None:
            stack.push(cm.__exit__)
    if errors:
        stack.close()
        raise errors[0]
    return [u for u in urls if u is not None], stack


class Service:
    """An API process on one database, and the worker processes started against it."""

    def __init__(self, url: str, home: Path, sim_url: str, model: str) -> None:
        import httpx

        self.url = url
        self.model = model
        self.port = free_port()
        self.env = base_env(url, home, sim_url, TINYSTORIES_PORT=str(self.port))
        self.home = home
        self.api = spawn(["serve"], self.env, home / "api.log")
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )

    def healthy(self) -> bool:
        import httpx

        if self.api.poll() is not None:
            raise SystemExit(f"the API exited; see {self.home / 'api.log'}")
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def workers(self, n: int, concurrency: int, **env: str) -> list[subprocess.Popen]:
        procs = []
        for i in range(n):
            log = self.home / f"worker-{time.monotonic_ns()}-{i}.log"
            args = ["worker", "--concurrency", str(concurrency)]
            procs.append(spawn(args, {**self.env, **env}, log))
            procs[-1].log = log  # type: ignore[attr-defined]
        return procs

    @staticmethod
    def started(proc: subprocess.Popen) -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"a worker exited; see {proc.log}")  # type: ignore[attr-defined]
        return b"worker started" in proc.log.read_bytes()  # type: ignore[attr-defined]

    def submit(self, n: int, seed: int) -> str:
        resp = self.http.post(
            "/v1/jobs",
            json={"n_stories": n, "budget_usd": 1000.0, "seed": seed, "model": self.model},
        )
        resp.raise_for_status()
        return resp.json()["id"]

    def job(self, job_id: str) -> dict:
        return self.http.get(f"/v1/jobs/{job_id}").json()

    def close(self) -> None:
        # Nothing is left to save at the end of a run: no graceful shutdown to wait for.
        self.api.kill()
        self.api.wait()


def watch_job(url: str, job_id: str, start: float, timeout: float = 1800) -> dict[str, float]:
    """Poll the database until the job has ended and each accepted story of it is checked for
    near-duplicates; monotonic seconds from `start` to each, and the counts."""
    import psycopg

    from service.store.exports import libpq_url

    out: dict[str, float] = {}
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        while True:
            status, made, failed, unchecked = conn.execute(
                "SELECT j.status, j.completed + j.rejected, j.failed, (SELECT count(*) FROM "
                "stories s WHERE s.job_id = j.id AND s.accepted AND s.dedup_status IS NULL) "
                "FROM jobs j WHERE j.id = %s",
                (job_id,),
            ).fetchone()
            now = time.monotonic() - start
            if "first_story_s" not in out and made:
                out["first_story_s"] = now
            if "stored_s" not in out and status not in ("queued", "running"):
                out["stored_s"] = now
            if "stored_s" in out and not unchecked:
                out.update(checked_s=now, made=made, failed=failed)
                return out
            if now > timeout:
                raise SystemExit(f"job {job_id} still {status} after {timeout:.0f} s")
            time.sleep(0.05)


def load_avg() -> str:
    """The 1, 5 and 15 minute load averages (the machine may run other work meanwhile)."""
    return "/".join(f"{v:.1f}" for v in os.getloadavg())
