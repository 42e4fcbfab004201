"""Retries with backoff, a circuit breaker and metering around any `LLMProvider`.

`ResilientProvider(inner)` is itself an `LLMProvider`:

- A failed attempt is retried only if its error is `retryable`.
- A stream that breaks after text reached the caller (dropped, truncated, stalled) is
  *resumed*: the same request is sent again and its text is matched against what was
  shown; the caller gets only what comes after, so the reply reads as one. Each streamed
  reply carries a random `seed`, so servers that sample reproducibly (OpenAI, vLLM,
  Ollama, LiteLLM) repeat the shown text. A replay that says something else is dropped
  and the original error propagates: the caller keeps the text shown, never a second,
  different reply glued to it. `RetryPolicy(resume=False)` (`LLM_RESUME_STREAMS=false`)
  turns this off, and the seed with it, for a server that rejects `seed`.
- The wait before retry n (n = 1, 2, ...) is "full jitter": uniform(0, min(max_delay,
  base_delay * 2 ** (n - 1))). A `retry_after` from the server (Retry-After /
  retry-after-ms) is a floor; one longer than `max_retry_after` means giving up at once
  rather than holding a user's turn that long.
- At most `max_retries` retries, so `max_retries + 1` attempts.
- Every attempt takes a permit from the provider's `CircuitBreaker` (see llm/breaker.py).
  An open circuit fails the call at once with `CircuitOpen`; if it opens during our own
  retries, the last real error is raised instead. Errors that are about the request and
  not the provider (bad request, context too long, content filtered, unknown model,
  permission for a model) do not count as provider failures: a user who asks for a
  model that does not exist must not open the circuit for everyone.
- Each call is metered into a `CallStats` and logged once (llm/usage.py).
- Tools pass through in `params` (the seed is set with `dataclasses.replace`, which keeps
  them). A `ToolCalls` event passes through as it is: a provider yields it only once its
  stream has ended well, just before `StreamEnd`, so an attempt that broke has not yielded
  one. Should an inner provider break between the two anyway, the retry's `ToolCalls` is
  not passed on a second time.

`sleep`, `rng` and `clock` are injectable, so tests never really wait.
"""

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from django.conf import settings

from llm.base import (
    ChatMessage,
    Completion,
    CompletionParams,
    LLMProvider,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCalls,
)
from llm.breaker import BreakerSnapshot, CircuitBreaker, Permit
from llm.errors import (
    BadRequest,
    CircuitOpen,
    ContentFiltered,
    ContextTooLong,
    LLMError,
    ModelNotFound,
    NotConfigured,
    PermissionDenied,
    StreamIncomplete,
)
from llm.params import SEED_MAX
from llm.usage import CallMeter, CallStats, MeteredProvider, MeteredStream

logger = logging.getLogger("companion.llm")

# The provider answered; the request was what it refused.
REQUEST_ERRORS: tuple[type[LLMError], ...] = (
    BadRequest,
    ContextTooLong,
    ContentFiltered,
    ModelNotFound,
    PermissionDenied,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 20.0
    resume: bool = True

    @classmethod
    def from_settings(cls) -> "RetryPolicy":
        return cls(
            max_retries=max(0, settings.LLM_MAX_RETRIES),
            base_delay=float(getattr(settings, "LLM_RETRY_BASE_SECONDS", 0.5)),
            max_delay=float(getattr(settings, "LLM_RETRY_MAX_SECONDS", 8.0)),
            max_retry_after=float(getattr(settings, "LLM_RETRY_AFTER_MAX_SECONDS", 20.0)),
            resume=bool(getattr(settings, "LLM_RESUME_STREAMS", True)),
        )

    def delay(self, *, attempt: int, error: LLMError, rng: random.Random) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (from 1), or None to give up."""
        if not error.retryable or attempt > self.max_retries:
            return None
        backoff = rng.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
        if error.retry_after is None:
            return backoff
        if error.retry_after > self.max_retry_after:
            return None
        return max(error.retry_after, backoff)


# A probe is an ordinary call: its first token comes in about a second from a healthy
# provider. Waiting longer than this for it would be worse than the fallback.
PROBE_WAIT_SECONDS = 5.0
PROBE_POLL_SECONDS = 0.05


class ResilientProvider(MeteredProvider):
    def __init__(
        self,
        inner: LLMProvider,
        *,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.perf_counter,
        probe_wait_seconds: float = PROBE_WAIT_SECONDS,
    ) -> None:
        """`probe_wait_seconds`: how long a call waits for a half-open probe's outcome (see `_permit`)."""
        self.inner = inner
        self.name = inner.name
        self.policy = policy or RetryPolicy()
        self.breaker = breaker or CircuitBreaker(name=inner.name, failure_threshold=5, reset_seconds=30.0)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self.probe_wait_seconds = probe_wait_seconds

    @classmethod
    def from_settings(cls, inner: LLMProvider) -> "ResilientProvider":
        return cls(
            inner,
            policy=RetryPolicy.from_settings(),
            breaker=CircuitBreaker(
                name=inner.name,
                failure_threshold=settings.LLM_BREAKER_FAILURES,
                reset_seconds=settings.LLM_BREAKER_RESET_SECONDS,
                on_transition=partial(_breaker_alert, inner.name),
            ),
        )

    @property
    def configured(self) -> bool:
        return self.inner.configured

    @property
    def default_model(self) -> str:
        return self.inner.default_model

    @property
    def supports_tools(self) -> bool:
        return bool(getattr(self.inner, "supports_tools", False))

    def health(self) -> BreakerSnapshot:
        return self.breaker.snapshot()

    # -- batch ----------------------------------------------------------------------------------

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        params: CompletionParams | None = None,
        stats: CallStats | None = None,
    ) -> Completion:
        """One completion, retried as the policy allows; `stats` (if given) is filled even on failure."""
        stats = stats if stats is not None else CallStats()
        stats.provider, stats.model, stats.kind = self.name, self._model_requested(params), "complete"
        meter = CallMeter(stats, clock=self._clock)
        meter.start()
        try:
            completion = await self._complete_attempts(messages, params, stats)
        except LLMError as exc:
            meter.failed(exc)
            raise
        except asyncio.CancelledError:
            meter.cancelled()
            raise
        except Exception as exc:
            meter.crashed(exc)
            raise
        meter.ok(usage=completion.usage, finish_reason=completion.finish_reason, model=completion.model)
        return completion

    async def _complete_attempts(
        self, messages: Sequence[ChatMessage], params: CompletionParams | None, stats: CallStats
    ) -> Completion:
        if not self.inner.configured:
            raise NotConfigured("no API key and no base URL are configured")
        last_error: LLMError | None = None
        while True:
            permit = await self._permit(last_error)
            stats.attempts += 1
            try:
                completion = await self.inner.complete(messages, params=params)
            except LLMError as exc:
                _permit_settle(permit, exc)
                delay = self.policy.delay(attempt=stats.attempts, error=exc, rng=self._rng)
                if delay is None:
                    raise
                last_error = exc
            except BaseException:
                permit.release()
                raise
            else:
                permit.success()
                return completion
            await self._sleep(delay)

    # -- streaming --------------------------------------------------------------------------------

    def stream(self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None) -> MeteredStream:
        """A `MeteredStream`: read its `.stats` (ttft, duration, attempts, usage) once it ended."""
        messages = list(messages)
        if self.policy.resume and (params is None or params.seed is None):
            params = dataclasses.replace(params or CompletionParams(), seed=self._rng.randint(0, SEED_MAX))
        # The first attempt's stream is made now so the inner provider's eager checks (bad
        # parameters) surface here, before anything is sent; making it sends nothing.
        first = self.inner.stream(messages, params=params)
        stats = CallStats(provider=self.name, model=self._model_requested(params), kind="stream")
        return MeteredStream(self._stream_attempts(messages, params, stats, first), stats=stats, clock=self._clock)

    async def _stream_attempts(
        self,
        messages: list[ChatMessage],
        params: CompletionParams | None,
        stats: CallStats,
        pending: AsyncIterator[StreamEvent] | None,
    ) -> AsyncIterator[StreamEvent]:
        shown: list[str] = []  # every piece of text the caller got, whichever attempt it came from
        calls_shown = False  # the caller got this reply's ToolCalls
        try:
            if not self.inner.configured:
                raise NotConfigured("no API key and no base URL are configured")
            last_error: LLMError | None = None
            while True:
                permit = await self._permit(last_error)
                stats.attempts += 1
                source = pending if pending is not None else self.inner.stream(messages, params=params)
                pending = None
                replay = _Replay("".join(shown)) if shown else None
                ended = False
                try:
                    async for event in source:
                        if type(event) is TextDelta:
                            if replay is not None:
                                event = replay.feed(event)
                                if not event.text:
                                    continue
                            shown.append(event.text)
                        elif type(event) is ToolCalls:
                            if calls_shown:
                                continue
                            calls_shown = True
                        elif isinstance(event, StreamEnd):
                            if replay is not None:
                                replay.end()
                                stats.resumed = True
                            ended = True
                            permit.success()
                        yield event
                    if not ended:
                        raise StreamIncomplete("the provider's stream ended without a StreamEnd")
                    return
                except _ReplayDiverged as diverged:
                    permit.release()  # the provider answered; it just sampled differently
                    assert last_error is not None  # a replay follows a break
                    data = {"provider": self.name, "shown_chars": diverged.shown_chars, "error": last_error.code}
                    logger.info("llm.resume_diverged", extra={"data": data})
                    raise last_error from None
                except LLMError as exc:
                    _permit_settle(permit, exc)
                    delay = None
                    if self.policy.resume or not shown:
                        delay = self.policy.delay(attempt=stats.attempts, error=exc, rng=self._rng)
                    if delay is None:
                        raise
                    last_error = exc
                except BaseException:
                    permit.release()  # cancelled, or closed by the consumer: judges nothing
                    raise
                finally:
                    await _aclose(source)
                await self._sleep(delay)
        finally:
            if pending is not None:
                await _aclose(pending)

    # -- internals ----------------------------------------------------------------------------------

    async def _permit(self, last_error: LLMError | None) -> Permit:
        """A permit for the next attempt, or `CircuitOpen` (`last_error` on a retry) when the circuit is open.

        While a half-open probe is in flight, wait for its outcome (polling, up to
        `probe_wait_seconds`) instead of failing at once: a provider that is back serves
        everyone who came during the probe, and one still down refuses them as before.
        """
        polls_left = round(self.probe_wait_seconds / PROBE_POLL_SECONDS)
        while True:
            permit = self.breaker.acquire()
            if permit is not None:
                return permit
            if not self.breaker.probe_pending() or polls_left <= 0:
                break
            await self._sleep(PROBE_POLL_SECONDS)
            polls_left -= 1
        if last_error is not None:
            raise last_error
        retry_in = self.breaker.retry_in()
        raise CircuitOpen(f"{self.name}: circuit open after repeated failures", retry_after=retry_in)

    def _model_requested(self, params: CompletionParams | None) -> str:
        return (params.model if params is not None and params.model else None) or self.inner.default_model


class _ReplayDiverged(Exception):
    def __init__(self, shown_chars: int) -> None:
        super().__init__(f"the replay differs from the {shown_chars} characters already shown")
        self.shown_chars = shown_chars


class _Replay:
    """A resent stream, matched against the text already shown: only what comes after it passes."""

    def __init__(self, shown: str) -> None:
        self._shown = shown
        self._matched = 0

    def feed(self, delta: TextDelta) -> TextDelta:
        """The part of `delta` past the shown text (empty while still replaying it)."""
        if self._matched == len(self._shown):
            return delta
        overlap = self._shown[self._matched : self._matched + len(delta.text)]
        if not delta.text.startswith(overlap):
            raise _ReplayDiverged(len(self._shown))
        self._matched += len(overlap)
        return TextDelta(delta.text[len(overlap) :])

    def end(self) -> None:
        """The replay finished: it must have repeated all of the shown text."""
        if self._matched < len(self._shown):
            raise _ReplayDiverged(len(self._shown))


def _permit_settle(permit: Permit, error: LLMError) -> None:
    if isinstance(error, REQUEST_ERRORS):
        permit.neutral()
    else:
        permit.failure()


def _breaker_alert(provider: str, transition: str, failures: int) -> None:
    from llm.alerts import breaker_transition_observe

    breaker_transition_observe(provider=provider, transition=transition, failures=failures)


async def _aclose(stream: AsyncIterator[StreamEvent]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
