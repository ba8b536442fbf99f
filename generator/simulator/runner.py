"""Start the simulator: in a background thread (tests) or a subprocess (benchmarks, demo)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib.util import find_spec

import httpx
import uvicorn

from generator.simulator.app import CONFIG_ENV, create_app
from generator.simulator.config import SimulatorConfig

log = logging.getLogger(__name__)

_HTTP = "httptools" if find_spec("httptools") else "h11"
_LOOP = "uvloop" if find_spec("uvloop") else "asyncio"


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _uvicorn_config(app: object, **kwargs: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=_HTTP,
        loop=_LOOP,
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=1,
        backlog=2048,
        **kwargs,
    )


def _wait_ready(base_url: str, deadline_s: float, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"simulator process exited with code {proc.returncode}")
        try:
            if httpx.get(base_url.removesuffix("/v1") + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"simulator at {base_url} did not start within {deadline_s:g} s")


@contextlib.contextmanager
def run_simulator(
    config: SimulatorConfig | None = None,
    *,
    subprocess_mode: bool = False,
    workers: int = 1,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[str]:
    """Run a simulator on a free loopback port; yields its base URL (ending in `/v1`).

    `subprocess_mode=True` gives it its own process (and core), so a benchmarked client does
    not share the GIL with it; `workers > 1` runs several server processes on one socket
    (only without rate limits or capacity: each worker would enforce its own).
    """
    config = config or SimulatorConfig()
    if workers > 1 and config.single_worker:
        raise ValueError(
            "rate limits and capacity need a single simulator worker (each enforces its own)"
        )
    sock = _bound_socket(host, port)
    base_url = f"http://{host}:{sock.getsockname()[1]}/v1"
    if subprocess_mode or workers > 1:
        env = {**os.environ, CONFIG_ENV: json.dumps(config.to_dict())}
        sock.set_inheritable(True)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "generator.simulator",
                "--fd",
                str(sock.fileno()),
                "--workers",
                str(workers),
            ],
            env=env,
            pass_fds=(sock.fileno(),),
        )
        try:
            _wait_ready(base_url, 30.0, proc)
            log.info("simulator_started mode=subprocess url=%s workers=%d", base_url, workers)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            sock.close()
        return
    server = uvicorn.Server(_uvicorn_config(create_app(config)))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="llm-simulator", daemon=True
    )
    thread.start()
    try:
        _wait_ready(base_url, 30.0)
        log.info("simulator_started mode=thread url=%s", base_url)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def serve(
    config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 8100, workers: int = 1
) -> None:
    """Run the simulator in the foreground until interrupted (`tinystories simulator`)."""
    if workers > 1:
        if config.single_worker:
            raise ValueError(
                "rate limits and capacity need a single simulator worker (each enforces its own)"
            )
        os.environ[CONFIG_ENV] = json.dumps(config.to_dict())
        uvicorn.run(
            "generator.simulator.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            http=_HTTP,
            loop=_LOOP,
            lifespan="off",
            access_log=False,
            log_level="warning",
        )
        return
    uvicorn.Server(_uvicorn_config(create_app(config), host=host, port=port)).run()
