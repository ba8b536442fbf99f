"""The dashboard in headless Chromium against a live server: render, charts, cancel a job."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import TEST_TOKEN
from tests.service.dashboard.test_dashboard import (
    AUTH,
    MODEL,
    build_app,
    seed_jobs,
    seed_pool_and_batches,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox or GPU in CI containers; nothing may reach the network from this closed one.
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed: run `apt-get install -y chromium` "
        "(.ci/run does) to enable the browser test",
    ),
]


@contextlib.contextmanager
def live_server(app: Any) -> Iterator[tuple[str, Any]]:
    """uvicorn on a free 127.0.0.1 port in a thread; yields its base URL and the server (set
    `should_exit` to stop it early)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


async def _seed(base_url: str, settings: Any, simulator_url: str) -> tuple[dict, dict, int]:
    """The two jobs of seed_jobs, and a near-duplicate of one of their stories (an edited copy
    stored without a job, then checked by the dedup pass): its id."""
    from sqlalchemy import text

    from service.dataset.dedup import run_dedup_pass
    from service.db import make_engine, make_sessionmaker

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        done, live = await seed_jobs(client, settings, simulator_url)
        # A job with its own words, cancelled before it ran: its row names the vocabulary.
        words = {"noun": ["moon", "rocket"], "verb": ["fly"], "adjective": ["shiny"]}
        body = {"n_stories": 2, "model": "simulator-story-1", "budget_usd": 0.01}
        space = await client.post(
            "/v1/jobs", json={**body, "vocabulary": {"name": "space", "words": words}}, headers=AUTH
        )
        assert space.status_code == 201, space.text
        await client.post(f"/v1/jobs/{space.json()['id']}/cancel", headers=AUTH)
        done["space_id"] = space.json()["id"]
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        sessionmaker = make_sessionmaker(engine)
        async with sessionmaker() as s, s.begin():
            copy = await s.execute(
                text(
                    "INSERT INTO stories (text, verb, noun, adjective, accepted, text_hash, "
                    "source) SELECT text || ' The end.', verb, noun, adjective, true, "
                    "md5(text) || 'copy', 'imported' FROM stories "
                    "WHERE accepted AND dedup_status = 'unique' ORDER BY id LIMIT 1 RETURNING id"
                )
            )
            copy_id = copy.scalar_one()
        await run_dedup_pass(sessionmaker)
    finally:
        await engine.dispose()
    return done, live, copy_id


def _shot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path.name} looks blank"


def test_dashboard_in_chromium(settings: Any, simulator_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with live_server(build_app(settings)) as (base_url, server):
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("dialog", lambda dialog: dialog.accept())

                login = page.goto(f"{base_url}/admin")
                assert login is not None and login.status == 401
                assert page.locator("input[name=token]").count() == 1
                page.fill("input[name=token]", TEST_TOKEN)
                page.click("button[type=submit]")
                page.wait_for_selector("#kpis")
                assert page.url == f"{base_url}/admin"

                # Empty states say so instead of showing zeros.
                assert page.locator("#jobs-empty").is_visible()
                assert page.locator("#kpi-budget").inner_text() == "no active job"
                assert page.locator("#kpi-spent").inner_text() == "no jobs yet"
                assert page.locator("#kpi-per1k").inner_text() == "no stories yet"
                assert "No requests in this window" in page.locator("#rates").inner_text()
                assert page.locator("#diversity-empty").is_visible()
                _shot(page, tmp_path / "empty.png")

                # Playwright's sync API holds this thread's event loop: seed from another one.
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    seeding = pool.submit(asyncio.run, _seed(base_url, settings, simulator_url))
                    done, live, copy_id = seeding.result(timeout=120)
                page.reload()
                page.wait_for_selector("#rates svg.chart")
                assert page.locator("#simulator-banner").is_visible()
                assert "SIMULATOR" in page.locator("#simulator-banner").inner_text()
                # Two line charts for the model: y ticks, a point per active minute, hover values.
                charts = page.locator("#rates svg.chart")
                assert charts.count() == 2
                assert page.locator("#rates svg.chart path.series").count() == 2
                assert page.locator("#rates svg.chart circle.point").count() >= 2
                assert page.locator("#rates svg.chart:first-of-type text.tick.y").count() >= 3
                assert "active jobs" in page.locator("#window-label").inner_text()
                busy = page.locator("#rates svg.chart rect.hit:not([data-value='0'])").first
                busy.hover()
                page.wait_for_selector("#tooltip:not([hidden])")
                assert "req/min" in page.locator("#tooltip").inner_text()
                assert page.locator("#latency-chart rect.point").count() >= 1
                assert page.locator("#health tbody tr").count() == 11
                assert page.locator("#kpi-spent").inner_text().startswith("$")
                assert page.locator("#kpi-budget").inner_text().startswith("$")
                # Diversity of what the worker made, from the running sums.
                page.wait_for_selector("#coverage tbody tr")
                assert page.locator("#coverage tbody tr").count() == 3
                assert page.locator("#feature-mix tbody tr").count() == 7
                assert page.locator("#openings tbody tr").count() >= 1
                assert page.locator("#diversity svg.chart").count() == 3
                _shot(page, tmp_path / "dashboard.png")

                page.select_option("#window", "15m")
                page.wait_for_function(
                    "document.getElementById('window-label').textContent.includes('last 15m')"
                )
                finished = page.locator(f'tr[data-job="{done["id"]}"]')
                running = page.locator(f'tr[data-job="{live["id"]}"]')
                assert finished.locator("button").count() == 0
                assert "\u2014" in finished.locator("td").nth(4).inner_text()  # no rate when done
                assert "completed" in finished.inner_text()

                # 800 px: the jobs table fits and its actions stay visible.
                page.set_viewport_size({"width": 800, "height": 1000})
                cancel = running.locator("button[data-action=cancel]")
                box = cancel.bounding_box()
                assert box is not None and box["x"] + box["width"] <= 800
                wide = page.evaluate(
                    "document.documentElement.scrollWidth > document.documentElement.clientWidth"
                )
                assert not wide, "the page scrolls sideways at 800 px"
                _shot(page, tmp_path / "dashboard-800.png")

                cancel.click()
                page.wait_for_selector(f'tr[data-job="{live["id"]}"][data-status="cancelled"]')
                assert running.locator("button").count() == 0
                # Rendered by the script after the action, not only by the template.
                space = page.locator(f'tr[data-job="{done["space_id"]}"] .vocabulary')
                assert space.inner_text() == "space: 2 nouns, 1 verb, 1 adjective"
                page.set_viewport_size({"width": 1400, "height": 1000})

                # The story browser: filters, a story with its cluster, bad input.
                listing = page.goto(f"{base_url}/admin/stories?status=accepted")
                assert listing is not None and listing.status == 200
                assert page.locator("#stories-table tbody tr").count() >= 5
                _shot(page, tmp_path / "stories.png")
                dups = page.goto(f"{base_url}/admin/stories?dup=near")
                assert dups is not None and dups.status == 200
                page.click(f'a[href="/admin/stories/{copy_id}"]')
                page.wait_for_selector("#cluster")
                assert page.locator("#cluster article").count() == 2
                assert page.locator("#cluster article.root").count() == 1
                assert "Recipe" in page.locator("#story-facts").inner_text()
                _shot(page, tmp_path / "story-cluster.png")
                first = page.goto(f"{base_url}/admin/stories?job={done['id']}")
                assert first is not None and first.status == 200
                page.locator("#stories-table tbody tr a").first.click()
                page.wait_for_selector("#story-prompt")
                assert "Write a short story" in page.locator("#story-prompt").inner_text()
                bad = page.goto(f"{base_url}/admin/stories?status=maybe")
                assert bad is not None and bad.status == 400
                assert "status" in page.locator("#browse-error").inner_text()
                _shot(page, tmp_path / "stories-bad-filter.png")
                missing = page.goto(f"{base_url}/admin/stories/999999999")
                assert missing is not None and missing.status == 404
                assert "does not exist" in page.locator("#story-error").inner_text()

                job = httpx.get(f"{base_url}/v1/jobs/{live['id']}", headers=AUTH).json()
                assert job["status"] == "cancelled"
                again = httpx.post(f"{base_url}/v1/jobs/{done['id']}/cancel", headers=AUTH)
                assert again.status_code == 409

                # The server goes away: a banner says so and the stale figures are greyed.
                page.goto(f"{base_url}/admin")
                page.wait_for_function("Number(document.body.dataset.polls || 0) >= 1")
                server.should_exit = True
                page.wait_for_selector("#offline-banner:not([hidden])", timeout=30_000)
                assert "unreachable" in page.locator("#offline-banner").inner_text()
                assert "stale" in (page.locator("body").get_attribute("class") or "")
                _shot(page, tmp_path / "offline.png")
                assert errors == []
            finally:
                browser.close()


def test_providers_and_batches_panels_in_chromium(settings: Any, tmp_path: Path) -> None:
    """Hidden without pools or batch jobs; then a pool member open on one of two workers, its
    newest error without the key, and a batch job's batches and savings."""
    from playwright.sync_api import sync_playwright

    with live_server(build_app(settings)) as (base_url, _):
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_extra_http_headers(AUTH)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{base_url}/admin")
                page.wait_for_selector("#kpis")
                assert not page.locator("#providers-section").is_visible()
                assert not page.locator("#batches-section").is_visible()

                body = {"n_stories": 9, "model": MODEL, "budget_usd": 1.0, "mode": "batch"}
                job = httpx.post(f"{base_url}/v1/jobs", json=body, headers=AUTH).json()
                # Playwright's sync API holds this thread's event loop: seed from another one.
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    seed = seed_pool_and_batches(settings.database_url, job["id"])
                    pool.submit(asyncio.run, seed).result(timeout=60)
                page.reload()
                page.wait_for_selector("#providers-section:not([hidden])")
                member = page.locator("#providers tbody tr")
                assert member.count() == 1
                assert "open on 1/2" in member.locator("[data-state=open]").inner_text()
                assert "Incorrect API key provided" in member.inner_text()
                assert "sk-live" not in page.content()
                assert page.locator("#batches-section").is_visible()
                assert page.locator("#batches tbody tr").count() == 1
                totals = page.locator("#batches-totals").inner_text()
                assert "4 batches for 1 job(s)" in totals and "saved $0.2500" in totals
                assert page.locator("#batches tbody td").last.inner_text() == "azure 2, openai 1"
                _shot(page, tmp_path / "providers-batches.png")
                panel = tmp_path / "providers-panel.png"
                page.locator("#providers-section").screenshot(path=str(panel))
                assert panel.stat().st_size > 3_000, "the providers panel looks blank"
                assert errors == []
            finally:
                browser.close()
