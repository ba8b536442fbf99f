"""Prompt caching the way OpenAI reports it, and usage in OpenAI's or DeepSeek's shape.

OpenAI caches prompts of 1024 tokens or more: when the same model reads a prompt whose leading
tokens it read recently, the longest such prefix (1024 tokens, then in steps of 128) is served
from cache and reported as `usage.prompt_tokens_details.cached_tokens`. Story prompts are far
shorter, so for them this costs one comparison; longer prompts (judge turns, long
conversations) are hashed once, in chunks ending at each step.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from typing import Any

from cachetools import TTLCache

MIN_CACHED_TOKENS = 1024  # OpenAI caches nothing of a shorter prompt
CACHE_STEP_TOKENS = 128  # cache hits grow in steps of this many tokens
CACHE_TTL_S = 300.0  # OpenAI keeps a prefix 5 to 10 minutes after its last use
_MAX_PREFIXES = 200_000  # bounds the memory of a long benchmark (~100 bytes each)
_MESSAGE_OVERHEAD = 3  # tokens per message besides its content, as the simulator bills them
# The simulator's tokenizer (its `count_tokens` bills by it): words and punctuation marks.
TOKEN = re.compile(r"\w+|[^\w\s]")
USAGE_STYLES = ("openai", "deepseek")


class PromptCache:
    """Prefixes each model read recently, keyed by a hash of the model and the prefix."""

    def __init__(self, *, ttl_s: float = CACHE_TTL_S, max_prefixes: int = _MAX_PREFIXES) -> None:
        # Reading a prefix again renews its time to live; the least recent goes when full.
        self._seen: TTLCache[bytes, bool] = TTLCache(
            maxsize=max_prefixes, ttl=ttl_s, timer=time.monotonic
        )

    def cached_tokens(self, model: str, messages: list[dict], prompt_tokens: int) -> int:
        """How many leading tokens of this prompt were cached; its prefixes are remembered
        (or refreshed) for the requests after it."""
        if prompt_tokens < MIN_CACHED_TOKENS:
            return 0
        cached, contiguous = 0, True
        for length, key in _prefix_keys(model, messages):
            # A cache hit is one unbroken prefix: a longer one counts only after shorter ones.
            contiguous = contiguous and key in self._seen
            if contiguous:
                cached = length
            self._seen[key] = True
        return min(cached, prompt_tokens)


def _prefix_keys(model: str, messages: list[dict]) -> Iterator[tuple[int, bytes]]:
    """(length, hash of the model and the first `length` tokens) for each cacheable length."""
    digest = hashlib.blake2b(model.encode(), digest_size=16)
    count, boundary = 0, MIN_CACHED_TOKENS
    for message in messages:
        digest.update(f"\x00{message.get('role')}\x00".encode())
        count += _MESSAGE_OVERHEAD
        while boundary <= count:  # a step that ends within a message's own tokens
            yield boundary, digest.digest()
            boundary += CACHE_STEP_TOKENS
        content = str(message.get("content") or "")
        ends = [token.end() for token in TOKEN.finditer(content)]
        start = 0
        while boundary <= count + len(ends):
            end = ends[boundary - count - 1]
            digest.update(content[start:end].encode())
            start = end
            yield boundary, digest.digest()
            boundary += CACHE_STEP_TOKENS
        digest.update(content[start:].encode())
        count += len(ends)


def usage_body(style: str, prompt_tokens: int, completion_tokens: int, cached: int) -> dict:
    """An answer's `usage`: OpenAI's, always with `prompt_tokens_details`; or DeepSeek's, whose
    cache hits and misses add up to the prompt."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if style == "deepseek":
        usage["prompt_cache_hit_tokens"] = cached
        usage["prompt_cache_miss_tokens"] = prompt_tokens - cached
    else:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage
