"""Reads of the safety app: the crisis resources for a locale, the daily counts for a period."""

from dataclasses import dataclass
from datetime import date

from safety.models import DEFAULT_LOCALE, CrisisResource, SafetyDailyCount


@dataclass(frozen=True, slots=True)
class Resource:
    """A crisis line as clients receive it in the `safety` frame."""

    name: str
    phone: str = ""
    text: str = ""
    url: str = ""

    def as_dict(self) -> dict[str, str]:
        shown = {"name": self.name, "phone": self.phone, "text": self.text, "url": self.url}
        return {key: value for key, value in shown.items() if value or key == "name"}

    def as_line(self) -> str:
        """One line for the crisis prompt."""
        ways = [part for part in (self.phone and f"call {self.phone}", self.text, self.url) if part]
        return f"{self.name}: {', '.join(ways)}" if ways else self.name


def crisis_resources_for_locale(*, locale: str) -> tuple[Resource, ...]:
    """The active resources of the user's locale; the default locale's when it has none."""
    code = (locale or DEFAULT_LOCALE).strip().upper()
    for candidate in dict.fromkeys((code, DEFAULT_LOCALE)):
        rows = list(
            CrisisResource.objects.filter(locale=candidate, active=True)
            .order_by("position", "id")
            .values_list("name", "phone", "text", "url")
        )
        if rows:
            return tuple(Resource(*row) for row in rows)
    return ()


@dataclass(frozen=True, slots=True)
class DailyCounts:
    day: date
    crisis_detections: int
    referrals_shown: int
    notices_shown: int


def safety_counts_list(*, start: date, end: date) -> list[DailyCounts]:
    """The counts of every day from `start` to `end` included that has any, oldest first."""
    rows = (
        SafetyDailyCount.objects.filter(day__gte=start, day__lte=end)
        .order_by("day")
        .values_list("day", "crisis_detections", "referrals_shown", "notices_shown")
    )
    return [DailyCounts(*row) for row in rows]
