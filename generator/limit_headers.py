"""Reading the providers' `x-ratelimit-*` headers: reset durations and per-minute limits."""

from __future__ import annotations

import re
from collections.abc import Mapping

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str | None) -> float | None:
    """OpenAI reset durations: `1s`, `6m0s`, `20ms`, `0.5s` or a bare number of seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts:
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def minute_limit(headers: Mapping[str, str], kind: str) -> int | None:
    """`x-ratelimit-limit-{kind}` when it is a per-minute limit, else None."""
    limit = int_header(headers, f"x-ratelimit-limit-{kind}")
    if not limit or limit < 1 or longer_than_a_minute(headers, kind):
        return None
    return limit


def longer_than_a_minute(headers: Mapping[str, str], kind: str) -> bool:
    """Whether the `{kind}` headers describe a window longer than a minute.

    Groq sends its requests-per-day limit in `x-ratelimit-limit-requests`. The reset time tells:
    a per-minute limit L refills the (L - remaining) requests used within (L - remaining) / L
    minutes, a daily one takes 1,440 times longer. A reset over a minute away settles it even
    before anything is used (a full bucket, where the used count says nothing).
    """
    limit = int_header(headers, f"x-ratelimit-limit-{kind}")
    remaining = int_header(headers, f"x-ratelimit-remaining-{kind}")
    reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}"))
    if reset is not None and reset > 61.0:
        return True
    if not limit or remaining is None or reset is None or remaining >= limit:
        return False
    return reset * limit / (limit - remaining) > 120.0


def int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None
