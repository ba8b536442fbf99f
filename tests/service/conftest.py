"""Fixtures: one embedded Postgres per test session, a fresh database per test from a
migrated template, the API app with an ASGI client, a simulator."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from service import store as _store
from service.pgserver import EmbeddedPostgres, ServerInfo, ensure_database
from service.store.jobs import TaskSpec

pytest.register_assert_rewrite("tests.service.reliability")

TEST_TOKEN = "test-admin-token-9f8e7d"
# Durability is not what these tests check; without fsync the server is much faster.
FAST_PG = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


@contextlib.contextmanager
def embedded_server(extra_options: str = FAST_PG) -> Iterator[tuple[EmbeddedPostgres, ServerInfo]]:
    """A throwaway embedded server. Not under pytest's tmp dir: pytest resets that tree to
    0700, which locks out the unprivileged user Postgres runs as."""
    root = Path(tempfile.mkdtemp(prefix="tinystories-pg-"))
    server = EmbeddedPostgres(root / "pg", extra_options=extra_options)
    try:
        yield server, server.ensure_running()
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ServerInfo]:
    """One embedded Postgres for the whole session."""
    with embedded_server() as (_, info):
        yield info


@pytest.fixture(scope="session")
def template_db(pg_server: ServerInfo) -> str:
    """A database at migration head that every test database is copied from."""
    from service.migrate import upgrade

    ensure_database(pg_server.url(driver="postgresql"), "tmpl_head")
    upgrade(pg_server.url("tmpl_head"))
    return "tmpl_head"


def new_database(pg_server: ServerInfo, template: str | None) -> str:
    """CREATE DATABASE from the template; returns its SQLAlchemy URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    ensure_database(pg_server.url(driver="postgresql"), name, template=template)
    return pg_server.url(name)


@pytest.fixture
def database_url(pg_server: ServerInfo, template_db: str) -> str:
    """A fresh, migrated database for one test."""
    return new_database(pg_server, template_db)


@pytest.fixture
def empty_database_url(pg_server: ServerInfo) -> str:
    """A fresh database without any tables."""
    return new_database(pg_server, None)


@pytest_asyncio.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[object]:
    """Async session factory on the test database."""
    from service.db import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=5)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> object:
    """Service settings on the test database, simulator provider, a known admin token."""
    from service.settings import Settings

    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TINYSTORIES_ADMIN_TOKEN", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return Settings(
        database_url=database_url,
        admin_token=TEST_TOKEN,
        home=tmp_path / "home",
        _env_file=None,
    )


@pytest_asyncio.fixture
async def api(settings: object) -> AsyncIterator[httpx.AsyncClient]:
    """ASGI client of the app, lifespan run, token set."""
    from service.api import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://test",
            headers={"Authorization": f"Bearer {TEST_TOKEN}"},
        ) as client:
            yield client


@pytest.fixture(scope="session")
def simulator_url() -> Iterator[str]:
    """A fast simulator (no latency, no faults) shared by the session."""
    from generator.simulator import SimulatorConfig, run_simulator

    with run_simulator(SimulatorConfig(seed=1)) as url:
        yield url


async def create_test_job(
    sessionmaker, n: int = 10, *, priority: int = 0, budget: str = "1"
) -> uuid.UUID:
    """A job of n tasks for model `m`, made in the store directly."""
    job_id = uuid.uuid4()
    async with sessionmaker() as s, s.begin():
        await _store.create_job(
            session=s,
            job_id=job_id,
            fields={
                "n_stories": n,
                "models": [{"model": "m", "weight": 1.0}],
                "template_version": "v1",
                "max_tokens": 100,
                "seed": 0,
                "budget_usd": Decimal(budget),
                "priority": priority,
                "provider": "simulator",
            },
            tasks=[
                TaskSpec(
                    index=i,
                    recipe={"verb": "run", "noun": "dog", "adjective": "big", "features": []},
                    model="m",
                )
                for i in range(n)
            ],
        )
    return job_id
