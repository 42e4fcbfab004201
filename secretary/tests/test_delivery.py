"""Reminder delivery through the turn's door: one message per due reminder, exactly once.

Real transactions (the delivery's database work runs on threads of its own); the model is
`llm.fake.FakeProvider`. The concurrency test needs PostgreSQL (row locks): it skips
without it, and fails in CI.
"""

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.db import connection
from django.test import Client
from django.utils import timezone

from avatars.models import Avatar
from conversations.models import Conversation, Message, Origin, Role, Status
from core.push import PushPayload
from llm.errors import NotConfigured, Unavailable
from llm.fake import FakeProvider
from llm.models import UsageAvatarDay
from secretary.delivery import reminder_deliver, reminder_sent_mark, reminders_claim_due, reminders_deliver_due
from secretary.models import Reminder, ReminderStatus
from secretary.services import reminder_cancel
from testing.support import ConversationFactory, skip_or_fail, ws_connect, ws_receive_until

pytestmark = pytest.mark.django_db(transaction=True)

PARIS = ZoneInfo("Europe/Paris")
pushed: list[PushPayload] = []


def record_push(payload: PushPayload) -> None:
    """A PUSH_BACKEND for the tests: remembers what it was given."""
    pushed.append(payload)


def reminder_make(conversation: Conversation, **fields: Any) -> Reminder:
    values: dict[str, Any] = {
        "text": "call mum",
        "due_at": timezone.now() - timedelta(seconds=5),
        "timezone": "Europe/Paris",
        **fields,
    }
    return Reminder.objects.create(user=conversation.user, conversation=conversation, **values)


def deliver(provider: FakeProvider | None = None, *, now: datetime | None = None) -> Any:
    clock = (lambda: now) if now is not None else timezone.now
    return async_to_sync(reminders_deliver_due)(
        provider=provider or FakeProvider(reply="Time to call your mum!"), clock=clock
    )


def conversation_with_greeting() -> Conversation:
    conversation = ConversationFactory()
    greeting = Message.objects.create(
        conversation=conversation, role=Role.ASSISTANT, content="Hello!", mode="secretary", origin=Origin.GREETING
    )
    Conversation.objects.filter(pk=conversation.pk).update(last_read_message_id=greeting.pk, message_count=1)
    conversation.refresh_from_db()
    return conversation


async def test_a_due_reminder_sends_one_message_to_every_socket_and_counts_as_unread(
    settings: Any, bearer_for: Any
) -> None:
    # Given a conversation read up to its greeting, two sockets of its user, and a reminder due 5 s ago
    settings.PUSH_BACKEND = "secretary.tests.test_delivery.record_push"
    pushed.clear()
    conversation = await database_sync_to_async(conversation_with_greeting)()
    reminder = await database_sync_to_async(reminder_make)(conversation)
    phone, laptop = await ws_connect(conversation), await ws_connect(conversation)
    provider = FakeProvider(reply="Time to call your mum!")

    try:
        # When the deliverer runs
        report = await reminders_deliver_due(provider=provider)

        # Then both sockets get the same message.created
        frames = [(await ws_receive_until(socket, "message.created"))[-1] for socket in (phone, laptop)]
    finally:
        await phone.disconnect()
        await laptop.disconnect()
    assert frames[0] == frames[1]
    sent = frames[0]["message"]
    assert (sent["origin"], sent["reminder_id"], sent["role"], sent["status"]) == (
        "reminder",
        reminder.pk,
        "assistant",
        "complete",
    )
    assert (sent["content"], sent["late"]) == ("Time to call your mum!", False)
    assert report.delivered == 1
    assert report.message_ids == [sent["id"]]
    # And exactly one message is stored, the reminder is sent, the model was asked once
    stored = await database_sync_to_async(lambda: list(Message.objects.filter(reminder=reminder)))()
    assert [m.pk for m in stored] == [sent["id"]]
    reminder = await database_sync_to_async(Reminder.objects.get)(pk=reminder.pk)
    assert (reminder.status, reminder.sent_count, reminder.claim_token, reminder.claimed_until) == (
        ReminderStatus.SENT,
        1,
        None,
        None,
    )
    assert provider.completed == 1
    assert "call mum" in provider.calls[0][-1].content
    # And the conversation counts it, and the user sees one unread message
    client = Client()
    headers = await database_sync_to_async(bearer_for)(conversation.user)
    answer = await database_sync_to_async(client.get)(f"/api/conversations/{conversation.pk}", headers=headers)
    assert (answer.json()["unread"], answer.json()["message_count"]) == (1, 2)
    # And the push hook got it, once, with a preview
    for _ in range(200):  # the push runs on its own thread: at most 2 s
        if pushed:
            break
        await asyncio.sleep(0.01)
    assert pushed == [
        PushPayload(
            user_id=conversation.user_id,
            conversation_id=conversation.pk,
            message_id=sent["id"],
            origin="reminder",
            preview="Time to call your mum!",
        )
    ]
    # And a second run sends nothing more
    assert (await reminders_deliver_due(provider=provider)).claimed == 0


@pytest.mark.parametrize(
    ("friday_due", "monday_due"),
    [
        # Paris goes to summer time on Sunday 29 March 2026: 9:00 is 08:00 UTC, then 07:00 UTC
        (datetime(2026, 3, 27, 8, 0, tzinfo=UTC), datetime(2026, 3, 30, 7, 0, tzinfo=UTC)),
        # and back to winter time on Sunday 25 October 2026: 9:00 is 07:00 UTC, then 08:00 UTC
        (datetime(2026, 10, 23, 7, 0, tzinfo=UTC), datetime(2026, 10, 26, 8, 0, tzinfo=UTC)),
    ],
)
def test_a_weekday_reminder_moves_to_next_monday_at_nine_paris_time_across_the_dst_change(
    friday_due: datetime, monday_due: datetime
) -> None:
    # Given a reminder every weekday at 9:00 in Paris, due on a Friday
    conversation = ConversationFactory()
    reminder = reminder_make(conversation, due_at=friday_due, recurrence="weekdays")

    # When it is delivered on time
    report = deliver(now=friday_due + timedelta(seconds=2))

    # Then one message, not late, and the reminder waits for Monday 9:00 Paris time
    assert report.delivered == 1
    message = Message.objects.get(reminder=reminder)
    assert message.late is False
    reminder.refresh_from_db()
    assert (reminder.status, reminder.due_at, reminder.sent_count, reminder.attempts, reminder.claim_token) == (
        ReminderStatus.PENDING,
        monday_due,
        1,
        0,
        None,
    )
    assert reminder.due_at.astimezone(PARIS).strftime("%a %H:%M") == "Mon 09:00"


def test_a_reminder_cancelled_before_its_time_is_not_sent() -> None:
    # Given a reminder due in a moment, cancelled by its user
    conversation = ConversationFactory()
    reminder = reminder_make(conversation, due_at=timezone.now() + timedelta(seconds=30))
    reminder_cancel(user_id=conversation.user_id, reminder_id=reminder.pk)

    # When the deliverer runs after its time
    report = deliver(now=timezone.now() + timedelta(seconds=40))

    # Then nothing was claimed nor sent
    assert report.claimed == 0
    assert not Message.objects.exists()
    reminder.refresh_from_db()
    assert (reminder.status, reminder.sent_count) == (ReminderStatus.CANCELLED, 0)


def test_a_reminder_cancelled_between_its_claim_and_its_message_is_not_sent() -> None:
    # Given a claimed reminder that is then cancelled (the user erased their account meanwhile)
    conversation = conversation_with_greeting()
    reminder = reminder_make(conversation)
    (claim,) = reminders_claim_due(now=timezone.now(), limit=10)
    Reminder.objects.filter(pk=reminder.pk).update(status=ReminderStatus.CANCELLED)
    provider = FakeProvider(reply="Time to call your mum!")

    # When its delivery goes on
    delivered = async_to_sync(reminder_deliver)(claim, provider=provider)

    # Then no message is stored, the conversation is untouched, and the reminder stays cancelled
    assert delivered is None
    assert list(Message.objects.values_list("origin", flat=True)) == [Origin.GREETING]
    conversation.refresh_from_db()
    assert conversation.message_count == 1
    reminder.refresh_from_db()
    assert (reminder.status, reminder.sent_count) == (ReminderStatus.CANCELLED, 0)


def test_a_claim_whose_worker_died_is_taken_over_and_sent_once() -> None:
    # Given a reminder claimed by a worker that then died (its claim never spent)
    conversation = ConversationFactory()
    reminder = reminder_make(conversation)
    now = timezone.now()
    (stale,) = reminders_claim_due(now=now, limit=10)
    # While the claim holds, nobody else takes it
    assert reminders_claim_due(now=now + timedelta(seconds=30), limit=10) == []

    # When its lease has expired and the next run comes
    report = deliver(now=now + timedelta(seconds=61))

    # Then it is sent once, under a new claim
    assert (report.claimed, report.delivered) == (1, 1)
    reminder.refresh_from_db()
    assert (reminder.status, reminder.sent_count, reminder.attempts) == (ReminderStatus.SENT, 1, 2)
    # And the dead worker's claim, should it wake up, spends nothing and stores nothing
    assert reminder_sent_mark(stale, now=timezone.now()) is False
    assert async_to_sync(reminder_deliver)(stale, provider=FakeProvider()) is None
    assert Message.objects.filter(reminder=reminder).count() == 1
    reminder.refresh_from_db()
    assert reminder.sent_count == 1


def test_after_a_restart_overdue_reminders_are_sent_once_and_marked_late() -> None:
    # Given, after the server was down for hours: a one-off reminder due 3 hours ago, a daily one
    # due two days ago, and one whose delivery was cut off by the shutdown (claimed, lease expired)
    conversation = ConversationFactory()
    now = timezone.now().replace(second=0, microsecond=0)  # as reminders are set: to the minute
    one_off = reminder_make(conversation, due_at=now - timedelta(hours=3))
    daily = reminder_make(conversation, text="water the plants", due_at=now - timedelta(days=2), recurrence="daily")
    cut_off = reminder_make(
        conversation,
        text="stretch",
        due_at=now - timedelta(hours=1),
        status=ReminderStatus.SENDING,
        claimed_until=now - timedelta(minutes=50),
        attempts=1,
    )

    # When the server starts again and the deliverer runs, twice
    first = deliver(FakeProvider(error=Unavailable("down")))
    second = deliver()

    # Then each is sent once, late, with the fallback text saying when it was due
    assert (first.delivered, second.claimed) == (3, 0)
    messages = {m.reminder_id: m for m in Message.objects.all()}
    assert set(messages) == {one_off.pk, daily.pk, cut_off.pk}
    assert all(m.late for m in messages.values())
    assert messages[one_off.pk].content.startswith("Reminder (due ")
    assert messages[one_off.pk].content.endswith("): call mum")
    # And the daily one waits for its next time, after now, at the same wall-clock time
    daily.refresh_from_db()
    assert daily.status == ReminderStatus.PENDING
    assert now < daily.due_at <= now + timedelta(days=1)
    assert daily.due_at.astimezone(PARIS).time() == (now - timedelta(days=2)).astimezone(PARIS).time()


@pytest.mark.parametrize(
    "provider",
    [
        FakeProvider(error=Unavailable("the model is down")),
        FakeProvider(error=NotConfigured("no key")),
        FakeProvider(reply="   "),
        FakeProvider(delay=5.0),  # slower than SCHEDULED_MODEL_TIMEOUT
    ],
    ids=["down", "not-configured", "empty", "too-slow"],
)
def test_when_the_model_cannot_write_it_the_reminder_goes_out_with_the_fallback_text(
    provider: FakeProvider, settings: Any
) -> None:
    settings.SCHEDULED_MODEL_TIMEOUT = 0.2
    conversation = ConversationFactory()
    reminder = reminder_make(conversation)

    report = deliver(provider)

    assert report.delivered == 1
    message = Message.objects.get()
    assert (message.content, message.status, message.finish_reason, message.model) == (
        "Reminder: call mum",
        Status.COMPLETE,
        "fallback",
        "",
    )
    assert (message.origin, message.reminder_id, message.late) == (Origin.REMINDER, reminder.pk, False)


def test_a_reminder_that_keeps_failing_is_given_up_and_left_for_the_admin(settings: Any) -> None:
    # Given a reminder whose deliveries were claimed and lost as often as allowed
    settings.REMINDER_ATTEMPTS_MAX = 3
    conversation = ConversationFactory()
    now = timezone.now()
    reminder = reminder_make(
        conversation, status=ReminderStatus.SENDING, claimed_until=now - timedelta(seconds=1), attempts=3
    )

    # When the deliverer runs
    report = deliver(now=now)

    # Then it is not claimed again: it stays visible as "sending", attempts 3
    assert report.claimed == 0
    assert not Message.objects.exists()
    reminder.refresh_from_db()
    assert (reminder.status, reminder.attempts) == (ReminderStatus.SENDING, 3)


def test_two_deliverers_at_once_send_one_message_per_reminder(settings: Any) -> None:
    if connection.vendor != "postgresql":
        skip_or_fail("DATABASE_URL is not PostgreSQL: concurrent claims need row locks")
    # Given 30 due reminders, small claim batches, and a model that takes a moment
    settings.REMINDER_DELIVERY_BATCH = 4
    conversations = [ConversationFactory() for _ in range(3)]
    reminders = [reminder_make(conversations[i % 3], text=f"thing {i}") for i in range(30)]
    provider = FakeProvider(reply="Here is your reminder.", delay=0.02)
    start = threading.Barrier(2)
    reports: list[Any] = []
    errors: list[BaseException] = []

    def deliverer() -> None:
        try:
            start.wait(timeout=10)
            reports.append(deliver(provider))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    # When two deliverers run at the same moment
    threads = [threading.Thread(target=deliverer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    # Then every reminder has exactly one message
    assert errors == []
    per_reminder = sorted(Message.objects.values_list("reminder_id", flat=True))
    assert per_reminder == sorted(r.pk for r in reminders)
    assert sum(r.delivered for r in reports) == 30
    assert set(Reminder.objects.values_list("status", "sent_count")) == {(ReminderStatus.SENT, 1)}


def test_a_reminder_from_an_avatar_whose_daily_limit_on_the_user_is_spent_goes_out_with_the_fallback_text() -> None:
    # Given an avatar that limits each user to 1,000 tokens a day, all spent by this user today
    conversation = ConversationFactory()
    Avatar.objects.filter(pk=conversation.avatar_id).update(quota_daily_tokens=1_000, updated_at=timezone.now())
    conversation.refresh_from_db()
    UsageAvatarDay.objects.create(
        user=conversation.user, avatar_id=conversation.avatar_id, day=timezone.now().date(), tokens=1_000
    )
    reminder = reminder_make(conversation)
    provider = FakeProvider(reply="Time to call your mum!")

    report = deliver(provider)

    # Then the reminder is delivered, written without the model, and nothing more is spent
    assert report.delivered == 1
    assert provider.calls == []
    message = Message.objects.get(reminder=reminder)
    assert (message.content, message.finish_reason) == ("Reminder: call mum", "fallback")
    assert UsageAvatarDay.objects.get(user=conversation.user).tokens == 1_000
