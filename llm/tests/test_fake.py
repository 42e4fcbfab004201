"""FakeProvider's scripted tool rounds, as tests of other layers use them."""

from llm.base import ChatMessage, CompletionParams, StreamEnd, TextDelta, ToolCall, ToolCalls, ToolSpec
from llm.fake import FakeProvider
from llm.tests.helpers import HELLO, drain

LYON = ToolCall(id="call_1", name="weather_get", arguments='{"city": "Lyon"}')
NICE = ToolCall(id="call_2", name="weather_get", arguments='{"city": "Nice"}')
WEATHER = ToolSpec(name="weather_get", description="The forecast.", parameters={"type": "object"})
TOOLS = CompletionParams(tools=(WEATHER,))


async def test_each_stream_takes_the_next_tool_round_then_the_reply_answers() -> None:
    # Given two scripted rounds, the first with text before its calls
    fake = FakeProvider(reply="Sunny in both.", chunks=1, tool_rounds=[(LYON, NICE), (NICE,)], tool_text="Checking.")

    # When three replies are streamed
    first = await drain(fake.stream(HELLO, params=TOOLS))
    second = await drain(fake.stream(HELLO, params=TOOLS))
    third = await drain(fake.stream(HELLO, params=TOOLS))

    # Then the rounds come in order, each ending "tool_calls", and the reply after them
    assert first[:-1] == [TextDelta("Checking."), ToolCalls((LYON, NICE))]
    assert second[:-1] == [TextDelta("Checking."), ToolCalls((NICE,))]
    assert third[:-1] == [TextDelta("Sunny in both.")]
    assert [end.finish_reason for end in (first[-1], second[-1], third[-1]) if isinstance(end, StreamEnd)] == [
        "tool_calls",
        "tool_calls",
        "stop",
    ]
    assert fake.tool_rounds == []
    assert fake.params == [TOOLS, TOOLS, TOOLS]  # which tools were offered, call by call


async def test_a_tool_round_without_text_is_only_the_calls() -> None:
    fake = FakeProvider(tool_rounds=[(LYON,)])

    events = await drain(fake.stream(HELLO, params=TOOLS))

    assert events[:-1] == [ToolCalls((LYON,))]


async def test_complete_takes_a_tool_round_too() -> None:
    fake = FakeProvider(reply="Sunny.", tool_rounds=[(LYON,)])

    with_calls = await fake.complete(HELLO, params=TOOLS)
    answer = await fake.complete([*HELLO, ChatMessage(role="tool", content="sunny", tool_call_id="call_1")])

    assert (with_calls.tool_calls, with_calls.finish_reason, with_calls.text) == ((LYON,), "tool_calls", "")
    assert (answer.tool_calls, answer.finish_reason, answer.text) == ((), "stop", "Sunny.")
    assert fake.calls[1][-1].tool_call_id == "call_1"


async def test_a_tool_round_closed_early_counts_as_closed() -> None:
    fake = FakeProvider(tool_rounds=[(LYON,)], tool_text="Checking the forecast.", chunks=3)
    stream = fake.stream(HELLO, params=TOOLS)

    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]

    assert (fake.closed, fake.completed) == (1, 0)
