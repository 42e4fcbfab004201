"""A scripted in-process provider for unit tests and for running without a model.

It follows the Protocol exactly: deltas, then one `StreamEnd`; `aclose()` or cancelling the
task that iterates it stops it and is recorded in `closed`, so tests can check that a
stopped stream was closed.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from llm.base import ChatMessage, Completion, CompletionParams, StreamEnd, StreamEvent, TextDelta, Usage
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

    def pieces(self) -> list[str]:
        size = max(1, -(-len(self.reply) // max(1, self.chunks)))
        return [self.reply[i : i + size] for i in range(0, len(self.reply), size)]

    async def complete(self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None) -> Completion:
        self.calls.append(list(messages))
        self.params.append(params)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.completed += 1
        return Completion(
            text=self.reply, finish_reason=self.finish_reason, usage=self._usage(messages), model=self._model(params)
        )

    def stream(
        self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        self.calls.append(list(messages))
        self.params.append(params)
        return self._stream(messages, params)

    async def _stream(
        self, messages: Sequence[ChatMessage], params: CompletionParams | None
    ) -> AsyncIterator[StreamEvent]:
        try:
            for index, piece in enumerate(self.pieces()):
                if self.error is not None and index >= self.fail_after:
                    raise self.error
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield TextDelta(piece)
            if self.error is not None:
                raise self.error
            self.completed += 1
            yield StreamEnd(finish_reason=self.finish_reason, usage=self._usage(messages), model=self._model(params))
        except (GeneratorExit, asyncio.CancelledError):
            # Closed early, or the consuming task was cancelled: a real provider closes its
            # HTTP response in both cases.
            self.closed += 1
            raise

    def _model(self, params: CompletionParams | None) -> str:
        return (params.model if params and params.model else None) or self.model

    def _usage(self, messages: Sequence[ChatMessage]) -> Usage:
        return Usage(prompt_tokens=count_message_tokens(messages), completion_tokens=max(1, len(self.reply) // 4))
