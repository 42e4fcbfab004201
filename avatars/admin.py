from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from avatars.cards import card_read_upload
from avatars.forms import AvatarAdminForm, CardImportForm
from avatars.models import Avatar, AvatarPhrase
from avatars.services import avatar_import_card
from companion.errors import DomainError


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
    readonly_fields = ("created_at", "updated_at")
    inlines = (AvatarPhraseInline,)
    formfield_overrides = {
        models.TextField: {"widget": forms.Textarea(attrs={"rows": 8, "cols": 100})},
    }
    fieldsets = (
        ("Identity", {"fields": ("name", "slug", "tagline", "image", "owner", "is_public", "tags")}),
        ("Personality", {"fields": ("description", "personality", "scenario", "example_dialogue")}),
        ("Greetings", {"fields": ("first_message", "alternate_greetings")}),
        (
            "Modes",
            {
                "fields": ("default_mode", "intimate_allowed", "secretary_instructions", "intimate_instructions"),
                "description": "Intimate mode is only ever entered for adults who opted in, and only if allowed here.",
            },
        ),
        ("Fallbacks", {"fields": ("fallback_lines",)}),
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
