"""Call metering and the `companion.llm` log records: figures only, never text or keys."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import respx

from core.logging import JsonFormatter
from llm.base import (
    ChatMessage,
    CompletionParams,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCalls,
    ToolSpec,
    Usage,
)
from llm.errors import AuthenticationFailed, StreamIncomplete, Unavailable
from llm.fake import FakeProvider
from llm.providers.openai import OpenAICompatibleProvider
from llm.resilience import ResilientProvider, RetryPolicy
from llm.tests.helpers import API_KEY, BASE_URL, UpperJitter, chunk, drain, hello_stream, sse, sse_response
from llm.usage import CallMeter, CallStats, MeteredStream, call_complete, call_stream

SECRET_PROMPT = "my bank PIN is 4921, remember it"
SECRET_REPLY = "I will remember 4921"
MESSAGES = [ChatMessage(role="user", content=SECRET_PROMPT)]

LOG_FIELDS = {
    "provider",
    "model",
    "kind",
    "outcome",
    "attempts",
    "resumed",
    "ttft_ms",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "estimated",
    "finish_reason",
}


class TickClock:
    """Each read advances 10 ms: durations become exact counts of clock reads."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


def llm_call_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "companion.llm" and r.getMessage() == "llm.call"]


def rendered(caplog: pytest.LogCaptureFixture, *, min_level: int) -> str:
    formatter = JsonFormatter()
    return "\n".join(formatter.format(r) for r in caplog.records if r.levelno >= min_level)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


def resilient() -> ResilientProvider:
    inner = OpenAICompatibleProvider(base_url=BASE_URL, api_key=API_KEY, model="gpt-test")

    async def no_sleep(seconds: float) -> None:
        return None

    return ResilientProvider(inner, policy=RetryPolicy(max_retries=2), sleep=no_sleep, rng=UpperJitter())


async def test_a_streamed_call_logs_one_record_of_figures(
    api: respx.MockRouter, llm_logs: pytest.LogCaptureFixture
) -> None:
    api.post("/chat/completions").mock(return_value=sse_response(hello_stream()))

    stream = resilient().stream(MESSAGES)
    await drain(stream)

    records = llm_call_records(llm_logs)
    assert len(records) == 1
    data = records[0].data  # type: ignore[attr-defined]
    assert set(data) == LOG_FIELDS
    assert {k: v for k, v in data.items() if k not in ("ttft_ms", "duration_ms")} == {
        "provider": "openai",
        "model": "served-model",
        "kind": "stream",
        "outcome": "ok",
        "attempts": 1,
        "resumed": False,
        "prompt_tokens": 11,
        "completion_tokens": 2,
        "estimated": False,
        "finish_reason": "stop",
    }
    assert records[0].levelno == logging.INFO
    assert stream.stats.outcome == "ok"
    assert stream.stats.usage == Usage(prompt_tokens=11, completion_tokens=2)
    assert isinstance(stream.stats.ttft_ms, int)
    assert isinstance(stream.stats.duration_ms, int)


async def test_logs_never_hold_message_text_or_the_key_even_on_failure(
    api: respx.MockRouter, llm_logs: pytest.LogCaptureFixture
) -> None:
    route = api.post("/chat/completions")
    route.side_effect = [
        sse_response(sse(chunk(SECRET_REPLY), chunk(finish="stop"), "[DONE]")),
        respx.MockResponse(401, json={"error": {"message": f"bad key {API_KEY} for '{SECRET_PROMPT}'"}}),
    ]
    provider = resilient()

    await drain(provider.stream(MESSAGES))
    with pytest.raises(AuthenticationFailed):
        await drain(provider.stream(MESSAGES))

    everything = rendered(llm_logs, min_level=logging.DEBUG)
    info_and_above = rendered(llm_logs, min_level=logging.INFO)
    assert API_KEY not in everything
    assert API_KEY[-12:] not in everything
    assert "4921" not in info_and_above
    records = [json.loads(line) for line in info_and_above.splitlines()]
    assert [r["outcome"] for r in records if r["event"] == "llm.call"] == ["ok", "llm_auth"]
    # The rejected key is an operator incident: its alert line (checked above for the key) names the code only
    assert [(r["incident"], r["error"]) for r in records if r["event"] == "llm.alert"] == [("auth", "llm_auth")]


async def test_a_failed_call_logs_a_warning_with_the_error_code_and_attempts(
    api: respx.MockRouter, llm_logs: pytest.LogCaptureFixture
) -> None:
    api.post("/chat/completions").respond(503, json={"error": {"message": "overloaded"}})

    stream = resilient().stream(MESSAGES)
    with pytest.raises(Unavailable):
        await drain(stream)

    (record,) = llm_call_records(llm_logs)
    assert record.levelno == logging.WARNING
    assert (record.data["outcome"], record.data["attempts"]) == ("llm_unavailable", 3)  # type: ignore[attr-defined]
    assert stream.stats.error is not None
    assert stream.stats.error.status_code == 503


async def test_a_cancelled_stream_logs_cancelled_once(
    api: respx.MockRouter, llm_logs: pytest.LogCaptureFixture
) -> None:
    api.post("/chat/completions").mock(return_value=sse_response(hello_stream()))

    stream = resilient().stream(MESSAGES)
    await anext(stream)
    await stream.aclose()
    await stream.aclose()

    (record,) = llm_call_records(llm_logs)
    assert record.data["outcome"] == "cancelled"  # type: ignore[attr-defined]
    assert stream.stats.ttft_ms is not None


async def test_call_stream_meters_a_provider_without_metering() -> None:
    stream = call_stream(provider=FakeProvider(reply="abcdefgh", chunks=2), messages=MESSAGES)

    events = await drain(stream)

    assert events[:2] == [TextDelta("abcd"), TextDelta("efgh")]
    assert isinstance(events[2], StreamEnd)
    assert (stream.stats.provider, stream.stats.model, stream.stats.attempts, stream.stats.outcome) == (
        "fake",
        "fake-model",
        1,
        "ok",
    )


def test_call_stream_does_not_meter_twice() -> None:
    provider = resilient()

    stream = call_stream(provider=provider, messages=MESSAGES)

    assert isinstance(stream, MeteredStream)
    assert stream.stats.kind == "stream"
    assert stream.stats.attempts == 0  # nothing sent before the first anext


async def test_metered_stream_timings_with_an_injected_clock() -> None:
    async def source() -> AsyncIterator[StreamEvent]:
        yield TextDelta("a")
        yield TextDelta("b")
        yield StreamEnd(finish_reason="stop", usage=Usage(1, 2), model="m")

    stream = MeteredStream(source(), stats=CallStats(provider="p", model="m"), clock=TickClock())

    await drain(stream)

    # clock reads: start (0.01), first token (0.02), end (0.03)
    assert (stream.stats.ttft_ms, stream.stats.duration_ms) == (10, 20)


async def test_a_source_that_stops_without_stream_end_is_incomplete() -> None:
    async def source() -> AsyncIterator[StreamEvent]:
        yield TextDelta("half")

    stream = MeteredStream(source(), stats=CallStats())

    with pytest.raises(StreamIncomplete):
        await drain(stream)

    assert stream.stats.outcome == "llm_stream_incomplete"


async def test_a_cancelled_consumer_task_is_logged_as_cancelled(llm_logs: pytest.LogCaptureFixture) -> None:
    stream = call_stream(provider=FakeProvider(reply="abcdefgh", chunks=4, delay=10.0), messages=MESSAGES)

    task = asyncio.create_task(drain(stream))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert stream.stats.outcome == "cancelled"
    assert [r.data["outcome"] for r in llm_call_records(llm_logs)] == ["cancelled"]  # type: ignore[attr-defined]


async def test_call_complete_fills_stats_for_any_provider(llm_logs: pytest.LogCaptureFixture) -> None:
    stats = CallStats()

    completion = await call_complete(
        provider=FakeProvider(reply="abcdefgh"), messages=MESSAGES, params=CompletionParams(model="x"), stats=stats
    )

    assert completion.text == "abcdefgh"
    assert (stats.kind, stats.model, stats.outcome, stats.completion_tokens, stats.ttft_ms) == (
        "complete",
        "x",
        "ok",
        2,
        None,
    )
    assert len(llm_call_records(llm_logs)) == 1


async def test_call_complete_fills_stats_on_failure() -> None:
    stats = CallStats()

    with pytest.raises(Unavailable):
        await call_complete(provider=FakeProvider(error=Unavailable("x")), messages=MESSAGES, stats=stats)

    assert stats.outcome == "llm_unavailable"


def test_the_meter_logs_only_once() -> None:
    meter = CallMeter(CallStats(), clock=TickClock())
    meter.start()

    meter.cancelled()
    meter.failed(Unavailable())

    assert meter.stats.outcome == "cancelled"


async def test_tool_calls_pass_through_metering_and_usage_comes_from_the_end() -> None:
    lyon = ToolCall(id="call_1", name="weather_get", arguments='{"city": "Lyon"}')
    tools = CompletionParams(tools=(ToolSpec(name="weather_get", description="The forecast.", parameters={}),))
    fake = FakeProvider(tool_rounds=[(lyon,)])

    stream = call_stream(provider=fake, messages=MESSAGES, params=tools)
    events = await drain(stream)

    assert events[0] == ToolCalls((lyon,))
    end = events[-1]
    assert isinstance(end, StreamEnd)
    assert (stream.stats.outcome, stream.stats.finish_reason) == ("ok", "tool_calls")
    assert (stream.stats.prompt_tokens, stream.stats.completion_tokens) == (
        end.usage.prompt_tokens,
        end.usage.completion_tokens,
    )
    assert stream.stats.ttft_ms is None  # no text reached the caller
