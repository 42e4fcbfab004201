"""Proactive check-ins: after a silence, the avatar writes first, to users who allowed it.

`proactive_sweep` runs every minute (Celery beat with REDIS_URL, the in-process ticker
without). A conversation gets a check-in when all of these hold:

- the user opted in (`Profile.proactive_opt_in`) and the avatar allows it
  (`Avatar.proactive_enabled`, `proactive_max_per_day` above 0);
- its last message is older than the avatar's `proactive_after_hours`;
- its last message is not a check-in already: one unanswered check-in is the last, until
  the user writes again;
- the conversation is calm (no crisis in progress: docs/safety.md);
- the user's local time (their `Profile.timezone`) is outside their quiet hours. Quiet hours
  hold back only these messages: a reminder is sent at the time the user chose;
- the user got fewer than `proactive_max_per_day` check-ins from this avatar today, their
  local day.

It goes through the turn's door (`ScheduledMessage(origin="proactive")`), in the
conversation's mode, with a brief built from the conversation's summary and the remembered
facts. Its `commit` is a compare-and-set on the conversation's `last_message_at` as the
sweep read it, so two sweeps at once (or a user's message meanwhile) never add a second
one, and re-counts the day's check-ins with the new one.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from channels.db import database_sync_to_async
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from conversations.models import Conversation, Message, Origin
from conversations.turns import turn_start
from conversations.turns.request import ScheduledMessage
from core.errors import InvalidInput
from core.modes import Mode
from core.timezones import zone_get
from llm.base import LLMProvider
from memory.selectors import memory_list_for_prompt, summary_get_for_prompt
from secretary.clock import quiet_hours_contains
from secretary.delivery import Clock, gather_bounded

logger = logging.getLogger("companion.secretary")

SILENCE_MIN = timedelta(hours=1)  # the smallest proactive_after_hours an avatar may have
SUMMARY_IN_BRIEF = 800
FACTS_IN_BRIEF = 8
FALLBACKS: dict[str, str] = {
    Mode.SECRETARY: "Just checking in: is there anything I can help you with today?",
    Mode.INTIMATE: "Hey, I was thinking about you. How are you doing?",
}


@dataclass(frozen=True, slots=True)
class CheckIn:
    """A conversation due a check-in, as the sweep read it."""

    conversation_id: int
    user_id: int
    avatar_id: int
    mode: str
    last_message_at: datetime
    max_per_day: int
    day_start: datetime  # the start of the user's local day, in UTC
    brief: str


def proactive_candidates_list(*, now: datetime) -> list[CheckIn]:
    """The conversations that may get a check-in now, with their briefs."""
    last_origin = Message.objects.filter(conversation=OuterRef("pk")).order_by("-id").values("origin")[:1]
    rows = (
        Conversation.objects.filter(
            user__profile__proactive_opt_in=True,
            user__is_active=True,
            avatar__proactive_enabled=True,
            avatar__proactive_max_per_day__gt=0,
            safety_state="",
            last_message_at__lte=now - SILENCE_MIN,
        )
        .annotate(last_origin=Subquery(last_origin))
        .exclude(last_origin=Origin.PROACTIVE)
        .values_list(
            "pk",
            "user_id",
            "avatar_id",
            "mode",
            "last_message_at",
            "avatar__proactive_after_hours",
            "avatar__proactive_max_per_day",
            "user__profile__timezone",
            "user__profile__quiet_hours_start",
            "user__profile__quiet_hours_end",
        )
    )
    due: list[CheckIn] = []
    for pk, user_id, avatar_id, mode, last_at, after_hours, max_per_day, zone_name, quiet_start, quiet_end in rows:
        if last_at is None:  # excluded by the query; for the type checker
            continue
        silence = now - last_at
        if silence < timedelta(hours=max(1, after_hours)):
            continue
        local = now.astimezone(_zone(zone_name))
        if quiet_hours_contains(start=quiet_start, end=quiet_end, local=local):
            continue
        day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        if checkins_count(user_id=user_id, avatar_id=avatar_id, since=day_start) >= max_per_day:
            continue
        due.append(
            CheckIn(
                conversation_id=pk,
                user_id=user_id,
                avatar_id=avatar_id,
                mode=mode,
                last_message_at=last_at,
                max_per_day=max_per_day,
                day_start=day_start,
                brief=checkin_brief(
                    conversation_id=pk, user_id=user_id, avatar_id=avatar_id, hours=int(silence.total_seconds() // 3600)
                ),
            )
        )
    return due


def checkins_count(*, user_id: int, avatar_id: int, since: datetime) -> int:
    """Check-ins this avatar sent the user since `since`."""
    return Message.objects.filter(
        origin=Origin.PROACTIVE,
        conversation__user_id=user_id,
        conversation__avatar_id=avatar_id,
        created_at__gte=since,
    ).count()


def checkin_brief(*, conversation_id: int, user_id: int, avatar_id: int, hours: int) -> str:
    """What the model is told: how long the silence has lasted, what was said, what it remembers."""
    parts = [f"The user last wrote {hours} hours ago."]
    summary = summary_get_for_prompt(conversation_id=conversation_id)
    if summary is not None and summary.text.strip():
        parts.append(f"What you talked about: {summary.text.strip()[:SUMMARY_IN_BRIEF]}")
    facts = memory_list_for_prompt(user_id=user_id, avatar_id=avatar_id, limit=FACTS_IN_BRIEF)
    if facts:
        parts.append("What you remember about them: " + "; ".join(facts))
    return "\n".join(parts)


def checkin_claim(checkin: CheckIn, *, now: datetime) -> bool:
    """The check-in's commit: still silent since the sweep read it, and still under the day's limit.

    Runs in the transaction that stores the check-in, which it already counts.
    """
    claimed = Conversation.objects.filter(pk=checkin.conversation_id, last_message_at=checkin.last_message_at).update(
        last_message_at=now
    )
    if claimed != 1:
        return False
    since = checkin.day_start
    return checkins_count(user_id=checkin.user_id, avatar_id=checkin.avatar_id, since=since) <= checkin.max_per_day


async def proactive_sweep(*, provider: LLMProvider, clock: Clock = timezone.now) -> int:
    """Send the check-ins that are due; returns how many were stored."""
    candidates = await database_sync_to_async(proactive_candidates_list, thread_sensitive=False)(now=clock())
    sends = [partial(checkin_send, checkin, provider=provider, clock=clock) for checkin in candidates]
    sent = 0
    for checkin, outcome in zip(candidates, await gather_bounded(sends), strict=True):
        if isinstance(outcome, BaseException):
            logger.warning(
                "check-in failed",
                extra={"data": {"conversation_id": checkin.conversation_id, "error": type(outcome).__name__}},
            )
        elif outcome is not None:
            sent += 1
    return sent


async def checkin_send(checkin: CheckIn, *, provider: LLMProvider, clock: Clock = timezone.now) -> int | None:
    """One check-in through the turn's door; the stored message's id, or None when claimed meanwhile."""
    message = ScheduledMessage(
        origin="proactive",
        user_id=checkin.user_id,
        conversation_id=checkin.conversation_id,
        brief=checkin.brief,
        fallback=FALLBACKS.get(checkin.mode, FALLBACKS[Mode.SECRETARY]),
        commit=lambda _message_id: checkin_claim(checkin, now=clock()),
    )
    running = await turn_start(
        user_id=checkin.user_id, conversation_id=checkin.conversation_id, message=message, provider=provider
    )
    stored = (await running.result()).assistant_message
    return int(stored["id"]) if stored else None


def _zone(name: str) -> ZoneInfo:
    # A profile's zone was checked when it was saved; one that went missing reads as UTC.
    try:
        return zone_get(name)
    except InvalidInput:
        return zone_get("UTC")
