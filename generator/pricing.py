"""Request cost: USD per million input, cached input and output tokens per model, with the
batch discount."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

PRICING_ENV = "TINYSTORIES_PRICING"
# Comma-separated model names (or "prefix*") served locally (llama.cpp, vLLM, Ollama): free.
LOCAL_MODELS_ENV = "TINYSTORIES_LOCAL_MODELS"
DEFAULT_PRICING_FILE = Path(__file__).parent / "pricing.yaml"
_PER = 1_000_000
_SIDES = ("input", "cached_input", "output")
_REQUIRED = {"input", "output"}
_ALLOWED = set(_SIDES)
# Dated snapshots ("gpt-4o-2024-08-06", "gpt-4-0613", "gpt-3.5-turbo-0125") cost what their
# base model costs unless the table lists the snapshot itself.
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


def price_hint(model: str, flags: str | None = None) -> str:
    """One line saying how to price `model`: the command's own flags first (e.g.
    "--price-input 0 --price-output 0"), then the environment, then a pricing file."""
    ways = [f"pass {flags} (USD per 1M tokens)"] if flags else []
    ways += [
        f"set {LOCAL_MODELS_ENV}={model} for a local model (price 0)",
        f"name a YAML file in {PRICING_ENV} "
        f"(`models: {{{model}: {{input: USD_PER_1M, output: USD_PER_1M}}}}`)",
    ]
    return "; or ".join(ways)


def no_price_message(model: str, flags: str | None = None) -> str:
    """The one-line error for a model without a price, with how to set one."""
    return f"no price for model {model!r}: {price_hint(model, flags)}"


class PricingError(ValueError):
    """A pricing file that cannot be used."""


class UnknownModelPrice(LookupError):
    """No price is known for a model."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(no_price_message(model))


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens. `cached_input` bills the prompt tokens a provider served from its
    prompt cache; None bills them at `input` (local models, providers without a discount)."""

    input: float
    output: float
    cached_input: float | None = None

    @property
    def cached(self) -> float:
        """USD per million cached prompt tokens."""
        return self.input if self.cached_input is None else self.cached_input


class PriceTable:
    """Prices by model name; exact names first, then dated snapshots, then "prefix*" entries."""

    def __init__(self, prices: Mapping[str, ModelPrice], *, batch_discount: float = 0.5) -> None:
        if not 0.0 <= batch_discount < 1.0:
            raise PricingError(f"batch_discount must be in [0, 1), got {batch_discount!r}")
        self.batch_discount = batch_discount
        self._exact = {name.lower(): p for name, p in prices.items() if not name.endswith("*")}
        # Longest prefix first so "simulator-judge-*" wins over "simulator-*".
        self._prefixes = sorted(
            ((name[:-1].lower(), p) for name, p in prices.items() if name.endswith("*")),
            key=lambda item: -len(item[0]),
        )

    @classmethod
    def load(cls, path: str | Path | None = None, *, local_models: str | None = None) -> PriceTable:
        """Packaged prices, overridden by `path` or else the file named by TINYSTORIES_PRICING,
        then the local models (`local_models`, else TINYSTORIES_LOCAL_MODELS) at price 0."""
        data = _read(DEFAULT_PRICING_FILE)
        prices = _parse_models(data, f"pricing file {DEFAULT_PRICING_FILE}")
        discount = _parse_discount(data, DEFAULT_PRICING_FILE, 0.5)
        override = path if path is not None else os.environ.get(PRICING_ENV) or None
        if override is not None:
            extra = _read(Path(override))
            prices.update(_parse_models(extra, f"pricing file {override}", required=False))
            discount = _parse_discount(extra, Path(override), discount)
            logger.info("pricing override loaded file=%s models=%d", override, len(prices))
        local = local_models if local_models is not None else os.environ.get(LOCAL_MODELS_ENV, "")
        names = [n.strip() for n in local.split(",") if n.strip()]
        if names:
            prices.update({name: ModelPrice(0.0, 0.0) for name in names})
            logger.info("local models priced at 0: %s", ", ".join(names))
        return cls(prices, batch_discount=discount)

    def with_prices(self, prices: Mapping[str, Mapping[str, float]]) -> PriceTable:
        """A new table where each model of `prices` ({model: {"input": usd_per_1m, "output":
        usd_per_1m}}, optionally "cached_input") costs that, over any entry it had (cached
        prompt tokens at the input price unless given); the batch discount is kept."""
        added = _parse_models({"models": dict(prices)}, "prices", required=False)
        return PriceTable({**self.models(), **added}, batch_discount=self.batch_discount)

    def price(self, model: str) -> ModelPrice:
        """The price entry that applies to `model`; UnknownModelPrice otherwise."""
        name = model.strip().lower()
        if name.startswith("openai/"):
            name = name[len("openai/") :]
        candidates = [name]
        base = _DATE_SUFFIX.sub("", name)
        if base != name:
            candidates.append(base)
        for candidate in candidates:
            if candidate in self._exact:
                return self._exact[candidate]
        for prefix, price in self._prefixes:
            if name.startswith(prefix):
                return price
        raise UnknownModelPrice(model)

    def has(self, model: str) -> bool:
        """Whether a price applies to `model`."""
        try:
            self.price(model)
        except UnknownModelPrice:
            return False
        return True

    def cost(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        batch: bool = False,
        cached_tokens: int = 0,
    ) -> float:
        """USD for one request's usage; `cached_tokens` of the prompt (those the provider served
        from its prompt cache, part of `prompt_tokens`) at the cached input price."""
        if prompt_tokens < 0 or completion_tokens < 0 or cached_tokens < 0:
            raise ValueError(
                f"token counts must be >= 0, got prompt={prompt_tokens} "
                f"completion={completion_tokens} cached={cached_tokens}"
            )
        price = self.price(model)
        cached = min(cached_tokens, prompt_tokens)  # a provider never caches more than it read
        usd = (
            (prompt_tokens - cached) * price.input
            + cached * price.cached
            + completion_tokens * price.output
        ) / _PER
        if batch:
            usd *= 1.0 - self.batch_discount
        return usd

    def models(self) -> dict[str, ModelPrice]:
        """Every entry, prefix entries with their trailing "*"."""
        out = dict(self._exact)
        out.update({f"{prefix}*": price for prefix, price in self._prefixes})
        return out


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PricingError(f"pricing file {path}: file not found") from None
    except OSError as exc:
        raise PricingError(f"pricing file {path}: cannot read: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise PricingError(
            f"pricing file {path}, line {exc.lineno}: invalid JSON: {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        raise PricingError(f"pricing file {path}: invalid YAML: {exc}") from None


def _parse_discount(data: Mapping[str, Any], path: Path, default: float) -> float:
    value = data.get("batch_discount", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise PricingError(f"pricing file {path}: batch_discount must be in [0, 1), got {value!r}")
    return float(value)


def _parse_models(data: Any, where: str, *, required: bool = True) -> dict[str, ModelPrice]:
    if not isinstance(data, dict):
        raise PricingError(f"{where}: expected a mapping with `models:`")
    unknown = set(data) - {"models", "batch_discount"}
    if unknown:
        raise PricingError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    models = data.get("models")
    if models is None and not required:
        return {}
    if not isinstance(models, dict) or (required and not models):
        raise PricingError(f"{where}: `models` must map model names to prices")
    prices = {}
    for name, entry in models.items():
        if not isinstance(entry, dict) or not _REQUIRED <= set(entry) <= _ALLOWED:
            raise PricingError(
                f"{where}: model {name!r} needs `input` and `output`, optionally `cached_input` "
                "(USD per 1M tokens), and nothing else"
            )
        values = {}
        for side in (s for s in _SIDES if s in entry):
            value = entry[side]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise PricingError(
                    f"{where}: model {name!r} {side} price must be a number >= 0, got {value!r}"
                )
            values[side] = float(value)
        # A cache hit that cost more than a miss is a typo (per 1K instead of per 1M, say).
        if values.get("cached_input", 0.0) > values["input"]:
            raise PricingError(
                f"{where}: model {name!r} cached_input price {values['cached_input']:g} is "
                f"above its input price {values['input']:g}"
            )
        prices[str(name)] = ModelPrice(**values)
    return prices
