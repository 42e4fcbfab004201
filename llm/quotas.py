"""Per-user daily quotas, and the counters they read: what each user spent on which day.

A day is the user's own calendar day (`Profile.timezone`); a quota resets at their midnight.
The limits are the `QUOTA_DAILY_TOKENS` / `QUOTA_DAILY_USD` / `QUOTA_DAILY_IMAGES` settings
(unset: unlimited), or the user's own (`Profile.quota_daily_*`, set by staff in the admin).

A turn is admitted before the model is called (`quota_admit`), in one conditional UPDATE of
the user's `UsageDay` row: "add this turn's reservation where what is spent and reserved is
still under every limit". The database takes the row's lock for the UPDATE and re-reads the
condition under it (PostgreSQL's READ COMMITTED re-check; SQLite writes one at a time), so of
two turns at the limit only one changes the row; the other's UPDATE matches no row: refused.
The reservation is the turn's prompt plus its `max_tokens`, priced; when the reply ends,
`quota_settle` swaps it for what was spent. A process killed mid-reply leaves its reservation
on the row until the day ends (the user can spend that much less that day).

Background calls (summaries, facts) are recorded as `UsageRecord` rows and added to the same
day's counters (`usage_record_add`); they are not refused, but memory work is skipped once the
user is over a limit (`quota_exhausted`). Pictures count in `images`, taken at their admission
by the same kind of conditional UPDATE (`images < limit`; images/services.py), their cost added
to `cost_usd` when they are ready.
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from accounts.models import Profile
from accounts.selectors import profile_zone_name_get
from core.errors import DomainError
from llm.catalog import ZERO, call_cost_usd, usd_text
from llm.models import UsageDay, UsageKind, UsageRecord


class QuotaExceeded(DomainError):
    """The user's daily quota is spent: nothing more until `retry_after` (their midnight)."""

    code = "quota_exceeded"
    status_code = 429
    retryable = False

    def __init__(self, message: str, *, retry_after: int, limit: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit  # "tokens", "cost_usd" or "images"

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "retryable": False, "retry_after": self.retry_after, "limit": self.limit}


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    tokens: int | None
    cost_usd: Decimal | None
    images: int | None

    @property
    def unlimited(self) -> bool:
        return self.tokens is None and self.cost_usd is None and self.images is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "cost_usd": str(self.cost_usd) if self.cost_usd is not None else None,
            "images": self.images,
        }


@dataclass(frozen=True, slots=True)
class QuotaTicket:
    """An admitted turn's reservation on its user's day, to settle or release once."""

    user_id: int
    day: date
    tokens: int
    cost_usd: Decimal


def quota_limits_get(*, user_id: int) -> QuotaLimits:
    """The user's own limits where staff set them, else the settings'."""
    own = Profile.objects.filter(user_id=user_id).values_list(
        "quota_daily_tokens", "quota_daily_usd", "quota_daily_images"
    ).first() or (None, None, None)
    return _limits(*own)


def quota_limits_of(profile: Profile) -> QuotaLimits:
    """`quota_limits_get` for a profile already read (the turn reads it with its conversation)."""
    return _limits(profile.quota_daily_tokens, profile.quota_daily_usd, profile.quota_daily_images)


def user_zone_get(*, user_id: int) -> ZoneInfo:
    name = profile_zone_name_get(user_id=user_id)
    return zone_or_utc(name)


def zone_or_utc(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def user_day(*, zone: ZoneInfo, now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(zone).date()


def seconds_to_midnight(*, zone: ZoneInfo, now: datetime | None = None) -> int:
    """Seconds until the next midnight in `zone` (the quota's reset), at least 1. DST-safe: the
    wall-clock midnight is converted, not 24 hours added."""
    now = now or timezone.now()
    local = now.astimezone(zone)
    midnight = datetime.combine(local.date() + timedelta(days=1), time.min, tzinfo=zone)
    return max(1, int((midnight - now).total_seconds() + 0.999))


def quota_admit(
    *,
    user_id: int,
    limits: QuotaLimits,
    zone_name: str,
    model: str,
    prompt_tokens: int,
    max_tokens: int,
    now: datetime | None = None,
) -> QuotaTicket | QuotaExceeded | None:
    """Reserve a turn's spending on the user's day, or say why it is refused.

    None when the user has no limit (nothing to reserve, no row written); a `QuotaExceeded`
    (returned, not raised: the turn stores the user message, then reports it) when what is
    spent and reserved today already reaches a limit.
    """
    if limits.unlimited:
        return None
    zone = zone_or_utc(zone_name)
    day = user_day(zone=zone, now=now)
    tokens = prompt_tokens + max_tokens
    cost = call_cost_usd(model=model, prompt_tokens=prompt_tokens, completion_tokens=max_tokens)
    under = Q()
    if limits.tokens is not None:
        under &= Q(tokens__lt=limits.tokens - F("reserved_tokens"))
    if limits.cost_usd is not None:
        under &= Q(cost_usd__lt=limits.cost_usd - F("reserved_usd"))
    with transaction.atomic():
        _usage_day_ensure(user_id=user_id, day=day)
        admitted = UsageDay.objects.filter(under, user_id=user_id, day=day).update(
            reserved_tokens=F("reserved_tokens") + tokens, reserved_usd=F("reserved_usd") + cost
        )
    if admitted:
        return QuotaTicket(user_id=user_id, day=day, tokens=tokens, cost_usd=cost)
    return _refusal(user_id=user_id, day=day, limits=limits, zone=zone, now=now)


def quota_settle(*, ticket: QuotaTicket | None, user_id: int, zone_name: str, tokens: int, cost_usd: Decimal) -> None:
    """Count a finished reply on the user's day, giving back its reservation (one UPDATE)."""
    if ticket is not None:
        UsageDay.objects.filter(user_id=ticket.user_id, day=ticket.day).update(
            tokens=F("tokens") + tokens,
            cost_usd=F("cost_usd") + cost_usd,
            reserved_tokens=F("reserved_tokens") - ticket.tokens,
            reserved_usd=F("reserved_usd") - ticket.cost_usd,
        )
        return
    usage_day_add(user_id=user_id, day=user_day(zone=zone_or_utc(zone_name)), tokens=tokens, cost_usd=cost_usd)


def quota_release(*, ticket: QuotaTicket | None) -> None:
    """Give back a reservation whose turn never called the model (it failed to start)."""
    if ticket is None:
        return
    UsageDay.objects.filter(user_id=ticket.user_id, day=ticket.day).update(
        reserved_tokens=F("reserved_tokens") - ticket.tokens, reserved_usd=F("reserved_usd") - ticket.cost_usd
    )


def quota_exhausted(*, user_id: int) -> bool:
    """Whether the user's spending today reaches one of their limits (a read: for work that is
    skipped rather than refused, such as memory and scheduled messages)."""
    limits = quota_limits_get(user_id=user_id)
    if limits.unlimited:
        return False
    day = user_day(zone=user_zone_get(user_id=user_id))
    row = UsageDay.objects.filter(user_id=user_id, day=day).values_list("tokens", "cost_usd").first()
    tokens, cost = row if row is not None else (0, ZERO)
    return (limits.tokens is not None and tokens >= limits.tokens) or (
        limits.cost_usd is not None and cost >= limits.cost_usd
    )


def usage_day_add(*, user_id: int, day: date, tokens: int, cost_usd: Decimal) -> None:
    """Add spending that was not reserved (a scheduled message, a background call) to the user's day."""
    if not tokens and not cost_usd:
        return
    changes = {"tokens": F("tokens") + tokens, "cost_usd": F("cost_usd") + cost_usd}
    if UsageDay.objects.filter(user_id=user_id, day=day).update(**changes):
        return  # one query: the row of the day exists from the first call on
    with transaction.atomic():
        _usage_day_ensure(user_id=user_id, day=day)
        UsageDay.objects.filter(user_id=user_id, day=day).update(**changes)


def usage_record_add(
    *,
    user_id: int | None,
    avatar_id: int | None,
    conversation_id: int | None,
    kind: UsageKind,
    subject: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    outcome: str = "ok",
    reason: str = "",
) -> UsageRecord:
    """Record one background call, priced, and add it to its user's day."""
    cost = call_cost_usd(model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    day = user_day(zone=user_zone_get(user_id=user_id)) if user_id is not None else timezone.localdate()
    record = UsageRecord.objects.create(
        user_id=user_id,
        avatar_id=avatar_id,
        conversation_id=conversation_id,
        kind=kind,
        subject=subject[:64],
        model=model[:200],
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=cost,
        day=day,
        outcome=outcome[:64],
        reason=reason[:200],
    )
    if user_id is not None:
        usage_day_add(user_id=user_id, day=day, tokens=prompt_tokens + completion_tokens, cost_usd=cost)
    return record


def usage_record_outcome_set(*, record_id: int, outcome: str, reason: str = "") -> None:
    UsageRecord.objects.filter(pk=record_id).update(outcome=outcome[:64], reason=reason[:200])


def usage_record_give_up(*, kind: UsageKind, subject: str, outcome: str, reason: str = "") -> None:
    """Mark the last call of a background job as the one its task gave up after (shown in the admin)."""
    last = UsageRecord.objects.filter(kind=kind, subject=subject).order_by("-id").values_list("id", flat=True).first()
    if last is not None:
        UsageRecord.objects.filter(pk=last).update(gave_up=True, outcome=outcome[:64], reason=reason[:200])


def usage_summary_get(*, user_id: int, date_from: date, date_to: date) -> dict[str, Any]:
    """`GET /api/me/usage`: what the user spent on their days from `date_from` to `date_to`, and their limits."""
    totals = UsageDay.objects.filter(user_id=user_id, day__gte=date_from, day__lte=date_to).aggregate(
        tokens=Sum("tokens", default=0), cost=Sum("cost_usd", default=ZERO), images=Sum("images", default=0)
    )
    return {
        "tokens": int(totals["tokens"]),
        "cost_usd": usd_text(Decimal(totals["cost"])),
        "images": int(totals["images"]),
        "limit": quota_limits_get(user_id=user_id).as_dict(),
    }


def _usage_day_ensure(*, user_id: int, day: date) -> None:
    # Inside the caller's transaction. get_or_create handles the race of two first turns of the day.
    UsageDay.objects.get_or_create(user_id=user_id, day=day)


def _refusal(*, user_id: int, day: date, limits: QuotaLimits, zone: ZoneInfo, now: datetime | None) -> QuotaExceeded:
    row = UsageDay.objects.filter(user_id=user_id, day=day).values_list("tokens", "reserved_tokens").first()
    tokens, reserved = row if row is not None else (0, 0)
    which = "tokens" if limits.tokens is not None and tokens + reserved >= limits.tokens else "cost_usd"
    what = f"{limits.tokens:,} tokens" if which == "tokens" else f"US${limits.cost_usd}"
    return QuotaExceeded(
        f"You have used today's allowance ({what}). It resets at midnight.",
        retry_after=seconds_to_midnight(zone=zone, now=now),
        limit=which,
    )


def _limits(tokens: int | None, cost_usd: Decimal | None, images: int | None) -> QuotaLimits:
    setting_usd = getattr(settings, "QUOTA_DAILY_USD", None)
    setting_tokens = getattr(settings, "QUOTA_DAILY_TOKENS", None)
    setting_images = getattr(settings, "QUOTA_DAILY_IMAGES", None)
    return QuotaLimits(
        tokens=tokens if tokens is not None else (int(setting_tokens) if setting_tokens not in (None, "") else None),
        cost_usd=cost_usd
        if cost_usd is not None
        else (Decimal(str(setting_usd)) if setting_usd not in (None, "") else None),
        images=images if images is not None else (int(setting_images) if setting_images not in (None, "") else None),
    )
