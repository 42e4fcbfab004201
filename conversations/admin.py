from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

import conversations.memory_admin  # noqa: F401 - registers the Summary and Memory admins
from conversations.models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    fk_name = "conversation"
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("id", "role", "mode", "status", "content", "route_summary", "model", "tokens", "ttft_ms", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="mode decision")
    def route_summary(self, message: Message) -> str:
        route = message.route or {}
        if not route:
            return "-"
        switched = "switched" if route.get("switch") else "stayed"
        blocked = f", blocked {route.get('blocked')} ({route.get('blocked_reason')})" if route.get("blocked") else ""
        return (
            f"{route.get('source')}: {switched} to {route.get('mode')} "
            f"(pointed {route.get('pointed')}, '{route.get('matched') or '-'}', score {route.get('score')}){blocked}"
        )

    @admin.display(description="tokens (prompt/completion)")
    def tokens(self, message: Message) -> str:
        if message.prompt_tokens is None and message.completion_tokens is None:
            return "-"
        return f"{message.prompt_tokens or 0} / {message.completion_tokens or 0}"


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "avatar", "mode", "mode_locked", "message_count", "last_message_at")
    list_filter = ("mode", "mode_locked", "avatar")
    search_fields = ("user__username", "avatar__name", "title")
    readonly_fields = ("created_at", "updated_at", "last_message_at", "message_count")
    list_select_related = ("user", "avatar")
    inlines = [MessageInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return super().get_queryset(request).select_related("user", "avatar")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "role", "mode", "status", "model", "prompt_tokens", "completion_tokens")
    list_filter = ("role", "mode", "status", "created_at")
    search_fields = ("content", "client_id")
    raw_id_fields = ("conversation", "reply_to")
    list_select_related = ("conversation",)
    readonly_fields = ("created_at",)
