"""Subprocess entry: `python -m generator.simulator --fd N [--workers W]` (config from env)."""

from __future__ import annotations

import argparse

import uvicorn

from generator.simulator.runner import _HTTP, _LOOP


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m generator.simulator")
    parser.add_argument("--fd", type=int, required=True, help="inherited listening socket")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        "generator.simulator.app:app_from_env",
        factory=True,
        fd=args.fd,
        workers=args.workers,
        http=_HTTP,
        loop=_LOOP,
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
