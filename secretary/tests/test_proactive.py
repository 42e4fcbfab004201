"""Proactive check-ins: who gets one, when, and never twice."""

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from accounts.models import Profile
from conversations.models import Conversation, Message, Origin, Role
from llm.fake import FakeProvider
from memory.models import Memory, Summary
from secretary.proactive import checkin_send, proactive_candidates_list, proactive_sweep
from testing.support import AvatarFactory, ConversationFactory, MessageFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

ZONE = "America/New_York"


def silent_conversation(*, opt_in: bool = True, hours: float = 25, **avatar: Any) -> Conversation:
    """A conversation whose last message, the avatar's reply, is `hours` old."""
    user = UserFactory()
    Profile.objects.filter(user=user).update(proactive_opt_in=opt_in, timezone=ZONE)
    conversation = ConversationFactory(user=user, avatar=AvatarFactory(proactive_after_hours=24, **avatar))
    MessageFactory(conversation=conversation, role=Role.USER, content="Talk tomorrow!", origin=Origin.USER)
    MessageFactory(conversation=conversation, role=Role.ASSISTANT, content="Sleep well.")
    Conversation.objects.filter(pk=conversation.pk).update(last_message_at=timezone.now() - timedelta(hours=hours))
    return conversation


def sweep(provider: FakeProvider | None = None) -> int:
    sent: int = async_to_sync(proactive_sweep)(provider=provider or FakeProvider(reply="How did the interview go?"))
    return sent


def checkins() -> list[Message]:
    return list(Message.objects.filter(origin=Origin.PROACTIVE))


def test_a_silent_conversation_of_a_user_who_opted_in_gets_one_check_in_and_no_second() -> None:
    # Given a user who opted in, silent for 25 hours (the avatar waits 24), with a summary and a fact
    conversation = silent_conversation()
    last = Message.objects.filter(conversation=conversation).order_by("-id").first()
    assert last is not None
    Summary.objects.create(conversation=conversation, text="Sam had a job interview on Monday.", covers_until=last)
    Memory.objects.create(user=conversation.user, avatar=conversation.avatar, key="pet", text="Sam has a cat, Miso.")
    provider = FakeProvider(reply="How did the interview go?")

    # When the sweep runs twice
    first, second = sweep(provider), sweep(provider)

    # Then one check-in, in the conversation's mode, written from the summary and the facts
    assert (first, second) == (1, 0)
    (message,) = checkins()
    assert (message.conversation_id, message.role, message.content, message.mode) == (
        conversation.pk,
        Role.ASSISTANT,
        "How did the interview go?",
        conversation.mode,
    )
    assert message.reminder_id is None
    brief = provider.calls[0][-1].content
    assert "job interview on Monday" in brief
    assert "Sam has a cat, Miso." in brief
    conversation.refresh_from_db()
    assert conversation.message_count == 1


def test_a_user_who_did_not_opt_in_gets_none() -> None:
    silent_conversation(opt_in=False)

    assert sweep() == 0
    assert checkins() == []


def test_an_avatar_that_does_not_check_in_sends_none() -> None:
    silent_conversation(proactive_enabled=False)

    assert sweep() == 0
    assert checkins() == []


def test_a_conversation_silent_for_less_than_the_avatars_hours_gets_none() -> None:
    silent_conversation(hours=23)

    assert sweep() == 0
    assert checkins() == []


def test_none_during_the_users_quiet_hours_in_their_own_zone() -> None:
    # Given quiet hours around the user's current local time (in New York, not UTC)
    conversation = silent_conversation()
    local = timezone.now().astimezone(ZoneInfo(ZONE))
    start, end = ((local - timedelta(hours=1)).time(), (local + timedelta(hours=1)).time())
    Profile.objects.filter(user=conversation.user).update(quiet_hours_start=start, quiet_hours_end=end)

    assert sweep() == 0
    assert checkins() == []

    # And when the quiet hours end, it is sent
    Profile.objects.filter(user=conversation.user).update(
        quiet_hours_start=(local + timedelta(hours=1)).time(), quiet_hours_end=(local + timedelta(hours=2)).time()
    )
    assert sweep() == 1


def test_no_more_than_the_avatars_daily_check_ins_in_the_users_local_day() -> None:
    # Given a check-in earlier today (local), answered by the user, then a new silence
    conversation = silent_conversation(hours=3, proactive_max_per_day=1)
    local_now = timezone.now().astimezone(ZoneInfo(ZONE))
    earlier = max(
        datetime.combine(local_now.date(), time(0, 1), tzinfo=local_now.tzinfo), local_now - timedelta(hours=5)
    )
    checkin = MessageFactory(conversation=conversation, role=Role.ASSISTANT, origin=Origin.PROACTIVE)
    Message.objects.filter(pk=checkin.pk).update(created_at=earlier)
    MessageFactory(conversation=conversation, role=Role.USER, origin=Origin.USER, content="All good, thanks!")
    Conversation.objects.filter(pk=conversation.pk).update(last_message_at=timezone.now() - timedelta(hours=25))

    # When the sweep runs: the limit of one a day is reached
    assert sweep() == 0
    assert len(checkins()) == 1

    # Then an avatar that allows two sends the second
    conversation.avatar.proactive_max_per_day = 2
    conversation.avatar.save()
    assert sweep() == 1
    assert len(checkins()) == 2


def test_two_sweeps_that_read_the_same_silence_send_one_check_in() -> None:
    # Given two sweeps that both found the conversation due
    silent_conversation()
    (seen_by_first,) = proactive_candidates_list(now=timezone.now())
    (seen_by_second,) = proactive_candidates_list(now=timezone.now())
    provider = FakeProvider(reply="Hi there!")

    # When both send
    first = async_to_sync(checkin_send)(seen_by_first, provider=provider)
    second = async_to_sync(checkin_send)(seen_by_second, provider=provider)

    # Then the second finds the conversation changed since it read it, and stores nothing
    assert first is not None
    assert second is None
    assert [m.pk for m in checkins()] == [first]


def test_a_users_message_after_the_sweep_read_the_conversation_cancels_the_check_in() -> None:
    conversation = silent_conversation()
    (due,) = proactive_candidates_list(now=timezone.now())
    Conversation.objects.filter(pk=conversation.pk).update(last_message_at=timezone.now())  # the user just wrote

    assert async_to_sync(checkin_send)(due, provider=FakeProvider()) is None
    assert checkins() == []
