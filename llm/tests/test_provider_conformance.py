"""The same cases through every built-in provider, over real HTTP against llmock.

`openai`: OpenAICompatibleProvider on llmock's `/v1/chat/completions`. `anthropic` and
`gemini`: AnyLLMProvider (`LLM_PROVIDER=anyllm`) on llmock's Anthropic Messages API
(`/anthropic/v1/messages`) and Gemini API (`/gemini/v1beta/models/...`), through any-llm
and the providers' own SDKs. Each provider is wrapped in `ResilientProvider`, as the
registry does, so the fault cases show the retries and replays working unchanged.

Where the wire differs, the case says so: the chunk index of a fault after two texts
(OpenAI sends a role chunk first; Anthropic `message_start`, `content_block_start` and a
`ping`; Gemini text from the first chunk), and the seed (Anthropic has none).
"""

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from core.net import free_port
from llm.base import ChatMessage, CompletionParams, StreamEnd, TextDelta, ToolCalls, ToolSpec, Usage
from llm.breaker import CircuitBreaker
from llm.errors import AuthenticationFailed, ConnectionDropped, ModelNotFound, Unavailable, Unreachable
from llm.providers.anyllm import AnyLLMProvider
from llm.providers.openai import OpenAICompatibleProvider
from llm.resilience import ResilientProvider, RetryPolicy
from llm.testing import LlmockServer
from llm.tests.helpers import UpperJitter, consume, drain, texts

pytestmark = pytest.mark.llmock

API_KEY = "sk-conformance-0123456789WXYZ"
PROMPT = [ChatMessage(role="user", content="Say hello please")]  # llmock counts 4 prompt tokens on every dialect
REPLY = "Hello there, friend."  # three pieces: "Hello ", "there, ", "friend."; 5 completion tokens
LONG_REPLY = " ".join(f"word{i}" for i in range(60))


@dataclass(frozen=True)
class Dialect:
    name: str
    model: str  # as the provider is configured (LLM_MODEL)
    after_two_texts: int  # the chunk index that follows the second text chunk
    seeded: bool  # whether a streamed request carries the resilience layer's seed

    def build(self, server: LlmockServer, **timeouts: Any) -> Any:
        if self.name == "openai":
            return OpenAICompatibleProvider(base_url=server.base_url, api_key=API_KEY, model=self.model, **timeouts)
        return AnyLLMProvider(base_url=f"{server.url}/{self.name}", api_key=API_KEY, model=self.model, **timeouts)


OPENAI = Dialect("openai", "gpt-4o-mini", after_two_texts=3, seeded=True)
ANTHROPIC = Dialect("anthropic", "anthropic:claude-haiku-4-5", after_two_texts=5, seeded=False)
GEMINI = Dialect("gemini", "gemini:gemini-2.0-flash", after_two_texts=2, seeded=True)
DIALECTS = [pytest.param(d, id=d.name) for d in (OPENAI, ANTHROPIC, GEMINI)]
REPLY_END_USAGE = Usage(prompt_tokens=4, completion_tokens=5)

ProviderFactory = Callable[..., ResilientProvider]


@pytest.fixture
async def make_provider() -> AsyncIterator[ProviderFactory]:
    made: list[Any] = []

    def make(
        dialect: Dialect, server: LlmockServer, *, first_token_timeout: float = 5.0, base_delay: float = 0.05
    ) -> ResilientProvider:
        inner = dialect.build(server, first_token_timeout=first_token_timeout, read_timeout=5.0, complete_timeout=10.0)
        made.append(inner)
        return ResilientProvider(
            inner,
            policy=RetryPolicy(max_retries=2, base_delay=base_delay, max_delay=1.0, max_retry_after=5.0, resume=True),
            breaker=CircuitBreaker(name=inner.name, failure_threshold=10, reset_seconds=30.0),
            rng=UpperJitter(),
        )

    yield make
    for inner in made:
        await inner.aclose()


def reply(text: str = REPLY, *, times: int = 1) -> dict[str, Any]:
    return {"type": "reply", "text": text, "times": times}


# -- replies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_streamed_reply_with_the_servers_usage(
    llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect
) -> None:
    llmock.scenario(reply())

    stream = make_provider(dialect, llmock).stream(PROMPT)
    events = await drain(stream)

    assert events == [
        TextDelta("Hello "),
        TextDelta("there, "),
        TextDelta("friend."),
        StreamEnd(finish_reason="stop", usage=REPLY_END_USAGE, model=dialect.model),
    ]
    (request,) = llmock.requests()
    assert (request["status"], request["completed"], request["stream"]) == (200, True, True)
    assert (stream.stats.attempts, stream.stats.outcome) == (1, "ok")
    llmock.verdict_assert_clean()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_batch_reply(llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect) -> None:
    llmock.scenario(reply())

    completion = await make_provider(dialect, llmock).complete(PROMPT)

    assert (completion.text, completion.finish_reason, completion.usage) == (REPLY, "stop", REPLY_END_USAGE)
    assert completion.tool_calls == ()
    (request,) = llmock.requests()
    assert (request["status"], request["stream"]) == (200, False)
    llmock.verdict_assert_clean()


def test_the_anthropic_request_is_in_anthropics_own_format(llmock: LlmockServer) -> None:
    import asyncio

    llmock.scenario(reply())
    provider = ANTHROPIC.build(llmock)
    prompt = [ChatMessage(role="system", content="Be brief."), *PROMPT]

    async def ask() -> None:
        await drain(provider.stream(prompt, params=CompletionParams(seed=7, max_tokens=50)))
        await provider.aclose()

    asyncio.run(ask())

    (request,) = llmock.requests()
    assert request["path"] == "/anthropic/v1/messages"
    assert request["body"] == {
        "model": "claude-haiku-4-5",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Say hello please"}],
        "max_tokens": 50,
        "temperature": 0.8,
        "stream": True,
    }  # no seed: Anthropic's API has none


# -- tools ----------------------------------------------------------------------------------------

REMINDER_TOOL = ToolSpec(
    name="reminder_create",
    description="Remind the user of something at a given time.",
    parameters={
        "type": "object",
        "properties": {"text": {"type": "string"}, "at": {"type": "string"}},
        "required": ["text", "at"],
    },
)
REMINDER_ARGUMENTS = {"text": "Call mum", "at": "2026-12-08T18:00:00+01:00"}


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_streamed_tool_call_arrives_assembled_just_before_the_end(
    llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect
) -> None:
    llmock.scenario(
        {
            "type": "reply",
            "tool_calls": [{"name": "reminder_create", "arguments": REMINDER_ARGUMENTS}],
            "match": {"tools": True},
        }
    )

    events = await drain(make_provider(dialect, llmock).stream(PROMPT, params=CompletionParams(tools=(REMINDER_TOOL,))))

    *before, calls, end = events
    assert before == []
    assert isinstance(calls, ToolCalls)
    assert isinstance(end, StreamEnd)
    (call,) = calls.calls
    assert (call.name, json.loads(call.arguments)) == ("reminder_create", REMINDER_ARGUMENTS)
    assert call.id
    assert end.finish_reason == "tool_calls"
    llmock.verdict_assert_clean()


async def test_anthropic_tool_results_go_back_as_tool_result_blocks(
    llmock: LlmockServer, make_provider: ProviderFactory
) -> None:
    llmock.scenario(
        {
            "type": "reply",
            "tool_calls": [{"name": "reminder_create", "arguments": REMINDER_ARGUMENTS}],
            "match": {"tools": True},
        },
        reply("Done: I will remind you."),
    )
    provider = make_provider(ANTHROPIC, llmock)
    tools = CompletionParams(tools=(REMINDER_TOOL,))
    (calls,) = [e for e in await drain(provider.stream(PROMPT, params=tools)) if isinstance(e, ToolCalls)]
    (call,) = calls.calls
    follow_up = [
        *PROMPT,
        ChatMessage(role="assistant", content="", tool_calls=calls.calls),
        ChatMessage(role="tool", content='{"reminder_id": 7}', tool_call_id=call.id),
    ]

    events = await drain(provider.stream(follow_up, params=tools))

    assert "".join(texts(events)) == "Done: I will remind you."
    first, second = llmock.requests()
    assert first["body"]["tools"][0]["name"] == "reminder_create"
    assert first["body"]["tools"][0]["input_schema"] == dict(REMINDER_TOOL.parameters)
    assert second["body"]["messages"][1:] == [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": call.id, "name": "reminder_create", "input": REMINDER_ARGUMENTS}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": '{"reminder_id": 7}'}]},
    ]
    llmock.verdict_assert_clean()


# -- HTTP errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_401_is_not_retried_and_the_key_stays_out_of_the_error(
    llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect
) -> None:
    llmock.scenario({"type": "fail", "status": 401})

    with pytest.raises(AuthenticationFailed) as caught:
        await drain(make_provider(dialect, llmock).stream(PROMPT))

    assert caught.value.status_code == 401
    assert API_KEY not in f"{caught.value} {caught.value.detail} {caught.value.as_dict()}"
    assert [r["status"] for r in llmock.requests()] == [401]
    llmock.verdict_assert_clean()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_429_waits_for_retry_after_then_succeeds(
    llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect
) -> None:
    llmock.scenario({"type": "fail", "status": 429, "retry_after": 0.3}, reply())

    stream = make_provider(dialect, llmock).stream(PROMPT)
    events = await drain(stream)

    assert texts(events) == ["Hello ", "there, ", "friend."]
    first, second = llmock.requests()
    assert (first["status"], first["retry_after"], second["status"]) == (429, 0.3, 200)
    assert second["started_at"] - first["ended_at"] >= 0.3
    assert stream.stats.attempts == 2
    llmock.verdict_assert_clean()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_500_is_retried(llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect) -> None:
    llmock.scenario({"type": "fail", "status": 500}, reply())

    events = await drain(make_provider(dialect, llmock).stream(PROMPT))

    assert texts(events) == ["Hello ", "there, ", "friend."]
    assert [r["status"] for r in llmock.requests()] == [500, 200]
    llmock.verdict_assert_clean()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_503_until_retries_run_out_is_unavailable(
    llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect
) -> None:
    llmock.scenario({"type": "fail", "status": 503, "retry_after": 0.05, "times": 3})

    with pytest.raises(Unavailable) as caught:
        await drain(make_provider(dialect, llmock).stream(PROMPT))

    assert caught.value.status_code == 503
    assert [r["status"] for r in llmock.requests()] == [503, 503, 503]
    llmock.verdict_assert_clean()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_an_unknown_model_is_model_not_found(
    llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect
) -> None:
    llmock.scenario({"type": "fail", "status": 404, "message": "model: no-such-model"})

    with pytest.raises(ModelNotFound):
        await drain(make_provider(dialect, llmock).stream(PROMPT))

    assert [r["status"] for r in llmock.requests()] == [404]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_refused_connection_is_unreachable(make_provider: ProviderFactory, dialect: Dialect) -> None:
    nobody = LlmockServer(port=0, pid=0, url=f"http://127.0.0.1:{free_port()}", base_url="", _http=None)  # type: ignore[arg-type]
    nobody.base_url = f"{nobody.url}/v1"

    stream = make_provider(dialect, nobody).stream(PROMPT)
    with pytest.raises(Unreachable):
        await drain(stream)

    assert stream.stats.attempts == 3  # retried: the server may be restarting


# -- broken streams and timeouts ------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_disconnect_after_text_resumes_where_the_user_is(
    paced_llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect
) -> None:
    llmock = paced_llmock
    llmock.scenario(
        reply(times=2), {"type": "stream_fault", "kind": "disconnect", "after_chunks": dialect.after_two_texts}
    )

    stream = make_provider(dialect, llmock).stream(PROMPT)
    events = await drain(stream)

    assert texts(events) == ["Hello ", "there, ", "friend."]  # no word twice
    broken, replayed = llmock.requests()
    assert (broken["fault"], replayed["fault"]) == (f"stream:disconnect@{dialect.after_two_texts}", None)
    assert replayed["body"] == broken["body"]  # the same request again
    assert (stream.stats.attempts, stream.stats.resumed, stream.stats.outcome) == (2, True, "ok")
    llmock.verdict_assert_clean()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_disconnect_on_every_attempt_gives_up_dropped(
    llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect
) -> None:
    llmock.scenario(
        reply(times=3),
        {"type": "stream_fault", "kind": "disconnect", "after_chunks": dialect.after_two_texts, "times": 3},
    )
    received: list[Any] = []

    # Waits of 0.2 then 0.4 s: longer than an SDK's own time per attempt, so llmock, timing the
    # attempts' starts, sees the backoff grow.
    with pytest.raises(ConnectionDropped):
        await consume(make_provider(dialect, llmock, base_delay=0.2).stream(PROMPT), received)

    assert texts(received) == ["Hello ", "there, "]  # shown once, not once per attempt
    assert len(llmock.requests()) == 3
    llmock.verdict_assert_clean()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_slow_first_token_times_out_and_is_retried(
    llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect
) -> None:
    llmock.scenario({"type": "slow_first_token", "seconds": 5.0}, reply(), reply())

    events = await drain(make_provider(dialect, llmock, first_token_timeout=0.5).stream(PROMPT))

    assert texts(events) == ["Hello ", "there, ", "friend."]
    slow, fast = llmock.requests()
    assert (slow["completed"], slow["chunks_sent"]) == (False, 0)  # we hung up on it
    assert fast["completed"] is True
    llmock.verdict_assert_clean()


# -- cancellation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_closing_the_stream_stops_the_server_generating(
    paced_llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect
) -> None:
    paced_llmock.scenario(reply(LONG_REPLY))

    stream = make_provider(dialect, paced_llmock).stream(PROMPT)
    received = [await anext(stream) for _ in range(3)]
    await stream.aclose()

    assert received == [TextDelta("word0 "), TextDelta("word1 "), TextDelta("word2 ")]
    (request,) = paced_llmock.requests()
    assert request["completed"] is False  # of 60 words: the server saw us leave and stopped
    assert request["chunks_sent"] < 12
    assert stream.stats.outcome == "cancelled"
    paced_llmock.verdict_assert_clean()


@pytest.mark.parametrize("dialect", [pytest.param(OPENAI, id="openai"), pytest.param(GEMINI, id="gemini")])
async def test_each_streamed_reply_carries_the_seed_where_the_api_has_one(
    llmock: LlmockServer, make_provider: ProviderFactory, dialect: Dialect
) -> None:
    await drain(make_provider(dialect, llmock).stream(PROMPT))

    (request,) = llmock.requests()
    body = request["body"]
    seed = body.get("seed", body.get("generationConfig", {}).get("seed"))
    assert isinstance(seed, int)


# -- the registry and llm_check with LLM_PROVIDER=anyllm ---------------------------------------------


@pytest.fixture
def anyllm_settings(settings: Any, llmock: LlmockServer) -> Any:
    settings.LLM_PROVIDER = "anyllm"
    settings.LLM_MODEL = ANTHROPIC.model
    settings.LLM_BASE_URL = f"{llmock.url}/anthropic"
    settings.LLM_API_KEY = "sk-ant-typo-4321"
    return settings


def test_the_registry_wraps_anyllm_in_the_resilience_layer(anyllm_settings: Any) -> None:
    from llm.registry import provider_build

    provider = provider_build()

    assert isinstance(provider, ResilientProvider)
    assert isinstance(provider.inner, AnyLLMProvider)
    assert (provider.name, provider.default_model, provider.supports_tools) == ("anyllm", ANTHROPIC.model, True)


def test_llm_check_streams_through_anyllm(llmock: LlmockServer, anyllm_settings: Any) -> None:
    from io import StringIO

    from django.core.management import call_command

    llmock.scenario(reply())
    out = StringIO()

    call_command("llm_check", "--stream", "Say hello please", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("provider: anyllm  (LLM_BASE_URL=http://127.0.0.1:")
    assert lines[1] == REPLY
    assert "tokens:              prompt 4, completion 5" in lines
    llmock.verdict_assert_clean()


def test_llm_check_diagnoses_a_rejected_key_through_anyllm(llmock: LlmockServer, anyllm_settings: Any) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    llmock.scenario({"type": "fail", "status": 401})

    with pytest.raises(CommandError) as caught:
        call_command("llm_check", "hi")

    assert "Check LLM_API_KEY" in str(caught.value)
    assert "key ...4321" in str(caught.value)
    assert "sk-ant-typo-4321" not in str(caught.value)


def test_llm_check_lists_the_providers_models_for_an_unknown_one(llmock: LlmockServer, anyllm_settings: Any) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    llmock.scenario({"type": "fail", "status": 404, "message": "model: claude-nope"})

    with pytest.raises(CommandError) as caught:
        call_command("llm_check", "hi")

    assert "anthropic:claude-sonnet-4-6" in str(caught.value)


def test_llm_check_says_which_extra_a_provider_needs(anyllm_settings: Any) -> None:
    from django.core.management import call_command
    from django.core.management.base import CommandError

    anyllm_settings.LLM_MODEL = "cohere:command-r"  # any-llm knows it; its SDK is not installed

    with pytest.raises(CommandError) as caught:
        call_command("llm_check", "hi")

    assert "pip install 'any-llm-sdk[cohere]'" in str(caught.value)


@pytest.mark.parametrize("provider_key", ["anthropic", "gemini", "mistral", "ollama"])
async def test_the_documented_providers_sdks_are_installed_and_a_dead_server_is_unreachable(provider_key: str) -> None:
    # requirements.txt pins these extras: each client builds (no "pip install" needed), and a
    # server that is not there is told apart from one that fails (Unreachable, not Unavailable)
    provider = AnyLLMProvider(
        model=f"{provider_key}:some-model",
        api_key="sk-test-0123456789",
        base_url=f"http://127.0.0.1:{free_port()}",
        connect_timeout=2.0,
        first_token_timeout=5.0,
    )
    try:
        with pytest.raises(Unreachable):
            await drain(provider.stream(PROMPT))
    finally:
        await provider.aclose()
