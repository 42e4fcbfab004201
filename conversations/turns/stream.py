"""Running a reply: the model's stream in, token events out, a stop honoured at any point.

A `StartedStream` sends the model call as soon as the prompt is built (the turn's writes then
run while it is under way). `reply_stream` reads it to the end, or until `cancel` is set,
and returns a frozen `ReplyOutcome`; what changes meanwhile is the small `ReplyState`
(the text shown so far, which a resuming socket is sent). The call's figures (time to first
token, duration, usage) are the LLM layer's own `CallStats` (`llm.usage`), measured once.

Tools. When the model answers with tool calls and the turn gave an `act` (secretary mode),
the reply becomes a bounded loop, one reply to the user however many rounds it takes:

    round 1: stream -> text?, ToolCalls -> act (runs them, sends an `action` frame each)
    round 2: the same messages + the calls + their results -> stream -> ...
    round TOOL_ROUNDS_MAX + 1: no tools offered, so the model answers in words

Text of every round goes to the same reply (seq goes on counting); usage adds up every
round; a stop ends it at any point (mid-stream, between rounds, during a tool). A server
that refuses tools (`ToolsUnsupported`) before showing anything is asked again without
them: the user gets a plain reply.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from conversations.models import Status
from conversations.turns.events import Token, TurnEvent
from conversations.turns.prepare import TurnPlan
from core.logging import exception_data
from llm.base import (
    ChatMessage,
    CompletionParams,
    LLMProvider,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCalls,
)
from llm.errors import LLMError, NotConfigured, StreamIncomplete, ToolsUnsupported, Unavailable
from llm.fallbacks import fallback_line_pick
from llm.tokens import count_message_tokens, count_tokens
from llm.usage import CallStats, MeteredStream, call_stream

logger = logging.getLogger("companion.turns")

EventSink = Callable[[TurnEvent], Awaitable[None]]
# Runs one round's tool calls (and sends their `action` frames); returns the `tool` messages.
ToolActor = Callable[[tuple[ToolCall, ...]], Awaitable[list[ChatMessage]]]

TOOL_ROUNDS_MAX = 3  # rounds with tools offered; one more without, for the words


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
    actions: list[dict[str, Any]] = field(default_factory=list)  # the tools it ran: stored with the reply
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
    actions: tuple[dict[str, Any], ...] = ()


class StartedStream:
    """A model call whose request is already on its way: its first event is being fetched.

    Iterating it gives that first event, then the rest; `aclose()` stops the fetch and closes
    the stream (and with it the upstream response). A call the provider refused before
    sending anything raises that error on the first read, like any other failure.
    """

    def __init__(self, provider: LLMProvider, messages: Sequence[ChatMessage], params: CompletionParams | None) -> None:
        self.started = time.perf_counter()
        self.provider = provider
        self.messages = tuple(messages)
        self.params = params or CompletionParams()
        self._stream: MeteredStream | None = None
        self._first: asyncio.Task[StreamEvent] | None = None
        self._refused: LLMError | None = None
        try:
            self._stream = call_stream(provider=provider, messages=self.messages, params=self.params)
        except LLMError as exc:
            self._refused = exc
            return
        except Exception as exc:  # a provider broke its contract before sending: as mid-stream (_round_read)
            logger.error("provider raised an untyped error", extra={"data": exception_data(exc)})
            self._refused = Unavailable(type(exc).__name__)
            return
        self._first = asyncio.ensure_future(anext(self._stream))

    @property
    def stats(self) -> CallStats:
        return self._stream.stats if self._stream is not None else CallStats()

    def then(self, messages: Sequence[ChatMessage], params: CompletionParams) -> "StartedStream":
        """The next call of the same reply, to the same provider."""
        return StartedStream(self.provider, messages, params)

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


@dataclass(frozen=True, slots=True)
class _Round:
    """How one model call of a reply ended."""

    stream: StartedStream
    shown: int  # text pieces this round added to the reply
    end: StreamEnd | None
    tool_calls: tuple[ToolCall, ...]
    error: LLMError | None
    cancelled: bool
    closing: "asyncio.Future[None] | None"


async def reply_stream(
    *,
    plan: TurnPlan,
    stream: StartedStream,
    reply: ReplyState,
    cancel: asyncio.Event,
    emit: EventSink,
    default_model: str,
    act: ToolActor | None = None,
) -> ReplyOutcome:
    """Read the stream into `reply` and out as `token` events until it ends, fails or is stopped;
    with `act`, run the tools the model calls and go on (see the module docstring)."""
    rounds: list[_Round] = []
    messages = list(stream.messages)
    stopped = False
    while True:
        this = await _round_read(stream, reply=reply, cancel=cancel, emit=emit)
        rounds.append(this)
        params = stream.params
        if isinstance(this.error, ToolsUnsupported) and params.tools and not this.shown and not cancel.is_set():
            stream = stream.then(messages, replace(params, tools=()))
            continue
        if act is None or not params.tools or not this.tool_calls or this.error is not None or this.cancelled:
            break  # calls the model made up when none were offered are not run
        if cancel.is_set():
            stopped = True
            break
        text = "".join(reply.deltas[len(reply.deltas) - this.shown :])
        results = await act(this.tool_calls)
        messages += [ChatMessage(role="assistant", content=text, tool_calls=this.tool_calls), *results]
        if cancel.is_set():  # stopped while the tools ran: what they did stays done, no more model calls
            stopped = True
            break
        with_tools = sum(1 for r in rounds if r.tool_calls) < TOOL_ROUNDS_MAX
        stream = stream.then(messages, params if with_tools else replace(params, tools=()))
    outcome = await _outcome_make(plan, rounds, reply=reply, emit=emit, default_model=default_model, stopped=stopped)
    return replace(outcome, actions=tuple(reply.actions)) if reply.actions else outcome


async def _round_read(stream: StartedStream, *, reply: ReplyState, cancel: asyncio.Event, emit: EventSink) -> _Round:
    ends: list[StreamEnd] = []
    calls: list[ToolCall] = []
    shown_before = len(reply.deltas)

    async def consume() -> None:
        try:
            async for event in stream:
                if isinstance(event, TextDelta):
                    if event.text:
                        reply.deltas.append(event.text)
                        await emit(Token(message_id=reply.message_id, seq=len(reply.deltas) - 1, delta=event.text))
                elif isinstance(event, ToolCalls):
                    calls.extend(event.calls)
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
                logger.error("provider raised an untyped error", extra={"data": exception_data(exc)})
                error = Unavailable(type(exc).__name__)
    except asyncio.CancelledError:
        # Our own task is being cancelled (the SSE client went away): stop upstream, keep what we have.
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        cancelled = True
    finally:
        stopper.cancel()
    if error is None and not cancelled and not ends:
        error = StreamIncomplete("stream ended without a finish reason")
    return _Round(
        stream=stream,
        shown=len(reply.deltas) - shown_before,
        end=ends[0] if ends else None,
        tool_calls=tuple(calls),
        error=error,
        cancelled=cancelled,
        closing=closing,
    )


async def _outcome_make(
    plan: TurnPlan, rounds: list[_Round], *, reply: ReplyState, emit: EventSink, default_model: str, stopped: bool
) -> ReplyOutcome:
    first, last = rounds[0], rounds[-1]
    duration_ms = int((time.perf_counter() - first.stream.started) * 1000)
    if len(rounds) == 1 and first.stream.stats.duration_ms is not None:
        duration_ms = first.stream.stats.duration_ms
    ttft_ms = _ttft(rounds)
    text = "".join(reply.deltas)
    model = next((r.end.model for r in rounds if r.end is not None), None)
    model = model or plan.request.model or last.stream.stats.model or default_model
    # Every round is counted: the server's usage where it sent one, our estimate for the rest.
    prompt_tokens = completion_tokens = 0
    offset = 0
    for this in rounds:
        shown = "".join(reply.deltas[offset : offset + this.shown])
        offset += this.shown
        if this.end is not None:
            prompt_tokens += this.end.usage.prompt_tokens
            completion_tokens += this.end.usage.completion_tokens
        else:
            prompt_tokens += count_message_tokens(this.stream.messages)
            completion_tokens += count_tokens(shown)
    if last.cancelled or stopped:
        return ReplyOutcome(
            text,
            Status.CANCELLED,
            "cancelled",
            model,
            prompt_tokens,
            completion_tokens,
            ttft_ms,
            duration_ms,
            closing=last.closing,
        )
    if last.error is None and last.end is not None and (text or not last.tool_calls):
        return ReplyOutcome(
            text, Status.COMPLETE, last.end.finish_reason, model, prompt_tokens, completion_tokens, ttft_ms, duration_ms
        )
    error = last.error or StreamIncomplete("the model called tools and gave no answer")
    if reply.deltas:
        # Tokens already reached the user: keep them, say why it stopped.
        return ReplyOutcome(
            text, Status.FAILED, "error", model, prompt_tokens, completion_tokens, ttft_ms, duration_ms, error
        )
    line = _fallback_text(plan, error)
    reply.deltas.append(line)
    await emit(Token(message_id=reply.message_id, seq=0, delta=line))
    return ReplyOutcome(line, Status.FALLBACK, "error", model, prompt_tokens, 0, None, duration_ms, error)


def _ttft(rounds: list[_Round]) -> int | None:
    """From the first call's start to the first piece of text, whichever round it came in."""
    origin = rounds[0].stream.started
    for this in rounds:
        if this.stream.stats.ttft_ms is not None:
            return int((this.stream.started - origin) * 1000) + this.stream.stats.ttft_ms
    return None


def _fallback_text(plan: TurnPlan, error: LLMError) -> str:
    if isinstance(error, NotConfigured):
        return NotConfigured.user_message
    return fallback_line_pick(lines=list(plan.fallback_lines), last=plan.last_fallback)
