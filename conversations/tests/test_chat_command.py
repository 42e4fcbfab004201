"""`manage.py chat`: a terminal conversation, replies streamed, mode switches shown with their reason."""

import io
import json
from collections.abc import Iterator
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import Profile
from conversations.management.commands.chat import action_line
from conversations.models import Conversation, Message, Role
from llm.base import ToolCall
from llm.fake import FakeProvider
from llm.testing import provider_configured
from secretary.models import Reminder
from testing.support import AvatarFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fake_model() -> Iterator[None]:
    with provider_configured("llm.fake.FakeProvider"):
        yield


def chat(monkeypatch: pytest.MonkeyPatch, lines: str, *args: str) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    # Memory work has its own tests; here it would only contend for the in-memory test database.
    monkeypatch.setattr("conversations.turns.run.conversation_memory_schedule", lambda **_: None)
    out = io.StringIO()
    call_command("chat", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_a_terminal_chat_streams_replies_and_explains_mode_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    user = UserFactory(username="terminal")
    Profile.objects.filter(user=user).update(adult_confirmed_at="2024-01-01T00:00:00Z", intimate_opt_in=True)
    AvatarFactory(slug="milo", name="Milo", first_message="Hey you.")

    output = chat(
        monkeypatch,
        "remind me to call mom at 5pm tomorrow\ni miss you so much tonight\n",
        "milo",
        "--user",
        "terminal",
    )

    assert "Milo> Hey you." in output
    assert output.count("Milo> Hello from the fake model.") == 2
    assert "[mode secretary → intimate (intent: 'i miss you'" in output
    conversation = Conversation.objects.get(user=user)
    assert conversation.mode == "intimate"
    assert list(Message.objects.filter(conversation=conversation, role=Role.USER).values_list("mode", flat=True)) == [
        "secretary",
        "intimate",
    ]


def test_an_unknown_avatar_or_user_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    UserFactory(username="terminal")
    AvatarFactory(slug="ada")

    with pytest.raises(CommandError, match=r"No avatar 'nobody'.*Catalogue: ada"):
        chat(monkeypatch, "", "nobody", "--user", "terminal")
    with pytest.raises(CommandError, match="No user 'ghost'"):
        chat(monkeypatch, "", "ada", "--user", "ghost")
    assert not Conversation.objects.exists()


def test_what_the_secretary_did_is_a_line_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a model that sets a reminder, then tries one in the past, then answers in words
    user = UserFactory(username="terminal")
    AvatarFactory(slug="ada", name="Ada", first_message="Hello.")
    tomorrow = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT09:00")
    provider = FakeProvider(
        reply="Both noted.",
        tool_text="On it.",
        tool_rounds=[
            (
                ToolCall(
                    id="c1", name="reminder_create", arguments=json.dumps({"text": "Stretch", "due_local": tomorrow})
                ),
            ),
            (
                ToolCall(
                    id="c2",
                    name="reminder_create",
                    arguments=json.dumps({"text": "Old", "due_local": "2001-01-01T09:00"}),
                ),
            ),
        ],
    )
    monkeypatch.setattr("conversations.management.commands.chat.provider_get", lambda: provider)

    # When the user asks for it in the terminal
    output = chat(monkeypatch, "remind me to stretch tomorrow at 9\n", "ada", "--user", "terminal")

    # Then each action is a line between the words, the reminder exists once, the old one not at all
    reminder = Reminder.objects.get(user=user)
    local = timezone.localtime(reminder.due_at, ZoneInfo("UTC"))
    shown = f"{local:%a} {local.day} {local:%b %H:%M}"  # the user's zone: UTC by default
    assert f"Ada> On it.\n✓ Reminder set for {shown}\n" in output
    assert "\n✗ Could not set the reminder: " in output
    assert "\nAda> Both noted.\n" in output
    assert Reminder.objects.count() == 1


def test_an_action_frame_reads_as_a_short_line() -> None:
    assert action_line(
        {"name": "task_add", "result": {"confirmation": "Added to your list: Buy milk"}, "error": None}
    ) == ("✓ Added to your list: Buy milk")
    assert action_line(
        {
            "name": "reminder_create",
            "result": None,
            "error": {"code": "time_in_past", "message": "That time has passed."},
        }
    ) == ("✗ Could not set the reminder: That time has passed.")
    assert action_line({"name": "task_list", "result": {"tasks": [], "count": 2}, "error": None}) == (
        "✓ Looked at your list (2 items)"
    )
