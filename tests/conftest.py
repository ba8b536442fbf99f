"""Shared fixtures: the LLM simulator, and a fake provider, on free loopback ports."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest


@pytest.fixture(scope="session")
def simulator() -> Iterator[str]:
    """Base URL (ending in /v1) of a default simulator (no limits, no latency, no faults),
    shared by the whole test session. Force a fault on one request with the request header
    `x-simulator-fault: <name>` (see generator.simulator.FORCEABLE_FAULTS)."""
    from generator.simulator import SimulatorConfig, run_simulator

    with run_simulator(SimulatorConfig(seed=0)) as base_url:
        yield base_url


@pytest.fixture
def simulator_factory() -> Iterator[Callable[..., str]]:
    """Start simulators with a custom config: `url = simulator_factory(SimulatorConfig(rpm=60))`
    (keyword arguments go to `run_simulator`, e.g. `subprocess_mode=True`). Every simulator
    started this way stops when the test ends."""
    from generator.simulator import SimulatorConfig, run_simulator

    with ExitStack() as stack:

        def start(config: SimulatorConfig | None = None, **kwargs: Any) -> str:
            return stack.enter_context(run_simulator(config or SimulatorConfig(), **kwargs))

        yield start


# answer(path, headers, body) -> (status, JSON payload or raw bytes)
Answer = Callable[[str, dict[str, str], dict[str, Any]], tuple[int, dict[str, Any] | bytes]]


@pytest.fixture
def fake_provider() -> Iterator[Callable[[Answer], tuple[str, list[dict[str, Any]]]]]:
    """An HTTP server answering with `answer(path, headers, body)`; returns (url, requests
    seen). Stands in for behaviours of real providers the simulator does not copy."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(answer: Answer) -> tuple[str, list[dict[str, Any]]]:
        seen: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen.append({"path": self.path, "headers": headers, "body": body})
                status, payload = answer(self.path, headers, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
