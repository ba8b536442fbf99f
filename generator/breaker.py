"""Circuit breakers of provider pool members: closed -> open -> half-open -> closed or open.

A breaker lives in one process; `adopt_open` lets a worker take on what a peer process found
(a member another worker saw fail is down for this one too: they share its key and endpoint).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# Error classes that count toward opening a breaker, and those that open it at once.
COUNTED = frozenset({"server_error", "timeout", "connection"})
OPENS_AT_ONCE = frozenset({"auth", "permission", "quota"})
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    """When a member is taken out of rotation and how it comes back."""

    failures: int = 5  # consecutive 5xx / timeouts / connection errors that open the breaker
    cooldown_s: float = 30.0  # open -> half-open; doubles after each failed probe
    auth_cooldown_s: float = 300.0  # after a 401/403: a key is fixed by a person, not a retry
    max_cooldown_s: float = 600.0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"failures must be >= 1, got {self.failures}")
        if min(self.cooldown_s, self.auth_cooldown_s, self.max_cooldown_s) <= 0:
            raise ValueError("cool-downs must be > 0")


class CircuitBreaker:
    """closed -> open (after failures) -> half_open (after a cool-down) -> closed or open."""

    def __init__(
        self, policy: BreakerPolicy, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.cooldown_s = policy.cooldown_s
        self.probing = False  # a half-open probe is in flight
        self.opened_count = 0

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if self.clock() >= self.opened_at + self.cooldown_s else OPEN

    def retry_in_s(self) -> float:
        """Seconds until a probe may be sent (0 when requests may go now)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_s - self.clock())

    def available(self) -> bool:
        """Whether a request may be sent now (half-open: one probe at a time)."""
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and not self.probing)

    def begin(self) -> None:
        """A request is being sent; in half-open it is the probe."""
        if self.state == HALF_OPEN:
            self.probing = True

    def release(self) -> None:
        """A request ended without an answer that tells anything (e.g. cancelled)."""
        self.probing = False

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.opened_at = None
        self.cooldown_s = self.policy.cooldown_s
        self.probing = False

    def record_failure(self, error_class: str) -> None:
        probe = self.probing
        self.probing = False
        if error_class in OPENS_AT_ONCE:
            self.consecutive_failures += 1
            self._open(max(self.policy.auth_cooldown_s, self.cooldown_s if probe else 0.0))
        elif error_class in COUNTED:
            self.consecutive_failures += 1
            if probe:
                self._open(min(self.cooldown_s * 2, self.policy.max_cooldown_s))
            elif self.opened_at is None and self.consecutive_failures >= self.policy.failures:
                self._open(self.policy.cooldown_s)
        elif probe:
            self.record_success()  # the member answered: it is up, whatever it said

    def adopt_open(self, retry_in_s: float) -> bool:
        """Open for `retry_in_s` because another process reports the member open; True when
        this changed the state. Only a closed breaker adopts: its own open state, back-off
        and probe are this process's evidence and stay. Not counted in `opened_count`: the
        process that opened it counted it."""
        if self.opened_at is not None or retry_in_s <= 0:
            return False
        self.opened_at = self.clock()
        self.cooldown_s = min(retry_in_s, self.policy.max_cooldown_s)
        self.probing = False
        return True

    def _open(self, cooldown_s: float) -> None:
        self.opened_at = self.clock()
        self.cooldown_s = cooldown_s
        self.opened_count += 1
