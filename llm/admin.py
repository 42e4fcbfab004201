"""Staff views of what model calls cost: background calls (and the ones a task gave up after), daily counters."""

from django.contrib import admin
from django.http import HttpRequest

from llm.models import UsageAvatarDay, UsageDay, UsageRecord


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
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
    readonly_fields = [field.name for field in UsageRecord._meta.fields]
    list_select_related = ("user", "avatar")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False


@admin.register(UsageDay)
class UsageDayAdmin(admin.ModelAdmin):
    list_display = ("day", "user", "tokens", "cost_usd", "images", "reserved_tokens", "reserved_usd", "reserved_until")
    list_filter = ("day",)
    search_fields = ("user__username",)
    readonly_fields = [field.name for field in UsageDay._meta.fields]
    list_select_related = ("user",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageDay | None = None) -> bool:
        return False


@admin.register(UsageAvatarDay)
class UsageAvatarDayAdmin(admin.ModelAdmin):
    list_display = ("day", "user", "avatar", "tokens", "cost_usd", "reserved_tokens", "reserved_usd", "reserved_until")
    list_filter = ("day",)
    search_fields = ("user__username", "avatar__name")
    readonly_fields = [field.name for field in UsageAvatarDay._meta.fields]
    list_select_related = ("user", "avatar")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageAvatarDay | None = None) -> bool:
        return False
