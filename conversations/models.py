from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

from avatars.models import Avatar
from core.modes import Mode

# The value of `Conversation.safety_state` and `Message.safety` after the crisis detector flagged a turn.
SAFETY_CRISIS = "crisis"


class Conversation(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    avatar = models.ForeignKey(Avatar, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    # Who wrote the title: the avatar's name at creation, an automatic one from the first
    # exchange (conversations/titles.py), or the user; an automatic title never replaces the user's.
    title_source = models.CharField(
        max_length=8,
        choices=[("avatar", "avatar's name"), ("auto", "automatic"), ("user", "user")],
        default="avatar",
    )
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.SECRETARY)
    mode_locked = models.BooleanField(default=False, help_text="A user lock: automatic switching is off.")
    # "crisis" from a flagged turn until the next calm one: intimate mode stays closed meanwhile (docs/safety.md).
    safety_state = models.CharField(max_length=16, choices=[("", "calm"), ("crisis", "crisis")], default="", blank=True)
    ai_notice_at = models.DateTimeField(null=True, blank=True, help_text="When the AI notice was last shown here.")
    message_count = models.PositiveIntegerField(default=0)
    # The newest message the user has read: assistant messages after it are `unread`.
    last_read_message_id = models.BigIntegerField(null=True, blank=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["user", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk} with {self.avatar_id}"


class Role(models.TextChoices):
    USER = "user", "User"
    ASSISTANT = "assistant", "Assistant"


class Status(models.TextChoices):
    COMPLETE = "complete", "Complete"
    STREAMING = "streaming", "Streaming"
    CANCELLED = "cancelled", "Cancelled"
    FAILED = "failed", "Failed"
    FALLBACK = "fallback", "Fallback"


class Origin(models.TextChoices):
    """Why a message exists: the user wrote it, it answers one, or the avatar wrote first."""

    USER = "user", "User"
    REPLY = "reply", "Reply"
    REMINDER = "reminder", "Reminder"
    PROACTIVE = "proactive", "Proactive check-in"
    GREETING = "greeting", "Greeting"


class Message(models.Model):
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    mode = models.CharField(max_length=16, choices=Mode.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001 - NULL keeps the unique constraint partial
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.REPLY)
    # The reminder whose delivery wrote this message (origin "reminder").
    reminder = models.ForeignKey(
        "secretary.Reminder", on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    # A reminder sent more than a minute after its time (a restart, a backlog): clients may say so.
    late = models.BooleanField(default=False)
    reply_to = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # The replies to one user message (same `reply_to`) are alternatives of each other: a
    # regeneration adds one. Exactly one is selected; the others are superseded, kept for the
    # user to pick again, and left out of the history, the prompt and the summary.
    superseded = models.BooleanField(default=False)
    # The mode decision that routed this user message: {mode, score, matched, switch, source, blocked, ...}
    route = models.JSONField(null=True, blank=True)
    # "crisis" on a user message the crisis detector flagged; "" otherwise.
    safety = models.CharField(max_length=16, choices=[("", "none"), ("crisis", "crisis")], default="", blank=True)
    # What recall found for the turn this reply answers (recall.selectors.Recall.as_record):
    # message and fact ids with scores and reasons, which of them went into the prompt; no text.
    recall = models.JSONField(null=True, blank=True)
    # What the secretary did while writing this reply: [{name, arguments, result, error}], in order.
    actions = models.JSONField(default=list, blank=True)
    # A picture this assistant message carries (images app): {id, status, url} in the message's dict.
    image = models.ForeignKey("images.Image", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # LLM accounting for assistant messages.
    model = models.CharField(max_length=200, blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time to first token, milliseconds.")
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # What the model calls behind this message cost (every round of a tool loop), from llm/catalog.py's prices.
    cost_usd = models.DecimalField(max_digits=18, decimal_places=10, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["conversation", "-id"])]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_client_id_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role} message {self.pk}"


class ErasedUsage(models.Model):
    """What erased accounts used, kept for accounting with nothing that names them.

    When a user erases their account (`accounts.erasure.user_erase`) their messages go, and
    with them the rows the usage report counts; their figures are folded in here first, per
    local day, avatar and model, with their background calls (`llm.UsageRecord`). A call that
    ends after the erasure (a summary, a title, a reply in flight) is added here as a row of its
    own. A private avatar goes with the account, so its figures keep no avatar (`avatar`
    null); a catalogue avatar is kept. Nothing here holds a user id, a name or a text.
    """

    day = models.DateField()
    avatar = models.ForeignKey(Avatar, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    model = models.CharField(max_length=200, blank=True)
    user_messages = models.PositiveIntegerField(default=0)
    replies = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    fallbacks = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=18, decimal_places=10, default=Decimal(0))
    # Calls with no message of their own: background work (summaries, facts, titles), and calls
    # that ended after the account was erased (llm.quotas).
    background_tokens = models.PositiveBigIntegerField(default=0)
    background_cost_usd = models.DecimalField(max_digits=18, decimal_places=10, default=Decimal(0))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-day", "id"]
        indexes = [models.Index(fields=["day"], name="erased_usage_day")]
        verbose_name_plural = "erased usage"

    def __str__(self) -> str:
        return f"Usage of erased accounts on {self.day}"
