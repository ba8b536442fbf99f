"""Shared fixtures: the LLM simulator on a free loopback port."""

from __future__ import annotations

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
