"""The compose stack really starts: each long-running service's command, run on this host
with exactly the environment compose would give it, passes its own healthcheck, and the
stack makes stories.

No Docker engine runs here. What is translated from container to host, and nothing else:
the host names `postgres` and `simulator` and the container ports become free loopback
ports (a real Postgres: the embedded server with compose's role and database), the
container paths (/data, /export, /tmp/worker-heartbeat) become temporary directories,
`0.0.0.0` becomes 127.0.0.1, and `tinystories` / `python` become this interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.service.conftest import embedded_server
from tests.test_compose import USER_ENV, rendered

ROOT = Path(__file__).resolve().parents[1]
STARTED_IN_ORDER = ("simulator", "api", "worker")  # depends_on order
# A healthcheck that has not passed while its process keeps running this long fails the test.
START_LIMIT_S = 240.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def translate(value: str, subs: list[tuple[str, str]]) -> str:
    for container, host in subs:
        value = value.replace(container, host)
    return value


def host_argv(argv: list[str], subs: list[tuple[str, str]], ports: dict[str, str]) -> list[str]:
    """A container command or CMD healthcheck as a host command."""
    out = []
    for i, arg in enumerate(argv):
        if i > 0 and argv[i - 1] == "--port":
            arg = ports[arg]
        out.append(translate(arg, subs))
    head = out[0]
    if head == "tinystories":
        return [sys.executable, "-m", "tinystories", *out[1:]]
    if head == "python":
        return [sys.executable, *out[1:]]
    return out


def healthcheck_argv(test: list[str], subs, ports) -> list[str]:
    kind, *rest = test
    if kind == "CMD-SHELL":
        return ["sh", "-c", translate(rest[0], subs)]
    assert kind == "CMD", test
    return host_argv(rest, subs, ports)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_stack_starts_healthy_with_composes_environment(tmp_path: Path) -> None:
    compose = rendered(yaml.safe_load((ROOT / "docker-compose.yml").read_text()), USER_ENV)
    services = compose["services"]
    api_port, sim_port = str(free_port()), str(free_port())
    ports = {"8000": api_port, "8001": sim_port}
    for name in ("data", "export", "cwd"):
        (tmp_path / name).mkdir()
    with embedded_server() as (_, info):
        import psycopg

        with psycopg.connect(info.url(driver="postgresql"), autocommit=True) as conn:
            conn.execute("CREATE ROLE tinystories LOGIN PASSWORD 'tinystories'")
            conn.execute("CREATE DATABASE tinystories OWNER tinystories")
        subs = [
            ("postgres:5432", f"{info.host}:{info.port}"),
            ("simulator:8001", f"127.0.0.1:{sim_port}"),
            ("127.0.0.1:8000", f"127.0.0.1:{api_port}"),
            ("127.0.0.1:8001", f"127.0.0.1:{sim_port}"),
            ("0.0.0.0", "127.0.0.1"),
            ("/tmp/worker-heartbeat", str(tmp_path / "worker-heartbeat")),
            ("/data", str(tmp_path / "data")),
            ("/export", str(tmp_path / "export")),
        ]
        # The host's own settings must not leak in: only what compose passes, plus a PATH.
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
        procs: list[subprocess.Popen] = []
        logs: dict[str, Path] = {}
        try:
            for name in STARTED_IN_ORDER:
                service = services[name]
                env = dict(base)
                for key, value in (service.get("environment") or {}).items():
                    env[key] = translate(str(value), subs)
                logs[name] = tmp_path / f"{name}.log"
                with open(logs[name], "wb") as log:
                    proc = subprocess.Popen(
                        host_argv(service["command"], subs, ports),
                        env=env,
                        cwd=tmp_path / "cwd",
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                procs.append(proc)
                probe = healthcheck_argv(service["healthcheck"]["test"], subs, ports)
                started = time.monotonic()
                while subprocess.run(probe, capture_output=True, env=base).returncode != 0:
                    assert proc.poll() is None, (
                        f"{name} exited with {proc.returncode}:\n{logs[name].read_text()[-3000:]}"
                    )
                    assert time.monotonic() - started < START_LIMIT_S, (
                        f"{name} never became healthy:\n{logs[name].read_text()[-3000:]}"
                    )
                    time.sleep(0.5)

            job = _api(api_port, "POST", "/v1/jobs", {"n_stories": 3, "budget_usd": 1.0})
            assert job["simulator"] is True  # no key was given: the simulator, and it says so
            done = -1
            last_progress = time.monotonic()
            while job["status"] not in ("completed", "failed", "cancelled"):
                assert all(p.poll() is None for p in procs), "a service died during the job"
                assert time.monotonic() - last_progress < START_LIMIT_S, job
                time.sleep(0.5)
                job = _api(api_port, "GET", f"/v1/jobs/{job['id']}")
                finished = job["completed"] + job["rejected"] + job["failed"]
                if finished != done:
                    done, last_progress = finished, time.monotonic()
            assert job["status"] == "completed" and job["completed"] + job["rejected"] == 3
        finally:
            stop(procs)


def _api(port: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": f"Bearer {USER_ENV['TINYSTORIES_ADMIN_TOKEN']}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
