"""Admin: the profile inline on users, and a read-only list of API tokens that can be revoked."""

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import ApiToken, Profile
from accounts.services import api_token_families_revoke, user_sessions_end
from core.errors import InvalidInput
from core.timezones import zone_get

# The stubs make these generic; at run time they are not (settings do not call django_stubs_ext.monkeypatch()).
if TYPE_CHECKING:
    _ProfileForm = forms.ModelForm[Profile]
    _ProfileInline = admin.StackedInline[Profile, User]
    _UserAdmin = UserAdmin[User]
    _ApiTokenAdmin = admin.ModelAdmin[ApiToken]
else:
    _ProfileForm = forms.ModelForm
    _ProfileInline = admin.StackedInline
    _UserAdmin = UserAdmin
    _ApiTokenAdmin = admin.ModelAdmin


class ProfileAdminForm(_ProfileForm):
    class Meta:
        model = Profile
        fields = (
            "display_name",
            "adult_confirmed_at",
            "intimate_opt_in",
            "locale",
            "timezone",
            "quiet_hours_start",
            "quiet_hours_end",
            "proactive_opt_in",
            "quota_daily_tokens",
            "quota_daily_usd",
            "quota_daily_images",
        )

    def clean_timezone(self) -> str:
        name = self.cleaned_data.get("timezone", "")
        try:
            zone_get(name)
        except InvalidInput as error:
            raise forms.ValidationError(error.message) from None
        return str(name)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # The same rule as `profile_update`: no intimate mode without adult confirmation.
        if cleaned.get("intimate_opt_in") and not cleaned.get("adult_confirmed_at"):
            raise forms.ValidationError("Intimate opt-in requires adult confirmation (set its date first).")
        return cleaned


class ProfileInline(_ProfileInline):
    model = Profile
    form = ProfileAdminForm
    can_delete = False
    max_num = 1
    readonly_fields = ("created_at", "updated_at")


admin.site.unregister(User)


class SessionsEndingPasswordChangeForm(AdminPasswordChangeForm):
    """The admin's "change password": as over the API, every session of the user ends with it."""

    def save(self, commit: bool = True) -> Any:
        user = super().save(commit=commit)
        if commit:
            user_sessions_end(user=user)
        return user


@admin.register(User)
class CompanionUserAdmin(_UserAdmin):
    inlines = (ProfileInline,)
    change_password_form = SessionsEndingPasswordChangeForm


@admin.register(ApiToken)
class ApiTokenAdmin(_ApiTokenAdmin):
    """Tokens can be looked at and revoked, never made or edited here; their hashes are never shown."""

    list_display = ("user", "kind", "created_at", "expires_at", "revoked_at")
    list_filter = ("kind", ("revoked_at", admin.EmptyFieldListFilter))
    list_select_related = ("user",)
    search_fields = ("user__username",)
    fields = ("user", "kind", "family", "created_at", "expires_at", "revoked_at")
    readonly_fields = fields
    date_hierarchy = "created_at"
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.change_apitoken")

    @admin.action(description="Revoke the selected tokens and every token of their sessions", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        # A token alone is not enough: its refresh token would mint new ones, so the family goes.
        families = set(queryset.values_list("family", flat=True))
        revoked = api_token_families_revoke(families=families)
        self.message_user(request, f"Revoked {revoked} token(s) in {len(families)} session(s).", messages.SUCCESS)
