"""A picture: a portrait of an avatar or a picture sent in a chat, from request to stored file.

`status` goes `pending -> ready | refused | failed` and never back. The file lives in the
`IMAGE_STORAGE` storage (never under MEDIA_URL) and is served by `images.api` to who may see
it. `cache_key` (the prompt, its parameters and the model, hashed) lets a second identical
request of the same owner reuse a ready picture instead of paying for it again.
`request_id` makes a request idempotent per owner (a client retrying, a task redelivered).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from images.storage import image_storage
from llm.models import COST_DIGITS, COST_PLACES

PROMPT_MAX = 1000
REQUEST_ID_MAX = 64


class ImageKind(models.TextChoices):
    PORTRAIT = "portrait", "Portrait"
    CHAT = "chat", "Picture in a chat"


class ImageStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    REFUSED = "refused", "Refused"
    FAILED = "failed", "Failed"


class Image(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="images",
        help_text="Who asked for it; empty for a catalogue avatar's portrait made from the admin.",
    )
    avatar = models.ForeignKey("avatars.Avatar", on_delete=models.CASCADE, related_name="pictures")
    conversation = models.ForeignKey(
        "conversations.Conversation", on_delete=models.CASCADE, null=True, blank=True, related_name="images"
    )
    kind = models.CharField(max_length=16, choices=ImageKind.choices)
    status = models.CharField(max_length=16, choices=ImageStatus.choices, default=ImageStatus.PENDING)
    prompt = models.TextField(max_length=PROMPT_MAX)
    request_text = models.CharField(max_length=400, blank=True, help_text="What the user asked for, as they said it.")
    size = models.CharField(max_length=16)
    quality = models.CharField(max_length=16, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=200, blank=True)
    cost_usd = models.DecimalField(max_digits=COST_DIGITS, decimal_places=COST_PLACES, default=0)
    error_code = models.CharField(max_length=64, blank=True)
    error = models.CharField(max_length=300, blank=True, help_text="Why it was refused or failed, for the user.")
    file = models.FileField(storage=image_storage, upload_to="pictures/", max_length=200, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    cache_key = models.CharField(max_length=64, db_index=True)
    cached_from = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    request_id = models.CharField(max_length=REQUEST_ID_MAX, null=True, blank=True)  # noqa: DJ001 - NULL keeps the constraint partial
    attempts = models.PositiveSmallIntegerField(default=0)
    # Set by the attempt that holds the picture (a lease), so a redelivered task does not call twice.
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Counted in the owner's UsageDay.images at admission (given back if it ends refused or failed).
    counted_day = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["owner", "cache_key", "status"])]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "request_id"], condition=Q(request_id__isnull=False), name="image_owner_request_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} picture {self.pk} ({self.status})"
