"""The provider from settings: openai (wrapped), fake, a dotted path; health; no key, no call."""

from collections.abc import Iterator

import pytest
import respx
from django.core.exceptions import ImproperlyConfigured
from pytest_django.fixtures import Settings

from llm.errors import NotConfigured
from llm.fake import FakeProvider
from llm.providers.openai import OpenAICompatibleProvider
from llm.registry import ProviderWithoutTools, provider_get, provider_health, provider_reset
from llm.resilience import ResilientProvider
from llm.tests.custom_providers import EchoProvider
from llm.tests.helpers import HELLO, drain, texts


@pytest.fixture
def llm_settings(settings: Settings) -> Settings:
    settings.LLM_PROVIDER = "openai"
    settings.LLM_BASE_URL = "http://llm.test/v1"
    settings.LLM_API_KEY = "sk-registry-test-key"
    settings.LLM_MODEL = "registry-model"
    settings.LLM_MAX_RETRIES = 1
    settings.LLM_BREAKER_FAILURES = 4
    settings.LLM_BREAKER_RESET_SECONDS = 12.0
    return settings


@pytest.fixture
def no_network() -> Iterator[respx.Route]:
    with respx.mock(assert_all_called=False) as router:
        yield router.route()


def test_openai_is_wrapped_in_resilience_and_built_from_settings(llm_settings: Settings) -> None:
    provider = provider_get()

    assert isinstance(provider, ResilientProvider)
    assert isinstance(provider.inner, OpenAICompatibleProvider)
    assert (provider.inner.base_url, provider.default_model, provider.configured) == (
        "http://llm.test/v1",
        "registry-model",
        True,
    )
    assert provider.policy.max_retries == 1
    assert (provider.breaker.failure_threshold, provider.breaker.reset_seconds) == (4, 12.0)


def test_the_provider_is_cached_per_process_until_reset(llm_settings: Settings) -> None:
    first = provider_get()

    assert provider_get() is first
    provider_reset()
    assert provider_get() is not first


def test_fake(llm_settings: Settings) -> None:
    llm_settings.LLM_PROVIDER = "fake"

    assert type(provider_get()) is FakeProvider


def test_a_dotted_path_loads_a_custom_provider(llm_settings: Settings) -> None:
    llm_settings.LLM_PROVIDER = "llm.tests.custom_providers.EchoProvider"

    provider = provider_get()

    assert type(provider) is EchoProvider
    assert provider_health() == {
        "provider": "echo",
        "configured": True,
        "model": "echo-1",
        "breaker": {"state": "closed", "failures": 0, "opened_at": None, "retry_in": None},
    }


@pytest.mark.parametrize(
    "path",
    [
        "llm.tests.custom_providers.NotAProvider",
        "llm.tests.custom_providers.Missing",
        "llm.tests.no_such_module.Provider",
        "anthropic",
    ],
)
def test_a_bad_provider_setting_is_improperly_configured(llm_settings: Settings, path: str) -> None:
    llm_settings.LLM_PROVIDER = path

    with pytest.raises(ImproperlyConfigured) as caught:
        provider_get()

    assert path in str(caught.value)


def test_health_reports_provider_model_and_breaker(llm_settings: Settings) -> None:
    assert provider_health() == {
        "provider": "openai",
        "configured": True,
        "model": "registry-model",
        "breaker": {"state": "closed", "failures": 0, "opened_at": None, "retry_in": None},
    }


async def test_without_key_or_base_url_calls_fail_at_once_with_no_request(
    llm_settings: Settings, no_network: respx.Route
) -> None:
    llm_settings.LLM_API_KEY = ""
    llm_settings.LLM_BASE_URL = ""
    provider = provider_get()

    with pytest.raises(NotConfigured) as streamed:
        await drain(provider.stream(HELLO))
    with pytest.raises(NotConfigured):
        await provider.complete(HELLO)

    assert provider_health()["configured"] is False
    assert provider_health()["breaker"]["failures"] == 0
    assert "LLM_API_KEY" in streamed.value.user_message
    assert not no_network.called


@pytest.mark.parametrize(("setting", "expected"), [(None, True), (True, True), (False, False)])
def test_llm_tools_says_whether_the_openai_provider_sends_tools(
    llm_settings: Settings, setting: bool | None, expected: bool
) -> None:
    if setting is not None:
        llm_settings.LLM_TOOLS = setting
    elif hasattr(llm_settings, "LLM_TOOLS"):
        del llm_settings.LLM_TOOLS

    provider = provider_get()

    assert isinstance(provider, ResilientProvider)
    assert (provider.supports_tools, provider.inner.supports_tools) == (expected, expected)


async def test_a_custom_provider_from_before_tools_still_loads_and_offers_none(llm_settings: Settings) -> None:
    llm_settings.LLM_PROVIDER = "llm.tests.custom_providers.ProviderBeforeTools"

    provider = provider_get()
    events = await drain(provider.stream(HELLO))

    assert isinstance(provider, ProviderWithoutTools)
    assert (provider.name, provider.default_model, provider.configured, provider.supports_tools) == (
        "before-tools",
        "old-1",
        True,
        False,
    )
    assert "".join(texts(events)) == "old"
