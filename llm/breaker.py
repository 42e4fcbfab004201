"""A circuit breaker for one provider, in one process.

closed     calls pass; each provider failure adds one to `failures`, any success resets it.
           `failure_threshold` consecutive failures open the circuit.
open       calls fail fast (the caller raises `CircuitOpen`) until `reset_seconds` have passed.
half_open  exactly one call (the probe) is let through; `acquire` refuses every other call
           while it is in flight (`probe_pending`), and `ResilientProvider` lets them wait,
           bounded, for its outcome rather than fail at once. The probe's success closes the
           circuit, its failure opens it again for another `reset_seconds`; a probe that was
           cancelled decides nothing and frees the slot.

Each call takes a `Permit` and settles it exactly once: `success()`, `failure()`,
`neutral()` (the provider answered, but the request itself was wrong: a bad request, a
filtered or too long prompt, an unknown per-request model; counts neither way, but a probe
that gets such an answer proves the provider is back) or `release()` (cancelled).

State is per process (each ASGI server and Celery worker learns on its own) and guarded by
a lock, since `async_to_sync` runs loops in other threads. The clocks are injectable.
`on_transition`, when given, is told "reopened" (a probe failed: the breaker stays open) and
"closed" (a probe succeeded), outside the lock: the operator alerts (llm/alerts.py) listen.
"""

import enum
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypedDict

logger = logging.getLogger("companion.llm")


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerSnapshot(TypedDict):
    state: str
    failures: int
    opened_at: str | None  # ISO 8601, UTC
    retry_in: float | None  # seconds until the next probe may go, while open


class Permit:
    """The right to make one call; settle it once (later settlements are ignored)."""

    __slots__ = ("_breaker", "_settled", "probe")

    def __init__(self, breaker: "CircuitBreaker", *, probe: bool) -> None:
        self._breaker = breaker
        self._settled = False
        self.probe = probe

    def success(self) -> None:
        if self._settle():
            self._breaker._on_success(self)

    def failure(self) -> None:
        if self._settle():
            self._breaker._on_failure(self)

    def neutral(self) -> None:
        if self._settle():
            self._breaker._on_neutral(self)

    def release(self) -> None:
        if self._settle():
            self._breaker._on_release(self)

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        return True


class CircuitBreaker:
    def __init__(
        self,
        *,
        name: str,
        failure_threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_transition: Callable[[str, int], None] | None = None,
    ) -> None:
        """`failure_threshold` <= 0 disables the breaker (it never opens)."""
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at: float | None = None
        self._opened_at_wall: float | None = None
        self._probe_in_flight = False
        self._on_transition = on_transition

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    def acquire(self) -> Permit | None:
        """A permit for one call, or None when the call must fail fast."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return Permit(self, probe=False)
            if self._state is BreakerState.OPEN:
                if self._retry_in() > 0:
                    return None
                self._state = BreakerState.HALF_OPEN
                self._probe_in_flight = False
            if self._probe_in_flight:
                return None
            self._probe_in_flight = True
            return Permit(self, probe=True)

    def probe_pending(self) -> bool:
        """Whether a half-open probe is in flight: its outcome decides the next calls soon."""
        with self._lock:
            return self._state is BreakerState.HALF_OPEN and self._probe_in_flight

    def retry_in(self) -> float | None:
        """Seconds until a probe may go, while open; None otherwise."""
        with self._lock:
            return self._retry_in() if self._state is BreakerState.OPEN else None

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            opened_at = (
                datetime.fromtimestamp(self._opened_at_wall, tz=UTC).isoformat()
                if self._opened_at_wall is not None and self._state is not BreakerState.CLOSED
                else None
            )
            return {
                "state": self._state.value,
                "failures": self._failures,
                "opened_at": opened_at,
                "retry_in": round(self._retry_in(), 3) if self._state is BreakerState.OPEN else None,
            }

    def reset(self) -> None:
        with self._lock:
            self._close()

    # -- transitions (called by Permit, under no lock) ------------------------------------------

    def _on_success(self, permit: Permit) -> None:
        with self._lock:
            if permit.probe:
                self._close()
                logger.warning("llm.breaker.closed", extra={"data": {"provider": self.name}})
            elif self._state is BreakerState.CLOSED:
                self._failures = 0
        if permit.probe:
            self._transition_tell("closed", 0)

    def _on_failure(self, permit: Permit) -> None:
        with self._lock:
            self._failures += 1
            failures = self._failures
            if permit.probe:
                self._probe_in_flight = False
                self._open()
            elif self._state is BreakerState.CLOSED and 0 < self.failure_threshold <= self._failures:
                self._open()
        if permit.probe:
            self._transition_tell("reopened", failures)

    def _transition_tell(self, transition: str, failures: int) -> None:
        if self._on_transition is None:
            return
        try:
            self._on_transition(transition, failures)
        except Exception:  # an observer never breaks a call
            logger.warning("llm.breaker observer failed", exc_info=True)

    def _on_neutral(self, permit: Permit) -> None:
        if permit.probe:
            self._on_success(permit)

    def _on_release(self, permit: Permit) -> None:
        if permit.probe:
            with self._lock:
                self._probe_in_flight = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._opened_at_wall = self._wall_clock()
        logger.warning(
            "llm.breaker.open",
            extra={"data": {"provider": self.name, "failures": self._failures, "reset_seconds": self.reset_seconds}},
        )

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = None
        self._opened_at_wall = None
        self._probe_in_flight = False

    def _retry_in(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.reset_seconds - self._clock())
