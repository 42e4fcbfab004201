"""OpenAICompatibleProvider against a mocked HTTP boundary (respx): one attempt, typed errors."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from asgiref.sync import async_to_sync

from llm.base import (
    ChatMessage,
    Completion,
    CompletionParams,
    LLMProvider,
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
    InvalidParams,
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
from llm.providers.openai import KEYLESS_PLACEHOLDER, OpenAICompatibleProvider, retry_after_parse
from llm.tests.helpers import (
    API_KEY,
    BASE_URL,
    HELLO,
    ScriptedBody,
    chunk,
    completion_body,
    consume,
    drain,
    hello_stream,
    request_json,
    sse,
    sse_response,
    texts,
)
from llm.tokens import count_tokens


def make_provider(**overrides: Any) -> OpenAICompatibleProvider:
    options: dict[str, Any] = {
        "base_url": BASE_URL,
        "api_key": API_KEY,
        "model": "default-model",
        "temperature": 0.7,
        "max_tokens": 300,
        "max_tokens_limit": 1000,
        "first_token_timeout": 2.0,
        "read_timeout": 2.0,
        "complete_timeout": 2.0,
        **overrides,
    }
    return OpenAICompatibleProvider(**options)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
def chat(api: respx.MockRouter) -> respx.Route:
    return api.post("/chat/completions")


def test_satisfies_the_protocol() -> None:
    assert isinstance(make_provider(), LLMProvider)


# -- streaming -------------------------------------------------------------------------------------


async def test_stream_yields_deltas_then_one_end_with_the_servers_usage(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(hello_stream()))

    events = await drain(make_provider().stream(HELLO))

    assert events == [
        TextDelta("Hel"),
        TextDelta("lo!"),
        StreamEnd(finish_reason="stop", usage=Usage(prompt_tokens=11, completion_tokens=2), model="served-model"),
    ]


async def test_stream_sends_defaults_usage_request_and_no_sdk_retry_header_games(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(hello_stream()))

    await drain(make_provider().stream(HELLO))

    assert chat.call_count == 1
    body = request_json(chat.calls.last)
    assert body == {
        "model": "default-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        "temperature": 0.7,
        "max_tokens": 300,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert chat.calls.last.request.headers["authorization"] == f"Bearer {API_KEY}"


async def test_per_request_params_override_the_defaults(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(hello_stream()))

    await drain(make_provider().stream(HELLO, params=CompletionParams(model="other", temperature=0, max_tokens=1000)))

    body = request_json(chat.calls.last)
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("other", 0.0, 1000)


async def test_max_completion_tokens_can_replace_max_tokens(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(hello_stream()))

    await drain(make_provider(max_tokens_param="max_completion_tokens").stream(HELLO))

    body = request_json(chat.calls.last)
    assert body["max_completion_tokens"] == 300
    assert "max_tokens" not in body


async def test_a_seed_is_sent_only_when_given(chat: respx.Route) -> None:
    chat.mock(side_effect=lambda request: sse_response(hello_stream()))
    provider = make_provider()

    await drain(provider.stream(HELLO, params=CompletionParams(seed=42)))
    await drain(provider.stream(HELLO))

    with_seed, without = (request_json(call) for call in chat.calls)
    assert with_seed["seed"] == 42
    assert "seed" not in without


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (CompletionParams(temperature=2.5), "temperature"),
        (CompletionParams(temperature=-0.1), "temperature"),
        (CompletionParams(temperature=float("nan")), "temperature"),
        (CompletionParams(max_tokens=0), "max_tokens"),
        (CompletionParams(max_tokens=1001), "max_tokens"),
        (CompletionParams(model=""), "model"),
        (CompletionParams(model="gpt 4"), "model"),
        (CompletionParams(model="x" * 201), "model"),
        (CompletionParams(seed=-1), "seed"),
        (CompletionParams(seed=2**31), "seed"),
    ],
)
async def test_bad_params_raise_before_anything_is_sent(
    chat: respx.Route, params: CompletionParams, field: str
) -> None:
    provider = make_provider()

    with pytest.raises(InvalidParams) as stream_error:
        provider.stream(HELLO, params=params)  # raised by the call itself, not on first iteration
    with pytest.raises(InvalidParams) as complete_error:
        await provider.complete(HELLO, params=params)

    assert stream_error.value.field == field
    assert complete_error.value.field == field
    assert isinstance(stream_error.value, ValueError)
    assert not chat.called


async def test_no_usage_from_the_server_is_estimated_offline(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(hello_stream(usage=False)))

    events = await drain(make_provider().stream(HELLO))

    # "Be brief." -> 3, "Say hello" -> 3, each + 4 overhead, + 2; "Hello!" -> 2 (see llm/tokens.py)
    assert events[-1] == StreamEnd(
        finish_reason="stop", usage=Usage(prompt_tokens=16, completion_tokens=2, estimated=True), model="served-model"
    )


async def test_usage_can_be_left_out_of_the_request_for_servers_that_refuse_it(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(hello_stream(usage=False)))

    await drain(make_provider(stream_usage=False).stream(HELLO))

    assert "stream_options" not in request_json(chat.calls.last)


async def test_a_stream_without_a_finish_reason_is_incomplete_not_a_reply(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(sse(chunk("Hel"), chunk("lo"))))
    received: list[StreamEvent] = []

    with pytest.raises(StreamIncomplete):
        await consume(make_provider().stream(HELLO), received)

    assert received == [TextDelta("Hel"), TextDelta("lo")]  # and no StreamEnd


async def test_content_filter_finish_reason_is_an_error(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(sse(chunk("I"), chunk(finish="content_filter"), "[DONE]")))

    with pytest.raises(ContentFiltered):
        await drain(make_provider().stream(HELLO))


@pytest.mark.parametrize(("finish", "error"), [("abort", StreamIncomplete), ("error", Unavailable)])
async def test_finish_reasons_that_mean_failure(chat: respx.Route, finish: str, error: type[LLMError]) -> None:
    chat.mock(return_value=sse_response(sse(chunk("I"), chunk(finish=finish), "[DONE]")))

    with pytest.raises(error):
        await drain(make_provider().stream(HELLO))


async def test_a_non_json_event_is_malformed(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(sse(chunk("Hel"), b'{"id": "chatcmpl-1", "choi', chunk(finish="stop"))))

    with pytest.raises(MalformedResponse):
        await drain(make_provider().stream(HELLO))


@pytest.mark.parametrize(
    ("error_body", "expected"),
    [
        ({"message": "boom", "code": "server_error"}, Unavailable),
        ({"message": "This model's maximum context length is 8192 tokens", "code": None}, ContextTooLong),
    ],
)
async def test_an_error_event_mid_stream_is_typed(
    chat: respx.Route, error_body: dict[str, Any], expected: type[LLMError]
) -> None:
    chat.mock(return_value=sse_response(sse(chunk("Hel"), {"error": error_body})))

    with pytest.raises(expected):
        await drain(make_provider().stream(HELLO))


async def test_a_connection_dropped_mid_stream(chat: respx.Route) -> None:
    body = ScriptedBody(sse(chunk("Hel")), httpx.RemoteProtocolError("peer closed connection"))
    chat.mock(return_value=sse_response(body))
    received: list[StreamEvent] = []

    with pytest.raises(ConnectionDropped):
        await consume(make_provider().stream(HELLO), received)

    assert received == [TextDelta("Hel")]
    assert body.closed


async def test_no_first_token_in_time_is_a_timeout(chat: respx.Route) -> None:
    # The role chunk comes at once; the text does not: the first-token clock keeps running.
    body = ScriptedBody(sse(chunk("", role="assistant")), 5.0, sse(chunk("late")))
    chat.mock(return_value=sse_response(body))

    with pytest.raises(Timeout) as caught:
        await drain(make_provider(first_token_timeout=0.2, read_timeout=0.05).stream(HELLO))

    assert caught.value.detail == "no first token within 0.2s"
    assert body.closed
    assert body.sent == 1


async def test_a_stall_between_chunks_is_a_timeout(chat: respx.Route) -> None:
    body = ScriptedBody(sse(chunk("Hel")), 5.0, sse(chunk("lo"), chunk(finish="stop")))
    chat.mock(return_value=sse_response(body))
    received: list[StreamEvent] = []

    with pytest.raises(Timeout) as caught:
        await consume(make_provider(first_token_timeout=2.0, read_timeout=0.1).stream(HELLO), received)

    assert caught.value.detail == "the stream stalled for more than 0.1s"
    assert received == [TextDelta("Hel")]
    assert body.closed


async def test_a_slow_consumer_does_not_count_as_a_stall(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(hello_stream()))
    received: list[str] = []

    async for event in make_provider(read_timeout=0.05).stream(HELLO):
        received.extend(texts([event]))
        await asyncio.sleep(0.1)  # the caller is slow, not the server

    assert received == ["Hel", "lo!"]


async def test_reasoning_deltas_keep_a_thinking_model_alive(chat: respx.Route) -> None:
    body = ScriptedBody(
        sse(chunk(reasoning_content="Let me think")),
        0.1,
        sse(chunk(reasoning_content="more")),
        0.1,
        sse(chunk("Hi"), chunk(finish="stop")),
    )
    chat.mock(return_value=sse_response(body))

    events = await drain(make_provider(first_token_timeout=0.15, read_timeout=0.5).stream(HELLO))

    assert texts(events) == ["Hi"]


async def test_chunks_of_the_wrong_shape_are_skipped_and_the_text_around_them_kept(chat: respx.Route) -> None:
    # Given a server that slips JSON which is not a chunk, or a chunk with odd fields, between real ones
    odd: list[dict[str, Any] | str] = [
        "[1, 2]",
        '"just a string"',
        {"choices": "not a list"},
        {"choices": ["not an object"]},
        {"choices": [{"index": 0, "delta": "not an object"}]},
        {"choices": [{"index": 0, "delta": {"content": 42}}]},
    ]
    chat.mock(return_value=sse_response(sse(chunk("Hel"), *odd, chunk("lo"), chunk(finish="stop"))))

    # When it is streamed
    events = await drain(make_provider().stream(HELLO))

    # Then only the real text arrives, nothing of the odd chunks, and the reply completes
    assert texts(events) == ["Hel", "lo"]
    assert isinstance(events[-1], StreamEnd)
    assert events[-1].finish_reason == "stop"


async def test_closing_the_stream_early_closes_the_http_response(chat: respx.Route) -> None:
    body = ScriptedBody(sse(chunk("Hel")), sse(chunk("lo")), 5.0, sse(chunk(finish="stop")))
    chat.mock(return_value=sse_response(body))
    stream = make_provider().stream(HELLO)

    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]

    assert first == TextDelta("Hel")
    assert body.closed


async def test_cancelling_the_consuming_task_closes_the_http_response(chat: respx.Route) -> None:
    body = ScriptedBody(sse(chunk("Hel")), 5.0, sse(chunk(finish="stop")))
    chat.mock(return_value=sse_response(body))
    started = asyncio.Event()

    async def consume() -> None:
        async for _event in make_provider().stream(HELLO):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert body.closed


# -- batch -----------------------------------------------------------------------------------------


async def test_complete_returns_text_finish_and_usage(chat: respx.Route) -> None:
    chat.mock(
        return_value=httpx.Response(
            200, json=completion_body("Hello!", usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12})
        )
    )

    completion = await make_provider().complete(HELLO, params=CompletionParams(max_tokens=50))

    assert completion == Completion(
        text="Hello!", finish_reason="stop", usage=Usage(prompt_tokens=9, completion_tokens=3), model="served-model"
    )
    body = request_json(chat.calls.last)
    assert (body["stream"], body["max_tokens"], "stream_options" in body) == (False, 50, False)


async def test_complete_estimates_missing_usage(chat: respx.Route) -> None:
    chat.mock(return_value=httpx.Response(200, json=completion_body("Hello!")))

    completion = await make_provider().complete(HELLO)

    assert completion.usage == Usage(prompt_tokens=16, completion_tokens=2, estimated=True)


async def test_complete_content_filter_is_an_error(chat: respx.Route) -> None:
    chat.mock(return_value=httpx.Response(200, json=completion_body(None, finish="content_filter")))

    with pytest.raises(ContentFiltered):
        await make_provider().complete(HELLO)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>proxy login</html>", headers={"content-type": "text/html"}),
        httpx.Response(200, json={**completion_body(), "choices": []}),
    ],
    ids=["html", "no-choices"],
)
async def test_complete_rejects_what_is_not_a_chat_completion(chat: respx.Route, response: httpx.Response) -> None:
    chat.mock(return_value=response)

    with pytest.raises(MalformedResponse):
        await make_provider().complete(HELLO)


async def test_complete_has_an_overall_deadline(chat: respx.Route) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=completion_body())

    chat.mock(side_effect=slow)

    with pytest.raises(Timeout) as caught:
        await make_provider(complete_timeout=0.1).complete(HELLO)

    assert caught.value.detail == "no complete answer within 0.1s"


# -- HTTP errors -----------------------------------------------------------------------------------


def error_response(status: int, *, message: str = "nope", code: str | None = None, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"error": {"message": message, "type": "invalid_request_error", "code": code}},
        headers=headers,
    )


@pytest.mark.parametrize(
    ("response", "expected", "retryable"),
    [
        (error_response(400), BadRequest, False),
        (error_response(400, message="too long", code="context_length_exceeded"), ContextTooLong, False),
        (error_response(400, message="This model's maximum context length is 4096 tokens."), ContextTooLong, False),
        (error_response(400, message="flagged", code="content_filter"), ContentFiltered, False),
        (
            error_response(400, message="Your request was rejected by our content management policy"),
            ContentFiltered,
            False,
        ),
        (error_response(401), AuthenticationFailed, False),
        (error_response(403), PermissionDenied, False),
        (error_response(404, code="model_not_found"), ModelNotFound, False),
        (error_response(408), Timeout, True),
        (error_response(409), Unavailable, True),
        (error_response(413), ContextTooLong, False),
        (error_response(422), BadRequest, False),
        (error_response(429, code="rate_limit_exceeded"), RateLimited, True),
        (error_response(429, code="insufficient_quota"), QuotaExceeded, False),
        (error_response(500), Unavailable, True),
        (error_response(502), Unavailable, True),
        (error_response(503), Unavailable, True),
        (error_response(504), Unavailable, True),
    ],
    ids=lambda value: getattr(value, "status_code", None) or getattr(value, "__name__", str(value)),
)
async def test_each_status_becomes_its_typed_error(
    chat: respx.Route, response: httpx.Response, expected: type[LLMError], retryable: bool
) -> None:
    chat.mock(return_value=response)
    provider = make_provider()

    with pytest.raises(LLMError) as streamed:
        await drain(provider.stream(HELLO))
    with pytest.raises(LLMError) as completed:
        await provider.complete(HELLO)

    assert type(streamed.value) is expected
    assert type(completed.value) is expected
    assert streamed.value.retryable is retryable
    assert streamed.value.status_code == response.status_code
    assert chat.call_count == 2  # one attempt each: retrying is ResilientProvider's job


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
async def test_rate_limited_carries_retry_after(
    chat: respx.Route, headers: dict[str, str], seconds: float | None
) -> None:
    chat.mock(return_value=error_response(429, code="rate_limit_exceeded", **headers))

    with pytest.raises(RateLimited) as caught:
        await drain(make_provider().stream(HELLO))

    assert caught.value.retry_after == seconds


def test_retry_after_may_be_an_http_date() -> None:
    assert retry_after_parse({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past: no wait


async def test_unavailable_keeps_a_503s_retry_after(chat: respx.Route) -> None:
    chat.mock(return_value=error_response(503, **{"retry-after": "3"}))

    with pytest.raises(Unavailable) as caught:
        await make_provider().complete(HELLO)

    assert caught.value.retry_after == 3.0


async def test_error_messages_never_carry_the_key_or_the_servers_text(chat: respx.Route) -> None:
    chat.mock(
        return_value=error_response(401, message=f"Incorrect API key provided: {API_KEY}.", code="invalid_api_key")
    )

    with pytest.raises(AuthenticationFailed) as caught:
        await drain(make_provider().stream(HELLO))

    error = caught.value
    assert error.user_message == "The language model rejected our API key."
    assert error.as_dict() == {"code": "llm_auth", "message": error.user_message, "retryable": False}
    assert error.detail == "HTTP 401 invalid_api_key: Incorrect API key provided: [redacted]."
    assert API_KEY not in str(error)
    assert API_KEY[-12:] not in error.detail


async def test_other_key_shapes_are_redacted_too(chat: respx.Route) -> None:
    chat.mock(return_value=error_response(400, message="bad header Bearer sk-proj-abcdefghijkl for org"))

    with pytest.raises(BadRequest) as caught:
        await make_provider().complete(HELLO)

    assert caught.value.detail == "HTTP 400: bad header [redacted] for org"


# -- transport errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exception", "expected"),
    [
        (httpx.ConnectError("connection refused"), Unreachable),
        (httpx.ConnectTimeout("connect timed out"), Unreachable),
        (httpx.ReadTimeout("read timed out"), Timeout),
        (httpx.RemoteProtocolError("server hung up"), Unavailable),
    ],
)
async def test_transport_failures_before_an_answer(
    chat: respx.Route, exception: Exception, expected: type[LLMError]
) -> None:
    chat.mock(side_effect=exception)

    with pytest.raises(LLMError) as caught:
        await drain(make_provider().stream(HELLO))

    assert type(caught.value) is expected
    assert caught.value.retryable is True
    assert chat.call_count == 1  # the SDK's own retries are off


# -- configuration -----------------------------------------------------------------------------------


async def test_not_configured_raises_without_any_request(api: respx.MockRouter) -> None:
    provider = OpenAICompatibleProvider(model="m", api_key="", base_url="")
    any_route = api.route()

    with pytest.raises(NotConfigured):
        await drain(provider.stream(HELLO))
    with pytest.raises(NotConfigured):
        await provider.complete(HELLO)

    assert provider.configured is False
    assert not any_route.called


async def test_a_local_server_needs_no_key(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(hello_stream()))
    provider = make_provider(api_key="")

    await drain(provider.stream(HELLO))

    assert provider.configured is True
    assert chat.calls.last.request.headers["authorization"] == f"Bearer {KEYLESS_PLACEHOLDER}"


def test_key_only_means_openai() -> None:
    provider = OpenAICompatibleProvider(model="m", api_key=API_KEY)

    assert provider.configured is True
    assert provider.base_url == "https://api.openai.com/v1"
    assert provider.key_hint == "...WXYZ"


# -- one client per event loop -------------------------------------------------------------------------


def test_each_event_loop_gets_its_own_client(api: respx.MockRouter) -> None:
    provider = make_provider()

    async def client_twice() -> tuple[object, object]:
        return await provider.client(), await provider.client()

    first_a, first_b = asyncio.run(client_twice())
    second_a, _ = asyncio.run(client_twice())
    third, _ = async_to_sync(client_twice)()

    assert first_a is first_b
    assert second_a is not first_a
    assert third is not second_a
    assert len(provider._clients) == 1  # the clients of closed loops were dropped


def test_calls_through_successive_loops_all_succeed(chat: respx.Route) -> None:
    chat.mock(side_effect=lambda request: sse_response(hello_stream()))
    provider = make_provider()

    async def reply() -> list[str]:
        return texts(await drain(provider.stream(HELLO)))

    assert asyncio.run(reply()) == ["Hel", "lo!"]
    assert asyncio.run(reply()) == ["Hel", "lo!"]
    assert async_to_sync(reply)() == ["Hel", "lo!"]
    assert chat.call_count == 3


async def test_models_list_for_diagnosis(api: respx.MockRouter) -> None:
    api.get("/models").respond(
        200, json={"object": "list", "data": [{"id": "b", "object": "model"}, {"id": "a", "object": "model"}]}
    )

    assert await make_provider().models_list() == ["a", "b"]


# -- tools -----------------------------------------------------------------------------------------

WEATHER = ToolSpec(
    name="weather_get",
    description="The forecast for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
WITH_TOOLS = CompletionParams(tools=(WEATHER,))


def tool_fragment(
    index: object, *, id: str | None = None, name: str | None = None, arguments: str | None = None
) -> dict[str, Any]:
    """One entry of a chunk's `delta.tool_calls`, as OpenAI streams it."""
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    fragment: dict[str, Any] = {"index": index, "function": function}
    if id is not None:
        fragment.update(id=id, type="function")
    return fragment


def tool_chunk(*fragments: dict[str, Any]) -> dict[str, Any]:
    return chunk(tool_calls=list(fragments))


async def test_tool_call_fragments_are_assembled_by_index_across_interleaved_chunks(chat: respx.Route) -> None:
    # Given two calls whose fragments interleave, with arguments cut mid-string and mid-escape
    chat.mock(
        return_value=sse_response(
            sse(
                chunk(role="assistant"),
                tool_chunk(tool_fragment(0, id="call_a", name="weather_get", arguments="")),
                tool_chunk(tool_fragment(0, arguments='{"ci')),
                tool_chunk(tool_fragment(1, id="call_b", name="weather_get", arguments='{"city": "Saint-\\u00')),
                tool_chunk(tool_fragment(0, arguments='ty": "Ly')),
                tool_chunk(tool_fragment(1, arguments='c9tienne"}'), tool_fragment(0, arguments='on"}')),
                chunk(finish="tool_calls"),
                "[DONE]",
            )
        )
    )

    # When it is streamed
    events = await drain(make_provider().stream(HELLO, params=WITH_TOOLS))

    # Then one ToolCalls, ordered by index, carries both calls whole, and nothing else came before it
    assert events[:-1] == [
        ToolCalls(
            (
                ToolCall(id="call_a", name="weather_get", arguments='{"city": "Lyon"}'),
                ToolCall(id="call_b", name="weather_get", arguments='{"city": "Saint-\\u00c9tienne"}'),
            )
        )
    ]
    calls = events[0]
    assert isinstance(calls, ToolCalls)
    assert json.loads(calls.calls[1].arguments) == {"city": "Saint-Étienne"}
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.finish_reason == "tool_calls"


async def test_tool_call_fragments_of_the_wrong_shape_are_skipped(chat: respx.Route) -> None:
    # Given a stream whose tool-call fragments include ones no server should send
    odd: list[dict[str, Any]] = [
        chunk(tool_calls="not a list"),
        tool_chunk("not an object"),  # type: ignore[arg-type]
        tool_chunk(tool_fragment(None, arguments="no index")),
        tool_chunk(tool_fragment("0", arguments="index as text")),
        tool_chunk(tool_fragment(-1, arguments="negative index")),
        tool_chunk({"index": 0, "function": ["not", "an", "object"]}),
        tool_chunk(tool_fragment(0, arguments=42)),  # type: ignore[arg-type]
        tool_chunk(tool_fragment(2, arguments='{"city": "nowhere"}')),  # never named: cannot be run
    ]
    chat.mock(
        return_value=sse_response(
            sse(
                chunk("Checking."),
                tool_chunk(tool_fragment(0, name="weather_get", arguments='{"city": ')),
                *odd,
                # some servers repeat the name in every fragment: it is not doubled
                tool_chunk(tool_fragment(0, name="weather_get", arguments='"Lyon"}')),
                chunk(finish="tool_calls"),
            )
        )
    )

    # When it is streamed
    events = await drain(make_provider().stream(HELLO, params=WITH_TOOLS))

    # Then the text and the one well-formed call arrive; a call without an id gets one from its index
    assert events[:-1] == [
        TextDelta("Checking."),
        ToolCalls((ToolCall(id="call_0", name="weather_get", arguments='{"city": "Lyon"}'),)),
    ]


async def test_tool_call_fragments_keep_the_stream_alive_like_text(chat: respx.Route) -> None:
    # The arguments take longer than the first-token timeout in all, but never stall for the read timeout.
    body = ScriptedBody(
        sse(chunk(role="assistant")),
        sse(tool_chunk(tool_fragment(0, id="call_1", name="weather_get", arguments='{"city":'))),
        0.15,
        sse(tool_chunk(tool_fragment(0, arguments=' "Lyon"'))),
        0.15,
        sse(tool_chunk(tool_fragment(0, arguments="}")), chunk(finish="tool_calls")),
    )
    chat.mock(return_value=sse_response(body))

    events = await drain(make_provider(first_token_timeout=0.2, read_timeout=0.5).stream(HELLO, params=WITH_TOOLS))

    assert events[0] == ToolCalls((ToolCall(id="call_1", name="weather_get", arguments='{"city": "Lyon"}'),))


async def test_a_tool_call_without_server_usage_counts_its_arguments(chat: respx.Route) -> None:
    arguments = '{"city": "Lyon", "days": 3, "units": "metric"}'
    chat.mock(
        return_value=sse_response(
            sse(
                tool_chunk(tool_fragment(0, id="call_1", name="weather_get", arguments=arguments)),
                chunk(finish="tool_calls"),
            )
        )
    )

    events = await drain(make_provider().stream(HELLO, params=WITH_TOOLS))

    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert end.usage == Usage(
        prompt_tokens=16, completion_tokens=count_tokens("weather_get" + arguments), estimated=True
    )
    assert end.usage.completion_tokens > 10


async def test_tools_and_tool_messages_are_sent_in_openais_format(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(hello_stream()))
    call = ToolCall(id="call_9", name="weather_get", arguments='{"city": "Lyon"}')
    messages = [
        *HELLO,
        ChatMessage(role="assistant", content="Let me look.", tool_calls=(call,)),
        ChatMessage(role="tool", content="Sunny, 21 °C", tool_call_id="call_9"),
    ]

    await drain(make_provider().stream(messages, params=WITH_TOOLS))

    body = request_json(chat.calls.last)
    assert body["messages"][2:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "weather_get", "arguments": '{"city": "Lyon"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "Sunny, 21 °C"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather_get",
                "description": "The forecast for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    assert body["tool_choice"] == "auto"


async def test_without_tool_support_no_tools_are_sent(chat: respx.Route) -> None:
    chat.mock(side_effect=[sse_response(hello_stream()), httpx.Response(200, json=completion_body())])
    provider = make_provider(supports_tools=False)

    await drain(provider.stream(HELLO, params=WITH_TOOLS))
    await provider.complete(HELLO, params=WITH_TOOLS)

    assert provider.supports_tools is False
    for call in chat.calls:
        assert not {"tools", "tool_choice"} & set(request_json(call))
    assert chat.call_count == 2


async def test_no_tools_given_sends_no_tools(chat: respx.Route) -> None:
    chat.mock(return_value=sse_response(hello_stream()))

    await drain(make_provider().stream(HELLO, params=CompletionParams(tools=())))

    assert not {"tools", "tool_choice"} & set(request_json(chat.calls.last))


async def test_complete_returns_the_tool_calls(chat: respx.Route) -> None:
    body = completion_body(None, finish="tool_calls")
    body["choices"][0]["message"]["tool_calls"] = [
        {"id": "call_x", "type": "function", "function": {"name": "weather_get", "arguments": '{"city": "Lyon"}'}},
        {"type": "function", "function": {"name": "weather_get", "arguments": '{"city": "Nice"}'}},
        {"id": "call_nameless", "type": "function", "function": {"arguments": "{}"}},
    ]
    chat.mock(return_value=httpx.Response(200, json=body))

    completion = await make_provider().complete(HELLO, params=WITH_TOOLS)

    assert completion.tool_calls == (
        ToolCall(id="call_x", name="weather_get", arguments='{"city": "Lyon"}'),
        ToolCall(id="call_1", name="weather_get", arguments='{"city": "Nice"}'),
    )
    assert (completion.text, completion.finish_reason) == ("", "tool_calls")


@pytest.mark.parametrize(
    "message",
    [
        "registry.ollama.ai/library/gemma:2b does not support tools",
        '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
        "tools param requires --jinja flag",
        "Unsupported parameter: 'tools' is not supported with this model.",
        "Function calling is not enabled for this model",
    ],
)
async def test_a_400_refusing_tools_is_tools_unsupported(chat: respx.Route, message: str) -> None:
    chat.mock(return_value=error_response(400, message=message))

    with pytest.raises(ToolsUnsupported) as caught:
        await drain(make_provider().stream(HELLO, params=WITH_TOOLS))

    assert isinstance(caught.value, BadRequest)
    assert (caught.value.code, caught.value.retryable, caught.value.status_code) == ("tools_unsupported", False, 400)


async def test_a_400_about_a_bad_tool_schema_stays_a_bad_request(chat: respx.Route) -> None:
    chat.mock(return_value=error_response(400, message="Invalid schema for function 'weather_get': 'tools' is wrong"))

    with pytest.raises(BadRequest) as caught:
        await drain(make_provider().stream(HELLO, params=WITH_TOOLS))

    assert type(caught.value) is BadRequest
