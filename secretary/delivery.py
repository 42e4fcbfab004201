"""Reminder delivery, exactly once: claim the due reminders, then send each through the turn's door.

    reminders_deliver_due(provider)                 the Celery task every 2 s (REDIS_URL), or the
      reminders_claim_due   (one short transaction)  in-process ticker every second (secretary/ticker.py)
        pending and due, or "sending" with an expired claim (its deliverer died): locked with
        SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL (SQLite serialises writers: plain),
        set "sending" under a new claim_token until now + REMINDER_CLAIM_LEASE_SECONDS,
        attempts + 1
      reminder_deliver, per claim                   turn_start(ScheduledMessage(origin="reminder"))
        commit = reminder_sent_mark                  in the message's own transaction:
          UPDATE ... WHERE id = ? AND claim_token = ? AND status = 'sending'
          one row: "sent" (one-off) or pending at its next occurrence (recurring), sent_count + 1
          no row (cancelled, deleted, or the claim was taken over): no message is stored

So two beats, two workers or a redelivered task never send twice: whoever claims second
finds nothing due, and a deliverer whose claim expired and was taken over finds its token
gone when it commits. A deliverer that dies leaves its claim to expire; the next run takes
it over. After REMINDER_ATTEMPTS_MAX claims without a delivery a reminder is no longer
claimed: it stays "sending" with its attempts in the admin, whose "release" action makes
it pending again.

A reminder is sent at its time even in the user's quiet hours: the user chose that time.
Only check-ins (secretary/proactive.py) respect quiet hours.

A reminder delivered more than `LATE_AFTER` after its time (the server was down, a
backlog) is marked late on its message (`late: true`): a recurring one is sent once, not
once per missed occurrence, and moves on to its next occurrence after now.
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from conversations.turns import turn_start
from conversations.turns.request import ScheduledMessage
from core.timezones import zone_get
from llm.base import LLMProvider
from secretary.clock import occurrence_next, time_display
from secretary.models import Reminder, ReminderStatus

logger = logging.getLogger("companion.secretary")

LATE_AFTER = timedelta(minutes=1)
ROUNDS_MAX = 100  # claim batches per run: a run ends, and the next one carries on

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class ReminderClaim:
    """A reminder claimed for delivery: what the message needs, and the token that proves the claim."""

    reminder_id: int
    user_id: int
    conversation_id: int
    text: str
    due_at: datetime
    timezone: str
    recurrence: str
    token: uuid.UUID
    attempts: int

    def late_at(self, now: datetime) -> bool:
        return now - self.due_at > LATE_AFTER


@dataclass(slots=True)
class DeliveryReport:
    claimed: int = 0
    delivered: int = 0  # messages stored
    refused: int = 0  # commit found the claim gone (cancelled, deleted, taken over)
    failed: int = 0  # an error: the claim expires and is taken over
    message_ids: list[int] = field(default_factory=list)


def reminders_claim_due(*, now: datetime, limit: int) -> list[ReminderClaim]:
    """Claim up to `limit` due reminders (oldest first) in one short transaction."""
    lease = timedelta(seconds=float(getattr(settings, "REMINDER_CLAIM_LEASE_SECONDS", 60)))
    attempts_max = int(getattr(settings, "REMINDER_ATTEMPTS_MAX", 5))
    due = Q(status=ReminderStatus.PENDING, due_at__lte=now) | Q(
        status=ReminderStatus.SENDING, claimed_until__lt=now, attempts__lt=attempts_max
    )
    token = uuid.uuid4()
    with transaction.atomic():
        # SKIP LOCKED: two deliverers at once each take other rows instead of waiting for each
        # other. SQLite has no row locks (Django drops the clause): its writers take turns.
        rows = list(
            Reminder.objects.select_for_update(skip_locked=True)
            .filter(due)
            .order_by("due_at", "id")
            .values_list("id", "user_id", "conversation_id", "text", "due_at", "timezone", "recurrence", "attempts")[
                :limit
            ]
        )
        if not rows:
            return []
        Reminder.objects.filter(pk__in=[row[0] for row in rows]).update(
            status=ReminderStatus.SENDING, claim_token=token, claimed_until=now + lease, attempts=F("attempts") + 1
        )
    return [
        ReminderClaim(
            reminder_id=pk,
            user_id=user_id,
            conversation_id=conversation_id,
            text=text,
            due_at=due_at,
            timezone=zone,
            recurrence=recurrence,
            token=token,
            attempts=attempts + 1,
        )
        for pk, user_id, conversation_id, text, due_at, zone, recurrence, attempts in rows
    ]


def reminder_sent_mark(claim: ReminderClaim, *, now: datetime) -> bool:
    """Spend the claim: "sent", or pending at the next occurrence; False when the claim is gone.

    A compare-and-set on the claim's token and status: called inside the transaction that
    stores the reminder's message, whose rollback undoes it (and the other way round).
    """
    next_due = occurrence_next(
        due_at=claim.due_at, zone_name=claim.timezone, recurrence=claim.recurrence, after=max(now, claim.due_at)
    )
    fields: dict[str, Any] = (
        {"status": ReminderStatus.SENT}
        if next_due is None
        else {"status": ReminderStatus.PENDING, "due_at": next_due, "attempts": 0}
    )
    updated = Reminder.objects.filter(
        pk=claim.reminder_id, claim_token=claim.token, status=ReminderStatus.SENDING
    ).update(
        claim_token=None,
        claimed_until=None,
        sent_count=F("sent_count") + 1,
        last_sent_at=now,
        updated_at=now,
        **fields,
    )
    return updated == 1


async def reminders_deliver_due(*, provider: LLMProvider, clock: Clock = timezone.now) -> DeliveryReport:
    """Claim and deliver every due reminder, a batch at a time, a few at once."""
    batch = int(getattr(settings, "REMINDER_DELIVERY_BATCH", 100))
    report = DeliveryReport()
    for _ in range(ROUNDS_MAX):
        claims = await _on_database_thread(reminders_claim_due, now=clock(), limit=batch)
        report.claimed += len(claims)
        deliveries = [partial(reminder_deliver, claim, provider=provider, clock=clock) for claim in claims]
        for claim, outcome in zip(claims, await gather_bounded(deliveries), strict=True):
            if isinstance(outcome, BaseException):
                report.failed += 1
                _failure_log(claim, outcome)
            elif outcome is None:
                report.refused += 1
            else:
                report.delivered += 1
                report.message_ids.append(outcome)
        if len(claims) < batch:
            break
    return report


async def reminder_deliver(claim: ReminderClaim, *, provider: LLMProvider, clock: Clock = timezone.now) -> int | None:
    """Send one claimed reminder through the turn's door; the stored message's id, or None
    when the claim was gone by the time it was to be stored."""
    late = claim.late_at(clock())
    message = ScheduledMessage(
        origin="reminder",
        user_id=claim.user_id,
        conversation_id=claim.conversation_id,
        brief=reminder_brief(claim, late=late),
        fallback=reminder_fallback(claim, late=late),
        commit=lambda _message_id: reminder_sent_mark(claim, now=clock()),
        reminder_id=claim.reminder_id,
        late=late,
    )
    running = await turn_start(
        user_id=claim.user_id, conversation_id=claim.conversation_id, message=message, provider=provider
    )
    stored = (await running.result()).assistant_message
    return int(stored["id"]) if stored else None


def reminder_brief(claim: ReminderClaim, *, late: bool) -> str:
    """What the model is told the reminder is about (the user's own words, as data)."""
    due = _due_display(claim)
    brief = f"Reminder set by the user for {due} ({claim.timezone}): {claim.text}"
    if late:
        brief += f"\nIt is being sent late (it was due at {due}): mention that briefly."
    return brief


def reminder_fallback(claim: ReminderClaim, *, late: bool) -> str:
    """The text stored when the model cannot write the reminder."""
    if late:
        return f"Reminder (due {_due_display(claim)}): {claim.text}"
    return f"Reminder: {claim.text}"


def _due_display(claim: ReminderClaim) -> str:
    return time_display(claim.due_at.astimezone(zone_get(claim.timezone)))


def _failure_log(claim: ReminderClaim, error: BaseException) -> None:
    attempts_max = int(getattr(settings, "REMINDER_ATTEMPTS_MAX", 5))
    data = {"reminder_id": claim.reminder_id, "attempts": claim.attempts, "error": type(error).__name__}
    if claim.attempts >= attempts_max:
        logger.error("reminder delivery gave up; release it in the admin", extra={"data": data})
    else:
        logger.warning("reminder delivery failed; retried when its claim expires", extra={"data": data}, exc_info=error)


_T = TypeVar("_T")


async def gather_bounded(calls: Iterable[Callable[[], Awaitable[_T]]]) -> list[_T | BaseException]:
    """Run the calls, at most SCHEDULED_CONCURRENCY at once; each one's result or exception, in order."""
    limit = asyncio.Semaphore(int(getattr(settings, "SCHEDULED_CONCURRENCY", 8)))

    async def bounded(call: Callable[[], Awaitable[_T]]) -> _T:
        async with limit:
            return await call()

    return await asyncio.gather(*(bounded(call) for call in calls), return_exceptions=True)


async def _on_database_thread(function: Callable[..., _T], **kwargs: Any) -> _T:
    result: _T = await database_sync_to_async(function, thread_sensitive=False)(**kwargs)
    return result
