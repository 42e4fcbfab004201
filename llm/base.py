"""The provider Protocol and the value types that cross it.

Everything outside `llm/providers/` depends on these names only, never on `openai`.
A stream is an async iterator of `TextDelta` items that ends with exactly one `StreamEnd`;
closing it early (`aclose()`) closes the upstream HTTP response. `stream()` itself raises
only `llm.errors.InvalidParams`; provider failures surface while iterating, as `LLMError`s.
See docs/llm.md.
"""

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

ChatRole = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: ChatRole
    content: str


@dataclass(frozen=True, slots=True)
class CompletionParams:
    """Per-request overrides; None means the provider's configured default."""

    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    # Asks the server to sample reproducibly (OpenAI, vLLM, Ollama, LiteLLM honour it): the
    # resilience layer sets one per streamed reply so a replay after a break repeats the text
    # already shown (llm/resilience.py). Not a per-request option of the public API.
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False  # True when the server sent no usage and we counted ourselves


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    finish_reason: str
    usage: Usage
    model: str


StreamEvent = TextDelta | StreamEnd


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: str
    usage: Usage
    model: str


@runtime_checkable
class LLMProvider(Protocol):
    """A chat model behind any API. Implementations raise `llm.errors.LLMError` subclasses only."""

    name: str

    @property
    def configured(self) -> bool:
        """False when there is nothing to call (no key and no base URL)."""
        ...

    @property
    def default_model(self) -> str: ...

    async def complete(self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None) -> Completion:
        """One batch completion."""
        ...

    def stream(
        self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Text deltas, then one `StreamEnd`. `aclose()` on the iterator cancels upstream."""
        ...
