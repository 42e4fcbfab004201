"""`python manage.py llm_check [--stream] [--model M] "prompt"`: one call to the configured LLM.

Prints the reply (live with --stream), then the model, time to first token, duration and
tokens. On failure it says what to check, in words a person can act on, and exits non-zero.
"""

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llm.base import ChatMessage, CompletionParams, LLMProvider, TextDelta
from llm.errors import (
    AuthenticationFailed,
    CircuitOpen,
    ContentFiltered,
    ContextTooLong,
    InvalidParams,
    LLMError,
    ModelNotFound,
    NotConfigured,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    StreamIncomplete,
    Timeout,
    Unavailable,
    Unreachable,
)
from llm.registry import provider_build
from llm.resilience import ResilientProvider
from llm.usage import CallStats, call_complete, call_stream

OLLAMA_HINT = "For a local Ollama: LLM_BASE_URL=http://127.0.0.1:11434/v1 LLM_MODEL=llama3.2 (no key needed)."


class Command(BaseCommand):
    help = "Send one prompt to the configured language model and report timing, tokens, or what is wrong."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prompt", help="What to ask the model.")
        parser.add_argument("--stream", action="store_true", help="Stream the reply as it is generated.")
        parser.add_argument("--model", default=None, help="Model to use instead of LLM_MODEL.")
        parser.add_argument("--temperature", type=float, default=None)
        parser.add_argument("--max-tokens", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        # A fresh provider: a check must not reuse (or trip) the breaker of a long-lived one.
        provider = provider_build()
        params = CompletionParams(
            model=options["model"], temperature=options["temperature"], max_tokens=options["max_tokens"]
        )
        self.stdout.write(f"provider: {provider.name}  {_target(provider)}")
        stats = CallStats()
        try:
            stats = asyncio.run(self._call(provider, options["prompt"], params, stream=options["stream"]))
        except InvalidParams as exc:
            raise CommandError(f"--{(exc.field or 'model').replace('_', '-')}: {exc.message}") from exc
        except LLMError as exc:
            # Listing models runs on its own loop: the provider keeps one client per loop.
            models = asyncio.run(_models_offered(provider)) if isinstance(exc, ModelNotFound) else None
            model = params.model or provider.default_model
            raise CommandError(diagnosis(exc, provider=provider, model=model, models=models)) from exc
        self._report(stats)

    async def _call(self, provider: LLMProvider, prompt: str, params: CompletionParams, *, stream: bool) -> CallStats:
        messages = [ChatMessage(role="user", content=prompt)]
        try:
            if stream:
                metered = call_stream(provider=provider, messages=messages, params=params)
                async with metered:
                    async for event in metered:
                        if isinstance(event, TextDelta):
                            self.stdout.write(event.text, ending="")
                            self.stdout.flush()
                self.stdout.write("")
                return metered.stats
            stats = CallStats()
            completion = await call_complete(provider=provider, messages=messages, params=params, stats=stats)
            self.stdout.write(completion.text)
            return stats
        finally:
            await _provider_close(provider)

    def _report(self, stats: CallStats) -> None:
        ttft = f"{stats.ttft_ms} ms" if stats.ttft_ms is not None else "n/a (not streamed)"
        estimated = " (estimated: the server sent no usage)" if stats.estimated else ""
        self.stdout.write("")
        self.stdout.write(f"model:               {stats.model}")
        self.stdout.write(f"finish reason:       {stats.finish_reason}")
        self.stdout.write(f"time to first token: {ttft}")
        self.stdout.write(f"duration:            {stats.duration_ms} ms")
        self.stdout.write(
            f"tokens:              prompt {stats.prompt_tokens}, completion {stats.completion_tokens}{estimated}"
        )
        self.stdout.write(f"attempts:            {stats.attempts}")
        self.stdout.write(self.style.SUCCESS("OK"))


def diagnosis(error: LLMError, *, provider: LLMProvider, model: str, models: list[str] | None = None) -> str:
    """What went wrong and what to change, for a person at a terminal."""
    target = _target(provider)
    detail = f"\n  server said: {error.detail}" if error.detail and not isinstance(error, NotConfigured) else ""
    if isinstance(error, NotConfigured) and provider.configured and error.detail:
        # A key or base URL is set, yet the provider is not usable (LLM_PROVIDER=anyllm: the
        # provider's SDK is not installed, LLM_MODEL names no provider).
        return f"The language model is not set up: {error.detail}. {target}"
    if isinstance(error, NotConfigured):
        return (
            "No language model is configured: LLM_API_KEY and LLM_BASE_URL are both empty.\n"
            "  Set LLM_API_KEY for OpenAI, or LLM_BASE_URL for another OpenAI-compatible server.\n"
            f"  {OLLAMA_HINT}\n  Or LLM_PROVIDER=fake for a scripted stand-in."
        )
    if isinstance(error, AuthenticationFailed):
        return (
            f"The server rejected the API key (HTTP 401). {target}\n"
            "  Check LLM_API_KEY (or OPENAI_API_KEY): a typo, a revoked key, or a key for another service.\n"
            "  A local server (Ollama, vLLM, LM Studio) needs no key: unset it or set LLM_BASE_URL." + detail
        )
    if isinstance(error, PermissionDenied):
        return (
            f"The key is valid but not allowed to use model {model!r} (HTTP 403). {target}\n"
            "  Check the key's project/organisation permissions, or choose another LLM_MODEL." + detail
        )
    if isinstance(error, ModelNotFound):
        listing = (
            "  Models this server offers: " + ", ".join(models[:30]) + (" ..." if len(models) > 30 else "")
            if models
            else "  The server did not list its models (GET /models); see its documentation."
        )
        return (
            f"Model {model!r} was not found (HTTP 404). {target}\n"
            "  Check LLM_MODEL (or --model), and that LLM_BASE_URL ends with /v1.\n" + listing + detail
        )
    if isinstance(error, Unreachable):
        return (
            f"Could not reach the language model server. {target}\n"
            "  Check LLM_BASE_URL (scheme, host, port, /v1) and that the server is running "
            "(e.g. `ollama serve`, or the vLLM / LM Studio server)." + detail
        )
    if isinstance(error, QuotaExceeded):
        return f"The account has no credit left (HTTP 429 insufficient_quota). {target}\n  Check billing." + detail
    if isinstance(error, RateLimited):
        wait = f" The server asks to wait {error.retry_after:g}s." if error.retry_after is not None else ""
        return (
            f"Rate limited (HTTP 429) even after retries.{wait} {target}\n"
            "  Try again later, lower the request rate, or raise the plan's limits." + detail
        )
    if isinstance(error, Timeout):
        timeouts = getattr(_inner(provider), "timeouts", None) or {}
        return (
            f"The server did not answer in time ({error.detail or 'timeout'}). {target}\n"
            f"  Limits: {timeouts or 'see LLM_*_TIMEOUT'}. Is the model still loading, or the server overloaded?\n"
            "  Raise LLM_FIRST_TOKEN_TIMEOUT for slow local models."
        )
    if isinstance(error, Unavailable):
        return (
            f"The server failed{f' (HTTP {error.status_code})' if error.status_code else ''} even after retries. "
            f"{target}\n  It is down or overloaded; try again later or check its logs." + detail
        )
    if isinstance(error, ContextTooLong):
        return f"The prompt is longer than model {model!r} accepts. Shorten it or use a larger model." + detail
    if isinstance(error, ContentFiltered):
        return "The model's content filter stopped the reply; try another prompt." + detail
    if isinstance(error, StreamIncomplete):
        return f"The reply stopped before it was finished, even after retries. {target}" + detail
    if isinstance(error, CircuitOpen):
        return "Calls to the model are paused after repeated failures; wait and try again." + detail
    return f"The language model call failed ({error.code}). {target}" + detail


def _inner(provider: LLMProvider) -> object:
    return provider.inner if isinstance(provider, ResilientProvider) else provider


def _target(provider: LLMProvider) -> str:
    inner = _inner(provider)
    base_url = getattr(inner, "base_url", None)
    if base_url is None:
        return f"(model {provider.default_model})"
    key = getattr(inner, "key_hint", "?")
    return f"(LLM_BASE_URL={base_url}, LLM_MODEL={provider.default_model}, key {key})"


async def _models_offered(provider: LLMProvider) -> list[str] | None:
    models_list = getattr(_inner(provider), "models_list", None)
    if models_list is None:
        return None
    try:
        models: list[str] = await models_list()
    except LLMError:
        return None
    finally:
        await _provider_close(provider)
    return models


async def _provider_close(provider: LLMProvider) -> None:
    aclose = getattr(_inner(provider), "aclose", None)
    if aclose is not None:
        await aclose()
