"""The service's end-to-end rate on a full store over the same on an empty one (bench_scale).

The same job (API, workers started after the submit, a fast simulator, dedup on arrival) runs
against the database the import filled and against a freshly migrated empty one on the same
server, alternately, so both see the same machine. The full store's band index is what the
workers' near-duplicate checks search; the empty one's is empty.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from bench_service import MODEL, job_run
from service_procs import Service, start_simulators, stop, wait_for


def service_ratio(full_url: str, empty_url: str, home: Path, n: int, rounds: int = 2) -> dict:
    """Median stories/s on each store and their ratio (full / empty)."""
    from generator.simulator import SimulatorConfig

    (sim_url,), sims = start_simulators([SimulatorConfig(seed=3)])
    rates: dict[str, list[float]] = {"full": [], "empty": []}
    with sims:
        for i in range(rounds):
            for name, url in (("empty", empty_url), ("full", full_url)):
                (home / f"svc-{name}-{i}").mkdir(parents=True, exist_ok=True)
                svc = Service(url, home / f"svc-{name}-{i}", sim_url, MODEL)
                try:
                    wait_for(svc.healthy, 120, "the API")
                    got, procs = job_run(svc, n, seed=100 + i, others={})
                    stop(procs, timeout=10)
                finally:
                    svc.close()
                rates[name].append(got["stories_per_s"])
                print(f"  service on the {name} store: {got['stories_per_s']:.1f} stories/s")
    full, empty = statistics.median(rates["full"]), statistics.median(rates["empty"])
    return {"full_per_s": full, "empty_per_s": empty, "ratio": full / empty}
