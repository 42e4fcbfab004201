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
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack, cast

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
    ToolCalls,
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
from llm.params import ResolvedParams
from llm.providers.common import (
    CONTEXT_HINTS,
    FILTER_HINTS,
    KEYLESS_PLACEHOLDER,
    TOOLS_HINTS,
    UNSUPPORTED_HINTS,
    ProviderBase,
    ProviderOptions,
    ToolCallDraft,
    finish_reason_check,
    message_to_openai,
    provider_options_from_settings,
    redact,
    retry_after_parse,
    server_message,
    tool_calls_assemble,
    tool_calls_from_message,
    tool_fragments_add,
    tool_to_openai,
    usage_estimate,
    usage_from,
)

if TYPE_CHECKING:
    import httpx2

logger = logging.getLogger("companion.llm")

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAICompatibleProvider(ProviderBase):
    """`llm.base.LLMProvider` over any OpenAI-compatible `/chat/completions` endpoint."""

    def __init__(
        self, *, max_tokens_param: str = "max_tokens", name: str = "openai", **options: Unpack[ProviderOptions]
    ) -> None:
        if max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise ValueError("max_tokens_param must be 'max_tokens' or 'max_completion_tokens'")
        super().__init__(name=name, **options)
        self._base_url = self._base_url.rstrip("/")
        self._max_tokens_param = max_tokens_param
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}
        self._clients_lock = threading.Lock()

    @classmethod
    def from_settings(cls) -> OpenAICompatibleProvider:
        return cls(
            max_tokens_param=str(getattr(settings, "LLM_MAX_TOKENS_PARAM", "max_tokens")),
            **provider_options_from_settings(),
        )

    # -- what health checks and llm_check show ------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._base_url or DEFAULT_BASE_URL

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
        http_client = httpx.AsyncClient(timeout=self._http_timeout(), limits=self._http_limits())
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
        finish_reason_check(finish_reason)
        text = getattr(choice.message, "content", None) or ""
        tool_calls = tool_calls_from_message(choice.message)
        usage = usage_from(response.usage) or usage_estimate(messages, text, tool_calls)
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
        drafts: dict[int, ToolCallDraft] = {}  # tool calls being assembled, by their index
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
                    usage = usage_from(chunk["usage"]) or usage
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
                if fragments and tool_fragments_add(drafts, fragments):
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
        finish_reason_check(finish_reason)
        calls = tool_calls_assemble(drafts)
        if calls:
            yield ToolCalls(calls)
        yield StreamEnd(
            finish_reason=finish_reason,
            usage=usage or usage_estimate(messages, "".join(pieces), calls),
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
            body["tools"] = [tool_to_openai(tool) for tool in resolved.tools]
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
        return LLMError(redact(f"{type(exc).__name__}: {exc}", secrets))
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
    message = server_message(exc.body)
    detail = redact(f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else ""), secrets)
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
    if code == "context_length_exceeded" or CONTEXT_HINTS.search(message):
        return ContextTooLong(detail, status_code=status)
    if code in ("content_filter", "content_policy_violation") or FILTER_HINTS.search(f"{code} {message}"):
        return ContentFiltered(detail, status_code=status)
    if TOOLS_HINTS.search(message) and UNSUPPORTED_HINTS.search(message):
        return ToolsUnsupported(detail, status_code=status)
    return BadRequest(detail, status_code=status)


def _in_stream_error(exc: openai.APIError, secrets: Sequence[str]) -> LLMError:
    code = (exc.code or "").lower()
    message = server_message(exc.body) or exc.message
    detail = redact("error event mid-stream" + (f" {code}" if code else "") + f": {message}", secrets)
    if code == "context_length_exceeded" or CONTEXT_HINTS.search(message):
        return ContextTooLong(detail)
    if "content_filter" in code or FILTER_HINTS.search(message):
        return ContentFiltered(detail)
    if "rate_limit" in code:
        return RateLimited(detail)
    return Unavailable(detail)


# -- small helpers ----------------------------------------------------------------------------------


def _messages_to_openai(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    return [cast("ChatCompletionMessageParam", message_to_openai(message)) for message in messages]


async def _stream_close(sdk_stream: openai.AsyncStream[object]) -> None:
    """Close the HTTP response so the server stops generating; closing must never mask the real outcome."""
    try:
        await sdk_stream.close()
    except Exception:  # already failing or finished: nothing more to release
        logger.debug("closing an LLM stream failed", exc_info=True)
