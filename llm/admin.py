"""Staff views of what model calls cost: background calls (and the ones a task gave up after), daily counters."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from llm.models import UsageAvatarDay, UsageDay, UsageRecord


class _ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the code writes; staff read them, add and change none."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(_ReadOnlyAdmin):
    list_display = (
        "created_at",
        "kind",
        "user",
        "avatar",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "outcome",
        "reason",
        "gave_up",
    )
    list_filter = ("gave_up", "kind", "outcome", "day")
    search_fields = ("user__username", "subject", "model")
    list_select_related = ("user", "avatar")


@admin.register(UsageDay)
class UsageDayAdmin(_ReadOnlyAdmin):
    list_display = ("day", "user", "tokens", "cost_usd", "images", "reserved_tokens", "reserved_usd", "reserved_until")
    list_filter = ("day",)
    search_fields = ("user__username",)
    list_select_related = ("user",)


@admin.register(UsageAvatarDay)
class UsageAvatarDayAdmin(_ReadOnlyAdmin):
    list_display = ("day", "user", "avatar", "tokens", "cost_usd", "reserved_tokens", "reserved_usd", "reserved_until")
    list_filter = ("day",)
    search_fields = ("user__username", "avatar__name")
    list_select_related = ("user", "avatar")
