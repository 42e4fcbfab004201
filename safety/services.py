"""Writes of the safety app: the daily counts, incremented in the caller's transaction."""

from datetime import date

from django.db.models import F

from safety.models import SafetyDailyCount


def safety_counts_add(
    *, day: date, crisis_detections: int = 0, referrals_shown: int = 0, notices_shown: int = 0
) -> None:
    """Add to the day's counts: one row per day, incremented with F() so concurrent turns never lose a count."""
    if not (crisis_detections or referrals_shown or notices_shown):
        return
    SafetyDailyCount.objects.get_or_create(day=day)
    SafetyDailyCount.objects.filter(day=day).update(
        crisis_detections=F("crisis_detections") + crisis_detections,
        referrals_shown=F("referrals_shown") + referrals_shown,
        notices_shown=F("notices_shown") + notices_shown,
    )
