"""Wall-clock times in a user's zone: read, checked, repeated and shown. Pure: no database.

The model and the API speak the user's wall-clock time (`2026-12-24T09:00`); the database
stores UTC. Converting is where mistakes hide, so every doubtful case is refused with a
code the model can explain to the user rather than guessed:

- `invalid_time`: not `YYYY-MM-DDTHH:MM`;
- `time_in_past`: already gone (a minute of grace for "now");
- `nonexistent_time`: skipped by a DST change (02:30 on the last Sunday of March in Paris);
- `ambiguous_time`: happens twice (02:30 on the last Sunday of October in Paris);
- `too_far_ahead`: beyond `AHEAD_MAX`.

A recurring reminder repeats at the same wall-clock time in its zone; an occurrence that
falls in a DST gap moves forward by the gap (02:30 becomes 03:30), one in an overlap takes
the first of the two.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal

from dateutil.rrule import DAILY, FR, MO, TH, TU, WE, WEEKLY, rrule, weekday

from core.errors import InvalidInput
from core.timezones import zone_get

AHEAD_MAX = timedelta(days=366 * 2)
PAST_GRACE = timedelta(minutes=1)
LOCAL_FORMAT = "%Y-%m-%dT%H:%M"

# The recurrences offered, as RFC 5545 rules over local wall-clock times.
# dateutil types the frequency as its constants: DAILY is 3, WEEKLY is 2.
_RULES: dict[str, tuple[Literal[3, 2], tuple[weekday, ...] | None]] = {
    "daily": (DAILY, None),
    "weekdays": (DAILY, (MO, TU, WE, TH, FR)),
    "weekly": (WEEKLY, None),
}
RECURRENCES = ("", *_RULES)


class TimeRefused(InvalidInput):
    """A wall-clock time that cannot be scheduled; `code` says why."""

    def __init__(self, code: str, message: str, *, field: str = "due_local") -> None:
        super().__init__(message, field=field)
        self.code = code  # type: ignore[misc]  # per instance: one class for the five reasons


@dataclass(frozen=True, slots=True)
class ResolvedTime:
    """A due time as stored (UTC) and as the user reads it."""

    utc: datetime
    local: datetime
    zone: str

    @property
    def display(self) -> str:
        """How it is confirmed to the user: "Tue 8 Dec 14:32"."""
        return time_display(self.local)

    def as_dict(self) -> dict[str, str]:
        return {
            "due_at": self.local.isoformat(timespec="minutes"),
            "due_local": self.local.strftime(LOCAL_FORMAT),
            "timezone": self.zone,
            "display": self.display,
        }


def local_time_parse(text: object) -> datetime:
    """A naive wall-clock datetime from `YYYY-MM-DDTHH:MM` (seconds and a space instead of T accepted)."""
    if not isinstance(text, str) or len(text) > 32:
        raise TimeRefused("invalid_time", "Give the time as YYYY-MM-DDTHH:MM, in the user's own time zone.")
    cleaned = text.strip().replace(" ", "T")
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise TimeRefused(
            "invalid_time", f"{text[:32]!r} is not a time: give it as YYYY-MM-DDTHH:MM in the user's time zone."
        ) from None
    if parsed.tzinfo is not None:
        raise TimeRefused("invalid_time", "Give the user's wall-clock time without a UTC offset (YYYY-MM-DDTHH:MM).")
    return parsed.replace(second=0, microsecond=0)


def local_time_resolve(wall: datetime, *, zone_name: str, now: datetime, allow_past: bool = False) -> ResolvedTime:
    """The UTC instant of a naive wall-clock time in `zone_name`, refusing the doubtful cases
    (a past time too, unless `allow_past`: a to-do may already be late)."""
    zone = zone_get(zone_name)
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() != second.utcoffset():
        # zoneinfo gives both readings of a time that a DST change skips or repeats; a real
        # time survives the round trip through UTC, a skipped one does not.
        if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall:
            raise TimeRefused(
                "nonexistent_time",
                f"{wall:%H:%M} does not exist on {wall:%Y-%m-%d} in {zone_name}: the clocks skip it (daylight saving). "
                "Ask the user for another time.",
            )
        raise TimeRefused(
            "ambiguous_time",
            f"{wall:%H:%M} happens twice on {wall:%Y-%m-%d} in {zone_name} (the clocks go back). "
            "Ask the user which one, or pick another time.",
        )
    utc = first.astimezone(UTC)
    _window_check(utc, now=now, allow_past=allow_past)
    return ResolvedTime(utc=utc, local=first, zone=zone_name)


def instant_resolve(instant: datetime, *, zone_name: str, now: datetime) -> ResolvedTime:
    """An aware instant (an API's `due_at` with its offset), checked and read in `zone_name`."""
    if instant.tzinfo is None:
        raise TimeRefused(
            "invalid_time", "due_at needs its UTC offset; use due_local for a wall-clock time.", field="due_at"
        )
    utc = instant.astimezone(UTC)
    _window_check(utc, now=now, field="due_at")
    return ResolvedTime(utc=utc, local=utc.astimezone(zone_get(zone_name)), zone=zone_name)


def occurrence_next(*, due_at: datetime, zone_name: str, recurrence: str, after: datetime) -> datetime | None:
    """The first occurrence strictly after `after` (UTC) of a reminder repeating from `due_at`.

    Computed on wall-clock times in the reminder's zone, so 9:00 stays 9:00 across DST.
    None for a one-off reminder.
    """
    rule = _RULES.get(recurrence)
    if rule is None:
        return None
    zone = zone_get(zone_name)
    start = due_at.astimezone(zone).replace(tzinfo=None)
    after_local = after.astimezone(zone).replace(tzinfo=None)
    frequency, days = rule
    for wall in rrule(frequency, dtstart=start, byweekday=days).xafter(after_local, count=3, inc=False):
        # A wall time in a gap reads with the offset before the change: 02:30 becomes 03:30.
        candidate = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if candidate > after:
            return candidate
    return None


def time_display(local: datetime) -> str:
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def quiet_hours_contains(*, start: time | None, end: time | None, local: datetime) -> bool:
    """Whether a local time falls in quiet hours; `start` after `end` spans midnight."""
    if start is None or end is None or start == end:
        return False
    now = local.time().replace(tzinfo=None)
    if start < end:
        return start <= now < end
    return now >= start or now < end


def _window_check(utc: datetime, *, now: datetime, field: str = "due_local", allow_past: bool = False) -> None:
    if utc < now - PAST_GRACE and not allow_past:
        raise TimeRefused(
            "time_in_past", "That time has already passed. Ask the user for a time in the future.", field=field
        )
    if utc > now + AHEAD_MAX:
        raise TimeRefused("too_far_ahead", f"Reminders can be set at most {AHEAD_MAX.days} days ahead.", field=field)
