"""A provider pool in a real worker: one member answers 500s, one sends a refused key; the job
completes on the healthy member, the API shows the breakers, and no key is stored or served."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from generator.simulator import SimulatorConfig
from service.settings import Settings, SettingsInvalid, get_settings
from service.work.provider import provider_info
from service.work.wiring import run_worker, worker_config

MODEL = "simulator-story-1"
N_STORIES = 30
CONCURRENCY = 4
FAILURES = 3  # the breaker opens after this many consecutive 5xx
KEYS = {
    "POOL_KEY_BROKEN": "sk-pool-broken-7f3a9c2e51d04b8aKEY",
    "POOL_KEY_HEALTHY": "sk-pool-healthy-0b6e4d19a7c35f22KEY",
    "POOL_KEY_WRONG": "sk-pool-wrong-93d1c7e0f8a2b645KEY",
}


def providers_yaml(broken: str, healthy: str) -> str:
    return f"""
breaker: {{failures: {FAILURES}, cooldown_s: 600}}
pools:
  {MODEL}:
    members:
      - {{name: broken, base_url: "{broken}", api_key_env: POOL_KEY_BROKEN}}
      - {{name: revoked, base_url: "{healthy}", api_key_env: POOL_KEY_WRONG}}
      - {{name: healthy, base_url: "{healthy}", api_key_env: POOL_KEY_HEALTHY, rpm: 6000}}
"""


async def wait_for_pool(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """GET /v1/providers until the job is done and the heartbeat shows it; fails once neither
    the job nor the pools' counters moved for 30 s."""
    last, moved_at = None, time.monotonic()
    while True:
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        providers = (await api.get("/v1/providers")).json()
        members = {m["name"]: m for pool in providers["pools"] for m in pool["members"]}
        finished = job["completed"] + job["rejected"] + job["failed"]
        served = sum(m["requests"] for m in members.values())
        if (
            job["status"] == "completed"
            and members.get("healthy", {}).get("successes", 0) >= finished
        ):
            return providers
        if (finished, served) != last:
            last, moved_at = (finished, served), time.monotonic()
        assert time.monotonic() - moved_at < 30, f"no progress: {job} {providers}"
        await asyncio.sleep(0.1)


async def test_a_pool_moves_traffic_off_failing_members(
    api, settings, sessionmaker, simulator_factory, monkeypatch, tmp_path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    for name, key in KEYS.items():
        monkeypatch.setenv(name, key)
    broken = simulator_factory(SimulatorConfig(rate_500=1.0, api_key=KEYS["POOL_KEY_BROKEN"]))
    healthy = simulator_factory(SimulatorConfig(api_key=KEYS["POOL_KEY_HEALTHY"]))
    path = tmp_path / "providers.yaml"
    path.write_text(providers_yaml(broken, healthy))
    job = (
        await api.post(
            "/v1/jobs",
            json={"n_stories": N_STORIES, "model": MODEL, "seed": 3, "budget_usd": 5.0},
        )
    ).json()
    s = settings.model_copy(update={"providers": str(path), "heartbeat_seconds": 0.2})
    config = worker_config(s, concurrency=CONCURRENCY, claim_batch=CONCURRENCY, poll_s=0.05)
    worker = asyncio.create_task(run_worker(s, config=config, install_signals=True))
    try:
        providers = await wait_for_pool(api, job["id"])
    finally:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            worker.cancel()  # it failed before installing its handlers
        else:
            os.kill(os.getpid(), signal.SIGTERM)  # the worker's own handler: a graceful stop
        await asyncio.wait_for(worker, timeout=60)

    job = (await api.get(f"/v1/jobs/{job['id']}")).json()
    assert job["status"] == "completed"
    assert job["completed"] + job["rejected"] == N_STORIES and job["failed"] == 0

    pool = providers["pools"][0]
    members = {m["name"]: m for m in pool["members"]}
    assert (providers["workers"], pool["model"], pool["healthy"]) == (1, MODEL, 1)
    # The 500s opened the breaker after FAILURES in a row (plus calls already in flight).
    assert members["broken"]["state"] == "open" and members["broken"]["workers_open"] == 1
    assert FAILURES <= members["broken"]["errors"] <= FAILURES + CONCURRENCY
    assert members["broken"]["successes"] == 0 and members["broken"]["retry_in_s"] > 500
    assert members["broken"]["last_error"].startswith("server_error (status 500)")
    # One refused key opens the breaker at once.
    assert members["revoked"]["state"] == "open"
    assert 1 <= members["revoked"]["errors"] <= CONCURRENCY
    assert members["revoked"]["last_error"].startswith("auth (status 401)")
    assert members["healthy"]["state"] == "closed" and members["healthy"]["errors"] == 0
    assert members["healthy"]["successes"] >= N_STORIES and members["healthy"]["tokens"] > 0
    assert members["healthy"]["rpm"] == 6000

    async with sessionmaker() as session:
        stories = (
            await session.execute(
                text(
                    "SELECT count(*), count(DISTINCT task_id), "
                    "array_agg(DISTINCT provider) FROM stories WHERE job_id = :j"
                ),
                {"j": job["id"]},
            )
        ).one()
        requests = dict(
            (
                await session.execute(
                    text(
                        "SELECT provider || ':' || outcome || ':' || COALESCE(error_class, '-'), "
                        "count(*) FROM requests WHERE job_id = :j GROUP BY 1"
                    ),
                    {"j": job["id"]},
                )
            ).all()
        )
        bucket = (
            await session.execute(
                text("SELECT rpm FROM rate_buckets WHERE model = :m"),
                {"m": f"{MODEL}@healthy"},
            )
        ).scalar_one()
        dump = "\n".join(
            (
                await session.execute(
                    text(
                        "SELECT row_to_json(w)::text FROM workers w UNION ALL "
                        "SELECT row_to_json(r)::text FROM requests r UNION ALL "
                        "SELECT row_to_json(t)::text FROM tasks t UNION ALL "
                        "SELECT row_to_json(j)::text FROM jobs j"
                    )
                )
            ).scalars()
        )
    # Every story stored once, each written by the healthy member.
    assert stories[0] == stories[1] == N_STORIES and stories[2] == ["healthy"]
    # Request rows name the member that took each call.
    assert set(requests) <= {"broken:error:server_error", "revoked:error:auth", "healthy:ok:-"}
    assert requests["healthy:ok:-"] == N_STORIES
    assert requests["broken:error:server_error"] == members["broken"]["errors"]
    assert requests["revoked:error:auth"] == members["revoked"]["errors"]
    assert bucket == 6000  # the member's own limit is a bucket every worker shares

    metrics = (await api.get("/metrics")).text
    served = (await api.get("/v1/providers")).text  # stopped worker: no live pools
    assert json.loads(served) == {"workers": 0, "pools": []}
    for secret in KEYS.values():
        assert secret not in dump
        assert secret not in json.dumps(providers) and secret not in metrics
        assert secret not in caplog.text
    assert '"broken"' in dump and "server_error (status 500)" in dump  # the snapshot is stored


async def test_metrics_report_member_states(api, sessionmaker) -> None:
    """The /metrics families from a live worker's stored snapshot."""
    snapshot = [
        {
            "model": MODEL,
            "healthy": 1,
            "members": [
                {"name": "a", "state": "open", "requests": 7, "errors": 5, "successes": 2},
                {"name": "b", "state": "closed", "requests": 40, "errors": 0, "successes": 40},
            ],
        }
    ]
    async with sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO workers (id, host, pid, concurrency, status, providers) "
                "VALUES ('w1', 'h', 1, 4, 'running', CAST(:p AS jsonb)), "
                "('w2', 'h', 2, 4, 'running', CAST(:p AS jsonb)), "
                "('w3', 'h', 3, 4, 'stopped', CAST(:p AS jsonb))"
            ),
            {"p": json.dumps(snapshot)},
        )
    metrics = (await api.get("/metrics")).text
    assert (
        f'tinystories_provider_member_state{{member="a",pool="{MODEL}",state="open"}} 2.0'
        in metrics
    )
    assert (
        f'tinystories_provider_member_state{{member="a",pool="{MODEL}",state="closed"}} 0.0'
        in metrics
    )
    assert (
        f'tinystories_provider_member_requests_total{{member="b",pool="{MODEL}"}} 80.0' in metrics
    )
    assert f'tinystories_provider_member_errors_total{{member="a",pool="{MODEL}"}} 10.0' in metrics
    listed = (await api.get("/v1/providers")).json()
    a = listed["pools"][0]["members"][0]
    assert (listed["workers"], a["state"], a["workers_open"], a["requests"]) == (2, "open", 2, 14)


async def test_a_worker_takes_on_an_open_breaker_from_a_live_peer(
    api, settings, sessionmaker, simulator_factory, monkeypatch, tmp_path
) -> None:
    """Another live worker reports `broken` open: this worker opens it too, without spending
    its own failed requests on it, and does not count it as opened by itself."""
    for name, key in KEYS.items():
        monkeypatch.setenv(name, key)
    broken = simulator_factory(SimulatorConfig(rate_500=1.0, api_key=KEYS["POOL_KEY_BROKEN"]))
    healthy = simulator_factory(SimulatorConfig(api_key=KEYS["POOL_KEY_HEALTHY"]))
    path = tmp_path / "providers.yaml"
    path.write_text(
        f"""
breaker: {{failures: {FAILURES}, cooldown_s: 600}}
pools:
  {MODEL}:
    members:
      - {{name: broken, base_url: "{broken}", api_key_env: POOL_KEY_BROKEN}}
      - {{name: healthy, base_url: "{healthy}", api_key_env: POOL_KEY_HEALTHY}}
"""
    )
    peer = [{"model": MODEL, "members": [{"name": "broken", "state": "open", "retry_in_s": 300}]}]
    async with sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO workers (id, host, pid, concurrency, status, providers) "
                "VALUES ('peer', 'h', 1, 4, 'running', CAST(:p AS jsonb))"
            ),
            {"p": json.dumps(peer)},
        )
    s = settings.model_copy(update={"providers": str(path), "heartbeat_seconds": 0.2})
    config = worker_config(s, concurrency=CONCURRENCY, claim_batch=CONCURRENCY, poll_s=0.05)
    worker = asyncio.create_task(run_worker(s, config=config, install_signals=True))
    try:
        # The peer stays alive (fresh heartbeats) until this worker's snapshot shows `broken`
        # open; the worker has no task yet, so it sent nothing to learn that.
        mine, beats = None, set()
        while mine is None or mine["broken"]["state"] != "open":
            assert not worker.done(), worker
            assert len(beats) < 10, f"ten heartbeats and `broken` still {mine}"
            async with sessionmaker() as session, session.begin():
                await session.execute(
                    text("UPDATE workers SET heartbeat_at = now() WHERE id = 'peer'")
                )
                row = (
                    await session.execute(
                        text(
                            "SELECT providers, heartbeat_at FROM workers "
                            "WHERE id <> 'peer' AND providers IS NOT NULL"
                        )
                    )
                ).first()
            if row is not None:
                beats.add(row.heartbeat_at)
                mine = {m["name"]: m for m in row.providers[0]["members"]}
            await asyncio.sleep(0.1)
        assert mine["broken"]["requests"] == 0 and mine["broken"]["times_opened"] == 0
        assert 290 < mine["broken"]["retry_in_s"] <= 300
        job = (
            await api.post(
                "/v1/jobs",
                json={"n_stories": 10, "model": MODEL, "seed": 5, "budget_usd": 5.0},
            )
        ).json()
        await wait_for_pool(api, job["id"])
    finally:
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            worker.cancel()
        else:
            os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(worker, timeout=60)
    async with sessionmaker() as session:
        providers = dict(
            (
                await session.execute(
                    text("SELECT provider, count(*) FROM requests GROUP BY provider")
                )
            ).all()
        )
    assert providers == {"healthy": 10}  # not one request to the member the peer saw fail


def test_a_bad_providers_file_is_one_line_without_the_key(tmp_path, monkeypatch) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(
        f"pools:\n  {MODEL}:\n    members:\n"
        '      - {name: a, base_url: "http://a/v1", api_key: sk-literal-5e1f0c9a7b3d2468}\n'
        "      - {name: b, base_url: http://b/v1, api_key_env: POOL_KEY_MISSING, weight: 2}\n"
    )
    monkeypatch.chdir(tmp_path)  # no .env of the working tree
    monkeypatch.delenv("POOL_KEY_MISSING", raising=False)
    monkeypatch.setenv("TINYSTORIES_PROVIDERS", str(path))
    with pytest.raises(SettingsInvalid) as missing:
        get_settings()
    message = str(missing.value)
    assert message == (
        f"TINYSTORIES_PROVIDERS: {path}: pools.{MODEL}.members[1]: "
        "environment variable POOL_KEY_MISSING is not set"
    )
    path.write_text("pools:\n  m:\n    members:\n      - {api_key: sk-literal-5e1f0c9a7b3d2468\n")
    with pytest.raises(SettingsInvalid) as broken:
        get_settings()
    assert "not valid YAML or JSON" in str(broken.value) and "\n" not in str(broken.value)
    assert "sk-literal" not in str(broken.value)
    inline = json.dumps({"pools": {MODEL: {"members": [{"name": "x", "base_url": "http://x"}]}}})
    monkeypatch.setenv("TINYSTORIES_PROVIDERS", inline)
    ok = get_settings()
    assert ok.uses_pools and not ok.uses_simulator
    assert provider_info(ok) == {"provider": "pool", "simulator": False, "banner": None}
    assert Settings(providers=inline, simulator_only=True, _env_file=None).uses_simulator


async def test_a_member_limit_holds_across_processes(sessionmaker, simulator) -> None:
    """Two workers' pools, each with its own limiter (as two processes have), share the
    member's bucket: 30 calls at 600 rpm take at least 2 s together (one second of burst,
    then 10 a second), where two in-process limiters would let each run at 600 rpm."""
    from generator.pool_config import pools_from_dict
    from generator.ratelimit import ModelLimits
    from service.work.pools import share_member_limits
    from service.work.shared_limits import PostgresRateLimiter

    config = {"pools": {MODEL: {"members": [{"name": "m", "base_url": simulator, "rpm": 600}]}}}
    processes = []
    for _ in range(2):
        pools = pools_from_dict(config, env={})
        limiter = PostgresRateLimiter(sessionmaker, {})
        assert share_member_limits(pools, limiter) == {f"{MODEL}@m": ModelLimits(rpm=600)}
        await limiter.setup()
        processes.append(pools)
    messages = [{"role": "user", "content": "Tell me a story about a cat."}]
    started = time.monotonic()
    try:
        results = await asyncio.gather(
            *(p.chat(model=MODEL, messages=messages, max_tokens=50) for p in processes * 15)
        )
    finally:
        for p in processes:
            await p.aclose()
    elapsed = time.monotonic() - started
    assert len(results) == 30 and {r.provider for r in results} == {"m"}
    assert elapsed >= (30 - 10) / 10 * 0.9, f"30 calls in {elapsed:.2f} s: over 600 rpm"
