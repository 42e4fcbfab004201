from datetime import UTC, datetime
from typing import Any, Final

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from avatars.cards import card_read_upload
from avatars.forms import AvatarAdminForm, CardImportForm
from avatars.models import Avatar, AvatarPhrase
from avatars.services import avatar_import_card
from core.errors import DomainError
from core.modes import Mode
from llm.prompts import PromptContext, persona_from_avatar, post_history_prompt, system_prompt_for_mode
from llm.tokens import count_tokens

# The sample user of the prompt preview: what a real turn adds about the person talking.
PREVIEW_USER_NAME: Final = "Sam"
PREVIEW_FACTS: Final = (
    "Sam's sister Ana has her birthday on 3 May.",
    "Sam works night shifts at the hospital on weekends.",
)
PREVIEW_SUMMARY: Final = (
    "Sam is planning a move to Lisbon in the autumn and asked for help sorting the paperwork. "
    "Last time they said the week had been long and they were sleeping badly."
)
# A fixed clock, so the preview reads the same on every visit (real turns use the time of the message).
PREVIEW_NOW: Final = datetime(2025, 3, 4, 13, 5, tzinfo=UTC)
PREVIEW_TIMEZONE: Final = "Europe/Paris"


def avatar_prompt_preview_context(avatar: Avatar) -> PromptContext:
    """The prompt context of the sample user Sam talking with `avatar`, as saved."""
    return PromptContext(
        persona=persona_from_avatar(avatar),
        user_display_name=PREVIEW_USER_NAME,
        summary=PREVIEW_SUMMARY,
        facts=PREVIEW_FACTS,
        now=PREVIEW_NOW,
        timezone_name=PREVIEW_TIMEZONE,
    )


def avatar_prompt_previews(avatar: Avatar) -> dict[str, str]:
    """The system prompt of each mode for the sample user, built by the same functions as a real turn."""
    context = avatar_prompt_preview_context(avatar)
    return {mode: system_prompt_for_mode(mode, context) for mode in (Mode.SECRETARY.value, Mode.INTIMATE.value)}


class AvatarPhraseInline(admin.TabularInline):
    model = AvatarPhrase
    fields = ("mode", "text")
    extra = 1
    verbose_name = "intent phrase"
    verbose_name_plural = "Intent phrases (extra cues that point this avatar's conversations to a mode)"


@admin.register(Avatar)
class AvatarAdmin(admin.ModelAdmin):
    form = AvatarAdminForm
    list_display = ("name", "slug", "owner", "is_public", "intimate_allowed", "default_mode", "updated_at")
    list_display_links = ("name", "slug")
    list_filter = ("is_public", "intimate_allowed", "default_mode", ("owner", admin.EmptyFieldListFilter))
    search_fields = ("name", "slug", "tags", "description")
    list_select_related = ("owner",)
    prepopulated_fields = {"slug": ("name",)}
    raw_id_fields = ("owner",)
    readonly_fields = ("created_at", "updated_at", "system_prompt_preview", "portrait_preview")
    actions = ("portrait_make", "portrait_remake")
    inlines = (AvatarPhraseInline,)
    formfield_overrides = {
        models.TextField: {"widget": forms.Textarea(attrs={"rows": 8, "cols": 100})},
    }
    fieldsets = (
        ("Identity", {"fields": ("name", "slug", "tagline", "image", "owner", "is_public", "tags")}),
        ("Personality", {"fields": ("description", "personality", "scenario", "example_dialogue")}),
        (
            "Pictures",
            {
                "fields": ("appearance", "style", "portrait_preview"),
                "description": (
                    "Portraits and pictures in chats are drawn from the appearance and style (never sexual, never a "
                    "real person, never a minor). Use the actions 'Make a portrait' or 'Make a new portrait' in "
                    "the list of avatars."
                ),
            },
        ),
        ("Greetings", {"fields": ("first_message", "alternate_greetings")}),
        (
            "Modes",
            {
                "fields": (
                    "default_mode",
                    "default_model",
                    "intimate_allowed",
                    "secretary_instructions",
                    "intimate_instructions",
                ),
                "description": "Intimate mode is only ever entered for adults who opted in, and only if allowed here.",
            },
        ),
        (
            "Check-ins",
            {
                "fields": ("proactive_enabled", "proactive_after_hours", "proactive_max_per_day"),
                "description": (
                    "Messages this avatar may write first after a silence, only to users who opted in, never in "
                    "their quiet hours, and none again until the user answers."
                ),
            },
        ),
        (
            "Daily limits",
            {
                "fields": ("quota_daily_tokens", "quota_daily_usd"),
                "description": (
                    "What each user may spend with this avatar per day (their calendar day), besides their own "
                    "quota; a turn over either is refused with quota_exceeded before the model is called."
                ),
            },
        ),
        ("Fallbacks", {"fields": ("fallback_lines",)}),
        (
            "System prompt preview",
            {
                "classes": ("wide",),
                "fields": ("system_prompt_preview",),
                "description": (
                    "What the model is told in each mode, for a sample user: Sam, with two remembered facts and a "
                    "summary of earlier talk, on a fixed date (in a real turn the summary comes as a system message "
                    "of its own, worded the same). Built from the saved avatar: save to see your edits."
                ),
            },
        ),
        (
            "Card / advanced",
            {
                "classes": ("collapse",),
                "fields": (
                    "system_prompt",
                    "post_history_instructions",
                    "creator",
                    "creator_notes",
                    "character_version",
                    "card_extensions",
                    "created_at",
                    "updated_at",
                ),
            },
        ),
    )

    class Media:
        css = {"all": ("web/admin-insight.css",)}

    @admin.display(description="portrait")
    def portrait_preview(self, avatar: Avatar | None) -> SafeString | str:
        from images.admin import picture_preview_html

        return picture_preview_html(avatar.portrait if avatar is not None and avatar.portrait_id else None)

    @admin.action(description="Make a portrait (reuses an identical one already made)")
    def portrait_make(self, request: HttpRequest, queryset: "models.QuerySet[Avatar]") -> None:
        from images.admin import avatar_portraits_request

        avatar_portraits_request(request, queryset, fresh=False)

    @admin.action(description="Make a new portrait (regenerate, paid again)")
    def portrait_remake(self, request: HttpRequest, queryset: "models.QuerySet[Avatar]") -> None:
        from images.admin import avatar_portraits_request

        avatar_portraits_request(request, queryset, fresh=True)

    @admin.display(description="prompts")
    def system_prompt_preview(self, avatar: Avatar | None) -> SafeString | str:
        if avatar is None or avatar.pk is None:
            return "Save the avatar to see the prompt of each mode."
        previews = avatar_prompt_previews(avatar)
        notes = {
            Mode.INTIMATE.value: ""
            if avatar.intimate_allowed
            else " This avatar does not allow intimate mode: no conversation ever gets this prompt.",
        }
        blocks = format_html_join(
            "",
            '<section class="prompt-preview"><h3>{} mode</h3><p class="prompt-meta">about {} tokens.{}</p>'
            '<pre data-mode="{}">{}</pre></section>',
            (
                (mode.capitalize(), count_tokens(prompt), notes.get(mode, ""), mode, prompt)
                for mode, prompt in previews.items()
            ),
        )
        after_history = post_history_prompt(avatar_prompt_preview_context(avatar))
        tail = (
            format_html(
                '<section class="prompt-preview"><h3>After the history (both modes)</h3>'
                '<pre data-mode="post_history">{}</pre></section>',
                after_history,
            )
            if after_history
            else ""
        )
        return format_html('<div class="prompt-previews">{}{}</div>', blocks, tail)

    def get_urls(self) -> list[URLPattern]:
        urls = [
            path(
                "import-card/",
                self.admin_site.admin_view(self.import_card_view),
                name="avatars_avatar_import_card",
            )
        ]
        return urls + super().get_urls()

    def import_card_view(self, request: HttpRequest) -> HttpResponse:
        """Create an avatar from an uploaded character card (staff with the add permission)."""
        user = request.user
        if isinstance(user, AnonymousUser) or not self.has_add_permission(request):
            raise PermissionDenied
        form = CardImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                avatar = avatar_import_card(
                    user=user,
                    content=card_read_upload(upload, max_bytes=settings.CARD_MAX_BYTES),
                    catalogue=form.cleaned_data["catalogue"],
                )
            except DomainError as exc:
                form.add_error("file", f"{exc.message} ({exc.code})")
            else:
                self.message_user(request, f"Imported “{avatar.name}” ({avatar.slug}).", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:avatars_avatar_change", args=[avatar.pk]))
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Import character card",
            "form": form,
            "has_view_permission": self.has_view_permission(request),
        }
        return TemplateResponse(request, "admin/avatars/avatar/import_card.html", context)
