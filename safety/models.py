"""Crisis resources per locale (operators edit them in the admin) and the daily counts the law asks for.

No message text is stored here: the counts are numbers per day, nothing else.
"""

from django.db import models

DEFAULT_LOCALE = "US"


class CrisisResource(models.Model):
    """A crisis line shown to a user of `locale` (an ISO 3166 country code, e.g. "US", "GB")."""

    locale = models.CharField(max_length=8, db_index=True, help_text='A country code: "US", "GB", "FR", "DE"...')
    name = models.CharField(max_length=120)
    phone = models.CharField(max_length=40, blank=True)
    text = models.CharField(max_length=120, blank=True, help_text='How to reach it by text, e.g. "Text 988".')
    url = models.URLField(blank=True)
    position = models.PositiveSmallIntegerField(default=0, help_text="Lower first.")
    active = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["locale", "position", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.locale})"


class SafetyDailyCount(models.Model):
    """Per UTC day: crisis detections, referrals shown (safety frames with resources), AI notices shown."""

    day = models.DateField(unique=True)
    crisis_detections = models.PositiveIntegerField(default=0)
    referrals_shown = models.PositiveIntegerField(default=0)
    notices_shown = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"Safety counts of {self.day}"
