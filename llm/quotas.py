"""Daily quotas, per user and (optionally) per avatar, and the counters they read.

A day is the user's own calendar day (`Profile.timezone`); a quota resets at their midnight.
The user's limits are the `QUOTA_DAILY_TOKENS` / `QUOTA_DAILY_USD` / `QUOTA_DAILY_IMAGES`
settings (unset: unlimited), or the user's own (`Profile.quota_daily_*`, set by staff in the
admin). An avatar may add limits of its own (`Avatar.quota_daily_tokens` / `_usd`, in the
admin): what each user may spend with that avatar per day, counted on a `UsageAvatarDay` row.

A turn is admitted before the model is called (`quota_admit`), in one conditional UPDATE per
limited counter row (the user's `UsageDay`, then the user's `UsageAvatarDay` with the avatar):
"add this turn's reservation where what is spent and reserved is still under every limit".
The database takes the row's lock for the UPDATE and re-reads the condition under it
(PostgreSQL's READ COMMITTED re-check; SQLite writes one at a time), so of two turns at the
limit only one changes the row; the other's UPDATE matches no row: refused. Both rows are
reserved in one transaction (always in that order, so two turns cannot deadlock): a turn
refused by the avatar's limit gives the user's reservation back with the rollback.
The reservation is the turn's prompt plus its `max_tokens`, priced; when the reply ends,
`quota_settle` swaps it for what was spent.

Reservations are a lease: a row's reservations are forgotten together once the newest is
older than `QUOTA_RESERVATION_SECONDS` (default: the turn lock's `TURN_LOCK_SECONDS` plus five
minutes, longer than any turn runs), so a process killed mid-reply holds its user's allowance
for minutes, not for the rest of the day. The next admission on the row starts a new period
(`reserved_since`); a turn admitted before it settles without giving back what was already
forgotten.

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
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import BigIntegerField, Case, DecimalField, ExpressionWrapper, F, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.models import Profile
from accounts.selectors import profile_zone_name_get
from avatars.models import Avatar
from conversations.admin_usage import erased_usage_add
from core.errors import DomainError
from core.timezones import zone_or_utc
from llm.catalog import ZERO, call_cost_usd, usd_text
from llm.models import COST_DIGITS, COST_PLACES, UsageAvatarDay, UsageCounter, UsageDay, UsageKind, UsageRecord

_USD = DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES)
RESERVATION_MARGIN_SECONDS = 300  # the lease's default: the turn lock's time to live plus this
# A new period is dated this much before its first admission, so that a turn admitted into it by
# a process whose clock is a little behind still finds its reservation held when it settles.
# Safe: every turn of the period before was admitted at least a whole lease earlier.
CLOCK_SKEW_SECONDS = 30


class QuotaExceeded(DomainError):
    """A daily quota is spent: nothing more until `retry_after` (the user's midnight)."""

    code = "quota_exceeded"
    status_code = 429
    retryable = False

    def __init__(self, message: str, *, retry_after: int, limit: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit  # "tokens", "cost_usd", "images", or the avatar's: "avatar_tokens", "avatar_cost_usd"

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "retryable": False, "retry_after": self.retry_after, "limit": self.limit}


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    tokens: int | None
    cost_usd: Decimal | None
    images: int | None = None

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
    """An admitted turn's reservation on its user's day, to settle or release once.

    `user_reserved`: the user's row holds it (they have a limit); `avatar_id`: the user's row
    with that avatar holds it too (the avatar has a limit). `admitted_at` tells whether the
    reservation is still there when the turn ends (the lease may have run out).
    """

    user_id: int
    day: date
    tokens: int
    cost_usd: Decimal
    admitted_at: datetime
    user_reserved: bool = True
    avatar_id: int | None = None


class _AvatarRefused(Exception):
    """Rolls the user's reservation back when the avatar's limit refuses the turn."""

    def __init__(self, refusal: QuotaExceeded) -> None:
        super().__init__(refusal.limit)
        self.refusal = refusal


def quota_limits_get(*, user_id: int) -> QuotaLimits:
    """The user's own limits where staff set them, else the settings'."""
    own = Profile.objects.filter(user_id=user_id).values_list(
        "quota_daily_tokens", "quota_daily_usd", "quota_daily_images"
    ).first() or (None, None, None)
    return _limits(*own)


def quota_limits_of(profile: Profile) -> QuotaLimits:
    """`quota_limits_get` for a profile already read (the turn reads it with its conversation)."""
    return _limits(profile.quota_daily_tokens, profile.quota_daily_usd, profile.quota_daily_images)


def quota_avatar_limits_of(avatar: Avatar) -> QuotaLimits | None:
    """The avatar's own daily limits on each user, or None when it sets none."""
    if avatar.quota_daily_tokens is None and avatar.quota_daily_usd is None:
        return None
    return QuotaLimits(tokens=avatar.quota_daily_tokens, cost_usd=avatar.quota_daily_usd)


def user_zone_get(*, user_id: int) -> ZoneInfo:
    name = profile_zone_name_get(user_id=user_id)
    return zone_or_utc(name)


def user_day(*, zone: ZoneInfo, now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(zone).date()


def seconds_to_midnight(*, zone: ZoneInfo, now: datetime | None = None) -> int:
    """Seconds until the next midnight in `zone` (the quota's reset), at least 1. DST-safe: the
    wall-clock midnight is converted, not 24 hours added."""
    now = now or timezone.now()
    local = now.astimezone(zone)
    midnight = datetime.combine(local.date() + timedelta(days=1), time.min, tzinfo=zone)
    return max(1, int((midnight - now).total_seconds() + 0.999))


def reservation_lease() -> timedelta:
    """How long an admitted turn's reservation holds: `QUOTA_RESERVATION_SECONDS`."""
    seconds = getattr(settings, "QUOTA_RESERVATION_SECONDS", None)
    if seconds in (None, ""):
        seconds = int(getattr(settings, "TURN_LOCK_SECONDS", 300)) + RESERVATION_MARGIN_SECONDS
    return timedelta(seconds=int(seconds))


def quota_admit(
    *,
    user_id: int,
    limits: QuotaLimits,
    zone_name: str,
    model: str,
    prompt_tokens: int,
    max_tokens: int,
    now: datetime | None = None,
    avatar_id: int | None = None,
    avatar_limits: QuotaLimits | None = None,
) -> QuotaTicket | QuotaExceeded | None:
    """Reserve a turn's spending on the user's day (and on their day with the avatar, when it
    has limits of its own), or say which limit refuses it.

    None when neither the user nor the avatar has a limit (nothing to reserve, no row
    written); a `QuotaExceeded` (returned, not raised: the turn stores the user message, then
    reports it) when what is spent and reserved today already reaches a limit: the user's
    first, then the avatar's. A refused turn reserves nothing on either row.
    """
    user_limited = not limits.unlimited
    avatar = avatar_id if avatar_limits is not None and not avatar_limits.unlimited else None
    if not user_limited and avatar is None:
        return None
    now = now or timezone.now()
    zone = zone_or_utc(zone_name)
    day = user_day(zone=zone, now=now)
    tokens = prompt_tokens + max_tokens
    cost = call_cost_usd(model=model, prompt_tokens=prompt_tokens, completion_tokens=max_tokens)
    user_rows = UsageDay.objects.filter(user_id=user_id, day=day)
    try:
        with transaction.atomic():
            if user_limited:
                UsageDay.objects.get_or_create(user_id=user_id, day=day)
                if not _counter_reserve(user_rows, limits=limits, tokens=tokens, cost_usd=cost, now=now):
                    return _refusal(user_rows, limits=limits, zone=zone, now=now, prefix="")
            if avatar is not None and avatar_limits is not None:
                UsageAvatarDay.objects.get_or_create(user_id=user_id, avatar_id=avatar, day=day)
                avatar_rows = UsageAvatarDay.objects.filter(user_id=user_id, avatar_id=avatar, day=day)
                if not _counter_reserve(avatar_rows, limits=avatar_limits, tokens=tokens, cost_usd=cost, now=now):
                    raise _AvatarRefused(
                        _refusal(avatar_rows, limits=avatar_limits, zone=zone, now=now, prefix="avatar_")
                    )
    except _AvatarRefused as refused:
        return refused.refusal
    return QuotaTicket(
        user_id=user_id,
        day=day,
        tokens=tokens,
        cost_usd=cost,
        admitted_at=now,
        user_reserved=user_limited,
        avatar_id=avatar,
    )


def quota_settle(
    *,
    ticket: QuotaTicket | None,
    user_id: int,
    zone_name: str,
    tokens: int,
    cost_usd: Decimal,
    avatar_id: int | None = None,
    model: str = "",
) -> None:
    """Count a finished reply on the user's day (and their day with the avatar), giving back
    its reservation (one UPDATE per row). A user erased meanwhile: see `usage_day_add` (the
    spending is kept on the avatar the reply was with)."""
    spent = {"tokens": F("tokens") + tokens, "cost_usd": F("cost_usd") + cost_usd}
    if ticket is None:
        day = user_day(zone=zone_or_utc(zone_name))
        usage_day_add(user_id=user_id, day=day, tokens=tokens, cost_usd=cost_usd, avatar_id=avatar_id, model=model)
        return
    returned = _reservation_returned(ticket)
    avatar_id = ticket.avatar_id if ticket.avatar_id is not None else avatar_id
    if ticket.user_reserved and UsageDay.objects.filter(user_id=ticket.user_id, day=ticket.day).update(
        **spent, **returned
    ):
        if avatar_id is not None:
            changes = {**spent, **returned} if ticket.avatar_id is not None else spent
            _avatar_day_add(user_id=ticket.user_id, avatar_id=avatar_id, day=ticket.day, changes=changes)
        return
    # Not reserved on the user's row, or the row went with the user's account while the reply
    # ran: counted as unreserved spending (with no user, on the avatar it was with, if erased).
    usage_day_add(
        user_id=ticket.user_id, day=ticket.day, tokens=tokens, cost_usd=cost_usd, avatar_id=avatar_id, model=model
    )
    if ticket.avatar_id is not None:
        _avatar_day_add(user_id=ticket.user_id, avatar_id=ticket.avatar_id, day=ticket.day, changes=returned)


def quota_release(*, ticket: QuotaTicket | None) -> None:
    """Give back a reservation whose turn never called the model (it failed to start)."""
    if ticket is None:
        return
    if ticket.user_reserved:
        UsageDay.objects.filter(user_id=ticket.user_id, day=ticket.day).update(**_reservation_returned(ticket))
    if ticket.avatar_id is not None:
        UsageAvatarDay.objects.filter(user_id=ticket.user_id, avatar_id=ticket.avatar_id, day=ticket.day).update(
            **_reservation_returned(ticket)
        )


def quota_exhausted(*, user_id: int, avatar_id: int | None = None, avatar_limits: QuotaLimits | None = None) -> bool:
    """Whether the user's spending today reaches one of their limits, or (given an avatar with
    limits of its own) one of the avatar's on them: a read, for work that is skipped rather
    than refused, such as memory and scheduled messages."""
    limits = quota_limits_get(user_id=user_id)
    if avatar_limits is None or avatar_limits.unlimited:
        avatar_id = None
    if limits.unlimited and avatar_id is None:
        return False
    day = user_day(zone=user_zone_get(user_id=user_id))
    if not limits.unlimited and _spent_reaches(UsageDay.objects.filter(user_id=user_id, day=day), limits):
        return True
    if avatar_id is None or avatar_limits is None:
        return False
    return _spent_reaches(UsageAvatarDay.objects.filter(user_id=user_id, avatar_id=avatar_id, day=day), avatar_limits)


def _spent_reaches(rows: "QuerySet[Any]", limits: QuotaLimits) -> bool:
    row = rows.values_list("tokens", "cost_usd").first()
    tokens, cost = row if row is not None else (0, ZERO)
    return (limits.tokens is not None and tokens >= limits.tokens) or (
        limits.cost_usd is not None and cost >= limits.cost_usd
    )


def usage_day_add(
    *, user_id: int, day: date, tokens: int, cost_usd: Decimal, avatar_id: int | None = None, model: str = ""
) -> None:
    """Add spending that was not reserved (a scheduled message, a background call) to the user's
    day, and to their day with `avatar_id` when that avatar's limit keeps a row for it.

    A user erased meanwhile gets no row again: the spending goes to `ErasedUsage`, with no user.
    """
    if not tokens and not cost_usd:
        return
    changes = {"tokens": F("tokens") + tokens, "cost_usd": F("cost_usd") + cost_usd}
    # The user's row before the avatar's, as `quota_admit` locks them: in the other order, a
    # background call and an admission of the same user could each wait for the other's row.
    if not UsageDay.objects.filter(user_id=user_id, day=day).update(**changes):
        with transaction.atomic():  # the row of the day exists from the first call on: rarely here
            if not _user_lock(user_id):
                erased_usage_add(day=day, avatar_id=avatar_id, model=model, tokens=tokens, cost_usd=cost_usd)
                return
            UsageDay.objects.get_or_create(user_id=user_id, day=day)
            UsageDay.objects.filter(user_id=user_id, day=day).update(**changes)
    if avatar_id is not None:
        _avatar_day_add(user_id=user_id, avatar_id=avatar_id, day=day, changes=changes)


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
) -> int | None:
    """Record one background call, priced, and add it to its user's day; returns the record's id.

    None when the user was erased while the call ran: the call is counted in `ErasedUsage`,
    with no user, and nothing of theirs is written again (the caller stores nothing either).
    The user's row is locked first, so an erasure either comes after (and folds this record
    into `ErasedUsage` with the others) or before (and this call sees no user).
    """
    cost = call_cost_usd(model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    tokens = prompt_tokens + completion_tokens
    with transaction.atomic():
        if user_id is not None and not _user_lock(user_id):
            erased_usage_add(day=timezone.localdate(), avatar_id=avatar_id, model=model, tokens=tokens, cost_usd=cost)
            return None
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
            usage_day_add(user_id=user_id, day=day, tokens=tokens, cost_usd=cost, avatar_id=avatar_id, model=model)
    return record.pk


def usage_record_outcome_set(*, record_id: int | None, outcome: str, reason: str = "") -> None:
    if record_id is not None:
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


def _user_lock(user_id: int) -> bool:
    """Lock the user's row until the transaction ends (an erasure waits, or has happened): whether it exists."""
    return User.objects.select_for_update(no_key=True).filter(pk=user_id).values_list("pk").first() is not None


def _avatar_day_add(*, user_id: int, avatar_id: int, day: date, changes: dict[str, Any]) -> None:
    # Only where the avatar's limit made a row today: an avatar without limits keeps no counter.
    UsageAvatarDay.objects.filter(user_id=user_id, avatar_id=avatar_id, day=day).update(**changes)


def _lease_over(now: datetime) -> Q:
    """The rows whose reservations all outlived their lease (or that never had one)."""
    return Q(reserved_until__isnull=True) | Q(reserved_until__lt=now)


def _counter_reserve(
    rows: "QuerySet[Any]", *, limits: QuotaLimits, tokens: int, cost_usd: Decimal, now: datetime
) -> bool:
    """Add a reservation to the counter row where it is under every limit: one conditional UPDATE.

    Reservations whose lease is over count as nothing and are replaced by this one, which
    starts a new period (`reserved_since`)."""
    over = _lease_over(now)
    live_tokens = Case(When(over, then=Value(0)), default=F("reserved_tokens"), output_field=BigIntegerField())
    live_usd = Case(When(over, then=Value(ZERO)), default=F("reserved_usd"), output_field=_USD)
    under = Q()
    if limits.tokens is not None:
        under &= Q(tokens__lt=ExpressionWrapper(Value(limits.tokens) - live_tokens, output_field=BigIntegerField()))
    if limits.cost_usd is not None:
        under &= Q(cost_usd__lt=ExpressionWrapper(Value(limits.cost_usd) - live_usd, output_field=_USD))
    lease = reservation_lease()
    until = now + lease
    since = now - min(timedelta(seconds=CLOCK_SKEW_SECONDS), lease / 2)
    changed = rows.filter(under).update(
        reserved_tokens=ExpressionWrapper(live_tokens + tokens, output_field=BigIntegerField()),
        reserved_usd=ExpressionWrapper(live_usd + cost_usd, output_field=_USD),
        reserved_since=Case(When(over, then=Value(since)), default=F("reserved_since")),
        reserved_until=Case(When(over, then=Value(until)), default=Greatest(F("reserved_until"), Value(until))),
    )
    return bool(changed)


def _reservation_returned(ticket: QuotaTicket) -> dict[str, Any]:
    """The UPDATE that takes the ticket's reservation off a row, unless its lease ran out and a
    later period forgot it already."""
    held = Q(reserved_since__lte=ticket.admitted_at)
    tokens = ExpressionWrapper(F("reserved_tokens") - ticket.tokens, output_field=BigIntegerField())
    usd = ExpressionWrapper(F("reserved_usd") - ticket.cost_usd, output_field=_USD)
    return {
        "reserved_tokens": Case(When(held, then=tokens), default=F("reserved_tokens"), output_field=BigIntegerField()),
        "reserved_usd": Case(When(held, then=usd), default=F("reserved_usd"), output_field=_USD),
    }


def _refusal(
    rows: "QuerySet[Any]", *, limits: QuotaLimits, zone: ZoneInfo, now: datetime, prefix: str
) -> QuotaExceeded:
    row: UsageCounter | None = rows.only("tokens", "reserved_tokens", "reserved_until").first()
    tokens = row.tokens if row is not None else 0
    live = row.reserved_tokens if row is not None and row.reserved_until and row.reserved_until >= now else 0
    # The row is read after the refusing UPDATE: a reply settled meanwhile may have brought it
    # back under, so only a limit that exists can be named.
    tokens_refuse = limits.tokens is not None and (tokens + live >= limits.tokens or limits.cost_usd is None)
    which = "tokens" if tokens_refuse else "cost_usd"
    what = f"{limits.tokens:,} tokens" if which == "tokens" else f"US${limits.cost_usd}"
    whose = "with this avatar " if prefix else ""
    return QuotaExceeded(
        f"You have used today's allowance {whose}({what}). It resets at midnight.",
        retry_after=seconds_to_midnight(zone=zone, now=now),
        limit=prefix + which,
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
