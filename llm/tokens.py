"""Offline token counting for context budgets.

No network fetch ever: tiktoken is used only when it is installed *and* its encoding is
already cached locally; otherwise a documented estimate (about four characters a token for
English prose, a word never counting less than one token) keeps budgets safe.
"""

import math
import re
from collections.abc import Callable, Sequence
from functools import cache

from llm.base import ChatMessage

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators, as in OpenAI's chat format


@cache
def _tiktoken_counter() -> Callable[[str], int] | None:
    try:
        import os

        import tiktoken  # type: ignore[import-not-found]

        os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.expanduser("~/.cache/tiktoken"))
        if not os.listdir(os.environ["TIKTOKEN_CACHE_DIR"]):
            return None
        encoding = tiktoken.get_encoding("o200k_base")
    except Exception:  # any failure means: use the estimate
        return None

    def count(text: str) -> int:
        return len(encoding.encode(text))

    return count


def count_tokens(text: str) -> int:
    counter = _tiktoken_counter()
    if counter is not None:
        return counter(text)
    return estimate_tokens(text)


def estimate_tokens(text: str) -> int:
    """max(chars / 4, pieces * 0.75): over-counts code and non-Latin text rather than under-counting."""
    if not text:
        return 0
    pieces = len(_WORD.findall(text))
    return max(math.ceil(len(text) / 4), math.ceil(pieces * 0.75))


def count_message_tokens(messages: Sequence[ChatMessage]) -> int:
    """The prompt's tokens: each message's content, the tool calls an assistant message carries, and overheads."""
    return sum(count_tokens(m.content) + _tool_calls_tokens(m) + MESSAGE_OVERHEAD_TOKENS for m in messages) + 2


def _tool_calls_tokens(message: ChatMessage) -> int:
    if not message.tool_calls:
        return 0
    return sum(count_tokens(call.name + call.arguments) for call in message.tool_calls)
