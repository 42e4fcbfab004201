"""Running a reply: the model's stream in, token events out, a stop honoured at any point.

A `StartedStream` sends the model call as soon as the prompt is built (the turn's writes then
run while it is under way). `reply_stream` reads it to the end, or until `cancel` is set,
and returns a frozen `ReplyOutcome`; what changes meanwhile is the small `ReplyState`
(the text shown so far, which a resuming socket is sent). The call's figures (time to first
token, duration, usage) are the LLM layer's own `CallStats` (`llm.usage`), measured once.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from conversations.models import Status
from conversations.turns.events import Token, TurnEvent
from conversations.turns.prepare import TurnPlan
from llm.base import LLMProvider, StreamEnd, StreamEvent, TextDelta
from llm.errors import LLMError, NotConfigured, StreamIncomplete, Unavailable
from llm.fallbacks import fallback_line_pick
from llm.tokens import count_tokens
from llm.usage import CallStats, MeteredStream, call_stream

logger = logging.getLogger("companion.turns")

EventSink = Callable[[TurnEvent], Awaitable[None]]


class TurnError(Exception):
    """Why a reply ended badly when the model was not the cause; shaped like `LLMError` for the client."""

    code = "turn_error"
    retryable = False
    user_message = "The reply could not be finished."


class StoreFailed(TurnError):
    code = "store_failed"
    retryable = True
    user_message = "The reply could not be saved; please send your message again."


@dataclass(slots=True)
class ReplyState:
    """What changes while a reply streams."""

    message_id: int
    mode: str
    deltas: list[str] = field(default_factory=list)  # every piece shown, in order: seq is the index
    ended: bool = False  # its outcome is final: a resuming socket reads the stored message instead

    def snapshot(self) -> dict[str, object] | None:
        """The reply so far, for a socket that resumes; None once it has ended."""
        if self.ended:
            return None
        return {"message_id": self.message_id, "mode": self.mode, "deltas": list(self.deltas)}


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """How a reply ended: what is stored on its row and sent in `reply.end`.

    `closing` is set for a stopped reply whose stream is still closing its upstream response:
    the reply is stored meanwhile, and reply.end waits for both (run.py).
    """

    text: str
    status: str
    finish_reason: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: int | None
    duration_ms: int
    error: LLMError | TurnError | None = None
    closing: "asyncio.Future[None] | None" = field(default=None, compare=False, repr=False)


class StartedStream:
    """A model call whose request is already on its way: its first event is being fetched.

    Iterating it gives that first event, then the rest; `aclose()` stops the fetch and closes
    the stream (and with it the upstream response). A call the provider refused before
    sending anything raises that error on the first read, like any other failure.
    """

    def __init__(self, provider: LLMProvider, plan: TurnPlan) -> None:
        self.started = time.perf_counter()
        self._stream: MeteredStream | None = None
        self._first: asyncio.Task[StreamEvent] | None = None
        self._refused: LLMError | None = None
        try:
            self._stream = call_stream(provider=provider, messages=plan.messages, params=plan.request.params)
        except LLMError as exc:
            self._refused = exc
            return
        self._first = asyncio.ensure_future(anext(self._stream))

    @property
    def stats(self) -> CallStats:
        return self._stream.stats if self._stream is not None else CallStats()

    def __aiter__(self) -> "StartedStream":
        return self

    async def __anext__(self) -> StreamEvent:
        if self._refused is not None:
            raise self._refused
        assert self._stream is not None
        if self._first is not None:
            # Cancelling the task awaiting this cancels the fetch too: the stream is not left running.
            first, self._first = self._first, None
            return await first
        return await anext(self._stream)

    async def aclose(self) -> None:
        if self._first is not None:
            first, self._first = self._first, None
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        if self._stream is not None:
            await self._stream.aclose()


async def reply_stream(
    *,
    plan: TurnPlan,
    stream: StartedStream,
    reply: ReplyState,
    cancel: asyncio.Event,
    emit: EventSink,
    default_model: str,
) -> ReplyOutcome:
    """Read the stream into `reply` and out as `token` events until it ends, fails or is stopped."""
    ends: list[StreamEnd] = []

    async def consume() -> None:
        try:
            async for event in stream:
                if isinstance(event, TextDelta):
                    if event.text:
                        reply.deltas.append(event.text)
                        await emit(Token(message_id=reply.message_id, seq=len(reply.deltas) - 1, delta=event.text))
                else:
                    ends.append(event)
        finally:
            # Closing the stream closes the upstream HTTP response, so the model stops generating.
            await stream.aclose()

    consumer = asyncio.ensure_future(consume())
    stopper = asyncio.ensure_future(cancel.wait())
    error: LLMError | None = None
    cancelled = False
    closing: asyncio.Future[None] | None = None
    try:
        await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not consumer.done():
            # Stopped. The text is final once the consumer is cancelled; closing the upstream
            # response (its `finally`) can take tens of milliseconds under load, so it goes on
            # while the reply is stored instead of before (docs/performance.md, "Stop latency").
            cancelled = True
            consumer.cancel()
            closing = consumer
        else:
            try:
                await consumer
            except asyncio.CancelledError:
                cancelled = True
            except LLMError as exc:
                error = exc
            except Exception as exc:  # a provider broke its contract: treat it as unavailable, never a 500
                logger.exception("provider raised an untyped error")
                error = Unavailable(type(exc).__name__)
    except asyncio.CancelledError:
        # Our own task is being cancelled (the SSE client went away): stop upstream, keep what we have.
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        cancelled = True
    finally:
        stopper.cancel()

    stats = stream.stats
    duration_ms = (
        stats.duration_ms if stats.duration_ms is not None else int((time.perf_counter() - stream.started) * 1000)
    )
    text = "".join(reply.deltas)
    model = ends[0].model if ends else (plan.request.model or stats.model or default_model)
    model = model or default_model
    estimated = (plan.prompt_tokens, count_tokens(text))
    if cancelled:
        return ReplyOutcome(
            text, Status.CANCELLED, "cancelled", model, *estimated, stats.ttft_ms, duration_ms, closing=closing
        )
    if error is None and ends:
        usage = ends[0].usage
        return ReplyOutcome(
            text,
            Status.COMPLETE,
            ends[0].finish_reason,
            model,
            usage.prompt_tokens,
            usage.completion_tokens,
            stats.ttft_ms,
            duration_ms,
        )
    if error is None:
        error = StreamIncomplete("stream ended without a finish reason")
    if reply.deltas:
        # Tokens already reached the user: keep them, say why it stopped.
        return ReplyOutcome(text, Status.FAILED, "error", model, *estimated, stats.ttft_ms, duration_ms, error)
    line = _fallback_text(plan, error)
    reply.deltas.append(line)
    await emit(Token(message_id=reply.message_id, seq=0, delta=line))
    return ReplyOutcome(line, Status.FALLBACK, "error", model, plan.prompt_tokens, 0, None, duration_ms, error)


def _fallback_text(plan: TurnPlan, error: LLMError) -> str:
    if isinstance(error, NotConfigured):
        return NotConfigured.user_message
    return fallback_line_pick(lines=list(plan.fallback_lines), last=plan.last_fallback)
