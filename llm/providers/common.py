"""What the OpenAI-compatible and the any-llm providers share: their settings and the
properties health checks read (`ProviderBase`), httpx timeouts, OpenAI's message and tool
format, tool-call fragments put together by index, usage, finish reasons, and the error
details (hints in a server's message, `Retry-After`, redaction of keys).

Nothing here imports an SDK: each provider module imports its own (openai.py `openai`,
anyllm.py `any_llm`).
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NotRequired, Required, TypedDict, Unpack

import httpx
from django.conf import settings

from llm.base import ChatMessage, CompletionParams, ToolCall, ToolSpec, Usage
from llm.errors import ContentFiltered, StreamIncomplete, Unavailable
from llm.params import ResolvedParams, completion_params_resolve
from llm.tokens import count_message_tokens, count_tokens


class ProviderOptions(TypedDict, total=False):
    """The constructor keywords both providers take (`ProviderBase`); only `model` is required."""

    model: Required[str]
    api_key: NotRequired[str]
    base_url: NotRequired[str]
    temperature: NotRequired[float]
    max_tokens: NotRequired[int]
    max_tokens_limit: NotRequired[int]
    connect_timeout: NotRequired[float]
    first_token_timeout: NotRequired[float]
    read_timeout: NotRequired[float]
    complete_timeout: NotRequired[float]
    stream_usage: NotRequired[bool]
    max_connections: NotRequired[int]
    supports_tools: NotRequired[bool]


def provider_options_from_settings() -> ProviderOptions:
    """`ProviderOptions` from the `LLM_*` settings."""
    return ProviderOptions(
        model=settings.LLM_MODEL,
        api_key=settings.LLM_API_KEY,
        base_url=settings.LLM_BASE_URL,
        temperature=settings.LLM_TEMPERATURE,
        max_tokens=settings.LLM_MAX_TOKENS,
        max_tokens_limit=settings.LLM_MAX_TOKENS_LIMIT,
        connect_timeout=settings.LLM_CONNECT_TIMEOUT,
        first_token_timeout=settings.LLM_FIRST_TOKEN_TIMEOUT,
        read_timeout=settings.LLM_READ_TIMEOUT,
        complete_timeout=float(getattr(settings, "LLM_COMPLETE_TIMEOUT", 120.0)),
        stream_usage=bool(getattr(settings, "LLM_STREAM_USAGE", True)),
        supports_tools=bool(getattr(settings, "LLM_TOOLS", True)),
    )


class ProviderBase:
    """The settings of an HTTP provider and what health checks and `llm_check` read of it."""

    def __init__(self, *, name: str, **options: Unpack[ProviderOptions]) -> None:
        self.name = name
        self._model = options["model"]
        self._api_key = options.get("api_key", "")
        self._base_url = options.get("base_url", "")
        self._temperature = options.get("temperature", 0.8)
        self._max_tokens = options.get("max_tokens", 800)
        self._max_tokens_limit = options.get("max_tokens_limit", 4096)
        self._connect_timeout = options.get("connect_timeout", 5.0)
        self._first_token_timeout = options.get("first_token_timeout", 30.0)
        self._read_timeout = options.get("read_timeout", 20.0)
        self._complete_timeout = options.get("complete_timeout", 120.0)
        self._stream_usage = options.get("stream_usage", True)
        self._max_connections = options.get("max_connections", 100)
        self._supports_tools = options.get("supports_tools", True)

    @property
    def configured(self) -> bool:
        return bool(self._api_key or self._base_url)

    @property
    def default_model(self) -> str:
        return self._model

    @property
    def supports_tools(self) -> bool:
        return self._supports_tools

    @property
    def key_hint(self) -> str:
        """The key as a person can recognise it without it being usable: its last four characters."""
        if not self._api_key:
            return "(none)"
        return f"...{self._api_key[-4:]}" if len(self._api_key) > 8 else "(set, too short to show)"

    @property
    def timeouts(self) -> dict[str, float]:
        return {
            "connect": self._connect_timeout,
            "first_token": self._first_token_timeout,
            "read": self._read_timeout,
            "complete": self._complete_timeout,
        }

    def _http_timeout(self) -> httpx.Timeout:
        """httpx's timeouts: connect is ours; read is only a backstop behind the asyncio deadlines."""
        backstop = max(self._first_token_timeout, self._read_timeout, self._complete_timeout)
        return httpx.Timeout(
            connect=self._connect_timeout,
            read=backstop,
            write=max(self._connect_timeout, self._read_timeout),
            pool=self._first_token_timeout,
        )

    def _http_limits(self) -> httpx.Limits:
        return httpx.Limits(max_connections=self._max_connections, max_keepalive_connections=20)

    def _params_resolve(self, params: CompletionParams | None) -> ResolvedParams:
        return completion_params_resolve(
            params=params,
            default_model=self._model,
            default_temperature=self._temperature,
            default_max_tokens=self._max_tokens,
            max_tokens_limit=self._max_tokens_limit,
        )


# Local servers (Ollama, vLLM, LM Studio) need no key, but the SDK insists on a non-empty one.
KEYLESS_PLACEHOLDER = "not-needed"
DETAIL_MAX_CHARS = 300

CONTEXT_HINTS = re.compile(
    r"context[ _]length|context window|maximum context|too many tokens|prompt is too long|reduce the length",
    re.IGNORECASE,
)
FILTER_HINTS = re.compile(r"content[ _](management[ _])?(filter|policy)|responsibleaipolicy", re.IGNORECASE)
# A 4xx naming tools and saying they are not available: Ollama "... does not support tools",
# vLLM '"auto" tool choice requires --enable-auto-tool-choice', llama.cpp "tools param
# requires --jinja flag", OpenAI "'tools' is not supported with this model", Mistral
# "Function calling is not enabled for this model". Both must match: a 400 about a bad tool
# schema is a plain BadRequest.
TOOLS_HINTS = re.compile(r"\btools?\b|tool[ _]choice|tool[ _]call|function[ _]call", re.IGNORECASE)
UNSUPPORTED_HINTS = re.compile(
    r"not supported|unsupported|(does|do)(n't| not) support|not enabled|requires? --", re.IGNORECASE
)
_SECRET_LIKE = re.compile(r"(sk-[A-Za-z0-9_\-*.]{4,}|Bearer\s+\S+|key[-_][A-Za-z0-9]{16,})")


def retry_after_parse(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI's, precise) or `Retry-After` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def server_message(body: object) -> str:
    if isinstance(body, Mapping):
        message = body.get("message") or body.get("error")
        if isinstance(message, Mapping):
            message = message.get("message")
        return str(message) if message else ""
    return body[:DETAIL_MAX_CHARS] if isinstance(body, str) else ""


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = _SECRET_LIKE.sub("[redacted]", text)
    return text if len(text) <= DETAIL_MAX_CHARS else text[: DETAIL_MAX_CHARS - 3] + "..."


def finish_reason_check(finish_reason: str) -> None:
    """Finish reasons that mean the reply is not an answer to keep."""
    if finish_reason == "content_filter":
        raise ContentFiltered("finish_reason=content_filter")
    if finish_reason == "abort":  # vLLM: the request was aborted server-side
        raise StreamIncomplete("finish_reason=abort")
    if finish_reason == "error":  # OpenRouter, LiteLLM: the upstream failed mid-reply
        raise Unavailable("finish_reason=error")


def message_to_openai(message: ChatMessage) -> dict[str, Any]:
    """A message in OpenAI's chat format (what any-llm converts to every other provider's)."""
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        if not message.tool_calls:
            return {"role": "assistant", "content": message.content}
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in message.tool_calls
            ],
        }
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
    return {"role": "user", "content": message.content}


def tool_to_openai(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)},
    }


@dataclass(slots=True)
class ToolCallDraft:
    """One streamed tool call while its fragments arrive."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def tool_fragments_add(drafts: dict[int, ToolCallDraft], fragments: object) -> bool:
    """Fold one delta's `tool_calls` fragments into `drafts` by index; False if none had the expected shape.

    The first id and name of an index are kept (some servers repeat them in every fragment);
    the arguments text is concatenated in arrival order.
    """
    if not isinstance(fragments, list):
        return False
    added = False
    for fragment in fragments:
        if not isinstance(fragment, dict):
            continue
        index = fragment.get("index")
        function = fragment.get("function") or {}
        if type(index) is not int or index < 0 or not isinstance(function, dict):
            continue
        draft = drafts.setdefault(index, ToolCallDraft())
        call_id, name, arguments = fragment.get("id"), function.get("name"), function.get("arguments")
        if not draft.id and call_id and isinstance(call_id, str):
            draft.id = call_id
        if not draft.name and name and isinstance(name, str):
            draft.name = name
        if arguments and isinstance(arguments, str):
            draft.arguments.append(arguments)
        added = True
    return added


def tool_calls_assemble(drafts: Mapping[int, ToolCallDraft]) -> tuple[ToolCall, ...]:
    """The finished calls by index; one that never got a name cannot be run and is dropped."""
    return tuple(
        ToolCall(id=draft.id or f"call_{index}", name=draft.name, arguments="".join(draft.arguments))
        for index, draft in sorted(drafts.items())
        if draft.name
    )


def tool_calls_from_message(message: object) -> tuple[ToolCall, ...]:
    """The calls of a batch answer's message, read as defensively as stream chunks; arguments a
    provider parsed already (a mapping) are written back as JSON."""
    calls: list[ToolCall] = []
    for position, call in enumerate(getattr(message, "tool_calls", None) or ()):
        function = getattr(call, "function", None)
        name, arguments, call_id = getattr(function, "name", None), getattr(function, "arguments", None), call.id
        if not name or not isinstance(name, str):
            continue
        if isinstance(arguments, Mapping):
            arguments = json.dumps(arguments)
        calls.append(
            ToolCall(
                id=call_id if call_id and isinstance(call_id, str) else f"call_{position}",
                name=name,
                arguments=arguments if isinstance(arguments, str) else "",
            )
        )
    return tuple(calls)


def usage_from(usage: Any) -> Usage | None:
    """Usage from the SDK's model (a batch answer) or a stream chunk's dict."""
    if isinstance(usage, Mapping):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    else:
        prompt, completion = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def usage_estimate(messages: Sequence[ChatMessage], text: str, tool_calls: Sequence[ToolCall] = ()) -> Usage:
    completion_tokens = count_tokens(text) + sum(count_tokens(call.name + call.arguments) for call in tool_calls)
    return Usage(prompt_tokens=count_message_tokens(messages), completion_tokens=completion_tokens, estimated=True)
