"""What the service talks to: the LLM provider (or the built-in simulator) and the engine."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from service.settings import Settings

logger = logging.getLogger(__name__)

SIMULATOR_BANNER = (
    "NO LLM PROVIDER CONFIGURED (OPENAI_API_KEY / OPENAI_BASE_URL unset): "
    "stories come from the built-in SIMULATOR, not a real model"
)


@dataclass(frozen=True)
class Provider:
    """Where chat requests go. `api_key` is never logged."""

    base_url: str
    api_key: str
    name: str
    simulator: bool


def provider_info(settings: Settings) -> dict[str, Any]:
    """What the API reports about the provider (no secrets)."""
    if settings.uses_simulator:
        return {"provider": "simulator", "simulator": True, "banner": SIMULATOR_BANNER}
    if settings.uses_pools:
        from service.work.pools import POOL_PROVIDER

        return {"provider": POOL_PROVIDER, "simulator": False, "banner": None}
    from generator.client import ClientConfig

    name = ClientConfig(base_url=settings.openai_base_url).provider_name
    return {"provider": name, "simulator": False, "banner": None}


@contextlib.contextmanager
def open_provider(settings: Settings) -> Iterator[Provider]:
    """The configured provider; without one, a simulator (started here unless one is given)."""
    if not settings.uses_simulator:
        from generator.client import ClientConfig

        base_url = settings.openai_base_url or "https://api.openai.com/v1"
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "none"
        name = ClientConfig(base_url=base_url).provider_name
        yield Provider(base_url=base_url, api_key=key, name=name, simulator=False)
        return
    logger.warning(SIMULATOR_BANNER)
    if settings.simulator_base_url:
        yield Provider(
            base_url=settings.simulator_base_url,
            api_key="simulator",
            name="simulator",
            simulator=True,
        )
        return
    from generator.simulator import SimulatorConfig, run_simulator

    config = SimulatorConfig(
        rpm=settings.simulator_rpm,
        tpm=settings.simulator_tpm,
        latency_median_s=settings.simulator_latency_s,
        rate_429=settings.simulator_rate_limit_rate,
        rate_500=settings.simulator_error_rate,
    )
    with run_simulator(config, subprocess_mode=True) as base_url:
        logger.warning("simulator listening base_url=%s", base_url)
        yield Provider(base_url=base_url, api_key="simulator", name="simulator", simulator=True)


def build_client(provider: Provider, settings: Settings) -> Any:
    """The OpenAI-compatible chat client; with TINYSTORIES_PROVIDERS, a router that sends
    pooled models to their pool and the others to `provider`."""
    from generator.client import ChatClient

    client = ChatClient(
        base_url=provider.base_url,
        api_key=provider.api_key,
        timeout_s=settings.request_timeout_s,
        max_connections=max(64, settings.worker_concurrency * 2),
        provider=provider.name,
    )
    if not settings.uses_pools:
        if settings.providers is not None:
            logger.warning("provider pools ignored: TINYSTORIES_SIMULATOR_ONLY is set")
        return client
    from generator.pool_config import load_pools
    from service.work.pools import PoolRouter

    pools = load_pools(settings.providers)  # checked when the settings were read
    if pools is None:
        return client
    router = PoolRouter(pools, client)
    for pool in router.pools.snapshot():
        logger.info(
            "provider pool model=%s members=%s",
            pool["model"],
            ",".join(f"{m['name']}({m['base_url']})" for m in pool["members"]),
        )
    return router


def attach_pools(client: Any, limiter: Any) -> Any:
    """Put pool members' own rpm/tpm on `limiter`'s shared buckets (before its `setup()`);
    returns what each heartbeat stores: the pools' snapshot, or None without pools."""
    from service.work.pools import PoolRouter, share_member_limits

    if not isinstance(client, PoolRouter):
        return lambda: None
    share_member_limits(client.pools, limiter)
    return client.snapshot


def run_event_loop(coro: Any) -> Any:
    """Run `coro` on uvloop when it is installed: the worker's loop is on every request's path
    and uvloop spends about half of asyncio's CPU per callback."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
