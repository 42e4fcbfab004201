"""Usage accounting: the figures of one LLM call, for the caller and for one log record.

`CallStats` is what a caller reads after a call, to store on the message it produced:

    provider, model        who answered (the server's model id once known)
    kind                   "stream" or "complete"
    attempts               upstream attempts made (retries included); 0 if it never started
    resumed                True when a stream broke after text was shown and a replay carried
                           it on to the end (llm/resilience.py)
    ttft_ms                time to first token: from the first `anext` to the first TextDelta
                           (None for `complete()` and for a reply with no text)
    duration_ms            from the first `anext` (or the `complete()` call) to the end
    prompt_tokens, completion_tokens, estimated
                           the server's usage, or our offline count when it sent none
    finish_reason          from the StreamEnd / Completion
    outcome                "ok", "cancelled", an `LLMError.code`, "invalid_params",
                           "internal_error" (a bug), or "pending" while the call runs
    error                  the `LLMError` the call ended with, if any

How to get one:

    stream = call_stream(provider=provider, messages=messages, params=params)
    async with stream:                       # aclose() on exit: upstream is closed
        async for event in stream:
            ...
    stream.stats                             # final once the stream ended, failed or closed

    stats = CallStats()
    completion = await call_complete(provider=provider, messages=messages, stats=stats)
    # `stats` is filled even when call_complete raises

A `MeteredProvider` (`ResilientProvider`) meters itself (its `stream()` already returns a
`MeteredStream` with the attempt count), so `call_stream` / `call_complete` only add
metering to providers that lack it (the fake, a custom class). Either way each call logs exactly one record on the
"companion.llm" logger, INFO when it ends well or is cancelled, WARNING when it fails, with
`extra={"data": stats.as_log()}`: figures only, never message text, never the key. The
redacted upstream error detail goes to DEBUG.

Nothing here runs per token except one type check and, for the first delta, a clock read.
"""

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from llm.base import ChatMessage, Completion, CompletionParams, LLMProvider, StreamEnd, StreamEvent, TextDelta, Usage
from llm.errors import InvalidParams, LLMError, StreamIncomplete

logger = logging.getLogger("companion.llm")

CallKind = Literal["stream", "complete"]


@dataclass
class CallStats:
    provider: str = ""
    model: str = ""
    kind: CallKind = "stream"
    attempts: int = 0
    resumed: bool = False
    ttft_ms: int | None = None
    duration_ms: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated: bool = False
    finish_reason: str | None = None
    outcome: str = "pending"
    error: LLMError | None = field(default=None, repr=False, compare=False)

    @property
    def usage(self) -> Usage | None:
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return Usage(
            prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens, estimated=self.estimated
        )

    def as_log(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "kind": self.kind,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "resumed": self.resumed,
            "ttft_ms": self.ttft_ms,
            "duration_ms": self.duration_ms,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "estimated": self.estimated,
            "finish_reason": self.finish_reason,
        }


class CallMeter:
    """Times one call into its `CallStats` and logs it once when it ends."""

    __slots__ = ("_clock", "_ended", "_started", "stats")

    def __init__(self, stats: CallStats, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.stats = stats
        self._clock = clock
        self._started: float | None = None
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    def start(self) -> None:
        if self._started is None:
            self._started = self._clock()

    def first_token(self) -> None:
        if self.stats.ttft_ms is None and self._started is not None:
            self.stats.ttft_ms = _ms(self._clock() - self._started)

    def ok(self, *, usage: Usage, finish_reason: str, model: str) -> None:
        self.stats.prompt_tokens = usage.prompt_tokens
        self.stats.completion_tokens = usage.completion_tokens
        self.stats.estimated = usage.estimated
        self.stats.finish_reason = finish_reason
        self.stats.model = model or self.stats.model
        self._end("ok")

    def failed(self, error: LLMError) -> None:
        self.stats.error = error
        self._end(error.code)

    def cancelled(self) -> None:
        self._end("cancelled")

    def crashed(self, exc: BaseException) -> None:
        """Ended by something that is not an LLMError: the caller's bad parameters, or a bug."""
        self._end("invalid_params" if isinstance(exc, InvalidParams) else "internal_error")

    def _end(self, outcome: str) -> None:
        if self._ended:
            return
        self._ended = True
        if self._started is not None:
            self.stats.duration_ms = _ms(self._clock() - self._started)
        self.stats.outcome = outcome
        call_log(self.stats)


class MeteredStream:
    """An `AsyncIterator[StreamEvent]` that fills `stats` as it goes.

    Ends with exactly one `StreamEnd`; a source that stops without one raises
    `StreamIncomplete` instead of looking like a complete reply. `aclose()` (or leaving
    `async with`) closes the source, which closes the upstream response.
    """

    def __init__(
        self,
        source: AsyncIterator[StreamEvent],
        *,
        stats: CallStats,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._source = source
        self._meter = CallMeter(stats, clock=clock)
        self._finished = False
        self.stats = stats

    def __aiter__(self) -> "MeteredStream":
        return self

    async def __anext__(self) -> StreamEvent:
        if self._finished:
            await self._source_close()
            raise StopAsyncIteration
        meter = self._meter
        meter.start()
        try:
            event = await anext(self._source)
        except StopAsyncIteration:
            self._finished = True
            error = StreamIncomplete("the provider's stream ended without a StreamEnd")
            meter.failed(error)
            raise error from None
        except LLMError as exc:
            self._finished = True
            meter.failed(exc)
            raise
        except asyncio.CancelledError:
            self._finished = True
            meter.cancelled()
            raise
        except Exception as exc:
            self._finished = True
            meter.crashed(exc)
            raise
        if type(event) is TextDelta:
            if self.stats.ttft_ms is None:
                meter.first_token()
        elif isinstance(event, StreamEnd):
            self._finished = True
            meter.ok(usage=event.usage, finish_reason=event.finish_reason, model=event.model)
        return event

    async def aclose(self) -> None:
        self._finished = True
        try:
            await self._source_close()
        finally:
            self._meter.cancelled()  # no-op when the stream had already ended

    async def __aenter__(self) -> "MeteredStream":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _source_close(self) -> None:
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()


class MeteredProvider(ABC):
    """A provider that meters its own calls: `complete` fills the `stats` it is given, `stream`
    returns a `MeteredStream`. Declared here, below `llm.resilience`, so that this module
    can tell one apart without importing the module that builds on it."""

    @abstractmethod
    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        params: CompletionParams | None = None,
        stats: CallStats | None = None,
    ) -> Completion: ...


def call_stream(
    *, provider: LLMProvider, messages: Sequence[ChatMessage], params: CompletionParams | None = None
) -> MeteredStream:
    """`provider.stream(...)`, metered: read `.stats` after the stream ends."""
    stream = provider.stream(messages, params=params)
    if isinstance(stream, MeteredStream):
        return stream
    stats = CallStats(provider=provider.name, model=_model_requested(provider, params), kind="stream", attempts=1)
    return MeteredStream(stream, stats=stats)


async def call_complete(
    *,
    provider: LLMProvider,
    messages: Sequence[ChatMessage],
    params: CompletionParams | None = None,
    stats: CallStats | None = None,
) -> Completion:
    """`provider.complete(...)`, metered into `stats` (filled even when it raises)."""
    if isinstance(provider, MeteredProvider):
        return await provider.complete(messages, params=params, stats=stats)
    stats = stats if stats is not None else CallStats()
    stats.provider, stats.model, stats.kind, stats.attempts = (
        provider.name,
        _model_requested(provider, params),
        "complete",
        1,
    )
    meter = CallMeter(stats)
    meter.start()
    try:
        completion = await provider.complete(messages, params=params)
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


def call_log(stats: CallStats) -> None:
    """The one record per call. Figures only: never message text, never a key."""
    data = stats.as_log()
    # Imported here: alerts reads settings and the cache, which a provider built outside Django has not.
    from llm.alerts import call_outcome_observe

    call_outcome_observe(provider=stats.provider, model=stats.model, outcome=stats.outcome)
    if stats.outcome in ("ok", "cancelled"):
        logger.info("llm.call", extra={"data": data})
        return
    logger.warning("llm.call", extra={"data": data})
    if stats.error is not None and stats.error.detail and logger.isEnabledFor(logging.DEBUG):
        logger.debug("llm.call.detail", extra={"data": {**data, "detail": stats.error.detail}})


def _model_requested(provider: LLMProvider, params: CompletionParams | None) -> str:
    return (params.model if params is not None and params.model else None) or provider.default_model


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))
