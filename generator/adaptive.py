"""Adaptive concurrency and timeouts per model, learned from the provider's own answers.

Without streaming there is no time to first token, so the signal is completion time per
generated token (s/token): flat while the server has room, growing with its queue. Per model:

* Concurrency is AIMD. A *round* is up to `round_answers` answers to requests sent since the
  limit last changed. Its median s/token against the baseline (the lowest 20th-percentile s/token
  of the last `baseline_rounds` rounds; a low quantile, so that a first wave sent into a queue
  still finds the unqueued answers) says whether the server queues: then the limit is cut,
  in proportion to how far (x0.5 to x0.9). Overload answers (timeouts, 5xx, failed connections,
  429) halve it, once per limit: answers to requests sent before a cut do not cut again. A
  healthy round that used the whole limit adds 1. The limit never drops below 1 nor exceeds
  `max_concurrency` or what the rate limits can admit (Little's law: requests/s x latency).
* Timeouts: `timeout_margin` x the `timeout_quantile` of s/token x the tokens the request may
  generate (its `max_tokens`), between `min_timeout_s` and `max_timeout_s`; until the first
  answer, the client's configured timeout. In-flight deadlines follow the estimate, so a first
  wave is not given up on while the server works through it. A timeout may still be billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import statistics
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from generator.errors import ProviderError
from generator.limit_headers import minute_limit
from generator.ratelimit import ModelLimits

log = logging.getLogger(__name__)

T = TypeVar("T")

# Answers that say the server (or its admission) is overloaded: back off.
OVERLOAD_ERRORS = frozenset({"timeout", "server_error", "connection", "rate_limit"})
# Concurrency above rate x p99 latency x this cannot raise throughput: the rate limit binds.
RATE_HEADROOM = 2.0
_RECOMPUTE_EVERY = 8  # answers between two sorts of the history (a sort per answer costs CPU)
_current_slot: contextvars.ContextVar[Slot | None] = contextvars.ContextVar("slot", default=None)


@dataclass(frozen=True)
class AdaptiveConfig:
    """How concurrency and timeouts adapt; `enabled=False` keeps both fixed (the client's)."""

    enabled: bool = True
    max_concurrency: int = 256
    latency_tolerance: float = 2.0  # round median s/token over the baseline that means a queue
    # ...and at least this many seconds more per answer: hosted APIs (and this client's own event
    # loop at hundreds of requests/s) jitter by about a second without any queue to shrink.
    min_queue_delay_s: float = 2.0
    round_answers: int = 16
    baseline_rounds: int = 32
    min_timeout_s: float = 10.0  # the floor: a fast model's timeout is never shorter
    max_timeout_s: float = 600.0
    timeout_margin: float = 2.0
    timeout_quantile: float = 0.99
    history: int = 256  # answers kept per model for the timeout distribution

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.latency_tolerance <= 1.0:
            raise ValueError(f"latency_tolerance must be > 1, got {self.latency_tolerance}")
        if not 0 < self.min_timeout_s <= self.max_timeout_s:
            raise ValueError("min_timeout_s must be > 0 and <= max_timeout_s")
        if self.round_answers < 1 or self.baseline_rounds < 1 or self.history < 1:
            raise ValueError("round_answers, baseline_rounds and history must be >= 1")
        if not 0 < self.timeout_quantile <= 1 or self.timeout_margin < 1:
            raise ValueError("timeout_quantile must be in (0, 1] and timeout_margin >= 1")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def deadline_expired() -> bool:
    """Whether this task's request was cut by its adaptive deadline (a pool counts it)."""
    slot = _current_slot.get()
    return slot is not None and slot.scope is not None and slot.scope.expired()


@dataclass(eq=False)
class Slot:
    """One request's place under the limit: when and under which limit it was sent."""

    model: str
    epoch: int
    max_tokens: int | None
    sent_at: float = 0.0  # loop time when the request went out
    scope: asyncio.Timeout | None = None
    # (latency s, prompt tokens, completion tokens, error class, headers) once it ended
    outcome: tuple[float, int, int, str | None, Mapping[str, str] | None] | None = None
    controller: AdaptiveController | None = field(default=None, repr=False)

    @property
    def client_timeout_s(self) -> float | None:
        """The transport's own timeout: only a backstop while the adaptive deadline governs."""
        if self.controller is None or not self.controller.config.enabled:
            return None
        return max(self.controller.config.max_timeout_s, self.controller.initial_timeout_s) + 5.0

    async def call(self, request: Awaitable[T]) -> T:
        """Await the request under this slot's deadline; learn from its answer or failure."""
        controller = self.controller
        if controller is None or not controller.config.enabled:
            return await request
        state = controller.state(self.model)
        loop = asyncio.get_running_loop()
        self.sent_at = loop.time()
        token = _current_slot.set(self)
        try:
            async with asyncio.timeout_at(self.sent_at + state.timeout_s(self.max_tokens)) as scope:
                self.scope = scope
                state.scopes.add(self)
                result: Any = await request
        except ProviderError as exc:
            usage = (exc.prompt_tokens, exc.completion_tokens)
            self.outcome = (exc.latency_s, *usage, exc.error_class, exc.headers)
            raise
        except TimeoutError:
            if not scope.expired():
                raise
            waited = loop.time() - self.sent_at
            allowed_s = (scope.when() or loop.time()) - self.sent_at
            self.outcome = (waited, 0, 0, "timeout", None)
            raise ProviderError(
                "timeout",
                message=f"no answer within {allowed_s:.3g} s (adaptive timeout)",
                latency_s=waited,
                maybe_billed=True,  # sent: the provider may finish (and bill) it anyway
            ) from None
        finally:
            _current_slot.reset(token)
            state.scopes.discard(self)
            self.scope = None
        self.outcome = (
            result.latency_s,
            result.prompt_tokens,
            result.completion_tokens,
            None,
            result.headers,
        )
        return result


class ModelState:
    """Limit, in-flight count, rounds and answer history of one model."""

    def __init__(
        self, config: AdaptiveConfig, limits: ModelLimits | None, initial_timeout_s: float
    ) -> None:
        self.config = config
        self.initial_timeout_s = initial_timeout_s
        self.limit = float(config.max_concurrency)
        self.in_flight = 0
        self.epoch = 0
        self.epoch_peak = 0  # most requests in flight while this limit held
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.round: list[tuple[float, int]] = []  # (s/token, completion tokens)
        self.round_floors: deque[float] = deque(maxlen=config.baseline_rounds)
        self.per_token: deque[float] = deque(maxlen=config.history)
        self.latency: deque[float] = deque(maxlen=config.history)
        self.completion: deque[int] = deque(maxlen=config.history)
        self.rpm = limits.rpm if limits else None
        self.tpm = limits.tpm if limits else None
        self.request_tokens: float | None = None  # moving average of prompt + completion
        self.scopes: set[Slot] = set()
        self.answers = 0
        self.cuts = 0
        self.per_token_q: float | None = None  # the timeout quantile of s/token
        self._applied_q: float | None = None  # the quantile in-flight deadlines were set from
        self._bound = math.inf

    # -- concurrency ---------------------------------------------------------------------------

    def allowed(self) -> int:
        """Requests that may be in flight now: the limit, within the rate-limit bound."""
        return max(1, int(min(self.limit, self.bound())))

    def bound(self) -> float:
        """The ceiling: `max_concurrency`, and what the rate limits can admit. Kept apart from
        the limit: a bound that rises again (longer answers) frees what it held back."""
        return min(float(self.config.max_concurrency), self._bound)

    def _set_limit(self, value: float, reason: str) -> None:
        old = self.limit
        self.limit = min(float(self.config.max_concurrency), max(1.0, value))
        if self.limit == old:
            return
        self.epoch += 1
        self.epoch_peak = self.in_flight
        self.round = []
        level = logging.INFO if self.limit < old else logging.DEBUG
        log.log(level, "adaptive_limit limit=%.1f was=%.1f reason=%s", self.limit, old, reason)

    def _wake(self) -> None:
        while self.waiters and self.in_flight < self.allowed():
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                self.epoch_peak = max(self.epoch_peak, self.in_flight)
                waiter.set_result(None)

    def learn(
        self,
        slot: Slot,
        *,
        latency_s: float,
        completion_tokens: int,
        error_class: str | None,
        headers: Mapping[str, str] | None = None,
        prompt_tokens: int = 0,
    ) -> None:
        """Adapt to one answer (or failure) of a request sent under `slot`."""
        self.answers += 1
        if headers:
            self._learn_limits(headers)
        if error_class in OVERLOAD_ERRORS:
            if slot.epoch == self.epoch:  # the first overload since the limit last changed
                self.cuts += 1
                self._set_limit(min(self.limit, self.bound()) * 0.5, error_class or "error")
            return
        if error_class is not None or completion_tokens <= 0:
            return  # says nothing about the server's speed
        per_token = latency_s / completion_tokens
        self.per_token.append(per_token)
        self.latency.append(latency_s)
        self.completion.append(completion_tokens)
        tokens = prompt_tokens + completion_tokens
        previous = tokens if self.request_tokens is None else self.request_tokens
        self.request_tokens = 0.9 * previous + 0.1 * tokens
        if len(self.per_token) <= _RECOMPUTE_EVERY or self.answers % _RECOMPUTE_EVERY == 0:
            self._recompute()
        if slot.epoch != self.epoch:
            return  # sent under an older limit: says nothing about this one
        self.round.append((per_token, completion_tokens))
        # Half the limit: the next decision need not wait for a whole limit's worth of answers,
        # which on a slow server sitting in a queue would take minutes.
        if len(self.round) >= min(self.config.round_answers, max(4, self.allowed() // 2)):
            self._end_round()

    def _end_round(self) -> None:
        speeds = [s for s, _ in self.round]
        median = statistics.median(speeds)
        tokens = statistics.median(t for _, t in self.round)
        # This round's own floor counts: a first wave sent into a queue shows it at once.
        self.round_floors.append(_quantile(speeds, 0.2))
        baseline = min(self.round_floors)
        self.round = []
        config = self.config
        queued = (
            median > config.latency_tolerance * baseline
            and (median - baseline) * tokens > config.min_queue_delay_s
        )
        if queued:
            self.cuts += 1
            factor = min(0.9, max(0.5, config.latency_tolerance * baseline / median))
            reason = f"latency x{median / baseline:.2f}"
            self._set_limit(min(self.limit, self.bound()) * factor, reason)
        elif self.epoch_peak >= self.allowed() and self.limit < self.bound():
            self._set_limit(self.limit + 1, "healthy")

    def _learn_limits(self, headers: Mapping[str, str]) -> None:
        self.rpm = self.rpm or minute_limit(headers, "requests")
        self.tpm = self.tpm or minute_limit(headers, "tokens")

    def _recompute(self) -> None:
        """Refresh the timeout quantile and the rate-limit bound; move in-flight deadlines."""
        self.per_token_q = _quantile(list(self.per_token), self.config.timeout_quantile)
        rates = []
        if self.rpm:
            rates.append(self.rpm / 60.0)
        if self.tpm and self.request_tokens:
            rates.append(self.tpm / 60.0 / self.request_tokens)
        # Only from a full history: the first answers of a wave are its fastest ones, and a bound
        # from their latency would hold back the concurrency the rate limits need.
        if rates and len(self.latency) == self.config.history:
            latency = _quantile(list(self.latency), 0.99)
            self._bound = max(1.0, math.ceil(min(rates) * latency * RATE_HEADROOM))
        # Move in-flight deadlines only on a real change: 256 reschedules per answer cost CPU.
        if self._applied_q and abs(self.per_token_q / self._applied_q - 1) < 0.1:
            return
        self._applied_q = self.per_token_q
        for slot in list(self.scopes):
            if slot.scope is not None:
                slot.scope.reschedule(slot.sent_at + self.timeout_s(slot.max_tokens))

    # -- timeouts ------------------------------------------------------------------------------

    def timeout_s(self, max_tokens: int | None) -> float:
        """Seconds a request may take: learned once answers came, the configured one before."""
        if self.per_token_q is None:
            return self.initial_timeout_s
        tokens = max_tokens or max(256, 2 * max(self.completion))
        learned = self.config.timeout_margin * self.per_token_q * tokens
        return min(self.config.max_timeout_s, max(self.config.min_timeout_s, learned))


class AdaptiveController:
    """Per-model adaptive concurrency and timeouts, shared by every engine on one client."""

    def __init__(
        self,
        config: AdaptiveConfig | None = None,
        *,
        initial_timeout_s: float = 60.0,
        limits: Mapping[str, ModelLimits] | None = None,
    ) -> None:
        self.config = config or AdaptiveConfig()
        self.initial_timeout_s = initial_timeout_s
        self.limits = dict(limits or {})
        self._states: dict[str, ModelState] = {}

    def state(self, model: str) -> ModelState:
        state = self._states.get(model)
        if state is None:
            state = self._states[model] = ModelState(
                self.config, self.limits.get(model), self.initial_timeout_s
            )
        return state

    def snapshot(self, model: str) -> dict[str, Any]:
        """What was learned about `model` (for logs, benchmarks and tests)."""
        state = self.state(model)
        return {
            "limit": state.limit,
            "in_flight": state.in_flight,
            "timeout_s": state.timeout_s(None),
            "per_token_s": state.per_token_q,
            "answers": state.answers,
            "cuts": state.cuts,
        }

    def timeout_s(self, model: str, max_tokens: int | None) -> float:
        """The current timeout for a request to `model` allowed `max_tokens`."""
        if not self.config.enabled:
            return self.initial_timeout_s
        return self.state(model).timeout_s(max_tokens)

    @contextlib.asynccontextmanager
    async def slot(self, model: str, max_tokens: int | None) -> AsyncIterator[Slot]:
        """Wait for room under `model`'s limit; on exit free it and learn from the answer."""
        if not self.config.enabled:
            yield Slot(model, 0, max_tokens, controller=self)
            return
        state = self.state(model)
        if not state.waiters and state.in_flight < state.allowed():
            state.in_flight += 1
            state.epoch_peak = max(state.epoch_peak, state.in_flight)
        else:
            waiter = asyncio.get_running_loop().create_future()
            state.waiters.append(waiter)
            try:
                await waiter  # the releasing request counted us in
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    state.in_flight -= 1
                    state._wake()
                else:
                    with contextlib.suppress(ValueError):
                        state.waiters.remove(waiter)
                raise
        slot = Slot(model, state.epoch, max_tokens, controller=self)
        try:
            yield slot
        finally:
            state.in_flight -= 1
            if slot.outcome is not None:
                latency, prompt, completion, error_class, headers = slot.outcome
                state.learn(
                    slot,
                    latency_s=latency,
                    completion_tokens=completion,
                    error_class=error_class,
                    headers=headers,
                    prompt_tokens=prompt,
                )
            state._wake()


_shared: weakref.WeakKeyDictionary[Any, AdaptiveController] = weakref.WeakKeyDictionary()


def shared_controller(client: Any) -> AdaptiveController:
    """The default controller of `client`: engines sharing a client share what it learned."""
    controller = _shared.get(client)
    if controller is None:
        timeout = getattr(client, "timeout_s", None) or 60.0
        controller = _shared[client] = AdaptiveController(initial_timeout_s=float(timeout))
    return controller
