"""Reads of pictures, always through who may see them.

Who may see a picture (decided here, docs/images.md "Who sees a picture"):
- its owner, always;
- any signed-in user, for a `ready` portrait that is the current portrait of an avatar they
  can see (a catalogue avatar's portrait is shown in everyone's catalogue);
- nobody else: another user's picture is a 404, never a 403.
"""

from typing import Any

from django.db.models import Q

from avatars.models import Avatar
from core.errors import NotFound
from images.models import Image, ImageStatus
from llm.catalog import usd_text


def image_get_visible(*, user_id: int, image_id: int) -> Image:
    image = Image.objects.filter(pk=image_id, owner_id=user_id).first()
    if image is None:
        portrait_of = Avatar.objects.filter(Q(is_public=True) | Q(owner_id=user_id), portrait_id=image_id)
        image = Image.objects.filter(pk=image_id, status=ImageStatus.READY).first() if portrait_of.exists() else None
    if image is None:
        raise NotFound("Picture not found.")
    return image


def image_url(image_id: int) -> str:
    return f"/api/images/{int(image_id)}/file"


def image_ref(image: Image) -> dict[str, Any]:
    """A picture as a message or an avatar carries it: `{id, status, url, error}`."""
    return {
        "id": image.pk,
        "status": image.status,
        "url": image_url(image.pk) if image.status == ImageStatus.READY else None,
        "error": _error_of(image),
    }


def image_dict(image: Image) -> dict[str, Any]:
    """`GET /api/images/{id}`."""
    return {
        **image_ref(image),
        "kind": image.kind,
        "prompt": image.prompt,
        "avatar_id": image.avatar_id,
        "conversation_id": image.conversation_id,
        "size": image.size,
        "quality": image.quality,
        "model": image.model or None,
        "cost_usd": usd_text(image.cost_usd),
        "width": image.width,
        "height": image.height,
        "created_at": image.created_at.isoformat() if image.created_at else None,
    }


def image_refs_by_id(image_ids: set[int]) -> dict[int, dict[str, Any]]:
    """Many `image_ref`s in one query (a page of messages, the catalogue)."""
    if not image_ids:
        return {}
    return {image.pk: image_ref(image) for image in Image.objects.filter(pk__in=image_ids)}


def _error_of(image: Image) -> dict[str, str] | None:
    if image.status not in (ImageStatus.REFUSED, ImageStatus.FAILED):
        return None
    return {"code": image.error_code or image.status, "message": image.error or "The picture could not be made."}


def image_files_of_owner(*, owner_id: int) -> set[str]:
    """The stored files of a user's pictures that no other user's picture shares (erasure deletes them)."""
    names = set(Image.objects.filter(owner_id=owner_id).exclude(file="").values_list("file", flat=True))
    shared = set(Image.objects.filter(file__in=names).exclude(owner_id=owner_id).values_list("file", flat=True))
    return names - shared
