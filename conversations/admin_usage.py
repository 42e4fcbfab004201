"""The usage report in the admin: tokens, cost, replies, fallbacks and failures per avatar, user, day and mode.

Every figure comes from aggregate queries (GROUP BY in the database), so the page costs the
same handful of queries whether the range holds ten messages or ten million. A *reply* is
an assistant message answering a user message (greetings are not replies) that has
finished; tokens are those the model reported for replies. Cost (`cost_usd`, Decimal) is that
of every assistant message (replies, reminders, check-ins), and background work (summaries,
fact extraction: `llm.UsageRecord`, by the user's own day) is shown beside it in each row, and
as the "background" row per mode.

Accounts that were erased left their figures in `ErasedUsage` (per day, avatar and model, no
user), background work and calls that ended after the erasure included: the totals, the
avatars and the days count them, and the users table shows them as one row, "erased
accounts". A report filtered on one user leaves them out.

The view is mounted by `ConversationAdmin.get_urls` at /admin/conversations/conversation/usage/.
"""

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final

from django import forms
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Avg, Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from avatars.models import Avatar
from conversations.models import ErasedUsage, Message, Role, Status
from images.models import Image, ImageStatus
from llm.models import UsageRecord

ZERO = Decimal(0)
BACKGROUND_MODE: Final = "background"

DEFAULT_RANGE_DAYS: Final = 30
ERASED_LABEL: Final = "(erased accounts)"
ERASED_AVATAR_LABEL: Final = "(avatars of erased accounts)"
USERS_SHOWN_MAX: Final = 100  # the heaviest users; the rest are in the totals

_REPLY = Q(role=Role.ASSISTANT, reply_to__isnull=False) & ~Q(status=Status.STREAMING)
# Annotation names must differ from the model's fields (prompt_tokens...): hence tokens_*.
_FIGURES: Final = {
    "user_messages": Count("id", filter=Q(role=Role.USER)),
    "replies": Count("id", filter=_REPLY),
    "cancelled": Count("id", filter=_REPLY & Q(status=Status.CANCELLED)),
    "fallbacks": Count("id", filter=_REPLY & Q(status=Status.FALLBACK)),
    "failures": Count("id", filter=_REPLY & Q(status=Status.FAILED)),
    "tokens_prompt": Sum("prompt_tokens", filter=_REPLY, default=0),
    "tokens_completion": Sum("completion_tokens", filter=_REPLY, default=0),
    "ttft_avg": Avg("ttft_ms", filter=_REPLY),
    "cost": Sum("cost_usd", filter=Q(role=Role.ASSISTANT), default=ZERO),
}
_BACKGROUND: Final = {
    "bg_tokens": Sum(F("prompt_tokens") + F("completion_tokens"), default=0),
    "bg_cost": Sum("cost_usd", default=ZERO),
}


@dataclass(frozen=True)
class UsageFilters:
    date_from: date  # inclusive, in the current time zone
    date_to: date  # inclusive
    avatar_id: int | None = None
    user_id: int | None = None


@dataclass(frozen=True)
class UsageRow:
    key: Any  # the avatar id, the user id or the day
    label: str
    user_messages: int
    replies: int
    cancelled: int
    fallbacks: int
    failures: int
    prompt_tokens: int
    completion_tokens: int
    avg_ttft_ms: int | None
    cost_usd: Decimal = ZERO  # assistant messages: replies, reminders, check-ins
    background_tokens: int = 0  # summaries and fact extraction
    background_cost_usd: Decimal = ZERO

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def total_cost_usd(self) -> Decimal:
        return self.cost_usd + self.background_cost_usd

    @classmethod
    def of(cls, values: Mapping[str, Any], *, key: Any, label: str) -> "UsageRow":
        ttft = values["ttft_avg"]
        return cls(
            key=key,
            label=label,
            user_messages=values["user_messages"],
            replies=values["replies"],
            cancelled=values["cancelled"],
            fallbacks=values["fallbacks"],
            failures=values["failures"],
            prompt_tokens=values["tokens_prompt"],
            completion_tokens=values["tokens_completion"],
            avg_ttft_ms=round(ttft) if ttft is not None else None,
            cost_usd=Decimal(values["cost"]),
        )

    @classmethod
    def empty(cls, *, key: Any, label: str) -> "UsageRow":
        return cls(key, label, 0, 0, 0, 0, 0, 0, 0, None)

    def with_background(self, values: Mapping[str, Any]) -> "UsageRow":
        return replace(self, background_tokens=int(values["bg_tokens"]), background_cost_usd=Decimal(values["bg_cost"]))

    def plus(self, other: "UsageRow") -> "UsageRow":
        """This row with another's counts added; the average time to first token stays this row's
        (erased usage keeps no timings)."""
        return UsageRow(
            key=self.key,
            label=self.label,
            user_messages=self.user_messages + other.user_messages,
            replies=self.replies + other.replies,
            cancelled=self.cancelled + other.cancelled,
            fallbacks=self.fallbacks + other.fallbacks,
            failures=self.failures + other.failures,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            avg_ttft_ms=self.avg_ttft_ms,
            cost_usd=self.cost_usd + other.cost_usd,
            background_tokens=self.background_tokens + other.background_tokens,
            background_cost_usd=self.background_cost_usd + other.background_cost_usd,
        )


@dataclass(frozen=True)
class PictureUsageRow:
    """Pictures (images app) made for one avatar, or all: counted apart from the tokens above."""

    label: str
    made: int  # ready, paid for (a picture reused from the cache is not)
    reused: int  # ready from the cache: no call, no cost
    refused: int
    failed: int
    cost_usd: Decimal


@dataclass(frozen=True)
class UsageReport:
    filters: UsageFilters
    total: UsageRow
    by_avatar: list[UsageRow]
    by_user: list[UsageRow]
    by_day: list[UsageRow]
    by_mode: list[UsageRow]
    pictures: list[PictureUsageRow] = field(default_factory=list)  # the total first, then per avatar


def message_usage_queryset(*, filters: UsageFilters) -> QuerySet[Message]:
    """The messages the report counts: created in the range, of the avatar and user chosen."""
    zone = timezone.get_current_timezone()
    start = datetime.combine(filters.date_from, time.min, tzinfo=zone)
    end = datetime.combine(filters.date_to + timedelta(days=1), time.min, tzinfo=zone)
    messages = Message.objects.filter(created_at__gte=start, created_at__lt=end)
    if filters.avatar_id is not None:
        messages = messages.filter(conversation__avatar_id=filters.avatar_id)
    if filters.user_id is not None:
        messages = messages.filter(conversation__user_id=filters.user_id)
    return messages


def background_usage_queryset(*, filters: UsageFilters) -> QuerySet[UsageRecord]:
    """The background calls the report counts: on the users' days in the range, of the avatar and user chosen."""
    records = UsageRecord.objects.filter(day__gte=filters.date_from, day__lte=filters.date_to)
    if filters.avatar_id is not None:
        records = records.filter(avatar_id=filters.avatar_id)
    if filters.user_id is not None:
        records = records.filter(user_id=filters.user_id)
    return records


def message_usage_of_user(*, user_id: int) -> "QuerySet[Any, Any]":
    """One user's figures per local day, avatar (`conversation__avatar_id`) and model: the keys
    of `_FIGURES` (`tokens_prompt`, `tokens_completion`, ...). One aggregate query."""
    return (
        Message.objects.filter(conversation__user_id=user_id)
        .annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
        .values("day", "conversation__avatar_id", "model")
        .annotate(**_FIGURES)
        .order_by("day", "conversation__avatar_id", "model")
    )


def message_usage_anonymise(*, user_id: int, avatar_ids_kept: Collection[int]) -> int:
    """Fold one user's usage figures into `ErasedUsage` rows, one per local day, avatar and model;
    returns how many rows. Called by the erasure before the messages go, in its transaction.

    Only avatars in `avatar_ids_kept` (the catalogue's) are named; the user's own go with them.
    """
    rows = message_usage_of_user(user_id=user_id)
    kept = set(avatar_ids_kept)
    erased = [
        ErasedUsage(
            day=row["day"],
            avatar_id=row["conversation__avatar_id"] if row["conversation__avatar_id"] in kept else None,
            model=row["model"],
            user_messages=row["user_messages"],
            replies=row["replies"],
            cancelled=row["cancelled"],
            fallbacks=row["fallbacks"],
            failures=row["failures"],
            prompt_tokens=row["tokens_prompt"],
            completion_tokens=row["tokens_completion"],
            cost_usd=row["cost"],
        )
        for row in rows
    ]
    ErasedUsage.objects.bulk_create(erased, batch_size=500)
    return len(erased)


def background_usage_anonymise(*, user_id: int, avatar_ids_kept: Collection[int]) -> int:
    """Fold one user's background calls (`llm.UsageRecord`) into `ErasedUsage` rows, one per day
    (the user's), avatar and model; returns how many rows. In the erasure's transaction, before
    the records go with the user."""
    kept = set(avatar_ids_kept)
    rows = (
        UsageRecord.objects.filter(user_id=user_id)
        .values("day", "avatar_id", "model")
        .annotate(bg_tokens=_BACKGROUND["bg_tokens"], bg_cost=_BACKGROUND["bg_cost"])
        .order_by("day", "avatar_id", "model")
    )
    erased = [
        ErasedUsage(
            day=row["day"],
            avatar_id=row["avatar_id"] if row["avatar_id"] in kept else None,
            model=row["model"],
            background_tokens=row["bg_tokens"],
            background_cost_usd=row["bg_cost"],
        )
        for row in rows
    ]
    ErasedUsage.objects.bulk_create(erased, batch_size=500)
    return len(erased)


def erased_usage_add(*, day: date, avatar_id: int | None, model: str, tokens: int, cost_usd: Decimal) -> None:
    """Count a call that ended after its user's account was erased: a row with no user, naming
    the avatar only while it still exists (a catalogue one; the user's own went with them)."""
    if avatar_id is not None and not Avatar.objects.filter(pk=avatar_id).exists():
        avatar_id = None
    ErasedUsage.objects.create(
        day=day, avatar_id=avatar_id, model=model[:200], background_tokens=tokens, background_cost_usd=cost_usd
    )


_ERASED_FIGURES: Final = {
    "user_messages": Sum("user_messages", default=0),
    "replies": Sum("replies", default=0),
    "cancelled": Sum("cancelled", default=0),
    "fallbacks": Sum("fallbacks", default=0),
    "failures": Sum("failures", default=0),
    "tokens_prompt": Sum("prompt_tokens", default=0),
    "tokens_completion": Sum("completion_tokens", default=0),
    "cost": Sum("cost_usd", default=ZERO),
    "bg_tokens": Sum("background_tokens", default=0),
    "bg_cost": Sum("background_cost_usd", default=ZERO),
}


def _erased_row(values: Mapping[str, Any], *, key: Any, label: str) -> UsageRow:
    return UsageRow.of({**values, "ttft_avg": None}, key=key, label=label).with_background(values)


def _rows_merged(rows: list[UsageRow], extra: list[UsageRow]) -> list[UsageRow]:
    """`rows` with each of `extra` added to the row of the same key, or appended when there is none."""
    merged = {row.key: row for row in rows}
    for row in extra:
        merged[row.key] = merged[row.key].plus(row) if row.key in merged else row
    return list(merged.values())


_PICTURE_FIGURES: Final = {
    "made": Count("id", filter=Q(status=ImageStatus.READY, cached_from__isnull=True)),
    "reused": Count("id", filter=Q(status=ImageStatus.READY, cached_from__isnull=False)),
    "refused": Count("id", filter=Q(status=ImageStatus.REFUSED)),
    "failed": Count("id", filter=Q(status=ImageStatus.FAILED)),
    "cost": Sum("cost_usd", default=ZERO),
}


def picture_usage_rows(*, filters: UsageFilters) -> list[PictureUsageRow]:
    """Pictures asked for in the range (of the avatar and user chosen): the total, then per avatar. Two queries."""
    zone = timezone.get_current_timezone()
    start = datetime.combine(filters.date_from, time.min, tzinfo=zone)
    end = datetime.combine(filters.date_to + timedelta(days=1), time.min, tzinfo=zone)
    images = Image.objects.filter(created_at__gte=start, created_at__lt=end)
    if filters.avatar_id is not None:
        images = images.filter(avatar_id=filters.avatar_id)
    if filters.user_id is not None:
        images = images.filter(owner_id=filters.user_id)

    def row(values: Mapping[str, Any], label: str) -> PictureUsageRow:
        return PictureUsageRow(
            label=label,
            made=values["made"],
            reused=values["reused"],
            refused=values["refused"],
            failed=values["failed"],
            cost_usd=Decimal(values["cost"]),
        )

    total = row(images.aggregate(**_PICTURE_FIGURES), "All")
    if not (total.made or total.reused or total.refused or total.failed):
        return []
    per_avatar = images.values("avatar__name").annotate(**_PICTURE_FIGURES).order_by("avatar__name")
    return [total, *(row(values, values["avatar__name"]) for values in per_avatar)]


def message_usage_report(*, filters: UsageFilters) -> UsageReport:
    """Totals and the four breakdowns: a handful of aggregate queries, whatever the number of
    messages (and three more for the usage of erased accounts, unless the report is about one user),
    and the pictures made (two more)."""
    report = replace(_message_usage_report(filters=filters), pictures=picture_usage_rows(filters=filters))
    if filters.user_id is not None:
        return report
    erased = ErasedUsage.objects.filter(day__gte=filters.date_from, day__lte=filters.date_to)
    if filters.avatar_id is not None:
        erased = erased.filter(avatar_id=filters.avatar_id)
    total = _erased_row(erased.aggregate(**_ERASED_FIGURES), key=None, label=ERASED_LABEL)
    if not (total.user_messages or total.replies or total.total_tokens or total.background_tokens or total.cost_usd):
        return report
    by_avatar = [
        _erased_row(row, key=row["avatar_id"], label=row["avatar__name"] or ERASED_AVATAR_LABEL)
        for row in erased.values("avatar_id", "avatar__name").annotate(**_ERASED_FIGURES).order_by("avatar_id")
    ]
    by_day = [
        _erased_row(row, key=row["day"], label=row["day"].isoformat())
        for row in erased.values("day").annotate(**_ERASED_FIGURES).order_by("-day")
    ]
    return UsageReport(
        filters=filters,
        total=report.total.plus(total),
        by_avatar=_rows_merged(report.by_avatar, by_avatar),
        by_user=[*report.by_user, total],
        by_day=sorted(_rows_merged(report.by_day, by_day), key=lambda row: row.key, reverse=True),
        by_mode=report.by_mode,
        pictures=report.pictures,
    )


@dataclass(frozen=True)
class _Breakdown:
    """One table of the report: the field its messages are grouped by (and named by), and the
    same for its background calls."""

    key: str
    label: str
    background_key: str
    background_label: str
    add_missing: bool = True  # a key with background work only gets a row of its own


_BY_AVATAR: Final = _Breakdown("conversation__avatar_id", "conversation__avatar__name", "avatar_id", "avatar__name")
# The heaviest users by tokens of replies; others are in the totals, background work or not.
_BY_USER: Final = _Breakdown(
    "conversation__user_id", "conversation__user__username", "user_id", "user__username", add_missing=False
)
_BY_DAY: Final = _Breakdown("day", "day", "day", "day")


def _message_usage_report(*, filters: UsageFilters) -> UsageReport:
    messages = message_usage_queryset(filters=filters)
    background = background_usage_queryset(filters=filters)
    total = UsageRow.of(messages.aggregate(**_FIGURES), key=None, label="All").with_background(
        background.aggregate(**_BACKGROUND)
    )
    avatars = (
        messages.values("conversation__avatar_id", "conversation__avatar__name")
        .annotate(**_FIGURES)
        .order_by("conversation__avatar__name", "conversation__avatar_id")
    )
    users = (
        messages.values("conversation__user_id", "conversation__user__username")
        .annotate(**_FIGURES)
        .order_by((F("tokens_prompt") + F("tokens_completion")).desc(), "conversation__user__username")[
            :USERS_SHOWN_MAX
        ]
    )
    days = (
        messages.annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
        .values("day")
        .annotate(**_FIGURES)
        .order_by("-day")
    )
    modes = messages.values("mode").annotate(**_FIGURES).order_by("mode")
    by_mode = [UsageRow.of(row, key=row["mode"], label=row["mode"]) for row in modes]
    background_total = background.aggregate(**_BACKGROUND)
    if background_total["bg_tokens"] or background_total["bg_cost"]:
        by_mode.append(UsageRow.empty(key=BACKGROUND_MODE, label=BACKGROUND_MODE).with_background(background_total))
    return UsageReport(
        filters=filters,
        total=total,
        by_avatar=_rows_with_background(avatars, background, _BY_AVATAR),
        by_user=_rows_with_background(users, background, _BY_USER),
        by_day=sorted(_rows_with_background(days, background, _BY_DAY), key=lambda row: row.key, reverse=True),
        by_mode=by_mode,
    )


def _rows_with_background(
    rows: Iterable[Mapping[str, Any]], background: QuerySet[UsageRecord], breakdown: _Breakdown
) -> list[UsageRow]:
    """The table's rows of messages, each with its background figures (one more aggregate query)."""
    merged = [UsageRow.of(row, key=row[breakdown.key], label=_label(row[breakdown.label])) for row in rows]
    index_of = {row.key: index for index, row in enumerate(merged)}
    grouped = background.values(breakdown.background_key, breakdown.background_label).annotate(**_BACKGROUND)
    for values in grouped.order_by():
        key = values[breakdown.background_key]
        index = index_of.get(key)
        if index is not None:
            merged[index] = merged[index].with_background(values)
        elif breakdown.add_missing and key is not None:
            label = _label(values[breakdown.background_label])
            merged.append(UsageRow.empty(key=key, label=label).with_background(values))
    return merged


def _label(value: object) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


# --- the admin page ---------------------------------------------------------------------------


class DateInput(forms.DateInput):
    input_type = "date"


class UsageFilterForm(forms.Form):
    date_from = forms.DateField(label="From", required=False, widget=DateInput)
    date_to = forms.DateField(label="To", required=False, widget=DateInput)
    avatar = forms.ModelChoiceField(
        queryset=Avatar.objects.only("id", "name", "slug").order_by("name", "id"),
        required=False,
        empty_label="All avatars",
    )
    user = forms.CharField(label="Username", required=False, max_length=150)

    def clean_user(self) -> User | None:
        username = self.cleaned_data.get("user", "").strip()
        if not username:
            return None
        user = User.objects.filter(username__iexact=username).only("id", "username").first()
        if user is None:
            raise forms.ValidationError(f"No user is called “{username}”.")
        return user

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        today = timezone.localdate()
        date_to = cleaned.get("date_to") or today
        date_from = cleaned.get("date_from") or date_to - timedelta(days=DEFAULT_RANGE_DAYS - 1)
        if date_from > date_to:
            raise forms.ValidationError("The start of the range is after its end.")
        cleaned["date_from"], cleaned["date_to"] = date_from, date_to
        return cleaned

    def filters(self) -> UsageFilters:
        data = self.cleaned_data
        avatar: Avatar | None = data.get("avatar")
        user: User | None = data.get("user")
        return UsageFilters(
            date_from=data["date_from"],
            date_to=data["date_to"],
            avatar_id=avatar.pk if avatar is not None else None,
            user_id=user.pk if user is not None else None,
        )


def usage_report_view(request: HttpRequest, *, site: admin.AdminSite) -> HttpResponse:
    """The report page, for staff who may view messages (the site's `admin_view` checks staff)."""
    if not request.user.has_perm("conversations.view_message"):
        raise PermissionDenied
    data = request.GET.copy()
    if not data.get("date_from") and not data.get("date_to"):
        # The default range, written into the form so the page shows what it counts.
        today = timezone.localdate()
        data["date_to"] = today.isoformat()
        data["date_from"] = (today - timedelta(days=DEFAULT_RANGE_DAYS - 1)).isoformat()
    form = UsageFilterForm(data)
    report = message_usage_report(filters=form.filters()) if form.is_valid() else None
    context: dict[str, Any] = {
        **site.each_context(request),
        "title": "Usage report",
        "subtitle": None,
        "opts": Message._meta,
        "form": form,
        "report": report,
        "users_shown_max": USERS_SHOWN_MAX,
    }
    return TemplateResponse(request, "admin/conversations/usage_report.html", context)
