"""Wall-clock times in the user's zone: DST edges, the past, recurrence, quiet hours. No database."""

from datetime import UTC, datetime, time

import pytest

from core.errors import InvalidInput
from core.timezones import zone_get
from secretary.clock import (
    TimeRefused,
    instant_resolve,
    local_time_parse,
    local_time_resolve,
    occurrence_next,
    quiet_hours_contains,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def resolve(text: str, zone: str, now: datetime = NOW) -> datetime:
    return local_time_resolve(local_time_parse(text), zone_name=zone, now=now).utc


def refusal(text: str, zone: str, now: datetime = NOW) -> str:
    with pytest.raises(TimeRefused) as refused:
        resolve(text, zone, now)
    return refused.value.code


def test_a_wall_clock_time_is_read_in_the_users_zone() -> None:
    assert resolve("2026-12-24T09:00", "Europe/Paris") == datetime(2026, 12, 24, 8, 0, tzinfo=UTC)
    assert resolve("2026-12-24T09:00", "America/New_York") == datetime(2026, 12, 24, 14, 0, tzinfo=UTC)
    assert resolve("2026-07-01 09:00", "America/New_York") == datetime(2026, 7, 1, 13, 0, tzinfo=UTC)  # EDT


@pytest.mark.parametrize(
    ("text", "zone", "code"),
    [
        ("2026-03-29T02:30", "Europe/Paris", "nonexistent_time"),  # clocks jump 02:00 -> 03:00
        ("2026-10-25T02:30", "Europe/Paris", "ambiguous_time"),  # 02:00-03:00 happens twice
        ("2026-03-08T02:15", "America/New_York", "nonexistent_time"),
        ("2026-11-01T01:30", "America/New_York", "ambiguous_time"),
        ("2026-02-28T09:00", "Europe/Paris", "time_in_past"),
        ("3000-01-01T09:00", "Europe/Paris", "too_far_ahead"),
        ("tomorrow at 9", "Europe/Paris", "invalid_time"),
        ("2026-12-24T09:00+01:00", "Europe/Paris", "invalid_time"),
    ],
)
def test_doubtful_times_are_refused_with_a_code_the_model_can_explain(text: str, zone: str, code: str) -> None:
    assert refusal(text, zone) == code


def test_the_hours_around_a_dst_change_are_accepted() -> None:
    assert resolve("2026-03-29T01:59", "Europe/Paris") == datetime(2026, 3, 29, 0, 59, tzinfo=UTC)
    assert resolve("2026-03-29T03:00", "Europe/Paris") == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert resolve("2026-10-25T03:00", "Europe/Paris") == datetime(2026, 10, 25, 2, 0, tzinfo=UTC)


def test_a_past_time_is_accepted_only_when_asked() -> None:
    wall = local_time_parse("2026-02-01T09:00")
    assert local_time_resolve(wall, zone_name="UTC", now=NOW, allow_past=True).utc == datetime(
        2026, 2, 1, 9, 0, tzinfo=UTC
    )


def test_an_unknown_zone_is_refused_on_the_timezone_field() -> None:
    with pytest.raises(InvalidInput) as refused:
        zone_get("Mars/Olympus_Mons")
    assert refused.value.field == "timezone"


def test_an_instant_with_an_offset_is_read_back_in_the_zone() -> None:
    resolved = instant_resolve(datetime(2026, 12, 24, 8, 0, tzinfo=UTC), zone_name="Europe/Paris", now=NOW)
    assert resolved.as_dict() == {
        "due_at": "2026-12-24T09:00+01:00",
        "due_local": "2026-12-24T09:00",
        "timezone": "Europe/Paris",
        "display": "Thu 24 Dec 09:00",
    }


def test_a_daily_reminder_keeps_its_wall_clock_time_across_the_spring_change() -> None:
    # Given 09:00 Paris on the Saturday before the clocks go forward
    first = resolve("2026-03-28T09:00", "Europe/Paris")
    # When it repeats
    second = occurrence_next(due_at=first, zone_name="Europe/Paris", recurrence="daily", after=first)
    # Then it is 09:00 local again, one hour earlier in UTC
    assert first == datetime(2026, 3, 28, 8, 0, tzinfo=UTC)
    assert second == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)


def test_weekdays_skip_the_weekend_and_weekly_keeps_the_weekday_across_the_autumn_change() -> None:
    friday = resolve("2026-10-23T09:00", "Europe/Paris")
    monday = occurrence_next(due_at=friday, zone_name="Europe/Paris", recurrence="weekdays", after=friday)
    assert monday is not None
    assert monday.astimezone(zone_get("Europe/Paris")).strftime("%a %H:%M %z") == "Mon 09:00 +0100"
    weekly = occurrence_next(due_at=friday, zone_name="Europe/Paris", recurrence="weekly", after=friday)
    assert weekly == datetime(2026, 10, 30, 8, 0, tzinfo=UTC)


def test_an_occurrence_in_the_spring_gap_moves_forward_by_the_gap() -> None:
    start = resolve("2026-03-28T02:30", "Europe/Paris")
    gap_day = occurrence_next(due_at=start, zone_name="Europe/Paris", recurrence="daily", after=start)
    assert gap_day is not None
    assert gap_day.astimezone(zone_get("Europe/Paris")).strftime("%d %H:%M") == "29 03:30"


def test_an_overdue_recurring_reminder_skips_to_the_next_future_occurrence() -> None:
    start = resolve("2026-03-02T09:00", "UTC")
    later = datetime(2026, 3, 5, 10, 0, tzinfo=UTC)
    assert occurrence_next(due_at=start, zone_name="UTC", recurrence="daily", after=later) == datetime(
        2026, 3, 6, 9, 0, tzinfo=UTC
    )
    assert occurrence_next(due_at=start, zone_name="UTC", recurrence="", after=later) is None


@pytest.mark.parametrize(
    ("start", "end", "clock", "quiet"),
    [
        (time(22), time(8), time(23, 30), True),
        (time(22), time(8), time(7, 59), True),
        (time(22), time(8), time(8, 0), False),
        (time(22), time(8), time(12), False),
        (time(13), time(14), time(13, 30), True),
        (time(13), time(14), time(14, 30), False),
        (None, None, time(3), False),
    ],
)
def test_quiet_hours_may_span_midnight(start: time | None, end: time | None, clock: time, quiet: bool) -> None:
    local = datetime(2026, 5, 1, clock.hour, clock.minute)
    assert quiet_hours_contains(start=start, end=end, local=local) is quiet
