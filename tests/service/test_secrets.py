"""Secrets: the provider key and the admin token appear in no log line and no API response."""

from __future__ import annotations

import logging
import stat

import httpx
import pytest

from service.api import create_app, ensure_admin_token
from service.settings import Settings
from service.work.wiring import run_worker, worker_config

PROVIDER_KEY = "sk-test-SECRET-provider-key-4242"
ADMIN_TOKEN = "admin-SECRET-token-7777"


async def test_no_secret_in_logs_or_responses(settings, simulator_url, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    s = settings.model_copy(
        update={
            "openai_api_key": PROVIDER_KEY,
            "openai_base_url": simulator_url,
            "admin_token": ADMIN_TOKEN,
        }
    )
    s = Settings(**{**s.model_dump(), "_env_file": None})
    assert not s.uses_simulator
    app = create_app(s)
    bodies: list[str] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://t",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as api:
            job = (
                await api.post(
                    "/v1/jobs",
                    json={
                        "n_stories": 5,
                        "model": "simulator-story-1",
                        "budget_usd": 1.0,
                        "instruct": True,
                        "summary_model": "simulator-story-mini-1",
                    },
                )
            ).json()
            bodies.append(str(job))
            await run_worker(
                s,
                config=worker_config(s, idle_exit=True, concurrency=4, poll_s=0.05),
                install_signals=False,
            )
            for path in (
                "/v1/jobs",
                f"/v1/jobs/{job['id']}",
                f"/v1/jobs/{job['id']}/stories",
                "/healthz",
                "/readyz",
                "/openapi.json",
                "/docs",
            ):
                resp = await api.get(path)
                assert resp.status_code == 200, path
                bodies.append(resp.text)
                bodies.append(str(resp.headers))
            bad = await api.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
            bodies.append(bad.text)
    shown = (job["provider"], job["simulator"])
    assert shown == ("127.0.0.1", False)
    logs = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    assert "story_done" in logs  # the worker did log its work
    for secret in (PROVIDER_KEY, ADMIN_TOKEN):
        assert secret not in logs
        assert all(secret not in body for body in bodies)
    assert PROVIDER_KEY not in repr(s) and ADMIN_TOKEN not in repr(s)


def test_generated_token_is_private_and_only_its_path_logged(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    s = Settings(home=tmp_path / "home", _env_file=None, admin_token=None)
    token = ensure_admin_token(s)
    path = s.admin_token_path
    assert path.read_text().strip() == token and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_admin_token(s) == token  # reused on the next start
    text = caplog.text
    assert str(path.resolve()) in text and token not in text


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "TINYSTORIES_ADMIN_TOKEN"])
def test_settings_read_secrets_from_env(monkeypatch, name) -> None:
    monkeypatch.setenv(name, "from-env-secret")
    s = Settings(_env_file=None)
    value = s.openai_api_key if name == "OPENAI_API_KEY" else s.admin_token
    assert value.get_secret_value() == "from-env-secret"
    assert "from-env-secret" not in repr(s) and "from-env-secret" not in str(s.model_dump())
