"""`manage.py chat`: a terminal conversation, replies streamed, mode switches shown with their reason."""

import io
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Profile
from conversations.models import Conversation, Message, Role
from llm.testing import provider_configured
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
