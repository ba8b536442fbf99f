"""Wiring of a worker process: database, provider, limiter, budget guard, engines."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

from cachetools import LRUCache

from service.settings import Settings
from service.work.task import DedupStoryProcessor
from service.work.worker import Worker, WorkerConfig, WorkerStats

logger = logging.getLogger(__name__)


class EngineCache:
    """One StoryEngine per prompt template version, job prices and job vocabulary, sharing
    client, limiter and budget."""

    # Engines kept: one per (template, prices, vocabulary) in use; the oldest unused goes.
    MAX_ENGINES = 64

    def __init__(self, **parts: Any) -> None:
        self.parts = parts
        self._engines: LRUCache[tuple[str, str, str], Any] = LRUCache(maxsize=self.MAX_ENGINES)

    def __call__(
        self, template_version: str, prices: dict[str, Any] | None = None, vocabulary: Any = None
    ) -> Any:
        """The engine of a task; `vocabulary` (the job's own, None: the default) is what its
        stories are checked against."""
        key = (
            template_version,
            json.dumps(prices, sort_keys=True) if prices else "",
            vocabulary.sha256 if vocabulary is not None else "",
        )
        engine = self._engines.get(key)
        if engine is None:
            from generator.checks import StoryChecker
            from generator.engine import StoryEngine

            parts = dict(self.parts)
            if prices:
                parts["pricing"] = parts["pricing"].with_prices(prices)
            if vocabulary is not None:
                config = getattr(parts.get("checker"), "config", None)
                parts["checker"] = StoryChecker(vocabulary, config)
            engine = StoryEngine(template_version=template_version, **parts)
            self._engines[key] = engine
        return engine

    def for_task(self, task: Any) -> Any:
        """The engine of a claimed task: its job's template, prices and vocabulary."""
        return self(task.template_version, task.prices, getattr(task, "vocabulary", None))


def batch_loop_for(
    settings: Settings,
    provider: Any,
    processor: Any,
    sessionmaker: Any,
    engine: Any,
    client: Any = None,
) -> Any:
    """The Batch API loop of a worker process (see service.work.batches); `client` is the
    engines' client: a PoolRouter's pools hold their models' batches too."""
    from service.work.batch_clients import BatchClients
    from service.work.batches import BatchRunner, batch_loop
    from service.work.pools import PoolRouter

    def single() -> Any:
        from generator.batch import BatchClient

        return BatchClient(
            base_url=provider.base_url, api_key=provider.api_key, provider=provider.name
        )

    pools = client.pools if isinstance(client, PoolRouter) else None
    runner = BatchRunner(
        sessionmaker=sessionmaker,
        processor=processor,
        clients=BatchClients(single, pools),
        batch_size=settings.batch_size,
        poll_s=settings.batch_poll_seconds,
        max_attempts=settings.max_attempts,
    )

    async def run(stopping: asyncio.Event) -> None:
        from service.db import make_sessionmaker

        try:
            await batch_loop(runner, make_sessionmaker(engine), stopping)
        finally:
            await runner.clients.aclose()

    return run


def worker_config(settings: Settings, **overrides: Any) -> WorkerConfig:
    """WorkerConfig from the settings."""
    values: dict[str, Any] = {
        "concurrency": settings.worker_concurrency,
        "claim_batch": settings.claim_batch,
        "lease_s": settings.lease_seconds,
        "heartbeat_s": settings.heartbeat_seconds,
        "reaper_s": settings.reaper_seconds,
        "max_attempts": settings.max_attempts,
        "shutdown_grace_s": settings.shutdown_grace_seconds,
        "heartbeat_file": settings.worker_heartbeat_file,
        "rollups": settings.rollups,
    }
    values.update(overrides)
    return WorkerConfig(**values)


async def run_worker(
    settings: Settings,
    *,
    config: WorkerConfig | None = None,
    processor_factory: Any = None,
    install_signals: bool = True,
) -> WorkerStats:
    """Run one worker until it is stopped (SIGTERM) or, with idle_exit, the queue is empty."""
    from generator.checks import StoryChecker
    from generator.pricing import PriceTable
    from generator.retry import RetryPolicy
    from service.db import make_engine, make_sessionmaker, resolve_database_url
    from service.work.provider import attach_pools, build_client, open_provider
    from service.work.shared_limits import (
        PostgresBudgetGuard,
        PostgresRateLimiter,
        limits_from_settings,
        record_request,
    )
    from vocab import default_vocabulary

    config = config or worker_config(settings)
    url = await asyncio.to_thread(resolve_database_url, settings)
    # Every worker operation goes through with_reconnect: no pre-ping round trip per checkout.
    name = f"tinystories-worker:{os.getpid()}"
    engine = make_engine(
        url, pool_size=settings.db_pool_size, pre_ping=False, application_name=name
    )
    sessionmaker = make_sessionmaker(engine)
    # Rate and budget bookkeeping commit without waiting for the WAL flush: one per request,
    # on a hot job row, and a crash of Postgres itself only loses some reservations.
    fast_engine = make_engine(
        url, pool_size=settings.db_pool_size, durable=False, pre_ping=False, application_name=name
    )
    fast_sessionmaker = make_sessionmaker(fast_engine)
    try:
        with open_provider(settings) as provider:
            client = build_client(provider, settings)
            limiter = PostgresRateLimiter(
                fast_sessionmaker,
                limits_from_settings(settings.model_limits),
                lease_s=settings.limiter_lease_seconds,
            )
            pool_snapshot = attach_pools(client, limiter)
            await limiter.setup()
            engines = EngineCache(
                client=client,
                limiter=limiter,
                pricing=PriceTable.load(),
                retry=RetryPolicy(max_attempts=settings.max_attempts),
                checker=StoryChecker(default_vocabulary()),
                on_request=record_request,
                budget=PostgresBudgetGuard(fast_sessionmaker),
            )
            # Stories are deduplicated on arrival unless a caller brings its own processor.
            processor = (processor_factory or DedupStoryProcessor)(engines)
            worker = Worker(
                sessionmaker=sessionmaker,
                processor=processor,
                config=config,
                bookkeeping=fast_sessionmaker,
                provider_name=provider.name,
                batch_loop=batch_loop_for(
                    settings, provider, processor, sessionmaker, engine, client
                ),
            )
            worker.provider_snapshot = pool_snapshot
            worker.adopt_peers = getattr(client, "adopt_peers", worker.adopt_peers)
            if install_signals:
                worker.install_signal_handlers()
            try:
                return await worker.run()
            finally:
                close = getattr(client, "aclose", None) or getattr(client, "close", None)
                if close is not None:
                    result = close()
                    if asyncio.iscoroutine(result):
                        await result
    finally:
        for eng in (engine, fast_engine):  # bounded: the database may be gone
            try:
                await asyncio.wait_for(eng.dispose(), timeout=2.0)
            except (TimeoutError, Exception) as exc:
                logger.warning("closing database connections failed error=%r", exc)
