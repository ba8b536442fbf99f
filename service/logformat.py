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
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


def configure_from_env(default_level: int | str = logging.INFO) -> None:
    """configure_logging from TINYSTORIES_LOG_FORMAT and TINYSTORIES_LOG_LEVEL."""
    configure_logging(
        os.environ.get(LOG_FORMAT_ENV, "text"), os.environ.get(LOG_LEVEL_ENV) or default_level
    )
