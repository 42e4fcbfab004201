"""What the model calls cost: counter rows per user and day (the quota's), and a row per background call.

`UsageDay` is the row the user's quota locks: two turns of one user admitted at once both go
through a conditional UPDATE of it (llm/quotas.py). Its `day` is the user's own calendar day
(`Profile.timezone`), the day a quota resets. `UsageAvatarDay` is the same counter for one
user's use of one avatar, kept only for avatars with a daily limit of their own.

`UsageRecord` is one background call (a summary, a fact extraction): what it cost and how it
ended, so that work nobody sees is counted in the usage report and a task that gave up says why
in the admin. Replies and scheduled messages carry their cost on their `Message`.
"""

from django.conf import settings
from django.db import models

COST_DIGITS = 18
COST_PLACES = 10  # llm.catalog.COST_PLACES


class UsageCounter(models.Model):
    """What was spent on one day, and what admitted turns still running may spend (llm/quotas.py).

    The reservations of a period are given back together once the last one admitted is older
    than `QUOTA_RESERVATION_SECONDS` (`reserved_until`): a process killed mid-reply holds the
    user's allowance for minutes, not until midnight. `reserved_since` is when the period
    began, so a turn admitted before it knows its reservation was already given back.
    """

    day = models.DateField(help_text="The user's calendar day, in their own time zone.")
    tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES, default=0)
    reserved_tokens = models.BigIntegerField(default=0)
    reserved_usd = models.DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES, default=0)
    reserved_since = models.DateTimeField(null=True, blank=True)
    reserved_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class UsageDay(UsageCounter):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_days")
    images = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "day"], name="usage_day_user_day_unique")]

    def __str__(self) -> str:
        return f"usage of {self.user_id} on {self.day}"


class UsageAvatarDay(UsageCounter):
    """One user's spending with one avatar on their day: the counter of the avatar's own limit."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    avatar = models.ForeignKey("avatars.Avatar", on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "avatar", "day"], name="usage_avatar_day_user_avatar_day_unique")
        ]

    def __str__(self) -> str:
        return f"usage of {self.user_id} with avatar {self.avatar_id} on {self.day}"


class UsageKind(models.TextChoices):
    SUMMARY = "summary", "Summary"
    FACTS = "facts", "Fact extraction"
    TITLE = "title", "Title"


class UsageRecord(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="usage_records"
    )
    avatar = models.ForeignKey("avatars.Avatar", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    conversation = models.ForeignKey(
        "conversations.Conversation", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    kind = models.CharField(max_length=16, choices=UsageKind.choices)
    subject = models.CharField(
        max_length=64, blank=True, help_text='What the call was about: "message:12", "conversation:3".'
    )
    model = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES, default=0)
    day = models.DateField(help_text="The user's calendar day, in their own time zone.")
    outcome = models.CharField(max_length=64, default="ok", help_text='"ok", or the error code.')
    reason = models.CharField(max_length=200, blank=True, help_text="Why the output was refused, when it was.")
    gave_up = models.BooleanField(default=False, help_text="The task stopped retrying after this call.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["day"]), models.Index(fields=["kind", "subject", "-id"])]

    def __str__(self) -> str:
        return f"{self.kind} call {self.pk}"
