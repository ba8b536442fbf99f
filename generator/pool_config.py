"""Reading provider pools from a YAML or JSON file, or from the environment.

TINYSTORIES_PROVIDERS names the file (or holds the JSON itself, starting with `{`). Keys are
best given by name (`api_key_env: OPENAI_API_KEY`) so the file can be shared; a literal
`api_key` is accepted for local endpoints. The format is documented in docs/providers.md.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from generator.breaker import BreakerPolicy
from generator.pool import MemberConfig, ProviderPool, ProviderPools

PROVIDERS_ENV = "TINYSTORIES_PROVIDERS"
_MEMBER_KEYS = {"name", "base_url", "api_key", "api_key_env", "weight", "model", "rpm", "tpm"}
_MEMBER_KEYS |= {"timeout_s"}
_BREAKER_KEYS = {"failures", "cooldown_s", "auth_cooldown_s", "max_cooldown_s"}


class PoolConfigError(ValueError):
    """A providers file that cannot be used; the message names the place."""


def _breaker(data: object, where: str, base: BreakerPolicy) -> BreakerPolicy:
    if data is None:
        return base
    if not isinstance(data, dict) or set(data) - _BREAKER_KEYS:
        raise PoolConfigError(f"{where}: `breaker` takes only {', '.join(sorted(_BREAKER_KEYS))}")
    values = {**base.__dict__, **data}
    try:
        return BreakerPolicy(**values)
    except (TypeError, ValueError) as exc:
        raise PoolConfigError(f"{where}.breaker: {exc}") from None


def _member(data: object, where: str, env: Mapping[str, str]) -> MemberConfig:
    if not isinstance(data, dict):
        raise PoolConfigError(f"{where}: a member must be a mapping")
    unknown = set(data) - _MEMBER_KEYS
    if unknown:
        raise PoolConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for required in ("name", "base_url"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise PoolConfigError(f"{where}: `{required}` is required")
    values = {k: v for k, v in data.items() if k != "api_key_env"}
    key_env = data.get("api_key_env")
    if key_env is not None:
        if "api_key" in data:
            raise PoolConfigError(f"{where}: give `api_key` or `api_key_env`, not both")
        if not env.get(key_env):
            raise PoolConfigError(f"{where}: environment variable {key_env} is not set")
        values["api_key"] = env[key_env]
    try:
        return MemberConfig(**values)
    except (TypeError, ValueError) as exc:
        raise PoolConfigError(f"{where}: {exc}") from None


def pools_from_dict(
    data: object,
    *,
    env: Mapping[str, str] | None = None,
    rng: random.Random | None = None,
    source: str = "providers",
) -> ProviderPools:
    """Pools from parsed configuration (`{breaker: ..., pools: {MODEL: {members: [...]}}}`)."""
    env = os.environ if env is None else env
    if not isinstance(data, dict) or not isinstance(data.get("pools"), dict) or not data["pools"]:
        raise PoolConfigError(f"{source}: expected a mapping with `pools: {{MODEL: ...}}`")
    unknown = set(data) - {"pools", "breaker"}
    if unknown:
        raise PoolConfigError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
    default = _breaker(data.get("breaker"), source, BreakerPolicy())
    pools = []
    for model, spec in data["pools"].items():
        where = f"{source}: pools.{model}"
        if not isinstance(spec, dict) or set(spec) - {"members", "breaker"}:
            raise PoolConfigError(f"{where}: takes `members` and optionally `breaker`")
        members = spec.get("members")
        if not isinstance(members, list) or not members:
            raise PoolConfigError(f"{where}: `members` must be a non-empty list")
        configs = [_member(m, f"{where}.members[{i}]", env) for i, m in enumerate(members)]
        try:
            pools.append(
                ProviderPool(
                    str(model),
                    configs,
                    policy=_breaker(spec.get("breaker"), where, default),
                    rng=rng,
                )
            )
        except ValueError as exc:
            raise PoolConfigError(f"{where}: {exc}") from None
    return ProviderPools(pools)


def load_pools(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    rng: random.Random | None = None,
) -> ProviderPools | None:
    """Pools from `path`, else from TINYSTORIES_PROVIDERS; None when neither is given."""
    env = os.environ if env is None else env
    spec = str(path) if path is not None else env.get(PROVIDERS_ENV, "").strip()
    if not spec:
        return None
    if spec.startswith("{"):
        source, text = PROVIDERS_ENV, spec
    else:
        source = spec
        try:
            text = Path(spec).read_text(encoding="utf-8")
        except OSError as exc:
            raise PoolConfigError(f"{spec}: cannot read: {exc.strerror}") from None
    try:
        data: Any = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PoolConfigError(f"{source}: not valid YAML or JSON: {exc}") from None
    return pools_from_dict(data, env=env, rng=rng, source=source)
