"""What every request passes before the app reads its body: the admin token, a size limit,
and a 503 (not a traceback per request) while the database is down.

A plain ASGI middleware, because FastAPI parses and validates a JSON body before any
dependency runs: an unauthenticated 32 MB body would be read, parsed and held in memory
before the token check could refuse it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Paths anyone may reach: probes, the API docs, the dashboard's login page and assets (the
# dashboard page and its data check the token themselves and answer with a login form).
PUBLIC_EXACT = frozenset(
    {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
PUBLIC_PREFIXES = ("/admin",)
DB_RETRY_AFTER_S = 5
DB_LOG_EVERY_S = 30.0


def is_public(path: str) -> bool:
    """True for paths served without the admin token."""
    return path in PUBLIC_EXACT or path == "/admin" or path.startswith(PUBLIC_PREFIXES)


async def _json(send: Send, status: int, body: dict[str, Any], headers: list | None = None):
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


def is_database_down(exc: BaseException) -> bool:
    """A connection-level database failure (server gone, refused, restarting)."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OperationalError | InterfaceError):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, ConnectionError | OSError) and not isinstance(seen, FileNotFoundError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class RequestGuard:
    """Token before body, body size limit (413), database outage as 503 with Retry-After."""

    def __init__(
        self,
        app: Any,
        *,
        max_body_bytes: int,
        authorized: Callable[[Request], Awaitable[bool]],
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.authorized = authorized
        self._last_db_log = 0.0
        self._db_errors = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not is_public(scope["path"]) and not await self._authorized(scope):
            await _json(
                send,
                401,
                {"error": "missing or wrong admin token", "field": "authorization"},
                [(b"www-authenticate", b"Bearer")],
            )
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await _json(send, 413, self._too_large())
            return
        state = {"received": 0, "refused": False, "started": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body_bytes and not state["refused"]:
                    state["refused"] = True
                    if not state["started"]:
                        state["started"] = True
                        await _json(send, 413, self._too_large())
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return  # the 413 went out; whatever the app answers is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception as exc:
            if state["started"]:
                raise
            problem = unstorable_text(exc)
            if problem is not None:
                # The request models name the field; this is the net for input they miss.
                await _json(send, 422, {"error": problem, "field": "body"})
                return
            if not is_database_down(exc):
                raise
            self._log_outage(exc)
            await _json(
                send,
                503,
                {"error": "database unavailable, retry later", "field": None},
                [(b"retry-after", str(DB_RETRY_AFTER_S).encode())],
            )

    async def _authorized(self, scope: Scope) -> bool:
        try:
            return await self.authorized(Request(scope))
        except Exception as exc:  # a cookie check needs the database
            if is_database_down(exc):
                return False
            raise

    def _too_large(self) -> dict[str, Any]:
        return {
            "error": f"request body larger than {self.max_body_bytes} bytes",
            "field": "body",
        }

    def _log_outage(self, exc: BaseException) -> None:
        """One line per interval while the database is down, not a traceback per request."""
        self._db_errors += 1
        now = time.monotonic()
        if now - self._last_db_log >= DB_LOG_EVERY_S:
            logger.error(
                "database unavailable: answering 503 (%d requests since the last line): %s",
                self._db_errors,
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            )
            self._last_db_log, self._db_errors = now, 0


def unstorable_text(exc: BaseException) -> str | None:
    """What was wrong when `exc` comes from text that cannot be stored or encoded: a lone
    surrogate ("\\ud800", which JSON allows) met by the codec, pydantic's serializer or the
    driver, or a NUL character Postgres refused. None for any other failure."""
    seen: BaseException | None = exc
    while seen is not None:
        message = str(seen)
        # pydantic wraps the codec's error in its own, keeping only the text
        if isinstance(seen, UnicodeEncodeError) or "surrogates not allowed" in message:
            return "text must be valid unicode (no lone surrogates)"
        if "cannot contain NUL" in message:  # psycopg's DataError
            return "text must not contain NUL characters"
        seen = seen.__cause__ or seen.__context__
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
