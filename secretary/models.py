"""Reminders and tasks: what the secretary promised to do, owned by one user.

Times are stored in UTC. A reminder also keeps the IANA zone it was set in, because a
recurring one repeats at the same wall-clock time there ("every weekday at 9:00" stays 9:00
across a DST change), and a confirmation is read back in that zone.
"""

from django.conf import settings
from django.db import models


class Recurrence(models.TextChoices):
    NONE = "", "once"
    DAILY = "daily", "every day"
    WEEKDAYS = "weekdays", "every weekday (Monday to Friday)"
    WEEKLY = "weekly", "every week"


class ReminderStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Being sent"  # claimed by a deliverer (secretary/delivery.py)
    SENT = "sent", "Sent"
    CANCELLED = "cancelled", "Cancelled"


class Reminder(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reminders")
    conversation = models.ForeignKey("conversations.Conversation", on_delete=models.CASCADE, related_name="reminders")
    text = models.CharField(max_length=500)
    due_at = models.DateTimeField(help_text="The next time it falls due, in UTC.")
    timezone = models.CharField(max_length=64, help_text="The IANA zone its wall-clock time is read in.")
    recurrence = models.CharField(max_length=16, choices=Recurrence.choices, default=Recurrence.NONE, blank=True)
    status = models.CharField(max_length=16, choices=ReminderStatus.choices, default=ReminderStatus.PENDING)
    # A deliverer's claim: who holds it and until when; an expired claim is taken over (a worker died).
    claim_token = models.UUIDField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Deliveries claimed and not finished.")
    sent_count = models.PositiveIntegerField(default=0)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    source_message = models.ForeignKey(
        "conversations.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["due_at", "id"]
        indexes = [
            models.Index(fields=["status", "due_at"], name="reminder_due"),
            models.Index(fields=["user", "status", "due_at"], name="reminder_user_status"),
        ]

    def __str__(self) -> str:
        return f"Reminder {self.pk} ({self.status})"


class Task(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=200)
    notes = models.TextField(blank=True, max_length=2000)
    due_at = models.DateTimeField(null=True, blank=True)
    done = models.BooleanField(default=False)
    done_at = models.DateTimeField(null=True, blank=True)
    source_message = models.ForeignKey(
        "conversations.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["done", "due_at", "id"]
        indexes = [models.Index(fields=["user", "done"], name="task_user_done")]

    def __str__(self) -> str:
        return self.title
