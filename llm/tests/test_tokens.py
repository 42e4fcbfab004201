"""Offline token counts of a prompt, tool calls included."""

from llm.base import ChatMessage, ToolCall
from llm.tokens import MESSAGE_OVERHEAD_TOKENS, count_message_tokens, count_tokens


def test_the_tool_calls_of_an_assistant_message_count_toward_the_prompt() -> None:
    call = ToolCall(id="call_1", name="reminder_create", arguments='{"text": "Call mum", "at": "2026-12-08T18:00"}')
    plain = [ChatMessage(role="user", content="Remind me"), ChatMessage(role="assistant", content="")]
    with_call = [plain[0], ChatMessage(role="assistant", content="", tool_calls=(call,))]

    added = count_message_tokens(with_call) - count_message_tokens(plain)

    assert added == count_tokens("reminder_create" + call.arguments)
    assert added > 10
    assert count_message_tokens(plain) == count_tokens("Remind me") + 2 * MESSAGE_OVERHEAD_TOKENS + 2
