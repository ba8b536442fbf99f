"""Dashboard logins are revocable server-side sessions: the cookie never holds the admin
token, logout ends the session everywhere, `Secure` follows TINYSTORIES_COOKIE_SECURE."""

from __future__ import annotations

import httpx

from service.api import create_app
from service.dashboard import COOKIE_NAME
from tests.service.conftest import TEST_TOKEN


async def _client(settings):
    app = create_app(settings)
    context = app.router.lifespan_context(app)
    await context.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return context, client


async def test_logout_revokes_the_session_for_every_process(settings) -> None:
    ctx_a, a = await _client(settings)
    ctx_b, b = await _client(settings)  # a second API process, same database
    try:
        login = await a.post("/admin/login", data={"token": TEST_TOKEN})
        assert login.status_code == 303
        secret = a.cookies[COOKIE_NAME]
        assert TEST_TOKEN not in login.headers["set-cookie"] and len(secret) >= 32
        b.cookies.set(COOKIE_NAME, secret)
        assert (await b.get("/admin/data/overview")).status_code == 200
        assert (await b.get("/metrics")).status_code == 200
        assert (await a.post("/admin/logout")).status_code == 303
        # The stolen or kept cookie is dead everywhere, not just forgotten by one browser.
        assert (await b.get("/admin/data/overview")).status_code == 401
        assert (await b.get("/metrics")).status_code == 401
        a.cookies.set(COOKIE_NAME, secret)
        assert (await a.get("/admin")).status_code == 401
    finally:
        for client, ctx in ((a, ctx_a), (b, ctx_b)):
            await client.aclose()
            await ctx.__aexit__(None, None, None)


async def test_secure_cookie_behind_a_tls_proxy(settings) -> None:
    ctx, client = await _client(settings.model_copy(update={"cookie_secure": True}))
    try:
        login = await client.post("/admin/login", data={"token": TEST_TOKEN})
        assert "secure" in login.headers["set-cookie"].lower()
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
    ctx, client = await _client(settings)
    try:
        login = await client.post("/admin/login", data={"token": TEST_TOKEN})
        assert "secure" not in login.headers["set-cookie"].lower()  # plain http, not forced
    finally:
        await client.aclose()
        await ctx.__aexit__(None, None, None)
