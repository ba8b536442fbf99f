"""A Batch API job for a pooled model: its batches spread over the pool's members (two
simulators over real HTTP with the real openai SDK), each read back from the member that holds
it, a member with a refused key left out after one refusal, and no key stored or logged."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest
from sqlalchemy import text

from generator.simulator import SimulatorConfig
from generator.simulator.batch import BATCH_CONFIG_ENV
from service.work.wiring import run_worker, worker_config

MODEL = "simulator-story-1"
WEST_DEPLOYMENT = "story-west-deployment"  # west answers only to its own name for the model
KEYS = {
    "BATCH_KEY_EAST": "sk-batch-east-4c1d9e7a20b35f68KEY",
    "BATCH_KEY_WEST": "sk-batch-west-8a27f0c4e19d6b53KEY",
    "BATCH_KEY_WRONG": "sk-batch-wrong-5e90b2d7c4a1f836KEY",
}


def _batches(url: str, key: str) -> list[dict]:
    resp = httpx.get(
        f"{url}/batches",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    resp.raise_for_status()
    return resp.json()["data"]


async def test_a_pooled_batch_job_spreads_over_members_and_reads_each_back_where_it_lives(
    api, settings, sessionmaker, simulator_factory, monkeypatch, tmp_path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    for name, key in KEYS.items():
        monkeypatch.setenv(name, key)
    batch_config = {"completion_s": 0.3, "failure_rate": 0.0, "drop_rate": 0.0}
    monkeypatch.setenv(BATCH_CONFIG_ENV, json.dumps({**batch_config, "malformed_rate": 0.0}))
    east = simulator_factory(SimulatorConfig(api_key=KEYS["BATCH_KEY_EAST"]), subprocess_mode=True)
    west = simulator_factory(
        SimulatorConfig(
            api_key=KEYS["BATCH_KEY_WEST"], models=(WEST_DEPLOYMENT,), strict_models=True
        ),
        subprocess_mode=True,
    )
    path = tmp_path / "providers.yaml"
    path.write_text(
        f"""
breaker: {{cooldown_s: 600, auth_cooldown_s: 600}}
pools:
  {MODEL}:
    members:
      - {{name: revoked, base_url: "{east}", api_key_env: BATCH_KEY_WRONG, weight: 100}}
      - {{name: east, base_url: "{east}", api_key_env: BATCH_KEY_EAST}}
      - {{name: west, base_url: "{west}", api_key_env: BATCH_KEY_WEST, model: {WEST_DEPLOYMENT}}}
"""
    )
    job = (
        await api.post(
            "/v1/jobs",
            json={"n_stories": 48, "model": MODEL, "budget_usd": 5.0, "mode": "batch"},
        )
    ).json()
    s = settings.model_copy(
        update={"providers": str(path), "batch_size": 3, "batch_poll_seconds": 0.2}
    )
    await run_worker(
        s,
        config=worker_config(s, idle_exit=True, concurrency=2, poll_s=0.05),
        install_signals=False,
    )
    east_batches = _batches(east, KEYS["BATCH_KEY_EAST"])
    west_batches = _batches(west, KEYS["BATCH_KEY_WEST"])

    job = (await api.get(f"/v1/jobs/{job['id']}")).json()
    assert job["status"] == "completed", job
    # West refuses any model name but its deployment's: no failure means the request files
    # carried each member's own name for the model.
    assert job["completed"] + job["rejected"] == 48 and job["failed"] == 0
    summary = job["batches"]
    members = summary["members"]
    # 16 batches of 3 on the two members with working keys (equal weights: each holds some,
    # but for a 2**-15 chance), none on the member whose key was refused at its first upload.
    assert summary["batches"] == 16 == sum(members.values())
    assert set(members) == {"east", "west"}
    assert (members["east"], members["west"]) == (len(east_batches), len(west_batches))
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT member, count(*), sum(completed) FROM provider_batches "
                    "WHERE job_id = :j GROUP BY member"
                ),
                {"j": uuid.UUID(job["id"])},
            )
        ).all()
        stories = dict(
            (
                await session.execute(
                    text("SELECT provider, count(*) FROM stories WHERE job_id = :j GROUP BY 1"),
                    {"j": uuid.UUID(job["id"])},
                )
            ).all()
        )
        requests = dict(
            (
                await session.execute(
                    text(
                        "SELECT provider || ':' || outcome, count(*) FROM requests "
                        "WHERE job_id = :j GROUP BY 1"
                    ),
                    {"j": uuid.UUID(job["id"])},
                )
            ).all()
        )
        dump = "\n".join(
            (
                await session.execute(
                    text(
                        "SELECT row_to_json(b)::text FROM provider_batches b UNION ALL "
                        "SELECT row_to_json(r)::text FROM requests r UNION ALL "
                        "SELECT row_to_json(w)::text FROM workers w"
                    )
                )
            ).scalars()
        )
    by_member = {m: (n, done) for m, n, done in rows}
    assert set(by_member) == {"east", "west"}
    # Each member's stories come from its own batches, and the rows name the member.
    assert stories == {m: by_member[m][1] for m in ("east", "west")}
    assert requests == {f"{m}:ok": by_member[m][1] for m in ("east", "west")}
    for secret in KEYS.values():
        assert secret not in dump and secret not in caplog.text
    assert "revoked" in caplog.text  # its breaker opened, and the log says which member


def test_a_batch_whose_member_left_the_file_says_so(monkeypatch, tmp_path) -> None:
    # The member is read from each batch's row: a file edited while batches are out must not
    # send them to another endpoint, and the batch's last_error must say what to do.
    from generator.errors import ProviderError
    from generator.pool_config import load_pools
    from service.work.batch_clients import BatchClients

    monkeypatch.setenv("BATCH_KEY_EAST", KEYS["BATCH_KEY_EAST"])
    path = tmp_path / "providers.yaml"
    path.write_text(
        f"pools:\n  {MODEL}:\n    members:\n"
        '      - {name: east, base_url: "http://127.0.0.1:9/v1", api_key_env: BATCH_KEY_EAST}\n'
    )
    clients = BatchClients(lambda: "single", load_pools(str(path)))
    with pytest.raises(ProviderError, match=r"member 'west' of 'simulator-story-1'.*no longer"):
        clients.member(MODEL, "west")
    east = clients.member(MODEL, "east")
    assert east.name == "east" and clients.client(east).base_url == "http://127.0.0.1:9/v1"
    assert clients.member(MODEL, None) is None and clients.client(None) == "single"
    assert clients.choose("another-model") is None  # no pool: the single provider
