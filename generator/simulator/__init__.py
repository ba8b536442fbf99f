"""An OpenAI-compatible LLM simulator: grammar stories, summaries, judge answers, limits, faults.

It stands in for a real provider in tests, benchmarks and the offline demo, and says so in
`/v1/models` (`owned_by`) and in every response's `model` field.
"""

from generator.simulator.app import create_app
from generator.simulator.config import FORCEABLE_FAULTS, SimulatorConfig
from generator.simulator.runner import run_simulator, serve

__all__ = ["FORCEABLE_FAULTS", "SimulatorConfig", "create_app", "run_simulator", "serve"]
