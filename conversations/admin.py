"""Staff views of conversations and messages: why each reply was in its mode, what it cost, and usage.

A conversation's page lists its messages with the mode decision of each user message
(source, matched phrase, score, switched or stayed, blocked), and for each reply its
status, tokens and time to first token. The usage report (`conversations.admin_usage`)
is linked from the admin index and from these change lists.
"""

from typing import Any

from django.contrib import admin
from django.contrib.admin import DateFieldListFilter
from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from conversations.admin_usage import usage_report_view
from conversations.models import Conversation, Message, Role, Status

INSIGHT_CSS = "web/admin-insight.css"
CONTENT_PREVIEW_CHARS = 600

# The admin index links the insight pages that are not models (the usage report).
admin.site.index_template = "admin/conversations/site_index.html"


def mode_chip(mode: str) -> SafeString:
    return format_html('<span class="mode-chip {}">{}</span>', mode, mode or "-")


def mode_decision_html(message: Message) -> SafeString:
    """The router's decision on a user message, in words: source, phrase, score, switched or not, blocked."""
    route = message.route or {}
    if message.role != Role.USER or not route:
        return format_html("{}", "-")
    previous, mode = route.get("previous"), route.get("mode")
    if route.get("switch"):
        outcome = format_html('<span class="switched">switched</span> {} → {}', previous or "?", mode)
    else:
        outcome = format_html("stayed in {}", mode)
    lines = [
        format_html('{} <span class="quiet">({})</span>', outcome, route.get("source") or "?"),
        format_html(
            "pointed to {} · matched “{}” · score {}",
            route.get("pointed") or "no mode",
            route.get("matched") or "-",
            route.get("score") if route.get("score") is not None else "-",
        ),
    ]
    if route.get("lock") is not None:
        lines.append(format_html("lock {}", "set" if route.get("lock") else "released"))
    if route.get("blocked"):
        blocked = format_html('<span class="blocked">blocked {}</span>', route.get("blocked"))
        lines.append(format_html("{} ({})", blocked, route.get("blocked_reason")))
    return _lines_html(lines)


def reply_figures_html(message: Message) -> SafeString:
    """Status, tokens and timings of an assistant message."""
    if message.role != Role.ASSISTANT:
        return format_html("{}", "-")
    parts = [format_html('<span class="status-chip {}">{}</span>', message.status, message.get_status_display())]
    if message.finish_reason == "greeting":
        parts.append(format_html("{}", "greeting"))
    if message.prompt_tokens is not None or message.completion_tokens is not None:
        parts.append(
            format_html("tokens {} prompt / {} completion", message.prompt_tokens or 0, message.completion_tokens or 0)
        )
    if message.ttft_ms is not None:
        parts.append(format_html("first token {} ms", message.ttft_ms))
    if message.duration_ms is not None:
        parts.append(format_html("total {} ms", message.duration_ms))
    if message.model:
        parts.append(format_html("{}", message.model))
    if message.error_code:
        parts.append(format_html('<span class="status-chip failed">{}</span>', message.error_code))
    return _lines_html(parts)


def recall_html(message: Message) -> SafeString:
    """What recall found for the turn a reply answers, and why: each message and fact with its score and reasons."""
    record = message.recall or {}
    if message.role != Role.ASSISTANT or not record:
        return format_html("{}", "-")
    lines = [
        format_html("searched: {} ({} ms)", ", ".join(record.get("terms") or []) or "-", record.get("took_ms", "?"))
    ]
    if record.get("error"):
        lines.append(format_html('<span class="status-chip failed">failed: {}</span>', record["error"]))
    for item in record.get("messages") or []:
        lines.append(
            format_html(
                '<a href="../{}/change/">message {}</a> (conversation {}) score {}: {}{}',
                item.get("id"),
                item.get("id"),
                item.get("conversation_id"),
                item.get("score"),
                item.get("reason"),
                "" if item.get("in_prompt") else " (left out: over the budget)",
            )
        )
    for item in record.get("facts") or []:
        lines.append(
            format_html(
                "fact {} score {}: {}{}",
                item.get("id"),
                item.get("score"),
                item.get("reason"),
                "" if item.get("in_prompt") else " (not in the section)",
            )
        )
    if not record.get("messages") and not record.get("facts"):
        lines.append(format_html("{}", "nothing recalled"))
    return _lines_html(lines)


def _lines_html(lines: list[SafeString]) -> SafeString:
    return format_html('<div class="decision">{}</div>', format_html_join("", "<div>{}</div>", ((x,) for x in lines)))


class MessageInsightColumns:
    """The read-only columns that explain a message: its mode decision, its reply's figures, what it recalled."""

    @admin.display(description="mode decision")
    def mode_decision(self, message: Message) -> SafeString:
        return mode_decision_html(message)

    @admin.display(description="reply: status, tokens, time to first token")
    def reply(self, message: Message) -> SafeString:
        return reply_figures_html(message)

    @admin.display(description="recalled for this reply, and why")
    def recalled(self, message: Message) -> SafeString:
        return recall_html(message)


class MessageInline(MessageInsightColumns, admin.TabularInline):
    model = Message
    fk_name = "conversation"
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("id", "role", "mode_shown", "text", "mode_decision", "reply", "created_at")
    readonly_fields = fields
    verbose_name = "message"
    verbose_name_plural = "Messages (the mode decision of each user message; status, tokens and timings of each reply)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="mode")
    def mode_shown(self, message: Message) -> SafeString:
        return mode_chip(message.mode)

    @admin.display(description="message")
    def text(self, message: Message) -> SafeString:
        content = message.content
        if len(content) > CONTENT_PREVIEW_CHARS:
            content = content[: CONTENT_PREVIEW_CHARS - 1].rstrip() + "…"
        return format_html('<span class="message-text">{}</span>', content or "(empty)")


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "avatar", "mode", "mode_locked", "message_count", "last_message_at")
    list_filter = (
        "mode",
        "mode_locked",
        "avatar",
        ("last_message_at", DateFieldListFilter),
        ("created_at", DateFieldListFilter),
    )
    search_fields = ("user__username", "avatar__name", "avatar__slug", "title")
    readonly_fields = ("created_at", "updated_at", "last_message_at", "message_count", "totals")
    list_select_related = ("user", "avatar")
    raw_id_fields = ("user", "avatar")
    date_hierarchy = "created_at"
    inlines = [MessageInline]
    change_list_template = "admin/conversations/change_list_with_usage.html"
    fieldsets = (
        (None, {"fields": ("user", "avatar", "title", "mode", "mode_locked")}),
        ("Activity", {"fields": ("totals", "message_count", "last_message_at", "created_at", "updated_at")}),
    )

    class Media:
        css = {"all": (INSIGHT_CSS,)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return super().get_queryset(request).select_related("user", "avatar")

    def get_urls(self) -> list[URLPattern]:
        urls = [
            path(
                "usage/",
                self.admin_site.admin_view(self.usage_report),
                name="conversations_usage_report",
            )
        ]
        return urls + super().get_urls()

    def usage_report(self, request: HttpRequest) -> HttpResponse:
        return usage_report_view(request, site=self.admin_site)

    @admin.display(description="replies and tokens")
    def totals(self, conversation: Conversation) -> str:
        if conversation.pk is None:
            return "-"
        reply = Q(role=Role.ASSISTANT, reply_to__isnull=False)
        figures = Message.objects.filter(conversation_id=conversation.pk).aggregate(
            replies=Count("id", filter=reply),
            cancelled=Count("id", filter=reply & Q(status=Status.CANCELLED)),
            fallbacks=Count("id", filter=reply & Q(status=Status.FALLBACK)),
            failures=Count("id", filter=reply & Q(status=Status.FAILED)),
            tokens_prompt=Sum("prompt_tokens", default=0),
            tokens_completion=Sum("completion_tokens", default=0),
            ttft_avg=Avg("ttft_ms"),
        )
        ttft = f"{round(figures['ttft_avg'])} ms" if figures["ttft_avg"] is not None else "-"
        return (
            f"{figures['replies']} replies ({figures['cancelled']} stopped, {figures['fallbacks']} fallbacks, "
            f"{figures['failures']} failures); tokens {figures['tokens_prompt']} prompt / "
            f"{figures['tokens_completion']} completion; average time to first token {ttft}"
        )


@admin.register(Message)
class MessageAdmin(MessageInsightColumns, admin.ModelAdmin):
    list_display = (
        "id",
        "conversation",
        "role",
        "mode",
        "status",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
    )
    list_filter = (
        "role",
        "mode",
        "status",
        ("created_at", DateFieldListFilter),
        "conversation__avatar",
    )
    search_fields = ("content", "client_id", "conversation__user__username")
    raw_id_fields = ("conversation", "reply_to")
    list_select_related = ("conversation",)
    readonly_fields = ("created_at", "mode_decision", "reply", "recalled")
    date_hierarchy = "created_at"
    change_list_template = "admin/conversations/change_list_with_usage.html"

    class Media:
        css = {"all": (INSIGHT_CSS,)}
