"""A scripted in-process provider for unit tests and for running without a model.

It follows the Protocol exactly: deltas, then one `StreamEnd`; `aclose()` or cancelling the
task that iterates it stops it and is recorded in `closed`, so tests can check that a
stopped stream was closed.

Tool calls are scripted in `tool_rounds`: each call while it is not empty takes its first
entry and answers with those calls (a stream: the pieces of `tool_text`, then `ToolCalls`,
then `StreamEnd(finish_reason="tool_calls")`); once it is empty, `reply` answers as usual.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from llm.base import (
    ChatMessage,
    Completion,
    CompletionParams,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCalls,
    Usage,
)
from llm.errors import LLMError
from llm.tokens import count_message_tokens


@dataclass
class FakeProvider:
    """Replies with `reply` split into `chunks` pieces, or raises `error` (after `fail_after` deltas)."""

    reply: str = "Hello from the fake model."
    chunks: int = 4
    delay: float = 0.0
    error: LLMError | None = None
    fail_after: int = 0
    finish_reason: str = "stop"
    model: str = "fake-model"
    name: str = "fake"
    supports_tools: bool = True
    tool_rounds: list[tuple[ToolCall, ...]] = field(default_factory=list)
    tool_text: str = ""
    calls: list[list[ChatMessage]] = field(default_factory=list)
    params: list[CompletionParams | None] = field(default_factory=list)
    closed: int = 0
    completed: int = 0

    @property
    def configured(self) -> bool:
        return True

    @property
    def default_model(self) -> str:
        return self.model

    def pieces(self, text: str | None = None) -> list[str]:
        """`text` (by default `reply`) cut into `chunks` pieces."""
        text = self.reply if text is None else text
        size = max(1, -(-len(text) // max(1, self.chunks)))
        return [text[i : i + size] for i in range(0, len(text), size)]

    async def complete(self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None) -> Completion:
        self.calls.append(list(messages))
        self.params.append(params)
        tool_calls = self._tool_round_take()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.completed += 1
        if tool_calls:
            return Completion(
                text=self.tool_text,
                finish_reason="tool_calls",
                usage=self._usage(messages),
                model=self._model(params),
                tool_calls=tool_calls,
            )
        return Completion(
            text=self.reply, finish_reason=self.finish_reason, usage=self._usage(messages), model=self._model(params)
        )

    def stream(
        self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        self.calls.append(list(messages))
        self.params.append(params)
        # Taken now, so that the order of rounds follows the order of calls.
        tool_calls = self._tool_round_take()
        return self._stream(messages, params, tool_calls)

    async def _stream(
        self, messages: Sequence[ChatMessage], params: CompletionParams | None, tool_calls: tuple[ToolCall, ...]
    ) -> AsyncIterator[StreamEvent]:
        text = self.tool_text if tool_calls else self.reply
        try:
            for index, piece in enumerate(self.pieces(text)):
                if self.error is not None and index >= self.fail_after:
                    raise self.error
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield TextDelta(piece)
            if self.error is not None:
                raise self.error
            self.completed += 1
            if tool_calls:
                yield ToolCalls(tool_calls)
            finish_reason = "tool_calls" if tool_calls else self.finish_reason
            yield StreamEnd(finish_reason=finish_reason, usage=self._usage(messages), model=self._model(params))
        except (GeneratorExit, asyncio.CancelledError):
            # Closed early, or the consuming task was cancelled: a real provider closes its
            # HTTP response in both cases.
            self.closed += 1
            raise

    def _tool_round_take(self) -> tuple[ToolCall, ...]:
        return self.tool_rounds.pop(0) if self.tool_rounds else ()

    def _model(self, params: CompletionParams | None) -> str:
        return (params.model if params and params.model else None) or self.model

    def _usage(self, messages: Sequence[ChatMessage]) -> Usage:
        return Usage(prompt_tokens=count_message_tokens(messages), completion_tokens=max(1, len(self.reply) // 4))
