"""Which Batch API endpoint a batch goes to: a pooled model's batches spread over its members.

A batch is created on one endpoint and read back from the same one, so the member is chosen
once, when its file is uploaded (weighted, among members whose breaker lets a call through,
as an online call is routed), stored with the batch, and every later call of that batch goes
to it. Models without a pool, and every model when no pools are configured, use the single
provider (`OPENAI_BASE_URL` / `OPENAI_API_KEY`), as online calls do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from generator.errors import ProviderError


class BatchClients:
    """Batch API clients by member; `single()` makes the single provider's on first use."""

    def __init__(self, single: Callable[[], Any], pools: Any = None) -> None:
        self._make_single = single
        self._single: Any = None
        self.pools = pools  # generator.pool.ProviderPools, or None
        self._members: dict[Any, Any] = {}  # PoolMember -> its BatchClient

    def pooled(self, model: str) -> bool:
        return self.pools is not None and model in self.pools.pools

    def choose(self, model: str) -> Any:
        """The member that will hold a new batch of `model` (None: the single provider).

        Counts as a call on the member: `record` its outcome. ProviderError (retryable) when
        no member is available."""
        if not self.pooled(model):
            return None
        return self.pools.pools[model].choose()

    def member(self, model: str, name: str | None) -> Any:
        """The pool member `name` of `model`'s pool, or None for the single provider."""
        if name is None:
            return None
        pool = self.pools.pools.get(model) if self.pools is not None else None
        found = next((m for m in pool.members if m.name == name), None) if pool else None
        if found is None:  # the file changed while the batch was at the provider
            raise ProviderError(
                "not_found",
                message=f"this batch lives on pool member {name!r} of {model!r}, which "
                "TINYSTORIES_PROVIDERS no longer names; put it back to finish the batch",
                retryable=True,
            )
        return found

    def client(self, member: Any) -> Any:
        """The Batch API client of `member` (None: the single provider)."""
        if member is None:
            if self._single is None:
                self._single = self._make_single()
            return self._single
        if member not in self._members:
            self._members[member] = member.batch_client()
        return self._members[member]

    @staticmethod
    def request_model(model: str, member: Any) -> str:
        """The model name the request file carries: a member's own name for it (a deployment)."""
        return (member.config.model if member is not None else None) or model

    async def aclose(self) -> None:
        """Close every client made so far."""
        made = [self._single, *self._members.values()]
        self._single, self._members = None, {}
        for client in made:
            if client is not None:
                await client.aclose()
