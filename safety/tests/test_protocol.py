"""The crisis protocol and the AI notice over the websocket, with the fake model from the registry.

"i don't see the point in living anymore" gets the safety frame before reply.start, in either
mode and with the mode locked to intimate; the reply's prompt is the crisis prompt; the user
message is stored with safety "crisis"; intimate mode stays closed until a calm turn.
"""

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User

from accounts.models import Profile
from conversations.models import Conversation, Message, Role
from llm.fake import FakeProvider
from llm.registry import provider_get
from llm.testing import provider_configured
from safety.models import CrisisResource, SafetyDailyCount
from testing.support import ConversationFactory, UserFactory, ws_connect

pytestmark = pytest.mark.django_db(transaction=True)

CRISIS = "i don't see the point in living anymore"
CALM = "thanks, i talked to my sister and i feel a little better"


@pytest.fixture(autouse=True)
def fake_model() -> Iterator[None]:
    with provider_configured("fake"):
        yield


async def turn_over_socket(
    conversation: Conversation, content: str, *, client_id: str | None = None
) -> list[dict[str, Any]]:
    ws = await ws_connect(conversation)
    try:
        frame_out: dict[str, Any] = {"type": "message", "content": content}
        if client_id is not None:
            frame_out["client_id"] = client_id
        await ws.send_to(text_data=json.dumps(frame_out))
        frames: list[dict[str, Any]] = []
        while True:
            frame = json.loads(await ws.receive_from(timeout=10))
            frames.append(frame)
            if frame["type"] == "reply.end":
                return frames
    finally:
        await ws.disconnect()


def conversation_make(*, mode: str = "secretary", locked: bool = False, locale: str = "US") -> Conversation:
    user: User = UserFactory()
    Profile.objects.filter(user=user).update(
        intimate_opt_in=True, adult_confirmed_at=datetime(2024, 1, 1, tzinfo=UTC), locale=locale
    )
    return ConversationFactory(user=user, mode=mode, mode_locked=locked)


def system_prompt_sent() -> str:
    provider = provider_get()
    assert isinstance(provider, FakeProvider)
    return provider.calls[-1][0].content


def types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames if f["type"] != "token"]


@pytest.mark.parametrize(
    ("mode", "locked"),
    [("secretary", False), ("intimate", False), ("intimate", True)],
    ids=["secretary", "intimate", "intimate-locked"],
)
async def test_a_crisis_gets_the_safety_frame_before_the_reply_and_the_crisis_prompt(mode: str, locked: bool) -> None:
    # Given a conversation in the mode (an adult who opted in to intimate mode)
    conversation = await database_sync_to_async(conversation_make)(mode=mode, locked=locked)

    # When the user says they see no point in living
    frames = await turn_over_socket(conversation, CRISIS)

    # Then the safety frame with the US line comes after message.created and before reply.start
    shape = types(frames)
    assert shape.index("safety") < shape.index("reply.start")
    assert shape[0] == "message.created"
    created = frames[0]["message"]
    assert created["safety"] == "crisis"
    safety = next(f for f in frames if f["type"] == "safety")
    assert safety == {
        "type": "safety",
        "kind": "crisis",
        "message_id": created["id"],
        "resources": [
            {
                "name": "988 Suicide & Crisis Lifeline",
                "phone": "988",
                "text": "Text 988",
                "url": "https://988lifeline.org",
            }
        ],
    }
    # And the reply was asked for with the crisis prompt, not the mode's: 988 in it, no intimate rules
    prompt = system_prompt_sent()
    assert "may be thinking about suicide or self-harm" in prompt
    assert "988" in prompt
    assert "## Intimate mode" not in prompt
    assert "## Secretary mode" not in prompt
    # And the reply runs outside intimate mode, which stays closed
    start = next(f for f in frames if f["type"] == "reply.start")
    assert start["mode"] == "secretary"
    stored = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert (stored.safety_state, stored.mode, stored.mode_locked) == ("crisis", "secretary", locked)
    user_message = await database_sync_to_async(Message.objects.get)(conversation=conversation, role=Role.USER)
    assert user_message.safety == "crisis"


async def test_intimate_mode_stays_closed_on_the_calm_turn_after_a_crisis_and_opens_after() -> None:
    conversation = await database_sync_to_async(conversation_make)(mode="intimate")
    await turn_over_socket(conversation, CRISIS)

    # When the next message is calm and asks for intimate mode
    calm = await turn_over_socket(conversation, "/intimate")

    # Then no safety frame, the mode prompt again, intimate still blocked for this turn
    assert "safety" not in types(calm)
    mode = next(f for f in calm if f["type"] == "mode")
    assert (mode["mode"], mode["blocked"], mode["reason"]["code"]) == ("secretary", "intimate", "safety")
    assert "may be thinking about suicide" not in system_prompt_sent()
    stored = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert stored.safety_state == ""

    # And the turn after the calm one may enter intimate mode again
    after = await turn_over_socket(conversation, "/intimate")
    start = next(f for f in after if f["type"] == "reply.start")
    assert start["mode"] == "intimate"


async def set_mode_over_socket(conversation: Conversation, mode: str) -> dict[str, Any]:
    ws = await ws_connect(conversation)
    try:
        await ws.send_to(text_data=json.dumps({"type": "set_mode", "mode": mode}))
        answer: dict[str, Any] = json.loads(await ws.receive_from(timeout=10))
        return answer
    finally:
        await ws.disconnect()


async def test_an_explicit_switch_to_intimate_is_refused_until_a_calm_turn_clears_the_crisis() -> None:
    # Given an intimate conversation, locked, whose last turn was a crisis
    conversation = await database_sync_to_async(conversation_make)(mode="intimate", locked=True)
    await turn_over_socket(conversation, CRISIS)

    # When the user asks for intimate mode with a set_mode frame
    refused = await set_mode_over_socket(conversation, "intimate")

    # Then it is refused like any closed gate, naming the safety reason; nothing changed
    assert (refused["type"], refused["code"], refused["reason"], refused["retryable"]) == (
        "error",
        "intimate_blocked",
        "safety",
        False,
    )
    stored = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert (stored.mode, stored.mode_locked, stored.safety_state) == ("secretary", True, "crisis")

    # And once a calm turn has cleared the state, the same frame switches the mode
    await turn_over_socket(conversation, CALM)
    switched = await set_mode_over_socket(conversation, "intimate")
    assert (switched["type"], switched["mode"], switched["reason"]["source"]) == ("mode", "intimate", "user")


def test_a_patch_to_intimate_during_a_crisis_is_refused_with_the_safety_reason(
    client: Any, bearer_for: Callable[[User], dict[str, str]]
) -> None:
    # Given a conversation the detector flagged, out of intimate mode and unlocked
    conversation = conversation_make(mode="secretary")
    Conversation.objects.filter(pk=conversation.pk).update(safety_state="crisis")

    # When the user patches it to intimate
    response = client.patch(
        f"/api/conversations/{conversation.pk}",
        data=json.dumps({"mode": "intimate"}),
        content_type="application/json",
        headers=bearer_for(conversation.user),
    )

    # Then a 403 with the code and the reason, and the conversation is as it was
    assert response.status_code == 403
    assert (response.json()["code"], response.json()["reason"]) == ("intimate_blocked", "safety")
    conversation.refresh_from_db()
    assert (conversation.mode, conversation.mode_locked) == ("secretary", False)


async def test_a_retried_crisis_message_replays_the_safety_frame_and_counts_one_referral() -> None:
    # Given a crisis message sent with a client_id, answered once
    conversation = await database_sync_to_async(conversation_make)(locale="GB")
    first = await turn_over_socket(conversation, CRISIS, client_id="c-crisis")
    first_safety = next(f for f in first if f["type"] == "safety")

    # When the client sends it again (it never saw the answer)
    again = await turn_over_socket(conversation, CRISIS, client_id="c-crisis")

    # Then the replay carries the safety frame again, after the stored message, before the reply
    assert types(again) == ["message.created", "safety", "reply.end"]
    assert again[0]["message"]["duplicate"] is True
    safety = next(f for f in again if f["type"] == "safety")
    assert safety == first_safety
    assert [(r["name"], r["phone"]) for r in safety["resources"]] == [("Samaritans", "116 123")]
    # And it is one message, one model call, one referral in the operator's counts
    provider = provider_get()
    assert isinstance(provider, FakeProvider)
    assert len(provider.calls) == 1
    user_messages = await database_sync_to_async(Message.objects.filter(role=Role.USER).count)()
    assert user_messages == 1
    counts = await database_sync_to_async(SafetyDailyCount.objects.get)()
    assert (counts.crisis_detections, counts.referrals_shown) == (1, 1)


async def test_a_retried_calm_message_replays_no_safety_frame() -> None:
    conversation = await database_sync_to_async(conversation_make)()
    await turn_over_socket(conversation, CALM, client_id="c-calm")

    again = await turn_over_socket(conversation, CALM, client_id="c-calm")

    assert types(again) == ["message.created", "reply.end"]


async def test_an_ordinary_message_gets_no_safety_frame_and_its_mode_prompt() -> None:
    conversation = await database_sync_to_async(conversation_make)(mode="secretary")

    frames = await turn_over_socket(conversation, "this deadline is killing me, help me plan the week")

    assert "safety" not in types(frames)
    assert frames[0]["message"]["safety"] is None
    assert "## Secretary mode" in system_prompt_sent()


@pytest.mark.parametrize(
    ("locale", "name", "phone"),
    [
        ("US", "988 Suicide & Crisis Lifeline", "988"),
        ("GB", "Samaritans", "116 123"),
        ("IE", "Samaritans", "116 123"),
        ("FR", "3114 Numéro national de prévention du suicide", "3114"),
        ("DE", "TelefonSeelsorge", "0800 111 0 111"),
        ("JP", "988 Suicide & Crisis Lifeline", "988"),  # no line for the locale: the default locale's
    ],
)
async def test_the_resources_follow_the_users_locale(locale: str, name: str, phone: str) -> None:
    conversation = await database_sync_to_async(conversation_make)(locale=locale)

    frames = await turn_over_socket(conversation, "i want to kill myself")

    safety = next(f for f in frames if f["type"] == "safety")
    assert [(r["name"], r["phone"]) for r in safety["resources"]] == [(name, phone)]
    assert phone in system_prompt_sent()


async def test_an_operator_edit_of_the_resources_is_what_the_user_sees() -> None:
    def edit() -> None:
        CrisisResource.objects.filter(locale="GB").update(active=False)
        CrisisResource.objects.create(locale="GB", name="Shout", text="Text SHOUT to 85258", position=1)

    await database_sync_to_async(edit)()
    conversation = await database_sync_to_async(conversation_make)(locale="GB")

    frames = await turn_over_socket(conversation, "i want to kill myself")

    safety = next(f for f in frames if f["type"] == "safety")
    assert safety["resources"] == [{"name": "Shout", "text": "Text SHOUT to 85258"}]


async def test_no_message_text_reaches_the_logs_on_a_crisis(caplog: pytest.LogCaptureFixture) -> None:
    conversation = await database_sync_to_async(conversation_make)()
    secret = "i have decided tonight is the night i kill myself, zanzibar"

    with caplog.at_level(logging.DEBUG):
        await turn_over_socket(conversation, secret)

    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'data', '')}" for r in caplog.records)
    assert "crisis detected" in logged
    for fragment in ("zanzibar", "kill myself", "tonight"):
        assert fragment not in logged


# --- the AI notice ---------------------------------------------------------------------------------


def clock_at(moment: datetime) -> Any:
    return mock.patch("django.utils.timezone.now", return_value=moment)


async def test_the_ai_notice_comes_at_the_start_and_again_after_three_hours_of_use() -> None:
    conversation = await database_sync_to_async(conversation_make)()
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    with clock_at(start):
        first = await turn_over_socket(conversation, "good morning")
    with clock_at(start + timedelta(hours=2, minutes=59)):
        within = await turn_over_socket(conversation, "what should i cook tonight")
    with clock_at(start + timedelta(hours=3)):
        after = await turn_over_socket(conversation, "and for dessert?")

    notice = next(f for f in first if f["type"] == "notice")
    assert notice["kind"] == "ai"
    assert "AI companion, not a person" in notice["text"]
    assert types(first)[:3] == ["message.created", "notice", "reply.start"]
    assert "notice" not in types(within)
    assert "notice" in types(after)
    counts = await database_sync_to_async(SafetyDailyCount.objects.get)(day=start.date())
    assert (counts.notices_shown, counts.crisis_detections, counts.referrals_shown) == (2, 0, 0)


async def test_the_notice_interval_is_configurable(settings: Any) -> None:
    settings.SAFETY_AI_NOTICE_HOURS = 1
    conversation = await database_sync_to_async(conversation_make)()
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    with clock_at(start):
        await turn_over_socket(conversation, "hello")
    with clock_at(start + timedelta(hours=1)):
        later = await turn_over_socket(conversation, "hello again")

    assert "notice" in types(later)


async def test_asked_whether_it_is_human_the_prompt_says_it_is_an_ai() -> None:
    conversation = await database_sync_to_async(conversation_make)(mode="intimate")

    await turn_over_socket(conversation, "are you a real human?")

    prompt = system_prompt_sent()
    assert "you are an AI, not a human" in prompt
    assert "say plainly that you are an AI companion, even mid role-play" in prompt


def test_the_terminal_chat_shows_the_notice_and_the_crisis_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from django.core.management import call_command

    from testing.support import AvatarFactory

    UserFactory(username="terminal")
    AvatarFactory(slug="milo", name="Milo")
    monkeypatch.setattr("sys.stdin", io.StringIO("i want to kill myself\n"))
    out = io.StringIO()

    call_command("chat", "milo", "--user", "terminal", stdout=out, stderr=io.StringIO())

    output = out.getvalue()
    assert "[A reminder: you are talking with an AI companion, not a person." in output
    assert "[You are not alone. Support right now: 988 Suicide & Crisis Lifeline 988 Text 988" in output


async def test_when_the_model_fails_on_a_crisis_the_fallback_gives_the_crisis_line_not_a_quip() -> None:
    from llm.errors import Unavailable

    conversation = await database_sync_to_async(conversation_make)(mode="intimate")
    provider = provider_get()
    assert isinstance(provider, FakeProvider)
    provider.error = Unavailable("down")

    frames = await turn_over_socket(conversation, CRISIS)

    end = frames[-1]
    assert end["status"] == "fallback"
    assert end["content"] == (
        "I can't answer properly right now, but I don't want you to be alone with this. Please reach out to someone "
        "now: 988 Suicide & Crisis Lifeline: call 988, Text 988, https://988lifeline.org. If you are in immediate "
        "danger, call your local emergency number."
    )
