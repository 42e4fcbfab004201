"""The messages sent to the model for one turn: pure, values in and values out.

Order: the system prompt, the rolling summary, what recall found in older messages (its
own budget, RECALL_TOKEN_BUDGET, spent before this one), the newest history that fits the budget,
the card's post-history instructions, then the new user message. History is trimmed by
whole exchanges (a user message with the replies that follow it), oldest first, so the
model never sees a reply without the message it answers.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from llm.base import ChatMessage
from llm.prompts import summary_section
from llm.tokens import MESSAGE_OVERHEAD_TOKENS, count_message_tokens, count_tokens

DEFAULT_MAX_PAIRS = 10
DEFAULT_MAX_TOKENS = 4000
HISTORY_ROLES = ("user", "assistant")


@dataclass(frozen=True)
class HistoryItem:
    role: str  # "user" | "assistant"
    content: str

    def __post_init__(self) -> None:
        if self.role not in HISTORY_ROLES:
            raise ValueError(f"history role must be one of {HISTORY_ROLES}, not {self.role!r}")


@dataclass(frozen=True)
class ContextBudget:
    """At most `max_pairs` exchanges of history, and `max_tokens` for the whole prompt."""

    max_pairs: int = DEFAULT_MAX_PAIRS
    max_tokens: int = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        if self.max_pairs < 0 or self.max_tokens < 1:
            raise ValueError(f"invalid context budget: max_pairs={self.max_pairs}, max_tokens={self.max_tokens}")

    @classmethod
    def from_django_settings(cls) -> "ContextBudget":
        max_pairs = getattr(settings, "CONTEXT_MAX_PAIRS", DEFAULT_MAX_PAIRS)
        max_tokens = getattr(settings, "CONTEXT_MAX_TOKENS", DEFAULT_MAX_TOKENS)
        try:
            return cls(max_pairs=int(max_pairs), max_tokens=int(max_tokens))
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"CONTEXT_MAX_PAIRS must be an integer >= 0 and CONTEXT_MAX_TOKENS >= 1: {exc}"
            ) from exc


@dataclass(frozen=True)
class BuiltContext:
    messages: list[ChatMessage]  # ready for the provider
    prompt_tokens: int  # llm.tokens.count_message_tokens(messages)
    history_used: int  # history items placed in `messages`
    history_dropped: int  # non-empty history items left out (too old for the pairs or token budget)
    history_skipped: int = 0  # empty or whitespace-only history items, never sent

    # history_used + history_dropped + history_skipped == len(history)


def context_build(
    *,
    system_prompt: str,
    summary: str | None,
    history: Sequence[HistoryItem],
    user_message: str,
    post_history_instructions: str = "",
    recalled: str = "",
    budget: ContextBudget,
) -> BuiltContext:
    """The messages for one turn within `budget`; `history` is oldest first, without `user_message`.

    The system prompt, summary, post-history instructions and new user message are always
    kept, even when they alone exceed the budget: the history is what gives way.
    """
    head = [ChatMessage(role="system", content=system_prompt)]
    summary_text = summary_section(summary)
    if summary_text:
        head.append(ChatMessage(role="system", content=summary_text))
    if recalled.strip():
        head.append(ChatMessage(role="system", content=recalled))
    tail: list[ChatMessage] = []
    if post_history_instructions.strip():
        tail.append(ChatMessage(role="system", content=post_history_instructions))
    tail.append(ChatMessage(role="user", content=user_message))

    spoken = [item for item in history if item.content.strip()]
    exchanges = _exchanges_newest_first(spoken)
    room = budget.max_tokens - count_message_tokens([*head, *tail])
    kept: list[list[HistoryItem]] = []
    for exchange in exchanges[: budget.max_pairs]:
        cost = sum(count_tokens(item.content) + MESSAGE_OVERHEAD_TOKENS for item in exchange)
        if cost > room:
            break  # everything older goes too: the history stays one unbroken stretch
        kept.append(exchange)
        room -= cost

    history_messages = [
        ChatMessage(role="user" if item.role == "user" else "assistant", content=item.content)
        for exchange in reversed(kept)
        for item in exchange
    ]
    messages = [*head, *history_messages, *tail]
    used = len(history_messages)
    return BuiltContext(
        messages=messages,
        prompt_tokens=count_message_tokens(messages),
        history_used=used,
        history_dropped=len(spoken) - used,
        history_skipped=len(history) - len(spoken),
    )


def _exchanges_newest_first(items: list[HistoryItem]) -> list[list[HistoryItem]]:
    """Each user message with the assistant replies after it; replies before any user message stand alone."""
    exchanges: list[list[HistoryItem]] = []
    current: list[HistoryItem] = []
    for item in reversed(items):
        current.append(item)
        if item.role == "user":
            exchanges.append(current[::-1])
            current = []
    if current:
        exchanges.append(current[::-1])
    return exchanges
