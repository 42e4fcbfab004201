"""Native providers through any-llm (`any-llm-sdk`): the only module that imports `any_llm`.

`LLM_PROVIDER=anyllm` with `LLM_MODEL=provider:model` (`anthropic:claude-3-5-haiku-latest`,
`gemini:gemini-2.0-flash`, `mistral:mistral-small-latest`, `ollama:llama3.2`). any-llm
speaks each provider's own API through its SDK and hands back OpenAI-shaped chunks, which
are read here as the OpenAI provider reads its own: text deltas, tool-call fragments put
together by index (`llm/providers/common.py`), one `ToolCalls`, then one `StreamEnd`.
`LLM_BASE_URL`, when set, is the provider's `api_base`, unchanged (Anthropic: no `/v1`).

Like the OpenAI provider, it makes exactly one attempt per call (the SDKs' own retries are
off, `max_retries=0`); retries, the breaker and replays are `ResilientProvider`'s.

Clients. One any-llm client per event loop and provider, for the same reason as the OpenAI
provider's (a connection pool belongs to its loop). For the SDKs that take an httpx client
(Anthropic, the OpenAI-compatible family, Gemini) it is ours, with a transport that applies
our connect / read timeouts to every request: the Gemini SDK sends each request with its
own timeout (none by default), which would otherwise win. Other SDKs keep their own client;
the asyncio deadlines below still bound them.

Timeouts: first token (from the request to the first text, reasoning or tool-call delta),
stall (between chunks once text flows) and batch (`complete()`) are asyncio deadlines
around each wait, never around a `yield`, as in the OpenAI provider.

Errors: any-llm is asked for its unified exceptions (`unified_exceptions=True`), which carry
the HTTP status, the server's code and the SDK's original exception; `error_translate` reads
the status first, then the transport failure underneath (httpx's, inside any SDK), then the
class, and returns our typed error. The key never appears in a detail.

Cancellation: `aclose()` on the stream closes any-llm's iterator, which closes the SDK's
stream and its HTTP response.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Unpack

import any_llm
import httpx
from any_llm import AnyLLM

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

logger = logging.getLogger("companion.llm")

# Gemini's wording for a prompt over the window ("The input token count (N) exceeds the maximum
# number of tokens allowed (M)"); Anthropic's "prompt is too long" is among the OpenAI hints.
_MORE_CONTEXT_HINTS = re.compile(r"input token count|exceeds the maximum number of tokens", re.IGNORECASE)
# any-llm classes by SDK family, read from a provider class's MRO by name so that checking one
# never imports another provider's SDK.
_HTTPX_CLIENT_FAMILIES = frozenset({"BaseAnthropicProvider", "BaseOpenAIProvider"})
_GOOGLE_FAMILY = "GoogleProvider"
# Families whose any-llm conversion passes `seed` to the API (Anthropic's SDK has no seed and
# would refuse the keyword; so would Mistral's, which calls it `random_seed`).
_SEED_FAMILIES = frozenset({"BaseOpenAIProvider", _GOOGLE_FAMILY})
GEMINI_API_VERSION = "v1beta"
# Transport failures of the SDKs' HTTP clients: httpx, and httpx2 (its successor, which
# mistralai 3 uses; installed with openai) where present.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httpx.TransportError,)
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (httpx.ConnectError, httpx.ConnectTimeout)
_TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (httpx.TimeoutException,)
try:
    import httpx2
except ImportError:  # pragma: no cover - an install without it
    pass
else:
    _TRANSPORT_ERRORS += (httpx2.TransportError,)
    _CONNECT_ERRORS += (httpx2.ConnectError, httpx2.ConnectTimeout)
    _TIMEOUT_ERRORS += (httpx2.TimeoutException,)
# The HTTP responses a stream opened, recorded by our transport, so that closing the stream
# closes them whatever the SDK does: google-genai's nested generators do not pass `aclose()`
# on, and its response would otherwise be read to the end (or left to the garbage collector).
_OPENED_RESPONSES: contextvars.ContextVar[list[httpx.Response] | None] = contextvars.ContextVar(
    "companion_llm_opened_responses", default=None
)


class AnyLLMProvider(ProviderBase):
    """`llm.base.LLMProvider` over any provider any-llm supports, named as `provider:model`."""

    def __init__(self, *, name: str = "anyllm", **options: Unpack[ProviderOptions]) -> None:
        super().__init__(name=name, **options)
        self._clients: dict[tuple[asyncio.AbstractEventLoop, str], _LoopClient] = {}
        self._clients_lock = threading.Lock()

    @classmethod
    def from_settings(cls) -> AnyLLMProvider:
        return cls(**provider_options_from_settings())

    # -- what health checks and llm_check show ------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._base_url or f"(the {model_split(self._model)[0] or '?'} default)"

    # -- one client per event loop and provider -------------------------------------------------

    async def client(self, provider_key: str) -> AnyLLM:
        """The any-llm client of the running loop for `provider_key`, created on first use."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            entry = self._clients.get((loop, provider_key))
            if entry is not None:
                return entry.client
            for stale in [key for key in self._clients if key[0].is_closed()]:
                del self._clients[stale]
        # Built outside the lock: importing a provider's SDK the first time takes a while.
        client, http_client = self._client_build(provider_key)
        closer = _client_close_at_loop_end(client, http_client)
        with self._clients_lock:
            self._clients[(loop, provider_key)] = _LoopClient(client=client, closer=closer)
        await anext(closer)  # closed by the loop's shutdown_asyncgens(), like the OpenAI provider's
        return client

    async def aclose(self) -> None:
        """Close the running loop's clients and their connections now."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            entries = [self._clients.pop(key) for key in list(self._clients) if key[0] is loop]
        for entry in entries:
            await entry.closer.aclose()

    def _client_build(self, provider_key: str) -> tuple[AnyLLM, httpx.AsyncClient | None]:
        try:
            families = _families(AnyLLM.get_provider_class(provider_key))
        except (ImportError, any_llm.AnyLLMError, ValueError) as exc:
            raise NotConfigured(_setup_problem(provider_key, exc)) from None
        kwargs: dict[str, Any] = {}
        http_client: httpx.AsyncClient | None = None
        if families & _HTTPX_CLIENT_FAMILIES:
            http_client = self._http_client_build()
            kwargs["http_client"] = http_client
        elif _GOOGLE_FAMILY in families:
            http_client = self._http_client_build()
            kwargs["http_options"] = {"httpx_async_client": http_client}
            if provider_key == "gemini":
                # google-genai 3 defaults to v1, which lacks the preview models (and llmock, like
                # Google's REST docs, serves v1beta): v1beta carries every model v1 does.
                kwargs["http_options"]["api_version"] = GEMINI_API_VERSION
        try:
            client = AnyLLM.create(
                provider_key,
                api_key=self._api_key or (KEYLESS_PLACEHOLDER if self._base_url else None),
                api_base=self._base_url or None,
                unified_exceptions=True,
                max_retries=0,  # ResilientProvider retries, knowing whether text already reached the user
                **kwargs,
            )
        except any_llm.UnsupportedParameterError:  # an SDK without a retry count: it keeps its own
            client = AnyLLM.create(
                provider_key,
                api_key=self._api_key or (KEYLESS_PLACEHOLDER if self._base_url else None),
                api_base=self._base_url or None,
                unified_exceptions=True,
                **kwargs,
            )
        except (ImportError, any_llm.MissingApiKeyError) as exc:
            raise NotConfigured(_setup_problem(provider_key, exc)) from None
        return client, http_client

    def _http_client_build(self) -> httpx.AsyncClient:
        timeout = self._http_timeout()
        return httpx.AsyncClient(timeout=timeout, transport=_OurTimeouts(timeout, limits=self._http_limits()))

    # -- the Protocol ---------------------------------------------------------------------------

    async def complete(self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None) -> Completion:
        resolved = self._params_resolve(params)
        if not self.configured:
            raise NotConfigured("neither LLM_API_KEY nor LLM_BASE_URL is set")
        provider_key, model_id = self._target(resolved.model)
        try:
            async with asyncio.timeout(self._complete_timeout):
                client = await self.client(provider_key)
                response = await client.acompletion(
                    **self._request(messages, resolved, provider_key, model_id, stream=False)
                )
        except LLMError:
            raise
        except TimeoutError:
            raise Timeout(f"no complete answer within {self._complete_timeout:g}s") from None
        except Exception as exc:
            raise self._error_translate(exc, mid_stream=False) from exc
        choices = getattr(response, "choices", None)
        if not choices:
            raise MalformedResponse("the answer was not a chat completion")
        choice = choices[0]
        finish_reason = str(choice.finish_reason or "unknown")
        finish_reason_check(finish_reason)
        text = getattr(choice.message, "content", None) or ""
        tool_calls = tool_calls_from_message(choice.message)
        usage = usage_from(getattr(response, "usage", None)) or usage_estimate(messages, text, tool_calls)
        return Completion(
            text=text,
            finish_reason=finish_reason,
            usage=usage,
            model=_model_name(provider_key, getattr(response, "model", None) or model_id),
            tool_calls=tool_calls,
        )

    def stream(
        self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        resolved = self._params_resolve(params)  # a bad parameter is raised now, before anything is sent
        return self._stream(list(messages), resolved)

    async def _stream(self, messages: list[ChatMessage], resolved: ResolvedParams) -> AsyncIterator[StreamEvent]:
        if not self.configured:
            raise NotConfigured("neither LLM_API_KEY nor LLM_BASE_URL is set")
        provider_key, model_id = self._target(resolved.model)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._first_token_timeout
        alive = False  # a text, reasoning or tool-call delta arrived: from now on, the stall clock applies
        upstream: AsyncIterator[Any] | None = None
        answered = False  # a chunk arrived: a broken connection now dropped mid-reply
        opened: list[httpx.Response] = []
        pieces: list[str] = []
        drafts: dict[int, ToolCallDraft] = {}
        finish_reason: str | None = None
        usage: Usage | None = None
        try:
            async with asyncio.timeout_at(deadline):
                client = await self.client(provider_key)
                # Set before each wait that may send the request, so that two streams taken in
                # turns by one task each record their own.
                _OPENED_RESPONSES.set(opened)
                # Some SDKs (Gemini's) send the request and read the first chunk here already.
                upstream = await client.acompletion(
                    **self._request(messages, resolved, provider_key, model_id, stream=True)
                )
            while True:
                if alive:
                    deadline = loop.time() + self._read_timeout
                try:
                    if not opened:
                        _OPENED_RESPONSES.set(opened)
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(upstream)
                except StopAsyncIteration:
                    break
                answered = True
                if chunk.usage is not None:
                    usage = usage_from(chunk.usage) or usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.finish_reason:
                    finish_reason = str(choice.finish_reason)
                delta = choice.delta
                if delta is None:
                    continue
                text = delta.content
                if text and isinstance(text, str):
                    alive = True
                    pieces.append(text)
                    yield TextDelta(text)
                elif not alive and getattr(delta, "reasoning", None):
                    alive = True  # a thinking model is alive: the stall clock takes over
                if delta.tool_calls and tool_fragments_add(
                    drafts, [fragment.model_dump() for fragment in delta.tool_calls]
                ):
                    alive = True
        except LLMError:
            raise
        except TimeoutError:
            if alive:
                raise Timeout(f"the stream stalled for more than {self._read_timeout:g}s") from None
            raise Timeout(f"no first token within {self._first_token_timeout:g}s") from None
        except Exception as exc:
            raise self._error_translate(exc, mid_stream=answered) from exc
        finally:
            if upstream is not None:
                await _upstream_close(upstream)
            _OPENED_RESPONSES.set(None)
            for response in opened:
                try:
                    await response.aclose()
                except Exception:  # already failing or finished: nothing more to release
                    logger.debug("closing an LLM response failed", exc_info=True)

        if finish_reason is None:
            raise StreamIncomplete(f"the stream ended without a finish reason after {len(pieces)} deltas")
        finish_reason_check(finish_reason)
        calls = tool_calls_assemble(drafts)
        if calls:
            yield ToolCalls(calls)
        yield StreamEnd(
            finish_reason=finish_reason,
            usage=usage or usage_estimate(messages, "".join(pieces), calls),
            model=_model_name(provider_key, model_id),
        )

    def _request(
        self,
        messages: Sequence[ChatMessage],
        resolved: ResolvedParams,
        provider_key: str,
        model_id: str,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        """The keywords of `acompletion`: OpenAI's format, which any-llm converts to the provider's."""
        families = _families_of_key(provider_key)
        request: dict[str, Any] = {
            "model": model_id,
            "messages": [message_to_openai(message) for message in messages],
            "temperature": resolved.temperature,
            "max_tokens": resolved.max_tokens,
            "stream": stream,
        }
        if resolved.seed is not None and families & _SEED_FAMILIES:
            request["seed"] = resolved.seed
        if resolved.tools and self._supports_tools:
            request["tools"] = [tool_to_openai(tool) for tool in resolved.tools]
            request["tool_choice"] = "auto"
        if stream and self._stream_usage and "BaseOpenAIProvider" in families:
            request["stream_options"] = {"include_usage": True}
        return request

    # -- diagnosis helpers ----------------------------------------------------------------------

    async def models_list(self) -> list[str]:
        """The model ids the provider offers, as `provider:model`, for diagnosing an unknown model."""
        if not self.configured:
            raise NotConfigured("neither LLM_API_KEY nor LLM_BASE_URL is set")
        provider_key, _ = self._target(self._model)
        try:
            async with asyncio.timeout(self._first_token_timeout):
                client = await self.client(provider_key)
                models = await client.alist_models()
        except LLMError:
            raise
        except TimeoutError:
            raise Timeout(f"listing models took more than {self._first_token_timeout:g}s") from None
        except Exception as exc:
            raise self._error_translate(exc, mid_stream=False) from exc
        return sorted(f"{provider_key}:{model.id.removeprefix('models/')}" for model in models)

    # -- internals ------------------------------------------------------------------------------

    def _target(self, model: str) -> tuple[str, str]:
        """(provider, model id) for a model named `provider:model`; a bare id uses LLM_MODEL's provider."""
        provider_key, model_id = model_split(model)
        if not provider_key:
            provider_key = model_split(self._model)[0]
        if not provider_key:
            raise NotConfigured(f"LLM_MODEL={self._model!r}: expected provider:model, e.g. anthropic:claude-3-5-haiku")
        return provider_key, model_id

    def _error_translate(self, exc: BaseException, *, mid_stream: bool) -> LLMError:
        return error_translate(exc, mid_stream=mid_stream, secrets=(self._api_key,))


def model_split(model: str) -> tuple[str, str]:
    """("anthropic", "claude-3-5-haiku") from "anthropic:claude-3-5-haiku"; ("", model) when no provider is named.

    Only a provider any-llm knows counts: Ollama's "llama3.2:3b" alone is a model id.
    """
    provider_key, sep, model_id = model.partition(":")
    if sep and provider_key.lower() in _supported_providers():
        return provider_key.lower(), model_id
    return "", model


def _supported_providers() -> frozenset[str]:
    global _SUPPORTED
    if _SUPPORTED is None:
        _SUPPORTED = frozenset(AnyLLM.get_supported_providers())
    return _SUPPORTED


_SUPPORTED: frozenset[str] | None = None


def _model_name(provider_key: str, model_id: str) -> str:
    return f"{provider_key}:{model_id}"


def _families(provider_class: type) -> frozenset[str]:
    return frozenset(cls.__name__ for cls in provider_class.__mro__)


_FAMILIES_BY_KEY: dict[str, frozenset[str]] = {}


def _families_of_key(provider_key: str) -> frozenset[str]:
    families = _FAMILIES_BY_KEY.get(provider_key)
    if families is None:
        families = _FAMILIES_BY_KEY[provider_key] = _families(AnyLLM.get_provider_class(provider_key))
    return families


def _setup_problem(provider_key: str, exc: BaseException) -> str:
    if isinstance(exc, any_llm.MissingApiKeyError):
        return f"no API key for {provider_key}: set LLM_API_KEY"
    if isinstance(exc, ImportError):
        return f"the {provider_key} provider's SDK is not installed: pip install 'any-llm-sdk[{provider_key}]'"
    return f"{provider_key!r} is not a provider any-llm knows"


class _OurTimeouts(httpx.AsyncBaseTransport):
    """Sends every request with our timeouts, whatever the SDK asked for (Gemini's asks for none)."""

    def __init__(self, timeout: httpx.Timeout, *, limits: httpx.Limits) -> None:
        self._timeout = timeout.as_dict()
        self._inner = httpx.AsyncHTTPTransport(limits=limits)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions["timeout"] = self._timeout
        response = await self._inner.handle_async_request(request)
        opened = _OPENED_RESPONSES.get()
        if opened is not None:
            opened.append(response)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass(frozen=True, slots=True)
class _LoopClient:
    client: AnyLLM
    closer: AsyncGenerator[None, None]


async def _client_close_at_loop_end(
    client: AnyLLM, http_client: httpx.AsyncClient | None
) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if http_client is not None:
            await http_client.aclose()
        else:
            await _sdk_client_close(client)


async def _sdk_client_close(client: AnyLLM) -> None:
    """Close the SDK client any-llm built itself (Mistral's, Ollama's), however it spells it."""
    sdk = getattr(client, "client", None)
    close = getattr(sdk, "aclose", None) or getattr(sdk, "close", None)
    if not callable(close):
        return
    try:
        result = close()
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.debug("closing an any-llm client failed", exc_info=True)


async def _upstream_close(upstream: AsyncIterator[Any]) -> None:
    """Close any-llm's iterator, and with it the SDK's stream and the HTTP response."""
    aclose = getattr(upstream, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        logger.debug("closing an LLM stream failed", exc_info=True)


# -- errors ---------------------------------------------------------------------------------------


def error_translate(exc: BaseException, *, mid_stream: bool, secrets: Sequence[str] = ()) -> LLMError:
    """The `LLMError` for an any-llm, SDK, httpx or decoding failure.

    The HTTP status decides when there is one; otherwise the transport failure underneath
    (any SDK wraps httpx's), then any-llm's class. `mid_stream`: the response had started, so a
    broken connection dropped mid-reply rather than never answering.
    """
    if isinstance(exc, LLMError):
        return exc
    status = _status_of(exc)
    if status is not None and status >= 400:
        return _status_error(exc, status, secrets)
    transport = _transport_cause(exc)
    if transport is not None:
        name = type(transport).__name__
        if isinstance(transport, _CONNECT_ERRORS) and not mid_stream:
            return Unreachable(f"could not connect ({name})")
        if mid_stream:
            return ConnectionDropped(f"connection lost mid-stream ({name})")
        if isinstance(transport, _TIMEOUT_ERRORS):
            return Timeout(f"request timed out ({name})")
        return Unavailable(f"connection failed before an answer ({name})")
    if _decode_cause(exc) is not None:
        return MalformedResponse(f"an event could not be decoded ({type(_decode_cause(exc)).__name__})")
    message = redact(_message_of(exc), secrets)
    if isinstance(exc, any_llm.MissingApiKeyError):
        return NotConfigured(message)
    if isinstance(exc, any_llm.RateLimitError):
        return RateLimited(message, retry_after=_retry_after_of(exc))
    if isinstance(exc, any_llm.AuthenticationError):
        return AuthenticationFailed(message)
    if isinstance(exc, any_llm.ModelNotFoundError):
        return ModelNotFound(message)
    if isinstance(exc, any_llm.ContextLengthExceededError):
        return ContextTooLong(message)
    if isinstance(exc, any_llm.ContentFilterError):
        return ContentFiltered(message)
    if isinstance(exc, any_llm.InvalidRequestError | any_llm.UnsupportedParameterError):
        return BadRequest(message)
    if isinstance(exc, any_llm.AnyLLMError):
        # An error event inside a stream (Anthropic's `event: error`, overloaded), or a provider
        # fault any-llm could not place.
        return _in_stream_error(message)
    return LLMError(f"unexpected {type(exc).__name__}")


def _status_error(exc: BaseException, status: int, secrets: Sequence[str]) -> LLMError:
    original = _original(exc)
    code = str(getattr(exc, "code", None) or _body_field(original, "code") or "").lower()
    kind = str(getattr(exc, "error_type", None) or _body_field(original, "type") or "").lower()
    message = server_message(getattr(original, "body", None)) or _message_of(exc)
    detail = redact(f"HTTP {status}" + (f" {code or kind}" if code or kind else "") + f": {message}", secrets)
    retry_after = _retry_after_of(exc)
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
        if "insufficient_quota" in (code, kind):
            return QuotaExceeded(detail, status_code=status)
        return RateLimited(detail, retry_after=retry_after, status_code=status)
    if status >= 500 or status == 409:  # Anthropic's 529 "overloaded" included
        return Unavailable(detail, retry_after=retry_after, status_code=status)
    if (
        isinstance(exc, any_llm.ContextLengthExceededError)
        or code == "context_length_exceeded"
        or CONTEXT_HINTS.search(message)
        or _MORE_CONTEXT_HINTS.search(message)
    ):
        return ContextTooLong(detail, status_code=status)
    if isinstance(exc, any_llm.ContentFilterError) or FILTER_HINTS.search(f"{code} {message}"):
        return ContentFiltered(detail, status_code=status)
    if TOOLS_HINTS.search(message) and UNSUPPORTED_HINTS.search(message):
        return ToolsUnsupported(detail, status_code=status)
    return BadRequest(detail, status_code=status)


def _in_stream_error(message: str) -> LLMError:
    if CONTEXT_HINTS.search(message) or _MORE_CONTEXT_HINTS.search(message):
        return ContextTooLong(message)
    if FILTER_HINTS.search(message):
        return ContentFiltered(message)
    if re.search(r"rate.?limit", message, re.IGNORECASE):
        return RateLimited(message)
    return Unavailable(message)


def _original(exc: BaseException) -> BaseException:
    original = getattr(exc, "original_exception", None)
    return original if isinstance(original, BaseException) else exc


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, any-llm's original, and their causes and contexts, each once."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop(0)
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        original = getattr(current, "original_exception", None)
        pending += [original if isinstance(original, BaseException) else None, current.__cause__, current.__context__]
    return seen


def _status_of(exc: BaseException) -> int | None:
    for link in _chain(exc):
        for name in ("status_code", "code", "status"):  # genai's APIError spells it `code`
            value = getattr(link, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value < 600:
                return value
        response = getattr(link, "response", None)
        value = getattr(response, "status_code", None)
        if isinstance(value, int) and value >= 400:
            return value
    return None


def _transport_cause(exc: BaseException) -> BaseException | None:
    for link in _chain(exc):
        if isinstance(link, _TRANSPORT_ERRORS):
            return link
    return None


def _decode_cause(exc: BaseException) -> BaseException | None:
    for link in _chain(exc):
        if isinstance(link, json.JSONDecodeError | UnicodeDecodeError):
            return link
        if type(link).__name__ == "ValidationError":  # pydantic: a chunk of the wrong shape
            return link
    return None


def _retry_after_of(exc: BaseException) -> float | None:
    for link in _chain(exc):
        headers = getattr(getattr(link, "response", None), "headers", None)
        if isinstance(headers, Mapping):
            seconds = retry_after_parse(headers)
            if seconds is not None:
                return seconds
    raw = getattr(exc, "retry_after", None)
    return retry_after_parse({"retry-after": raw}) if isinstance(raw, str) else None


def _body_field(exc: BaseException, name: str) -> str | None:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        inner = body.get("error")
        for source in (inner, body) if isinstance(inner, Mapping) else (body,):
            value = source.get(name)
            if isinstance(value, str):
                return value
    return None


def _message_of(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return str(message if isinstance(message, str) else exc)
