"""The provider Protocol and the value types that cross it.

Everything outside `llm/providers/` depends on these names only, never on `openai`.
A stream is an async iterator of `TextDelta` items that ends with exactly one `StreamEnd`;
when the model asked for tools, one `ToolCalls` comes just before that `StreamEnd`.
Closing it early (`aclose()`) closes the upstream HTTP response. `stream()` itself raises
only `llm.errors.InvalidParams`; provider failures surface while iterating, as `LLMError`s.
See docs/llm.md.
"""

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

ChatRole = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function the model may call; `parameters` is the JSON Schema of its arguments object."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model asked for; `arguments` is the JSON text it sent, unparsed (it may be invalid)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of the prompt.

    An assistant message that asked for tools carries them in `tool_calls`; each result goes
    back as a `role="tool"` message with the call's id in `tool_call_id` and the result as
    `content`.
    """

    role: ChatRole
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


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
    # Functions the model may call; empty sends none. A provider whose `supports_tools` is
    # False leaves them out, and the reply is plain text.
    tools: tuple[ToolSpec, ...] = ()


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


@dataclass(frozen=True, slots=True)
class ToolCalls:
    """Every call of one answer, assembled, in the model's order: yielded once, just before `StreamEnd`."""

    calls: tuple[ToolCall, ...]


StreamEvent = TextDelta | ToolCalls | StreamEnd


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: str
    usage: Usage
    model: str
    tool_calls: tuple[ToolCall, ...] = ()


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

    @property
    def supports_tools(self) -> bool:
        """False when `CompletionParams.tools` are not sent (the server cannot call functions)."""
        ...

    async def complete(self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None) -> Completion:
        """One batch completion."""
        ...

    def stream(
        self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Text deltas, then `ToolCalls` if the model asked for any, then one `StreamEnd`.

        `aclose()` on the iterator cancels upstream.
        """
        ...
