"""The secretary acts: tool calls in a turn, their `action` frames, and the loop's bounds.

The model is the FakeProvider with scripted tool rounds; llmock drives the same loop over
real HTTP in test_e2e_realtime.py.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from accounts.models import Profile
from conversations.models import Message, Role, Status
from conversations.turns import TurnEvent, turn_start
from conversations.turns.stream import TOOL_ROUNDS_MAX
from core.modes import Mode
from llm.base import ChatMessage, CompletionParams, StreamEvent, ToolCall
from llm.errors import ToolsUnsupported
from llm.fake import FakeProvider
from secretary.models import Reminder, Task
from testing.support import ConversationFactory
from testing.support import turn_frames as run_turn

pytestmark = pytest.mark.django_db(transaction=True)


def call(name: str, arguments: Any, call_id: str = "call_1") -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=arguments if isinstance(arguments, str) else json.dumps(arguments))


def tomorrow_local(zone_hours: int = 0, at: str = "09:00") -> str:
    return (timezone.now() + timedelta(days=1, hours=zone_hours)).strftime(f"%Y-%m-%dT{at}")


def of_type(frames: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == kind]


def tool_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    return [json.loads(m.content) for m in messages if m.role == "tool"]


def test_a_reminder_asked_for_is_created_confirmed_in_the_users_zone_and_answered_in_words() -> None:
    # Given a user in New York, in secretary mode, and a model that calls reminder_create then answers
    conversation = ConversationFactory(mode=Mode.SECRETARY)
    Profile.objects.update_or_create(user_id=conversation.user_id, defaults={"timezone": "America/New_York"})
    due = (timezone.now() + timedelta(days=1)).astimezone(UTC).strftime("%Y-%m-%d") + "T09:00"
    provider = FakeProvider(
        reply="Done: I'll remind you tomorrow at 9:00.",
        tool_rounds=[(call("reminder_create", {"text": "Call the dentist", "due_local": due}),)],
    )

    # When the user asks
    frames = run_turn(conversation, "remind me to call the dentist tomorrow at 9", provider)

    # Then one reminder exists, at 9:00 New York time, tied to the user's message
    reminder = Reminder.objects.get()
    user_message = Message.objects.get(role=Role.USER)
    assert (reminder.text, reminder.timezone, reminder.source_message_id) == (
        "Call the dentist",
        "America/New_York",
        user_message.pk,
    )
    assert reminder.due_at.astimezone(UTC).hour in (13, 14)  # 9:00 EST or EDT
    # and the action frame came before the words, with the time as the user reads it
    types = [f["type"] for f in frames]
    assert types.index("action") < types.index("token") < types.index("reply.end")
    (action,) = of_type(frames, "action")
    reply = Message.objects.get(role=Role.ASSISTANT)
    assert action["message_id"] == reply.pk
    assert action["name"] == "reminder_create"
    assert action["error"] is None
    assert action["result"]["confirmation"].startswith("Reminder set for ")
    assert action["result"]["confirmation"].endswith("09:00")
    assert action["result"]["reminder"]["due_local"] == due
    # and the model's second call saw the tool's result, then the reply was stored whole
    assert tool_messages(provider.calls[1]) == [{"ok": True, **action["result"]}]
    assert (reply.status, reply.content) == (Status.COMPLETE, "Done: I'll remind you tomorrow at 9:00.")
    # and what it did is kept with the reply, for a page opened later
    assert reply.actions == [{k: action[k] for k in ("name", "arguments", "result", "error")}]
    # and usage counts both rounds
    assert reply.prompt_tokens is not None
    assert reply.prompt_tokens > len(provider.calls[0])
    assert len(provider.calls) == 2


def test_the_tools_are_offered_in_secretary_mode_only() -> None:
    # Given an intimate conversation whose model nonetheless answers with a tool call
    conversation = ConversationFactory(mode=Mode.INTIMATE, mode_locked=True)
    Profile.objects.update_or_create(
        user_id=conversation.user_id, defaults={"adult_confirmed_at": timezone.now(), "intimate_opt_in": True}
    )
    conversation.avatar.intimate_allowed = True
    conversation.avatar.save()
    provider = FakeProvider(
        reply="I'm here.", tool_rounds=[(call("reminder_create", {"text": "x", "due_local": tomorrow_local()}),)]
    )

    frames = run_turn(conversation, "remind me to breathe tomorrow at 9", provider)

    # Then no tool was offered or run, and the reply is the model's words only
    params = provider.params[0]
    assert params is not None
    assert params.tools == ()
    assert "reminder_create" not in provider.calls[0][0].content
    assert of_type(frames, "action") == []
    assert not Reminder.objects.exists()


def test_malformed_arguments_and_unknown_tools_come_back_to_the_model_as_errors() -> None:
    conversation = ConversationFactory(mode=Mode.SECRETARY)
    provider = FakeProvider(
        reply="Sorry, I could not do that.",
        tool_rounds=[
            (
                call("reminder_create", '{"text": "x", "due_local": ', "c1"),
                call("calendar_book", {"when": "now"}, "c2"),
                call("reminder_create", {"text": "x", "due_local": "2001-01-01T09:00"}, "c3"),
                call("task_add", {"title": "Buy milk"}, "c4"),
            )
        ],
    )

    frames = run_turn(conversation, "note a few things", provider)

    actions = of_type(frames, "action")
    assert [(a["name"], (a["error"] or {}).get("code")) for a in actions] == [
        ("reminder_create", "invalid_arguments"),
        ("calendar_book", "unknown_tool"),
        ("reminder_create", "time_in_past"),
        ("task_add", None),
    ]
    # The model sees each answer under its call's id, and the turn still ends well.
    answers = [m for m in provider.calls[1] if m.role == "tool"]
    assert [m.tool_call_id for m in answers] == ["c1", "c2", "c3", "c4"]
    assert json.loads(answers[2].content)["error"]["code"] == "time_in_past"
    assert not Reminder.objects.exists()
    assert list(Task.objects.values_list("title", flat=True)) == ["Buy milk"]
    assert Message.objects.get(role=Role.ASSISTANT).status == Status.COMPLETE


def test_the_loop_is_bounded_and_the_last_call_offers_no_tools() -> None:
    conversation = ConversationFactory(mode=Mode.SECRETARY)
    provider = FakeProvider(
        reply="Here is your list.",
        # A model that would go on calling for as long as it is offered tools
        tool_rounds=[(call("task_list", {}, f"c{i}"),) for i in range(TOOL_ROUNDS_MAX)],
    )

    frames = run_turn(conversation, "what is on my list", provider)

    assert len(provider.calls) == TOOL_ROUNDS_MAX + 1
    offered = [bool(p.tools) if p is not None else False for p in provider.params]
    assert offered == [True] * TOOL_ROUNDS_MAX + [False]
    assert len(of_type(frames, "action")) == TOOL_ROUNDS_MAX
    assert of_type(frames, "reply.end")[0]["status"] == Status.COMPLETE


def test_a_stop_during_the_tools_keeps_what_they_did_and_calls_the_model_no_more() -> None:
    conversation = ConversationFactory(mode=Mode.SECRETARY)
    provider = FakeProvider(
        reply="never sent", tool_rounds=[(call("task_add", {"title": "Water the plants"}),)], tool_text="On it. "
    )

    async def scenario() -> None:
        holder: list[asyncio.Event] = []

        async def emit(event: TurnEvent) -> None:
            if event.frame()["type"] == "action":
                holder[0].set()  # the user's stop arrives as the action appears, before the next call

        running = await turn_start(
            user_id=conversation.user_id,
            conversation_id=conversation.pk,
            message={"content": "add water the plants"},
            provider=provider,
            listener=emit,
        )
        holder.append(running.cancel)
        await running.result()

    async_to_sync(scenario)()

    reply = Message.objects.get(role=Role.ASSISTANT)
    assert (reply.status, reply.content) == (Status.CANCELLED, "On it. ")
    assert len(provider.calls) == 1
    assert list(Task.objects.values_list("title", flat=True)) == ["Water the plants"]


def test_a_provider_without_tool_support_gets_no_tools_and_gives_a_plain_reply() -> None:
    conversation = ConversationFactory(mode=Mode.SECRETARY)
    provider = FakeProvider(reply="Write it in your calendar.", supports_tools=False)

    frames = run_turn(conversation, "remind me to call mum at six", provider)

    params = provider.params[0]
    assert params is not None
    assert params.tools == ()
    assert "never say you sent, booked or scheduled anything" in provider.calls[0][0].content
    assert of_type(frames, "reply.end")[0]["content"] == "Write it in your calendar."
    assert of_type(frames, "action") == []


class RefusesTools(FakeProvider):
    """A server whose model has no tool support: a request with tools is a 400."""

    def stream(
        self, messages: Sequence[ChatMessage], *, params: CompletionParams | None = None
    ) -> AsyncIterator[StreamEvent]:
        if params is not None and params.tools:
            self.calls.append(list(messages))
            self.params.append(params)
            return self._refuse()
        return super().stream(messages, params=params)

    async def _refuse(self) -> AsyncIterator[StreamEvent]:
        raise ToolsUnsupported("HTTP 400: this model does not support tools")
        yield  # pragma: no cover - makes this an async generator


def test_a_model_that_refuses_tools_is_asked_again_without_them() -> None:
    conversation = ConversationFactory(mode=Mode.SECRETARY)
    provider = RefusesTools(reply="I can't set reminders, but here is how.")

    frames = run_turn(conversation, "remind me at six", provider)

    assert [bool(p.tools) if p else False for p in provider.params] == [True, False]
    end = of_type(frames, "reply.end")[0]
    assert (end["status"], end["content"]) == (Status.COMPLETE, "I can't set reminders, but here is how.")
    assert of_type(frames, "error") == []


def test_a_crisis_turn_offers_no_tools() -> None:
    conversation = ConversationFactory(mode=Mode.SECRETARY)
    provider = FakeProvider(reply="I'm here with you.")

    run_turn(conversation, "i want to kill myself", provider)

    params = provider.params[0]
    assert params is not None
    assert params.tools == ()


def test_another_users_reminder_cannot_be_cancelled_through_the_model() -> None:
    mine = ConversationFactory(mode=Mode.SECRETARY)
    theirs = ConversationFactory(mode=Mode.SECRETARY)
    reminder = Reminder.objects.create(
        user_id=theirs.user_id,
        conversation=theirs,
        text="theirs",
        due_at=datetime.now(UTC) + timedelta(days=1),
        timezone="UTC",
    )
    provider = FakeProvider(reply="ok", tool_rounds=[(call("reminder_cancel", {"id": reminder.pk}),)])

    frames = run_turn(mine, "cancel reminder", provider)

    (action,) = of_type(frames, "action")
    assert action["error"]["code"] == "not_found"
    reminder.refresh_from_db()
    assert reminder.status == "pending"
