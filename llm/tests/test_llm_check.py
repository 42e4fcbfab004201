"""`manage.py llm_check`: a live report on success, an actionable diagnosis on failure."""

import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import httpx
import pytest
import respx
from django.core.management import call_command
from django.core.management.base import CommandError
from pytest_django.fixtures import Settings

from core.net import free_port
from llm.errors import (
    AuthenticationFailed,
    CircuitOpen,
    LLMError,
    ModelNotFound,
    NotConfigured,
    RateLimited,
    Timeout,
    Unavailable,
    Unreachable,
)
from llm.management.commands.llm_check import diagnosis
from llm.providers.openai import OpenAICompatibleProvider
from llm.tests.helpers import API_KEY, BASE_URL, completion_body, hello_stream, sse_response

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def llm_settings(settings: Settings) -> Settings:
    settings.LLM_PROVIDER = "openai"
    settings.LLM_BASE_URL = BASE_URL
    settings.LLM_API_KEY = API_KEY
    settings.LLM_MODEL = "gpt-test"
    settings.LLM_MAX_RETRIES = 0
    return settings


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


def run(*args: str) -> str:
    out = StringIO()
    call_command("llm_check", *args, stdout=out)
    return out.getvalue()


def test_streams_the_reply_then_prints_timing_and_tokens(llm_settings: Settings, api: respx.MockRouter) -> None:
    api.post("/chat/completions").mock(return_value=sse_response(hello_stream()))

    output = run("--stream", "Say hello")

    lines = output.splitlines()
    assert lines[0] == f"provider: openai  (LLM_BASE_URL={BASE_URL}, LLM_MODEL=gpt-test, key ...WXYZ)"
    assert lines[1] == "Hello!"
    assert "model:               served-model" in lines
    assert "finish reason:       stop" in lines
    assert any(line.startswith("time to first token: ") and line.endswith(" ms") for line in lines)
    assert any(line.startswith("duration:            ") for line in lines)
    assert "tokens:              prompt 11, completion 2" in lines
    assert "attempts:            1" in lines
    assert lines[-1] == "OK"
    assert API_KEY not in output


def test_batch_mode_and_model_override(llm_settings: Settings, api: respx.MockRouter) -> None:
    route = api.post("/chat/completions")
    route.mock(return_value=httpx.Response(200, json=completion_body("Hi there.")))

    output = run("--model", "other-model", "Say hello")

    assert "Hi there." in output.splitlines()
    assert "time to first token: n/a (not streamed)" in output
    assert "tokens:              prompt 9, completion 3 (estimated: the server sent no usage)" in output
    assert b'"model":"other-model"' in route.calls.last.request.content.replace(b" ", b"")


def test_a_mistyped_key_is_diagnosed_without_showing_it(llm_settings: Settings, api: respx.MockRouter) -> None:
    route = api.post("/chat/completions")
    route.respond(401, json={"error": {"message": f"Incorrect API key provided: {API_KEY}", "code": "invalid_api_key"}})

    with pytest.raises(CommandError) as caught:
        run("--stream", "Say hello")

    message = str(caught.value)
    assert message.startswith("The server rejected the API key (HTTP 401).")
    assert "Check LLM_API_KEY (or OPENAI_API_KEY)" in message
    assert "key ...WXYZ" in message
    assert API_KEY not in message
    assert route.call_count == 1


def test_an_unknown_model_lists_the_servers_models(llm_settings: Settings, api: respx.MockRouter) -> None:
    api.post("/chat/completions").respond(404, json={"error": {"message": "no such model", "code": "model_not_found"}})
    api.get("/models").respond(
        200,
        json={"object": "list", "data": [{"id": "llama3.2", "object": "model"}, {"id": "qwen2.5", "object": "model"}]},
    )

    with pytest.raises(CommandError) as caught:
        run("--model", "lama3.2", "hi")

    message = str(caught.value)
    assert "Model 'lama3.2' was not found (HTTP 404)." in message
    assert "Check LLM_MODEL (or --model), and that LLM_BASE_URL ends with /v1." in message
    assert "Models this server offers: llama3.2, qwen2.5" in message


def test_an_unreachable_server_is_diagnosed(llm_settings: Settings) -> None:
    llm_settings.LLM_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there

    with pytest.raises(CommandError) as caught:
        run("hi")

    assert "Could not reach the language model server." in str(caught.value)
    assert "Check LLM_BASE_URL (scheme, host, port, /v1) and that the server is running" in str(caught.value)


def test_rate_limited_says_how_long_to_wait(llm_settings: Settings, api: respx.MockRouter) -> None:
    api.post("/chat/completions").respond(429, json={"error": {"message": "slow"}}, headers={"retry-after": "60"})

    with pytest.raises(CommandError) as caught:
        run("hi")

    assert str(caught.value).startswith("Rate limited (HTTP 429) even after retries. The server asks to wait 60s.")


def test_not_configured(llm_settings: Settings, api: respx.MockRouter) -> None:
    llm_settings.LLM_API_KEY = ""
    llm_settings.LLM_BASE_URL = ""
    any_request = api.route()

    with pytest.raises(CommandError) as caught:
        run("hi")

    assert "LLM_API_KEY and LLM_BASE_URL are both empty" in str(caught.value)
    assert not any_request.called


def test_bad_arguments_name_the_option(llm_settings: Settings, api: respx.MockRouter) -> None:
    with pytest.raises(CommandError) as caught:
        run("--temperature", "3", "hi")

    assert str(caught.value) == "--temperature: temperature must be a number from 0 to 2"


def test_the_fake_provider_works_without_any_server(llm_settings: Settings) -> None:
    llm_settings.LLM_PROVIDER = "fake"

    output = run("--stream", "hi")

    assert output.splitlines()[1] == "Hello from the fake model."
    assert output.splitlines()[-1] == "OK"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NotConfigured(), "Or LLM_PROVIDER=fake"),
        (AuthenticationFailed("HTTP 401"), "Check LLM_API_KEY"),
        (ModelNotFound("HTTP 404"), "The server did not list its models"),
        (Unreachable("ConnectError"), "that the server is running"),
        (RateLimited("HTTP 429"), "Try again later"),
        (Timeout("no first token within 30s"), "Raise LLM_FIRST_TOKEN_TIMEOUT"),
        (Unavailable("HTTP 503", status_code=503), "The server failed (HTTP 503) even after retries."),
        (CircuitOpen(), "paused after repeated failures"),
        (LLMError("odd"), "The language model call failed (llm_error)."),
    ],
)
def test_each_failure_has_a_diagnosis(error: LLMError, expected: str) -> None:
    provider = OpenAICompatibleProvider(base_url=BASE_URL, api_key=API_KEY, model="gpt-test")

    text = diagnosis(error, provider=provider, model="gpt-test")

    assert expected in text
    assert API_KEY not in text


def test_the_exit_code_is_non_zero_on_failure() -> None:
    env = {**os.environ, "LLM_API_KEY": "", "OPENAI_API_KEY": "", "LLM_BASE_URL": "", "LLM_PROVIDER": "openai"}

    result = subprocess.run(
        [sys.executable, "manage.py", "llm_check", "hi"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "No language model is configured" in result.stderr
