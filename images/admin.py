"""Pictures in the admin: the list with status, cost and why one failed, a preview, and the
avatar actions that make or remake a portrait (avatars/admin.py calls `avatar_portraits_request`)."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from avatars.models import Avatar
from core.errors import DomainError
from images.encode import CONTENT_TYPE
from images.models import Image, ImageStatus
from images.storage import picture_open


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "avatar", "owner", "model", "cost_usd", "error_code", "created_at")
    list_filter = ("kind", "status", "model")
    list_select_related = ("avatar", "owner")
    search_fields = ("avatar__name", "owner__username", "error_code")
    raw_id_fields = ("owner", "avatar", "conversation", "cached_from")
    readonly_fields = (*(field.name for field in Image._meta.concrete_fields), "preview")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="picture")
    def preview(self, image: Image | None) -> SafeString | str:
        return picture_preview_html(image)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.file_view)
        return [path("<int:image_id>/file/", view, name="images_image_file"), *super().get_urls()]

    def file_view(self, request: HttpRequest, image_id: int) -> FileResponse:
        if not self.has_view_permission(request):
            raise Http404
        image = Image.objects.filter(pk=image_id, status=ImageStatus.READY).exclude(file="").first()
        if image is None:
            raise Http404
        return FileResponse(picture_open(image.file.name or ""), content_type=CONTENT_TYPE)


def picture_preview_html(image: Image | None) -> SafeString | str:
    if image is None:
        return "No picture yet."
    if image.status != ImageStatus.READY:
        return f"{image.get_status_display()}" + (f": {image.error}" if image.error else "")
    url = reverse("admin:images_image_file", args=[image.pk])
    return format_html('<img src="{}" alt="" style="max-width: 256px; border-radius: 8px">', url)


def avatar_portraits_request(request: HttpRequest, queryset: "QuerySet[Avatar]", *, fresh: bool) -> None:
    """The admin actions: a portrait for each avatar, made in the background; what was refused is said."""
    from images.services import portrait_request

    queued = 0
    for avatar in queryset:
        try:
            portrait_request(owner_id=avatar.owner_id, avatar=avatar, fresh=fresh, by_staff=True)
        except DomainError as exc:
            messages.warning(request, f"{avatar.name}: {exc.message}")
            continue
        queued += 1
    if queued:
        messages.success(
            request,
            f"{queued} portrait(s) on the way: they appear here and in the catalogue in a few seconds.",
        )
