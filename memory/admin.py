"""Staff views of summaries and remembered facts."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from memory.models import Memory, Summary


@admin.register(Summary)
class SummaryAdmin(admin.ModelAdmin):
    list_display = ("conversation", "covers_until", "model", "updated_at")
    list_select_related = ("conversation",)
    search_fields = ("text", "conversation__user__username")
    raw_id_fields = ("conversation", "covers_until")
    readonly_fields = ("created_at", "updated_at")
    date_hierarchy = "updated_at"


@admin.register(Memory)
class MemoryAdmin(admin.ModelAdmin):
    list_display = ("text", "key", "user", "avatar", "pinned", "updated_at")
    list_filter = ("pinned", "avatar")
    list_select_related = ("user", "avatar")
    search_fields = ("text", "key", "user__username")
    raw_id_fields = ("user", "avatar", "source_message")
    readonly_fields = ("created_at", "updated_at")
    actions = ("pin", "unpin")

    @admin.action(description="Pin: never rewritten or dropped")
    def pin(self, request: HttpRequest, queryset: QuerySet[Memory]) -> None:
        queryset.update(pinned=True)

    @admin.action(description="Unpin")
    def unpin(self, request: HttpRequest, queryset: QuerySet[Memory]) -> None:
        queryset.update(pinned=False)
