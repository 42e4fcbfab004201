from django.conf import settings
from django.db import models


class Profile(models.Model):
    """What the app knows about a user beyond Django's `User`."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile")
    display_name = models.CharField(max_length=80, blank=True)
    adult_confirmed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the user confirmed being an adult; required for intimate mode."
    )
    intimate_opt_in = models.BooleanField(
        default=False, help_text="The user chose to allow intimate mode. Requires adult confirmation."
    )
    locale = models.CharField(
        max_length=8, default="US", help_text='A country code ("US", "GB", "FR", "DE"...): which crisis lines to show.'
    )
    timezone = models.CharField(
        max_length=64, default="UTC", help_text="An IANA zone (Europe/Paris): reminders and quiet hours are read in it."
    )
    quiet_hours_start = models.TimeField(
        null=True, blank=True, help_text="No message the user did not ask for from this local time..."
    )
    quiet_hours_end = models.TimeField(null=True, blank=True, help_text="...until this one (it may be the next day).")
    proactive_opt_in = models.BooleanField(
        default=False, help_text="The user allows avatars to write first after a silence (check-ins)."
    )
    recall_across_avatars = models.BooleanField(
        default=False,
        help_text="Each avatar may recall what the user told the others (recall; off: each keeps its own).",
    )
    # The user's own daily quotas, set by staff: empty = the QUOTA_DAILY_* setting.
    quota_daily_tokens = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="This user's own daily token quota; empty: QUOTA_DAILY_TOKENS."
    )
    quota_daily_usd = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="This user's own daily USD quota; empty: QUOTA_DAILY_USD.",
    )
    quota_daily_images = models.PositiveIntegerField(
        null=True, blank=True, help_text="This user's own daily image quota; empty: QUOTA_DAILY_IMAGES."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.display_name or str(self.user)

    @property
    def adult_confirmed(self) -> bool:
        return self.adult_confirmed_at is not None


class TokenKind(models.TextChoices):
    ACCESS = "access", "Access"
    REFRESH = "refresh", "Refresh"


class ApiToken(models.Model):
    """An opaque bearer token, stored only as its SHA-256 hash.

    A refresh token and the access tokens issued with it share a `family`; logging out or
    reusing a rotated refresh token revokes the whole family.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    kind = models.CharField(max_length=8, choices=TokenKind.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    family = models.UUIDField(db_index=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["user", "kind"])]

    def __str__(self) -> str:
        return f"{self.kind} token of {self.user_id}"
