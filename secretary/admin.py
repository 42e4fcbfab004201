"""Staff views of reminders and tasks: see what is due, what was sent, and cancel or resend."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from secretary.models import Reminder, ReminderStatus, Task


@admin.register(Reminder)
class ReminderAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "due_at", "timezone", "recurrence", "status", "sent_count", "attempts")
    list_filter = ("status", "recurrence")
    list_select_related = ("user",)
    search_fields = ("user__username",)
    raw_id_fields = ("user", "conversation", "source_message")
    readonly_fields = (
        "claim_token",
        "claimed_until",
        "attempts",
        "sent_count",
        "last_sent_at",
        "created_at",
        "updated_at",
    )
    date_hierarchy = "due_at"
    actions = ("cancel", "release")

    @admin.action(description="Cancel the selected pending reminders")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Reminder]) -> None:
        queryset.filter(status=ReminderStatus.PENDING).update(status=ReminderStatus.CANCELLED)

    @admin.action(description="Release a stuck delivery: pending again, attempts reset")
    def release(self, request: HttpRequest, queryset: QuerySet[Reminder]) -> None:
        queryset.filter(status=ReminderStatus.SENDING).update(
            status=ReminderStatus.PENDING, claim_token=None, claimed_until=None, attempts=0
        )


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "due_at", "done", "updated_at")
    list_filter = ("done",)
    list_select_related = ("user",)
    search_fields = ("title", "user__username")
    raw_id_fields = ("user", "source_message")
    readonly_fields = ("done_at", "created_at", "updated_at")
