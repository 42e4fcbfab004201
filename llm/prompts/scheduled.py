"""The prompt of a message the avatar writes first (a reminder, a check-in): pure, no I/O.

The system prompt is the conversation's mode prompt (the avatar's voice, its rules, what
it remembers), followed by the few last messages and one instruction saying what to write
and how short. The brief is data from our own server, yet it quotes the user's reminder
text: it is fenced like any other user data.
"""

from collections.abc import Sequence
from typing import Literal

from llm.base import ChatMessage
from llm.prompts.modes import PromptContext, _as_data, _section, system_prompt_for_mode

BRIEF_MAX_CHARS = 1500
HISTORY_MAX_CHARS = 600  # per message: the last few lines set the tone, they need not be whole

ScheduledKind = Literal["reminder", "proactive"]

_INSTRUCTIONS: dict[str, str] = {
    "reminder": (
        "The user asked you to remind them of something, and it is due now. Write the reminder yourself, in your "
        "own voice and in the current mode: one or two short sentences that say plainly what it is about. Do not "
        "ask whether they want a reminder and do not offer to set another one."
    ),
    "proactive": (
        "The user has not written for a while and allowed you to check in. Write one short, friendly message "
        "(one to three sentences) that picks up something from your conversation or what you remember. No "
        "pressure, no guilt about the silence, no questions in a row; it is fine if they do not answer."
    ),
}


def scheduled_messages_build(
    ctx: PromptContext,
    *,
    mode: str,
    kind: ScheduledKind,
    brief: str,
    history: Sequence[tuple[str, str]] = (),
) -> list[ChatMessage]:
    """The messages of a scheduled message's model call: system prompt, the last lines of the
    conversation (`(role, content)`, oldest first), then what to write."""
    messages = [ChatMessage(role="system", content=system_prompt_for_mode(mode, ctx))]
    for role, content in history:
        if role in ("user", "assistant") and content.strip():
            messages.append(
                ChatMessage(role="user" if role == "user" else "assistant", content=content[:HISTORY_MAX_CHARS])
            )
    instruction = f"{_INSTRUCTIONS[kind]}\n\n{_section('brief', _as_data(brief, BRIEF_MAX_CHARS))}"
    messages.append(ChatMessage(role="system", content=instruction))
    return messages
