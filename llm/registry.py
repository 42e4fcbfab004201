"""The configured provider, built once per process from settings.

LLM_PROVIDER:
    "openai"         OpenAICompatibleProvider (any OpenAI-compatible server), wrapped in
                     ResilientProvider (retries, circuit breaker, metering)
    "anyllm"         AnyLLMProvider (native providers through any-llm, LLM_MODEL=provider:model),
                     wrapped in ResilientProvider like "openai"
    "fake"           llm.fake.FakeProvider, as it is (development without a model, tests)
    "pkg.mod.Class"  a custom provider: the class is imported and instantiated with no
                     arguments; it must satisfy `llm.base.LLMProvider`. One written before
                     tool calling (no `supports_tools`) is taken as supporting no tools.

Interfaces call `provider_get()` and pass the result to services; services never call it.
"""

import threading
from importlib import import_module
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from llm.base import LLMProvider
from llm.breaker import BreakerSnapshot
from llm.resilience import ResilientProvider

_provider: LLMProvider | None = None
_lock = threading.Lock()

_CLOSED_BREAKER: BreakerSnapshot = {"state": "closed", "failures": 0, "opened_at": None, "retry_in": None}


def provider_get() -> LLMProvider:
    """The process-wide provider (built on first use)."""
    global _provider
    provider = _provider
    if provider is None:
        with _lock:
            if _provider is None:
                _provider = provider_build()
            provider = _provider
    return provider


def provider_reset() -> None:
    """Forget the cached provider, so the next `provider_get()` reads settings again (tests)."""
    global _provider
    with _lock:
        _provider = None


def provider_build() -> LLMProvider:
    """A new provider from settings, not cached."""
    choice = (settings.LLM_PROVIDER or "openai").strip()
    if choice == "openai":
        from llm.providers.openai import OpenAICompatibleProvider

        return ResilientProvider.from_settings(OpenAICompatibleProvider.from_settings())
    if choice == "anyllm":
        from llm.providers.anyllm import AnyLLMProvider

        return ResilientProvider.from_settings(AnyLLMProvider.from_settings())
    if choice == "fake":
        from llm.fake import FakeProvider

        return FakeProvider()
    return _custom_provider_build(choice)


def provider_health() -> dict[str, Any]:
    """For health checks: which provider, whether it is configured, its model and breaker state.

    Providers without a breaker (fake, custom) report a closed one.
    """
    provider = provider_get()
    breaker = provider.health() if isinstance(provider, ResilientProvider) else dict(_CLOSED_BREAKER)
    return {
        "provider": provider.name,
        "configured": provider.configured,
        "model": provider.default_model,
        "breaker": breaker,
    }


def _custom_provider_build(dotted_path: str) -> LLMProvider:
    module_path, _, class_name = dotted_path.rpartition(".")
    if not module_path:
        raise ImproperlyConfigured(
            f"LLM_PROVIDER={dotted_path!r}: expected 'openai', 'anyllm', 'fake' or a dotted path to a provider class"
        )
    try:
        cls = getattr(import_module(module_path), class_name)
    except (ImportError, AttributeError) as exc:
        raise ImproperlyConfigured(f"LLM_PROVIDER={dotted_path!r} cannot be imported: {exc}") from exc
    if not callable(cls):
        raise ImproperlyConfigured(f"LLM_PROVIDER={dotted_path!r} is not a class")
    provider = cls()
    if isinstance(provider, LLMProvider):
        return provider
    if all(hasattr(provider, member) for member in _MEMBERS_BEFORE_TOOLS):
        return ProviderWithoutTools(provider)
    raise ImproperlyConfigured(
        f"LLM_PROVIDER={dotted_path!r} does not implement llm.base.LLMProvider "
        "(name, configured, default_model, complete(), stream())"
    )


_MEMBERS_BEFORE_TOOLS = ("name", "configured", "default_model", "complete", "stream")


class ProviderWithoutTools:
    """A custom provider from before tool calling: the same provider, declaring that it offers no tools."""

    supports_tools = False

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
