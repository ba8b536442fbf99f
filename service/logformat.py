"""Log output: plain text lines, or one JSON object per line (TINYSTORIES_LOG_FORMAT=json)."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

# Environment variables read by `configure_from_env` (documented for the deployment files).
LOG_FORMAT_ENV = "TINYSTORIES_LOG_FORMAT"
LOG_LEVEL_ENV = "TINYSTORIES_LOG_LEVEL"
ENV_VARS = (LOG_FORMAT_ENV, LOG_LEVEL_ENV)
FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# Attributes every LogRecord has; anything else was passed with `extra=` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single JSON line."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(fmt: str, level: int | str = logging.INFO) -> None:
    """Route the root logger to stderr in `fmt` ("text" or "json"); ValueError otherwise."""
    fmt = (fmt or "text").strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    if isinstance(level, str):
        if not isinstance(logging.getLevelName(level.strip().upper()), int):
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
        level = level.strip().upper()
    root.addHandler(handler)
    root.setLevel(level)
    if root.level > logging.DEBUG:
        # One INFO line per HTTP request of the clients (simulator probes, uploads) is noise.
        for name in ("httpx", "httpx2", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


def configure_from_env(default_level: int | str = logging.INFO) -> None:
    """configure_logging from TINYSTORIES_LOG_FORMAT and TINYSTORIES_LOG_LEVEL, in the
    environment or in ./.env as the other settings are; ValueError naming the variable."""
    from dotenv import dotenv_values

    dotenv = dotenv_values(".env") if os.path.isfile(".env") else {}
    fmt = os.environ.get(LOG_FORMAT_ENV) or dotenv.get(LOG_FORMAT_ENV) or "text"
    level = os.environ.get(LOG_LEVEL_ENV) or dotenv.get(LOG_LEVEL_ENV) or default_level
    try:
        configure_logging(fmt, level)
    except ValueError as exc:
        name = LOG_LEVEL_ENV if "level" in str(exc) else LOG_FORMAT_ENV
        raise ValueError(f"setting {name}: {exc}") from None


# Requests that pollers make every few seconds: the dashboard's data endpoints and static
# files, health probes and Prometheus scrapes. Logged, they drown every other line.
POLLING_PATHS = ("/admin/data/", "/admin/static/", "/healthz", "/readyz", "/metrics")


class PollingFilter(logging.Filter):
    """Drops uvicorn access lines of successful polling requests (errors are still logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a 2xx/3xx GET of a polling path."""
        args = record.args
        if not isinstance(args, tuple) or len(args) < 5:
            return True
        method, path, status = args[1], str(args[2]), args[4]
        polling = method == "GET" and path.startswith(POLLING_PATHS)
        return not (polling and isinstance(status, int) and status < 400)


def quiet_polling_access_log() -> None:
    """Install PollingFilter on uvicorn's access logger (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, PollingFilter) for f in access.filters):
        access.addFilter(PollingFilter())
