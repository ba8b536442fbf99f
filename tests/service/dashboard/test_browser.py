"""The dashboard in headless Chromium against a live server: render, charts, cancel a job."""

from __future__ import annotations

import asyncio
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
from tests.service.dashboard.test_dashboard import AUTH, build_app, seed_jobs

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
def live_server(app: Any) -> Iterator[str]:
    """uvicorn on a free 127.0.0.1 port in a thread; yields its base URL."""
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
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


async def _seed(base_url: str, settings: Any, simulator_url: str) -> tuple[dict, dict]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        return await seed_jobs(client, settings, simulator_url)


def test_dashboard_in_chromium(settings: Any, simulator_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with live_server(build_app(settings)) as base_url:
        done, live = asyncio.run(_seed(base_url, settings, simulator_url))
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
                page.wait_for_selector("#rates svg.chart")
                assert page.url == f"{base_url}/admin"

                assert page.locator("#simulator-banner").is_visible()
                assert "SIMULATOR" in page.locator("#simulator-banner").inner_text()
                # Two line charts for the model, each with one point per active minute.
                charts = page.locator("#rates svg.chart")
                assert charts.count() == 2
                assert page.locator("#rates svg.chart path.series").count() == 2
                points = page.locator("#rates svg.chart circle.point").count()
                assert points >= 2
                assert page.locator("#latency-chart rect.point").count() >= 1
                assert page.locator("#health tbody tr").count() == 11
                assert page.locator("#kpi-spent").inner_text().startswith("$")

                finished = page.locator(f'tr[data-job="{done["id"]}"]')
                running = page.locator(f'tr[data-job="{live["id"]}"]')
                assert finished.locator("button").count() == 0
                assert running.locator("button[data-action=cancel]").count() == 1
                assert "completed" in finished.inner_text()
                page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

                running.locator("button[data-action=cancel]").click()
                page.wait_for_selector(f'tr[data-job="{live["id"]}"][data-status="cancelled"]')
                assert running.locator("button").count() == 0
                page.screenshot(path=str(tmp_path / "dashboard-cancelled.png"), full_page=True)
                assert errors == []
            finally:
                browser.close()
        job = httpx.get(f"{base_url}/v1/jobs/{live['id']}", headers=AUTH).json()
        assert job["status"] == "cancelled"
        again = httpx.post(f"{base_url}/v1/jobs/{done['id']}/cancel", headers=AUTH)
        assert again.status_code == 409
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
