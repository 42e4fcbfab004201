"""The OpenAI-compatible provider: the only module that imports `openai`.

Works with anything that speaks `/v1/chat/completions` (OpenAI, vLLM, Ollama, LM Studio,
LiteLLM proxy, OpenRouter). It makes exactly one attempt per call: retries, backoff and the
circuit breaker live in `llm.resilience.ResilientProvider`, so the SDK's own retries are off.

Clients. One `AsyncOpenAI` per running event loop: its connection pool is bound to the loop
that opened it, and a client reused from a finished loop (a Celery task run through
`async_to_sync`, a second `asyncio.run`) fails with "Event loop is closed". Each client is
closed when its loop shuts down (see `client()`), and forgotten the next time a new loop
asks for one. The HTTP client is a plain `httpx.AsyncClient`, which the SDK accepts, so
tests can mock it with respx.

Timeouts, all enforced here rather than left to the SDK:

- connect: `connect_timeout` (httpx);
- first token: `first_token_timeout` from the start of the request (connect, headers and any
  role-only chunks included) to the first text (or reasoning) delta;
- stall: once text flows, at most `read_timeout` between two chunks;
- batch `complete()`: `complete_timeout` for the whole answer.
httpx's own read timeout is set to the largest of these as a backstop only.

Requests go through the SDK's `client.post` (its request, auth, error mapping and SSE
decoding) with the body as built here, and a stream's chunks are read as the dicts the
server sent. The SDK's `chat.completions.create` would first walk the whole request against
its TypedDicts (about 10 ms for a prompt of twenty messages, before the request leaves) and
then build a `ChatCompletionChunk` model per token (about 220 µs of CPU a chunk, more than
everything else a token goes through in the server); see docs/performance.md. Chunks are
read defensively: one of the wrong shape is skipped, text that is not a string never passes.

Tools (OpenAI's tool-calling format): `CompletionParams.tools` are sent with `tool_choice:
"auto"` unless `supports_tools` is off (`LLM_TOOLS=false`). A stream's `delta.tool_calls`
fragments are put together by their `index` (id and name come first, the arguments text
in pieces) and yielded as one `ToolCalls` just before the `StreamEnd`. A server that
refuses tools answers 400, raised as `ToolsUnsupported` so the caller can ask again
without them.

Errors: every failure leaves as an `llm.errors.LLMError` (see `_error_translate`). A stream
that ends without a finish reason raises `StreamIncomplete`; `finish_reason=content_filter`
raises `ContentFiltered`: neither is ever returned as a complete reply.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import httpx
import openai
from django.conf import settings
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from llm.base import (
    ChatMessage,
    Completion,
    CompletionParams,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCalls,
    ToolSpec,
    Usage,
)
from llm.errors import (
    AuthenticationFailed,
    BadRequest,
    ConnectionDropped,
    ContentFiltered,
    ContextTooLong,
    LLMError,
    MalformedResponse,
    ModelNotFound,
    NotConfigured,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    StreamIncomplete,
    Timeout,
    ToolsUnsupported,
    Unavailable,
    Unreachable,
)
from llm.params import ResolvedParams, completion_params_resolve
from llm.tokens import count_message_tokens, count_tokens

if TYPE_CHECKING:
    import httpx2

logger = logging.getLogger("companion.llm")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Local servers (Ollama, vLLM, LM Studio) need no key, but the SDK insists on a non-empty one.
KEYLESS_PLACEHOLDER = "not-needed"
DETAIL_MAX_CHARS = 300

_CONTEXT_HINTS = re.compile(
    r"context[ _]length|context window|maximum context|too many tokens|prompt is too long|reduce the length",
    re.IGNORECASE,
)
_FILTER_HINTS = re.compile(r"content[ _](management[ _])?(filter|policy)|responsibleaipolicy", re.IGNORECASE)
# A 4xx naming tools and saying they are not available: Ollama "... does not support tools",
# vLLM '"auto" tool choice requires --enable-auto-tool-choice', llama.cpp "tools param
# requires --jinja flag", OpenAI "'tools' is not supported with this model", Mistral
# "Function calling is not enabled for this model". Both must match: a 400 about a bad tool
# schema is a plain BadRequest.
_TOOLS_HINTS = re.compile(r"\btools?\b|tool[ _]choice|tool[ _]call|function[ _]call", re.IGNORECASE)
_UNSUPPORTED_HINTS = re.compile(
    r"not supported|unsupported|(does|do)(n't| not) support|not enabled|requires? --", re.IGNORECASE
)
_SECRET_LIKE = re.compile(r"(sk-[A-Za-z0-9_\-*.]{4,}|Bearer\s+\S+|key[-_][A-Za-z0-9]{16,})")


class OpenAICompatibleProvider:
    """`llm.base.LLMProvider` over any OpenAI-compatible `/chat/completions` endpoint."""

    def __init__(
        self,
        *,
        model: str,
        api_key: str = "",
        base_url: str = "",
        temperature: float = 0.8,
        max_tokens: int = 800,
        max_tokens_limit: int = 4096,
        connect_timeout: float = 5.0,
        first_token_timeout: float = 30.0,
        read_timeout: float = 20.0,
        complete_timeout: float = 120.0,
        stream_usage: bool = True,
        max_tokens_param: str = "max_tokens",
        max_connections: int = 100,
        supports_tools: bool = True,
        name: str = "openai",
    ) -> None:
        if max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise ValueError("max_tokens_param must be 'max_tokens' or 'max_completion_tokens'")
        self.name = name
        self._model = model
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._max_tokens_limit = max_tokens_limit
        self._connect_timeout = connect_timeout
        self._first_token_timeout = first_token_timeout
        self._read_timeout = read_timeout
        self._complete_timeout = complete_timeout
        self._stream_usage = stream_usage
        self._max_tokens_param = max_tokens_param
        self._max_connections = max_connections
        self._supports_tools = supports_tools
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._clients_lock = threading.Lock()

    @classmethod
    def from_settings(cls) -> OpenAICompatibleProvider:
        return cls(
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
            max_tokens_param=str(getattr(settings, "LLM_MAX_TOKENS_PARAM", "max_tokens")),
            supports_tools=bool(getattr(settings, "LLM_TOOLS", True)),
        )

    # -- what health checks and llm_check show ------------------------------------------------

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
    def base_url(self) -> str:
        return self._base_url or DEFAULT_BASE_URL

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

    # -- one client per event loop ------------------------------------------------------------

    async def client(self) -> AsyncOpenAI:
        """The client of the running event loop, created on first use."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            entry = self._clients.get(loop)
            if entry is not None:
                return entry.client
            # A pooled connection holds its loop, so a finished loop's client must be dropped
            # explicitly or it (and its loop) would live forever.
            for stale in [known for known in self._clients if known.is_closed()]:
                del self._clients[stale]
            client = self._client_build()
            closer = _client_close_at_loop_end(client)
            self._clients[loop] = _LoopClient(client=client, closer=closer)
        # Runs to its `yield` at once. Being a started async generator of this loop, it is closed
        # by the loop's `shutdown_asyncgens()` (asyncio.run, async_to_sync), which closes the
        # client's connections while the loop still runs, instead of leaving them to the GC.
        await anext(closer)
        return client

    async def aclose(self) -> None:
        """Close the running loop's client and its connections now."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            entry = self._clients.pop(loop, None)
        if entry is not None:
            await entry.closer.aclose()

    def _client_build(self) -> AsyncOpenAI:
        backstop = max(self._first_token_timeout, self._read_timeout, self._complete_timeout)
        http_client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=self._connect_timeout,
                read=backstop,
                write=max(self._connect_timeout, self._read_timeout),
                pool=self._first_token_timeout,
            ),
            limits=httpx.Limits(max_connections=self._max_connections, max_keepalive_connections=20),
        )
        return AsyncOpenAI(
            api_key=self._api_key or KEYLESS_PLACEHOLDER,
            base_url=self.base_url,
            max_retries=0,  # ResilientProvider retries, knowing whether a token already reached the user
            # The SDK accepts a legacy httpx client at run time (see openai._httpx2); only its
            # annotation names httpx2.
            http_client=cast("httpx2.AsyncClient", http_client),
        )

    # -- the Protocol ---------------------------------------------------------------------------

    async def complete(self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None) -> Completion:
        resolved = self._params_resolve(params)
        if not self.configured:
            raise NotConfigured("neither LLM_API_KEY nor LLM_BASE_URL is set")
        client = await self.client()
        try:
            async with asyncio.timeout(self._complete_timeout):
                response = await client.post(
                    "/chat/completions",
                    body=self._request_body(messages, resolved, stream=False),
                    cast_to=ChatCompletion,
                )
        except TimeoutError:
            raise Timeout(f"no complete answer within {self._complete_timeout:g}s") from None
        except Exception as exc:
            raise self._error_translate(exc, mid_stream=False) from exc
        # A 200 with a body that is not a chat completion (an HTML page from a proxy) is parsed
        # by the SDK into a plain string rather than raising.
        if not isinstance(response, ChatCompletion) or not response.choices:
            raise MalformedResponse("the answer was not a chat completion")
        choice = response.choices[0]
        finish_reason = str(choice.finish_reason or "unknown")
        _finish_reason_check(finish_reason)
        text = getattr(choice.message, "content", None) or ""
        tool_calls = _tool_calls_from_message(choice.message)
        usage = _usage_from(response.usage) or _usage_estimate(messages, text, tool_calls)
        return Completion(
            text=text,
            finish_reason=finish_reason,
            usage=usage,
            model=response.model or resolved.model,
            tool_calls=tool_calls,
        )

    def stream(
        self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        # Validated now, not at the first `anext`: a bad parameter is the caller's error, raised
        # before anything is stored or sent.
        resolved = self._params_resolve(params)
        return self._stream(list(messages), resolved)

    async def _stream(self, messages: list[ChatMessage], resolved: ResolvedParams) -> AsyncIterator[StreamEvent]:
        if not self.configured:
            raise NotConfigured("neither LLM_API_KEY nor LLM_BASE_URL is set")
        client = await self.client()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._first_token_timeout
        alive = False  # a text, reasoning or tool-call delta arrived: from now on, the stall clock applies
        sdk_stream: openai.AsyncStream[object] | None = None
        pieces: list[str] = []
        drafts: dict[int, _ToolCallDraft] = {}  # tool calls being assembled, by their index
        finish_reason: str | None = None
        usage: Usage | None = None
        model = resolved.model
        try:
            async with asyncio.timeout_at(deadline):
                # Chunks stay the server's dicts: see the module docstring.
                sdk_stream = await client.post(
                    "/chat/completions",
                    body=self._request_body(messages, resolved, stream=True),
                    cast_to=object,
                    stream=True,
                    stream_cls=openai.AsyncStream[object],
                )
            while True:
                if alive:
                    deadline = loop.time() + self._read_timeout
                try:
                    # Each wait is bounded on its own; a timeout scope must never span a `yield`,
                    # or it would fire (and cancel the task) while the consumer runs.
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(sdk_stream)
                except StopAsyncIteration:
                    break
                if not isinstance(chunk, dict):
                    continue  # valid JSON but not a chunk: nothing in it for us
                if chunk.get("usage") is not None:  # on the last chunk only: no check per token
                    usage = _usage_from(chunk["usage"]) or usage
                model = chunk.get("model") or model
                choices = chunk.get("choices")
                if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
                    continue
                choice = choices[0]
                if choice.get("finish_reason"):
                    finish_reason = str(choice["finish_reason"])
                delta = choice.get("delta")
                if not isinstance(delta, dict):
                    continue
                text = delta.get("content")
                if text and isinstance(text, str):
                    alive = True
                    pieces.append(text)
                    yield TextDelta(text)
                elif not alive and (delta.get("reasoning_content") or delta.get("reasoning")):
                    # vLLM, DeepSeek and OpenRouter stream a model's thinking before any content:
                    # it proves the model is alive, so the stall clock takes over.
                    alive = True
                fragments = delta.get("tool_calls")
                if fragments and _tool_fragments_add(drafts, fragments):
                    alive = True
        except LLMError:
            raise
        except TimeoutError:
            if alive:
                raise Timeout(f"the stream stalled for more than {self._read_timeout:g}s") from None
            raise Timeout(f"no first token within {self._first_token_timeout:g}s") from None
        except Exception as exc:
            raise self._error_translate(exc, mid_stream=sdk_stream is not None) from exc
        finally:
            if sdk_stream is not None:
                await _stream_close(sdk_stream)

        if finish_reason is None:
            raise StreamIncomplete(f"the stream ended without a finish reason after {len(pieces)} deltas")
        _finish_reason_check(finish_reason)
        calls = _tool_calls_assemble(drafts)
        if calls:
            yield ToolCalls(calls)
        yield StreamEnd(
            finish_reason=finish_reason,
            usage=usage or _usage_estimate(messages, "".join(pieces), calls),
            model=model,
        )

    def _request_body(
        self, messages: Sequence[ChatMessage], resolved: ResolvedParams, *, stream: bool
    ) -> dict[str, Any]:
        """The `/chat/completions` body, sent as built (the SDK's `create()` would walk it again)."""
        body: dict[str, Any] = {
            "model": resolved.model,
            "messages": _messages_to_openai(messages),
            "temperature": resolved.temperature,
            self._max_tokens_param: resolved.max_tokens,
            "stream": stream,
        }
        if resolved.seed is not None:
            body["seed"] = resolved.seed
        if resolved.tools and self._supports_tools:
            body["tools"] = [_tool_to_openai(tool) for tool in resolved.tools]
            body["tool_choice"] = "auto"
        if stream and self._stream_usage:
            body["stream_options"] = {"include_usage": True}
        return body

    # -- diagnosis helpers ----------------------------------------------------------------------

    async def models_list(self) -> list[str]:
        """The model ids the server offers (GET /models), for diagnosing an unknown model."""
        if not self.configured:
            raise NotConfigured("neither LLM_API_KEY nor LLM_BASE_URL is set")
        client = await self.client()
        try:
            async with asyncio.timeout(self._first_token_timeout):
                return sorted([model.id async for model in client.models.list()])
        except TimeoutError:
            raise Timeout(f"GET /models took more than {self._first_token_timeout:g}s") from None
        except Exception as exc:
            raise self._error_translate(exc, mid_stream=False) from exc

    # -- internals ------------------------------------------------------------------------------

    def _params_resolve(self, params: CompletionParams | None) -> ResolvedParams:
        return completion_params_resolve(
            params=params,
            default_model=self._model,
            default_temperature=self._temperature,
            default_max_tokens=self._max_tokens,
            max_tokens_limit=self._max_tokens_limit,
        )

    def _error_translate(self, exc: BaseException, *, mid_stream: bool) -> LLMError:
        return error_translate(exc, mid_stream=mid_stream, secrets=(self._api_key,))


@dataclass(frozen=True, slots=True)
class _LoopClient:
    client: AsyncOpenAI
    closer: AsyncGenerator[None, None]


async def _client_close_at_loop_end(client: AsyncOpenAI) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.close()


# -- errors ---------------------------------------------------------------------------------------


def error_translate(exc: BaseException, *, mid_stream: bool, secrets: Sequence[str] = ()) -> LLMError:
    """The `LLMError` for an SDK, httpx or decoding failure.

    `mid_stream` says whether the response had already started: a transport error then means
    the connection dropped mid-reply, before it means the server could not be reached.
    """
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc, secrets)
    if isinstance(exc, openai.APITimeoutError):
        if isinstance(exc.__cause__, httpx.ConnectTimeout):
            return Unreachable("connecting timed out")
        return ConnectionDropped("read timed out mid-stream") if mid_stream else Timeout("request timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        if mid_stream:
            return ConnectionDropped(f"connection lost mid-stream ({type(cause).__name__})")
        if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout):
            return Unreachable(f"could not connect ({type(cause).__name__})")
        return Unavailable(f"connection failed before an answer ({type(cause).__name__})")
    if isinstance(exc, openai.APIResponseValidationError):
        return MalformedResponse("the answer did not match the chat completion schema")
    if isinstance(exc, openai.APIError):
        # An error event inside a stream: `data: {"error": {...}}`.
        return _in_stream_error(exc, secrets)
    if isinstance(exc, openai.OpenAIError):
        return LLMError(_redact(f"{type(exc).__name__}: {exc}", secrets))
    if isinstance(exc, httpx.TimeoutException):
        return ConnectionDropped("read timed out mid-stream") if mid_stream else Timeout(type(exc).__name__)
    if isinstance(exc, httpx.TransportError):
        if mid_stream:
            return ConnectionDropped(f"connection lost mid-stream ({type(exc).__name__})")
        return (
            Unreachable(type(exc).__name__) if isinstance(exc, httpx.ConnectError) else Unavailable(type(exc).__name__)
        )
    if isinstance(exc, ValueError):
        # json.JSONDecodeError on a non-JSON `data:` line, a bad UTF-8 sequence, a pydantic error.
        return MalformedResponse(f"an event could not be decoded ({type(exc).__name__})")
    return LLMError(f"unexpected {type(exc).__name__}")


def _status_error(exc: openai.APIStatusError, secrets: Sequence[str]) -> LLMError:
    status = exc.status_code
    code = (exc.code or "").lower()
    kind = (getattr(exc, "type", None) or "").lower()
    message = _server_message(exc.body)
    detail = _redact(f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else ""), secrets)
    retry_after = retry_after_parse(exc.response.headers)
    if status == 401:
        return AuthenticationFailed(detail, status_code=status)
    if status == 403:
        return PermissionDenied(detail, status_code=status)
    if status == 404:
        return ModelNotFound(detail, status_code=status)
    if status == 408:
        return Timeout(detail, retry_after=retry_after, status_code=status)
    if status == 413:
        return ContextTooLong(detail, status_code=status)
    if status == 429:
        if code == "insufficient_quota" or kind == "insufficient_quota":
            return QuotaExceeded(detail, status_code=status)
        return RateLimited(detail, retry_after=retry_after, status_code=status)
    if status >= 500 or status == 409:
        return Unavailable(detail, retry_after=retry_after, status_code=status)
    if code == "context_length_exceeded" or _CONTEXT_HINTS.search(message):
        return ContextTooLong(detail, status_code=status)
    if code in ("content_filter", "content_policy_violation") or _FILTER_HINTS.search(f"{code} {message}"):
        return ContentFiltered(detail, status_code=status)
    if _TOOLS_HINTS.search(message) and _UNSUPPORTED_HINTS.search(message):
        return ToolsUnsupported(detail, status_code=status)
    return BadRequest(detail, status_code=status)


def _in_stream_error(exc: openai.APIError, secrets: Sequence[str]) -> LLMError:
    code = (exc.code or "").lower()
    message = _server_message(exc.body) or exc.message
    detail = _redact("error event mid-stream" + (f" {code}" if code else "") + f": {message}", secrets)
    if code == "context_length_exceeded" or _CONTEXT_HINTS.search(message):
        return ContextTooLong(detail)
    if "content_filter" in code or _FILTER_HINTS.search(message):
        return ContentFiltered(detail)
    if "rate_limit" in code:
        return RateLimited(detail)
    return Unavailable(detail)


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


def _server_message(body: object) -> str:
    if isinstance(body, Mapping):
        message = body.get("message") or body.get("error")
        if isinstance(message, Mapping):
            message = message.get("message")
        return str(message) if message else ""
    return body[:DETAIL_MAX_CHARS] if isinstance(body, str) else ""


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = _SECRET_LIKE.sub("[redacted]", text)
    return text if len(text) <= DETAIL_MAX_CHARS else text[: DETAIL_MAX_CHARS - 3] + "..."


# -- small helpers ----------------------------------------------------------------------------------


def _finish_reason_check(finish_reason: str) -> None:
    """Finish reasons that mean the reply is not an answer to keep."""
    if finish_reason == "content_filter":
        raise ContentFiltered("finish_reason=content_filter")
    if finish_reason == "abort":  # vLLM: the request was aborted server-side
        raise StreamIncomplete("finish_reason=abort")
    if finish_reason == "error":  # OpenRouter, LiteLLM: the upstream failed mid-reply
        raise Unavailable("finish_reason=error")


def _messages_to_openai(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    return [_message_to_openai(message) for message in messages]


def _message_to_openai(message: ChatMessage) -> ChatCompletionMessageParam:
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


def _tool_to_openai(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": dict(tool.parameters)},
    }


@dataclass(slots=True)
class _ToolCallDraft:
    """One streamed tool call while its fragments arrive."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def _tool_fragments_add(drafts: dict[int, _ToolCallDraft], fragments: object) -> bool:
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
        draft = drafts.setdefault(index, _ToolCallDraft())
        call_id, name, arguments = fragment.get("id"), function.get("name"), function.get("arguments")
        if not draft.id and call_id and isinstance(call_id, str):
            draft.id = call_id
        if not draft.name and name and isinstance(name, str):
            draft.name = name
        if arguments and isinstance(arguments, str):
            draft.arguments.append(arguments)
        added = True
    return added


def _tool_calls_assemble(drafts: Mapping[int, _ToolCallDraft]) -> tuple[ToolCall, ...]:
    """The finished calls by index; one that never got a name cannot be run and is dropped."""
    return tuple(
        ToolCall(id=draft.id or f"call_{index}", name=draft.name, arguments="".join(draft.arguments))
        for index, draft in sorted(drafts.items())
        if draft.name
    )


def _tool_calls_from_message(message: object) -> tuple[ToolCall, ...]:
    """The calls of a batch answer's message, read as defensively as stream chunks."""
    calls: list[ToolCall] = []
    for position, call in enumerate(getattr(message, "tool_calls", None) or ()):
        function = getattr(call, "function", None)
        name, arguments, call_id = getattr(function, "name", None), getattr(function, "arguments", None), call.id
        if not name or not isinstance(name, str):
            continue
        calls.append(
            ToolCall(
                id=call_id if call_id and isinstance(call_id, str) else f"call_{position}",
                name=name,
                arguments=arguments if isinstance(arguments, str) else "",
            )
        )
    return tuple(calls)


def _usage_from(usage: Any) -> Usage | None:
    """Usage from the SDK's model (a batch answer) or a stream chunk's dict."""
    if isinstance(usage, Mapping):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    else:
        prompt, completion = getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def _usage_estimate(messages: Sequence[ChatMessage], text: str, tool_calls: Sequence[ToolCall] = ()) -> Usage:
    completion_tokens = count_tokens(text) + sum(count_tokens(call.name + call.arguments) for call in tool_calls)
    return Usage(prompt_tokens=count_message_tokens(messages), completion_tokens=completion_tokens, estimated=True)


async def _stream_close(sdk_stream: openai.AsyncStream[object]) -> None:
    """Close the HTTP response so the server stops generating; closing must never mask the real outcome."""
    try:
        await sdk_stream.close()
    except Exception:  # already failing or finished: nothing more to release
        logger.debug("closing an LLM stream failed", exc_info=True)
