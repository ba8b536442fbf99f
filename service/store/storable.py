"""What text Postgres can store, checked before a request reaches the database.

JSON allows a lone surrogate ("\\ud800") that UTF-8 cannot encode, and a NUL character that
Postgres text columns refuse: both must be a 422 naming the field, not a database error.
"""

from __future__ import annotations

from typing import Any


def lone_surrogate_at(value: Any, path: str = "") -> str | None:
    """The field path of the first string (or key) holding a lone surrogate, else None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = lone_surrogate_at(key, path) or lone_surrogate_at(
                item, f"{path}.{key}" if path else str(key)
            )
            if found:
                return found
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = lone_surrogate_at(item, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None


def refuse_lone_surrogates(value: Any, field: str) -> Any:
    """`value` unchanged; ValueError naming where it holds a lone surrogate (a pydantic
    `mode="before"` validator body, so the 422 names the field)."""
    where = lone_surrogate_at(value, field)
    if where is not None:
        raise ValueError(f"text must be valid unicode: a lone surrogate at {where}")
    return value


def has_nul(value: str) -> bool:
    """True when Postgres would refuse the text (it cannot hold NUL characters)."""
    return "\x00" in value
